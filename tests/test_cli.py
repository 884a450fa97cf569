"""The tsgen command line: round trips on the shipped airline data, errors, help."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from tsgen.cli import main
from tsgen.cli._commands import FAN_QUANTILES
from tsgen.cli._io import read_series
from tsgen.cli._registry import MODELS, available_models

ROOT = Path(__file__).resolve().parents[1]
AIRLINE = ROOT / "datasets" / "airline_passengers.csv"


@pytest.fixture(scope="module")
def airline():
    frame = pd.read_csv(AIRLINE)
    return pd.Series(frame["passengers"].to_numpy(float), index=pd.PeriodIndex(frame["month"], freq="M"),
                     name="passengers")


def test_read_series_detects_the_time_column_and_frequency(airline):
    y = read_series(AIRLINE)
    pd.testing.assert_series_equal(y, airline, check_names=False, check_index_type=True)
    assert y.index.freqstr == "M" and y.name == "passengers"


def test_forecast_round_trip_matches_the_library(tmp_path, capsys, airline):
    from tsgen.models.arima import ARIMA

    out, plot = tmp_path / "forecast.csv", tmp_path / "forecast.png"
    assert main(["forecast", str(AIRLINE), "--model", "arima", "--horizon", "24",
                 "--out", str(out), "--plot", str(plot)]) == 0
    printed = capsys.readouterr().out
    assert "q0.025" in printed and "q0.975" in printed and "1962-12" in printed
    written = pd.read_csv(out, index_col=0)
    assert list(written.index) == [str(p) for p in pd.period_range("1961-01", periods=24, freq="M")]
    expected = ARIMA((0, 1, 1), (0, 1, 1, 12), random_state=0).fit(airline).predict(24, quantiles=FAN_QUANTILES)
    np.testing.assert_allclose(written.to_numpy(), expected.to_numpy(), rtol=1e-9)
    assert plot.stat().st_size > 10_000 and plot.read_bytes()[:4] == b"\x89PNG"


def test_backtest_prints_the_summary_and_writes_metrics(tmp_path, capsys):
    out = tmp_path / "metrics.csv"
    assert main(["backtest", str(AIRLINE), "--horizon", "6", "--start", "1959-12", "--step", "3",
                 "--refit", "never", "--samples", "50", "--out", str(out), "--plot", str(tmp_path / "b.png")]) == 0
    printed = capsys.readouterr().out
    assert "3 origins, horizon 6" in printed and "crps" in printed and "coverage_95" in printed
    metrics = pd.read_csv(out)
    assert list(metrics.columns) == ["series", "origin", "cutoff", "horizon", "metric", "value"]
    assert metrics["origin"].nunique() == 3 and set(metrics["horizon"]) == set(range(1, 7))
    assert metrics["cutoff"].iloc[0] == "1959-12"
    assert (tmp_path / "b.png").exists()


def test_detect_writes_scores_and_flags(tmp_path, capsys):
    frame = pd.read_csv(AIRLINE)
    frame.loc[130, "passengers"] += 150  # an injected spike after the training part
    data = tmp_path / "spiked.csv"
    frame.to_csv(data, index=False)
    out = tmp_path / "scores.csv"
    assert main(["detect", str(data), "--train-size", "0.8", "--method", "quantile", "--false-alarm-rate", "0.02",
                 "--out", str(out), "--plot", str(tmp_path / "a.png")]) == 0
    scores = pd.read_csv(out, index_col=0)
    assert list(scores.columns) == ["score", "threshold", "anomaly"]
    np.testing.assert_array_equal(scores["anomaly"], scores["score"] > scores["threshold"])
    assert scores["anomaly"].iloc[130]
    assert "1959-11" in capsys.readouterr().out


def test_models_lists_the_registry(capsys):
    assert main(["models"]) == 0
    printed = capsys.readouterr().out
    for name, entry in MODELS.items():
        assert name in printed
        assert all(option.flag in printed for option in entry.options)
    assert {"arima", "lds"} <= set(available_models())


@pytest.mark.parametrize("argv, message", [
    (["forecast", str(AIRLINE), "--horizon", "3", "--model", "prophet"], "unknown model 'prophet'"),
    (["forecast", str(AIRLINE), "--horizon", "3", "--time-col", "date"], "--time-col 'date' is not a column"),
    (["forecast", str(AIRLINE), "--horizon", "3", "--columns", "pax"], "not found"),
    (["forecast", str(AIRLINE), "--horizon", "3", "--model", "lds", "--order", "1,0,0"], "--order is an option of arima"),
    (["forecast", "missing.csv", "--horizon", "3"], "file not found"),
])
def test_helpful_errors(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_unparseable_dates_name_the_row(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("date,value\n2020-01-01,1\n2020-01-02,2\nyesterday,3\n")
    assert main(["forecast", str(bad), "--horizon", "2"]) == 2
    err = capsys.readouterr().err
    assert "could not parse time column 'date'" in err and "row 4" in err and "yesterday" in err


@pytest.mark.parametrize("command", [[], ["forecast"], ["backtest"], ["detect"], ["models"]])
def test_help_everywhere(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(command + ["--help"])
    assert exit_.value.code == 0
    assert "usage: tsgen" in capsys.readouterr().out


def test_console_entry_point_runs_as_a_module():
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-m", "tsgen.cli", "models"], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0 and "arima" in done.stdout

"""CLI outputs write times as the input wrote them, and integer time steps are read (issue 14 leftovers).

A statsforecast user joins a forecast back on ``ds``: monthly, quarterly
and yearly data go out as timestamps on the input's own convention (first
or last day of the period, the input's date pattern), never as ``2009Q1``;
integer ``ds`` (years or steps 1, 2, 3, ...) stays integer.
"""
from __future__ import annotations

import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from tsgen.cli import main
from tsgen.cli._io import read_long, read_series

NAIVE = ["--model", "naive"]


def _long(times_of, n=(12, 14)):
    """A long frame of two series whose time column ``times_of(k, length)`` gives series k's times."""
    rng = np.random.default_rng(0)
    return pd.concat([pd.DataFrame({"unique_id": f"s{k}", "ds": times_of(k, length),
                                    "y": 100 + rng.normal(size=length).cumsum()})
                      for k, length in enumerate(n)], ignore_index=True)


def _next(frame: pd.DataFrame, step) -> pd.Series:
    """Each series' last time plus ``step`` (the first forecast time a user joins on)."""
    return frame.groupby("unique_id")["ds"].last() + step


@pytest.mark.parametrize("freq, offset", [("QS", pd.offsets.QuarterBegin(startingMonth=1)),
                                          ("QE", pd.offsets.QuarterEnd()),
                                          ("MS", pd.offsets.MonthBegin()),
                                          ("ME", pd.offsets.MonthEnd()),
                                          ("YS", pd.offsets.YearBegin())])
def test_long_forecast_writes_dates_on_the_inputs_convention(tmp_path, freq, offset):
    frame = _long(lambda k, n: pd.date_range("2001-01-01" if freq.endswith("S") else "2001-12-31", periods=n,
                                             freq=freq))
    data, out = tmp_path / "long.csv", tmp_path / "f.csv"
    frame.to_csv(data, index=False, date_format="%Y-%m-%d")
    assert main(["-q", "forecast", str(data), "--id-col", "unique_id", "--horizon", "3", "--out", str(out),
                 *NAIVE]) == 0
    written = pd.read_csv(out)
    assert list(written.columns[:2]) == ["unique_id", "ds"]
    stamps = pd.to_datetime(written["ds"], format="%Y-%m-%d")  # ISO dates, as written in the input
    first = written.groupby("unique_id")["ds"].first()
    expected = _next(frame, offset).dt.strftime("%Y-%m-%d")
    pd.testing.assert_series_equal(first, expected, check_names=False)
    # every forecast time lies on the input's grid: joining the input's continuation on ds finds all of them
    grid = pd.date_range(frame["ds"].min(), periods=40, freq=freq)
    assert stamps.isin(grid).all()


def test_wide_file_keeps_its_date_pattern_and_period_text(tmp_path, capsys):
    months = pd.date_range("2009-01-01", periods=24, freq="MS")
    data, out = tmp_path / "wide.csv", tmp_path / "f.csv"
    values = 10 + np.arange(24.0)
    pd.DataFrame({"date": months.strftime("%Y/%m/%d"), "v": values}).to_csv(data, index=False)
    assert main(["forecast", str(data), "--horizon", "2", "--out", str(out), *NAIVE]) == 0
    assert list(pd.read_csv(out, index_col=0).index) == ["2011/01/01", "2011/02/01"]
    assert "2011/01/01" in capsys.readouterr().out  # the printed table reads as the file does
    quarters = tmp_path / "quarters.csv"
    pd.DataFrame({"quarter": pd.period_range("2001Q1", periods=12, freq="Q").astype(str),
                  "v": values[:12]}).to_csv(quarters, index=False)
    assert main(["-q", "forecast", str(quarters), "--horizon", "2", "--out", str(out), *NAIVE]) == 0
    assert list(pd.read_csv(out, index_col=0).index) == ["2004Q1", "2004Q2"]  # period text in, period text out


def test_backtest_and_detect_outputs_join_back_on_the_time_column(tmp_path):
    frame = _long(lambda k, n: pd.date_range("2001-03-31", periods=n, freq="QE"), n=(16, 16))
    data, forecasts, metrics = tmp_path / "long.csv", tmp_path / "fc.csv", tmp_path / "m.csv"
    frame.to_csv(data, index=False)
    assert main(["-q", "backtest", str(data), "--id-col", "unique_id", "--horizon", "2", "--start", "12",
                 "--forecasts-out", str(forecasts), "--out", str(metrics), *NAIVE]) == 0
    written = pd.read_csv(forecasts).rename(columns={"series": "unique_id", "time": "ds"})
    # forecast times and cutoffs on the input's convention: every row joins back onto the input
    joined = written.merge(frame.assign(ds=frame["ds"].dt.strftime("%Y-%m-%d")), on=["unique_id", "ds"],
                           suffixes=("", "_input"))
    assert len(joined) == len(written)
    np.testing.assert_allclose(joined["y"], joined["y_input"])
    assert set(pd.read_csv(metrics)["cutoff"]) <= set(frame["ds"].dt.strftime("%Y-%m-%d"))
    one = tmp_path / "one.csv"
    frame[frame["unique_id"] == "s0"][["ds", "y"]].to_csv(one, index=False)
    scores = tmp_path / "scores.csv"
    assert main(["-q", "detect", str(one), "--method", "quantile", "--out", str(scores), *NAIVE]) == 0
    assert list(pd.read_csv(scores, index_col=0).index) == list(frame["ds"].dt.strftime("%Y-%m-%d")[:16])


def test_integer_years_stay_integers_in_a_long_file(tmp_path):
    frame = _long(lambda k, n: np.arange(1990 + k, 1990 + k + n))
    data, out = tmp_path / "years.csv", tmp_path / "f.csv"
    frame.to_csv(data, index=False)
    assert main(["-q", "forecast", str(data), "--id-col", "unique_id", "--horizon", "2", "--out", str(out),
                 *NAIVE]) == 0
    written = pd.read_csv(out)
    assert written["ds"].dtype == np.int64
    assert list(written["ds"]) == [2002, 2003, 2005, 2006]


def test_integer_time_steps_are_read_in_long_and_wide_files(tmp_path):
    # statsforecast's ds = 1, 2, ...: each series from its own first step
    frame = _long(lambda k, n: np.arange(1 + 3 * k, 1 + 3 * k + n))
    data, out = tmp_path / "steps.csv", tmp_path / "f.csv"
    frame.to_csv(data, index=False)
    panel = read_long(data, "unique_id")
    assert [list(series.index) for series in panel.values()] == [list(range(1, 13)), list(range(4, 18))]
    assert main(["-q", "forecast", str(data), "--id-col", "unique_id", "--horizon", "2", "--out", str(out),
                 *NAIVE]) == 0
    written = pd.read_csv(out)
    assert written["ds"].dtype == np.int64 and list(written["ds"]) == [13, 14, 18, 19]
    np.testing.assert_allclose(written["mean"], np.repeat(frame.groupby("unique_id")["y"].last(), 2))
    wide = tmp_path / "wide.csv"
    pd.DataFrame({"step": np.arange(0, 100, 5), "a": np.arange(20.0)}).to_csv(wide, index=False)
    y = read_series(wide)
    assert isinstance(y.index, pd.RangeIndex) and y.index.step == 5 and y.index.name == "step"
    assert main(["-q", "forecast", str(wide), "--horizon", "2", "--out", str(out), *NAIVE]) == 0
    written = pd.read_csv(out)
    assert list(written["step"]) == [100, 105] and written["step"].dtype == np.int64


def test_integer_steps_with_gaps_are_refused_naming_the_series(tmp_path, capsys):
    frame = _long(lambda k, n: np.arange(1, n + 1))
    data = tmp_path / "gaps.csv"
    frame.drop(index=[20]).to_csv(data, index=False)
    assert main(["forecast", str(data), "--id-col", "unique_id", "--horizon", "2", *NAIVE]) == 2
    assert "not evenly spaced in series 's1'" in capsys.readouterr().err


def test_a_closed_stdout_still_writes_the_files(tmp_path):
    frame = _long(lambda k, n: pd.date_range("2001-01-01", periods=n, freq="MS"), n=(60, 60))
    data, out = tmp_path / "long.csv", tmp_path / "f.csv"
    frame.to_csv(data, index=False)
    command = (f"{sys.executable} -m tsgen.cli forecast {data} --id-col unique_id --horizon 24 --out {out} "
               "--model naive | head -n 1")
    run = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300)
    assert "Traceback" not in run.stderr and "BrokenPipe" not in run.stderr, run.stderr
    assert len(pd.read_csv(out)) == 48


def test_a_unique_id_column_is_read_as_a_long_file_without_id_col(tmp_path, capsys):
    # statsforecast's layout (unique_id, ds, y) needs no flag, as its users expect
    frame = _long(lambda k, n: pd.date_range("2001-01-01", periods=n, freq="QS"))
    data, out = tmp_path / "long.csv", tmp_path / "f.csv"
    frame.to_csv(data, index=False)
    assert main(["forecast", str(data), "--horizon", "1", "--out", str(out), *NAIVE]) == 0
    assert "reading it as a long file" in capsys.readouterr().err
    assert list(pd.read_csv(out)["unique_id"]) == ["s0", "s1"]
    assert main(["detect", str(data), *NAIVE]) == 2
    assert "long file of 2 series keyed by 'unique_id'" in capsys.readouterr().err
    # another id column name: the error says which flag reads the file
    frame.rename(columns={"unique_id": "store"}).to_csv(data, index=False)
    assert main(["forecast", str(data), "--horizon", "1", *NAIVE]) == 2
    assert "a long file, one row per series and time. Name its id column with --id-col (e.g. --id-col store)" \
        in capsys.readouterr().err


@pytest.mark.parametrize("freq, start", [("QE", "2003-12-31"), ("QS", "2003-10-01"), ("QS", "2003Q4")])
def test_backtest_start_is_read_as_the_file_writes_its_times(tmp_path, freq, start):
    frame = _long(lambda k, n: pd.date_range("2001-03-31" if freq == "QE" else "2001-01-01", periods=n, freq=freq),
                  n=(16, 18))
    data, metrics = tmp_path / "long.csv", tmp_path / "m.csv"
    frame.to_csv(data, index=False)
    assert main(["-q", "backtest", str(data), "--horizon", "2", "--start", start, "--out", str(metrics), *NAIVE]) == 0
    cutoffs = pd.read_csv(metrics).groupby("series")["cutoff"].first()
    last_day = "2003-12-31" if freq == "QE" else "2003-10-01"
    assert list(cutoffs) == [last_day, last_day]  # the first cutoff is the quarter named, in each series


def test_a_long_file_with_extra_columns_forecasts_y(tmp_path, capsys):
    # statsforecast's df: y is the target, other columns its exogenous variables (which the CLI does not take)
    frame = _long(lambda k, n: pd.date_range("2001-01-01", periods=n, freq="MS"), n=(30, 32)).assign(price=1.0)
    data, out = tmp_path / "long.csv", tmp_path / "f.csv"
    frame.to_csv(data, index=False)
    assert main(["forecast", str(data), "--horizon", "1", "--out", str(out)]) == 0  # ARIMA: one variable
    assert "['price'] are not used" in capsys.readouterr().err
    assert list(pd.read_csv(out).columns[:3]) == ["unique_id", "ds", "mean"]
    assert main(["-q", "forecast", str(data), "--horizon", "1", "--columns", "y,price", "--out", str(out),
                 *NAIVE]) == 0
    assert set(pd.read_csv(out)["variable"]) == {"y", "price"}

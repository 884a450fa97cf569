"""The command line reads what the CSV says or refuses in one line (issue 9 §1.9 and §2).

Each case runs through the entry point ``tsgen.cli.main`` (one case also as
a subprocess, to see that no traceback reaches the user).
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

FAST = ["--model", "lds", "--max-iter", "3"]


def _values(n=40):
    return 10 + np.random.default_rng(0).normal(size=n).cumsum()


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def _forecast_index(path) -> list[str]:
    return list(pd.read_csv(path, index_col=0).index.astype(str))


def test_headerless_csv_keeps_its_first_row(tmp_path, capsys):
    dates = pd.date_range("2020-01-01", periods=40, freq="D")
    data = tmp_path / "plain.csv"
    pd.DataFrame({"d": dates.strftime("%Y-%m-%d"), "v": _values()}).to_csv(data, header=False, index=False)
    out = tmp_path / "f.csv"
    assert main(["forecast", str(data), "--horizon", "3", "--out", str(out), *FAST]) == 0
    err = capsys.readouterr().err
    assert "no header row" in err and "on 40 steps" in err
    assert _forecast_index(out) == ["2020-02-10", "2020-02-11", "2020-02-12"]


def test_headerless_numbers_only_keep_every_row(tmp_path):
    from tsgen.cli._io import read_series

    data = tmp_path / "numbers.csv"
    data.write_text("".join(f"{v},{2 * v}\n" for v in _values(12)))
    y = read_series(data)
    assert y.shape == (12, 2) and list(y.columns) == ["y1", "y2"]
    np.testing.assert_allclose(y["y1"], _values(12))


def test_integer_years_are_an_annual_period_index(tmp_path, capsys):
    data, out = tmp_path / "annual.csv", tmp_path / "f.csv"
    pd.DataFrame({"year": np.arange(1970, 2010), "gdp": _values()}).to_csv(data, index=False)
    assert main(["forecast", str(data), "--horizon", "2", "--out", str(out), *FAST]) == 0
    assert _forecast_index(out) == ["2010", "2011"]


@pytest.mark.parametrize("years, message", [
    (np.r_[1970:1980, 1981:1990], "consecutive years; row 12 holds 1981"),
    (np.arange(0, 19) + 0.5, "neither calendar years (1000-2999) nor integer time steps: row 2 holds 0.5"),
    (np.r_[0:10, 11:20], "integer time steps that are not evenly spaced: row 12 holds 11 after 9"),
])
def test_integer_times_that_are_not_consecutive_years_are_refused(tmp_path, capsys, years, message):
    data = tmp_path / "annual.csv"
    pd.DataFrame({"year": years, "v": _values(len(years))}).to_csv(data, index=False)
    assert main(["forecast", str(data), "--horizon", "2", *FAST]) != 0
    assert message in _error_line(capsys)


def test_day_first_dates_are_read_day_first_when_the_values_say_so(tmp_path, capsys):
    dates = pd.date_range("2020-01-01", periods=40, freq="D")
    data, out = tmp_path / "days.csv", tmp_path / "f.csv"
    pd.DataFrame({"date": dates.strftime("%d/%m/%Y"), "v": _values()}).to_csv(data, index=False)
    assert main(["forecast", str(data), "--horizon", "2", "--out", str(out), *FAST]) == 0
    # 10 and 11 February 2020, written as the input writes its dates (issue 14: outputs join back on time)
    assert _forecast_index(out) == ["10/02/2020", "11/02/2020"]
    month_first = tmp_path / "us.csv"
    pd.DataFrame({"date": dates.strftime("%m/%d/%Y"), "v": _values()}).to_csv(month_first, index=False)
    assert main(["forecast", str(month_first), "--horizon", "2", "--out", str(out), *FAST]) == 0
    assert _forecast_index(out) == ["02/10/2020", "02/11/2020"]


def test_ambiguous_dates_are_refused_unless_the_order_is_given(tmp_path, capsys):
    months = pd.date_range("2020-01-01", periods=12, freq="MS")  # read month-first these are 12 regular days
    data, out = tmp_path / "months.csv", tmp_path / "f.csv"
    pd.DataFrame({"date": months.strftime("%d/%m/%Y"), "v": _values(12)}).to_csv(data, index=False)
    assert main(["forecast", str(data), "--horizon", "2", *FAST]) != 0
    assert "--dayfirst" in _error_line(capsys)
    assert main(["forecast", str(data), "--horizon", "2", "--dayfirst", "--out", str(out), *FAST]) == 0
    assert _forecast_index(out) == ["01/01/2021", "01/02/2021"]  # January and February 2021, day first
    capsys.readouterr()
    assert main(["forecast", str(data), "--horizon", "2", "--monthfirst", "--out", str(out), *FAST]) == 0
    assert _forecast_index(out) == ["01/13/2020", "01/14/2020"]  # 13 and 14 January 2020, month first
    days = tmp_path / "days.csv"
    dates = pd.date_range("2020-01-01", periods=20, freq="D").strftime("%d/%m/%Y")
    pd.DataFrame({"date": dates, "v": _values(20)}).to_csv(days, index=False)
    capsys.readouterr()
    assert main(["forecast", str(days), "--horizon", "2", "--monthfirst", *FAST]) != 0
    assert "not month-first" in _error_line(capsys)


@pytest.fixture
def airline_copy(tmp_path):
    frame = pd.DataFrame({"month": pd.period_range("1990-01", periods=40, freq="M").astype(str), "v": _values()})
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("command", [["forecast", "--horizon", "2"], ["detect"],
                                     ["backtest", "--horizon", "2", "--start", "36"]])
def test_out_equal_to_the_input_is_refused_and_the_input_kept(airline_copy, capsys, command):
    before = airline_copy.read_bytes()
    argv = [command[0], str(airline_copy), *command[1:], "--out", str(airline_copy), *FAST]
    assert main(argv) != 0
    assert "overwrite" in _error_line(capsys)
    assert airline_copy.read_bytes() == before


@pytest.mark.parametrize("flag", ["--out", "--plot"])
@pytest.mark.parametrize("where", ["missing folder", "directory"])
def test_outputs_to_a_missing_folder_or_a_directory_fail_in_one_line(airline_copy, tmp_path, capsys, flag, where):
    target = tmp_path / "nowhere" / "f.png" if where == "missing folder" else tmp_path
    assert main(["forecast", str(airline_copy), "--horizon", "2", flag, str(target), *FAST]) != 0
    line = _error_line(capsys)
    assert flag in line and ("does not exist" if where == "missing folder" else "is a directory") in line


def test_unwritable_outputs_and_unknown_image_formats_fail_in_one_line(airline_copy, tmp_path, capsys):
    assert main(["forecast", str(airline_copy), "--horizon", "2", "--plot", str(tmp_path / "f.xyz"), *FAST]) != 0
    assert "unknown image format" in _error_line(capsys)
    out = tmp_path / "f.csv"
    assert main(["forecast", str(airline_copy), "--horizon", "2", "--out", str(out), "--plot", str(out), *FAST]) != 0
    assert "same file" in _error_line(capsys)


def test_a_bad_output_exits_without_a_traceback_as_a_program(airline_copy, tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "tsgen.cli", "forecast", str(airline_copy), "--horizon", "2",
         "--out", str(tmp_path / "missing" / "f.csv"), *FAST],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode != 0
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert "does not exist" in run.stderr

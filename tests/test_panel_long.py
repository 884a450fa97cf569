"""Panel data keyed by series id: long frames and dicts in, one long frame out (issue 14, section 1)."""
import numpy as np
import pandas as pd
import pytest

import tsgen
from tsgen.data import Panel, from_long, regularize, to_series_batch


def long_frame(ids=("b", "a", "c"), length=30, seed=0, freq="D", names=("unique_id", "ds", "y")):
    rng = np.random.default_rng(seed)
    index = pd.date_range("2021-01-01", periods=length, freq=freq)
    pieces = [pd.DataFrame({names[0]: key, names[1]: index, names[2]: rng.normal(size=length).cumsum() + 10 * k})
              for k, key in enumerate(ids)]
    return pd.concat(pieces, ignore_index=True)


def as_dict(frame, id_col="unique_id", time_col="ds", value_col="y"):
    return {key: rows.set_index(time_col)[value_col].rename(value_col).sort_index()
            for key, rows in frame.groupby(id_col)}


def test_long_frame_is_split_by_id_in_id_order():
    frame = long_frame()
    batch = to_series_batch(frame)
    assert batch.kind == "panel" and batch.ids == ("a", "b", "c") and batch.is_collection
    for i, key in enumerate(batch.ids):
        rows = frame[frame["unique_id"] == key]
        np.testing.assert_array_equal(batch.values[i, :, 0].numpy(), rows["y"].to_numpy())
        assert batch.indexes[i].freqstr == "D" and batch.indexes[i].equals(pd.DatetimeIndex(rows["ds"]))


def test_shuffled_long_frame_gives_the_same_forecast_keyed_by_id():
    frame = long_frame()
    shuffled = frame.sample(frac=1.0, random_state=3)
    before = shuffled.copy()
    a = tsgen.ARIMA(order=(1, 0, 0)).fit(frame).predict(4)
    b = tsgen.ARIMA(order=(1, 0, 0)).fit(shuffled).predict(4)
    pd.testing.assert_frame_equal(shuffled, before)  # the caller's frame is untouched
    pd.testing.assert_frame_equal(a, b)
    assert list(a.columns) == ["unique_id", "ds", "mean", "q0.05", "q0.5", "q0.95"]
    assert list(a["unique_id"]) == ["a"] * 4 + ["b"] * 4 + ["c"] * 4
    assert list(a["ds"].iloc[:4]) == list(pd.date_range("2021-01-31", periods=4, freq="D"))


def test_long_and_dict_round_trip_equals_each_series_alone():
    frame = long_frame()
    panel = as_dict(frame)
    joint = tsgen.ARIMA(order=(1, 0, 0)).fit(panel).predict(3)
    from_frame = tsgen.ARIMA(order=(1, 0, 0)).fit(frame).predict(3)
    pd.testing.assert_frame_equal(joint, from_frame)
    for key, series in panel.items():
        alone = tsgen.ARIMA(order=(1, 0, 0)).fit(series).predict(3)
        rows = joint[joint["unique_id"] == key].set_index("ds").drop(columns="unique_id")
        np.testing.assert_allclose(rows.to_numpy(), alone.to_numpy(), rtol=1e-6, atol=1e-8)


def test_dict_insertion_order_does_not_matter():
    panel = as_dict(long_frame())
    reverse = dict(reversed(list(panel.items())))
    a = tsgen.Naive().fit(panel).predict(2)
    b = tsgen.Naive().fit(reverse).predict(2)
    pd.testing.assert_frame_equal(a, b)


def test_from_long_with_own_column_names_keeps_them_in_results():
    frame = long_frame(names=("store", "date", "sales"), ids=(3, 1, 2))
    panel = from_long(frame, id_col="store", time_col="date", value_col="sales")
    assert isinstance(panel, Panel) and panel.ids == (1, 2, 3) and len(panel) == 3
    assert panel[1].name == "sales" and panel[1].index.freqstr == "D"
    out = tsgen.Mean().fit(panel).predict(2)
    assert list(out.columns[:2]) == ["store", "date"] and list(out["store"].unique()) == [1, 2, 3]
    pd.testing.assert_frame_equal(panel.to_long(), frame.sort_values(["store", "date"], ignore_index=True),
                                  check_dtype=False)


def test_sample_and_per_step_likelihood_are_keyed_by_id():
    frame = long_frame()
    model = tsgen.ARIMA(order=(1, 0, 0), random_state=0).fit(frame)
    paths = model.sample(3, n_samples=7)
    assert isinstance(paths, dict) and list(paths) == ["a", "b", "c"] and paths["a"].shape == (7, 3, 1)
    per_step = model.log_likelihood(frame, per_step=True)
    assert list(per_step.columns) == ["unique_id", "ds", "log_likelihood"] and len(per_step) == len(frame)
    total = model.log_likelihood(frame)
    assert np.isclose(per_step["log_likelihood"].sum(), total)


def test_multivariate_dict_gives_a_variable_column():
    index = pd.period_range("2000-01", periods=24, freq="M")
    rng = np.random.default_rng(2)
    panel = {k: pd.DataFrame(rng.normal(size=(24, 2)), index=index, columns=["u", "v"]) for k in ("x", "y")}
    out = tsgen.Naive().fit(panel).predict(2)
    assert list(out.columns[:3]) == ["unique_id", "ds", "variable"]
    assert list(out["variable"]) == ["u", "v"] * 4 and list(out["unique_id"]) == ["x"] * 4 + ["y"] * 4
    assert out["ds"].iloc[0] == pd.Period("2002-01", freq="M")
    np.testing.assert_allclose(out["mean"].to_numpy()[:2], panel["x"].iloc[-1].to_numpy())


def test_save_load_keeps_the_ids(tmp_path):
    model = tsgen.ARIMA(order=(1, 0, 0)).fit(long_frame())
    model.save(tmp_path / "m.tsgen")
    loaded = tsgen.load(tmp_path / "m.tsgen")
    pd.testing.assert_frame_equal(loaded.predict(3), model.predict(3))


def test_list_keeps_each_series_own_name():
    index = pd.period_range("1990-01", periods=36, freq="M")
    co2 = pd.Series(np.linspace(350, 360, 36), index=index, name="co2")
    nino = pd.Series(np.sin(np.arange(36.0)), index=index, name="nino")
    batch = to_series_batch([co2, nino])
    assert batch.columns_of(0) == ("co2",) and batch.columns_of(1) == ("nino",)
    result = tsgen.backtest(tsgen.Naive(), [co2, nino], 3, start=30, step=3, random_state=0)
    names = result.forecasts.groupby("series")["variable"].unique()
    assert list(names.loc[0]) == ["co2"] and list(names.loc[1]) == ["nino"]


def test_backtest_names_panel_series_by_id():
    frame = long_frame(length=24)
    result = tsgen.backtest(tsgen.Naive(), frame, 2, start=20, step=2, random_state=0)
    assert set(result.metrics["series"]) == {"a", "b", "c"}
    assert list(result.summary(by="series").index) == ["a", "b", "c"]
    figure = result.plot(series="b")
    assert figure.axes[1].get_ylabel() == "y"


@pytest.mark.parametrize(
    "frame, error, match",
    [
        (long_frame().drop(columns="y"), ValueError, "value_col"),
        (long_frame().assign(ds=lambda f: f["ds"].where(f.index != 5)), ValueError, "'ds' is missing"),
        (pd.concat([long_frame(), long_frame().iloc[[3]]]), ValueError, "two rows for series 'b'"),
        (long_frame().drop(index=[4, 5]), ValueError, "series 'b' has gaps"),
        (pd.concat([long_frame(ids=("a",)), long_frame(ids=("h",), freq="h")]), ValueError, "mixes frequencies"),
        (long_frame().assign(ds="x"), TypeError, "ISO date strings"),
    ],
)
def test_bad_long_frames_are_refused_with_the_reason(frame, error, match):
    with pytest.raises(error, match=match):
        to_series_batch(frame)


def test_dict_of_different_frequencies_is_refused():
    daily = pd.Series(np.ones(10), index=pd.date_range("2020", periods=10, freq="D"))
    hourly = pd.Series(np.ones(10), index=pd.date_range("2020", periods=10, freq="h"))
    with pytest.raises(ValueError, match="mixes frequencies: series 'a'.*'D'.*series 'b'.*'h'"):
        tsgen.Naive().fit({"a": daily, "b": hourly})


def test_regularize_fills_gaps_with_nan_for_series_and_long_frames():
    index = pd.date_range("2020-01-04", periods=10, freq="D").delete([3, 4, 7])  # starts on a Saturday
    y = pd.Series(np.arange(7.0), index=index, name="y")
    full = regularize(y)
    assert full.index.freqstr == "D" and len(full) == 10 and int(full.isna().sum()) == 3
    assert full.loc["2020-01-06"] == 2.0 and len(y) == 7  # the caller's series is untouched
    weekdays = pd.bdate_range("2020-01-06", periods=10).delete(4)  # business days with one gap stay business days
    assert regularize(pd.Series(1.0, index=weekdays)).index.freqstr == "B"
    monthly = pd.Series(1.0, index=pd.date_range("2020-01-31", periods=12, freq="ME").delete(5))
    assert len(regularize(monthly)) == 12
    frame = long_frame(length=12).drop(index=[4, 5])
    filled = regularize(frame)
    assert len(filled) == 36 and int(filled["y"].isna().sum()) == 2
    assert list(tsgen.Naive().fit(filled).predict(1)["unique_id"]) == ["a", "b", "c"]


# ------------------------------------------------------------------ command line
def _write_long_csv(path, shuffle=True):
    frame = long_frame(ids=("s2", "s1"), length=36, freq="MS", names=("store", "month", "sales"))
    frame["month"] = frame["month"].dt.strftime("%Y-%m-%d")
    (frame.sample(frac=1.0, random_state=0) if shuffle else frame).to_csv(path, index=False)
    return frame


def test_cli_long_csv_round_trip(tmp_path, capsys):
    from tsgen.cli import main

    source = tmp_path / "sales.csv"
    frame = _write_long_csv(source)
    out = tmp_path / "forecast.csv"
    assert main(["forecast", str(source), "--id-col", "store", "--model", "naive", "--horizon", "3",
                 "--out", str(out)]) == 0
    written = pd.read_csv(out)
    assert list(written.columns[:3]) == ["store", "month", "mean"]
    assert list(written["store"]) == ["s1"] * 3 + ["s2"] * 3
    # written as the input wrote them (issue 14: a statsforecast user joins back on the time column)
    assert list(written["month"].iloc[:3]) == ["2024-01-01", "2024-02-01", "2024-03-01"]
    last = frame.sort_values("month").groupby("store")["sales"].last()
    np.testing.assert_allclose(written.groupby("store")["mean"].first().to_numpy(), last.to_numpy())


def test_cli_wide_csv_with_a_univariate_model_forecasts_each_column(tmp_path):
    from tsgen.cli import main

    index = pd.date_range("2020-01-01", periods=30, freq="D")
    rng = np.random.default_rng(4)
    wide = pd.DataFrame({"date": index.strftime("%Y-%m-%d"), "b": rng.normal(size=30).cumsum(),
                         "a": rng.normal(size=30).cumsum()})
    wide.to_csv(tmp_path / "wide.csv", index=False)
    out = tmp_path / "f.csv"
    assert main(["-q", "forecast", str(tmp_path / "wide.csv"), "--model", "arima", "--order", "1,0,0",
                 "--horizon", "2", "--out", str(out)]) == 0
    written = pd.read_csv(out)
    assert list(written.columns[:2]) == ["unique_id", "date"] and list(written["unique_id"]) == ["a", "a", "b", "b"]


def test_cli_fill_nan_makes_gaps_explicit(tmp_path, capsys):
    from tsgen.cli import main

    index = pd.date_range("2020-01-01", periods=30, freq="D").delete([4, 5, 17])
    pd.DataFrame({"date": index.strftime("%Y-%m-%d"), "y": np.arange(27.0)}).to_csv(tmp_path / "g.csv", index=False)
    assert main(["forecast", str(tmp_path / "g.csv"), "--model", "naive", "--horizon", "2"]) == 2
    assert "--fill nan" in capsys.readouterr().err
    out = tmp_path / "f.csv"
    assert main(["forecast", str(tmp_path / "g.csv"), "--model", "naive", "--horizon", "2", "--fill", "nan",
                 "--out", str(out)]) == 0
    written = pd.read_csv(out, index_col=0)
    assert list(written.index) == ["2020-01-31", "2020-02-01"] and written["mean"].iloc[0] == 26.0


def test_cli_long_csv_of_two_frequencies_is_a_clear_error(tmp_path, capsys):
    from tsgen.cli import main

    daily = long_frame(ids=("d",), length=10)
    hourly = long_frame(ids=("h",), length=10, freq="h")
    pd.concat([daily, hourly]).to_csv(tmp_path / "mixed.csv", index=False)
    assert main(["forecast", str(tmp_path / "mixed.csv"), "--id-col", "unique_id", "--horizon", "2"]) == 1
    assert "mixes frequencies" in capsys.readouterr().err


def test_cli_version_and_quiet(tmp_path, capsys):
    from tsgen.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"tsgen {tsgen.__version__}"
    source = tmp_path / "sales.csv"
    _write_long_csv(source)
    out = tmp_path / "f.csv"
    for argv in (["--quiet", "forecast"], ["forecast", "--quiet"]):  # before or after the command name
        assert main([*argv[:1], *argv[1:], str(source), "--id-col", "store", "--model", "naive", "--horizon", "2",
                     "--out", str(out)]) == 0
        captured = capsys.readouterr()
        assert captured.err == "" and "written to" not in captured.out and "s1" in captured.out
    assert main(["forecast", str(source), "--id-col", "store", "--model", "naive", "--horizon", "2"]) == 0
    assert "fitting Naive on 2 series" in capsys.readouterr().err


def test_quiet_turns_the_library_progress_switch_off(tmp_path, monkeypatch):
    from tsgen._config import get_config
    from tsgen.cli import _commands, main

    seen = []
    monkeypatch.setattr(_commands, "models", lambda args: seen.append(get_config()["progress"]) or 0)
    main(["models"])
    main(["--quiet", "models"])
    assert seen == ["auto", False]


def test_per_series_attributes_are_keyed_by_id(tmp_path):
    frame = long_frame()
    model = tsgen.ARIMA(order=(1, 0, 0)).fit(frame)
    table = model.per_series()
    assert list(table.index) == ["a", "b", "c"] and table.index.name == "unique_id"
    assert list(table["order_"]) == [(1, 0, 0)] * 3 and list(table["llf_"]) == list(model.llf_)
    assert list(table["params_ar.L1"]) == [p["ar.L1"] for p in model.params_]
    model.save(tmp_path / "m.tsgen")
    pd.testing.assert_frame_equal(tsgen.load(tmp_path / "m.tsgen").per_series(), table)
    naive = tsgen.Naive().fit(as_dict(frame)).per_series()
    assert list(naive.columns) == ["sigma_"] and list(naive.index) == ["a", "b", "c"]
    one = tsgen.Naive().fit(as_dict(frame)["a"]).per_series()
    assert one.shape == (1, 1) and one.iloc[0, 0] == naive.loc["a", "sigma_"]


def test_plot_forecast_draws_one_series_of_a_panel():
    import matplotlib

    matplotlib.use("Agg")
    from tsgen.plotting import plot_forecast

    frame = long_frame()
    forecast = tsgen.Naive().fit(frame).predict(3)
    figure = plot_forecast(frame, forecast, series="b")
    assert figure.axes[0].get_title() == "Forecast of 'b'"
    history_line = figure.axes[0].lines[0].get_ydata()
    np.testing.assert_allclose(history_line, frame.loc[frame["unique_id"] == "b", "y"].to_numpy())
    with pytest.raises(ValueError, match="`series` must be one of the ids"):
        plot_forecast(frame, forecast, series="zz")


def test_cli_long_csv_with_gaps_and_fill(tmp_path, capsys):
    from tsgen.cli import main

    frame = long_frame(length=20).drop(index=[3, 4, 25])
    frame.to_csv(tmp_path / "gaps.csv", index=False)
    args = ["forecast", str(tmp_path / "gaps.csv"), "--id-col", "unique_id", "--model", "naive", "--horizon", "1"]
    assert main(args) == 1 and "has gaps" in capsys.readouterr().err
    out = tmp_path / "f.csv"
    assert main([*args, "--fill", "nan", "--out", str(out), "--plot", str(tmp_path / "p.png")]) == 0
    written = pd.read_csv(out)
    assert list(written["unique_id"]) == ["a", "b", "c"] and (tmp_path / "p.png").stat().st_size > 0


def test_readme_panel_example_runs():
    from pathlib import Path
    import re

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("## Many series and covariates"):]
    example = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(example, "README.md", "exec"), namespace)
    assert list(namespace["forecast"].columns) == ["unique_id", "ds", "mean", "q0.05", "q0.5", "q0.95"]
    assert list(namespace["params"].index) == ["store_1", "store_2"]
    assert namespace["forecast_x"].shape == (14, 6)


def test_cli_backtest_of_a_long_csv_names_series_by_id(tmp_path, capsys):
    from tsgen.cli import main

    source = tmp_path / "sales.csv"
    _write_long_csv(source)
    out = tmp_path / "m.csv"
    assert main(["-q", "backtest", str(source), "--id-col", "store", "--model", "naive", "--horizon", "2",
                 "--start", "30", "--step", "2", "--out", str(out)]) == 0
    metrics = pd.read_csv(out)
    assert set(metrics["series"]) == {"s1", "s2"}

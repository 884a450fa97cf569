"""Regressions found by probing panel input and covariates the way statsforecast users hold their data (issue 14)."""
import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

import tsgen
from tsgen.data import from_long
from tsgen.evaluation import backtest


def _long(n_series=3, length=30, times="datetime", seed=0):
    rng = np.random.default_rng(seed)
    pieces = []
    for k in range(n_series):
        ds = pd.date_range("2000-01-01", periods=length, freq="QS") if times == "datetime" else np.arange(length)
        pieces.append(pd.DataFrame({"unique_id": f"s{k}", "ds": ds, "y": 10 + rng.normal(size=length).cumsum()}))
    return pd.concat(pieces, ignore_index=True).sample(frac=1, random_state=seed).reset_index(drop=True)


def _covariates(y, horizon, seed=1):
    """One future-known column over each series' history and ``horizon`` steps after it (integer times)."""
    rng = np.random.default_rng(seed)
    ends = y.groupby("unique_id")["ds"].max()
    starts = y.groupby("unique_id")["ds"].min()
    return pd.concat([pd.DataFrame({"unique_id": key, "ds": np.arange(starts[key], ends[key] + 1 + horizon)})
                      for key in ends.index], ignore_index=True).assign(z=lambda d: rng.normal(size=len(d)))


def test_long_X_carrying_the_target_column_is_refused():
    # statsforecast frames hold y beside the exogenous columns; taken as X, y would be read over the horizon
    y = _long()
    X = y.assign(promo=np.arange(len(y)) % 2 * 1.0)
    with pytest.raises(ValueError, match=r"target's column\(s\) \['y'\].*covariates only"):
        tsgen.ARIMA(order=(1, 0, 0)).fit(y, X=X)
    with pytest.raises(ValueError, match=r"target's column\(s\) \['y'\]"):
        backtest(tsgen.ARIMA(order=(1, 0, 0)), y, 2, X=X, start=20, step=5)
    model = tsgen.ARIMA(order=(1, 0, 0)).fit(y, X=X.drop(columns="y"))
    future = X.assign(ds=X["ds"] + pd.DateOffset(months=30 * 3))
    with pytest.raises(ValueError, match=r"X_future.*target's column"):
        model.predict(2, X_future=future)
    # a renamed value column is the target too
    renamed = from_long(y.rename(columns={"y": "sales"}), value_col="sales")
    with pytest.raises(ValueError, match=r"\['sales'\]"):
        tsgen.ARIMA(order=(1, 0, 0)).fit(renamed, X=X.rename(columns={"y": "sales"}))


def test_integer_time_column_of_long_X_matches_by_value_not_position():
    y = _long(times="integer")
    y = y[~((y["unique_id"] == "s1") & (y["ds"] < 4))]  # s1 starts at step 4
    X = _covariates(y, horizon=3)
    wider = pd.concat([X, X.assign(ds=X["ds"] + 1000)]).sample(frac=1, random_state=2)  # extra rows, any order
    exact = {key: rows.sort_values("ds")["z"].to_numpy()[:, None] for key, rows in X.groupby("unique_id")}
    history = {key: rows[:-3] for key, rows in exact.items()}
    future = {key: rows[-3:] for key, rows in exact.items()}
    by_position = tsgen.ARIMA(order=(1, 0, 0)).fit(y, X=history).predict(3, X_future=future)
    model = tsgen.ARIMA(order=(1, 0, 0)).fit(y, X=wider)
    by_value = model.predict(3, X_future=wider)
    np.testing.assert_allclose(by_value["mean"], by_position["mean"], rtol=1e-10)
    # X for s1 from step 0 (the right length once shifted) was read by position before: now a clear error
    shifted = X.assign(ds=np.where(X["unique_id"] == "s1", X["ds"] - 4, X["ds"]))
    with pytest.raises(ValueError, match=r"X\['s1'\]. does not cover .* the first 2[6-9]"):
        tsgen.ARIMA(order=(1, 0, 0)).fit(y, X=shifted)
    with pytest.raises(ValueError, match=r"X_future\['s0'\]. does not cover the 3 forecast steps"):
        model.predict(3, X_future=X[X["ds"] < 31])


def test_integer_ids_come_back_as_integers():
    y = _long().assign(unique_id=lambda d: d["unique_id"].str[1:].astype("int64"))
    model = tsgen.Naive().fit(y)
    outputs = {
        "predict": model.predict(2),
        "per_step": model.log_likelihood(y, per_step=True),
        "to_long": from_long(y).to_long(),
        "backtest": backtest(tsgen.Naive(), y, 2, start=25, step=2).forecasts.rename(columns={"series": "unique_id"}),
    }
    for label, frame in outputs.items():
        assert frame["unique_id"].dtype == np.int64, label
        assert set(frame["unique_id"]) == {0, 1, 2}, label
    assert len(y.merge(outputs["predict"], on="unique_id")) == len(y) * 2
    # string ids stay strings (object under pandas 2, str under pandas 3) and tuples stay tuples
    assert pd.api.types.is_string_dtype(tsgen.Naive().fit(_long()).predict(2)["unique_id"])
    tupled = tsgen.Naive().fit({("a", 1): pd.Series(np.arange(5.0)), ("b", 2): pd.Series(np.arange(6.0))}).predict(1)
    assert list(tupled["unique_id"]) == [("a", 1), ("b", 2)]


def test_backtest_plot_names_the_series_it_draws():
    y = _long()
    result = backtest(tsgen.Naive(), y, 2, start=25, step=2)
    figure = result.plot(series="s1")
    assert figure.axes[1].get_title().startswith("'s1': ")
    ints = backtest(tsgen.Naive(), y.assign(unique_id=y["unique_id"].str[1:].astype(int)), 2, start=25, step=2)
    assert ints.plot(series=np.int64(2)).axes[1].get_title().startswith("2: ")
    single = backtest(tsgen.Naive(), y[y["unique_id"] == "s0"], 2, start=25, step=2)
    assert single.plot().axes[1].get_title().startswith("forecast means")


def test_static_frame_with_an_id_column_as_statsforecast_static_df():
    y = _long()
    by_index = pd.DataFrame({"size": [3.0, 1.0, 2.0]}, index=["s2", "s0", "s1"])
    static_df = by_index.rename_axis("unique_id").reset_index().iloc[[1, 2, 0]]  # any row order
    expected = tsgen.ARIMA(order=(1, 0, 0)).fit(y, static=by_index)
    model = tsgen.ARIMA(order=(1, 0, 0)).fit(y, static=static_df)
    assert model.static_names_ == ("size",)
    np.testing.assert_allclose(model.predict(2)["mean"], expected.predict(2)["mean"], rtol=1e-12)
    np.testing.assert_allclose(model.predict(2, y=y, static=static_df)["mean"], expected.predict(2)["mean"], rtol=1e-12)
    result = backtest(tsgen.ARIMA(order=(1, 0, 0)), y, 2, static=static_df, start=25, step=2, random_state=0)
    reference = backtest(tsgen.ARIMA(order=(1, 0, 0)), y, 2, static=by_index, start=25, step=2, random_state=0)
    pd.testing.assert_frame_equal(result.forecasts, reference.forecasts)
    renamed = from_long(y.rename(columns={"unique_id": "store"}), id_col="store")
    tsgen.ARIMA(order=(1, 0, 0)).fit(renamed, static=static_df.rename(columns={"unique_id": "store"}))
    with pytest.raises(ValueError, match=r"two rows for series 's0'"):
        tsgen.ARIMA(order=(1, 0, 0)).fit(y, static=pd.concat([static_df, static_df.head(1)]))


def test_regularize_takes_a_long_frame_of_periods():
    y = _long()
    periods = y.assign(ds=y["ds"].dt.to_period("Q"))
    gappy = periods.drop(periods.index[[3, 11]])
    filled = tsgen.data.regularize(gappy)
    assert isinstance(filled["ds"].dtype, pd.PeriodDtype) and len(filled) == len(y)
    assert int(filled["y"].isna().sum()) == 2
    tsgen.Naive().fit(filled).predict(1)
    with pytest.raises(TypeError, match="datetimes or periods"):
        tsgen.data.regularize(_long(times="integer").drop(index=[3]))


def test_too_short_to_infer_a_frequency_names_from_long_freq():
    y = _long().sort_values(["unique_id", "ds"]).groupby("unique_id").head(2)
    with pytest.raises(ValueError, match=r"from_long\(frame, freq="):
        tsgen.Naive().fit(y)
    forecast = tsgen.Naive().fit(from_long(y, freq="QS")).predict(1)
    assert list(forecast["ds"]) == [pd.Timestamp("2000-07-01")] * 3


def test_cli_backtest_draws_no_bar_into_a_redirected_stderr(tmp_path, capsys):
    from tsgen.cli import main

    source = tmp_path / "long.csv"
    _long(length=16).to_csv(source, index=False)
    assert main(["backtest", str(source), "--id-col", "unique_id", "--model", "naive", "--horizon", "2"]) == 0
    captured = capsys.readouterr()
    assert "task/s" not in captured.err and "\r" not in captured.err
    assert "origins, horizon 2" in captured.out


def test_calendar_features_of_a_long_frame_serve_as_X_and_X_future():
    from tsgen.data import calendar_features

    y = _long()
    X = calendar_features(y, horizon=3)
    assert list(X.columns) == ["unique_id", "ds", "quarter_2", "quarter_3", "quarter_4"]
    assert len(X) == len(y) + 3 * 3
    # the same features as the per-series calendar, keyed by id
    index = pd.date_range("2000-01-01", periods=33, freq="QS")
    per_series = calendar_features(index)
    np.testing.assert_array_equal(X[X["unique_id"] == "s1"].iloc[:, 2:].to_numpy(), per_series.to_numpy())
    pd.testing.assert_frame_equal(calendar_features(index[:30], horizon=3), per_series, check_freq=False)
    model = tsgen.ARIMA(order=(1, 0, 0)).fit(y, X=X)
    by_dict = tsgen.ARIMA(order=(1, 0, 0)).fit(y, X={k: per_series.iloc[:30] for k in ("s0", "s1", "s2")})
    np.testing.assert_allclose(model.predict(3, X_future=X)["mean"],
                               by_dict.predict(3, X_future={k: per_series.iloc[30:] for k in ("s0", "s1", "s2")})["mean"])
    # only the future rows (statsforecast's X_df) work too; integer ids keep their dtype
    future = X[X["ds"] > y["ds"].max()][["unique_id", "ds"]]
    assert calendar_features(future).shape == (9, 5)
    ints = calendar_features(y.assign(unique_id=y["unique_id"].str[1:].astype(int)))
    assert ints["unique_id"].dtype == np.int64
    with pytest.raises(TypeError, match="without 'unique_id' and 'ds'"):
        calendar_features(y.rename(columns={"ds": "time"}))
    with pytest.raises(ValueError, match="horizon"):
        calendar_features(y, horizon=-1)


@pytest.mark.parametrize("make", [tsgen.Naive, lambda: tsgen.ARIMA(order=(1, 0, 0)), tsgen.ETS, tsgen.Theta])
def test_per_series_models_refuse_a_new_y_with_other_ids(make):
    # fitted per series, paired with y's series by position: renamed ids silently took other series' fits
    y = _long()
    model = make().fit(y)
    renamed = y.assign(unique_id=y["unique_id"].map({"s0": "s0", "s1": "s1", "s2": "new"}))
    with pytest.raises(ValueError, match=r"`y` has series 'new', which the model was not fitted on"):
        model.predict(2, y=renamed)
    with pytest.raises(ValueError, match=r"`y` has series 'new'"):
        model.log_likelihood(renamed)
    with pytest.raises(ValueError, match=r"`y` lacks the fitted series 's1'"):
        model.predict(2, y=y[y["unique_id"] != "s1"])
    shuffled = y.sample(frac=1, random_state=7)
    pd.testing.assert_frame_equal(model.predict(2, y=shuffled), model.predict(2))


def test_a_model_shared_by_all_series_takes_any_ids():
    y = _long()
    fitted_on_one = tsgen.ARIMA(order=(1, 0, 0)).fit(y[y["unique_id"] == "s0"])
    assert len(fitted_on_one.predict(2, y=y.assign(unique_id=y["unique_id"] + "_x"))) == 6
    fitted_on_list = tsgen.Naive().fit([g.set_index("ds")["y"].sort_index() for _, g in y.groupby("unique_id")])
    assert len(fitted_on_list.predict(2, y=y)) == 6


def test_one_unkeyed_X_frame_for_many_series_names_the_id_and_time_columns():
    y = _long()
    X = y[["unique_id", "ds"]].assign(z=1.0).rename(columns={"unique_id": "id"})
    with pytest.raises(ValueError, match=r"one frame for 3 series.*'unique_id' and 'ds' columns \(it lacks \['unique_id'\]\)"):
        tsgen.ARIMA(order=(1, 0, 0)).fit(y, X=X)
    with pytest.raises(ValueError, match=r"lacks \['unique_id', 'ds'\]"):
        tsgen.ARIMA(order=(1, 0, 0)).fit(y, X=X.set_index("ds").drop(columns="id"))


@pytest.mark.parametrize("unit", ["s", "ms", "us"])
def test_time_columns_in_other_units_than_nanoseconds(unit):
    # parquet and arrow give datetime64[us] (or ms); pandas 2 built the regular grid in ns and compared raw
    # integers, so every such frame 'mixed frequencies QS-OCT and QS-OCT'
    y = _long()
    reference = tsgen.Naive().fit(y).predict(2)
    coarse = y.assign(ds=y["ds"].astype(f"datetime64[{unit}]"))
    forecast = tsgen.Naive().fit(coarse).predict(2)
    np.testing.assert_allclose(forecast["mean"], reference["mean"])
    assert (forecast["ds"] == reference["ds"]).all()
    X = tsgen.data.calendar_features(coarse, horizon=2)
    model = tsgen.ARIMA(order=(1, 0, 0)).fit(coarse, X=X.assign(ds=X["ds"].astype("datetime64[ns]")))
    assert len(model.predict(2, X_future=X)) == 6


def test_covariates_in_another_time_zone_are_named_as_such():
    y = _long()
    X = tsgen.data.calendar_features(y)
    with pytest.raises(ValueError, match=r"time zone UTC but `y` has None"):
        tsgen.ARIMA(order=(1, 0, 0)).fit(y, X=X.assign(ds=X["ds"].dt.tz_localize("UTC")))
    aware = y.assign(ds=y["ds"].dt.tz_localize("Europe/Paris"))
    X_aware = tsgen.data.calendar_features(aware)
    assert str(X_aware["ds"].dt.tz) == "Europe/Paris"
    tsgen.ARIMA(order=(1, 0, 0)).fit(aware, X=X_aware)
    with pytest.raises(ValueError, match=r"time zone None but `y` has Europe/Paris"):
        tsgen.ARIMA(order=(1, 0, 0)).fit(aware, X=X)
    # the same instants in another zone are the same rows
    converted = tsgen.ARIMA(order=(1, 0, 0)).fit(aware, X=X_aware.assign(ds=X_aware["ds"].dt.tz_convert("UTC")))
    np.testing.assert_allclose(converted.predict(1, X_future=tsgen.data.calendar_features(aware, horizon=1))["mean"],
                               tsgen.ARIMA(order=(1, 0, 0)).fit(aware, X=X_aware)
                               .predict(1, X_future=tsgen.data.calendar_features(aware, horizon=1))["mean"])


def test_no_pandas_warning_when_frequencies_are_inferred(tmp_path, recwarn):
    # pandas 3.1 warns on each infer_freq call that returns a string; users saw it on every long frame
    from tsgen.cli import main

    y = _long()
    tsgen.Naive().fit(y).predict(1)
    tsgen.data.calendar_features(pd.DatetimeIndex(y["ds"].drop_duplicates().sort_values().to_numpy()))
    tsgen.data.regularize(y.drop(index=y.index[4]))
    source = tmp_path / "long.csv"
    y.to_csv(source, index=False)
    assert main(["-q", "forecast", str(source), "--id-col", "unique_id", "--model", "naive", "--horizon", "1"]) == 0
    assert not [w for w in recwarn if "infer_freq" in str(w.message)]
    with pytest.raises(ValueError, match=r"has frequency 'MS' but the others have 'QS"):
        tsgen.Naive().fit(pd.concat([y, pd.DataFrame({"unique_id": "zz", "y": 1.0,
                                                       "ds": pd.date_range("2001-01-01", periods=5, freq="MS")})]))

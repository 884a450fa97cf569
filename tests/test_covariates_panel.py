"""Covariates the way users hold them (issue 14, section 2): future-known, past-observed and static
covariates aligned by timestamp and id; backtests that never read a past covariate after the origin;
calendar features."""
import numpy as np
import pandas as pd
import pytest

import tsgen
from tsgen.data import calendar_features, hold_past

N = 90


def regression(seed=0, n=N, ids=None):
    """``y = 2 known + 1.5 past_{t} + noise`` on a daily index, with both covariates in one frame."""
    rng = np.random.default_rng(seed)
    index = pd.date_range("2020-01-01", periods=n, freq="D")
    X = pd.DataFrame({"known": rng.normal(size=n), "past": rng.normal(size=n)}, index=index)
    y = pd.Series(2 * X["known"] + 1.5 * X["past"] + 0.3 * rng.normal(size=n), index=index, name="y")
    return y, X


def test_past_covariates_never_use_values_after_the_origin():
    y, X = regression()
    model = tsgen.ARIMA(order=(1, 0, 0)).fit(y.iloc[:60], X=X.iloc[:60], past_covariates=["past"])
    assert model.past_covariates_ == (1,)
    base = model.predict(5, X_future=X[["known"]].iloc[60:65])
    poisoned = X.copy()
    poisoned.iloc[60:, 1] = 1e6  # the future of the past covariate: a forecast must not see it
    pd.testing.assert_frame_equal(model.predict(5, X_future=poisoned.iloc[60:65]), base)
    # conditioning on a new history: X over history and horizon, the past column's horizon rows ignored
    again = model.predict(5, y=y.iloc[:60], X=poisoned.iloc[:65])
    pd.testing.assert_frame_equal(again, base)
    # the held value is the last observed one: the same forecast as a past column constant after the origin
    held = X.copy()
    held.iloc[60:, 1] = X.iloc[59, 1]
    treated_as_known = tsgen.ARIMA(order=(1, 0, 0)).fit(y.iloc[:60], X=X.iloc[:60])
    pd.testing.assert_frame_equal(treated_as_known.predict(5, X=held.iloc[60:65]), base)


def test_backtest_slices_covariates_without_leaking_past_covariates():
    y, X = regression()
    stops = (60, 70, 80)
    for stop in stops:
        poisoned = X.copy()
        poisoned.iloc[stop:, 1] = 1e6
        runs = [tsgen.backtest(tsgen.ARIMA(order=(1, 0, 0)), y, 4, X=covariates, past_covariates=["past"],
                               start=stop, step=100, random_state=0) for covariates in (X, poisoned)]
        clean, dirty = (r.forecasts[["mean", "q0.1", "q0.9"]] for r in runs)
        pd.testing.assert_frame_equal(clean, dirty)
        pd.testing.assert_frame_equal(runs[0].metrics, runs[1].metrics)
    # a future-known column is read over the horizon: poisoning it does change the forecast
    poisoned = X.copy()
    poisoned.iloc[60:, 0] = 1e3
    runs = [tsgen.backtest(tsgen.ARIMA(order=(1, 0, 0)), y, 4, X=c, past_covariates=["past"], start=60, step=100,
                           random_state=0) for c in (X, poisoned)]
    assert not np.allclose(runs[0].forecasts["mean"], runs[1].forecasts["mean"])


def test_backtest_with_covariates_matches_fit_and_predict_at_the_origin():
    y, X = regression(seed=1)
    result = tsgen.backtest(tsgen.ARIMA(order=(1, 0, 0)), y, 3, X=X, start=70, step=100, random_state=0)
    model = tsgen.ARIMA(order=(1, 0, 0)).fit(y.iloc[:70], X=X.iloc[:70])
    expected = model.predict(3, X_future=X.iloc[70:73], quantiles=(0.1, 0.5, 0.9))
    np.testing.assert_allclose(result.forecasts["mean"], expected["mean"], rtol=1e-6)
    np.testing.assert_allclose(result.forecasts["q0.9"], expected["q0.9"], rtol=1e-6)


def _long(frames: dict, column: str | None = None) -> pd.DataFrame:
    pieces = []
    for key, frame in frames.items():
        part = frame.to_frame(column) if isinstance(frame, pd.Series) else frame
        pieces.append(part.rename_axis("ds").reset_index().assign(unique_id=key))
    return pd.concat(pieces, ignore_index=True)


def test_long_format_covariates_are_matched_by_id_and_time():
    ys, Xs = {}, {}
    for k, key in enumerate(("s2", "s1")):
        ys[key], Xs[key] = regression(seed=k)
    y_long = _long({k: v.iloc[:80] for k, v in ys.items()}, "y").sample(frac=1.0, random_state=1)
    X_long = _long(Xs).sample(frac=1.0, random_state=2)  # covers the horizon too, in any row order
    model = tsgen.ARIMA(order=(1, 0, 0)).fit(y_long, X=X_long)
    out = model.predict(3, X_future=X_long)
    assert list(out["unique_id"].unique()) == ["s1", "s2"]
    for key in ("s1", "s2"):
        alone = tsgen.ARIMA(order=(1, 0, 0)).fit(ys[key].iloc[:80], X=Xs[key].iloc[:80]).predict(3, X=Xs[key].iloc[80:83])
        rows = out[out["unique_id"] == key]
        np.testing.assert_allclose(rows["mean"].to_numpy(), alone["mean"].to_numpy(), rtol=1e-6)
    # a dict keyed by id works the same; a missing id is named
    as_dict = {key: Xs[key] for key in ("s1", "s2")}
    pd.testing.assert_frame_equal(tsgen.ARIMA(order=(1, 0, 0)).fit(y_long, X=as_dict).predict(3, X_future=as_dict), out)
    with pytest.raises(ValueError, match="no covariates for series 's2'"):
        tsgen.ARIMA(order=(1, 0, 0)).fit(y_long, X={"s1": Xs["s1"]})


def test_static_covariates_are_constant_columns_by_id(tmp_path):
    rng = np.random.default_rng(3)
    index = pd.date_range("2021-01-01", periods=40, freq="D")
    panel = {key: pd.Series(rng.normal(size=40), index=index) for key in ("a", "b", "c")}
    static = pd.DataFrame({"size": [3.0, 1.0, 2.0]}, index=["c", "a", "b"])  # any row order, matched by id
    # ARIMA fits each series alone, so a static column acts as that series' intercept (trend="n")
    model = tsgen.ARIMA(order=(1, 0, 0), trend="n").fit(panel, static=static)
    assert model.n_static_ == 1 and model.static_names_ == ("size",)
    np.testing.assert_array_equal(model.static_.numpy()[:, 0], [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(model.covariates_[1, :, -1].numpy(), np.full(40, 2.0))
    first = model.predict(2)
    model.save(tmp_path / "m.tsgen")
    pd.testing.assert_frame_equal(tsgen.load(tmp_path / "m.tsgen").predict(2), first)
    with pytest.raises(ValueError, match="`static` is required"):
        model.predict(2, y=panel)
    pd.testing.assert_frame_equal(model.predict(2, y=panel, static=static), first)


def test_static_is_refused_by_models_without_covariates():
    with pytest.raises(ValueError, match="`static` was given but Naive takes no covariates"):
        tsgen.Naive().fit(pd.Series(np.arange(5.0)), static=[[1.0]])


def test_hold_past_keeps_the_origin_value():
    block = np.arange(24.0).reshape(2, 4, 3)
    import torch

    held = hold_past(torch.from_numpy(block), [2, 3], (0, 2)).numpy()
    np.testing.assert_array_equal(held[0, :, 0], [0, 3, 3, 3])
    np.testing.assert_array_equal(held[1, :, 2], [14, 17, 20, 20])
    np.testing.assert_array_equal(held[..., 1], block[..., 1])  # a future-known column untouched


@pytest.mark.parametrize(
    "index, kind, expected",
    [
        (pd.period_range("2020-01", periods=24, freq="M"), "onehot", [f"month_{k}" for k in range(2, 13)]),
        (pd.date_range("2020-01-31", periods=8, freq="ME"), "onehot", [f"month_{k}" for k in range(2, 13)]),
        (pd.period_range("2020Q1", periods=8, freq="Q"), "onehot", ["quarter_2", "quarter_3", "quarter_4"]),
        (pd.date_range("2020-01-01", periods=30, freq="D"), "fourier",
         ["sin_dayofweek_1", "cos_dayofweek_1", "sin_dayofweek_2", "cos_dayofweek_2", "sin_dayofweek_3",
          "cos_dayofweek_3"]),
        (pd.date_range("2020-01-01", periods=48, freq="h"), "onehot", None),
    ],
)
def test_calendar_features_follow_the_frequency(index, kind, expected):
    features = calendar_features(index, kind)
    assert features.index.equals(index) and features.notna().all().all()
    if expected is not None:
        assert list(features.columns[: len(expected)]) == expected
    if kind == "onehot":
        assert set(np.unique(features.to_numpy())) <= {0.0, 1.0}
        assert (features.sum(axis=1) <= len({c.split("_")[0] for c in features.columns})).all()


def test_calendar_features_values_and_use_as_future_covariates():
    months = pd.period_range("2019-01", periods=36, freq="M")
    dummies = calendar_features(months)
    assert dummies.loc[pd.Period("2019-03", "M"), "month_3"] == 1.0 and dummies.iloc[0].sum() == 0.0
    fourier = calendar_features(months, "fourier", n_terms=1)
    np.testing.assert_allclose(fourier["cos_month_1"].iloc[[0, 6]], [1.0, -1.0], atol=1e-12)
    rng = np.random.default_rng(5)
    y = pd.Series(10 * fourier["sin_month_1"].to_numpy() + rng.normal(size=36), index=months)
    future = tsgen.data.future_index(months, 12)
    model = tsgen.ARIMA(order=(0, 0, 0)).fit(y, X=fourier)
    forecast = model.predict(12, X_future=calendar_features(future, "fourier", n_terms=1))
    expected = 10 * calendar_features(future, "fourier", n_terms=1)["sin_month_1"].to_numpy()
    assert np.abs(forecast["mean"].to_numpy() - expected).max() < 1.5


def test_calendar_features_errors():
    with pytest.raises(TypeError, match="DatetimeIndex or PeriodIndex"):
        calendar_features(pd.RangeIndex(5))
    with pytest.raises(ValueError, match="`kind`"):
        calendar_features(pd.period_range("2020-01", periods=3, freq="M"), "wavelet")
    with pytest.raises(ValueError, match="`cycles`"):
        calendar_features(pd.period_range("2020-01", periods=3, freq="M"), cycles=["fortnight"])


def test_covariate_kinds_survive_save_load_partitions_and_unnamed_columns(tmp_path):
    rng = np.random.default_rng(6)
    index = pd.date_range("2020-01-01", periods=50, freq="D")
    longer = pd.date_range("2020-01-01", periods=55, freq="D")
    panel = {k: pd.Series(rng.normal(size=50).cumsum(), index=index) for k in "abcde"}
    X = {k: pd.DataFrame({"k": rng.normal(size=55), "p": rng.normal(size=55)}, index=longer) for k in "abcde"}
    static = pd.DataFrame({"s": np.arange(5.0)}, index=list("abcde"))
    model = tsgen.ARIMA(order=(1, 0, 0), trend="n").fit(panel, X=X, static=static, past_covariates=["p"])
    expected = model.predict(3, X_future=X)
    model.save(tmp_path / "m.tsgen")
    loaded = tsgen.load(tmp_path / "m.tsgen")
    assert list(loaded.feature_names_in_) == ["k", "p"] and loaded.past_covariates_ == (1,)
    # after loading, X's columns are still matched by name: the known column alone is enough
    pd.testing.assert_frame_equal(loaded.predict(3, X_future={k: v[["k"]] for k, v in X.items()}), expected)
    with tsgen.config_context(partition_size=2):  # per-series fits spread over partitions: the same numbers
        parted = tsgen.ARIMA(order=(1, 0, 0), trend="n").fit(panel, X=X, static=static, past_covariates=["p"])
        pd.testing.assert_frame_equal(parted.predict(3, X_future=X), expected, rtol=1e-8)
    arrays = X["a"].to_numpy()
    unnamed = tsgen.ARIMA(order=(1, 0, 0)).fit(panel["a"], X=arrays[:50], past_covariates=[1])
    both = unnamed.predict(3, X_future=arrays[50:53])
    pd.testing.assert_frame_equal(unnamed.predict(3, X_future=arrays[50:53, :1]), both)
    with pytest.raises(ValueError, match="expected the model's 2 or its 1 future-known"):
        unnamed.predict(3, X_future=np.ones((3, 3)))

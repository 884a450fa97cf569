"""Exogenous regressors ``X``: matched to ``y`` by timestamp, by position only for plain arrays."""
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.tsa.statespace.sarimax import SARIMAX

from tsgen import ARIMA, RNNForecaster
from tsgen.data import to_covariates, to_series_batch

N, H = 120, 8


def regression_data(seed=0, n=N, horizon=H, start="2000-01"):
    """``y = 10 + 5 price + AR(1) noise`` monthly, and ``X`` over history and ``horizon`` more months."""
    rng = np.random.default_rng(seed)
    index = pd.date_range(start, periods=n + horizon, freq="MS")
    X = pd.DataFrame({"price": rng.normal(size=n + horizon)}, index=index)
    noise = np.zeros(n + horizon)
    for t in range(1, n + horizon):
        noise[t] = 0.5 * noise[t - 1] + rng.normal()
    y = pd.Series(10.0 + 5.0 * X["price"].to_numpy() + noise, index=index, name="sales")
    return y.iloc[:n], X


def test_coefficient_matches_statsmodels_and_is_named_after_the_column():
    y, X_all = regression_data()
    model = ARIMA(order=(1, 0, 0), trend="c").fit(y, X=X_all.iloc[:N])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        oracle = SARIMAX(y, exog=X_all.iloc[:N], order=(1, 0, 0), trend="c").fit(disp=0)
    assert list(model.params_) == ["const", "x.price", "ar.L1", "sigma2"]
    assert model.params_["x.price"] == pytest.approx(oracle.params["price"], rel=1e-3)
    assert model.params_["ar.L1"] == pytest.approx(oracle.params["ar.L1"], abs=2e-3)
    assert list(model.feature_names_in_) == ["price"]


def test_rows_are_matched_by_timestamp_not_position():
    y, X_all = regression_data()
    X = X_all.iloc[:N]
    ordered = ARIMA(order=(1, 0, 0), trend="c").fit(y, X=X)
    # reversed rows, and X covering history and future: the same rows by date
    for X_other in (X.iloc[::-1], X_all, X_all.sample(frac=1.0, random_state=1)):
        copy = X_other.copy()
        model = ARIMA(order=(1, 0, 0), trend="c").fit(y, X=X_other)
        assert model.params_ == pytest.approx(ordered.params_, rel=1e-10)
        pd.testing.assert_frame_equal(X_other, copy)  # the caller's X is untouched
    assert ordered.params_["x.price"] == pytest.approx(5.0, abs=0.2)


def test_predict_picks_the_forecast_rows_by_timestamp():
    y, X_all = regression_data()
    model = ARIMA(order=(1, 0, 0), trend="c").fit(y, X=X_all.iloc[:N])
    future_only = model.predict(H, X=X_all.iloc[N:])
    # X over history and future: the forecast rows are chosen by date, not the first rows
    pd.testing.assert_frame_equal(model.predict(H, X=X_all), future_only)
    pd.testing.assert_frame_equal(model.predict(H, X=X_all.iloc[::-1]), future_only)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = SARIMAX(y, exog=X_all.iloc[:N], order=(1, 0, 0), trend="c").filter(
            [model.params_["const"] * (1 - model.params_["ar.L1"]), model.params_["x.price"],
             model.params_["ar.L1"], model.params_["sigma2"]])
    expected = reference.get_forecast(H, exog=X_all.iloc[N:]).predicted_mean
    np.testing.assert_allclose(future_only["mean"], expected, rtol=1e-6)
    paths = model.sample(H, n_samples=3, X=X_all)
    assert paths.shape == (3, H, 1)


@pytest.mark.parametrize("method", ["predict", "sample"])
def test_future_x_must_cover_the_horizon(method):
    y, X_all = regression_data()
    model = ARIMA(order=(1, 0, 0), trend="c").fit(y, X=X_all.iloc[:N])
    with pytest.raises(ValueError, match="`X` does not cover the 8 forecast steps"):
        getattr(model, method)(H, X=X_all.iloc[: N + 3])
    with pytest.raises(ValueError, match="`X` does not cover"):
        getattr(model, method)(H, X=X_all.iloc[:N])


def test_x_that_does_not_overlap_y_is_refused():
    y, X_all = regression_data()
    shifted = X_all.set_axis(pd.date_range("1980-01", periods=len(X_all), freq="MS"))
    with pytest.raises(ValueError, match="`X` does not cover the 120 time steps of `y`"):
        ARIMA(order=(1, 0, 0), trend="c").fit(y, X=shifted)
    with pytest.raises(ValueError, match="`X` does not cover"):
        ARIMA(order=(1, 0, 0), trend="c").fit(y, X=X_all.iloc[5:])


def test_plain_arrays_are_matched_by_position_with_the_exact_length():
    y, X_all = regression_data()
    x = X_all.to_numpy()
    by_date = ARIMA(order=(1, 0, 0), trend="c").fit(y, X=X_all)
    model = ARIMA(order=(1, 0, 0), trend="c").fit(y, X=x[:N])
    assert list(model.params_) == ["const", "x1", "ar.L1", "sigma2"]
    assert list(model.params_.values()) == pytest.approx(list(by_date.params_.values()), rel=1e-10)
    np.testing.assert_allclose(model.predict(H, X=x[N:])["mean"], by_date.predict(H, X=X_all)["mean"])
    with pytest.raises(ValueError, match=r"`X` has 128 rows; expected exactly 120"):
        ARIMA(order=(1, 0, 0), trend="c").fit(y, X=x)
    with pytest.raises(ValueError, match=r"`X` has 128 rows; expected exactly 8"):
        model.predict(H, X=x)
    # a DataFrame without a time index is positional too
    with pytest.raises(ValueError, match=r"`X` has 3 rows; expected exactly 8"):
        model.predict(H, X=pd.DataFrame({"price": np.zeros(3)}))


@pytest.mark.parametrize("call", [
    lambda m, y, X: m.predict(H, X=X.iloc[N:]),
    lambda m, y, X: m.sample(H, X=X.iloc[N:]),
    lambda m, y, X: m.log_likelihood(y, X=X.iloc[:N]),
    lambda m, y, X: m.predict(H, y=y, X=X),
])
def test_x_on_a_model_fitted_without_x_is_refused(call):
    y, X_all = regression_data()
    model = ARIMA(order=(1, 0, 0), trend="c").fit(y)
    with pytest.raises(ValueError, match="`X` was given but the model was fitted without covariates"):
        call(model, y, X_all)


def test_lists_of_series_are_aligned_one_by_one():
    (y1, X1), (y2, X2) = regression_data(1, n=80), regression_data(2, n=100, start="2003-07")
    exact = ARIMA(order=(1, 0, 0), trend="c").fit([y1, y2], X=[X1.iloc[:80].to_numpy(), X2.iloc[:100].to_numpy()])
    model = ARIMA(order=(1, 0, 0), trend="c").fit([y1, y2], X=[X1.iloc[::-1], X2])
    for ours, theirs in zip(model.params_, exact.params_):
        assert list(ours.values()) == pytest.approx(list(theirs.values()), rel=1e-10)
    forecasts = model.predict(H, X=[X1, X2])
    expected = exact.predict(H, X=[X1.iloc[80:].to_numpy(), X2.iloc[100:].to_numpy()])
    for ours, theirs in zip(forecasts, expected):
        np.testing.assert_allclose(ours["mean"], theirs["mean"])
    with pytest.raises(ValueError, match=r"`X\[1\]` does not cover"):
        model.predict(H, X=[X1, X2.iloc[:100]])


def test_conditioning_on_another_history_aligns_its_x():
    y, X_all = regression_data()
    model = ARIMA(order=(1, 0, 0), trend="c").fit(y, X=X_all.iloc[:N])
    tail = y.iloc[60:]
    expected = model.predict(H, y=tail, X=X_all.iloc[60:])
    pd.testing.assert_frame_equal(model.predict(H, y=tail, X=X_all), expected)
    assert model.log_likelihood(tail, X=X_all) == pytest.approx(model.log_likelihood(tail, X=X_all.iloc[60:N]))
    with pytest.raises(ValueError, match="`X` does not cover the 60 time steps of `y` and the 8 forecast steps"):
        model.predict(H, y=tail, X=X_all.iloc[60:N])


def test_columns_are_matched_by_name_after_fit():
    rng = np.random.default_rng(3)
    index = pd.period_range("2001Q1", periods=60 + 4, freq="Q")
    X = pd.DataFrame({"a": rng.normal(size=64), "b": rng.normal(size=64)}, index=index)
    y = pd.Series(2 * X["a"] - X["b"] + rng.normal(size=64) * 0.1, index=index).iloc[:60]
    model = ARIMA(order=(0, 0, 0), trend="c").fit(y, X=X)
    assert model.params_["x.a"] == pytest.approx(2.0, abs=0.05)
    assert model.params_["x.b"] == pytest.approx(-1.0, abs=0.05)
    pd.testing.assert_frame_equal(model.predict(4, X=X[["b", "a"]]), model.predict(4, X=X))
    with pytest.raises(ValueError, match=r"`X` lacks column\(s\) \['b'\]"):
        model.predict(4, X=X[["a"]].assign(c=1.0))
    # periods at another frequency are not the same timestamps
    monthly = X.set_axis(pd.period_range("2001-01", periods=64, freq="M"))
    with pytest.raises(ValueError, match="frequency"):
        model.predict(4, X=monthly)
    with pytest.raises(ValueError, match="same kind of time index"):
        model.predict(4, X=X.set_axis(index.to_timestamp()))


def test_refit_with_other_covariates_and_without():
    y, X_all = regression_data()
    model = ARIMA(order=(1, 0, 0), trend="c").fit(y, X=X_all)
    wider = X_all.assign(promo=np.arange(len(X_all)) % 2)
    model.fit(y, X=wider)
    assert list(model.params_)[1:3] == ["x.price", "x.promo"]
    model.fit(y)
    assert model.n_features_ == 0 and model.feature_names_in_ is None
    assert "x.price" not in model.params_


def test_nan_only_matters_in_the_rows_used():
    y, X_all = regression_data()
    X = X_all.copy()
    X.iloc[-1, 0] = np.nan  # a future row, not needed to fit
    ARIMA(order=(1, 0, 0), trend="c").fit(y, X=X)
    with pytest.raises(ValueError, match="`X` contains NaN"):
        ARIMA(order=(1, 0, 0), trend="c").fit(y, X=X_all.assign(price=np.nan))


def test_to_covariates_layout():
    batch = to_series_batch([pd.Series(np.arange(3.0), index=pd.date_range("2020", periods=3, freq="D")),
                             pd.Series(np.arange(2.0), index=pd.date_range("2020-01-05", periods=2, freq="D"))])
    X = pd.DataFrame({"k": np.arange(10.0)}, index=pd.date_range("2020", periods=10, freq="D"))
    covariates, names = to_covariates([X, X], "X", batch.indexes, horizon=2)
    assert names == ("k",)
    np.testing.assert_array_equal(covariates[0, :, 0], [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(covariates[1, :, 0], [4, 5, 6, 7, 0])  # padding after its 4 rows
    future, _ = to_covariates([X, X], "X", batch.indexes, horizon=2, history=False)
    np.testing.assert_array_equal(future[:, :, 0], [[3, 4], [6, 7]])


def test_rnn_covariates_follow_the_same_rules():
    y, X_all = regression_data(n=60)
    model = RNNForecaster(hidden_dim=4, window_length=12, max_epochs=1, progress=False, random_state=0)
    model.fit(y, X=X_all)
    pd.testing.assert_frame_equal(model.predict(H, X=X_all), model.predict(H, X=X_all.iloc[60:]))
    with pytest.raises(ValueError, match="`X` does not cover"):
        model.predict(H, X=X_all.iloc[:60])


@given(st.integers(1, 30), st.integers(0, 6), st.integers(0, 6), st.integers(0, 10**6), st.booleans())
@settings(max_examples=60, deadline=None)
def test_any_row_order_and_extra_rows_give_the_same_aligned_rows(n, before, horizon, seed, periods):
    """Property: X shuffled, with rows before the history and after the horizon, aligns to the exact rows."""
    rng = np.random.default_rng(seed)
    make = (lambda start, k: pd.period_range(start, periods=k, freq="M")) if periods else (
        lambda start, k: pd.date_range(start, periods=k, freq="MS"))
    full = make("2000-01", before + n + horizon + 3)
    y = pd.Series(rng.normal(size=n), index=full[before: before + n])
    values = rng.normal(size=(len(full), 2))
    X = pd.DataFrame(values, index=full, columns=["a", "b"]).sample(frac=1.0, random_state=seed % 1000)
    batch = to_series_batch(y)
    past, names = to_covariates(X, "X", batch.indexes, horizon)
    assert names == ("a", "b")
    np.testing.assert_array_equal(past[0].numpy(), values[before: before + n + horizon])
    if horizon:
        future, _ = to_covariates(X, "X", batch.indexes, horizon, history=False)
        np.testing.assert_array_equal(future[0].numpy(), values[before + n: before + n + horizon])

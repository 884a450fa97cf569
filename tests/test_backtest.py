"""Backtests against a hand-computed loop, refit policies, and serial/joblib/Dask equivalence.

The toy estimator is a Gaussian random walk with drift, whose forecasts
and one-step densities are known in closed form:
    y_t = y_{t-1} + mu + sigma * eps_t,   eps_t ~ N(0, 1)
so  y_{t+h} | y_{1:t} ~ N(y_t + h mu, h sigma^2).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from tsgen.base import BaseForecaster
from tsgen.evaluation import BacktestResult, backtest


class _RandomWalk(BaseForecaster):
    """Gaussian random walk with drift; `mu` and `sigma` from the observed first differences."""

    def __init__(self, random_state=None):
        self.random_state = random_state

    def _min_length(self):
        return 3

    def _fit(self, data, covariates):
        values = data.values.numpy()
        diffs = np.diff(values, axis=1).reshape(-1, values.shape[-1])
        self.mu_ = np.nanmean(diffs, axis=0)
        self.sigma_ = np.nanstd(diffs, axis=0)
        _RandomWalk.fit_lengths.append(int(data.lengths[0]))

    fit_lengths: list = []

    def _last(self, history):
        values = history.values.numpy()
        last = np.empty((history.n_series, history.n_dims))
        for i, n in enumerate(history.lengths.tolist()):
            observed = values[i, :n][~np.isnan(values[i, :n]).any(-1)]
            last[i] = observed[-1]
        return last

    def _predict_gaussian(self, horizon, history, covariates):
        h = np.arange(1, horizon + 1)[None, :, None]
        mean = self._last(history)[:, None, :] + h * self.mu_
        std = np.broadcast_to(np.sqrt(h) * self.sigma_, mean.shape)
        return torch.from_numpy(mean), torch.from_numpy(std.copy())

    def _sample(self, horizon, n_samples, history, covariates, generator):
        eps = torch.randn(history.n_series, n_samples, horizon, history.n_dims, generator=generator, dtype=torch.float64)
        steps = torch.from_numpy(self.mu_) + torch.from_numpy(self.sigma_) * eps
        return torch.from_numpy(self._last(history))[:, None, None, :] + steps.cumsum(2)

    def _log_likelihood(self, data, covariates, **options):
        values = data.values.numpy()
        out = np.zeros(values.shape[:2])
        for i, n in enumerate(data.lengths.tolist()):
            prev, gap = None, 0
            for t in range(n):
                gap += 1
                if np.isnan(values[i, t]).any():
                    continue
                if prev is not None:
                    out[i, t] = stats.norm.logpdf(
                        values[i, t], prev + gap * self.mu_, np.sqrt(gap) * self.sigma_
                    ).sum()
                prev, gap = values[i, t], 0
        return torch.from_numpy(out)


class _SampledWalk(_RandomWalk):
    """The same walk known only through its sample paths (the route of the deep models)."""

    def _predict_gaussian(self, horizon, history, covariates):
        return None


def _series(n=40, seed=0, name="y"):
    rng = np.random.default_rng(seed)
    values = 10 + np.cumsum(0.3 + rng.normal(size=n))
    return pd.Series(values, index=pd.date_range("2020-01-01", periods=n, freq="D"), name=name)


def _value(result, origin, metric):
    rows = result.metrics[(result.metrics.origin == origin) & (result.metrics.metric == metric)]
    return rows.sort_values("horizon")["value"].to_numpy()


def test_metrics_equal_a_hand_computed_loop():
    y = _series(14)
    horizon, levels = 3, (0.1, 0.5, 0.9)
    result = backtest(_RandomWalk(), y, horizon, start=9, step=1, quantiles=levels,
                      n_samples=50, season=2, random_state=3, keep_samples=True)
    stops = [9, 10, 11]
    assert result.n_origins == len(stops)
    assert list(result.metrics.cutoff.drop_duplicates()) == [y.index[t - 1] for t in stops]
    for k, t in enumerate(stops):
        train, actual = y.to_numpy()[:t], y.to_numpy()[t:t + horizon]
        mu, sigma = np.mean(np.diff(train)), np.std(np.diff(train))
        h = np.arange(1, horizon + 1)
        mean, std = train[-1] + h * mu, sigma * np.sqrt(h)
        np.testing.assert_allclose(_value(result, k, "mae"), np.abs(actual - mean), rtol=1e-12)
        np.testing.assert_allclose(_value(result, k, "rmse"), np.abs(actual - mean), rtol=1e-12)
        scale = np.mean(np.abs(train[2:] - train[:-2]))
        np.testing.assert_allclose(_value(result, k, "mase"), np.abs(actual - mean) / scale, rtol=1e-12)
        np.testing.assert_allclose(
            _value(result, k, "smape"), 200 * np.abs(actual - mean) / (np.abs(actual) + np.abs(mean)), rtol=1e-12
        )
        draws = result.samples[(0, k)][:, :, 0]
        assert draws.shape == (50, horizon)
        # Gaussian marginals in closed form: the exact CRPS of N(mean, std^2), not the samples' estimate
        z = (actual - mean) / std
        crps = std * (z * (2 * stats.norm.cdf(z) - 1) + 2 * stats.norm.pdf(z) - 1 / np.sqrt(np.pi))
        np.testing.assert_allclose(_value(result, k, "crps"), crps, rtol=1e-10)
        for q in levels:
            u = actual - (mean + stats.norm.ppf(q) * std)
            np.testing.assert_allclose(_value(result, k, f"pinball_q{q:g}"), np.maximum(q * u, (q - 1) * u),
                                       rtol=1e-10, atol=1e-12)
        for level in (0.8, 0.95):
            z = stats.norm.ppf((1 + level) / 2)
            inside = (np.abs(actual - mean) <= z * std).astype(float)
            np.testing.assert_array_equal(_value(result, k, f"coverage_{round(level * 100)}"), inside)
        # sequential log score: -log p(y_{t+h} | y_{1:t+h-1}) with the parameters fitted at t
        previous = np.concatenate([[train[-1]], actual[:-1]])
        np.testing.assert_allclose(_value(result, k, "log_score"),
                                   -stats.norm.logpdf(actual, previous + mu, sigma), rtol=1e-10)
    forecasts = result.forecasts[result.forecasts.origin == 0]
    np.testing.assert_allclose(forecasts["y"], y.to_numpy()[9:12])
    assert list(forecasts["time"]) == list(y.index[9:12])


def test_summary_means_metrics_by_group():
    result = backtest(_RandomWalk(), _series(30), 4, start=20, step=2, random_state=0)
    overall = result.summary()
    by_h = result.summary(by="horizon")
    assert list(by_h.index) == [1, 2, 3, 4]
    crps = result.metrics[result.metrics.metric == "crps"]
    assert overall.loc["overall", "crps"] == pytest.approx(crps["value"].mean())
    assert by_h.loc[2, "mae"] == pytest.approx(
        result.metrics.query("metric == 'mae' and horizon == 2")["value"].mean()
    )
    assert {"coverage_80", "coverage_95", "log_score", "pinball_q0.5"} <= set(overall.columns)
    assert isinstance(result, BacktestResult) and "origins=" in repr(result)
    with pytest.raises(ValueError, match="`by`"):
        result.summary(by="model")


@pytest.mark.parametrize("refit, expected_fits", [(True, [20, 21, 22, 23, 24]), (2, [20, 22, 24]), (False, [20])])
def test_refit_policy_fits_exactly_when_asked(refit, expected_fits):
    y = _series(28)
    _RandomWalk.fit_lengths.clear()
    result = backtest(_RandomWalk(), y, 4, start=20, refit=refit, random_state=0)
    assert _RandomWalk.fit_lengths == expected_fits
    assert list(result.fits["train_length"]) == expected_fits
    # between refits the model is conditioned on the new history with the older parameters
    values = y.to_numpy()
    for k, t in enumerate(range(20, 25)):
        fitted_at = max(f for f in expected_fits if f <= t)
        mu = np.mean(np.diff(values[:fitted_at]))
        mean = result.forecasts.query("origin == @k")["mean"].to_numpy()
        np.testing.assert_allclose(mean, values[t - 1] + mu * np.arange(1, 5), rtol=1e-12)


class _IndependentRandomWalk(_RandomWalk):
    """The random walk fitted per series (its own `mu`, `sigma` for each series of a list), as ARIMA does."""

    _fits_series_independently = True
    fit_calls: list = []

    def _fit(self, data, covariates):
        values = data.values.numpy()
        diffs = np.diff(values, axis=1)  # (series, time - 1, dims), NaN past each series' end
        self.mu_ = np.nanmean(diffs, axis=1)
        self.sigma_ = np.nanstd(diffs, axis=1)
        _IndependentRandomWalk.fit_calls.append(data.lengths.tolist())

    def _per_series(self, n_series):
        if len(self.mu_) == 1:
            return np.repeat(self.mu_, n_series, 0), np.repeat(self.sigma_, n_series, 0)
        assert len(self.mu_) == n_series, "histories must pair one to one with the fitted series"
        return self.mu_, self.sigma_

    def _predict_gaussian(self, horizon, history, covariates):
        mu, sigma = self._per_series(history.n_series)
        h = np.arange(1, horizon + 1)[None, :, None]
        mean = self._last(history)[:, None, :] + h * mu[:, None, :]
        return torch.from_numpy(mean), torch.from_numpy(np.sqrt(h) * sigma[:, None, :] + 0 * mean)

    def _sample(self, horizon, n_samples, history, covariates, generator):
        mu, sigma = (torch.from_numpy(a)[:, None, None, :] for a in self._per_series(history.n_series))
        eps = torch.randn(history.n_series, n_samples, horizon, history.n_dims, generator=generator, dtype=torch.float64)
        return torch.from_numpy(self._last(history))[:, None, None, :] + (mu + sigma * eps).cumsum(2)

    def _log_likelihood(self, data, covariates, **options):
        mu, sigma = self._per_series(data.n_series)
        values = data.values.numpy()
        out = np.zeros(values.shape[:2])
        for i, n in enumerate(data.lengths.tolist()):
            out[i, 1:n] = stats.norm.logpdf(values[i, 1:n], values[i, : n - 1] + mu[i], sigma[i]).sum(-1)
        return torch.from_numpy(out)


@pytest.mark.parametrize("refit, batch_size, expected_calls", [
    (True, 32, [[20, 21, 22, 23, 24]]),
    (True, 2, [[20, 21], [22, 23], [24]]),
    (2, 32, [[20, 22, 24]]),
    (3, 1, [[20], [23]]),
])
def test_independent_fits_are_batched_over_refit_origins(refit, batch_size, expected_calls):
    """Estimators fitted per series get every refit window in one `fit` call, each origin keeping its own fit."""
    y = _series(28)
    _IndependentRandomWalk.fit_calls.clear()
    result = backtest(_IndependentRandomWalk(), y, 4, start=20, refit=refit, batch_size=batch_size, random_state=0)
    assert _IndependentRandomWalk.fit_calls == expected_calls
    fitted_lengths = [n for call in expected_calls for n in call]
    assert list(result.fits["train_length"]) == fitted_lengths
    values = y.to_numpy()
    for k, t in enumerate(range(20, 25)):
        fitted_at = max(f for f in fitted_lengths if f <= t)
        train = values[:fitted_at]
        mu, sigma = np.mean(np.diff(train)), np.std(np.diff(train))
        mean = result.forecasts.query("origin == @k")["mean"].to_numpy()
        np.testing.assert_allclose(mean, values[t - 1] + mu * np.arange(1, 5), rtol=1e-12)
        actual = values[t : t + 4]
        previous = np.concatenate([[values[t - 1]], actual[:-1]])
        np.testing.assert_allclose(_value(result, k, "log_score"),
                                   -stats.norm.logpdf(actual, previous + mu, sigma), rtol=1e-10)
    # the same origins scored one fit at a time give the same point forecasts
    _RandomWalk.fit_lengths.clear()
    one_by_one = backtest(_RandomWalk(), y, 4, start=20, refit=refit, random_state=0)
    assert _RandomWalk.fit_lengths == fitted_lengths
    pd.testing.assert_frame_equal(one_by_one.forecasts.drop(columns=["q0.1", "q0.5", "q0.9"]),
                                  result.forecasts.drop(columns=["q0.1", "q0.5", "q0.9"]))


def test_sliding_window_trains_on_the_last_window_length_steps():
    y = _series(30)
    _RandomWalk.fit_lengths.clear()
    result = backtest(_RandomWalk(), y, 2, start=20, step=3, window="sliding", window_length=8, random_state=0)
    assert _RandomWalk.fit_lengths == [8, 8, 8]
    values = y.to_numpy()
    mu = np.mean(np.diff(values[15:23]))
    np.testing.assert_allclose(result.forecasts.query("origin == 1")["mean"], values[22] + mu * np.array([1, 2]))


def test_deterministic_under_random_state_and_caller_objects_untouched():
    y = _series(30)
    copy = y.copy()
    model = _SampledWalk(random_state=123)  # a CRPS from sample paths: the seed shows in it
    a = backtest(model, y, 3, start=20, random_state=7)
    b = backtest(model, y, 3, start=20, random_state=7)
    c = backtest(model, y, 3, start=20, random_state=8)
    pd.testing.assert_frame_equal(a.metrics, b.metrics)
    crps = a.metrics.metric == "crps"
    assert not np.allclose(a.metrics[crps]["value"], c.metrics[crps]["value"])
    pd.testing.assert_series_equal(y, copy)
    assert model.get_params() == {"random_state": 123} and not hasattr(model, "mu_")


def test_many_series_and_multivariate_targets():
    ys = [_series(25, seed=1, name="a"), _series(30, seed=2, name="a")]
    result = backtest(_RandomWalk(), ys, 2, start=20, random_state=0)
    assert result.metrics.groupby("series")["origin"].nunique().tolist() == [4, 9]
    frame = pd.concat([_series(26, 3, "u"), _series(26, 4, "v")], axis=1)
    multi = backtest(_RandomWalk(), frame, 2, start=22, random_state=0)
    assert set(multi.forecasts["variable"]) == {"u", "v"}
    u = multi.forecasts.query("origin == 0 and variable == 'u'")
    v = multi.forecasts.query("origin == 0 and variable == 'v'")
    mae = _value(multi, 0, "mae")
    np.testing.assert_allclose(mae, (np.abs(u.y - u["mean"]).to_numpy() + np.abs(v.y - v["mean"]).to_numpy()) / 2)


def test_parallel_joblib_and_dask_match_serial():
    distributed = pytest.importorskip("distributed")
    y = [_series(30, seed=5), _series(30, seed=6)]
    kwargs = dict(start=22, refit=3, n_samples=20, random_state=11)
    serial = backtest(_RandomWalk(), y, 3, **kwargs)
    threads = backtest(_RandomWalk(), y, 3, n_jobs=2, backend="threading", **kwargs)
    never = dict(kwargs, refit=False, batch_size=2)
    serial_never = backtest(_RandomWalk(), y, 3, **never)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        on_dask = backtest(_RandomWalk(), y, 3, backend="dask", client=client, **kwargs)
        on_dask_never = backtest(_RandomWalk(), y, 3, backend="dask", client=client, **never)
        by_address = backtest(_RandomWalk(), y, 3, backend="dask", client=cluster.scheduler_address, **never)
    for other in (threads, on_dask):
        pd.testing.assert_frame_equal(serial.metrics, other.metrics)
        pd.testing.assert_frame_equal(serial.forecasts, other.forecasts)
        pd.testing.assert_frame_equal(serial.fits, other.fits)
    pd.testing.assert_frame_equal(serial_never.metrics, on_dask_never.metrics)
    pd.testing.assert_frame_equal(serial_never.metrics, by_address.metrics)


def test_processes_match_serial():
    y = _series(26, seed=9)
    serial = backtest(_RandomWalk(), y, 2, start=20, n_samples=10, random_state=1)
    pooled = backtest(_RandomWalk(), y, 2, start=20, n_samples=10, random_state=1, n_jobs=2)
    pd.testing.assert_frame_equal(serial.metrics, pooled.metrics)


@pytest.mark.parametrize("kwargs, match", [
    (dict(start=38), "`start`"),
    (dict(start="2031-01-01"), "`start`"),
    (dict(step=0), "`step`"),
    (dict(refit=-1), "`refit`"),
    (dict(window="rolling"), "`window`"),
    (dict(window="sliding", window_length=50), "`window_length`"),
    (dict(quantiles=(0.5, 1.5)), "`quantiles`"),
    (dict(season=0), "`season`"),
    (dict(backend="spark"), "`backend`"),
    (dict(client="tcp://x:1"), "`client`"),
])
def test_bad_arguments_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        backtest(_RandomWalk(), _series(40), 3, **kwargs)


def test_bad_types_are_type_errors():
    with pytest.raises(TypeError, match="`model`"):
        backtest(object(), _series(40), 3)
    with pytest.raises(TypeError, match="`random_state`"):
        backtest(_RandomWalk(), _series(40), 3, random_state=1.5)
    with pytest.raises(TypeError, match="`horizon`"):
        backtest(_RandomWalk(), _series(40), 2.0)


def test_start_accepts_a_timestamp():
    y = _series(30)
    result = backtest(_RandomWalk(), y, 2, start=y.index[24], random_state=0)
    assert result.metrics.cutoff.iloc[0] == y.index[24]
    assert result.n_origins == 4


def test_arima_without_refit_matches_statsmodels_conditioning():
    """No-refit origins condition the first fit on each history: statsmodels' ``apply`` is the oracle."""
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    from tsgen.models.arima import ARIMA

    rng = np.random.default_rng(4)
    e = rng.normal(size=130)
    y = pd.Series(np.cumsum(e[1:] + 0.5 * e[:-1]) + 20, index=pd.period_range("2000-01", periods=129, freq="M"))
    result = backtest(ARIMA((0, 1, 1), random_state=0), y, 4, start=100, step=7, refit=False,
                      random_state=0, n_samples=20)
    first = ARIMA((0, 1, 1)).fit(y.iloc[:100])
    params = [first.params_["ma.L1"], first.params_["sigma2"]]
    fitted = SARIMAX(y.iloc[:100], order=(0, 1, 1)).smooth(params)
    for k, t in enumerate(range(100, 126, 7)):
        oracle = fitted.apply(y.iloc[:t]).get_forecast(4)
        window = result.forecasts.query("origin == @k")
        np.testing.assert_allclose(window["mean"], oracle.predicted_mean, rtol=1e-6)
        lower = oracle.conf_int(alpha=0.2).iloc[:, 0]
        np.testing.assert_allclose(window["q0.1"], lower, rtol=1e-6)
        assert list(window["time"]) == list(y.index[t:t + 4])


def test_arima_batched_refits_equal_one_fit_per_window():
    """ARIMA refits share one batched fit; each origin's forecast is still that of its own window's fit."""
    from tsgen.models.arima import ARIMA

    rng = np.random.default_rng(7)
    e = rng.normal(size=71)
    y = pd.Series(np.cumsum(e[1:] - 0.4 * e[:-1]) + 5, index=pd.period_range("2001-01", periods=70, freq="M"))
    result = backtest(ARIMA((0, 1, 1), random_state=0), y, 3, start=55, step=4, refit=True,
                      random_state=0, n_samples=20)
    stops = [55, 59, 63, 67]
    assert list(result.fits["train_length"]) == stops
    for k, t in enumerate(stops):
        alone = ARIMA((0, 1, 1)).fit(y.iloc[:t])
        oracle = alone.predict(3, quantiles=(0.1, 0.9))
        window = result.forecasts.query("origin == @k")
        np.testing.assert_allclose(window["mean"], oracle["mean"], rtol=1e-5)
        np.testing.assert_allclose(window["q0.1"], oracle["q0.1"], rtol=1e-5)
        per_step = alone.log_likelihood(y.iloc[: t + 3], per_step=True).to_numpy()[-3:]
        np.testing.assert_allclose(_value(result, k, "log_score"), -per_step, rtol=1e-5)


def test_mase_is_nan_only_at_origins_whose_history_has_no_scale():
    values = np.concatenate([10 + np.cumsum(np.random.default_rng(2).normal(size=10)), np.full(6, 3.0), [4.0, 5.0]])
    y = pd.Series(values, index=pd.date_range("2021-01-01", periods=len(values), freq="D"))
    result = backtest(_RandomWalk(), y, 1, start=10, window="sliding", window_length=4, refit=False,
                      random_state=0)
    mase = np.concatenate([_value(result, k, "mase") for k in range(result.n_origins)])
    constant = [k for k, t in enumerate(range(10, len(values))) if np.ptp(values[t - 4 : t]) == 0]
    assert constant and np.isnan(mase[constant]).all()
    fine = [k for k in range(len(mase)) if k not in constant]
    means = result.forecasts.groupby("origin")["mean"].first().to_numpy()
    expected = [abs(values[10 + k] - means[k]) / np.mean(np.abs(np.diff(values[6 + k : 10 + k]))) for k in fine]
    np.testing.assert_allclose(mase[fine], expected, rtol=1e-12)


def test_batched_refits_match_serial_in_parallel():
    y = [_series(30, seed=8), _series(29, seed=9)]
    kwargs = dict(start=20, refit=True, batch_size=3, n_samples=20, random_state=5)
    serial = backtest(_IndependentRandomWalk(), y, 3, **kwargs)
    threads = backtest(_IndependentRandomWalk(), y, 3, n_jobs=2, backend="threading", **kwargs)
    pd.testing.assert_frame_equal(serial.metrics, threads.metrics)
    pd.testing.assert_frame_equal(serial.forecasts, threads.forecasts)
    pd.testing.assert_frame_equal(serial.fits, threads.fits)
    assert list(serial.fits["train_length"]) == list(range(20, 28)) + list(range(20, 27))


@pytest.mark.parametrize("freq", ["ME", "MS", "M-period", "D"])
def test_start_names_a_period_on_datetime_and_period_indexes(freq):
    """Issue 9 §5: ``start="1995-12"`` worked on a PeriodIndex only; the cutoff is the period's last step."""
    n = 400 if freq == "D" else 40
    if freq == "M-period":
        index = pd.period_range("1993-01", periods=n, freq="M")
    else:
        index = pd.date_range("1993-01-01", periods=n, freq=freq)
    y = pd.Series(_series(n).to_numpy(), index=index)
    result = backtest(_RandomWalk(), y, 2, start="1993-12", random_state=0)
    cutoff = result.metrics.cutoff.iloc[0]
    expected = {"ME": pd.Timestamp("1993-12-31"), "MS": pd.Timestamp("1993-12-01"),
                "M-period": pd.Period("1993-12", "M"), "D": pd.Timestamp("1993-12-31")}[freq]
    assert cutoff == expected
    assert result.fits["train_length"].iloc[0] == int(np.flatnonzero(index == expected)[0]) + 1
    with pytest.raises(ValueError, match="`start`"):
        backtest(_RandomWalk(), y, 2, start="1980-06")


@pytest.mark.parametrize("bad", [2**70, -1, 1.5, "0"])
def test_backtest_random_state_is_checked_like_the_estimators(bad):
    # one check for every seed a user passes (tsgen.training.randomness.check_random_state)
    with pytest.raises((TypeError, ValueError), match="random_state"):
        backtest(_RandomWalk(), _series(30), 4, start=20, random_state=bad)

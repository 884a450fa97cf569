"""LinearGaussianSSM estimator: exact against statsmodels, EM recovers a known system."""
import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import torch

import tsgen
from tsgen import LinearGaussianSSM

PARAMS = dict(
    transition_matrices=[[0.8, 0.1], [0.0, 0.6]],
    observation_matrices=[[1.0, 0.5]],
    transition_covariance=[[0.3, 0.05], [0.05, 0.2]],
    observation_covariance=[[0.4]],
    initial_state_mean=[0.5, -0.2],
    initial_state_covariance=[[1.0, 0.2], [0.2, 0.8]],
)


def statsmodels_model(y: np.ndarray, params: dict):
    """The same model in statsmodels' MLEModel with known initial state."""
    model = sm.tsa.statespace.MLEModel(y, k_states=2)
    model["design"] = np.asarray(params["observation_matrices"])
    model["obs_cov"] = np.asarray(params["observation_covariance"])
    model["transition"] = np.asarray(params["transition_matrices"])
    model["selection"] = np.eye(2)
    model["state_cov"] = np.asarray(params["transition_covariance"])
    model.initialize_known(np.asarray(params["initial_state_mean"]), np.asarray(params["initial_state_covariance"]))
    return model


def statsmodels_results(y: np.ndarray, params: dict):
    return statsmodels_model(y, params).smooth([])


@pytest.fixture(scope="module")
def series():
    index = pd.date_range("2020-01-01", periods=120, freq="D")
    draws = LinearGaussianSSM.from_params(**PARAMS, random_state=3)
    values = draws.sample(120, n_samples=1, y=pd.Series([0.0], index=index[:1]))[0, :, 0]
    y = pd.Series(values, index=index, name="y")
    y.iloc[[5, 17, 18, 60]] = np.nan
    return y


def test_log_likelihood_and_per_step_equal_statsmodels(series):
    model = LinearGaussianSSM.from_params(**PARAMS)
    results = statsmodels_results(series.to_numpy(), PARAMS)
    assert model.log_likelihood(series) == pytest.approx(results.llf, rel=1e-10)
    per_step = model.log_likelihood(series, per_step=True)
    observed = series.notna().to_numpy()
    np.testing.assert_allclose(per_step[observed], results.llf_obs[observed], rtol=1e-9)
    assert per_step.index.equals(series.index) and per_step.isna().sum() == 4
    assert model.score(series) == pytest.approx(results.llf / observed.sum(), rel=1e-10)


def test_filter_and_smooth_equal_statsmodels(series):
    model = LinearGaussianSSM.from_params(**PARAMS)
    results = statsmodels_results(series.to_numpy(), PARAMS)
    filtered, smoothed = model.filter(series), model.smooth(series)
    np.testing.assert_allclose(filtered.means.to_numpy(), results.filtered_state.T, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(smoothed.means.to_numpy(), results.smoothed_state.T, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(smoothed.covariances, results.smoothed_state_cov.transpose(2, 0, 1), rtol=1e-8, atol=1e-10)
    assert list(smoothed.means.columns) == ["state_0", "state_1"] and smoothed.means.index.equals(series.index)


def test_predict_equals_statsmodels_forecast_and_continues_the_index(series):
    model = LinearGaussianSSM.from_params(**PARAMS)
    forecast = model.predict(12, y=series, quantiles=(0.025, 0.975))
    expected = statsmodels_results(series.to_numpy(), PARAMS).get_forecast(12)
    np.testing.assert_allclose(forecast["mean"], expected.predicted_mean, rtol=1e-8)
    interval = expected.conf_int(alpha=0.05)
    np.testing.assert_allclose(forecast["q0.025"], interval[:, 0], rtol=1e-8)
    np.testing.assert_allclose(forecast["q0.975"], interval[:, 1], rtol=1e-8)
    assert forecast.index[0] == series.index[-1] + pd.Timedelta(days=1)


def test_sample_paths_match_the_predictive_moments(series):
    model = LinearGaussianSSM.from_params(**PARAMS, random_state=0)
    draws = model.sample(4, n_samples=20000, y=series)
    forecast = model.predict(4, y=series, quantiles=(0.5,))
    assert draws.shape == (20000, 4, 1)
    np.testing.assert_allclose(draws.mean(0)[:, 0], forecast["mean"], atol=0.04)
    # joint paths: consecutive steps are correlated through the state
    assert np.corrcoef(draws[:, 0, 0], draws[:, 1, 0])[0, 1] > 0.2


def test_em_recovers_a_known_system_within_one_percent():
    truth = LinearGaussianSSM.from_params(**PARAMS, random_state=1)
    start = pd.Series([0.0], index=pd.RangeIndex(1))
    train = [pd.Series(p[:, 0]) for p in truth.sample(200, n_samples=5, y=start)]
    test = [pd.Series(p[:, 0]) for p in LinearGaussianSSM.from_params(**PARAMS, random_state=2).sample(200, n_samples=4, y=start)]
    fitted = LinearGaussianSSM(n_dim_state=2, max_iter=120, tol=1e-8, random_state=0).fit(train)
    assert np.all(np.diff(fitted.log_likelihoods_) >= -1e-9 * np.abs(fitted.log_likelihoods_[1:]))
    true_ll, fitted_ll = truth.log_likelihood(test), fitted.log_likelihood(test)
    assert abs(fitted_ll - true_ll) <= 0.01 * abs(true_ll)


def test_em_vars_keeps_unlearned_parameters_fixed(series):
    model = LinearGaussianSSM(**PARAMS, em_vars=["observation_covariance", "transition_covariance"], max_iter=10)
    model.fit(series)
    np.testing.assert_array_equal(model.transition_matrices_, np.asarray(PARAMS["transition_matrices"]))
    assert not np.allclose(model.observation_covariance_, PARAMS["observation_covariance"])


def test_mle_reaches_at_least_the_em_likelihood(series):
    em = LinearGaussianSSM(n_dim_state=1, max_iter=200, tol=1e-10, random_state=0).fit(series)
    mle = LinearGaussianSSM(n_dim_state=1, method="mle", max_iter=200, random_state=0).fit(series)
    assert mle.log_likelihood(series) >= em.log_likelihood(series) - 1e-3 * abs(em.log_likelihood(series))


def test_multivariate_partially_missing_and_many_series():
    rng = np.random.default_rng(0)
    frames = [pd.DataFrame(rng.normal(size=(n, 2)).cumsum(0), columns=["a", "b"]) for n in (40, 55)]
    frames[0].iloc[3, 1] = np.nan
    model = LinearGaussianSSM(n_dim_state=2, max_iter=20, random_state=0).fit(frames)
    forecasts = model.predict(5)
    assert len(forecasts) == 2 and forecasts[1].index[0] == 55
    assert forecasts[0].columns.nlevels == 2 and ("b", "q0.95") in forecasts[0].columns
    assert np.isfinite(model.log_likelihood(frames))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="transition_matrices"):
        LinearGaussianSSM(transition_matrices=np.eye(3), n_dim_state=2).fit(pd.Series(np.arange(10.0)))
    with pytest.raises(ValueError, match="em_vars"):
        LinearGaussianSSM(em_vars=["nonsense"]).fit(pd.Series(np.arange(10.0)))
    with pytest.raises(ValueError, match="method"):
        LinearGaussianSSM(method="sgd").fit(pd.Series(np.arange(10.0)))
    with pytest.raises(ValueError, match="`y` is required"):
        LinearGaussianSSM.from_params(**PARAMS).predict(3)
    with pytest.raises(ValueError, match="from_params"):
        LinearGaussianSSM.from_params(transition_matrices=[[1.0]])


def test_save_load_round_trip(tmp_path, series):
    model = LinearGaussianSSM(n_dim_state=2, max_iter=5, random_state=0).fit(series)
    model.save(tmp_path / "lds.tsgen")
    again = tsgen.load(tmp_path / "lds.tsgen")
    np.testing.assert_array_equal(again.sample(3), model.sample(3))
    np.testing.assert_array_equal(again.transition_matrices_, model.transition_matrices_)
    assert torch.equal(again.history_.values.nan_to_num(), model.history_.values.nan_to_num())


def test_stopping_before_tolerance_warns_and_is_recorded(series, tmp_path):
    from tsgen.exceptions import ConvergenceWarning

    with pytest.warns(ConvergenceWarning, match="max_iter"):
        model = LinearGaussianSSM(n_dim_state=2, max_iter=2, tol=1e-12, random_state=0).fit(series)
    assert model.converged_ is False
    model.save(tmp_path / "lds.tsgen")
    assert tsgen.load(tmp_path / "lds.tsgen").converged_ is False


# ---------------------------------------------------------------- the public path is the fast path


def _statsmodels_llf_obs(y: np.ndarray, params: dict) -> np.ndarray:
    return statsmodels_model(y, params).loglikeobs([])


def test_ragged_list_uses_the_likelihood_only_route_and_equals_statsmodels(monkeypatch):
    """Series of different lengths, fully observed: each per-step value (and the
    total) equals statsmodels' on that series alone, and the full filter with
    per-step covariances is never run."""
    rng = np.random.default_rng(5)
    ys = [pd.Series(rng.normal(size=n).cumsum() * 0.3) for n in (300, 41, 170)]
    model = LinearGaussianSSM.from_params(**PARAMS)
    import tsgen.models.lds as lds

    monkeypatch.setattr(lds, "kalman_filter", lambda *a, **k: pytest.fail("full filter used"))
    per_step = model.log_likelihood(ys, per_step=True)
    expected = [_statsmodels_llf_obs(y.to_numpy(), PARAMS) for y in ys]
    for got, want, y in zip(per_step, expected, ys):
        assert got.index.equals(y.index)
        np.testing.assert_allclose(got.to_numpy(), want, rtol=1e-9)
    assert model.log_likelihood(ys) == pytest.approx(sum(w.sum() for w in expected), rel=1e-10)


def test_per_series_parameters_from_params_equal_separate_models():
    rng = np.random.default_rng(6)
    sets = []
    for k in range(3):
        p = {n: np.asarray(v, dtype=float) for n, v in PARAMS.items()}
        p["transition_matrices"] = p["transition_matrices"] * (0.5 + 0.2 * k)
        p["observation_covariance"] = p["observation_covariance"] * (1 + k)
        sets.append(p)
    ys = [pd.Series(rng.normal(size=n)) for n in (80, 80, 60)]
    stacked = LinearGaussianSSM.from_params(**{n: np.stack([p[n] for p in sets]) for n in PARAMS})
    separate = [LinearGaussianSSM.from_params(**p) for p in sets]
    for got, model, y in zip(stacked.log_likelihood(ys, per_step=True), separate, ys):
        np.testing.assert_allclose(got.to_numpy(), model.log_likelihood(y, per_step=True).to_numpy(), rtol=1e-9)
    for got, model, y in zip(stacked.predict(5, y=ys), separate, ys):
        np.testing.assert_allclose(got.to_numpy(), model.predict(5, y=y).to_numpy(), rtol=1e-9)
    with pytest.raises(ValueError, match="3 per-series parameter sets"):
        stacked.log_likelihood(ys[:2])
    with pytest.raises(ValueError, match="leading size"):
        LinearGaussianSSM.from_params(**{**PARAMS, "transition_matrices": np.stack([np.eye(2)] * 2),
                                         "observation_covariance": np.ones((3, 1, 1))})


def test_end_of_history_state_is_filtered_once(monkeypatch, series):
    import tsgen.models.lds as lds

    expected = LinearGaussianSSM.from_params(**PARAMS).predict(6, y=series)
    calls = []
    original = lds.kalman_filter_last
    monkeypatch.setattr(lds, "kalman_filter_last", lambda *a, **k: calls.append(1) or original(*a, **k))
    model = LinearGaussianSSM(**PARAMS, em_vars=[]).fit(series)
    first = model.predict(6)
    model.predict(3)
    model.sample(2, n_samples=3)
    assert len(calls) == 1
    pd.testing.assert_frame_equal(first, expected)
    model.fit(series.iloc[:50])  # a new history is filtered again
    model.predict(2)
    assert len(calls) == 2


def test_long_horizon_forecast_keeps_no_per_step_covariances(series):
    """A forecast's memory is its output: 10^6 steps once took ~4.5 GB of
    per-step state and observation covariances."""
    import tracemalloc

    model = LinearGaussianSSM.from_params(**PARAMS)
    series = series.reset_index(drop=True)  # 10^6 days would overflow datetime64
    tracemalloc.start()
    forecast = model.predict(10**6, y=series, quantiles=(0.5,))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(forecast) == 10**6 and np.isfinite(forecast.to_numpy()).all()
    assert peak < 200 * 2**20
    short = model.predict(30, y=series, quantiles=(0.5,))
    np.testing.assert_allclose(forecast.iloc[:30].to_numpy(), short.to_numpy(), rtol=1e-10)


# ---------------------------------------------------------------- EM robustness and units


def test_em_on_a_constant_column_keeps_the_best_iterate_and_names_the_cause():
    """A constant variable makes the likelihood unbounded; EM used to run on
    into ill-conditioning and return the last iterate (log-likelihood -7e10)."""
    from tsgen.exceptions import ConvergenceWarning

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=200).cumsum(), "b": np.ones(200)})
    with pytest.warns(ConvergenceWarning) as record:
        model = LinearGaussianSSM(n_dim_state=2, max_iter=50, random_state=0).fit(frame)
    messages = " ".join(str(w.message) for w in record)
    assert "'b'" in messages and "constant" in messages
    assert "max_iter" not in messages  # the stop is explained, not blamed on max_iter
    best = max(model.log_likelihoods_)
    # the best iterate is near-singular (variance of 'b' ~ 1e-12), so filter routes agree to ~1e-3 only
    assert model.log_likelihood(frame) == pytest.approx(best, rel=1e-2)
    forecast = model.predict(3)
    np.testing.assert_allclose(forecast[("b", "mean")], 1.0, atol=1e-3)

    # EM stopped at the first decrease instead of running on to -7e10
    assert model.n_iter_ < 50 and model.log_likelihoods_[-1] < best


@pytest.mark.parametrize("method", ["em", "mle"])
def test_results_do_not_depend_on_the_data_units(method):
    """Data of magnitude 1e-8 used to be forecast at the wrong level (absolute floors of 1e-8)."""
    rng = np.random.default_rng(0)
    y = pd.Series(rng.normal(size=150).cumsum() + 5, index=pd.date_range("2020", periods=150, freq="D"))
    fits = [
        LinearGaussianSSM(n_dim_state=2, max_iter=30, random_state=0, method=method).fit(y * unit)
        for unit in (1.0, 1e-8)
    ]
    forecasts = [fit.predict(5) for fit in fits]
    np.testing.assert_allclose(forecasts[1].to_numpy() * 1e8, forecasts[0].to_numpy(), rtol=1e-6)
    # the recorded log-likelihoods are those of the data in its own units
    shift = y.size * np.log(1e-8)
    np.testing.assert_allclose(np.array(fits[1].log_likelihoods_) + shift, fits[0].log_likelihoods_, rtol=1e-6)
    assert fits[1].log_likelihood(y * 1e-8) == pytest.approx(fits[1].log_likelihoods_[-1], rel=1e-6)

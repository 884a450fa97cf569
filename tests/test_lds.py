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


def statsmodels_results(y: np.ndarray, params: dict):
    """The same model in statsmodels' MLEModel with known initial state."""
    model = sm.tsa.statespace.MLEModel(y, k_states=2)
    model["design"] = np.asarray(params["observation_matrices"])
    model["obs_cov"] = np.asarray(params["observation_covariance"])
    model["transition"] = np.asarray(params["transition_matrices"])
    model["selection"] = np.eye(2)
    model["state_cov"] = np.asarray(params["transition_covariance"])
    model.initialize_known(np.asarray(params["initial_state_mean"]), np.asarray(params["initial_state_covariance"]))
    return model.smooth([])


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

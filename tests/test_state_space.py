"""User-written state-space models (tsgen.StateSpaceModel) through tsgen.StateSpaceForecaster.

Oracles: on linear-Gaussian models written by the user (and on
LinearGaussianSSM's own SMC route) the particle filter's log-evidence and
one-step densities agree with the Kalman filter within Monte Carlo error
(standard errors from independent seeds); filtering and smoothing frames
agree with the Kalman filter and RTS smoother within the particles' Monte
Carlo error.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from torch.distributions import Independent, MultivariateNormal, Normal, Uniform, constraints

import tsgen
from tsgen.models import state_space


class AR1Noise(tsgen.StateSpaceModel):
    """z_1 ~ N(0, q / (1 - phi^2)), z_t = phi z_{t-1} + N(0, q), y_t = z_t + N(0, r)."""

    def __init__(self, phi=0.8, q=0.5, r=1.0):
        super().__init__()
        self.register_constrained("phi", phi, constraints.interval(-1.0, 1.0), prior=Uniform(-1.0, 1.0))
        self.register_constrained("q", q, constraints.positive)
        self.register_constrained("r", r, constraints.positive)

    def _prior(self, z_prev):
        if z_prev is None:
            return torch.zeros(()), self.q / (1 - self.phi**2)
        return self.phi * z_prev, self.q

    def initial(self, context):
        mean, var = self._prior(None)
        return Normal(mean, var.sqrt())

    def transition(self, z_prev, context):
        return Normal(self.phi * z_prev, self.q.sqrt())

    def emission(self, z, context):
        return Normal(z, self.r.sqrt())

    def proposal(self, z_prev, y, context):
        # the locally optimal proposal p(z_t | z_{t-1}, y_t), Gaussian in closed form
        mean, var = self._prior(z_prev)
        post_var = 1 / (1 / var + 1 / self.r)
        return Normal(post_var * (mean / var + y / self.r), post_var.sqrt())


class LocalLinearTrend(tsgen.StateSpaceModel):
    """A vector latent (level, slope): level_t = level + slope + N(0, q), slope_t = slope + N(0, q / 10)."""

    latent_names = ("level", "slope")

    def __init__(self, q=0.3, r=1.0):
        super().__init__()
        self.register_constrained("q", q, constraints.positive)
        self.register_constrained("r", r, constraints.positive)

    def initial(self, context):
        return Independent(Normal(torch.zeros(2), torch.tensor([2.0, 0.5])), 1)

    def transition(self, z_prev, context):
        level, slope = z_prev[..., 0], z_prev[..., 1]
        scale = torch.stack([self.q.sqrt(), (self.q / 10).sqrt()])
        return Independent(Normal(torch.stack([level + slope, slope], -1), scale), 1)

    def emission(self, z, context):
        return MultivariateNormal(z[..., :1], self.r.reshape(1, 1))


class TimeTrend(tsgen.StateSpaceModel):
    """z_t ~ N(t, 0.01), y_t ~ N(z_t, 0.01): the forecast mean is the time step itself."""

    def initial(self, context):
        return Normal(context["t"], 0.1)

    def transition(self, z_prev, context):
        return Normal(context["t"] + 0 * z_prev, 0.1)

    def emission(self, z, context):
        return Normal(z, 0.1)


class Regression(tsgen.StateSpaceModel):
    """y_t = z_t + beta x_t + noise: reads the covariates."""

    def __init__(self):
        super().__init__()
        self.beta = torch.nn.Parameter(torch.tensor(0.0))

    def initial(self, context):
        return Normal(torch.zeros(()), torch.ones(()))

    def transition(self, z_prev, context):
        return Normal(0.7 * z_prev, 0.5)

    def emission(self, z, context):
        return Normal(z + self.beta * context["covariates"][..., 0], 0.5)


TRUTH = {"phi": 0.8, "q": 0.5, "r": 1.0}


def simulate_ar1(rng, n_series, length, phi=0.8, q=0.5, r=1.0):
    z = np.empty((n_series, length))
    z[:, 0] = rng.normal(scale=math.sqrt(q / (1 - phi**2)), size=n_series)
    for t in range(1, length):
        z[:, t] = phi * z[:, t - 1] + math.sqrt(q) * rng.normal(size=n_series)
    return z + math.sqrt(r) * rng.normal(size=(n_series, length))


def kalman_ar1(phi=0.8, q=0.5, r=1.0, **extra):
    return tsgen.LinearGaussianSSM.from_params(
        transition_matrices=[[phi]], observation_matrices=[[1.0]], transition_covariance=[[q]],
        observation_covariance=[[r]], initial_state_mean=[0.0], initial_state_covariance=[[q / (1 - phi**2)]], **extra,
    )


@pytest.fixture(scope="module")
def series():
    rng = np.random.default_rng(0)
    values = simulate_ar1(rng, 1, 60)[0]
    values[[10, 11, 40]] = np.nan  # missing steps are pure propagation
    return pd.Series(values, index=pd.date_range("2021-01-01", periods=60, freq="D"), name="y")


def _fixed(model, **options):
    return tsgen.StateSpaceForecaster(model, max_iter=0, **options)


def _log_mean_exp(values: np.ndarray) -> float:
    top = values.max()
    return float(top + np.log(np.mean(np.exp(values - top))))


# ---------------------------------------------------------------- likelihood
def test_smc_log_likelihood_and_one_step_densities_match_kalman(series):
    exact = kalman_ar1().log_likelihood(series, per_step=True)
    runs = np.array([
        _fixed(AR1Noise(), n_particles=300, random_state=seed).fit(series).log_likelihood(series, per_step=True)
        .to_numpy() for seed in range(8)
    ])  # (seeds, T), NaN where not observed
    totals = np.nansum(runs, 1)
    # the log-mean-exp of independent unbiased estimates of p(y) has bias O(1/K) against the 4 s.e. allowed
    assert abs(_log_mean_exp(totals) - exact.sum()) < 4 * totals.std(ddof=1) / math.sqrt(len(totals)) + 1e-3
    observed = ~np.isnan(exact.to_numpy())
    assert np.array_equal(~np.isnan(runs[0]), observed)
    # one-step densities: prefix sums are unbiased estimates of log p(y_1:t) up to the same Jensen bias
    prefix = np.cumsum(np.nan_to_num(runs), 1)
    exact_prefix = np.cumsum(np.nan_to_num(exact.to_numpy()))
    se = prefix.std(0, ddof=1) / math.sqrt(len(runs)) + 1e-3
    lme = np.array([_log_mean_exp(prefix[:, t]) for t in range(prefix.shape[1])])
    assert np.all(np.abs(lme - exact_prefix) < 5 * se)


def test_linear_gaussian_ssm_smc_route_matches_kalman(series):
    exact = kalman_ar1().log_likelihood(series)
    totals = np.array([kalman_ar1(random_state=seed).log_likelihood(series, method="smc", n_particles=300)
                       for seed in range(8)])
    assert abs(_log_mean_exp(totals) - exact) < 4 * totals.std(ddof=1) / math.sqrt(len(totals)) + 1e-3
    with pytest.raises(ValueError, match="method"):
        kalman_ar1().log_likelihood(series, method="iwae")
    with pytest.raises(ValueError, match="n_particles"):
        kalman_ar1().log_likelihood(series, n_particles=100)


def test_guided_proposal_has_lower_variance_than_bootstrap(series):
    spread = {}
    for proposal in ("bootstrap", "guided"):
        totals = [_fixed(AR1Noise(), n_particles=50, proposal=proposal, random_state=seed).fit(series)
                  .log_likelihood(series) for seed in range(8)]
        spread[proposal] = np.std(totals, ddof=1)
    assert spread["guided"] < spread["bootstrap"]


# ------------------------------------------------------------ filter / smooth
@pytest.fixture(scope="module")
def trend_data():
    rng = np.random.default_rng(1)
    level, slope, values = 0.0, 0.2, []
    for _ in range(40):
        level, slope = level + slope + rng.normal(scale=math.sqrt(0.3)), slope + rng.normal(scale=math.sqrt(0.03))
        values.append(level + rng.normal())
    return pd.Series(values, index=pd.period_range("2020-01", periods=40, freq="M"))


def _trend_kalman():
    return tsgen.LinearGaussianSSM.from_params(
        transition_matrices=[[1.0, 1.0], [0.0, 1.0]], observation_matrices=[[1.0, 0.0]],
        transition_covariance=np.diag([0.3, 0.03]), observation_covariance=[[1.0]],
        initial_state_mean=[0.0, 0.0], initial_state_covariance=np.diag([4.0, 0.25]), random_state=0,
    )


def test_filter_and_smooth_frames_match_kalman(trend_data):
    n_particles, n_trajectories = 2000, 300
    model = _fixed(LocalLinearTrend(), n_particles=n_particles, n_trajectories=n_trajectories, random_state=0)
    model.fit(trend_data)
    kalman = _trend_kalman()
    for name, frame, exact in (
        ("filter", model.filter(trend_data), kalman.filter(trend_data)),
        ("smooth", model.smooth(trend_data), kalman.smooth(trend_data)),
    ):
        assert frame.index.equals(trend_data.index)
        assert list(frame.columns) == [(latent, stat) for latent in ("level", "slope")
                                       for stat in ("mean", "q0.05", "q0.5", "q0.95")]
        sd = np.sqrt(np.diagonal(exact.covariances, axis1=1, axis2=2))  # (T, 2)
        # Monte Carlo s.e. of a particle mean: sd / sqrt(N / 4) for the filter (importance sampling with
        # ESS >= N / 2, doubled in variance for the resampling noise that SMC's asymptotic variance adds;
        # the largest error over 15 seeds of the LinearGaussianSSM route was 3.7 of these s.e.);
        # M backward draws plus the filter's error for the smoother
        draws = n_particles / 4 if name == "filter" else n_trajectories
        se = sd / math.sqrt(draws) + (0 if name == "filter" else sd / math.sqrt(n_particles / 4))
        for k, latent in enumerate(("level", "slope")):
            mean = frame[(latent, "mean")].to_numpy()
            assert np.all(np.abs(mean - exact.means.iloc[:, k].to_numpy()) < 5 * se[:, k]), (name, latent)
            # the 5% quantile of a Gaussian; its s.e. is sqrt(q (1 - q)) / density = 2.11 sd / sqrt(draws)
            q05 = exact.means.iloc[:, k].to_numpy() + stats.norm.ppf(0.05) * sd[:, k]
            assert np.all(np.abs(frame[(latent, "q0.05")].to_numpy() - q05) < 5 * 2.11 * se[:, k]), (name, latent)


def test_linear_gaussian_ssm_filter_and_smooth_by_smc(trend_data):
    kalman = _trend_kalman()
    exact, approx = kalman.filter(trend_data), kalman.filter(trend_data, method="smc", n_particles=2000)
    sd = np.sqrt(np.diagonal(exact.covariances, axis1=1, axis2=2))
    assert np.all(np.abs(approx.means.to_numpy() - exact.means.to_numpy()) < 5 * sd / math.sqrt(2000 / 4))
    smooth = kalman.smooth(trend_data, method="smc", n_particles=1000, n_trajectories=200)
    exact = kalman.smooth(trend_data)
    sd = np.sqrt(np.diagonal(exact.covariances, axis1=1, axis2=2))
    assert np.all(np.abs(smooth.means.to_numpy() - exact.means.to_numpy()) < 5 * sd * (1 / math.sqrt(200) + 1 / math.sqrt(250)))
    assert smooth.covariances.shape == exact.covariances.shape


# ------------------------------------------------------------------ user fits
@pytest.fixture(scope="module")
def panel():
    rng = np.random.default_rng(2)
    return [pd.Series(row, index=pd.date_range("2022-01-03", periods=80, freq="B")) for row in simulate_ar1(rng, 4, 80)]


def test_user_model_gets_fit_predict_sample_and_is_not_modified(panel):
    user = AR1Noise(phi=0.3, q=1.0, r=0.3)
    before = {k: v.clone() for k, v in user.state_dict().items()}
    model = tsgen.StateSpaceForecaster(user, max_iter=5, n_particles=200, n_trajectories=30, random_state=0)
    assert model.fit(panel) is model
    assert all(torch.equal(v, user.state_dict()[k]) for k, v in before.items())  # the user's object is untouched
    fitted = model.module_.constrained_parameters()
    # EM climbs the likelihood; along the way q first grows to make up for the small phi
    for name, start in (("phi", 0.3), ("r", 0.3)):
        assert abs(float(fitted[name]) - TRUTH[name]) < abs(start - TRUTH[name]), name
    start_ll = _fixed(AR1Noise(phi=0.3, q=1.0, r=0.3), random_state=0).fit(panel).log_likelihood(panel)
    assert model.log_likelihood(panel) > start_ll
    forecasts = model.predict(5, quantiles=(0.1, 0.9))
    assert len(forecasts) == 4 and list(forecasts[0].columns) == ["mean", "q0.1", "q0.9"]
    assert forecasts[0].index[0] == panel[0].index[-1] + panel[0].index.freq
    draws = model.sample(5, n_samples=7)
    assert len(draws) == 4 and draws[0].shape == (7, 5, 1)
    np.testing.assert_array_equal(draws[1], model.sample(5, n_samples=7)[1])
    assert len(model.log_evidences_) == model.n_iter_ == 5


def test_time_step_continues_into_the_horizon_of_each_series():
    ragged = [pd.Series(np.arange(1.0, 31.0)), pd.Series(np.arange(1.0, 21.0))]
    model = _fixed(TimeTrend(), n_particles=100, random_state=0).fit(ragged)
    forecasts = model.predict(3)
    np.testing.assert_allclose(forecasts[0]["mean"], [31, 32, 33], atol=0.1)
    np.testing.assert_allclose(forecasts[1]["mean"], [21, 22, 23], atol=0.1)


def test_covariates_reach_the_model():
    rng = np.random.default_rng(3)
    x = pd.DataFrame({"x": rng.normal(size=70)}, index=pd.date_range("2023-01-01", periods=70, freq="D"))
    y = pd.Series(2.0 * x["x"].to_numpy() + rng.normal(scale=0.8, size=70), index=x.index)
    model = tsgen.StateSpaceForecaster(Regression(), max_iter=3, n_particles=100, n_trajectories=20, random_state=0)
    model.fit(y.iloc[:60], X=x.iloc[:60])
    assert abs(float(model.module_.beta.detach()) - 2.0) < 0.5
    forecast = model.predict(10, X=x.iloc[60:])
    np.testing.assert_allclose(forecast["mean"], float(model.module_.beta.detach()) * x["x"].iloc[60:], atol=0.5)
    with pytest.raises(ValueError, match="`X` is required"):
        model.predict(10)


def test_pmmh_and_fivo_fit_a_user_model(series):
    pmmh = tsgen.StateSpaceForecaster(AR1Noise(phi=0.5), method="pmmh", max_iter=40, n_particles=50, random_state=0)
    pmmh.fit(series)
    assert set(pmmh.posterior_samples_) == {"phi"}  # the only parameter with a prior
    assert pmmh.posterior_samples_["phi"].shape == (32,) and 0 < pmmh.acceptance_rate_ <= 1
    assert float(pmmh.module_.phi.detach()) == pytest.approx(pmmh.posterior_samples_["phi"].mean())
    fivo = tsgen.StateSpaceForecaster(AR1Noise(phi=0.2, q=2.0, r=0.2), method="fivo", max_iter=30,
                                      learning_rate=0.05, n_particles=16, random_state=0).fit(series)
    start = _fixed(AR1Noise(phi=0.2, q=2.0, r=0.2), random_state=0).fit(series)
    assert fivo.log_likelihood(series) > start.log_likelihood(series)


def test_anomaly_detection_and_backtesting_work_unchanged(series):
    model = _fixed(AR1Noise(), n_particles=100, random_state=0)
    spiked = series.copy()
    spiked.iloc[50] += 12.0
    detector = tsgen.AnomalyDetector(model, method="quantile", n_particles=100).fit(series.iloc[:45])
    scores = detector.score(spiked)
    assert scores.index.equals(spiked.index) and scores.idxmax() == spiked.index[50]
    result = tsgen.backtest(model, series.fillna(0.0), horizon=3, start=50, step=4, n_samples=20)
    assert len(result.forecasts) > 0


# ------------------------------------------------------------------ save/load
@pytest.mark.parametrize("form", ["instance", "class"])
def test_save_load_round_trip(form, series, tmp_path):
    spec = {"model": AR1Noise()} if form == "instance" else {"model": AR1Noise, "model_params": {"phi": 0.5}}
    model = tsgen.StateSpaceForecaster(**spec, max_iter=2, n_particles=64, n_trajectories=10, random_state=1)
    model.fit(series)
    model.save(tmp_path / "m.tsgen")
    again = tsgen.load(tmp_path / "m.tsgen")
    assert type(again) is tsgen.StateSpaceForecaster
    assert isinstance(again.model, AR1Noise) if form == "instance" else again.model is AR1Noise
    pd.testing.assert_frame_equal(again.predict(4), model.predict(4))
    assert again.log_likelihood(series) == model.log_likelihood(series)
    assert again.log_evidences_ == model.log_evidences_


def test_load_refuses_a_model_class_not_defined_here(series, tmp_path, monkeypatch):
    _fixed(AR1Noise(), n_particles=16, random_state=0).fit(series).save(tmp_path / "m.tsgen")
    monkeypatch.delitem(state_space._MODEL_CLASSES, state_space._class_key(AR1Noise))
    with pytest.raises(ValueError, match="not defined in this process"):
        tsgen.load(tmp_path / "m.tsgen")


# ------------------------------------------------------------------ bad input
class WrongEmission(AR1Noise):
    def emission(self, z, context):
        return Independent(Normal(torch.stack([z, z], -1), 1.0), 1)  # two variables for univariate data


def test_bad_input_names_the_argument(series):
    with pytest.raises(TypeError, match="`model`"):
        tsgen.StateSpaceForecaster(object()).fit(series)
    with pytest.raises(ValueError, match="`model_params`"):
        tsgen.StateSpaceForecaster(AR1Noise(), model_params={"phi": 0.1}).fit(series)
    for argument, value in (("method", "mcmc"), ("n_particles", 1), ("n_trajectories", 0), ("proposal", "optimal"),
                            ("resampling", "nearest"), ("max_iter", -1), ("learning_rate", 0.0), ("burn_in", 1.0)):
        with pytest.raises(ValueError, match=f"`{argument}`"):
            tsgen.StateSpaceForecaster(AR1Noise(), **{argument: value}).fit(series)
    fitted = _fixed(AR1Noise(), n_particles=32, random_state=0).fit(series)
    with pytest.raises(ValueError, match="`method`"):
        fitted.log_likelihood(series, method="iwae")
    with pytest.raises(ValueError, match="`n_particles`"):
        fitted.log_likelihood(series, n_particles=1)
    with pytest.raises(ValueError, match="`quantiles`"):
        fitted.filter(series, quantiles=(0.5, 2.0))
    with pytest.raises(ValueError, match="variables"):
        fitted.filter(pd.DataFrame({"a": np.ones(5), "b": np.ones(5)}))
    with pytest.raises(ValueError, match="event shape"):
        _fixed(WrongEmission(), n_particles=16).fit(series).log_likelihood(series)
    with pytest.raises(ValueError, match="pmmh"):
        tsgen.StateSpaceForecaster(LocalLinearTrend(), method="pmmh", max_iter=5).fit(series)
    with pytest.raises(ValueError, match="constraint"):
        AR1Noise(phi=1.5)

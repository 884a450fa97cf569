"""Likelihood-free fitting: MMD/energy distance oracles, gradient fits, the GAN, ABC-SMC against an exact posterior."""
import math

import numpy as np
import pytest
import torch
from torch.distributions import LogNormal, Normal, Uniform, constraints

from tsgen.components.implicit import ImplicitDistribution
from tsgen.inference.likelihood_free import (
    abc_smc, discriminative_score, energy_distance, fit_adversarial, fit_discrepancy, median_bandwidth, mmd,
    moment_distance, window_moments, with_autocovariances,
)
from tsgen.models.state_space import StateSpaceForecaster, StateSpaceModel
from tsgen.models.stochastic_volatility import StochasticVolatilityModel

D64 = torch.float64


# ------------------------------------------------------------------ discrepancies against direct sums
def _direct_mmd(x, y, bandwidths, unbiased):
    def k(a, b):
        return sum(math.exp(-float(((a - b) ** 2).sum()) / (2 * s * s)) for s in bandwidths)

    m, n = len(x), len(y)
    if unbiased:
        xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
        yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    else:
        xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m)) / m**2
        yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n)) / n**2
    return xx + yy - 2 * sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)


def _direct_energy(x, y, unbiased):
    def dist(a, b):
        return float(((a - b) ** 2).sum().sqrt())

    m, n = len(x), len(y)
    within = (lambda s, k: s / (k * (k - 1))) if unbiased else (lambda s, k: s / k**2)
    xx = within(sum(dist(x[i], x[j]) for i in range(m) for j in range(m)), m)
    yy = within(sum(dist(y[i], y[j]) for i in range(n) for j in range(n)), n)
    return 2 * sum(dist(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n) - xx - yy


@pytest.mark.parametrize("unbiased", [True, False])
def test_mmd_and_energy_match_direct_double_sums(unbiased):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, generator=g, dtype=D64)
    y = torch.randn(9, 4, generator=g, dtype=D64) * 1.5 + 0.3
    for bandwidths in ([0.7], [0.5, 1.0, 3.0]):
        assert float(mmd(x, y, bandwidths, unbiased)) == pytest.approx(_direct_mmd(x, y, bandwidths, unbiased), rel=1e-10)
    # the median heuristic: the median distance between distinct pooled rows, times the factors
    pooled = torch.cat([x, y])
    distances = [float((pooled[i] - pooled[j]).norm()) for i in range(15) for j in range(i + 1, 15)]
    assert float(median_bandwidth(x, y)) == pytest.approx(float(np.median(distances)), rel=1e-10)
    s = float(np.median(distances))
    expected = _direct_mmd(x, y, [s * f for f in (0.25, 0.5, 1.0, 2.0, 4.0)], unbiased)
    assert float(mmd(x, y, None, unbiased)) == pytest.approx(expected, rel=1e-10)
    assert float(energy_distance(x, y, unbiased)) == pytest.approx(_direct_energy(x, y, unbiased), rel=1e-10)
    # batched comparisons (ABC's particles) equal one at a time
    xs = torch.stack([x, x + 1])
    assert torch.allclose(energy_distance(xs, y, unbiased)[1], energy_distance(x + 1, y, unbiased))
    assert torch.allclose(mmd(xs, y, [0.7], unbiased)[1], mmd(x + 1, y, [0.7], unbiased))


def test_unbiased_statistics_average_to_the_population_values():
    # N(0, 1) against N(m, 1) in one dimension: closed forms of MMD^2 (Gaussian kernel, bandwidth s) and energy
    m, s, n, reps = 0.8, 1.0, 4, 4000
    g = torch.Generator().manual_seed(1)
    x = torch.randn(reps, n, 1, generator=g, dtype=D64)
    y = torch.randn(reps, n, 1, generator=g, dtype=D64) + m
    c = s / math.sqrt(s * s + 2)
    mmd_true = 2 * c * (1 - math.exp(-m * m / (2 * (s * s + 2))))
    sd = math.sqrt(2)
    cross = sd * math.sqrt(2 / math.pi) * math.exp(-m * m / 4) + m * (1 - 2 * 0.5 * math.erfc(m / sd / math.sqrt(2)))
    energy_true = 2 * cross - 2 * 2 / math.sqrt(math.pi)
    for statistic, truth in ((lambda u: mmd(x, y, [s], u), mmd_true), (lambda u: energy_distance(x, y, u), energy_true)):
        unbiased = statistic(True)
        se = float(unbiased.std()) / math.sqrt(reps)
        assert abs(float(unbiased.mean()) - truth) < 4 * se
        # the V-statistic is biased upwards by far more than its Monte Carlo error at n = 4
        assert float(statistic(False).mean()) - truth > 8 * se


def test_gradients_are_finite_with_repeated_rows():
    x = torch.tensor([[0.0, 1.0], [0.0, 1.0], [2.0, 0.0]], dtype=D64, requires_grad=True)
    y = torch.tensor([[0.0, 1.0], [1.0, 1.0]], dtype=D64)
    (energy_distance(x, y) + mmd(x, y)).backward()
    assert bool(torch.isfinite(x.grad).all())


def test_bad_input_is_named():
    x = torch.randn(5, 3)
    with pytest.raises(ValueError, match="`y`"):
        mmd(x, torch.randn(5, 2))
    with pytest.raises(ValueError, match="`x`"):
        energy_distance(torch.randn(1, 3), x)
    with pytest.raises(ValueError, match="`bandwidths`"):
        mmd(x, x, [-1.0])
    with pytest.raises(ValueError, match="`discrepancy`"):
        fit_discrepancy(lambda n: torch.randn(n, 4, 1), torch.randn(8, 4, 1), [torch.zeros(1, requires_grad=True)],
                        discrepancy="kl")
    with pytest.raises(ValueError, match="`parameters`"):
        fit_discrepancy(lambda n: torch.randn(n, 4, 1), torch.randn(8, 4, 1), [torch.zeros(1)])
    with pytest.raises(ValueError, match="`observed`"):
        fit_discrepancy(lambda n: torch.randn(n, 4, 1), torch.randn(8, 4), [torch.zeros(1, requires_grad=True)])


# ------------------------------------------------------------------ gradient and adversarial fits, function level
def _ar1_windows(a, s, n, length, generator=None):
    """Stationary Gaussian AR(1) windows (n, L, 1), differentiable in a and s."""
    eps = torch.randn(n, length, generator=generator, dtype=D64)
    y = [eps[:, 0] * s / torch.sqrt(1 - a * a)]
    for t in range(1, length):
        y.append(a * y[-1] + s * eps[:, t])
    return torch.stack(y, 1).unsqueeze(-1)


@pytest.mark.parametrize("discrepancy", ["mmd", "energy"])
def test_discrepancy_fit_recovers_an_ar1(discrepancy):
    torch.manual_seed(0)
    observed = _ar1_windows(torch.tensor(0.7, dtype=D64), torch.tensor(1.0, dtype=D64), 2000, 8)
    raw = torch.tensor([0.0, 0.5], dtype=D64, requires_grad=True)  # a = tanh(raw[0]), s = exp(raw[1])
    result = fit_discrepancy(lambda n: _ar1_windows(torch.tanh(raw[0]), raw[1].exp(), n, 8), observed, [raw],
                             discrepancy=discrepancy, n_iter=150, n_simulations=128, learning_rate=0.05)
    a, s = float(torch.tanh(raw[0].detach())), float(raw[1].detach().exp())
    # 2000 windows of 8 steps pin a and s to about +-0.02; the stochastic fit adds its own noise
    assert abs(a - 0.7) < 0.08 and abs(s - 1.0) < 0.1
    assert result.history[-1] < result.history[0]


def test_gan_improves_the_discriminative_score():
    torch.manual_seed(0)
    observed = _ar1_windows(torch.tensor(0.8, dtype=D64), torch.tensor(1.0, dtype=D64), 800, 6)
    raw = torch.tensor([-1.0, -1.0], dtype=D64, requires_grad=True)  # start at a = -0.76, s = 0.37: easy to tell
    result = fit_adversarial(lambda n: _ar1_windows(torch.tanh(raw[0]), raw[1].exp(), n, 6), observed, [raw],
                             n_iter=80, n_simulations=64, learning_rate=0.05, score_iter=100)
    # scores are |accuracy - 1/2| on 200 held-out windows per class: s.e. about 0.5 / sqrt(400) = 0.025
    assert result.score_before > 0.4
    assert result.score_after < result.score_before - 4 * 0.025
    assert len(result.generator_loss) == 80 and all(map(math.isfinite, result.discriminator_loss))


def test_discriminative_score_is_small_for_one_law():
    torch.manual_seed(1)
    a, s = torch.tensor(0.5, dtype=D64), torch.tensor(1.0, dtype=D64)
    windows = [_ar1_windows(a, s, 200, 10) for _ in range(4)]
    # |accuracy - 1/2| of a classifier that cannot do better than chance: about 0.5 / sqrt(400) = 0.025 s.e.
    assert discriminative_score(*windows, n_iter=100) < 4 * 0.025


# ------------------------------------------------------------------ ABC-SMC against the exact posterior
def test_abc_smc_matches_the_exact_ar1_posterior():
    torch.manual_seed(0)
    T = 100
    y = _ar1_windows(torch.tensor(0.6, dtype=D64), torch.tensor(1.0, dtype=D64), 1, T)[..., 0]  # (1, T)

    def simulate(theta):
        return _batch_ar1(theta, T)

    def stats(series):  # log mean square and lag-1 autocorrelation: sufficient up to the end terms
        return torch.stack([(series * series).mean(1).log(),
                            (series[:, 1:] * series[:, :-1]).sum(1) / (series * series).sum(1)], 1)

    observed = stats(y)
    priors = {"a": Uniform(torch.tensor(-1.0, dtype=D64), torch.tensor(1.0, dtype=D64)),
              "s": LogNormal(torch.tensor(0.0, dtype=D64), torch.tensor(1.0, dtype=D64))}
    result = abc_smc(simulate, lambda data: (stats(data) - observed).norm(dim=1), priors, n_particles=1000,
                     n_generations=15, n_moves=3)
    # the exact posterior on a grid (stationary Gaussian AR(1) likelihood)
    A = torch.linspace(-0.999, 0.999, 800, dtype=D64)
    S = torch.linspace(0.4, 2.5, 600, dtype=D64)
    a, s = torch.meshgrid(A, S, indexing="ij")
    series = y[0]
    q = (series * series).sum() - 2 * a * (series[1:] * series[:-1]).sum() + a * a * (series[1:-1] ** 2).sum()
    log_post = (-T * torch.log(s) + 0.5 * torch.log(1 - a * a) - q / (2 * s * s)
                + priors["s"].log_prob(s))
    w = torch.softmax(log_post.flatten(), 0).reshape(log_post.shape)
    mean = torch.stack([(w * a).sum(), (w * s).sum()])
    sd = torch.stack([(w * (a - mean[0]) ** 2).sum().sqrt(), (w * (s - mean[1]) ** 2).sum().sqrt()])
    # ABC at its final tolerance (about 0.04 here) on near-sufficient statistics: means within 0.4 posterior sd,
    # sds within -30%/+35% (the spread over six seeds was 0.3 sd and -21%/+19%, plus the tolerance's widening)
    assert torch.all((result.mean() - mean).abs() < 0.4 * sd), (result.mean(), mean, sd)
    ratio = result.std() / sd
    assert torch.all((ratio > 0.7) & (ratio < 1.35)), (result.std(), sd)
    assert result.tolerances[-1] < 0.1 and result.tolerances == sorted(result.tolerances, reverse=True)
    assert math.isclose(float(result.weights.sum()), 1.0) and result.resample().shape == (1000, 2)


def _batch_ar1(theta, T):
    a, s = theta[:, 0:1], theta[:, 1:2]
    eps = torch.randn(theta.shape[0], T, dtype=theta.dtype)
    y = [eps[:, :1] * s / torch.sqrt(1 - a * a)]
    for t in range(1, T):
        y.append(a * y[-1] + s * eps[:, t : t + 1])
    return torch.cat(y, 1)


def test_abc_bad_input():
    prior = {"a": Uniform(-1.0, 1.0)}
    with pytest.raises(TypeError, match="`priors`"):
        abc_smc(lambda t: t, lambda d: d[:, 0], [Uniform(-1.0, 1.0)])
    with pytest.raises(ValueError, match="`quantile`"):
        abc_smc(lambda t: t, lambda d: d[:, 0], prior, quantile=1.5)
    with pytest.raises(ValueError, match="`distance` must return"):
        abc_smc(lambda t: t, lambda d: d, prior, n_particles=10)


def test_window_moments_and_distance():
    rows = torch.randn(50, 3, 2, dtype=D64)
    mean, cov = window_moments(rows)
    flat = rows.flatten(1)
    assert torch.allclose(mean, flat.mean(0)) and torch.allclose(cov, torch.cov(flat.T))
    assert float(moment_distance(mean, cov, mean, cov, 1.0)) == 0.0


def test_with_autocovariances_matches_direct_sums():
    windows = torch.randn(4, 6, 2, dtype=D64)
    out = with_autocovariances(windows)
    assert out.shape == (4, 12, 2) and torch.equal(out[:, :6], windows)
    x = windows.numpy()
    for i in range(4):
        for d in range(2):
            c = x[i, :, d] - x[i, :, d].mean()
            direct = [sum(c[t] * c[t + k] for t in range(6 - k)) / (6 - k) for k in range(6)]
            assert np.allclose(out[i, 6:, d].numpy(), direct)
    assert with_autocovariances(windows, max_lag=2).shape == (4, 9, 2)
    with pytest.raises(ValueError, match="`max_lag` must be an integer in \\[0, 5\\]"):
        with_autocovariances(windows, max_lag=6)
    with pytest.raises(ValueError, match="`windows` must be a floating-point tensor"):
        with_autocovariances(windows[0])


# ------------------------------------------------------------------ the estimator entry point
def _sv(T, mu, phi, sigma, seed):
    rng = np.random.default_rng(seed)
    h = np.empty(T)
    h[0] = mu + sigma / math.sqrt(1 - phi**2) * rng.normal()
    for t in range(1, T):
        h[t] = mu + phi * (h[t - 1] - mu) + sigma * rng.normal()
    return np.exp(h / 2) * rng.normal(size=T)


class _LogSquareSV(StochasticVolatilityModel):
    """The SV model compared on log y_t^2 (its volatility) rather than the raw returns."""

    def window_features(self, windows):
        return torch.log(windows * windows + 1e-3)


MU, PHI, SIGMA = 0.0, 0.9, 0.4


@pytest.fixture(scope="module")
def sv_data():
    return _sv(1500, MU, PHI, SIGMA, seed=3)


def test_mmd_fit_recovers_stochastic_volatility(sv_data):
    est = StateSpaceForecaster(_LogSquareSV(mu=-1.0, phi=0.5, sigma=0.8), method="mmd", max_iter=300,
                               n_particles=128, learning_rate=0.08, window_length=10, random_state=0).fit(sv_data)
    fitted = {k: float(v) for k, v in est.module_.constrained_parameters().items()}
    # stated tolerances: the MLE's sd at T = 1500 is about 0.03 (phi) and 0.05 (sigma); the MMD estimator is less
    # efficient, its stochastic optimisation noisier, and log(y^2 + c) shifts mu: phi +-0.08, sigma +-0.15, mu +-0.4
    assert abs(fitted["phi"] - PHI) < 0.08 and abs(fitted["sigma"] - SIGMA) < 0.15 and abs(fitted["mu"] - MU) < 0.4, fitted
    # on the held-out last quarter, simulated windows are far closer to the data than at the start
    assert est.heldout_mmd_ < est.likelihood_free_["trace"][0] / 4 and len(est.likelihood_free_["trace"]) == 300
    assert est.predict(3).shape[0] == 3


class _AutocovarianceSV(_LogSquareSV):
    def window_features(self, windows):
        return with_autocovariances(super().window_features(windows))


def test_mmd_with_autocovariance_features_recovers_sv_sigma(sv_data):
    # Why the plain fit (10-step windows of log y^2) lands off the truth along the phi/sigma ridge: not a bug
    # but the estimator's spread. Over 7 data seeds (T = 1500, this setting) its RMSE was 0.160 (sigma) and
    # 0.062 (phi), with the errors of the two of opposite signs; at T = 20000 (benchmark data) phi 0.909, sigma 0.385.
    # 30-step windows with their autocovariances appended brought the RMSE to 0.109 and 0.042 over the same
    # seeds: stated tolerances of about one RMSE, sigma +-0.12 and phi +-0.05 (this seed: 0.489, 0.879).
    est = StateSpaceForecaster(_AutocovarianceSV(mu=-1.0, phi=0.5, sigma=0.8), method="mmd", max_iter=300,
                               n_particles=128, learning_rate=0.08, window_length=30, random_state=0).fit(sv_data)
    fitted = {k: float(v) for k, v in est.module_.constrained_parameters().items()}
    assert abs(fitted["sigma"] - SIGMA) < 0.12 and abs(fitted["phi"] - PHI) < 0.05, fitted


def test_abc_fit_of_stochastic_volatility(sv_data):
    est = StateSpaceForecaster(_LogSquareSV(), method="abc", max_iter=15, n_particles=500, window_length=10,
                               random_state=0).fit(sv_data)
    draws = est.posterior_samples_
    assert set(draws) == {"mu", "phi", "sigma"} and draws["phi"].shape == (500,)
    # an ABC posterior at its final tolerance is wider than the exact one: the truth inside its central 95%,
    # the means within 0.15 (phi) and 0.2 (sigma); the fitted model sits at the ABC posterior mean. (mu is
    # checked like the MMD fit's: this sample's own level, mean(log y^2) + 1.27, is 0.24, and both put mu there)
    assert abs(draws["mu"].mean() - MU) < 0.4
    for name, truth in (("phi", PHI), ("sigma", SIGMA)):
        low, high = np.quantile(draws[name], [0.025, 0.975])
        assert low < truth < high, (name, low, high)
    assert abs(draws["phi"].mean() - PHI) < 0.15 and abs(draws["sigma"].mean() - SIGMA) < 0.2
    assert float(est.module_.phi.detach()) == pytest.approx(draws["phi"].mean(), abs=0.02)
    assert est.likelihood_free_["trace"] == sorted(est.likelihood_free_["trace"], reverse=True)


def test_gan_and_energy_run_through_the_estimator(sv_data):
    for method in ("gan", "energy"):
        est = StateSpaceForecaster(_LogSquareSV(), method=method, max_iter=3, n_particles=16, window_length=10,
                                   random_state=0).fit(sv_data[:300])
        assert all(map(math.isfinite, est.likelihood_free_["trace"])) and math.isfinite(est.heldout_mmd_)
    assert 0 <= est.likelihood_free_.get("score_before", 0) <= 0.5


class _SkewNoise(StateSpaceModel):
    """A random walk seen through an implicit emission: y_t = z_t + scale (e - 0.3 |e|^1.5), no density."""

    def __init__(self, scale=2.0):
        super().__init__()
        self.register_constrained("scale", scale, constraints.positive)
        self.register_constrained("q", 0.5, constraints.positive)

    def initial(self, context):
        return Normal(torch.zeros(()), torch.ones(()))

    def transition(self, z_prev, context):
        return Normal(0.5 * z_prev, self.q)

    def emission(self, z, context):
        def draw(shape):
            e = torch.randn(shape, dtype=z.dtype)
            return z + self.scale * (e - 0.3 * e.abs() ** 1.5)

        return ImplicitDistribution(draw, z.shape)


def test_an_implicit_emission_is_fitted_by_mmd():
    torch.manual_seed(0)
    T = 3000
    z = torch.zeros(T, dtype=D64)
    for t in range(1, T):
        z[t] = 0.5 * z[t - 1] + 0.5 * float(torch.randn(()))
    e = torch.randn(T, dtype=D64)
    y = (z + 0.7 * (e - 0.3 * e.abs() ** 1.5)).numpy()
    est = StateSpaceForecaster(_SkewNoise(), method="mmd", max_iter=150, n_particles=128, learning_rate=0.05,
                               window_length=4, random_state=0).fit(y)
    assert abs(float(est.module_.scale.detach()) - 0.7) < 0.1
    # the particle filter cannot weigh by an implicit emission: it says so
    with pytest.raises(NotImplementedError, match="likelihood-free"):
        est.log_likelihood(y)


def test_estimator_bad_input(sv_data):
    with pytest.raises(ValueError, match="`window_length`"):
        StateSpaceForecaster(_LogSquareSV(), method="mmd", max_iter=2, window_length=1).fit(sv_data[:100])
    with pytest.raises(ValueError, match="complete windows"):
        StateSpaceForecaster(_LogSquareSV(), method="mmd", max_iter=2, window_length=98).fit(sv_data[:100])
    with pytest.raises(ValueError, match="last quarter"):
        StateSpaceForecaster(_LogSquareSV(), method="mmd", max_iter=2, window_length=30).fit(sv_data[:100])
    with pytest.raises(ValueError, match="prior"):
        StateSpaceForecaster(_SkewNoise(), method="abc", max_iter=2, window_length=5).fit(sv_data[:100])
    with pytest.raises(ValueError, match="`method`"):
        StateSpaceForecaster(_LogSquareSV(), method="wasserstein").fit(sv_data[:100])


# ------------------------------------------------------------------ save/load keeps the fit's summaries
@pytest.mark.parametrize("method", ["mmd", "energy", "gan", "abc"])
def test_likelihood_free_fits_round_trip_save_and_load(sv_data, tmp_path, method):
    import tsgen

    size = 64 if method == "abc" else 16
    est = StateSpaceForecaster(_LogSquareSV(), method=method, max_iter=2, n_particles=size, window_length=10,
                               random_state=0).fit(sv_data[:300])
    path = tmp_path / f"{method}.pt"
    est.save(path)
    loaded = tsgen.load(path)
    assert loaded.likelihood_free_ == est.likelihood_free_ and loaded.heldout_mmd_ == est.heldout_mmd_
    assert loaded.method == method and loaded.n_iter_ == est.n_iter_
    fitted = {k: v.detach() for k, v in est.module_.constrained_parameters().items()}
    for name, value in loaded.module_.constrained_parameters().items():
        assert torch.equal(value.detach(), fitted[name]), name
    if method == "abc":
        assert set(loaded.posterior_samples_) == set(est.posterior_samples_)
        for name, draws in est.posterior_samples_.items():
            assert np.array_equal(loaded.posterior_samples_[name], draws)
    # forecasts repeat exactly: same parameters, same filter, same seed
    pd = pytest.importorskip("pandas")
    pd.testing.assert_frame_equal(loaded.predict(3), est.predict(3))


def test_a_refit_by_another_method_drops_the_likelihood_free_summaries(sv_data, tmp_path):
    import tsgen

    est = StateSpaceForecaster(_LogSquareSV(), method="mmd", max_iter=2, n_particles=16, window_length=10,
                               random_state=0).fit(sv_data[:300])
    est.set_params(method="particle_em", n_particles=32, n_trajectories=8).fit(sv_data[:300])
    assert not hasattr(est, "likelihood_free_") and not hasattr(est, "heldout_mmd_")
    est.save(tmp_path / "em.pt")
    assert not hasattr(tsgen.load(tmp_path / "em.pt"), "likelihood_free_")


def test_a_malformed_stored_summary_is_refused(sv_data, tmp_path):
    import tsgen
    from tsgen.base import write_payload

    est = StateSpaceForecaster(_LogSquareSV(), method="mmd", max_iter=2, n_particles=16, window_length=10,
                               random_state=0).fit(sv_data[:300])
    meta, tensors = est._to_payload()
    meta["fitted"]["likelihood_free"]["info"]["trace"] = ["not a number"]
    write_payload(tmp_path / "bad.pt", meta, tensors)
    with pytest.raises(ValueError, match="not a tsgen model file.*likelihood-free fit summary is malformed"):
        tsgen.load(tmp_path / "bad.pt")

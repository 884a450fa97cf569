"""Particle filters (tsgen.inference.smc.filter) against the Kalman filter on linear-Gaussian models
(tsgen.models._lds_protocol), through the model protocol; bad input; weight collapse; models without a latent.

Independent runs are independent replicas of a series in one batch (the filter treats series
independently), so every Monte Carlo standard error below comes from ``K`` independent runs.
"""
import math

import pytest
import torch
from torch.distributions import Independent, Normal, Uniform

from tsgen.exceptions import NumericalError
from tsgen.inference.kalman import KalmanParams, kalman_filter, kalman_sample
from tsgen.inference.smc import RESAMPLERS, FilterOutput, particle_filter
from tsgen.models._lds_protocol import LinearGaussianModule
from tsgen.protocol import SequentialModel

D64 = torch.float64
K = 40  # independent runs per check


def _t(x):
    return torch.tensor(x, dtype=D64)


def _lds_1d(obs_var=1.0) -> KalmanParams:
    # observation noise above the transition noise: the auxiliary filter's look-ahead weights
    # g(y_t | mean of f_t) then have light tails (with R << Q they are unbiased but heavy-tailed)
    return KalmanParams(_t([[0.9]]), _t([[1.0]]), _t([[0.3]]), _t([[obs_var]]), _t([0.3]), _t([[2.0]]),
                        _t([0.1]), _t([-0.2]))


def _lds_2d() -> KalmanParams:
    # full (non-diagonal) Q, R and P1: multivariate normal transition and emission, exact MVN marginals
    return KalmanParams(
        _t([[0.8, 0.2], [-0.1, 0.7]]), _t([[1.0, 0.0], [0.5, 1.0]]), _t([[0.5, 0.1], [0.1, 0.3]]),
        _t([[0.3, 0.1], [0.1, 0.4]]), _t([0.0, 1.0]), _t([[1.0, 0.2], [0.2, 1.0]]), _t([0.1, 0.0]), None,
    )


def _data(params, T, seed, n_series=1):
    torch.manual_seed(seed)
    y = torch.cat([kalman_sample(params, T).observations.reshape(1, T, -1) for _ in range(n_series)])
    return y, torch.ones_like(y, dtype=torch.bool)


def _with_missing_2d():
    """Two series of a 2-D LDS: fully missing steps, one component observed, and a step observed in one
    series but not the other (the filter then mixes propagation and weighting in one step)."""
    y, mask = _data(_lds_2d(), 25, seed=3, n_series=2)
    mask[:, 4] = False
    mask[:, 9, 1] = False
    mask[0, 14, 0] = False
    mask[1, 12] = False
    mask[1, 20, 0] = False
    return y.masked_fill(~mask, math.nan), mask


def _replicate(y, mask, k=K):
    """``k`` copies of each series, copy-major: series ``b`` of replica ``r`` sits at ``r * B + b``."""
    return y.repeat(k, 1, 1), mask.repeat(k, 1, 1)


def _per_replica(x, n_series):
    return x.reshape(K, n_series, *x.shape[1:])


def _assert_within(estimates, exact, n_se=4.0, what="", log_scale=False):
    """``estimates`` ``(K, ...)`` from independent runs: their mean within ``n_se`` standard errors of ``exact``.

    ``log_scale``: the estimates are logs of unbiased (or consistent ratio) estimates, biased low by about
    half their variance (delta method); that second-order term is added back before comparing.
    """
    mean = estimates.mean(0)
    if log_scale:
        mean = mean + 0.5 * estimates.var(0)
    se = estimates.std(0) / math.sqrt(estimates.shape[0])
    gap = (mean - exact).abs()
    worst = (gap / se.clamp_min(1e-300)).max()
    assert bool((gap <= n_se * se + 1e-9).all()), f"{what}: |mean - exact| / se = {worst:.2f}"


CASES = {
    "1d": lambda: (_lds_1d(),) + _data(_lds_1d(), 30, seed=1, n_series=2),
    "2d-missing": lambda: (_lds_2d(),) + _with_missing_2d(),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("resampling", sorted(RESAMPLERS))
@pytest.mark.parametrize("proposal", ["bootstrap", "guided", "auxiliary"])
def test_log_evidence_and_one_step_densities_match_kalman(case, resampling, proposal):
    params, y, mask = CASES[case]()
    B = y.shape[0]
    exact = kalman_filter(y, mask, params).log_likelihoods  # (B, T)
    torch.manual_seed(10)
    out = particle_filter(LinearGaussianModule(params), *_replicate(y, mask), n_particles=500,
                          proposal=proposal, resampling=resampling)
    log_z = _per_replica(out.log_evidence, B)
    # the estimate of p(y) is unbiased: exp(log Z_hat - log Z) averages to 1
    _assert_within(torch.exp(log_z - exact.sum(-1)), torch.ones(B, dtype=D64), what="Z_hat / Z")
    _assert_within(log_z, exact.sum(-1), what="log Z_hat", log_scale=True)
    # one-step densities: each p_hat(y_t | y_<t) alone is a ratio estimate (biased at O(1/N)), but their
    # products up to every t are unbiased for p(y_{1:t}), which pins every one of them down
    steps = _per_replica(out.step_log_likelihood, B)
    prefix = torch.exp(steps.cumsum(-1) - exact.cumsum(-1))
    _assert_within(prefix, torch.ones_like(exact), what="prod_s<=t p_hat(y_s | y_<s) / p(y_1:t)")
    # nothing observed: exactly 0 (no Monte Carlo noise)
    nothing = ~mask.any(-1)
    assert (_per_replica(out.step_log_likelihood, B)[:, nothing] == 0).all()
    assert torch.isfinite(out.ess).all() and (out.ess <= 500 + 1e-6).all() and (out.ess >= 1 - 1e-6).all()


@pytest.mark.parametrize("proposal", ["bootstrap", "guided", "auxiliary"])
def test_filtered_means_match_kalman(proposal):
    params, y, mask = CASES["2d-missing"]()
    B = y.shape[0]
    exact = kalman_filter(y, mask, params).filtered_means  # (B, T, S)
    torch.manual_seed(11)
    out = particle_filter(LinearGaussianModule(params), *_replicate(y, mask), n_particles=300,
                          proposal=proposal, keep="particles")
    assert out.z.shape == (25, 300, K * B, 2) and out.ancestors.shape == (25, 300, K * B)
    assert out.log_weights_history.shape == (25, 300, K * B)
    means = (out.log_weights_history.exp().unsqueeze(-1) * out.z).sum(1)  # (T, K B, S)
    means = _per_replica(means.transpose(0, 1), B)  # (K, B, T, S)
    _assert_within(means, exact, what="filtered means")
    # the last step's weights and state are the history's last entries
    assert torch.equal(out.log_weights, out.log_weights_history[-1]) and torch.equal(out.state, out.z[-1])


def test_ancestors_are_compact_and_consistent():
    params, y, mask = CASES["1d"]()
    torch.manual_seed(12)
    out = particle_filter(LinearGaussianModule(params), y, mask, n_particles=50, keep="states")
    T = y.shape[1]
    assert out.ancestors.dtype == torch.int64
    assert torch.equal(out.ancestors[0], torch.arange(50).unsqueeze(1).expand(50, 2))
    # where no resampling happened, the ancestors are the identity
    identity = torch.arange(50).unsqueeze(1)
    for t in range(1, T):
        for b in range(2):
            if not out.resampled[b, t]:
                assert torch.equal(out.ancestors[t, :, b], identity[:, 0])
    assert out.resampled.any() and not out.resampled[:, 0].any()
    assert len(out.states) == T and torch.equal(out.states[-1], out.state)


def test_per_series_parameters():
    base = _lds_1d()
    params = base._replace(transition_matrices=_t([[[0.9]], [[-0.5]]]), observation_covariance=_t([[[0.5]], [[2.0]]]))
    _, y, mask = CASES["1d"]()
    exact = kalman_filter(y, mask, params).log_likelihoods.sum(-1)
    # per-series parameters (a leading series dimension), one set per replica of each series
    module = LinearGaussianModule(params._replace(transition_matrices=params.transition_matrices.repeat(K, 1, 1),
                                                  observation_covariance=params.observation_covariance.repeat(K, 1, 1)))
    torch.manual_seed(13)
    yy, mm = _replicate(y, mask)
    out = particle_filter(module, yy, mm, n_particles=300, context=module.prepare(yy, mm))
    _assert_within(torch.exp(_per_replica(out.log_evidence, 2) - exact), torch.ones(2, dtype=D64), what="Z_hat / Z")


def test_time_varying_parameters():
    T = 30
    F = torch.linspace(0.5, 0.95, T, dtype=D64).view(T, 1, 1)
    H = (1 + torch.sin(torch.arange(T, dtype=D64))).view(T, 1, 1)
    params = _lds_1d()._replace(transition_matrices=F, observation_matrices=H,
                                time_varying=frozenset({"transition_matrices", "observation_matrices"}))
    torch.manual_seed(14)
    y = kalman_sample(params, T).observations.reshape(1, T, 1)
    mask = torch.ones_like(y, dtype=torch.bool)
    exact = kalman_filter(y, mask, params).log_likelihoods
    out = particle_filter(LinearGaussianModule(params), *_replicate(y, mask), n_particles=300, proposal="guided")
    prefix = torch.exp(_per_replica(out.step_log_likelihood, 1).cumsum(-1) - exact.cumsum(-1))
    _assert_within(prefix, torch.ones_like(exact), what="time-varying one-step densities")
    with pytest.raises(ValueError, match="time-varying `params` cover 30 steps"):
        LinearGaussianModule(params).prepare(torch.zeros(1, 31, 1, dtype=D64), torch.ones(1, 31, 1, dtype=torch.bool))


def test_guided_filter_has_lower_variance_than_bootstrap():
    # informative observations (small R): the bootstrap filter's weights degenerate, the locally optimal
    # proposal's weights p(y_t | z_{t-1}) do not
    params = _lds_1d(obs_var=0.05)
    y, mask = _data(params, 40, seed=2)
    module = LinearGaussianModule(params)
    variance = {}
    for proposal in ("bootstrap", "guided"):
        torch.manual_seed(15)
        variance[proposal] = particle_filter(module, *_replicate(y, mask), n_particles=100,
                                             proposal=proposal).log_evidence.var()
    assert variance["guided"] < 0.5 * variance["bootstrap"], variance


@pytest.mark.parametrize("threshold", [0.0, 1.0])
def test_never_and_always_resampling(threshold):
    if threshold == 0.0:
        params, y, mask = CASES["1d"]()
        y, mask = y[:, :8], mask[:, :8]  # without resampling the weights degenerate (unbiased, heavy-tailed)
    else:
        params, y, mask = CASES["2d-missing"]()  # resampling before a step that observes nothing, then again
    exact = kalman_filter(y, mask, params).log_likelihoods.sum(-1)
    torch.manual_seed(16)
    out = particle_filter(LinearGaussianModule(params), *_replicate(y, mask), n_particles=300, ess_threshold=threshold)
    if threshold == 1.0:
        assert out.resampled[:, 1:].all()
    else:
        assert not out.resampled.any()
    _assert_within(torch.exp(_per_replica(out.log_evidence, 2) - exact), torch.ones(2, dtype=D64), what="Z_hat / Z")


def test_sync_free_path_as_on_accelerators(monkeypatch):
    # off the CPU the loop never reads the ESS back: it resamples every series and keeps the old particles
    # where the ESS was high; run that path here
    import tsgen.inference.smc.filter as filter_module

    monkeypatch.setattr(filter_module, "_HOST_SYNC_DEVICES", ())
    params, y, mask = CASES["2d-missing"]()
    exact = kalman_filter(y, mask, params).log_likelihoods.sum(-1)
    for proposal in ("bootstrap", "auxiliary"):
        torch.manual_seed(17)
        out = particle_filter(LinearGaussianModule(params), *_replicate(y, mask), n_particles=300, proposal=proposal,
                              keep="particles")
        assert 0 < out.resampled.float().mean() < 1
        kept = ~out.resampled[None].expand(300, -1, -1).permute(2, 0, 1)  # (T, N, K B)
        assert torch.equal(out.ancestors[kept], torch.arange(300).view(1, 300, 1).expand_as(out.ancestors)[kept])
        _assert_within(torch.exp(_per_replica(out.log_evidence, 2) - exact), torch.ones(2, dtype=D64), what=proposal)


# ------------------------------------------------------------------ models written against the protocol
class RandomWalk(SequentialModel):
    """z_1 ~ N(0, 1), z_t ~ N(z_{t-1}, s^2), x_t ~ N(z_t, 1); ``s`` a parameter; no proposal."""

    latent_dim = 1
    markov_latent = True

    def __init__(self):
        super().__init__()
        self.log_scale = torch.nn.Parameter(torch.zeros((), dtype=D64))

    def init_state(self, context, sample_shape=()):
        B = context.static["B"].shape[0]
        return torch.zeros(*sample_shape, B, 1, dtype=D64)

    def prepare(self, values, mask, covariates=None, horizon=0):
        context = super().prepare(values, mask, covariates, horizon)
        context.static["B"] = torch.zeros(values.shape[0])
        return context

    def transition(self, state, x_prev, context_t):
        scale = torch.ones_like(state) if x_prev is None else self.log_scale.exp().expand(state.shape)
        return state, Independent(Normal(state, scale), 1)

    def emission(self, state, context_t):
        return Independent(Normal(state, torch.ones_like(state)), 1)


class BoxEmission(RandomWalk):
    """Emission uniform on [z - 1/2, z + 1/2]: an observation far away has density 0 under every particle."""

    def emission(self, state, context_t):
        return Independent(Uniform(state - 0.5, state + 0.5, validate_args=False), 1)


class NoProposalAtRuntime(RandomWalk):
    def proposal(self, state, x, mask, context_t):
        return None


class AutoRegression(SequentialModel):
    """No latent: x_t ~ N(0.5 x_{t-1}, 1), x_1 ~ N(0, 1); the state is x_{t-1}."""

    latent_dim = 0

    def init_state(self, context, sample_shape=()):
        return None

    def transition(self, state, x_prev, context_t):
        return (torch.zeros(1, dtype=D64) if x_prev is None else x_prev), None

    def emission(self, state, context_t):
        return Independent(Normal(0.5 * state, torch.ones_like(state)), 1)


def _walk_data(T=20, B=3):
    torch.manual_seed(20)
    y = torch.randn(B, T, 1, dtype=D64).cumsum(1)
    return y, torch.ones_like(y, dtype=torch.bool)


def test_model_without_latent_gives_the_exact_likelihood():
    y, mask = _walk_data()
    previous = torch.cat([torch.zeros(3, 1, 1, dtype=D64), y[:, :-1]], 1)
    exact = Normal(0.5 * previous, 1.0).log_prob(y)[..., 0]
    out = particle_filter(AutoRegression(), y, mask, n_particles=7, keep="particles")
    torch.testing.assert_close(out.step_log_likelihood, exact, rtol=0, atol=1e-12)
    torch.testing.assert_close(out.log_evidence, exact.sum(-1), rtol=0, atol=1e-11)
    assert out.z is None and out.log_weights.shape == (7, 3) and (out.ess == 7).all()
    assert torch.allclose(out.log_weights, torch.full((7, 3), -math.log(7), dtype=D64))


def test_user_model_bootstrap_and_fivo_gradients():
    y, mask = _walk_data()
    model = RandomWalk()
    torch.manual_seed(21)
    out = particle_filter(model, y, mask, n_particles=64)
    assert isinstance(out, FilterOutput) and not out.log_evidence.requires_grad
    out = particle_filter(model, y, mask, n_particles=64, reparameterized=True)
    out.log_evidence.sum().backward()
    assert model.log_scale.grad is not None and torch.isfinite(model.log_scale.grad)
    # user objects untouched
    assert torch.isfinite(y).all() and mask.all()


def test_total_weight_collapse_names_the_step():
    y, mask = _walk_data(T=6, B=2)
    y = y.clone()
    y[1, 2, 0] = 1e6  # impossible under every particle at step 3 of series 1
    torch.manual_seed(22)
    with pytest.raises(NumericalError, match=r"step t=3 of series \[1\]"):
        particle_filter(BoxEmission(), y, mask, n_particles=32)


def test_bad_arguments_name_themselves():
    params, y, mask = CASES["1d"]()
    module = LinearGaussianModule(params)
    for bad in (1, 0, 2.5, True, "10"):
        with pytest.raises(ValueError, match="`n_particles`"):
            particle_filter(module, y, mask, n_particles=bad)
    with pytest.raises(ValueError, match="`resampling` must be one of"):
        particle_filter(module, y, mask, resampling="sytematic")
    with pytest.raises(ValueError, match="`proposal` must be one of"):
        particle_filter(module, y, mask, proposal="optimal")
    with pytest.raises(ValueError, match="`proposal`='guided' needs a model with a proposal"):
        particle_filter(RandomWalk(), y, mask, proposal="guided")
    with pytest.raises(ValueError, match="`proposal`='guided' needs a model with a proposal"):
        particle_filter(NoProposalAtRuntime(), y, mask, proposal="guided")
    with pytest.raises(ValueError, match="`ess_threshold`"):
        particle_filter(module, y, mask, ess_threshold=1.5)
    with pytest.raises(ValueError, match="`keep`"):
        particle_filter(module, y, mask, keep="all")
    with pytest.raises(ValueError, match="`values`"):
        particle_filter(module, y[0], mask[0])
    with pytest.raises(ValueError, match="`values`"):
        particle_filter(module, y[:, :0], mask[:, :0])
    with pytest.raises(ValueError, match="`mask`"):
        particle_filter(module, y, mask[:, :-1])
    with pytest.raises(TypeError, match="`mask`"):
        particle_filter(module, y, mask.to(D64))
    with pytest.raises(TypeError, match="`model`"):
        particle_filter(object(), y, mask)
    with pytest.raises(ValueError, match="`values` has NaN where `mask` says observed"):
        particle_filter(module, y.masked_fill(torch.rand_like(y) < 0.1, math.nan), mask)

"""Resampling schemes (tsgen.inference.smc.resampling): unbiased offspring counts, lower variance than
multinomial for the structured schemes, shapes, zero weights and bad names."""
import math

import pytest
import torch
from scipy import stats

from tsgen.inference.smc import RESAMPLERS, ess, normalise, resampler

SCHEMES = sorted(RESAMPLERS)
N = 12
DRAWS = 20000


def _weights() -> torch.Tensor:
    # uneven weights, some below 1/N and one zero, so residual draws happen and floor() matters
    w = torch.tensor([0.30, 0.17, 0.11, 0.09, 0.08, 0.07, 0.06, 0.05, 0.04, 0.02, 0.01, 0.0], dtype=torch.float64)
    return w / w.sum()


def _offspring(name: str, w: torch.Tensor, draws: int = DRAWS) -> torch.Tensor:
    """Offspring counts ``(draws, N)``: every column of the ``(N, draws)`` log-weights is one independent draw."""
    torch.manual_seed(0)
    log_w = w.log().unsqueeze(1).expand(len(w), draws)
    ancestors = RESAMPLERS[name](log_w + 3.0)  # unnormalised on purpose
    assert ancestors.shape == (len(w), draws) and ancestors.dtype == torch.int64
    return torch.nn.functional.one_hot(ancestors.T, len(w)).sum(1).to(torch.float64)


@pytest.mark.parametrize("name", SCHEMES)
def test_expected_offspring_is_n_times_weight(name):
    w = _weights()
    counts = _offspring(name, w)
    assert (counts.sum(1) == N).all()
    assert counts[:, -1].sum() == 0  # a zero-weight particle is never picked
    observed = counts.sum(0)[:-1]
    expected = DRAWS * N * w[:-1]
    # Pearson's statistic is chi2(N-2) for multinomial offspring and stochastically smaller for the
    # lower-variance schemes, so a bias (and nothing else) pushes it above the 99.9% quantile
    statistic = float(((observed - expected) ** 2 / expected).sum())
    assert statistic < stats.chi2.ppf(0.999, df=N - 2), statistic
    # and each mean count within 4 standard errors of N w_i, the s.e. from the draws themselves
    mean = counts.mean(0)
    se = counts.std(0) / math.sqrt(DRAWS)
    assert ((mean - N * w).abs() <= 4 * se + 1e-12).all(), (mean, N * w)


@pytest.mark.parametrize("name", ["stratified", "systematic", "residual"])
def test_structured_schemes_have_lower_offspring_variance(name):
    w = _weights()
    multinomial_var = _offspring("multinomial", w).var(0).sum()
    assert abs(float(multinomial_var) - float((N * w * (1 - w)).sum())) < 0.1 * float((N * w * (1 - w)).sum())
    assert _offspring(name, w).var(0).sum() < 0.5 * multinomial_var


@pytest.mark.parametrize("name", SCHEMES)
def test_degenerate_and_uniform_weights(name):
    torch.manual_seed(1)
    log_w = torch.full((5, 3), -math.inf)
    log_w[2, 0] = 0.0
    log_w[4, 1] = -1000.0  # one finite particle far below 0 in log space
    log_w[:, 2] = 0.0
    ancestors = resampler(name)(log_w)
    assert (ancestors[:, 0] == 2).all() and (ancestors[:, 1] == 4).all()
    assert ((ancestors[:, 2] >= 0) & (ancestors[:, 2] < 5)).all()
    if name in ("systematic", "residual", "stratified"):
        # equal weights: each particle kept exactly once
        assert sorted(ancestors[:, 2].tolist()) == [0, 1, 2, 3, 4]


def test_float32_and_many_series():
    torch.manual_seed(2)
    log_w = torch.randn(1000, 7, dtype=torch.float32) * 3
    for name in SCHEMES:
        ancestors = resampler(name)(log_w)
        assert ancestors.shape == (1000, 7)
        assert int(ancestors.min()) >= 0 and int(ancestors.max()) < 1000


def test_normalise_and_ess():
    log_w = torch.log(torch.tensor([[1.0, 1.0], [1.0, 0.0], [2.0, 0.0]], dtype=torch.float64))
    normalised, log_norm = normalise(log_w)
    assert torch.allclose(normalised.exp().sum(0), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(log_norm, torch.log(torch.tensor([4.0, 1.0], dtype=torch.float64)))
    # ESS = 1 / sum W^2: (1/4,1/4,1/2) -> 1/(3/8) = 8/3; one particle -> 1
    assert torch.allclose(ess(log_w), torch.tensor([8 / 3, 1.0], dtype=torch.float64))


@pytest.mark.parametrize("bad", ["systematc", "", None, 3])
def test_unknown_scheme_names_the_argument(bad):
    with pytest.raises(ValueError, match="`resampling` must be one of"):
        resampler(bad)


@pytest.mark.parametrize("name", ["systematic", "stratified"])
def test_linear_time_schemes_equal_the_inverse_cdf_definition(name):
    # the O(N) count-and-scatter forms against the textbook inverse CDF on the same uniforms:
    # point (j + U_j) / N goes to the first particle whose cumulative weight exceeds it
    torch.manual_seed(3)
    log_w = torch.randn(500, 6, dtype=torch.float64) * 2
    log_w[::7] = -math.inf
    state = torch.get_rng_state()
    ancestors = RESAMPLERS[name](log_w)
    torch.set_rng_state(state)
    n, b = log_w.shape
    if name == "systematic":
        u = 1 - torch.rand((b, 1), dtype=torch.float64)  # the scheme uses 1 - U, uniform too
    else:
        u = torch.rand((b, n), dtype=torch.float64)
    points = (torch.arange(n, dtype=torch.float64) + u) / n
    cdf = torch.softmax(log_w, 0).T.cumsum(-1)
    expected = torch.searchsorted(cdf / cdf[:, -1:], points, right=True).clamp(max=n - 1).T
    assert torch.equal(ancestors, expected)

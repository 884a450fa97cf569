"""MADE/NADE emissions (tsgen.components.autoregressive): exact normalisation, the chain rule, sampling vs log_prob."""
from __future__ import annotations

import itertools

import pytest
import torch
from scipy import stats

from tsgen.components.autoregressive import MADE, NADE, GaussianMADE
from tsgen.components.heads import make_head, masked_log_prob
from tsgen.components.positive import positive

F_IN, D = 5, 4


def _features(n=3, seed=0):
    return torch.randn(n, F_IN, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _all_binary(dim):
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=dim)), dtype=torch.float64)


@pytest.mark.parametrize("name, cls", [("made", MADE), ("nade", NADE), ("made_normal", GaussianMADE)])
def test_names_resolve_to_non_factorising_emissions(name, cls):
    head = make_head(name.upper(), F_IN, D)
    assert isinstance(head, cls) and not head.factorizes and head.exact_log_prob
    distribution = head(_features().float())
    assert distribution.batch_shape == (3,) and distribution.event_shape == (D,)
    assert distribution.sample((2,)).shape == (2, 3, D)


@pytest.mark.parametrize("name", ["made", "nade"])
def test_binary_emission_sums_to_one_over_all_vectors(name):
    torch.manual_seed(0)
    head = make_head(name, F_IN, D).double()
    with torch.no_grad():  # sharpen the network so that the check is not passed by near-uniform outputs
        for p in head.parameters():
            p.mul_(3.0)
    log_p = head(_features()).log_prob(_all_binary(D)[:, None, :])  # (2^D, 3)
    torch.testing.assert_close(log_p.logsumexp(0), torch.zeros(3, dtype=torch.float64), atol=1e-10, rtol=0)
    assert log_p.exp().max() > 2.0 / 2 ** D  # far from uniform


@pytest.mark.parametrize("name", ["made", "nade"])
def test_binary_sampling_matches_marginals_of_log_prob(name):
    torch.manual_seed(1)
    head = make_head(name, F_IN, 3).double()
    with torch.no_grad():
        for p in head.parameters():
            p.mul_(2.0)
    features = _features(2, seed=1)
    X = _all_binary(3)
    probs = head(features).log_prob(X[:, None, :]).exp()  # (8, 2)
    marginals = (probs[..., None] * X[:, None, :]).sum(0)  # P(x_d = 1) per feature row, (2, 3)
    n = 20000
    draws = head(features).sample((n,))
    frequency = draws.mean(0)
    se = (marginals * (1 - marginals) / n).sqrt()
    assert ((frequency - marginals).abs() < 4 * se).all()
    # the pair (x_1, x_3) too: dependence through x_2 is what a factorised emission would miss
    joint13 = (probs * X[:, None, 0] * X[:, None, 2]).sum(0)
    se13 = (joint13 * (1 - joint13) / n).sqrt()
    assert ((draws[..., 0] * draws[..., 2]).mean(0) - joint13).abs().lt(4 * se13).all()


def _chain_rule(head: GaussianMADE, x, features):
    """``sum_d log N(x_d; mu_d, sigma_d)`` with each conditional computed from ``x_{<d}`` alone (later
    entries replaced by noise), one network call per dimension."""
    total = torch.zeros(x.shape[:-1], dtype=x.dtype)
    generator = torch.Generator().manual_seed(9)
    for d in range(x.shape[-1]):
        garbage = torch.randn(x.shape, dtype=x.dtype, generator=generator) * 10
        visible = torch.cat([x[..., :d], garbage[..., d:]], dim=-1)
        loc, raw = head.made(visible, features)
        sigma = positive(raw[..., d])
        total = total + torch.distributions.Normal(loc[..., d], sigma).log_prob(x[..., d])
    return total


def test_gaussian_made_log_prob_is_the_chain_rule():
    torch.manual_seed(2)
    head = make_head("made_normal", F_IN, D).double()
    features = _features()
    x = torch.randn(3, D, dtype=torch.float64)
    torch.testing.assert_close(head(features).log_prob(x), _chain_rule(head, x, features))
    # DeepAR scaling: the density of x = s y is that of y less sum log s
    scale = torch.rand(3, D, dtype=torch.float64) + 0.5
    torch.testing.assert_close(head(features, scale).log_prob(x * scale),
                               _chain_rule(head, x, features) - scale.log().sum(-1))


def test_gaussian_made_sampling_matches_its_conditionals():
    """The probability integral transforms of draws under the conditionals of ``log_prob`` are uniform
    (one-sample Kolmogorov-Smirnov per dimension; the first dimension is an exact Normal marginal)."""
    torch.manual_seed(3)
    head = make_head("made_normal", F_IN, 3).double()
    features = _features(1, seed=3)
    n = 4000
    draws = head(features).sample((n,))  # (n, 1, 3)
    loc, sigma = head.conditionals(draws, features)
    pit = torch.distributions.Normal(loc, sigma).cdf(draws).reshape(n, 3).detach()
    for d in range(3):
        assert stats.kstest(pit[:, d].numpy(), "uniform").pvalue > 1e-3


def test_gaussian_made_rsample_carries_gradients():
    head = make_head("made_normal", F_IN, D)
    x = head(_features().float()).rsample((2,))
    x.sum().backward()
    assert all(p.grad is not None for p in head.made.parameters())
    with pytest.raises(NotImplementedError, match="Bernoulli"):
        make_head("made", F_IN, D)(_features().float()).rsample()


def test_partially_observed_vectors_are_refused_and_empty_ones_score_zero():
    head = make_head("made", F_IN, D).double()
    features = _features()
    x = torch.bernoulli(torch.full((3, D), 0.5, dtype=torch.float64), generator=torch.Generator().manual_seed(4))
    mask = torch.ones(3, D, dtype=torch.bool)
    torch.testing.assert_close(masked_log_prob(head(features), x, mask), head(features).log_prob(x))
    mask[1] = False
    garbage = torch.where(mask, x, torch.tensor(float("nan"), dtype=x.dtype))
    value = masked_log_prob(head(features), garbage, mask)
    assert value[1] == 0 and torch.isfinite(value).all()
    mask[0, 2] = False
    with pytest.raises(ValueError, match="`emission` AutoregressiveDistribution does not factorise"):
        masked_log_prob(head(features), x, mask)


def test_binary_emission_checks_its_support():
    head = make_head("nade", F_IN, D)
    with pytest.raises(ValueError, match="binary values"):
        head.check_support(torch.full((2, D), 0.5), torch.ones(2, D, dtype=torch.bool))
    with pytest.raises(ValueError, match="`hidden_dim` must be a positive integer"):
        NADE(F_IN, D, hidden_dim=0)
    with pytest.raises(ValueError, match="`hidden_dims`"):
        MADE(F_IN, D, hidden_dims=[])

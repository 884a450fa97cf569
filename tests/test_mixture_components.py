"""Mixture density emissions and the mixture transition (tsgen.components.mixtures) against hand computations."""
import math

import numpy as np
import pytest
import torch
from pyro.distributions import MixtureOfDiagNormals
from scipy import stats

from tsgen.components.heads import make_head, masked_log_prob
from tsgen.components.mixtures import DiagNormalMixture, MixtureEmission, MixtureTransition, StudentTMixtureEmission
from tsgen.components.transitions import kl_term, make_transition
from test_flow_components import _randomised  # every parameter redrawn, in float64


def _args(head, features):
    shape = (*features.shape[:-1], head.dim, head.n_components)
    return head.domain_map(**{a: layer(features).reshape(shape) for a, layer in head.proj.items()})


def _hand_log_prob(head, features, x, scale):
    """``sum_d logsumexp_k(log pi_dk + log f(x_d; s mu, s sigma[, nu]))`` written out in numpy."""
    a = {k: v.detach().numpy() for k, v in _args(head, features).items()}
    s = scale.numpy()[..., None]
    xs = x.numpy()[..., None]
    log_pi = a["logits"] - np.log(np.exp(a["logits"]).sum(-1, keepdims=True))
    loc, sigma = a["loc"] * s, a["scale"] * s
    if "df" in a:
        log_f = stats.t.logpdf(xs, a["df"], loc, sigma)
    else:
        log_f = -0.5 * ((xs - loc) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)
    terms = log_pi + log_f
    peak = terms.max(-1, keepdims=True)
    return (peak[..., 0] + np.log(np.exp(terms - peak).sum(-1))).sum(-1)


@pytest.mark.parametrize("cls", [MixtureEmission, StudentTMixtureEmission])
@pytest.mark.parametrize("dim", [1, 3])
def test_log_prob_is_the_hand_logsumexp(cls, dim):
    torch.manual_seed(0)
    head = _randomised(cls(4, dim, n_components=4), seed=dim)
    features = torch.randn(7, 4, dtype=torch.float64)
    scale = torch.rand(7, dim, dtype=torch.float64) * 2 + 0.2
    x = 2 * torch.randn(7, dim, dtype=torch.float64)
    got = head(features, scale).log_prob(x).detach().numpy()
    np.testing.assert_allclose(got, _hand_log_prob(head, features, x, scale), rtol=1e-10, atol=1e-10)
    assert head(features, scale).event_shape == (dim,) and head.factorizes and head.location_scale


def test_names_and_options():
    assert isinstance(make_head("mdn", 3, 2), MixtureEmission)
    assert isinstance(make_head("MDN_StudentT", 3, 2), StudentTMixtureEmission)
    assert make_head("mdn", 3, 2).n_components == 3
    with pytest.raises(ValueError, match="n_components"):
        MixtureEmission(3, 2, n_components=0)
    with pytest.raises(ValueError, match="n_components"):
        MixtureTransition(2, n_components=2.5)
    assert isinstance(make_transition("mdn", 2, 3, 8), MixtureTransition)


@pytest.mark.parametrize("cls", [MixtureEmission, StudentTMixtureEmission])
def test_samples_follow_the_mixture_cdf_and_moments(cls):
    torch.manual_seed(1)
    head = _randomised(cls(3, 2, n_components=3), seed=4, spread=1.0)
    features = torch.randn(3, dtype=torch.float64)
    distribution = head(features)
    a = {k: v.detach().numpy() for k, v in _args(head, features).items()}
    pi = np.exp(a["logits"]) / np.exp(a["logits"]).sum(-1, keepdims=True)
    draws = distribution.sample((4000,)).numpy()
    for d in range(2):
        if "df" in a:
            def cdf(v, d=d):
                return (pi[d] * stats.t.cdf(v[:, None], a["df"][d], a["loc"][d], a["scale"][d])).sum(-1)
        else:
            def cdf(v, d=d):
                return (pi[d] * stats.norm.cdf(v[:, None], a["loc"][d], a["scale"][d])).sum(-1)
        assert stats.kstest(draws[:, d], cdf).pvalue > 1e-3
    se = draws.std(0) / math.sqrt(len(draws))
    assert np.all(np.abs(distribution.mean.detach().numpy() - draws.mean(0)) < 4 * se)
    # the variance against the mixture's second moment written out by hand
    component_var = a["scale"] ** 2 * (a["df"] / (a["df"] - 2) if "df" in a else 1.0)
    mean = (pi * a["loc"]).sum(-1)
    variance = (pi * (component_var + a["loc"] ** 2)).sum(-1) - mean ** 2
    np.testing.assert_allclose(distribution.variance.detach().numpy(), variance, rtol=1e-10)
    if "df" not in a:  # a Student-t's sample variance has no finite standard error when nu <= 4
        centred = draws - draws.mean(0)
        se_var = np.sqrt(((centred ** 2 - centred.var(0)) ** 2).mean(0) / len(draws))
        assert np.all(np.abs(variance - centred.var(0)) < 4 * se_var)


def test_partially_observed_vectors_are_scored_on_their_observed_dimensions():
    head = MixtureEmission(3, 3)
    features, x = torch.randn(5, 3), torch.randn(5, 3)
    mask = torch.rand(5, 3) > 0.4
    per_dim = head(features).base_dist.log_prob(x)
    got = masked_log_prob(head(features), torch.where(mask, x, torch.full_like(x, float("nan"))), mask)
    assert torch.allclose(got, (per_dim * mask).sum(-1))


def test_scale_is_a_change_of_units():
    head = _randomised(StudentTMixtureEmission(3, 2), seed=2)
    features = torch.randn(4, 3, dtype=torch.float64)
    scale = torch.rand(4, 2, dtype=torch.float64) * 5 + 0.1
    x = torch.randn(4, 2, dtype=torch.float64)
    assert torch.allclose(head(features, scale).log_prob(x * scale), head(features).log_prob(x) - scale.log().sum(-1))


@pytest.mark.parametrize("latent_dim", [1, 2])
def test_diag_normal_mixture_log_prob_moments_and_samples(latent_dim):
    torch.manual_seed(2)
    locs = torch.randn(3, latent_dim, dtype=torch.float64) * 2
    scales = torch.rand(3, latent_dim, dtype=torch.float64) + 0.3
    logits = torch.randn(3, dtype=torch.float64)
    mixture = DiagNormalMixture(locs, scales, logits)
    z = torch.randn(11, latent_dim, dtype=torch.float64) * 2
    per_component = torch.distributions.Normal(locs, scales).log_prob(z[:, None]).sum(-1) + logits.log_softmax(-1)
    assert torch.allclose(mixture.log_prob(z), per_component.logsumexp(-1))
    draws = mixture.rsample((20000,))
    se = draws.std(0) / math.sqrt(len(draws))
    assert bool(((mixture.mean - draws.mean(0)).abs() < 4 * se).all())
    pi = logits.softmax(-1).numpy()
    first = draws[:, 0].numpy()
    cdf = lambda v: (pi * stats.norm.cdf(v[:, None], locs[:, 0].numpy(), scales[:, 0].numpy())).sum(-1)  # noqa: E731
    assert stats.kstest(first, cdf).pvalue > 1e-3


@pytest.mark.parametrize("latent_dim", [1, 2])
def test_rsample_gradients_match_the_closed_form_second_moment(latent_dim):
    # E sum_d z_d^2 = sum_k pi_k sum_d (mu_kd^2 + sigma_kd^2): its gradient in mu, sigma and the logits is known.
    # R independent replicates of the same parameters give R independent Monte Carlo gradients in one backward.
    torch.manual_seed(5)
    R, n, K = 40, 500, 3
    mu0 = torch.randn(K, latent_dim, dtype=torch.float64)
    sigma0 = torch.rand(K, latent_dim, dtype=torch.float64) + 0.5
    logits0 = torch.randn(K, dtype=torch.float64)
    mu = mu0.expand(R, K, latent_dim).clone().requires_grad_()
    sigma = sigma0.expand(R, K, latent_dim).clone().requires_grad_()
    logits = logits0.expand(R, K).clone().requires_grad_()
    z = DiagNormalMixture(mu, sigma, logits).rsample((n,))  # (n, R, Z)
    (z ** 2).sum(-1).mean(0).sum().backward()
    pi = logits0.softmax(-1)
    second = (mu0 ** 2 + sigma0 ** 2).sum(-1)
    expected = {
        "mu": 2 * pi[:, None] * mu0,
        "sigma": 2 * pi[:, None] * sigma0,
        "logits": pi * (second - (pi * second).sum()),
    }
    for name, tensor in (("mu", mu), ("sigma", sigma), ("logits", logits)):
        grads = tensor.grad
        mean, se = grads.mean(0), grads.std(0) / math.sqrt(R)
        assert bool(((mean - expected[name]).abs() < 4 * se + 1e-6).all()), name


def test_rsample_agrees_with_pyro_where_pyro_applies():
    torch.manual_seed(0)
    locs, scales, logits = torch.randn(4, 3), torch.rand(4, 3) + 0.5, torch.randn(4)
    ours, theirs = DiagNormalMixture(locs, scales, logits), MixtureOfDiagNormals(locs, scales, logits)
    z = torch.randn(6, 3)
    assert torch.allclose(ours.log_prob(z), theirs.log_prob(z))


@pytest.mark.parametrize("latent_dim", [1, 3])
def test_mixture_transition_feeds_the_elbo(latent_dim):
    torch.manual_seed(0)
    transition = make_transition("mdn", latent_dim, feature_dim=2, hidden_dim=16)
    assert transition.has_rsample and transition.exact_log_prob
    z_prev, features = torch.randn(5, latent_dim), torch.randn(5, 2)
    prior = transition(z_prev, features)
    assert prior.batch_shape == (5,) and prior.event_shape == (latent_dim,)
    guide = make_transition("gaussian", latent_dim, feature_dim=2, hidden_dim=16)(z_prev, features)
    z = prior.rsample((3,))
    loss = kl_term(guide, prior, guide.rsample()).sum() - prior.log_prob(z).sum()
    loss.backward()
    assert bool(transition.net.net[-1].weight.grad.abs().sum() > 0)
    assert prior.mean.shape == (5, latent_dim) and bool((prior.variance > 0).all())

"""Oracle tests for tsgen.inference.elbo: closed forms, exact enumeration, conjugate Gaussians."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from tsgen.inference.elbo import (
    gaussian_kl,
    iwae_bound,
    logmeanexp,
    per_step_iwae,
    sequence_elbo,
    valid_steps,
)

DTYPE = torch.float64


def test_logmeanexp_matches_numpy_and_is_stable():
    x = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.5, 4.0]], dtype=DTYPE)
    expected = np.log(np.mean(np.exp(x.numpy()), axis=1))
    np.testing.assert_allclose(logmeanexp(x, dim=1).numpy(), expected, rtol=1e-14)
    big = torch.tensor([1000.0, 1000.0 + math.log(3.0)], dtype=DTYPE)
    assert logmeanexp(big).item() == pytest.approx(1000.0 + math.log(2.0), rel=1e-14)


def test_valid_steps_stop_at_last_observation():
    mask = torch.zeros(2, 5, 2, dtype=torch.bool)
    mask[0, [0, 2], 0] = True  # step 1 missing inside, steps 3-4 trailing
    mask[1, :, 1] = True
    expected = torch.tensor([[True, True, True, False, False], [True] * 5])
    assert torch.equal(valid_steps(mask), expected)
    with pytest.raises(TypeError, match="mask"):
        valid_steps(mask.float())


def test_gaussian_kl_closed_form():
    rng = np.random.default_rng(0)
    mq, mp = rng.normal(size=(2, 4, 3))
    sq, sp = rng.uniform(0.2, 2.0, size=(2, 4, 3))
    expected = (np.log(sp / sq) + (sq**2 + (mq - mp) ** 2) / (2 * sp**2) - 0.5).sum(-1)
    got = gaussian_kl(*(torch.from_numpy(a) for a in (mq, sq, mp, sp)))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
    assert torch.all(gaussian_kl(torch.zeros(3), torch.ones(3), torch.zeros(3), torch.ones(3)) == 0)


def test_sequence_elbo_ignores_steps_outside_the_mask_even_nan():
    log_lik = torch.tensor([[1.0, 2.0, float("nan")], [0.5, 0.5, 0.5]], dtype=DTYPE)
    kl = torch.tensor([[0.1, 0.2, float("inf")], [0.3, 0.3, 0.3]], dtype=DTYPE)
    step_mask = torch.tensor([[True, True, False], [True, True, True]])
    got = sequence_elbo(log_lik, kl, step_mask, kl_weight=0.5)
    expected = torch.tensor([1.0 + 2.0 - 0.5 * 0.3, 1.5 - 0.5 * 0.9], dtype=DTYPE)
    torch.testing.assert_close(got, expected, rtol=1e-14, atol=0)


@given(st.lists(st.floats(-50, 50), min_size=1, max_size=20))
def test_iwae_bound_between_mean_and_max(weights):
    w = torch.tensor(weights, dtype=DTYPE)
    bound = iwae_bound(w).item()
    assert w.mean().item() - 1e-9 <= bound <= w.max().item() + 1e-9


def test_per_step_iwae_telescopes_to_the_total_and_zeroes_unobserved_steps():
    gen = torch.Generator().manual_seed(0)
    observed = torch.tensor([[True, True, False, True, True, True], [True] * 4 + [False] * 2, [True] + [False] * 5])
    w = torch.randn(50, 3, 6, generator=gen, dtype=DTYPE)
    w = torch.where(valid_steps(observed[..., None]), w, torch.zeros((), dtype=DTYPE))  # nothing after the end
    per_step = per_step_iwae(w, observed)
    assert torch.all(per_step[~observed] == 0)
    torch.testing.assert_close(per_step.sum(-1), iwae_bound(w.sum(-1), dim=0), rtol=1e-12, atol=1e-12)
    # the interior gap's latent move is carried into the next observed step
    expected = logmeanexp(w[:, 0, :4].sum(-1)) - logmeanexp(w[:, 0, :2].sum(-1))
    torch.testing.assert_close(per_step[0, 3], expected, rtol=1e-12, atol=1e-12)
    # with one draw and everything observed the increments are the draw's own step weights
    torch.testing.assert_close(per_step_iwae(w[:1]), w[0], rtol=0, atol=1e-12)


def test_iwae_converges_to_exact_evidence_of_a_conjugate_gaussian():
    # z ~ N(0, 1), x | z ~ N(z, 1): p(x) = N(x; 0, 2). Proposal = prior, so
    # log w = log N(x; z, 1); the ELBO is E[log w] and the IWAE increases to log p(x).
    gen = torch.Generator().manual_seed(1)
    x = 1.3
    exact = stats.norm(0, math.sqrt(2)).logpdf(x)
    z = torch.randn(200, 20_000, generator=gen, dtype=DTYPE)
    log_w = torch.distributions.Normal(z, 1.0).log_prob(torch.tensor(x, dtype=DTYPE))
    elbo = log_w.mean()
    closed_form_elbo = -0.5 * math.log(2 * math.pi) - 0.5 * (x**2 + 1)
    assert elbo.item() == pytest.approx(closed_form_elbo, abs=5 * log_w.std().item() / math.sqrt(log_w.numel()))
    iwae_10 = iwae_bound(log_w.reshape(-1, 10).T, dim=0)  # 400_000 independent K=10 bounds
    iwae_big = iwae_bound(log_w, dim=1)  # 200 K=20000 bounds
    assert elbo < iwae_10.mean() < iwae_big.mean()
    se_big = iwae_big.std().item() / math.sqrt(len(iwae_big))
    assert iwae_big.mean().item() == pytest.approx(exact, abs=max(5 * se_big, 1e-3))
    assert iwae_big.mean().item() <= exact + 5 * se_big

"""The fused training passes (``rollout``) of VRNN, SRNN and LSTMSSM against the protocol's step functions.

A rollout evaluates a step's prior and guide as one network
(:class:`tsgen.components.latent.GaussianPair`) and feeds the recurrence a
precomputed input projection; along the same draws ``z`` the protocol's
``transition``/``proposal``/``commit``/``emission`` (what the particle
filter runs) must give the same log-likelihoods, log-ratios and KLs, with
missing values, partly observed steps and trailing padding.
"""
from __future__ import annotations

import pytest
import torch
from torch.distributions import kl_divergence

from tsgen.components.latent import RecurrentCell
from tsgen.models.lstm_ssm import LSTMSSMModule
from tsgen.models.srnn import SRNNModule
from tsgen.models.vrnn import VRNNModule
from tsgen.protocol import observed_log_prob

B, T, D, S = 4, 9, 3, 3
TOLERANCE = 1e-4  # float32 rounding of batched against per-step products


def data(binary: bool):
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(B, T, D, generator=generator).abs()
    mask = torch.rand(B, T, D, generator=generator) > 0.2
    mask[1, 6:] = False  # a shorter sequence
    mask[2, 3] = False  # a step with nothing observed
    return ((values > 0.7).float() if binary else values), mask


def by_protocol(module, values, mask, z):
    """``log g``, ``log p - log q`` and ``KL`` per step along draws ``z`` ``(S, B, T, Z)``."""
    context = module.prepare(values, mask)
    state = module.init_state(context, (z.shape[0],))
    observed = mask.any(-1)
    x_nan = torch.where(mask, values, torch.full((), float("nan")))
    zero = torch.zeros(())
    log_lik, log_ratio, kl = [], [], []
    for t in range(values.shape[1]):
        context_t = context.at(t)
        state, prior = module.transition(state, None if t == 0 else x_nan[:, t - 1], context_t)
        q = module.proposal(state, x_nan[:, t], mask[:, t], context_t)
        z_t = z[:, :, t]
        log_ratio.append(torch.where(observed[:, t], prior.log_prob(z_t) - q.log_prob(z_t), zero))
        kl.append(torch.where(observed[:, t], kl_divergence(q, prior), zero))
        state = module.commit(state, z_t, context_t)
        log_lik.append(observed_log_prob(module.emission(state, context_t), values[:, t], mask[:, t]))
    return torch.stack(log_lik, -1), torch.stack(log_ratio, -1), torch.stack(kl, -1)


def assert_matches(module, values, mask, rollout):
    torch.manual_seed(1)
    *terms, z = rollout(values, mask)
    for name, got, want in zip(("log_lik", "log_ratio", "kl"), terms, by_protocol(module, values, mask, z)):
        assert got.shape == (S, B, T), name
        assert torch.allclose(got, want, atol=TOLERANCE, rtol=TOLERANCE), name


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("emission", ["normal", "bernoulli"])
def test_vrnn_rollout_equals_its_steps(cell, emission):
    torch.manual_seed(0)
    module = VRNNModule(D, 2, 5, 6, emission=emission, cell=cell)
    values, mask = data(emission == "bernoulli")
    assert_matches(module, values, mask, lambda v, m: module.rollout(v, m, S, latents=True))


@pytest.mark.parametrize("inference", ["smoothing", "filtering"])
def test_srnn_rollout_equals_its_steps(inference):
    torch.manual_seed(0)
    module = SRNNModule(D, 2, 5, 6, inference=inference)
    values, mask = data(False)
    assert_matches(module, values, mask, lambda v, m: module.rollout(v, m, S))


def test_lstm_ssm_rollout_equals_its_steps():
    torch.manual_seed(0)
    module = LSTMSSMModule(D, 2, 5, 6)
    values, mask = data(False)
    assert_matches(module, values, mask, lambda v, m: module.rollout(v, m, S, latents=True))


def test_unobserved_steps_draw_from_the_prior():
    """Where nothing is observed the draw is the prior's (standardised by the prior along the same path, a
    standard normal: mean and variance within 4 standard errors) and adds no KL or log-ratio."""
    torch.manual_seed(0)
    module, n = VRNNModule(D, 2, 5, 6), 4000
    values, mask = data(False)
    _, log_ratio, kl, z = module.rollout(values, mask, n, latents=True)
    unobserved = ~mask.any(-1)
    assert bool((log_ratio[:, unobserved] == 0).all()) and bool((kl[:, unobserved] == 0).all())
    context = module.prepare(values, mask)
    state = module.init_state(context, (n,))
    x_nan = torch.where(mask, values, torch.full((), float("nan")))
    for t in range(T):
        state, prior = module.transition(state, None if t == 0 else x_nan[:, t - 1], context.at(t))
        if t == 3:  # series 2 observes nothing here
            residual = ((z[:, 2, t] - prior.base_dist.loc[:, 2]) / prior.base_dist.scale[:, 2]).flatten()
            assert abs(float(residual.mean())) < 4 / residual.numel() ** 0.5
            assert abs(float(residual.var()) - 1) < 4 * (2 / residual.numel()) ** 0.5
        state = module.commit(state, z[:, :, t], context.at(t))


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_recurrent_cell_scan_and_split_step_equal_the_cell(cell):
    torch.manual_seed(0)
    rnn = RecurrentCell(cell, 7, 5)
    inputs = torch.randn(3, 4, T, 7)
    h0, c0 = rnn.initial((3, 4), inputs)
    h, c, hs = h0, c0, []
    for t in range(T):
        h, c = rnn(inputs[:, :, t], h, c)
        hs.append(h)
    assert torch.allclose(rnn.scan(inputs, h0, c0), torch.stack(hs, -2), atol=1e-6)
    # the first 3 input columns projected ahead, the other 4 given per step
    flat = inputs[:, :, 0].reshape(12, 7)
    h1, c1 = rnn.step(flat[:, 3:], rnn.project(flat[:, :3]), h0.reshape(12, 5),
                      None if c0 is None else c0.reshape(12, 5))
    assert torch.allclose(h1, hs[0].reshape(12, 5), atol=1e-6)

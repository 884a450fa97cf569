"""Deep Markov Model: Kalman oracle for a linear-Gaussian DMM, masks, gradients, estimator contract."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.distributions import Independent, Normal
from test_deep_robustness import _unscored_steps

import tsgen
from tsgen.components.inference_networks import (
    INFERENCE_NETWORKS,
    StructuredInferenceNetwork,
    _CombinerScan,
    _ReluRNNScan,
    reverse_within_lengths,
)
from tsgen.components.transitions import GatedTransition
from tsgen.inference.kalman import KalmanParams, kalman_log_likelihood
from tsgen.models.dmm import DeepMarkovModel, DeepMarkovModule, Emitter
from tsgen.training import SequenceBatch, TrainingConfig, train

DTYPE = torch.float64


# ------------------------------------------------------------------ linear-Gaussian DMM (test-only)
class LinearTransition(nn.Module):
    """z_t = F z_{t-1} + c + N(0, diag q^2): fixed, not learned."""

    def __init__(self, F, c, q):
        super().__init__()
        self.register_buffer("F", F)
        self.register_buffer("c", c)
        self.register_buffer("q", q)

    def forward(self, z):
        return z @ self.F.T + self.c, self.q.expand(z.shape)


class LinearEmission(nn.Module):
    """x_t = H z_t + d + N(0, diag r^2): fixed, not learned."""

    def __init__(self, H, d, r):
        super().__init__()
        self.register_buffer("H", H)
        self.register_buffer("d", d)
        self.register_buffer("r", r)

    def forward(self, z, scale=None):
        loc = z @ self.H.T + self.d
        return Independent(Normal(loc, self.r.expand(loc.shape)), 1)


F_ = torch.tensor([[0.9, 0.2], [-0.1, 0.8]], dtype=DTYPE)
C_ = torch.tensor([0.3, -0.2], dtype=DTYPE)
Q_ = torch.tensor([0.5, 0.3], dtype=DTYPE)
H_ = torch.tensor([[1.0, 0.5], [0.0, 1.0]], dtype=DTYPE)
D_ = torch.tensor([0.1, 0.0], dtype=DTYPE)
R_ = torch.tensor([0.4, 0.6], dtype=DTYPE)


def linear_gaussian_dmm(inference="dks", rnn_dim=16, seed=0):
    torch.manual_seed(seed)  # test-local initialisation; the library itself never seeds globally
    module = DeepMarkovModule(
        2, LinearEmission(H_, D_, R_), latent_dim=2, rnn_dim=rnn_dim, inference=inference,
        transition=LinearTransition(F_, C_, Q_),
    ).double()
    with torch.no_grad():
        module.z_0.zero_()
    module.z_0.requires_grad_(False)  # z_1 ~ N(F 0 + c, Q): the Kalman prior below
    return module


def kalman_params():
    # The DMM draws z_1 from the transition out of z_0 = 0, so the Kalman
    # initial state is N(c, Q); offsets carry c and d.
    return KalmanParams(
        F_, H_, torch.diag(Q_**2), torch.diag(R_**2), C_, torch.diag(Q_**2),
        transition_offsets=C_, observation_offsets=D_,
    )


def observations():
    gen = torch.Generator().manual_seed(0)
    y = 2 * torch.randn(4, 8, 2, generator=gen, dtype=DTYPE)
    mask = torch.ones(4, 8, 2, dtype=torch.bool)
    mask[1, 5:] = False  # a shorter sequence (padding)
    mask[2, 3, 0] = False  # one missing value inside
    mask[3, 2] = False  # one missing step inside
    return torch.where(mask, y, torch.nan), mask


@pytest.fixture(scope="module")
def trained_linear_dmm():
    """A linear-Gaussian DMM whose guide (only) is fitted by the training loop."""
    module = linear_gaussian_dmm()
    y, mask = observations()
    data = SequenceBatch(values=y, mask=mask)
    config = TrainingConfig(max_epochs=120, batch_size=4, learning_rate=3e-2, patience=None, progress=False)
    train(module, lambda b, w: -module.elbo(b.values, b.mask, w, n_samples=8).mean(), data,
          config=config, generator=torch.Generator().manual_seed(0))
    return module


def test_linear_gaussian_dmm_elbo_below_iwae_below_exact_kalman(trained_linear_dmm):
    module = trained_linear_dmm
    y, mask = observations()
    exact = kalman_log_likelihood(torch.nan_to_num(y), mask, kalman_params(), method="sequential")
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        elbo = module.elbo(y, mask, n_samples=4000, generator=gen)  # (S, B)
        iwae_10 = torch.stack([module.iwae(y, mask, 10, gen) for _ in range(200)])
        iwae_big = torch.stack([module.iwae(y, mask, 5000, gen) for _ in range(8)])

    def mean_se(draws):
        return draws.mean(0), draws.std(0) / math.sqrt(draws.shape[0])

    (e, e_se), (i10, i10_se), (ib, ib_se) = mean_se(elbo), mean_se(iwae_10), mean_se(iwae_big)
    # ELBO <= IWAE_10 <= IWAE_5000 <= log p(y) (in expectation; 4 standard errors of slack)
    assert torch.all(e <= i10 + 4 * (e_se + i10_se))
    assert torch.all(i10 <= ib + 4 * (i10_se + ib_se))
    assert torch.all(ib <= exact + 4 * ib_se)
    # the ELBO gap is real (the guide is not the exact posterior) and the IWAE closes it
    assert torch.all(exact - e > 0.05)
    torch.testing.assert_close(ib, exact, atol=0.08, rtol=0)


def test_per_step_iwae_sums_to_the_iwae_and_zeroes_padding(trained_linear_dmm):
    y, mask = observations()
    with torch.no_grad():
        per_step = trained_linear_dmm.log_likelihood(y, mask, "iwae", 64, torch.Generator().manual_seed(3))
        total = trained_linear_dmm.iwae(y, mask, 64, torch.Generator().manual_seed(3))
        per_step_elbo = trained_linear_dmm.log_likelihood(y, mask, "elbo", 64, torch.Generator().manual_seed(3))
    torch.testing.assert_close(per_step.sum(-1), total, rtol=1e-12, atol=1e-10)
    assert torch.all(per_step[1, 5:] == 0) and torch.all(per_step_elbo[1, 5:] == 0)
    # nothing is seen at step 2 of sequence 3: it reads 0 and its latent move lands on step 3
    assert per_step[3, 2] == 0 and torch.all(per_step[3, [0, 1, 3, 4]] != 0)


def test_padding_values_never_matter_and_padded_steps_contribute_exactly_zero():
    module = linear_gaussian_dmm(inference="st-lr")
    y, mask = observations()
    garbage = torch.where(mask, y, torch.full_like(y, 1e6))
    weights, grads = [], []
    for values in (y, garbage):
        module.zero_grad()
        w = module.step_log_weights(values, mask, 3, torch.Generator().manual_seed(5))
        w.sum().backward()
        weights.append(w.detach())
        grads.append([p.grad.clone() for p in module.parameters() if p.requires_grad])
        assert all(torch.isfinite(g).all() for g in grads[-1])
    assert torch.equal(weights[0], weights[1])
    assert all(torch.equal(a, b) for a, b in zip(*grads))
    assert torch.all(weights[0][:, 1, 5:] == 0)


@pytest.mark.parametrize("inference", sorted(INFERENCE_NETWORKS))
def test_backward_and_forward_summaries_do_not_leak_across_padding(inference):
    torch.manual_seed(0)
    net = StructuredInferenceNetwork(3, 2, 5, inference=inference, rnn_type="gru").double()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 3, generator=gen, dtype=DTYPE)
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[1, 4:] = False
    batch_summary = net.summarise(x, mask, mask.any(-1))
    alone = net.summarise(x[1:, :4], mask[1:, :4], mask[1:, :4].any(-1))
    torch.testing.assert_close(batch_summary[1, :4], alone[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("active", [[3, 3, 3, 3, 3], [3, 3, 2, 2, 1]])
def test_hand_written_scan_gradients_match_finite_differences(active):
    gen = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=DTYPE).requires_grad_()

    projected, h0, weight = rand(3, 5, 4), rand(3, 4), (0.5 * torch.randn(4, 4, generator=gen, dtype=DTYPE)).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, h, w: _ReluRNNScan.apply(a, h, w, active), (projected, h0, weight))
    terms, z0, w, b, v = rand(3, 5, 4), rand(3, 2), rand(6, 2), rand(6), rand(6, 4)
    noise = torch.randn(3, 5, 2, generator=gen, dtype=DTYPE)
    assert torch.autograd.gradcheck(
        lambda *args: _CombinerScan.apply(*args, active), (terms, noise, z0, w, b, v)
    )


def test_fast_guide_matches_the_step_by_step_combiner():
    torch.manual_seed(0)
    net = StructuredInferenceNetwork(3, 2, 5, inference="dks").double()
    gen = torch.Generator().manual_seed(0)
    summary = torch.randn(2, 4, 5, generator=gen, dtype=DTYPE)
    noise = torch.randn(3, 2, 4, 2, generator=gen, dtype=DTYPE)
    draw = net.sample(summary, noise)
    z_prev = net.z_q_0.expand(3, 2, 2)
    for t in range(4):  # the combiner's equations, one step at a time
        loc, scale = net.combiner(z_prev, summary[:, t])
        torch.testing.assert_close(draw.loc[:, :, t], loc)
        torch.testing.assert_close(draw.scale[:, :, t], scale)
        z_prev = loc + scale * noise[:, :, t]
        torch.testing.assert_close(draw.z[:, :, t], z_prev)


def test_reverse_within_lengths_is_a_per_sequence_flip_and_an_involution():
    x = torch.arange(2 * 5, dtype=DTYPE).reshape(2, 5, 1)
    lengths = torch.tensor([5, 3])
    reversed_ = reverse_within_lengths(x, lengths)
    assert reversed_[:, :, 0].tolist() == [[4, 3, 2, 1, 0], [7, 6, 5, 8, 9]]
    assert torch.equal(reverse_within_lengths(reversed_, lengths), x)


@pytest.mark.parametrize("inference,iafs", [(name, 0) for name in sorted(INFERENCE_NETWORKS)] + [("dks", 1)])
def test_gradients_reach_every_parameter(inference, iafs):
    torch.manual_seed(0)
    module = DeepMarkovModule(
        3, Emitter(4, 3, 6, "studentt"), latent_dim=4, transition_dim=5, rnn_dim=6, inference=inference,
        iafs=iafs, iaf_dim=5, observe_mask=True, scaling=True,
    ).double()
    y, mask = torch.randn(3, 7, 3, dtype=DTYPE), torch.ones(3, 7, 3, dtype=torch.bool)
    mask[0, 5:] = False
    mask[2, 1, 1] = False
    loss = module.loss(SequenceBatch(values=torch.where(mask, y, torch.nan), mask=mask), kl_weight=0.5)
    loss.backward()
    missing = [n for n, p in module.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert missing == []
    assert torch.isfinite(loss)


def test_gated_transition_starts_as_a_random_walk_in_the_mean_share():
    torch.manual_seed(0)
    transition = GatedTransition(3, 4)
    assert torch.equal(transition.linear_loc.weight, torch.eye(3))
    z = torch.randn(5, 3)
    loc, scale = transition(z)
    gate = torch.sigmoid(transition.gate_out(torch.relu(transition.gate_hidden(z))))
    proposed = transition.proposed_out(torch.relu(transition.proposed_hidden(z)))
    torch.testing.assert_close(loc, (1 - gate) * z + gate * proposed)
    assert torch.all(scale > 0)
    with pytest.raises(ValueError, match="latent_dim"):
        GatedTransition(0, 4)


# ---------------------------------------------------------------------------------- the estimator
def _monthly_series(n=60, seed=0):
    rng = np.random.default_rng(seed)
    index = pd.date_range("2001-01-01", periods=n, freq="MS")
    values = 50 + 10 * np.sin(np.arange(n) / 2.0) + rng.normal(size=n)
    values[17] = np.nan
    return pd.Series(values, index=index, name="y")


SMALL = dict(latent_dim=3, hidden_dim=8, emission_dim=8, transition_dim=8, window_length=16, batch_size=8,
             max_epochs=3, progress=False)


def test_fit_is_repeatable_and_forecasts_have_the_contract_shapes(tmp_path):
    y = _monthly_series()
    first = DeepMarkovModel(**SMALL, random_state=3).fit(y)
    second = DeepMarkovModel(**SMALL, random_state=3).fit(y)
    for a, b in zip(first.module_.state_dict().values(), second.module_.state_dict().values()):
        assert torch.equal(a, b)
    assert [h["train_loss"] for h in first.training_history_] == [h["train_loss"] for h in second.training_history_]
    assert first.observe_mask_  # the NaN inside the series makes the guide read the mask
    frame = first.predict(5)
    assert list(frame.columns) == ["mean", "q0.05", "q0.5", "q0.95"]
    assert frame.index[0] == y.index[-1] + pd.offsets.MonthBegin()
    assert first.sample(5, n_samples=7).shape == (7, 5, 1)
    np.testing.assert_array_equal(first.sample(4), second.sample(4))

    path = tmp_path / "dmm.pt"
    first.save(path)
    loaded = tsgen.load(path)
    np.testing.assert_array_equal(loaded.sample(4), first.sample(4))
    assert loaded.log_likelihood(y) == first.log_likelihood(y)


def test_log_likelihood_methods_and_per_step_decomposition():
    y = _monthly_series()
    model = DeepMarkovModel(**SMALL, random_state=0).fit(y)
    iwae = model.log_likelihood(y, n_samples=50)
    per_step = model.log_likelihood(y, per_step=True, n_samples=50)
    elbo = model.log_likelihood(y, method="elbo", n_samples=50)
    assert isinstance(per_step, pd.Series) and per_step.index.equals(y.index)
    assert np.isnan(per_step.iloc[17]) and per_step.isna().equals(_unscored_steps(model, y))
    assert per_step.sum() == pytest.approx(iwae, rel=1e-9)
    assert elbo < iwae
    assert model.score(y) == pytest.approx(model.log_likelihood(y) / 59, rel=1e-9)
    with pytest.raises(ValueError, match="method"):
        model.log_likelihood(y, method="exact")
    with pytest.raises(ValueError, match="n_samples"):
        model.log_likelihood(y, n_samples=0)


def test_bad_arguments_are_named():
    y = _monthly_series()
    with pytest.raises(ValueError, match="inference"):
        DeepMarkovModel(**{**SMALL, "inference": "nope"}).fit(y)
    with pytest.raises(ValueError, match="latent_dim"):
        DeepMarkovModel(**{**SMALL, "latent_dim": 0}).fit(y)
    with pytest.raises(ValueError, match="emission"):
        DeepMarkovModel(**{**SMALL, "emission": "gamma"}).fit(y)


def _jsb(split):
    from pathlib import Path

    data = np.load(Path(__file__).resolve().parents[1] / "datasets" / "jsb_chorales.npz")
    rolls, lengths = data[f"{split}_rolls"], data[f"{split}_lengths"]
    return [s.astype(np.float64) for s in np.split(rolls, np.cumsum(lengths)[:-1])]


def test_short_jsb_training_beats_the_independent_bernoulli_baseline():
    train_seqs, valid_seqs = _jsb("train"), _jsb("valid")[:30]
    frequencies = np.clip(np.concatenate(train_seqs).mean(0), 1e-4, 1 - 1e-4)
    valid = np.concatenate(valid_seqs)
    baseline = -(valid * np.log(frequencies) + (1 - valid) * np.log1p(-frequencies)).sum() / len(valid)
    # short chunks keep the guide's sequential loop short, so a few seconds of training suffice;
    # KL annealing from 0 gets the latent used before the KL is charged in full
    chunks = [s[i : i + 8] for s in train_seqs for i in range(0, len(s) - 7, 8)]
    model = DeepMarkovModel(
        emission="bernoulli", latent_dim=16, hidden_dim=48, emission_dim=48, transition_dim=48,
        max_epochs=8, batch_size=32, learning_rate=1e-2, kl_annealing_epochs=5, patience=None,
        random_state=0, progress=False,
    ).fit(chunks)
    assert model.training_history_[-1]["kl_weight"] == 1.0
    # the ELBO is a lower bound, so its NLL is an upper bound on the model's true NLL
    nll_elbo = -model.log_likelihood(valid_seqs, method="elbo", n_samples=1) / len(valid)
    assert nll_elbo < baseline - 0.5, (nll_elbo, baseline)

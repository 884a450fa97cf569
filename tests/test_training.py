"""The training loop, its configuration, sequence batches, windows and the model protocol's sampler."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torch.distributions import Independent, Normal

from tsgen.data.windows import cut_windows, last_steps
from tsgen.exceptions import TrainingDivergedError, TrainingDivergenceWarning
from tsgen.protocol import Context, SequentialModel, ancestral_sample, expand_state
from tsgen.training import (
    SequenceBatch,
    TrainingConfig,
    mean_abs_scale,
    resolve_device,
    seeded_from,
    split_validation,
    train,
)


def regression_data(n=40, steps=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    covariates = torch.randn(n, steps, 2, generator=g)
    values = covariates @ torch.tensor([[1.5], [-2.0]]) + 0.1 * torch.randn(n, steps, 1, generator=g)
    return SequenceBatch(values, torch.ones_like(values, dtype=torch.bool), covariates)


def linear_loss(module):
    return lambda batch, kl_weight: ((module(batch.covariates) - batch.values) ** 2).mean()


def quiet(**kwargs):
    return TrainingConfig(progress=False, **kwargs)


# ------------------------------------------------------------------ config
@pytest.mark.parametrize("field, value", [
    ("max_epochs", 0), ("batch_size", 1.5), ("learning_rate", -1.0), ("grad_clip", 0.0),
    ("validation_fraction", 1.0), ("patience", 0), ("kl_annealing_start", 2.0), ("lr_decay", 0.0),
    ("progress", "yes"), ("kl_annealing_epochs", -1), ("max_seconds", 0.0),
])
def test_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"`{field}` must be"):
        TrainingConfig(**{field: value})


def test_kl_annealing_schedule_values_and_history():
    config = quiet(max_epochs=6, kl_annealing_epochs=4, kl_annealing_start=0.2, patience=None)
    assert [config.kl_weight(e) for e in range(6)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0])
    seen = []
    module = nn.Linear(2, 1)
    loss = linear_loss(module)

    def recording_loss(batch, kl_weight):
        seen.append(kl_weight)
        return loss(batch, kl_weight)

    history = train(module, recording_loss, regression_data(n=8), config=config,
                    generator=torch.Generator().manual_seed(0))
    assert [h["kl_weight"] for h in history] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0])
    assert seen == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0])  # one batch per epoch
    assert quiet().kl_weight(0) == 1.0


def test_learning_rate_decays_per_epoch_and_history_records_it():
    module = nn.Linear(2, 1)
    history = train(module, linear_loss(module), regression_data(), config=quiet(max_epochs=4, lr_decay=0.5,
                    learning_rate=0.1), generator=torch.Generator().manual_seed(0))
    assert [h["lr"] for h in history] == pytest.approx([0.1, 0.05, 0.025, 0.0125])
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert all(h["valid_loss"] is None and h["seconds"] >= 0 for h in history)


def test_training_fits_a_linear_regression():
    module = nn.Linear(2, 1)
    history = train(module, linear_loss(module), regression_data(n=64), config=quiet(max_epochs=150,
                    learning_rate=0.05, batch_size=16), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(module.weight.detach(), torch.tensor([[1.5, -2.0]]), atol=0.05, rtol=0)
    assert history[-1]["train_loss"] < 0.05 and not module.training


def test_nan_loss_raises_naming_epoch_and_batch():
    module = nn.Linear(2, 1)
    loss = linear_loss(module)
    calls = {"n": 0}

    def exploding(batch, kl_weight):
        calls["n"] += 1
        value = loss(batch, kl_weight)
        return value * float("nan") if calls["n"] == 5 else value  # epoch 2 (3 batches/epoch), batch 2

    with pytest.raises(TrainingDivergedError, match="epoch 2, batch 2"):
        train(module, exploding, regression_data(n=30), config=quiet(max_epochs=3, batch_size=10),
              generator=torch.Generator().manual_seed(0))
    with pytest.raises(TrainingDivergedError, match="inf at epoch 1, batch 1"):
        train(module, lambda b, w: loss(b, w) + math.inf, regression_data(n=30), config=quiet(max_epochs=3),
              generator=torch.Generator().manual_seed(0))


class Scalar(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))


def test_early_stopping_restores_best_weights():
    # training pushes w up by ~lr per Adam step; validation prefers w = 0.35,
    # reached around epoch 3-4, after which the validation loss rises
    module = Scalar()
    visited = []

    def loss(batch, kl_weight):
        if module.training:
            return -module.w * batch.values.shape[0]
        visited.append(float(module.w.detach()))
        return (module.w - 0.35) ** 2

    data = SequenceBatch(torch.zeros(4, 1, 1), torch.ones(4, 1, 1, dtype=torch.bool))
    valid = SequenceBatch(torch.zeros(1, 1, 1), torch.ones(1, 1, 1, dtype=torch.bool))
    history = train(module, loss, data, valid, config=quiet(max_epochs=50, batch_size=2, learning_rate=0.05,
                    patience=3), generator=torch.Generator().manual_seed(0))
    valid_losses = [h["valid_loss"] for h in history]
    best = int(np.argmin(valid_losses))
    assert len(history) == best + 1 + 3 < 50  # stopped 3 epochs after the best
    assert float(module.w.detach()) == visited[best]
    assert valid_losses[best] == pytest.approx((visited[best] - 0.35) ** 2)


def test_without_validation_annealing_epochs_are_not_best_weight_candidates():
    # Adam pushes w up by ~lr per epoch; the reported loss is 10 * kl_weight + (w - 0.35)^2,
    # lowest while the KL weight is small, but those epochs are not the objective: the
    # restored weights come from the best full-weight epoch
    module = Scalar()
    seen = []

    def loss(batch, kl_weight):
        w = module.w
        seen.append(float(w.detach()))
        return kl_weight * 10.0 + (w.detach() - 0.35) ** 2 - w + w.detach()

    data = SequenceBatch(torch.zeros(2, 1, 1), torch.ones(2, 1, 1, dtype=torch.bool))
    history = train(module, loss, data, config=quiet(max_epochs=20, batch_size=2, learning_rate=0.1, patience=2,
                    kl_annealing_epochs=3), generator=torch.Generator().manual_seed(0))
    full = [i for i, h in enumerate(history) if h["kl_weight"] == 1.0]
    best = min(full, key=lambda i: history[i]["train_loss"])
    assert len(full) == 3 and best == full[0]  # annealing epochs did not count towards patience
    assert min(h["train_loss"] for h in history) < history[best]["train_loss"]
    # one batch per epoch: the weights after epoch `best` are what epoch `best + 1` saw
    assert float(module.w.detach()) == seen[best + 1]


def test_max_seconds_ends_training_after_the_epoch_that_exhausts_it():
    module = nn.Linear(2, 1)
    history = train(module, linear_loss(module), regression_data(), config=quiet(max_epochs=1000,
                    max_seconds=1e-9), generator=torch.Generator().manual_seed(0))
    assert len(history) == 1


def test_validation_fraction_holds_out_sequences():
    data = regression_data(n=10)
    train_part, valid_part = split_validation(data, 0.3, torch.Generator().manual_seed(0))
    assert len(train_part) == 7 and len(valid_part) == 3
    rows = {tuple(r.flatten().tolist()) for r in torch.cat([train_part.values, valid_part.values])}
    assert rows == {tuple(r.flatten().tolist()) for r in data.values}
    module = nn.Linear(2, 1)
    history = train(module, linear_loss(module), data, config=quiet(max_epochs=2, validation_fraction=0.3),
                    generator=torch.Generator().manual_seed(0))
    assert all(h["valid_loss"] is not None for h in history)


def test_progress_false_prints_nothing_and_true_shows_a_bar(capsys):
    module = nn.Linear(2, 1)
    train(module, linear_loss(module), regression_data(), config=quiet(max_epochs=3),
          generator=torch.Generator().manual_seed(0))
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    train(module, linear_loss(module), regression_data(), config=TrainingConfig(max_epochs=3, progress=True),
          generator=torch.Generator().manual_seed(0))
    assert "training" in capsys.readouterr().err


def test_training_is_bit_for_bit_repeatable_and_leaves_global_rng_alone():
    def run(seed):
        with seeded_from(torch.Generator().manual_seed(123)):
            module = nn.Sequential(nn.Linear(2, 8), nn.Dropout(0.5), nn.Linear(8, 1))
        def loss(batch, kl_weight):
            noise = torch.randn(batch.values.shape)  # global RNG draws inside the loop
            return ((module(batch.covariates) - batch.values + 0.01 * noise) ** 2).mean()
        train(module, loss, regression_data(), config=quiet(max_epochs=3, batch_size=8, validation_fraction=0.2),
              generator=torch.Generator().manual_seed(seed))
        return module.state_dict()

    before = torch.get_rng_state()
    first, second, other = run(0), run(0), run(1)
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="`device` must be"):
        resolve_device("tpu")
    with pytest.raises(TypeError, match="`device` must be"):
        resolve_device(0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")


# ----------------------------------------------------------------- batches
def test_sequence_batch_select_trims_padding_and_validates():
    values = torch.randn(3, 6, 2)
    lengths = torch.tensor([6, 2, 4])
    mask = (torch.arange(6)[None, :, None] < lengths[:, None, None]).expand(3, 6, 2)
    batch = SequenceBatch(values, mask, torch.randn(3, 6, 1), lengths)
    picked = batch.select(torch.tensor([1, 2]))
    assert picked.values.shape == (2, 4, 2) and picked.covariates.shape == (2, 4, 1)
    assert torch.equal(picked.values, values[1:, :4]) and torch.equal(picked.lengths, lengths[1:])
    with pytest.raises(ValueError, match="`mask` must be a bool tensor"):
        SequenceBatch(values, mask.float())
    with pytest.raises(ValueError, match="`covariates` must have shape"):
        SequenceBatch(values, mask, torch.randn(3, 5, 1))


def test_mean_abs_scale_over_observed_values():
    values = torch.tensor([[[2.0, 0.0], [-4.0, 0.0], [float("nan"), 0.0]]])
    mask = ~torch.isnan(values)
    torch.testing.assert_close(mean_abs_scale(values, mask), torch.tensor([[3.0, 1.0]]))


# ----------------------------------------------------------------- windows
def test_cut_windows_matches_a_loop():
    rng = np.random.default_rng(0)
    lengths = torch.tensor([9, 3, 6])
    values = torch.full((3, 9, 2), float("nan"), dtype=torch.float64)
    for i, n in enumerate(lengths.tolist()):
        values[i, :n] = torch.from_numpy(rng.normal(size=(n, 2)))
    values[0, 4, 1] = float("nan")  # a missing value inside
    mask = ~torch.isnan(values)
    covariates = torch.arange(3 * 9, dtype=torch.float64).reshape(3, 9, 1)
    win, win_mask, win_lengths, win_cov = cut_windows(values, mask, lengths, 4, 2, covariates)
    expected = []
    for i, n in enumerate(lengths.tolist()):
        starts = list(range(max(n - 4, 0), -1, -2))[::-1]
        expected += [(i, s) for s in starts]
    assert len(win) == len(expected)
    for w, (i, s) in enumerate(expected):
        n = min(4, lengths[i] - s)
        assert win_lengths[w] == n
        torch.testing.assert_close(win[w, :n], values[i, s : s + n], equal_nan=True)
        assert torch.equal(win_mask[w, :n], mask[i, s : s + n]) and not win_mask[w, n:].any()
        assert torch.isnan(win[w, n:]).all()
        assert torch.equal(win_cov[w, :n], covariates[i, s : s + n])
    assert (win_lengths[torch.tensor([i for i, _ in expected]) == 0] == 4).all()


@given(
    lengths=st.lists(st.integers(1, 12), min_size=1, max_size=4),
    window_length=st.integers(2, 8),
    stride=st.integers(1, 4),
)
def test_windows_cover_each_series_end_and_keep_observed_values(lengths, window_length, stride):
    lengths = torch.tensor(lengths)
    steps = int(lengths.max())
    values = torch.arange(len(lengths) * steps, dtype=torch.float64).reshape(-1, steps, 1)
    mask = torch.arange(steps)[None, :, None] < lengths[:, None, None]
    values = torch.where(mask, values, torch.tensor(float("nan"), dtype=torch.float64))
    windows, window_mask, window_lengths, _ = cut_windows(values, mask, lengths, window_length, stride)
    expected = sum(max(n - window_length, 0) // stride + 1 for n in lengths.tolist())
    assert len(windows) == expected and windows.shape[1] == min(window_length, steps)
    assert torch.equal(window_mask.sum((1, 2)), window_lengths) and (window_lengths >= 1).all()
    assert not torch.isnan(windows[window_mask]).any() and torch.isnan(windows[~window_mask]).all()
    # values are the series' own: consecutive within a window, and every series' last value appears
    observed = windows[..., 0]
    for w in range(len(windows)):
        n = int(window_lengths[w])
        assert torch.equal(observed[w, :n] - observed[w, 0], torch.arange(n, dtype=torch.float64))
    last_values = {float(values[i, n - 1, 0]) for i, n in enumerate(lengths.tolist())}
    assert last_values <= set(observed[window_mask[..., 0]].tolist())


def test_last_steps_takes_each_series_end():
    lengths = torch.tensor([5, 2])
    values = torch.arange(10, dtype=torch.float64).reshape(2, 5, 1)
    mask = torch.arange(5)[None, :, None] < lengths[:, None, None]
    context, context_mask, context_lengths, starts = last_steps(values, mask, lengths, 3)
    assert context_lengths.tolist() == [3, 2] and starts.tolist() == [2, 0]
    assert context[0, :, 0].tolist() == [2.0, 3.0, 4.0]
    assert context[1, :2, 0].tolist() == [5.0, 6.0] and torch.isnan(context[1, 2]).all()
    assert context_mask[:, :, 0].tolist() == [[True, True, True], [True, True, False]]


# ---------------------------------------------------------------- protocol
class GaussianAR1(SequentialModel):
    """x_t = phi x_{t-1} + eps_t: state = the mean of the next value."""

    def __init__(self, phi):
        super().__init__()
        self.phi = phi

    def transition(self, state, x_prev, context_t):
        return self.phi * x_prev + context_t.get("covariates", 0.0), None

    def emission(self, state, context_t):
        return Independent(Normal(state, 1.0), 1)


def ar1_paths(phi, state, horizon, n, generator, covariates=None, x_prev=None):
    """``n`` paths from ``state`` ``(B, 1)`` by the protocol's ancestral sampler, seeded by ``generator``."""
    context = Context({} if covariates is None else {"covariates": covariates})
    with seeded_from(generator):
        return ancestral_sample(GaussianAR1(phi), expand_state(state, n), context, 0, horizon,
                                x_prev.expand(n, *x_prev.shape))


def test_ancestral_sample_matches_ar1_moments():
    phi, n = 0.8, 20_000
    x0 = torch.tensor([[2.0], [-1.0]])
    draws = ar1_paths(phi, torch.zeros(2, 1), 3, n, torch.Generator().manual_seed(0), x_prev=x0)
    assert draws.shape == (n, 2, 3, 1)
    for k in range(1, 4):
        mean = phi**k * x0[:, 0]
        var = sum(phi ** (2 * j) for j in range(k))
        got = draws[:, :, k - 1, 0]
        assert (got.mean(0) - mean).abs().max() < 4 * math.sqrt(var / n)
        assert (got.var(0) / var - 1).abs().max() < 4 * math.sqrt(2 / n)
    again = ar1_paths(phi, torch.zeros(2, 1), 3, n, torch.Generator().manual_seed(0), x_prev=x0)
    assert torch.equal(draws, again)


def test_ancestral_sample_feeds_covariates_step_by_step():
    covariates = torch.tensor([[[10.0], [20.0]]])  # (batch 1, horizon 2, K 1)
    draws = ar1_paths(0.0, torch.zeros(1, 1), 2, 4000, torch.Generator().manual_seed(1),
                      covariates=covariates, x_prev=torch.zeros(1, 1))
    assert draws[:, 0, :, 0].mean(0).sub(torch.tensor([10.0, 20.0])).abs().max() < 0.1


def test_expand_state_adds_a_sample_dimension_to_dataclass_fields():
    from dataclasses import dataclass

    @dataclass
    class State:
        h: torch.Tensor
        c: torch.Tensor | None

    state = expand_state(State(torch.randn(2, 3, 4), None), 5)
    assert state.h.shape == (5, 2, 3, 4) and state.c is None


# ------------------------------------------------------------------ divergence (issue 9 §2)
def test_nan_gradient_and_non_finite_parameter_raise_naming_the_epoch():
    module = nn.Linear(2, 1)
    loss = linear_loss(module)
    calls = {"n": 0}

    def nan_gradient(batch, kl_weight):  # finite loss, NaN gradient, on the 4th batch
        calls["n"] += 1
        value = loss(batch, kl_weight)
        # where() hides sqrt of a negative number from the value but not from the gradient
        trap = torch.where(torch.zeros(1, dtype=torch.bool), torch.sqrt(module.bias - 1e6), torch.zeros(1))
        return value + trap.sum() if calls["n"] == 4 else value

    with pytest.raises(TrainingDivergedError, match="gradient became nan at epoch 2, batch 1"):
        train(module, nan_gradient, regression_data(n=30), config=quiet(max_epochs=3, batch_size=10),
              generator=torch.Generator().manual_seed(0))

    huge = nn.Linear(2, 1)
    with torch.no_grad():
        huge.bias.fill_(3.3e38)
    with pytest.raises(TrainingDivergedError, match="parameter became NaN or infinite .* epoch 1, batch 1"):
        train(huge, lambda b, w: -huge.bias.sum(), regression_data(n=10),
              config=quiet(max_epochs=2, learning_rate=3e37, grad_clip=None),
              generator=torch.Generator().manual_seed(0))


def test_an_exploding_finite_loss_warns_once_naming_the_epochs():
    module = nn.Linear(2, 1)
    loss = linear_loss(module)
    calls = {"n": 0}

    def exploding(batch, kl_weight):  # 3 batches per epoch: from epoch 4 on the loss is ~1e15
        calls["n"] += 1
        value = loss(batch, kl_weight)
        return value + 1e15 if calls["n"] > 9 else value

    with pytest.warns(TrainingDivergenceWarning, match=r"exploded: 1e\+15 at epoch 4 against its best .* at epoch 3") \
            as record:
        train(module, exploding, regression_data(n=30), config=quiet(max_epochs=6, batch_size=10),
              generator=torch.Generator().manual_seed(0))
    assert len([w for w in record if w.category is TrainingDivergenceWarning]) == 1


def test_ordinary_training_and_kl_annealing_do_not_warn():
    import warnings

    module = nn.Linear(2, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrainingDivergenceWarning)
        train(module, linear_loss(module), regression_data(), config=quiet(max_epochs=20, learning_rate=0.05),
              generator=torch.Generator().manual_seed(0))
        # the annealed objective rises with the KL weight: not an explosion
        train(module, lambda b, w: linear_loss(module)(b, w) + 50.0 * w, regression_data(),
              config=quiet(max_epochs=6, kl_annealing_epochs=5), generator=torch.Generator().manual_seed(0))


def test_distribution_argument_checks_are_restored_after_training():
    before = torch.distributions.Distribution._validate_args
    module = nn.Linear(2, 1)
    with pytest.raises(TrainingDivergedError):
        train(module, lambda b, w: Normal(module.bias * float("nan"), 1.0).log_prob(torch.zeros(1)).sum(),
              regression_data(n=10), config=quiet(max_epochs=1), generator=torch.Generator().manual_seed(0))
    assert torch.distributions.Distribution._validate_args == before


def test_deep_models_diverging_at_a_huge_learning_rate_raise_or_warn():
    import pandas as pd

    import tsgen

    rng = np.random.default_rng(0)
    y = pd.Series(10 + 0.3 * rng.normal(size=120).cumsum())
    with pytest.raises(tsgen.TrainingDivergedError, match="at epoch 1, batch"):
        tsgen.DeepMarkovModel(max_epochs=3, learning_rate=10, progress=False, random_state=0).fit(y)
    with pytest.warns(tsgen.TrainingDivergenceWarning, match="at epoch 2"):
        tsgen.RNNForecaster(max_epochs=3, learning_rate=10, progress=False, random_state=0).fit(y)

"""Persistent particle Gibbs chains (Zheng et al. 2017, Algorithm 1): the training loop numbers its sequences
(``SequenceBatch.index``), :class:`tsgen.inference.smc.pmcmc.PathStore` keeps each one's last draw under that
identity, and the LSTM-SSM's PGAS draw continues each sequence's chain from it."""
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from test_lstm_ssm import _posterior_mean_by_importance, sharp_posterior

import tsgen
from tsgen.inference.smc.pmcmc import PathStore
from tsgen.models.lstm_ssm import LSTMSSM, LSTMSSMModule
from tsgen.training import SequenceBatch, TrainingConfig, train


def _batch(seed=0, n=6, steps=12):
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(n, steps, 1, generator=generator)
    return values, torch.ones_like(values, dtype=torch.bool)


def test_the_store_returns_each_sequence_its_own_path_and_refuses_other_data():
    values, mask = _batch()
    store, prints = PathStore(), PathStore.fingerprint(values, mask)
    paths = torch.randn(6, 12, 2)
    index = torch.tensor([7, 2, 0, 9, 4, 3])
    store.keep(index, paths, prints)
    order = torch.tensor([3, 0, 5, 1])  # another minibatch: some of the rows, shuffled
    got, held = store.recall(index[order], prints[order], 12, 2)
    assert torch.equal(got, paths[order]) and (held == 12).all()
    # an identity never stored, and a stored identity on other observations, start new chains
    other = PathStore.fingerprint(values + 1, mask)
    got, held = store.recall(torch.tensor([5, 7]), torch.stack([prints[0], other[0]]), 12, 2)
    assert (held == 0).all() and (got == 0).all()
    # the same sequence cut to a shorter or longer minibatch: padding prints nothing, steps held say how many
    padded = torch.cat([values, torch.zeros(6, 4, 1)], 1), torch.cat([mask, torch.zeros(6, 4, 1, dtype=torch.bool)], 1)
    got, held = store.recall(index, PathStore.fingerprint(*padded), 16, 2)
    assert (held == 12).all() and torch.equal(got[:, :12], paths) and (got[:, 12:] == 0).all()
    got, held = store.recall(index, prints, 8, 2)
    assert (held == 8).all() and torch.equal(got, paths[:, :8])
    with pytest.raises(ValueError, match="index"):
        store.keep(torch.tensor([1, 1, 2, 3, 4, 5]), paths, prints)
    store.clear()
    assert len(store) == 0


def test_the_training_loop_keeps_each_window_s_identity_across_shuffled_epochs():
    values, mask = _batch(n=10)
    module = torch.nn.Linear(1, 1)
    seen, validation = {}, set()

    def loss_fn(batch, kl_weight):
        for i, row in zip(batch.index.tolist(), batch.values):
            assert torch.equal(seen.setdefault(i, row), row)  # the same identity always carries the same window
            if not module.training:
                validation.add(i)
        return module(batch.values).square().mean()

    config = TrainingConfig(max_epochs=3, batch_size=3, validation_fraction=0.3, progress=False)
    data = SequenceBatch(values=values, mask=mask)
    train(module, loss_fn, data, config=config, generator=torch.Generator().manual_seed(0))
    assert sorted(seen) == list(range(10)) and len(validation) == 3
    assert data.index is None  # the caller's batch is not modified
    for i, row in seen.items():
        assert torch.equal(row, values[i])
    # validation data of its own is numbered after the training rows
    seen.clear()
    validation.clear()
    valid = SequenceBatch(values=values[:4] + 5, mask=mask[:4])
    train(module, loss_fn, data, valid, config=config, generator=torch.Generator().manual_seed(0))
    assert sorted(seen) == list(range(14)) and validation == {10, 11, 12, 13}


def test_a_visit_continues_the_stored_path_and_a_first_visit_is_the_filter_s_draw():
    values, mask = _batch(steps=10)
    module = LSTMSSMModule(1, 2, 6, 6, scaling=False, ancestor_lag=3)
    index = torch.arange(6) + 20
    with torch.no_grad():
        torch.manual_seed(3)
        first = module.posterior_draw(values, mask, 4, index=index)
        torch.manual_seed(3)
        assert torch.equal(first, module.posterior_draw(values, mask, 4))  # a first visit: filter, then sweeps
        order = torch.tensor([4, 1, 5, 0, 3, 2])
        kept = module.posterior_draw(values[order], mask[order], 4, sweeps=0, index=index[order])
        assert torch.equal(kept, first[order])  # the path left by the last visit, row by row
        moved = module.posterior_draw(values[order], mask[order], 4, sweeps=1, index=index[order])
        assert (moved != kept).any(-1).float().mean() > 0.3  # the chain moves from there
        # a row under a known identity but with other data starts its own chain instead of taking that path
        other = values.clone()
        other[0] += 3
        again = module.posterior_draw(other, mask, 4, sweeps=0, index=index)
        assert torch.equal(again[1:], moved[torch.argsort(order)][1:]) and not torch.equal(again[0], moved[3])


def test_a_stored_path_shorter_than_the_minibatch_is_extended_by_the_prior():
    values, mask = _batch(steps=14)
    mask[:, 9:] = False  # every sequence ends after 9 steps: the rest is padding
    module = LSTMSSMModule(1, 2, 6, 6, scaling=False, ancestor_lag=3)
    index = torch.arange(6)
    with torch.no_grad():
        short = module.posterior_draw(values[:, :10], mask[:, :10], 4, index=index)
        longer = module.posterior_draw(values, mask, 4, sweeps=0, index=index)
    assert torch.equal(longer[:, :10], short) and torch.isfinite(longer).all()
    assert (longer[:, 10:] != 0).all()


def test_persistent_chains_leave_the_posterior_invariant():
    """Chains continued through the store (one sweep a visit, the rows reshuffled between visits) agree
    with importance sampling on E[z_t | x] (4 Monte Carlo s.e.), as the sweep itself does."""
    chains = 400
    module, x, values, mask = sharp_posterior(chains)
    with torch.no_grad():
        for _ in range(30):
            order = torch.randperm(chains)
            module.posterior_draw(values, mask, 4, index=order)
        draws, held = module.chains.recall(torch.arange(chains), PathStore.fingerprint(values, mask), 3, 1,
                                           torch.float64)
        exact = _posterior_mean_by_importance(module, x, 200_000)
    assert (held == 3).all()
    draws = draws[..., 0]
    se = draws.std(0) / math.sqrt(chains)
    assert ((draws.mean(0) - exact).abs() <= 4 * se + 0.01).all(), (draws.mean(0), exact, se)


def _series(n=60):
    t = np.arange(n)
    values = 10 + 2 * np.sin(2 * np.pi * t / 12) + 0.3 * np.random.default_rng(0).normal(size=n)
    return pd.Series(values, index=pd.period_range("2010-01", periods=n, freq="M"))


def test_a_fit_runs_the_chains_and_leaves_none_behind():
    calls = []
    original = LSTMSSMModule.posterior_draw

    def spy(self, values, mask, n_particles, sweeps=None, context=None, index=None):
        calls.append((index is not None, len(self.chains)))
        return original(self, values, mask, n_particles, sweeps, context, index)

    settings = {**LSTMSSM.get_test_params()[0], "max_epochs": 3}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a short series, a noisy loss: not what this checks
        LSTMSSMModule.posterior_draw = spy
        try:
            model = LSTMSSM(**settings).fit(_series())
        finally:
            LSTMSSMModule.posterior_draw = original
    assert all(named for named, _ in calls) and max(stored for _, stored in calls) > 0
    assert len(model.module_.chains) == 0


def test_persistent_chains_must_be_a_bool():
    with pytest.raises(TypeError, match="persistent_chains"), warnings.catch_warnings():
        warnings.simplefilter("ignore", tsgen.InsufficientDataWarning)
        LSTMSSM(**{**LSTMSSM.get_test_params()[0], "persistent_chains": "yes"}).fit(_series(40))


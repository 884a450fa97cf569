"""The DMM at the paper's sizes (z 100, guide ReLU RNN 600, batch 20) trains on JSB
Chorales with the default learning rate (issue 9, section 1.8).

At Adam's 1e-3 the 600-wide recurrent matrix used to gain up to 0.6 per step,
the guide's summaries grew geometrically along each chorale and the gradient's
norm overflowed float32 at the fifth minibatch; its learning rate is now scaled
by 64 / 600 (tsgen.components.inference_networks)."""
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import tsgen
from tsgen.components.inference_networks import StructuredInferenceNetwork
from tsgen.training.loop import parameter_groups

PAPER_SIZES = dict(emission="bernoulli", latent_dim=100, hidden_dim=600, batch_size=20)


def jsb_train(count):
    data = np.load(Path(__file__).resolve().parents[1] / "datasets" / "jsb_chorales.npz")
    rolls, lengths = data["train_rolls"], data["train_lengths"]
    return [s.astype(np.float64) for s in np.split(rolls, np.cumsum(lengths)[:-1])[:count]]


def test_paper_sizes_train_on_jsb_with_the_default_learning_rate():
    # 60 chorales, 2 epochs: 6 minibatches (the unscaled rate diverged at the fifth)
    model = tsgen.DeepMarkovModel(**PAPER_SIZES, max_epochs=2, progress=False, random_state=0)
    assert model.learning_rate == 1e-3  # the default, untouched
    model.fit(jsb_train(60))
    losses = [h["train_loss"] for h in model.training_history_]
    assert len(losses) == 2 and np.isfinite(losses).all()
    assert losses[1] < losses[0]
    assert all(h["lr"] == 1e-3 for h in model.training_history_)  # the history reports the full rate
    # the mechanism: the recurrence's gain on non-negative states (the all-ones direction),
    # ~0.58 at initialisation, stays below 1 (the unscaled rate took it to 2.1 in 10 minibatches from another seed)
    weight = model.module_.guide.rnns["right"].weight_hh_l0.detach().double()
    assert float(torch.linalg.vector_norm(weight.sum(1))) / 600**0.5 < 1.0


def test_only_wide_relu_recurrent_matrices_get_a_smaller_rate():
    guide = StructuredInferenceNetwork(88, 100, 600, inference="st-lr", num_layers=2)
    scales = guide.learning_rate_scales()
    expected = {id(getattr(rnn, f"weight_hh_l{k}")) for rnn in guide.rnns.values() for k in range(2)}
    assert {id(p) for p in scales} == expected and set(scales.values()) == {64 / 600}
    for rnn_type in ("gru", "lstm"):  # gated cells bound their states
        assert StructuredInferenceNetwork(88, 100, 600, rnn_type=rnn_type).learning_rate_scales() == {}
    assert StructuredInferenceNetwork(88, 16, 64).learning_rate_scales() == {}  # the default width: unchanged


def test_parameter_groups_put_the_full_rate_first_and_keep_every_parameter_once():
    module = nn.ModuleDict({"guide": StructuredInferenceNetwork(4, 3, 128), "head": nn.Linear(3, 4)})
    parameters = list(module.parameters())
    groups = parameter_groups(module, parameters, 1e-3)
    assert [g["lr"] for g in groups] == [1e-3, pytest.approx(1e-3 * 64 / 128)]
    assert groups[1]["params"] == [module["guide"].rnns["right"].weight_hh_l0]
    grouped = [p for g in groups for p in g["params"]]
    assert len(grouped) == len(parameters) and {id(p) for p in grouped} == {id(p) for p in parameters}
    small = nn.ModuleDict({"guide": StructuredInferenceNetwork(4, 3, 8), "head": nn.Linear(3, 4)})
    (group,) = parameter_groups(small, list(small.parameters()), 1e-3)  # as a plain Adam(parameters)
    assert group["params"] == list(small.parameters()) and group["lr"] == 1e-3

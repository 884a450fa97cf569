"""Latent models learn quickly by default (issue 11): the KL warm-up every latent estimator starts with.

Without a warm-up the DMM's posterior collapsed onto its prior within the
first epochs on JSB Chorales and the model ended at the independent-Bernoulli
baseline (the full benchmark is ``benchmarks/polyphonic.py --epochs 30``);
these tests check the mechanism cheaply: how ``kl_annealing_epochs="auto"``
resolves, that every latent estimator defaults to it, and that a fit trains
its first epochs under the ramp (the ELBO only).
"""
import inspect

import numpy as np
import pytest

import tsgen
from tsgen.training import TrainingConfig
from tsgen.training.config import AUTO_KL_ANNEALING_EPOCHS

LATENT_ESTIMATORS = [tsgen.DeepMarkovModel, tsgen.VRNN, tsgen.STORN, tsgen.SRNN, tsgen.LSTMSSM]
TINY = dict(latent_dim=2, hidden_dim=6, window_length=12, batch_size=64, patience=None, progress=False,
            random_state=0)


def series(n=120):
    steps = np.arange(n)
    return np.sin(steps / 3.0) + 0.1 * np.random.default_rng(0).standard_normal(n)


@pytest.mark.parametrize("max_epochs, warm_up", [(1, 0), (2, 0), (3, 1), (9, 3), (30, 10), (100, 10), (10_000, 10)])
def test_auto_warm_up_is_ten_epochs_or_the_first_third(max_epochs, warm_up):
    config = TrainingConfig(max_epochs=max_epochs, kl_annealing_epochs="auto")
    assert AUTO_KL_ANNEALING_EPOCHS == 10
    assert config.annealing_epochs == warm_up
    weights = [config.kl_weight(e) for e in range(min(max_epochs, 12))]
    expected = [min(1.0, e / warm_up) if warm_up else 1.0 for e in range(len(weights))]
    assert weights == pytest.approx(expected)


def test_auto_warm_up_starts_at_kl_annealing_start_and_spares_the_other_bounds():
    config = TrainingConfig(max_epochs=30, kl_annealing_epochs="auto", kl_annealing_start=0.2)
    assert config.kl_weight(0) == pytest.approx(0.2)
    assert config.kl_weight(5) == pytest.approx(0.6)
    assert config.kl_weight(10) == 1.0
    for objective in ("iwae", "fivo"):  # no KL term to weigh
        other = TrainingConfig(max_epochs=30, kl_annealing_epochs="auto", objective=objective, n_particles=2)
        assert {other.kl_weight(e) for e in range(30)} == {1.0}


@pytest.mark.parametrize("value", ["yes", "AUTO", 1.5, -2])
def test_kl_annealing_epochs_rejects_anything_but_an_integer_or_auto(value):
    with pytest.raises(ValueError, match="`kl_annealing_epochs` must be an integer >= 0 or 'auto'"):
        TrainingConfig(kl_annealing_epochs=value)


@pytest.mark.parametrize("estimator", LATENT_ESTIMATORS, ids=lambda e: e.__name__)
def test_every_latent_estimator_defaults_to_the_warm_up(estimator):
    assert inspect.signature(estimator).parameters["kl_annealing_epochs"].default == "auto"
    assert estimator().get_params()["kl_annealing_epochs"] == "auto"


@pytest.mark.parametrize("estimator", [tsgen.DeepMarkovModel, tsgen.VRNN], ids=lambda e: e.__name__)
def test_a_default_elbo_fit_trains_its_first_epochs_under_the_ramp(estimator):
    model = estimator(max_epochs=6, **TINY).fit(series())
    assert [h["kl_weight"] for h in model.training_history_] == pytest.approx([0.0, 0.5, 1.0, 1.0, 1.0, 1.0])
    # an explicit 0 switches it off
    plain = estimator(max_epochs=3, kl_annealing_epochs=0, **TINY).fit(series())
    assert [h["kl_weight"] for h in plain.training_history_] == [1.0, 1.0, 1.0]


def test_pgas_has_no_kl_to_warm_up():
    model = tsgen.LSTMSSM(max_epochs=6, feature_dim=6, n_particles=4, sweeps=1, ancestor_lag=2, **TINY).fit(series())
    assert model.objective == "pgas"
    assert [h["kl_weight"] for h in model.training_history_] == [1.0] * 6

"""Training objectives of latent models: the ELBO, IWAE and FIVO (Maddison et al. 2017) bounds ordered on a
linear-Gaussian DMM whose exact log-likelihood the Kalman filter gives, their gradients, and training by them."""
import math

import numpy as np
import pytest
import torch
from test_deep_robustness import TINY_DMM, series
from test_dmm import kalman_params, linear_gaussian_dmm
from test_dmm_smc import simulate

import tsgen
from tsgen.inference.kalman import kalman_log_likelihood
from tsgen.inference.smc.filter import particle_filter
from tsgen.training import SequenceBatch, TrainingConfig
from tsgen.training.config import OBJECTIVES

SEEDS = 40


def _bounds(module, values, mask, n_particles):
    """Per-series draws ``(SEEDS, B)`` of the ELBO, the IWAE bound and FIVO's bound with ``n_particles``."""
    elbo, iwae, fivo = [], [], []
    for seed in range(SEEDS):
        torch.manual_seed(seed)
        with torch.no_grad():
            elbo.append(module.elbo(values, mask)[0])
            iwae.append(module.iwae(values, mask, n_particles))
            fivo.append(particle_filter(module, values, mask, n_particles=n_particles, proposal="guided",
                                        reparameterized=True).log_evidence)
    return torch.stack(elbo), torch.stack(iwae), torch.stack(fivo)


def test_fivo_lies_between_the_elbo_and_the_exact_log_likelihood():
    # an untrained guide: the ELBO's gap is wide, so the ordering is not a matter of Monte Carlo noise
    module = linear_gaussian_dmm("st-l")
    values, mask = simulate(steps=20)
    exact = kalman_log_likelihood(torch.nan_to_num(values), mask, kalman_params(), method="sequential")
    elbo, iwae, fivo = _bounds(module, values, mask, n_particles=8)

    def mean_se(draws):
        return draws.mean(0), draws.std(0) / math.sqrt(SEEDS)

    (e, e_se), (f, f_se) = mean_se(elbo), mean_se(fivo)
    assert torch.all(e + 4 * (e_se + f_se) < f), (e, f)  # strictly above the ELBO
    assert torch.all(f <= exact + 4 * f_se), (f, exact)  # a lower bound in expectation
    # resampling makes FIVO's bound tighter than IWAE's with as many draws on sequences this long
    i, i_se = mean_se(iwae)
    assert torch.all(i + 4 * (i_se + f_se) < f), (i, f)


def test_objectives_are_the_bounds_per_valid_step_and_fivo_has_gradients():
    module = linear_gaussian_dmm("st-l")
    values, mask = simulate(steps=12)
    batch = SequenceBatch(values=values, mask=mask)
    steps = 12 + 12 + 8  # series 2's last four steps are missing: they are not counted
    for objective in OBJECTIVES:
        torch.manual_seed(0)
        loss = module.loss(batch, objective=objective, n_particles=4)
        torch.manual_seed(0)
        if objective == "elbo":
            bound = module.elbo(values, mask)
        elif objective == "iwae":
            bound = module.iwae(values, mask, 4)
        else:
            bound = particle_filter(module, values, mask, n_particles=4, proposal="guided",
                                    reparameterized=True).log_evidence
        torch.testing.assert_close(loss, -bound.sum() / steps)
    module.zero_grad()
    torch.manual_seed(0)
    module.loss(batch, objective="fivo", n_particles=4).backward()
    # the guide learns through the reparameterised proposals
    grads = [p.grad for p in module.guide.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    with pytest.raises(ValueError, match="objective"):
        module.loss(batch, objective="vimco")


@pytest.mark.parametrize("objective", ["fivo", "iwae"])
def test_training_by_fivo_and_iwae_runs_and_lowers_the_loss(objective):
    y = series(60)
    settings = {**TINY_DMM, "max_epochs": 8, "learning_rate": 1e-2, "patience": None}
    model = tsgen.DeepMarkovModel(**settings, inference="st-l", objective=objective, n_particles=4).fit(y)
    losses = [h["train_loss"] for h in model.training_history_]
    assert len(losses) == 8 and np.isfinite(losses).all()
    assert losses[-1] < losses[0]
    assert np.isfinite(model.predict(3).to_numpy()).all()
    assert np.isfinite(model.log_likelihood(y, n_particles=100))


def test_objective_arguments_are_checked():
    y = series(20)
    with pytest.raises(ValueError, match="objective"):
        tsgen.DeepMarkovModel(**TINY_DMM, objective="vimco").fit(y)
    with pytest.raises(ValueError, match="n_particles"):
        tsgen.DeepMarkovModel(**TINY_DMM, objective="fivo", n_particles=1).fit(y)
    with pytest.raises(ValueError, match="n_particles"):
        TrainingConfig(objective="iwae", n_particles=0)
    # KL annealing is the ELBO's: the IWAE and FIVO bounds are trained at full weight from the start
    annealed = dict(kl_annealing_epochs=5, kl_annealing_start=0.1)
    assert TrainingConfig(**annealed).kl_weight(0) == pytest.approx(0.1)
    assert TrainingConfig(**annealed, objective="fivo").kl_weight(0) == 1.0

"""Z-forcing (Goyal et al. 2017) as an option of tsgen.SRNN and tsgen.VRNN: the auxiliary cost enters the training loss
only (a nonzero term, linear in its weight; bounds and likelihoods unchanged), its gradients reach the guide through
the latents and the backward RNN through the reverse prediction, training lowers the loss, save/load, bad weights."""
import numpy as np
import pandas as pd
import pytest
import torch

import tsgen
from tsgen.components.zforcing import ZForcing
from tsgen.models.srnn import SRNNModule
from tsgen.models.vrnn import VRNNModule
from tsgen.training import SequenceBatch

TINY = dict(latent_dim=2, hidden_dim=8, feature_dim=8, max_epochs=2, batch_size=8, window_length=16,
            progress=False, random_state=0)
MODULES = {
    "srnn-smoothing": lambda w: SRNNModule(1, 2, 6, 6, z_forcing=w),
    "srnn-filtering": lambda w: SRNNModule(1, 2, 6, 6, inference="filtering", z_forcing=w),
    "vrnn": lambda w: VRNNModule(1, 2, 6, 6, z_forcing=w),
}


def seasonal(n=60, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    values = 10 + 2 * np.sin(2 * np.pi * t / 12) + 0.3 * rng.normal(size=n)
    return pd.Series(values, index=pd.period_range("2010-01", periods=n, freq="M"))


def batch(n_series=3, length=12):
    values = torch.tensor(seasonal(length).to_numpy(), dtype=torch.float32)[None, :, None]
    values = values.expand(n_series, length, 1).contiguous()
    mask = torch.ones_like(values, dtype=torch.bool)
    mask[0, 4] = False
    return SequenceBatch(values=values, mask=mask)


def twin(name, weight):
    """A module with the Z-forcing cost at ``weight`` and one without it sharing every model parameter."""
    torch.manual_seed(0)
    forced = MODULES[name](weight)
    plain = MODULES[name](0.0)
    missing, unexpected = plain.load_state_dict(forced.state_dict(), strict=False)
    assert not missing and all(key.startswith("zforcing.") for key in unexpected)
    return forced, plain


@pytest.mark.parametrize("name", sorted(MODULES))
@pytest.mark.parametrize("objective", ["elbo", "iwae", "fivo"])
def test_the_auxiliary_term_is_nonzero_and_linear_in_its_weight(name, objective):
    data = batch()
    losses = {}
    for weight in (0.5, 1.0):
        forced, plain = twin(name, weight)
        forced.zforcing.load_state_dict(twin(name, 1.0)[0].zforcing.state_dict())  # one auxiliary network
        torch.manual_seed(1)
        with_aux = forced.loss(data, objective=objective, n_particles=4)
        torch.manual_seed(1)
        without = plain.loss(data, objective=objective, n_particles=4)
        losses[weight] = (with_aux - without).item()
    assert abs(losses[1.0]) > 1e-3, losses
    assert losses[1.0] == pytest.approx(2 * losses[0.5], rel=1e-4), losses


@pytest.mark.parametrize("name", sorted(MODULES))
def test_bounds_and_likelihoods_do_not_see_the_auxiliary_cost(name):
    forced, plain = twin(name, 2.0)
    data = batch()
    assert forced.zforcing is not None and plain.zforcing is None
    values = []
    with torch.no_grad():
        for module in (forced, plain):
            torch.manual_seed(3)
            values.append(module.log_likelihood(data.values, data.mask, "iwae", 8))
    torch.testing.assert_close(*values)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_auxiliary_gradients_reach_the_guide_through_the_latents_and_the_backward_rnn(name):
    forced, _ = twin(name, 1.0)
    data = batch()
    z = forced.rollout(data.values, data.mask, 2, **({"latents": True} if name == "vrnn" else {}))[3]
    cost = forced.zforcing.cost(z, data.values, data.mask, None, data.mask.any(-1)).sum()
    cost.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in forced.posterior.parameters())
    for part in ("backward_rnn", "predictor", "reverse"):
        grads = [p.grad for p in getattr(forced.zforcing, part).parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_the_target_is_not_differentiated():
    """A target free to move towards the latents would collapse: only the reverse prediction trains b."""
    aux = ZForcing(1, 2, 4)
    values = torch.randn(2, 6, 1)
    mask = torch.ones_like(values, dtype=torch.bool)
    z = torch.randn(3, 2, 6, 2)
    reverse_only = aux.cost(z, values, mask, None, torch.zeros(2, 6, dtype=torch.bool)).sum()
    full = aux.cost(z, values, mask, None, torch.ones(2, 6, dtype=torch.bool)).sum()
    grads = [torch.autograd.grad(cost, list(aux.backward_rnn.parameters())) for cost in (reverse_only, full)]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("estimator, options", [
    (tsgen.SRNN, {}), (tsgen.SRNN, {"inference": "filtering"}),
    (tsgen.VRNN, {}), (tsgen.VRNN, {"objective": "iwae", "n_particles": 4}),
])
def test_training_with_z_forcing_lowers_the_loss(estimator, options):
    model = estimator(**{**TINY, **options, "max_epochs": 6, "learning_rate": 5e-3, "z_forcing": 0.5}).fit(seasonal())
    losses = [h["train_loss"] for h in model.training_history_]
    assert losses[-1] < losses[0], losses
    assert model.module_.zforcing is not None
    assert np.isfinite(model.log_likelihood(seasonal(30), n_particles=50))
    assert np.isfinite(model.predict(3).to_numpy()).all()


@pytest.mark.parametrize("estimator", [tsgen.SRNN, tsgen.VRNN])
def test_save_load_round_trip_with_z_forcing(estimator, tmp_path):
    y = seasonal(40)
    model = estimator(**{**TINY, "z_forcing": 1.0}).fit(y)
    model.save(tmp_path / "m")
    loaded = tsgen.load(tmp_path / "m")
    assert loaded.z_forcing == 1.0 and loaded.module_.zforcing is not None
    assert loaded.log_likelihood(y, n_particles=50) == model.log_likelihood(y, n_particles=50)
    np.testing.assert_array_equal(loaded.sample(3, n_samples=4), model.sample(3, n_samples=4))


@pytest.mark.parametrize("estimator", [tsgen.SRNN, tsgen.VRNN])
@pytest.mark.parametrize("value", [-0.5, float("nan"), float("inf"), "yes", True])
def test_bad_z_forcing_weights_are_named(estimator, value):
    with pytest.raises(ValueError, match="z_forcing"):
        estimator(**{**TINY, "z_forcing": value}).fit(seasonal(30))

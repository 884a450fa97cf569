"""The particle filter's shortcuts (issue 10, benchmark): each must give what the plain computation gives.

- a step whose prior weights are equal normalises the incremental weights alone (no add pass) and
  corrects the evidence by -log N;
- ``_weigh`` on a tensor it may not overwrite leaves it untouched and returns what the in-place
  version returns;
- a registered constrained parameter read without autograd is computed once and reused until the
  raw tensor changes (in place, swapped, or cast).
"""
import math

import torch
from torch.distributions import constraints

from tsgen.inference.kalman import KalmanParams
from tsgen.inference.smc import particle_filter
from tsgen.inference.smc.filter import _weigh
from tsgen.models._lds_protocol import LinearGaussianModule
from tsgen.models.nonlinear_growth import NonlinearGrowthModel
from tsgen.models.state_space import StateSpaceModel

D64 = torch.float64


def _lds() -> LinearGaussianModule:
    t = lambda x: torch.tensor(x, dtype=D64)  # noqa: E731
    return LinearGaussianModule(KalmanParams(t([[0.9]]), t([[1.0]]), t([[0.5]]), t([[1.0]]), t([0.0]), t([[2.0]])))


def test_first_step_evidence_is_the_mean_weight_of_the_same_particles():
    # one step starts from equal weights: log p_hat(y_1) must be log mean_n g(y_1 | z_n) of the very
    # particles the filter drew (the shortcut skips adding log(1/N) to every weight)
    model = _lds()
    y = torch.tensor([[[0.7]], [[-1.3]]], dtype=D64)
    torch.manual_seed(0)
    out = particle_filter(model, y, None, n_particles=50, keep="particles")
    z = out.z[0]  # (N, B, 1)
    log_g = torch.distributions.Normal(z[..., 0], 1.0).log_prob(y[:, 0, 0])  # (N, B)
    expected = torch.logsumexp(log_g, 0) - math.log(50)
    torch.testing.assert_close(out.log_evidence, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(out.log_weights, log_g - torch.logsumexp(log_g, 0), rtol=0, atol=1e-12)


def test_always_resampling_equals_the_running_sum_of_mean_weights():
    # ess_threshold=1 resamples before every step, so every step takes the equal-weights route
    model = _lds()
    torch.manual_seed(1)
    y = torch.randn(1, 6, 1, dtype=D64)
    torch.manual_seed(2)
    out = particle_filter(model, y, None, n_particles=40, ess_threshold=1.0, keep="particles")
    log_g = torch.distributions.Normal(out.z[..., 0], 1.0).log_prob(y[:, :, 0].T.unsqueeze(1))  # (T, N, B)
    expected = (torch.logsumexp(log_g, 1) - math.log(40)).T  # (B, T)
    torch.testing.assert_close(out.step_log_likelihood, expected, rtol=0, atol=1e-12)
    assert bool(out.resampled[:, 1:].all())


def test_weigh_without_ownership_leaves_its_input_and_agrees():
    torch.manual_seed(3)
    log_w = torch.randn(30, 4, dtype=D64) * 5
    log_w[:, 2] = -math.inf  # a collapsed series: normaliser -inf, no NaN in the others
    kept = log_w.clone()
    borrowed = _weigh(log_w, owned=False)
    assert torch.equal(log_w, kept)
    owned = _weigh(log_w.clone())
    for a, b in zip(borrowed, owned):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
    w = torch.exp(kept[:, [0, 1, 3]] - torch.logsumexp(kept[:, [0, 1, 3]], 0))
    torch.testing.assert_close(owned[3][[0, 1, 3]], 1 / (w * w).sum(0), rtol=1e-12, atol=0)
    assert owned[2][2] == -math.inf


class _Scale(StateSpaceModel):
    def __init__(self):
        super().__init__()
        self.register_constrained("scale", 2.0, constraints.positive)


def test_constrained_parameter_read_without_autograd_follows_every_change():
    model = _Scale()
    with torch.no_grad():
        first = model.scale
        assert model.scale is first  # reused
        model.set_constrained("scale", 3.0)  # in place
        torch.testing.assert_close(model.scale, torch.tensor(3.0))
    # an optimiser step changes the raw tensor in place
    optimiser = torch.optim.SGD(model.parameters(), lr=0.5)
    loss = model.scale  # with autograd: computed afresh, carries the graph
    assert loss.requires_grad
    loss.backward()
    optimiser.step()
    with torch.no_grad():
        torch.testing.assert_close(model.scale, torch.exp(model.scale_unconstrained))
        assert float(model.scale) < 3.0
        # a swapped raw tensor (the likelihood-free fits batch parameters this way)
        saved = model._parameters["scale_unconstrained"]
        model._parameters["scale_unconstrained"] = torch.log(torch.tensor([[1.0], [4.0]]))
        torch.testing.assert_close(model.scale, torch.tensor([[1.0], [4.0]]))
        model._parameters["scale_unconstrained"] = saved
        torch.testing.assert_close(model.scale, torch.exp(saved))
        # a cast replaces the storage under the same parameter object
        model.double()
        assert model.scale.dtype == D64


def test_nonlinear_growth_filter_repeats_exactly_under_a_seed():
    # the cached variances must not leak between runs or change the draws
    model = NonlinearGrowthModel(10.0, 1.0, 5.0).double()
    from tsgen.models.state_space import StateSpaceProtocol

    adapter = StateSpaceProtocol(model)
    torch.manual_seed(4)
    y = torch.randn(2, 30, 1, dtype=D64) * 3
    with torch.no_grad():
        runs = []
        for _ in range(2):
            torch.manual_seed(5)
            runs.append(particle_filter(adapter, y, None, n_particles=100).log_evidence)
        model.set_constrained("observation_variance", 2.0)
        torch.manual_seed(5)
        changed = particle_filter(adapter, y, None, n_particles=100).log_evidence
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], changed)

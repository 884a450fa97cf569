"""Implicit (sampler-only) distributions and the bootstrap particle filter over an implicit transition."""
import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal, constraints

from tsgen.components.implicit import ImplicitDistribution
from tsgen.models.state_space import StateSpaceForecaster, StateSpaceModel

PHI, Q, R = 0.8, 0.5, 0.7


class _AR1Plus(StateSpaceModel):
    """z_t = phi z_{t-1} + q eta_t, y_t = z_t + r eps_t; the transition explicit or implicit."""

    def __init__(self, implicit: bool = False):
        super().__init__()
        self.implicit = implicit
        self.register_constrained("phi", PHI, constraints.interval(-1.0, 1.0))

    def get_config(self):
        return {"implicit": self.implicit}

    def initial(self, context):
        return Normal(torch.zeros(()), torch.ones(()))

    def transition(self, z_prev, context):
        if not self.implicit:
            return Normal(self.phi * z_prev, Q)
        return ImplicitDistribution(lambda shape: self.phi * z_prev + Q * torch.randn(shape, dtype=z_prev.dtype),
                                    z_prev.shape)

    def emission(self, z, context):
        return Normal(z, R)

    def proposal(self, z_prev, y, context):
        if z_prev is None:
            return Normal(torch.zeros(()), torch.ones(()))
        return Normal(self.phi * z_prev, Q)


def _series(T=30, seed=0):
    rng = np.random.default_rng(seed)
    z = np.zeros(T)
    z[0] = rng.normal()
    for t in range(1, T):
        z[t] = PHI * z[t - 1] + Q * rng.normal()
    return z + R * rng.normal(size=T)


def _kalman_loglik(y):
    m, p, total = 0.0, 1.0, 0.0
    for t, obs in enumerate(y):
        if t:
            m, p = PHI * m, PHI**2 * p + Q**2
        s = p + R**2
        total += -0.5 * (math.log(2 * math.pi * s) + (obs - m) ** 2 / s)
        k = p / s
        m, p = m + k * (obs - m), (1 - k) * p
    return total


def test_implicit_transition_gives_the_explicit_log_evidence():
    y = _series()
    runs = {}
    for implicit in (False, True):
        values = []
        for seed in range(25):
            est = StateSpaceForecaster(_AR1Plus(implicit), max_iter=0, n_particles=200, random_state=seed + 100 * implicit)
            values.append(est.fit(y).log_likelihood(y))
        runs[implicit] = np.asarray(values)
    se = math.sqrt(runs[False].var(ddof=1) / 25 + runs[True].var(ddof=1) / 25)
    assert abs(runs[True].mean() - runs[False].mean()) < 4 * se
    # and both estimate the exact value (the log of an unbiased estimate is biased low by ~ var / 2)
    exact = _kalman_loglik(y)
    assert abs(runs[True].mean() - exact) < 4 * math.sqrt(runs[True].var(ddof=1) / 25) + runs[True].var() / 2 + 1e-3


def test_implicit_transition_forecasts_and_filters_by_bootstrap():
    y = _series()
    est = StateSpaceForecaster(_AR1Plus(True), max_iter=0, n_particles=100, random_state=0).fit(y)
    frame = est.predict(5)
    assert frame.shape[0] == 5 and np.isfinite(frame.to_numpy()).all()
    assert np.isfinite(est.filter(y).to_numpy()).all()


@pytest.mark.parametrize("call", ["guided", "auxiliary", "smooth", "particle_em"])
def test_what_needs_the_transition_density_refuses_an_implicit_one(call):
    y = _series(T=15)
    if call == "particle_em":
        with pytest.raises(NotImplementedError, match="bootstrap"):
            StateSpaceForecaster(_AR1Plus(True), max_iter=1, n_particles=16, n_trajectories=4, random_state=0).fit(y)
        return
    if call == "smooth":
        est = StateSpaceForecaster(_AR1Plus(True), max_iter=0, n_particles=16, random_state=0).fit(y)
        with pytest.raises(NotImplementedError, match="ImplicitDistribution.*bootstrap"):
            est.smooth(y, n_trajectories=4)
        return
    est = StateSpaceForecaster(_AR1Plus(True), max_iter=0, n_particles=16, proposal=call, random_state=0).fit(y)
    with pytest.raises(NotImplementedError, match="ImplicitDistribution.*bootstrap"):
        est.log_likelihood(y)


def test_implicit_distribution_shapes_and_independent_draws():
    loc = torch.tensor([0.0, 10.0], requires_grad=True)
    d = ImplicitDistribution(lambda shape: loc + torch.randn(shape), (2,))
    assert d.sample((3,)).shape == (3, 2)
    wide = d.expand((500, 2))
    draws = wide.sample()
    assert draws.shape == (500, 2)
    # draws along the new dimension are independent, not copies of one
    assert float(draws[:, 0].std()) > 0.8
    assert abs(float(draws[:, 1].mean()) - 10.0) < 4 / math.sqrt(500)
    d.rsample((4,)).sum().backward()
    assert loc.grad.tolist() == [4.0, 4.0]
    assert not d.sample().requires_grad


def test_implicit_distribution_bad_input():
    with pytest.raises(TypeError, match="sampler"):
        ImplicitDistribution(3.0)
    with pytest.raises(TypeError, match="batch_shape"):
        ImplicitDistribution(torch.randn, "ab")
    bad = ImplicitDistribution(lambda shape: torch.randn(1), (3,))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        bad.sample()
    with pytest.raises(NotImplementedError, match="log_prob"):
        bad.log_prob(torch.zeros(3))
    frozen = ImplicitDistribution(torch.randn, (2,), reparameterized=False)
    assert not frozen.has_rsample
    with pytest.raises(NotImplementedError, match="reparameterized=False"):
        frozen.rsample()
    with pytest.raises(NotImplementedError, match="bootstrap"):
        _ = frozen.mean

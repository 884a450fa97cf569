"""Energy-based emissions (tsgen/components/energy.py): the quadrature normaliser against closed forms,
sampling against the density, the NCE head's importance estimate, training, and errors."""
import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from torch.distributions import Normal

from tsgen.components.energy import EnergyDistribution, EnergyHead, NCEEnergyDistribution, NCEEnergyHead
from tsgen.components.heads import NormalHead, is_exact, make_head
from tsgen.protocol import factorises

DOUBLE = torch.float64


def quadratic_tilt(a, b):
    """``f(z) = a z^2 + b z``: with the confining ``z^2/2`` a Gaussian ``N(-b / (1 + 2a), 1 / (1 + 2a))`` in ``z``."""
    return lambda z: a * z**2 + b * z


def gaussian_of(loc, scale, a, b):
    precision = 1 + 2 * a
    return Normal(loc - scale * b / precision, scale / precision.sqrt())


def test_quadrature_normaliser_of_a_quadratic_energy_is_the_gaussian_density():
    gen = torch.Generator().manual_seed(0)
    loc = torch.randn(4, 3, generator=gen, dtype=DOUBLE)
    scale = 0.2 + torch.rand(4, 3, generator=gen, dtype=DOUBLE)
    a = -0.3 + torch.rand(4, 3, generator=gen, dtype=DOUBLE)  # 1 + 2a in (0.4, 2.4): wider and narrower
    b = torch.randn(4, 3, generator=gen, dtype=DOUBLE)
    energy = EnergyDistribution(loc, scale, quadratic_tilt(a, b))
    exact = gaussian_of(loc, scale, a, b)
    x = exact.sample((50,)) + 0.5 * torch.randn(50, 4, 3, generator=gen, dtype=DOUBLE)
    assert torch.allclose(energy.log_prob(x), exact.log_prob(x), atol=1e-6, rtol=0)
    assert torch.allclose(energy.mean, exact.mean, atol=1e-6)
    assert torch.allclose(energy.variance, exact.variance, atol=1e-6)
    assert float(energy.quadrature_error.max()) < 1e-6
    # the CDF integrates the piecewise-linear density through the nodes: O(h^2), here h^2 max|p''| / 8 < 3e-3
    assert torch.allclose(energy.cdf(x), exact.cdf(x), atol=3e-3)


def test_untrained_head_is_the_normal_head():
    torch.manual_seed(0)
    energy, normal = EnergyHead(5, 2).double(), NormalHead(5, 2).double()
    normal.proj.load_state_dict(energy.proj.state_dict())
    features, scale = torch.randn(7, 5, dtype=DOUBLE), 1 + torch.rand(7, 2, dtype=DOUBLE)
    x = 3 * torch.randn(7, 2, dtype=DOUBLE)
    assert torch.allclose(energy(features, scale).log_prob(x), normal(features, scale).log_prob(x), atol=1e-8)


def trained_looking_head(seed=3):
    """An energy head with random (non-zero) output weights: a skewed, multimodal density."""
    torch.manual_seed(seed)
    head = EnergyHead(4, 1, hidden=16).double()
    with torch.no_grad():
        head.out_weight.normal_(0, 1.5)
    return head, torch.randn(1, 4, dtype=DOUBLE)


@torch.no_grad()
def test_density_integrates_to_one_beyond_the_grid_and_moments_match():
    head, features = trained_looking_head()
    dist = head(features).base_dist
    loc, scale = float(dist.loc), float(dist.scale)

    def density(x, power=0):
        return x**power * math.exp(float(dist.log_prob(torch.tensor([[x]], dtype=DOUBLE))))

    # adaptive quadrature over the whole line, independent of the head's own grid
    edges = [-np.inf, loc - 8 * scale, loc + 8 * scale, np.inf]
    moments = [sum(integrate.quad(density, lo, hi, args=(k,), limit=200, epsabs=1e-12)[0]
                   for lo, hi in zip(edges[:-1], edges[1:])) for k in range(3)]
    assert moments[0] == pytest.approx(1.0, abs=1e-7)
    assert float(dist.mean) == pytest.approx(moments[1], abs=1e-6 * scale)
    assert float(dist.variance) == pytest.approx(moments[2] - moments[1] ** 2, rel=1e-5)


def test_tails_are_counted_when_the_tilt_pushes_mass_off_the_grid():
    # f = -2z with bound 3: N(2, 1) inside, about a sixth of the mass beyond +3 where f is frozen. With mass
    # at the edge the trapezoid rule is only second order, and quadrature_error says so.
    def total_mass(dist):
        density = lambda x: math.exp(float(dist.log_prob(torch.tensor(x, dtype=DOUBLE))))  # noqa: E731
        return sum(integrate.quad(density, lo, hi, limit=200, epsabs=1e-13)[0]
                   for lo, hi in ((-np.inf, -3), (-3, 3), (3, np.inf)))

    zero, one = torch.zeros((), dtype=DOUBLE), torch.ones((), dtype=DOUBLE)
    coarse = EnergyDistribution(zero, one, lambda z: -2 * z, bound=3.0, grid_size=161)
    fine = EnergyDistribution(zero, one, lambda z: -2 * z, bound=3.0, grid_size=1601)
    coarse_error, fine_error = abs(total_mass(coarse) - 1), abs(total_mass(fine) - 1)
    assert coarse_error < float(coarse.quadrature_error) < 1e-4
    assert fine_error < float(fine.quadrature_error) < 1e-6
    draws = coarse.sample((4000,))
    beyond = float(1 - coarse.cdf(torch.tensor(3.0, dtype=DOUBLE)))
    # masses over sqrt(2 pi): e^2 (Phi(1) - Phi(-5)) inside, e^{+-6} Phi(-3) beyond +-3
    inside, tail = math.exp(2) * (stats.norm.cdf(1) - stats.norm.cdf(-5)), stats.norm.cdf(-3)
    assert beyond == pytest.approx(math.exp(6) * tail / (inside + (math.exp(6) + math.exp(-6)) * tail), rel=1e-4)
    assert float((draws > 3).double().mean()) == pytest.approx(beyond, abs=4 * math.sqrt(beyond * (1 - beyond) / 4000))


@torch.no_grad()
def test_samples_match_log_prob():
    head, features = trained_looking_head()
    dist = head(features).base_dist
    loc, scale = float(dist.loc), float(dist.scale)
    # the CDF by Simpson's rule on a fine grid of exp(log_prob): independent of the head's 81-point table
    xs = np.linspace(loc - 12 * scale, loc + 12 * scale, 24001)
    pdf = np.exp(dist.log_prob(torch.tensor(xs, dtype=DOUBLE).reshape(-1, 1)).numpy().ravel())
    cdf = integrate.cumulative_simpson(pdf, x=xs, initial=0.0)
    assert cdf[-1] == pytest.approx(1.0, abs=1e-7)
    torch.manual_seed(0)
    draws = dist.sample((3000,)).numpy().ravel()
    result = stats.kstest(draws, lambda v: np.interp(v, xs, cdf))
    assert result.pvalue > 0.01
    # and the grid's own CDF is the same function to O(h^2)
    grid_cdf = dist.cdf(torch.tensor(xs[::100], dtype=DOUBLE).reshape(-1, 1)).numpy().ravel()
    assert np.abs(grid_cdf - cdf[::100]).max() < 2e-3


@torch.no_grad()
def test_icdf_inverts_cdf_and_samples_have_the_batch_shape():
    head, _ = trained_looking_head()
    torch.manual_seed(1)
    dist = head(torch.randn(6, 4, dtype=DOUBLE)).base_dist
    u = torch.rand(5, 6, 1, dtype=DOUBLE)
    assert torch.allclose(dist.cdf(dist.icdf(u)), u, atol=1e-9)
    assert dist.sample((2, 3)).shape == (2, 3, 6, 1)
    assert head(torch.randn(6, 4, dtype=DOUBLE)).sample().shape == (6, 1)


def maximise_log_prob(head, features, data, steps, lr) -> float:
    """Adam on ``-mean log_prob(data)`` of ``head(features)`` (one context for all rows); the last mean."""
    optimiser = torch.optim.Adam(head.parameters(), lr=lr)
    for _ in range(steps):
        optimiser.zero_grad()
        loss = -head(features).log_prob(data).mean()
        loss.backward()
        optimiser.step()
    return -float(loss.detach())


def test_maximum_likelihood_learns_a_bimodal_density_the_gaussian_cannot():
    gen = torch.Generator().manual_seed(0)
    n = 2000
    data = torch.where(torch.rand(n, 1, generator=gen) < 0.5, -2.0, 2.0) + 0.5 * torch.randn(n, 1, generator=gen)
    torch.manual_seed(0)
    head = EnergyHead(1, 1, hidden=16)
    features = torch.ones(1, 1)
    fitted = maximise_log_prob(head, features, data, steps=150, lr=0.05)
    best_gaussian = float(Normal(data.mean(), data.std()).log_prob(data).mean())
    mixture = float(torch.logsumexp(Normal(torch.tensor([-2.0, 2.0]), 0.5).log_prob(data) + math.log(0.5), -1).mean())
    print(f"energy {fitted:.3f} gaussian {best_gaussian:.3f} truth {mixture:.3f}")
    assert fitted > best_gaussian + 0.3  # the truth is 0.75 nats a point above the best Gaussian
    assert fitted < mixture + 0.05  # an exact likelihood cannot beat the truth by more than sampling noise
    assert float(head(features).base_dist.quadrature_error.detach().max()) < 1e-4


# ------------------------------------------------------------------ NCE
def linear_tilt(b):
    """``g(z) = b.z``: the density is ``N(loc - scale * b, scale^2)`` and ``log Z = |b|^2 / 2``."""
    return lambda z: (z * b).sum(-1)


def test_nce_log_prob_is_exact_for_a_constant_tilt():
    loc, scale = torch.randn(3, 2, dtype=DOUBLE), torch.rand(3, 2, dtype=DOUBLE) + 0.5
    dist = NCEEnergyDistribution(loc, scale, lambda z: torch.full(z.shape[:-1], 0.7, dtype=DOUBLE), n_noise=5)
    x = torch.randn(4, 3, 2, dtype=DOUBLE)
    assert torch.allclose(dist.log_prob(x), Normal(loc, scale).log_prob(x).sum(-1), atol=1e-12)


def test_nce_estimate_converges_to_the_exact_density_and_its_error_shrinks_with_k():
    b = torch.tensor([0.6, -0.4], dtype=DOUBLE)
    loc, scale = torch.tensor([1.0, -1.0], dtype=DOUBLE), torch.tensor([0.5, 2.0], dtype=DOUBLE)
    exact = Normal(loc - scale * b, scale)
    x = exact.sample((1,)).squeeze(0)
    truth = float(exact.log_prob(x).sum())
    torch.manual_seed(0)
    errors = {}
    replicates = 400
    for k in (4, 64, 1024):
        dist = NCEEnergyDistribution(loc.expand(replicates, 2), scale.expand(replicates, 2), linear_tilt(b), n_noise=k)
        estimates = dist.log_prob(x.expand(replicates, 2))
        errors[k] = float((estimates - truth).pow(2).mean().sqrt())
        if k == 1024:  # consistent: within 4 standard errors of the truth, and the normaliser too
            assert abs(float(estimates.mean()) - truth) < 4 * float(estimates.std()) / math.sqrt(replicates) + 1e-3
            assert abs(float(dist.log_normaliser.mean()) - float(b @ b) / 2) < 0.01
    assert errors[1024] < errors[64] < errors[4]
    assert errors[1024] < 0.05


def test_nce_samples_and_moments_match_the_density():
    b = torch.tensor([1.0, -0.5], dtype=DOUBLE)
    loc, scale = torch.tensor([1.0, -1.0], dtype=DOUBLE), torch.tensor([0.5, 2.0], dtype=DOUBLE)
    exact = Normal(loc - scale * b, scale)
    torch.manual_seed(0)
    # SIR is exact as K grows; its O(1/K) bias at K=2048 is far below the KS test's resolution at 3000 draws
    dist = NCEEnergyDistribution(loc, scale, linear_tilt(b), n_noise=2048)
    draws = dist.sample((3000,))
    assert draws.shape == (3000, 2)
    for d in range(2):
        marginal = stats.norm(float(exact.loc[d]), float(exact.scale[d])).cdf
        assert stats.kstest(draws[:, d].numpy(), marginal).pvalue > 0.01
    assert torch.allclose(dist.mean, exact.mean, atol=0.1 * float(scale.max()))


def test_nce_training_through_minus_log_prob_learns_a_bimodal_joint():
    gen = torch.Generator().manual_seed(1)
    n = 1500

    def draw(count):
        sign = torch.where(torch.rand(count, 1, generator=gen) < 0.5, -1.0, 1.0)
        return sign * torch.tensor([1.5, 1.5]) + 0.4 * torch.randn(count, 2, generator=gen)

    train, test = draw(n), draw(n)
    torch.manual_seed(0)
    head = NCEEnergyHead(1, 2, hidden=32, n_noise=64)
    features = torch.ones(1, 1)
    maximise_log_prob(head, features, train, steps=200, lr=0.02)
    head.n_noise = 8192
    with torch.no_grad():
        held_out = float(head(features).log_prob(test).mean())
    gaussian = torch.distributions.MultivariateNormal(train.mean(0), torch.cov(train.T))
    print(f"nce {held_out:.3f} gaussian {float(gaussian.log_prob(test).mean()):.3f}")
    assert held_out > float(gaussian.log_prob(test).mean()) + 0.3


# ------------------------------------------------------------------ the heads as emissions
def test_registered_names_and_flags():
    energy, nce = make_head("energy", 6, 2), make_head("energy_nce", 6, 3)
    assert isinstance(energy, EnergyHead) and isinstance(nce, NCEEnergyHead)
    features = torch.randn(4, 6)
    assert factorises(energy(features)) and is_exact(energy(features))
    assert not factorises(nce(features)) and not is_exact(nce(features))
    assert nce(features).sample((2,)).shape == (2, 4, 3)
    assert nce(features, scale=torch.full((4, 3), 10.0)).log_prob(torch.zeros(4, 3)).shape == (4,)


@pytest.mark.parametrize("kwargs, match", [
    ({"bound": 1.0}, "bound"), ({"grid_size": 100}, "grid_size"), ({"grid_size": 5}, "grid_size"),
    ({"hidden": 0}, "hidden"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EnergyHead(3, 1, **kwargs)


def test_bad_nce_arguments_are_named():
    with pytest.raises(ValueError, match="n_noise"):
        NCEEnergyHead(3, 2, n_noise=0)
    with pytest.raises(TypeError, match="tilt"):
        EnergyDistribution(torch.zeros(1), torch.ones(1), tilt=None)

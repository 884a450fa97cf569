"""Conditional flow emissions and transitions (tsgen.components.flows) against independent computations."""
import numpy as np
import pytest
import torch
from scipy import stats
from torch.distributions import MultivariateNormal, Normal

from tsgen.components.flows import (
    ConditionalFlow,
    CouplingFlowEmission,
    FlowEmission,
    FlowTransition,
    MAFFlowEmission,
    SplineFlowEmission,
)
from tsgen.components.heads import make_head, masked_log_prob
from tsgen.components.transitions import kl_term, make_transition

EMISSIONS = ["flow", "flow_spline", "flow_coupling", "flow_maf"]


def _randomised(module, seed, spread=0.3):
    """``module`` in float64 with every parameter redrawn, so no layer sits at its identity start."""
    generator = torch.Generator().manual_seed(seed)
    module = module.double()
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(spread * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return module


@pytest.mark.parametrize("name", EMISSIONS)
def test_names_resolve_to_the_flow_classes(name):
    head = make_head(name, 4, 2)
    assert isinstance(head, FlowEmission) and head.name == name
    assert head.location_scale and head.exact_log_prob


@pytest.mark.parametrize("dim", [1, 2, 3])
@pytest.mark.parametrize("name", EMISSIONS)
def test_log_density_is_the_change_of_variables_of_the_noise_to_data_map(name, dim):
    # the oracle: x = T(eps) evaluated by hand layer after layer, its Jacobian by autograd, and
    # log p(x) = log N(eps; 0, I) - log |det dT/deps|; the distribution inverts x itself (fresh caches)
    torch.manual_seed(0)
    head = _randomised(make_head(name, 5, dim), seed=dim)
    features = torch.randn(3, 5, dtype=torch.float64)
    scale = torch.rand(3, dim, dtype=torch.float64) + 0.5
    eps = torch.randn(3, dim, dtype=torch.float64)
    for b in range(3):
        def noise_to_data(e, b=b):
            distribution = head(features[b], scale[b])
            flow = distribution.base_dist if dim == 1 else distribution
            value = e
            for transform in flow.transforms:
                value = transform(value)
            return value

        x = noise_to_data(eps[b])
        jacobian = torch.autograd.functional.jacobian(noise_to_data, eps[b])
        expected = Normal(0.0, 1.0).log_prob(eps[b]).sum() - torch.linalg.slogdet(jacobian)[1]
        got = head(features[b], scale[b]).log_prob(x.detach())
        assert float(got.detach()) == pytest.approx(float(expected.detach()), abs=1e-8)


def test_a_coupling_with_constant_shift_and_scale_is_the_gaussian_it_maps_to():
    # known transform: zero weights, biases (b, a): x_2 = loc_2 + sigma_2 (e^a eps_2 + b), x_1 = loc_1 + sigma_1 eps_1
    head = CouplingFlowEmission(3, 2, n_layers=1).double()
    with torch.no_grad():
        last = head.flow.layers[0].nn.layers[-1]
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.7, -0.4], dtype=torch.float64))  # [shift, log-scale]
    features = torch.randn(6, 3, dtype=torch.float64)
    args = head.domain_map(**{a: layer(features) for a, layer in head.proj.items()})
    loc, sigma = args["loc"], args["scale"]
    mean = loc + sigma * torch.tensor([0.0, 0.7], dtype=torch.float64)
    std = sigma * torch.tensor([1.0, np.exp(-0.4)], dtype=torch.float64)
    oracle = MultivariateNormal(mean, covariance_matrix=torch.diag_embed(std ** 2))
    x = oracle.sample((50,))
    got = head(features).log_prob(x)
    assert torch.allclose(got, oracle.log_prob(x), atol=1e-10)
    assert torch.allclose(head(features).mean, mean, atol=1e-10)  # exact for an affine flow (antithetic points)


@pytest.mark.parametrize("name", EMISSIONS)
def test_untrained_flow_is_the_gaussian_head(name):
    head = make_head(name, 4, 1).double()
    features = torch.randn(10, 4, dtype=torch.float64)
    args = head.domain_map(**{a: layer(features) for a, layer in head.proj.items()})
    x = torch.randn(10, 1, dtype=torch.float64)
    gaussian = Normal(args["loc"], args["scale"]).log_prob(x).sum(-1)
    # pyro pins the spline's edge derivatives at 1 - 1e-3, so the start is the identity to about 1e-3
    assert torch.allclose(head(features).log_prob(x), gaussian, atol=5e-3)


@pytest.mark.parametrize("name", EMISSIONS)
@pytest.mark.parametrize("dim", [1, 2])
def test_data_scale_is_a_change_of_units(name, dim):
    head = _randomised(make_head(name, 4, dim), seed=1)
    features = torch.randn(5, 4, dtype=torch.float64)
    scale = torch.rand(5, dim, dtype=torch.float64) * 3 + 0.1
    x = torch.randn(5, dim, dtype=torch.float64)
    scaled = head(features, scale).log_prob(x * scale)
    assert torch.allclose(scaled, head(features).log_prob(x) - scale.log().sum(-1), atol=1e-10)


def _marginal_cdf_on_grid(distribution, grid, other=None):
    """The CDF of the first coordinate on ``grid`` by trapezoid quadrature of exp(log_prob), the second
    coordinate (if any) integrated out on ``other``; also the total mass."""
    if other is None:
        density = distribution.log_prob(grid[:, None]).exp()
    else:
        g1, g2 = torch.meshgrid(grid, other, indexing="ij")
        joint = distribution.log_prob(torch.stack([g1, g2], -1)).exp()
        density = torch.trapezoid(joint, other, dim=1)
    steps = torch.diff(grid) * (density[1:] + density[:-1]) / 2
    cdf = torch.cat([torch.zeros(1, dtype=grid.dtype), steps.cumsum(0)])
    return cdf, float(cdf[-1])


@pytest.mark.parametrize("name", EMISSIONS)
@pytest.mark.parametrize("dim", [1, 2])
def test_samples_follow_the_density(name, dim):
    # goodness of fit of the first coordinate's draws against the CDF integrated from log_prob
    torch.manual_seed(3)
    head = _randomised(make_head(name, 3, dim), seed=7, spread=0.25)
    distribution = head(torch.randn(3, dtype=torch.float64))
    with torch.no_grad():
        draws = distribution.sample((3000,))
        pad = 2 * draws.std(0)  # beyond the extreme draws by two standard deviations
        lo, hi = float(draws[:, 0].min() - pad[0]), float(draws[:, 0].max() + pad[0])
        grid = torch.linspace(lo, hi, 20001 if dim == 1 else 601, dtype=torch.float64)
        other = None
        if dim == 2:
            other = torch.linspace(float(draws[:, 1].min() - pad[1]), float(draws[:, 1].max() + pad[1]), 241,
                                   dtype=torch.float64)
        cdf, mass = _marginal_cdf_on_grid(distribution, grid, other)
    # a coarse 2-D trapezoid grid (kept small for speed) is good to about 1%
    assert mass == pytest.approx(1.0, abs=2e-3 if dim == 1 else 1e-2)
    cdf_at = np.interp(draws[:, 0].numpy(), grid.numpy(), cdf.numpy() / mass)
    assert stats.kstest(cdf_at, "uniform").pvalue > 1e-3
    # the estimated mean within 4 standard errors of the draws' mean
    se = draws.std(0) / np.sqrt(len(draws))
    assert bool(((distribution.mean - draws.mean(0)).abs() < 4 * se + 1e-3).all())


def test_one_dimensional_flows_factorise_and_multivariate_ones_refuse_partial_vectors():
    features = torch.randn(4, 3)
    one, two = FlowEmission(3, 1), MAFFlowEmission(3, 2)
    assert one.factorizes and not two.factorizes
    x = torch.randn(4, 1)
    mask = torch.tensor([[True], [False], [True], [False]])
    got = masked_log_prob(one(features), x, mask)
    assert torch.allclose(got, torch.where(mask[:, 0], one(features).log_prob(x), torch.zeros(4)))
    x2 = torch.randn(4, 2)
    full = torch.tensor([[True, True], [False, False], [True, True], [True, True]])
    got = masked_log_prob(two(features), x2, full)
    assert got[1] == 0 and torch.allclose(got[[0, 2, 3]], two(features).log_prob(x2)[[0, 2, 3]])
    with pytest.raises(ValueError, match="emission"):
        masked_log_prob(two(features), x2, torch.tensor([[True, False]] * 4))


@pytest.mark.parametrize("name", ["flow", "flow_spline", "flow_coupling", "flow_maf"])
@pytest.mark.parametrize("latent_dim", [1, 3])
def test_flow_transition_rsample_log_prob_and_kl(name, latent_dim):
    torch.manual_seed(0)
    transition = make_transition(name, latent_dim, feature_dim=4, hidden_dim=16)
    assert isinstance(transition, FlowTransition) and transition.has_rsample
    z_prev, features = torch.randn(6, latent_dim), torch.randn(6, 4)
    prior = transition(z_prev, features)
    assert prior.event_shape == (latent_dim,) and prior.batch_shape == (6,)
    z = prior.rsample((2,))
    assert z.shape == (2, 6, latent_dim)
    guide = make_transition("gaussian", latent_dim, feature_dim=4, hidden_dim=16)(z_prev, features)
    kl = kl_term(guide, prior, guide.rsample())
    (prior.log_prob(z).sum() + kl.sum()).backward()
    assert all(p.grad is not None for p in transition.net.parameters())
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in transition.flow.parameters())


def test_flow_transition_reads_features_only_when_told():
    prior = make_transition("flow", 2, feature_dim=3, hidden_dim=8, use_previous=False)
    assert prior(None, torch.randn(5, 3)).batch_shape == (5,)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_layers=0), "n_layers"),
    (dict(count_bins=1), "count_bins"),
    (dict(bound=-1.0), "bound"),
    (dict(hidden_dims=[8, 0]), "hidden_dims"),
])
def test_bad_options_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SplineFlowEmission(3, 2, **kwargs)


def test_bad_variant_and_context_are_named():
    with pytest.raises(ValueError, match="variant"):
        ConditionalFlow(2, 3, variant="iaf")
    flow = ConditionalFlow(2, 3)
    with pytest.raises(ValueError, match="context"):
        flow.transforms(torch.randn(4, 5))

"""Distribution heads and the MLP: log densities against scipy closed forms, domain maps, masks."""
import numpy as np
import pytest
import torch
from scipy import special, stats
from torch import nn

from tsgen.training import seeded_from
from tsgen.components import HEADS, MLP, DistributionHead, NormalHead, element_log_prob, make_head, masked_log_prob

IN, DIM = 3, 2


def head_with_raw(name, generator_seed=0):
    """A float64 head, features, and the raw (unconstrained) projections it computes."""
    with seeded_from(torch.Generator().manual_seed(generator_seed)):
        head = make_head(name, IN, DIM).double()
    features = torch.randn(5, IN, dtype=torch.float64, generator=torch.Generator().manual_seed(generator_seed))
    raw = {arg: layer(features).detach().numpy() for arg, layer in head.proj.items()}
    return head, features, raw


def softplus(x):
    return np.logaddexp(0.0, x) + 1e-6


def test_registry_names():
    assert set(HEADS) == {"normal", "studentt", "bernoulli", "poisson", "negbin"}
    for name, cls in HEADS.items():
        assert cls.name == name and issubclass(cls, DistributionHead)


@pytest.mark.parametrize("scale", [None, 2.5])
def test_normal_log_prob_matches_scipy(scale):
    head, features, raw = head_with_raw("normal")
    s = 1.0 if scale is None else scale
    x = np.random.default_rng(0).normal(size=(5, DIM)) * 3
    dist = head(features, scale=None if scale is None else torch.tensor(scale, dtype=torch.float64))
    expected = stats.norm.logpdf(x, s * raw["loc"], s * softplus(raw["scale"])).sum(-1)
    np.testing.assert_allclose(dist.log_prob(torch.from_numpy(x)).detach().numpy(), expected, rtol=1e-12)
    assert dist.batch_shape == (5,) and dist.event_shape == (DIM,)


@pytest.mark.parametrize("scale", [None, 0.7])
def test_studentt_log_prob_matches_scipy(scale):
    head, features, raw = head_with_raw("studentt", 1)
    s = 1.0 if scale is None else scale
    x = np.random.default_rng(1).standard_t(3, size=(5, DIM))
    dist = head(features, scale=None if scale is None else torch.tensor(scale, dtype=torch.float64))
    df = 2.0 + softplus(raw["df"])
    expected = stats.t.logpdf(x, df, s * raw["loc"], s * softplus(raw["scale"])).sum(-1)
    np.testing.assert_allclose(dist.log_prob(torch.from_numpy(x)).detach().numpy(), expected, rtol=1e-10)


def test_bernoulli_log_prob_matches_closed_form_and_ignores_scale():
    head, features, raw = head_with_raw("bernoulli", 2)
    x = np.random.default_rng(2).integers(0, 2, size=(5, DIM)).astype(float)
    p = special.expit(raw["logits"])
    expected = (x * np.log(p) + (1 - x) * np.log1p(-p)).sum(-1)
    for scale in (None, torch.tensor(3.0, dtype=torch.float64)):
        got = head(features, scale=scale).log_prob(torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize("scale", [None, 4.0])
def test_poisson_log_prob_matches_scipy(scale):
    head, features, raw = head_with_raw("poisson", 3)
    s = 1.0 if scale is None else scale
    k = np.random.default_rng(3).poisson(2.0, size=(5, DIM)).astype(float)
    dist = head(features, scale=None if scale is None else torch.tensor(scale, dtype=torch.float64))
    expected = stats.poisson.logpmf(k, s * softplus(raw["rate"])).sum(-1)
    np.testing.assert_allclose(dist.log_prob(torch.from_numpy(k)).detach().numpy(), expected, rtol=1e-10)


@pytest.mark.parametrize("scale", [None, 3.0])
def test_negbin_log_prob_mean_and_variance_match_scipy(scale):
    head, features, raw = head_with_raw("negbin", 4)
    s = 1.0 if scale is None else scale
    mean = s * softplus(raw["mu"])
    alpha = softplus(raw["alpha"])
    r = 1.0 / alpha
    # scipy counts failures before r successes with success probability p
    reference = stats.nbinom(r, r / (r + mean))
    k = np.random.default_rng(4).poisson(3.0, size=(5, DIM)).astype(float)
    dist = head(features, scale=None if scale is None else torch.tensor(scale, dtype=torch.float64))
    np.testing.assert_allclose(dist.log_prob(torch.from_numpy(k)).detach().numpy(), reference.logpmf(k).sum(-1),
                               rtol=1e-9)
    np.testing.assert_allclose(dist.mean.detach().numpy(), mean, rtol=1e-10)
    np.testing.assert_allclose(dist.variance.detach().numpy(), mean + alpha * mean**2, rtol=1e-9)


@pytest.mark.parametrize("name", sorted(HEADS))
def test_domain_map_respects_constraints_for_extreme_inputs(name):
    head = make_head(name, IN, DIM).double()
    raw = torch.linspace(-80, 80, 41, dtype=torch.float64)[:, None].expand(41, DIM)
    args = head.domain_map(**{arg: raw for arg in head.args_dim})
    for arg, value in args.items():
        assert torch.isfinite(value).all(), arg
        if arg in ("scale", "rate", "mu", "alpha"):
            assert (value > 0).all(), arg
        if arg == "df":
            assert (value > 2).all()
    # the distribution accepts them (torch validates its arguments)
    head.distribution(args)


def test_make_head_accepts_name_class_and_instance():
    assert isinstance(make_head("Normal", 4, 2), NormalHead)
    assert isinstance(make_head(NormalHead, 4, 2), NormalHead)
    instance = NormalHead(4, 2)
    assert make_head(instance, 4, 2) is instance
    with pytest.raises(ValueError, match="expected 4 -> 3"):
        make_head(instance, 4, 3)


def test_make_head_rejects_unknown_name_listing_valid_ones():
    with pytest.raises(ValueError, match=r"`emission` must be one of \['bernoulli', 'negbin', 'normal'"):
        make_head("gaussian", 4, 2)
    with pytest.raises(ValueError, match="`dim` must be a positive integer"):
        make_head("normal", 4, 0)


@pytest.mark.parametrize("name", sorted(HEADS))
def test_masked_entries_contribute_exactly_zero_value_and_gradient(name):
    head = make_head(name, IN, DIM)
    features = torch.randn(6, IN, generator=torch.Generator().manual_seed(5))
    x = torch.ones(6, DIM)
    mask = torch.rand(6, DIM, generator=torch.Generator().manual_seed(6)) > 0.4
    results = []
    for garbage in (float("nan"), 1e6):
        head.zero_grad()
        x_bad = torch.where(mask, x, torch.tensor(garbage))
        total = masked_log_prob(head(features), x_bad, mask).sum()
        total.backward()
        results.append((total.detach(), [p.grad.clone() for p in head.parameters()]))
    assert torch.equal(results[0][0], results[1][0])
    for g0, g1 in zip(results[0][1], results[1][1]):
        assert torch.equal(g0, g1) and torch.isfinite(g0).all()
    per_entry = element_log_prob(head(features), x, mask)
    assert (per_entry[~mask] == 0).all()
    full = head(features).base_dist.log_prob(x)
    torch.testing.assert_close(per_entry[mask], full[mask])


def test_mlp_layers_and_shapes():
    mlp = MLP(4, [8, 6], 3, activation=nn.Tanh, final_activation=nn.Sigmoid)
    kinds = [type(m) for m in mlp.net]
    assert kinds == [nn.Linear, nn.Tanh, nn.Linear, nn.Tanh, nn.Linear, nn.Sigmoid]
    out = mlp(torch.randn(2, 5, 4))
    assert out.shape == (2, 5, 3) and ((out > 0) & (out < 1)).all()
    assert [type(m) for m in MLP(4, [], 2).net] == [nn.Linear]
    with pytest.raises(ValueError, match="positive integers"):
        MLP(4, [0], 2)

"""The component interface (DESIGN section 2): emission flags, masking rules, the registries, transitions, KL."""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.distributions import Independent, Normal, StudentT, kl_divergence

from tsgen.components.heads import (
    EMISSIONS,
    DistributionHead,
    NormalHead,
    element_log_prob,
    is_exact,
    make_head,
    masked_log_prob,
    register_emission,
)
from tsgen.components.registry import ComponentRegistry
from tsgen.components.transitions import (
    GatedGaussianTransition,
    GatedTransition,
    GaussianTransition,
    StudentTTransition,
    TransitionComponent,
    kl_term,
    make_transition,
    register_transition,
)
from tsgen.protocol import factorises

ROOT = Path(__file__).resolve().parents[1]


@register_emission
class JointNormalForTests(NormalHead):
    """A Gaussian declared non-factorising: its joint ``log_prob`` is the product, which the tests know."""

    name = "test-joint-normal"
    factorizes = False


@register_emission
class EstimatedNormalForTests(NormalHead):
    name = "test-estimated-normal"
    exact_log_prob = False


def _features(n=5, width=4, seed=0):
    return torch.randn(n, width, generator=torch.Generator().manual_seed(seed))


def test_default_heads_declare_factorised_exact_and_return_untagged_independents():
    head = make_head("normal", 4, 3)
    assert head.factorizes and head.exact_log_prob
    distribution = head(_features())
    assert type(distribution) is Independent and not hasattr(distribution, "factorises")
    assert factorises(distribution) and is_exact(distribution)


def test_registered_emission_resolves_by_name_any_case_and_tags_its_distributions():
    head = make_head("Test-Joint-Normal", 4, 3)
    assert isinstance(head, JointNormalForTests)
    distribution = head(_features())
    assert distribution.factorises is False and not factorises(distribution)
    assert distribution.fill_value == head.fill_value
    assert not is_exact(make_head("test-estimated-normal", 4, 3)(_features()))


def test_non_factorising_emission_masking_rules():
    head = make_head("test-joint-normal", 4, 3).double()
    features = _features().double()
    x = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    everything = torch.ones(5, 3, dtype=torch.bool)
    joint = head(features).log_prob(x)
    torch.testing.assert_close(masked_log_prob(head(features), x, everything), joint)

    # rows with nothing observed give exactly 0, whatever garbage they hold, in value and gradient
    rows = torch.tensor([True, False, True, False, True])[:, None].expand(5, 3)
    results = []
    for garbage in (float("nan"), 1e6):
        head.zero_grad()
        total = masked_log_prob(head(features), torch.where(rows, x, torch.tensor(garbage, dtype=x.dtype)), rows)
        total.sum().backward()
        results.append((total.detach(), [p.grad.clone() for p in head.parameters()]))
    assert torch.equal(results[0][0], results[1][0])
    assert (results[0][0][~rows[:, 0]] == 0).all()
    torch.testing.assert_close(results[0][0][rows[:, 0]], joint[rows[:, 0]])
    for g0, g1 in zip(results[0][1], results[1][1]):
        assert torch.equal(g0, g1) and torch.isfinite(g0).all()

    partial = everything.clone()
    partial[2, 1] = False
    with pytest.raises(ValueError, match=r"`emission`.*does not factorise.*\(normal, studentt, bernoulli"):
        masked_log_prob(head(features), x, partial)
    with pytest.raises(ValueError, match="`emission` that factorises"):
        element_log_prob(head(features), x, everything)


def test_factorised_masking_unchanged_for_partial_vectors():
    head = make_head("normal", 4, 3)
    x = torch.randn(5, 3)
    mask = torch.rand(5, 3, generator=torch.Generator().manual_seed(3)) > 0.5
    expected = torch.where(mask, head(_features()).base_dist.log_prob(x), torch.zeros(())).sum(-1)
    torch.testing.assert_close(masked_log_prob(head(_features()), x, mask), expected)


def test_make_head_accepts_factories_and_refuses_bad_products():
    class Wide(NormalHead):
        def __init__(self, in_features, dim, extra=0):
            super().__init__(in_features, dim)
            self.extra = extra

    head = make_head(functools.partial(Wide, extra=7), 4, 2)
    assert isinstance(head, Wide) and head.extra == 7 and (head.in_features, head.dim) == (4, 2)
    with pytest.raises(TypeError, match="factory .* returned a Linear"):
        make_head(lambda i, d: torch.nn.Linear(i, d), 4, 2)
    with pytest.raises(ValueError, match="functools.partial"):
        make_head(NormalHead(5, 2), 4, 2)


def test_registry_refuses_non_components_and_taken_names():
    registry = ComponentRegistry("emission", DistributionHead)
    with pytest.raises(TypeError, match="DistributionHead subclass"):
        registry.register(int)

    class Nameless(NormalHead):
        name = ""

    with pytest.raises(ValueError, match="non-empty class attribute `name`"):
        registry.register(Nameless)
    registry.register(JointNormalForTests)
    registry.register(JointNormalForTests)  # the same class again is harmless

    class Impostor(NormalHead):
        name = "test-joint-normal"

    with pytest.raises(ValueError, match="taken by"):
        registry.register(Impostor)
    assert EMISSIONS.get("TEST-JOINT-NORMAL") is JointNormalForTests


def test_family_modules_load_lazily():
    # a fresh interpreter: the default heads and transitions never import a family module or pyro
    code = (
        "import sys, json\n"
        "from tsgen.components.heads import make_head\n"
        "from tsgen.components.transitions import make_transition\n"
        "make_head('normal', 3, 2); make_transition('gated', 2)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('pyro', 'tsgen.components.autoreg')))))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


# ------------------------------------------------------------------ transitions
@pytest.mark.parametrize("name", ["gaussian", "gated", "studentt"])
def test_builtin_transitions_return_distributions_over_z(name):
    transition = make_transition(name, 3, hidden_dim=8)
    assert isinstance(transition, TransitionComponent) and transition.has_rsample and transition.exact_log_prob
    p = transition(torch.randn(7, 2, 3))
    assert p.batch_shape == (7, 2) and p.event_shape == (3,)
    z = p.rsample()
    assert z.shape == (7, 2, 3) and z.requires_grad
    assert p.log_prob(z).shape == (7, 2)


def test_transition_reads_features_alone_or_with_z_prev():
    prior = make_transition("gaussian", 3, feature_dim=5, hidden_dim=8, use_previous=False)
    assert prior(None, torch.randn(4, 5)).batch_shape == (4,)
    both = make_transition(StudentTTransition, 3, feature_dim=5, hidden_dim=8)
    # leading dimensions broadcast (particles against per-series features)
    assert both(torch.randn(6, 4, 3), torch.randn(4, 5)).batch_shape == (6, 4)
    with pytest.raises(ValueError, match="`features` must have 5 columns"):
        both(torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match="`z_prev` is required"):
        both(None, torch.randn(4, 5))
    with pytest.raises(ValueError, match="needs `feature_dim` > 0"):
        GaussianTransition(3, 0, 8, use_previous=False)
    with pytest.raises(ValueError, match="reads `z_prev` alone"):
        GatedGaussianTransition(3, 2, 8)


def test_gated_component_is_the_gated_transition():
    torch.manual_seed(0)
    component = make_transition("gated", 3, hidden_dim=8)
    z = torch.randn(5, 3)
    loc, scale = component.gated(z)
    p = component(z)
    assert isinstance(component.gated, GatedTransition)
    torch.testing.assert_close(p.base_dist.loc, loc)
    torch.testing.assert_close(p.base_dist.scale, scale)


def test_make_transition_names_classes_instances_factories():
    instance = GaussianTransition(3, 4, 8)
    assert make_transition(instance, 3, 4) is instance
    with pytest.raises(ValueError, match=r"\(latent_dim, feature_dim, use_previous\) = \(3, 4, True\)"):
        make_transition(instance, 3, 5)
    made = make_transition(functools.partial(StudentTTransition, hidden_dim=16), 2, 0)
    assert isinstance(made, StudentTTransition) and made.hidden_dim == 16
    with pytest.raises(ValueError, match=r"`transition` must be one of \['gated', 'gaussian', 'studentt'\]"):
        make_transition("no-such-transition", 3)


def test_register_transition_by_name():
    @register_transition
    class ShiftedForTests(GaussianTransition):
        name = "test-shifted"

    assert isinstance(make_transition("TEST-shifted", 2), ShiftedForTests)


def test_kl_term_closed_form_where_registered_else_monte_carlo():
    torch.manual_seed(1)
    q = Independent(Normal(torch.randn(4, 3), torch.rand(4, 3) + 0.5), 1)
    p = Independent(Normal(torch.randn(4, 3), torch.rand(4, 3) + 0.5), 1)
    z = q.rsample()
    torch.testing.assert_close(kl_term(q, p, z), kl_divergence(q, p))
    t = Independent(StudentT(torch.full((4, 3), 4.0), torch.zeros(4, 3), torch.ones(4, 3)), 1)
    torch.testing.assert_close(kl_term(q, t, z), q.log_prob(z) - t.log_prob(z))


# ------------------------------------------------------------------ the generic pair of the stochastic RNNs
def _pairs(v_first: bool, residual: bool, use_previous: bool):
    from tsgen.components.latent import DiagonalGaussian, GaussianPair
    from tsgen.components.transitions import ComponentPair

    torch.manual_seed(4)
    B, T, S, Z, H, Fw = 3, 5, 2, 2, 4, 6
    prior = DiagonalGaussian(Z * use_previous + H, [Fw], Z).double()
    component = GaussianTransition(Z, H, Fw, use_previous=use_previous).double()
    component.net.load_state_dict(prior.net.state_dict())
    guide_known = torch.randn(B, T, 3, dtype=torch.float64)
    v_width = Z if use_previous else H
    guide = DiagonalGaussian(v_width + 3, [Fw], Z).double()
    prior_known = torch.randn(B, T, H, dtype=torch.float64) if use_previous else None
    observed = torch.rand(B, T, generator=torch.Generator().manual_seed(5)) > 0.3
    args = (guide, prior_known, guide_known, observed, S)
    fused = GaussianPair(prior, *args, v_first=v_first, residual=residual)
    generic = ComponentPair(component, *args, v_first=v_first, residual=residual)
    return fused, generic, (S, B, T, Z, v_width)


@pytest.mark.parametrize("v_first, residual, use_previous", [(False, False, False), (True, True, True)])
def test_component_pair_equals_the_fused_gaussian_pair(v_first, residual, use_previous):
    from tsgen.components.positive import positive

    fused, generic, (S, B, T, Z, v_width) = _pairs(v_first, residual, use_previous)
    outs, pairs = [], []
    for t in range(T):
        v = torch.randn(S * B, v_width, dtype=torch.float64)
        out, (p, q) = fused(v, t), generic(v, t)
        torch.testing.assert_close(p.base_dist.loc, out[:, :Z])
        torch.testing.assert_close(p.base_dist.scale, positive(out[:, Z:2 * Z]))
        q_loc = out[:, 2 * Z:3 * Z] + (out[:, :Z] if residual else 0)
        torch.testing.assert_close(q.base_dist.loc, q_loc)
        torch.testing.assert_close(q.base_dist.scale, positive(out[:, 3 * Z:]))
        outs.append(out)
        pairs.append((p, q))
    z = torch.randn(S, B, T, Z, dtype=torch.float64)
    for a, b in zip(fused.terms(outs, z), generic.terms(pairs, z)):
        torch.testing.assert_close(a, b)


# ------------------------------------------------------------------ wiring into the models
def _binary_sequences(n=6, T=30, D=4, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    return [(rng.random((T, D)) < 0.3).astype(float) for _ in range(n)]


SMALL = {"max_epochs": 2, "progress": False, "random_state": 0}


def test_default_components_keep_the_fast_paths():
    import numpy as np

    from tsgen import LSTMSSM, SRNN, VRNN, DeepMarkovModel
    from tsgen.components.latent import DiagonalGaussian

    y = [np.random.default_rng(1).normal(size=(20, 2))]
    dmm = DeepMarkovModel(latent_dim=2, hidden_dim=4, emission_dim=4, transition_dim=4, max_epochs=1,
                          progress=False).fit(y)
    assert type(dmm.module_.transition_net) is GatedTransition
    for cls in (VRNN, SRNN, LSTMSSM):
        model = cls(latent_dim=2, hidden_dim=4, feature_dim=4, max_epochs=1, progress=False).fit(y)
        assert type(model.module_.prior) is DiagonalGaussian, cls.__name__


@pytest.mark.parametrize("model_name, emission", [("DeepMarkovModel", "made"), ("RNNForecaster", "nade"),
                                                  ("VRNN", "nade")])
def test_models_fit_score_and_sample_with_a_binary_autoregressive_emission(model_name, emission):
    import numpy as np

    import tsgen

    cls = getattr(tsgen, model_name)
    sizes = {"hidden_dim": 8} if model_name == "RNNForecaster" else {"latent_dim": 2, "hidden_dim": 8}
    model = cls(emission=emission, **sizes, **SMALL).fit(_binary_sequences())
    y = _binary_sequences(2, seed=1)
    per_step = model.log_likelihood(y, per_step=True)
    total = model.log_likelihood(y)
    assert total == pytest.approx(float(sum(np.nansum(s) for s in per_step)), rel=1e-6)
    assert np.isfinite(total) and total < 0
    draws = model.sample(3, 5, y)
    values = np.concatenate([np.asarray(d).ravel() for d in draws])
    assert set(np.unique(values)) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="`emission`"):
        partial = [s.copy() for s in y]
        partial[0][3, 1] = np.nan
        model.log_likelihood(partial)


@pytest.mark.parametrize("model_name", ["DeepMarkovModel", "VRNN", "SRNN", "LSTMSSM"])
def test_models_take_a_non_gaussian_transition_and_keep_the_callers_object(model_name, tmp_path):
    import numpy as np

    import tsgen

    cls = getattr(tsgen, model_name)
    y = [np.random.default_rng(2).normal(size=(40, 2)).cumsum(0)]
    sizes = {"latent_dim": 2, "hidden_dim": 6, **({"emission_dim": 6, "transition_dim": 6}
                                                  if model_name == "DeepMarkovModel" else {"feature_dim": 6})}
    model = cls(transition="studentt", **sizes, **SMALL).fit(y)
    component = model.module_.transition_net if model_name == "DeepMarkovModel" else model.module_.prior
    assert isinstance(component, StudentTTransition)
    assert np.isfinite(model.log_likelihood(y)) and np.isfinite(model.predict(3)[0].to_numpy()).all()
    model.save(tmp_path / "by_name.pt")
    again = tsgen.load(tmp_path / "by_name.pt")
    assert again.log_likelihood(y) == pytest.approx(model.log_likelihood(y), rel=1e-9)

    # an object: the model trains a copy, and saving refuses with a clear error
    features = 0 if model_name == "DeepMarkovModel" else 6  # the prior reads h_t / d_t of width hidden_dim
    instance = StudentTTransition(2, features, 6, use_previous=model_name in ("DeepMarkovModel", "SRNN"))
    before = {k: v.clone() for k, v in instance.state_dict().items()}
    fitted = cls(transition=instance, **sizes, **SMALL).fit(y)
    assert all(torch.equal(before[k], v) for k, v in instance.state_dict().items())
    with pytest.raises(TypeError, match="StudentTTransition"):
        fitted.save(tmp_path / "by_object.pt")

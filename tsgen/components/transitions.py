"""Latent transitions ``f(z_t | z_{t-1}, features)``: the component interface and the Gaussian ones.

Two shapes live here:

- :class:`GatedTransition`, the DMM's gated Gaussian as a bare ``nn.Module``
  mapping ``z_{t-1}`` ``(..., Z)`` to ``(loc, scale)``. Returning tensors
  rather than a distribution lets the DMM evaluate all time steps in one
  batched call with a closed-form Gaussian KL (the speed of training
  depends on it); it is the models' default and their fast path.
- :class:`TransitionComponent`, the interface every transition or prior
  family implements (DESIGN section 2): ``forward(z_prev, features)`` returns
  a ``torch.distributions.Distribution`` over ``z_t`` with event shape
  ``(Z,)``. It reads ``z_{t-1}`` (``use_previous``), the model's features
  (``feature_dim`` > 0: a VRNN's ``h_{t-1}``, an SRNN's ``d_t``) or both.
  Flags: ``has_rsample`` (the ELBO reparameterises through it; a component
  without it can serve a bootstrap particle filter only) and
  ``exact_log_prob``. Families register names with
  :func:`register_transition`; :func:`make_transition` resolves names,
  classes, instances and factories, importing the family modules on first
  use of an unknown name.

:func:`kl_term` is the one KL helper for any pair of these distributions.
"""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal, StudentT, kl_divergence
from torch.nn import functional as F

from tsgen._validation import is_int
from tsgen.components.latent import DiagonalGaussian, GaussianPair, batch_major, time_major
from tsgen.components.mlp import MLP
from tsgen.components.positive import positive
from tsgen.components.registry import ComponentRegistry

__all__ = [
    "TRANSITIONS",
    "ComponentPair",
    "GatedGaussianTransition",
    "GatedTransition",
    "GaussianTransition",
    "StudentTTransition",
    "TransitionComponent",
    "kl_term",
    "latent_pair",
    "learned_prior",
    "make_transition",
    "prior_distribution",
    "register_transition",
]


class GatedTransition(nn.Module):
    r"""The DMM's gated transition (Krishnan, Shalit & Sontag, 2017, eq. 5).

    .. math::

        g_t &= \sigma(W_2\,\mathrm{ReLU}(W_1 z_{t-1} + b_1) + b_2)
            \quad\text{(gate)}\\
        h_t &= W_4\,\mathrm{ReLU}(W_3 z_{t-1} + b_3) + b_4
            \quad\text{(proposed mean)}\\
        \mu_t &= (1 - g_t) \odot (W_5 z_{t-1} + b_5) + g_t \odot h_t\\
        \sigma_t &= \mathrm{softplus}(W_6\,\mathrm{ReLU}(h_t) + b_6) + \text{floor}

    so that ``z_t ~ N(mu_t, diag(sigma_t^2))``. ``W_5`` starts as the identity
    and ``b_5`` at zero: an untrained transition is a random walk, which
    keeps early training stable (as in Pyro's DMM example).

    Parameters
    ----------
    latent_dim : int
        ``Z``, the size of ``z_t``.
    hidden_dim : int
        Width of the gate and proposed-mean hidden layers.
    """

    def __init__(self, latent_dim: int, hidden_dim: int):
        super().__init__()
        for name, value in (("latent_dim", latent_dim), ("hidden_dim", hidden_dim)):
            if not is_int(value) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer; got {value!r}.")
        self.latent_dim = latent_dim
        self.gate_hidden = nn.Linear(latent_dim, hidden_dim)
        self.gate_out = nn.Linear(hidden_dim, latent_dim)
        self.proposed_hidden = nn.Linear(latent_dim, hidden_dim)
        self.proposed_out = nn.Linear(hidden_dim, latent_dim)
        self.linear_loc = nn.Linear(latent_dim, latent_dim)
        self.scale_out = nn.Linear(latent_dim, latent_dim)
        with torch.no_grad():
            self.linear_loc.weight.copy_(torch.eye(latent_dim))
            self.linear_loc.bias.zero_()

    def forward(self, z_prev: Tensor) -> tuple[Tensor, Tensor]:
        """``(loc, scale)`` of ``z_t`` given ``z_prev`` ``(..., Z)``; both ``(..., Z)``."""
        gate = torch.sigmoid(self.gate_out(F.relu(self.gate_hidden(z_prev))))
        proposed = self.proposed_out(F.relu(self.proposed_hidden(z_prev)))
        loc = torch.lerp(self.linear_loc(z_prev), proposed, gate)
        scale = positive(self.scale_out(F.relu(proposed)))
        return loc, scale


class TransitionComponent(nn.Module):
    """A distribution over ``z_t`` ``(..., Z)`` given ``z_{t-1}`` and/or the model's features.

    Parameters
    ----------
    latent_dim : int
        ``Z``.
    feature_dim : int
        Width of the features the model passes (0: none).
    hidden_dim : int
        Width of the component's hidden layers.
    use_previous : bool
        Whether ``z_{t-1}`` is an input (False for priors that read the
        model's recurrent state only, like the VRNN's ``p(z_t | h_{t-1})``).
    """

    name: ClassVar[str] = ""
    #: the distributions it returns have ``rsample`` (the ELBO and FIVO differentiate through draws)
    has_rsample: ClassVar[bool] = True
    #: ``log_prob`` is exact (False: an unbiased estimate)
    exact_log_prob: ClassVar[bool] = True

    def __init__(self, latent_dim: int, feature_dim: int = 0, hidden_dim: int = 64, use_previous: bool = True):
        super().__init__()
        for arg, value, low in (("latent_dim", latent_dim, 1), ("feature_dim", feature_dim, 0),
                                ("hidden_dim", hidden_dim, 1)):
            if not is_int(value) or value < low:
                kind = "positive" if low else "non-negative"
                raise ValueError(f"`{arg}` must be a {kind} integer; got {value!r}.")
        if not use_previous and not feature_dim:
            raise ValueError("a transition that does not read `z_prev` needs `feature_dim` > 0.")
        self.latent_dim, self.feature_dim, self.hidden_dim = int(latent_dim), int(feature_dim), int(hidden_dim)
        self.use_previous = bool(use_previous)

    @property
    def in_features(self) -> int:
        """Width of :meth:`inputs`."""
        return self.latent_dim * self.use_previous + self.feature_dim

    def inputs(self, z_prev: Tensor | None, features: Tensor | None) -> Tensor:
        """``[z_prev, features]`` (whichever the component reads), broadcast over leading dimensions."""
        parts = []
        if self.use_previous:
            if z_prev is None:
                raise ValueError(f"`z_prev` is required: this {type(self).__name__} reads z_(t-1).")
            parts.append(z_prev)
        if self.feature_dim:
            if features is None or features.shape[-1] != self.feature_dim:
                got = None if features is None else tuple(features.shape)
                raise ValueError(f"`features` must have {self.feature_dim} columns; got shape {got}.")
            parts.append(features)
        if len(parts) == 1:
            return parts[0]
        shape = torch.broadcast_shapes(parts[0].shape[:-1], parts[1].shape[:-1])
        return torch.cat([p.expand(*shape, p.shape[-1]) for p in parts], dim=-1)

    def forward(self, z_prev: Tensor | None, features: Tensor | None = None) -> Distribution:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return (f"latent_dim={self.latent_dim}, feature_dim={self.feature_dim}, hidden_dim={self.hidden_dim}, "
                f"use_previous={self.use_previous}")


class GaussianTransition(TransitionComponent):
    """``N(mu(u), diag sigma^2(u))`` from an MLP (one ReLU hidden layer) of the inputs ``u``: the
    stochastic RNNs' learned prior as a component."""

    name = "gaussian"

    def __init__(self, latent_dim, feature_dim=0, hidden_dim=64, use_previous=True):
        super().__init__(latent_dim, feature_dim, hidden_dim, use_previous)
        self.net = MLP(self.in_features, [self.hidden_dim], 2 * self.latent_dim)

    def forward(self, z_prev, features=None):
        loc, raw = self.net(self.inputs(z_prev, features)).chunk(2, dim=-1)
        return Independent(Normal(loc, positive(raw), validate_args=False), 1)


class GatedGaussianTransition(TransitionComponent):
    """The DMM's :class:`GatedTransition` as a component (reads ``z_{t-1}`` only)."""

    name = "gated"

    def __init__(self, latent_dim, feature_dim=0, hidden_dim=64, use_previous=True):
        if feature_dim or not use_previous:
            raise ValueError("the gated transition reads `z_prev` alone: use feature_dim=0, use_previous=True.")
        super().__init__(latent_dim, feature_dim, hidden_dim, use_previous)
        self.gated = GatedTransition(self.latent_dim, self.hidden_dim)

    def forward(self, z_prev, features=None):
        return Independent(Normal(*self.gated(self.inputs(z_prev, None)), validate_args=False), 1)


class StudentTTransition(TransitionComponent):
    """Heavy-tailed steps: ``z_t,k = mu_k(u) + sigma_k(u) eps_k``, ``eps_k ~ t_nu`` per coordinate with a
    learned ``nu > 2`` (finite variance). No closed-form KL to a Gaussian guide: :func:`kl_term` takes the
    Monte Carlo difference."""

    name = "studentt"

    def __init__(self, latent_dim, feature_dim=0, hidden_dim=64, use_previous=True):
        super().__init__(latent_dim, feature_dim, hidden_dim, use_previous)
        self.net = MLP(self.in_features, [self.hidden_dim], 2 * self.latent_dim)
        self.raw_df = nn.Parameter(torch.full((self.latent_dim,), 3.0))

    def forward(self, z_prev, features=None):
        loc, raw = self.net(self.inputs(z_prev, features)).chunk(2, dim=-1)
        df = (2.0 + positive(self.raw_df)).expand(loc.shape)
        return Independent(StudentT(df, loc, positive(raw), validate_args=False), 1)


#: every transition by name: the built-in ones and whatever the family modules register
TRANSITIONS: ComponentRegistry = ComponentRegistry("transition", TransitionComponent)
for _cls in (GaussianTransition, GatedGaussianTransition, StudentTTransition):
    TRANSITIONS.register(_cls, builtin=True)


def register_transition(cls: type[TransitionComponent]) -> type[TransitionComponent]:
    """Make ``cls`` available by ``cls.name`` wherever a model takes ``transition=`` (a class decorator)."""
    return TRANSITIONS.register(cls)


def make_transition(transition, latent_dim: int, feature_dim: int = 0, hidden_dim: int = 64,
                    use_previous: bool = True, copy: bool = False) -> TransitionComponent:
    """A transition from a registered name, a :class:`TransitionComponent` subclass, an instance or a factory.

    Classes and factories are called as ``factory(latent_dim, feature_dim=, hidden_dim=, use_previous=)``
    (keywords a ``functools.partial`` already sets are left to it); an instance must have the model's
    ``latent_dim``, ``feature_dim`` and ``use_previous`` and is used as is (deep-copied with ``copy``).
    """

    def check(component: TransitionComponent) -> None:
        have = (component.latent_dim, component.feature_dim, component.use_previous)
        want = (latent_dim, feature_dim, use_previous)
        if have != want:
            raise ValueError(
                f"`transition` has (latent_dim, feature_dim, use_previous) = {have}; this model needs {want}. "
                f"Pass its class or functools.partial(cls, ...) to let the model choose the sizes."
            )

    def build(factory) -> TransitionComponent:
        sizes = {"feature_dim": feature_dim, "hidden_dim": hidden_dim, "use_previous": use_previous}
        # a functools.partial's own keywords (e.g. hidden_dim=...) win over the model's defaults
        chosen = getattr(factory, "keywords", {})
        component = factory(latent_dim, **{k: v for k, v in sizes.items() if k not in chosen})
        if isinstance(component, TransitionComponent):
            check(component)
        return component

    return TRANSITIONS.resolve(transition, build, check, copy)


def kl_term(q: Distribution, p: Distribution, z: Tensor) -> Tensor:
    """``KL(q || p)`` where torch registers a closed form, else the one-draw estimate ``log q(z) - log p(z)``.

    ``z`` must be a draw from ``q`` (reparameterised when gradients should
    flow through it); both are unbiased for the KL, the closed form with no
    variance.
    """
    try:
        return kl_divergence(q, p)
    except NotImplementedError:
        return q.log_prob(z) - p.log_prob(z)


class ComponentPair:
    """:class:`tsgen.components.latent.GaussianPair`'s interface for a prior that is a :class:`TransitionComponent`.

    The stochastic RNNs' training loops run unchanged with it: ``pair(v, t)``
    gives step ``t``'s prior ``p_t`` and Gaussian guide ``q_t`` (the guide a
    :class:`~tsgen.components.latent.DiagonalGaussian` reading ``[v,
    guide_known_t]`` or ``[guide_known_t, v]``; with ``residual`` its mean is
    the prior's mean plus the network's output), ``draw`` samples ``z_t``
    from ``q_t`` where the step is observed and from ``p_t`` elsewhere, and
    ``terms`` gives the log-ratios and :func:`kl_term` per step. The prior
    reads ``(v, prior_known_t)`` when it uses ``z_{t-1}`` (``v`` is then the
    latent, as in the SRNN) and ``(None, v)`` otherwise (``v`` the recurrent
    state, as in the VRNN). One call per network and step: slower than the
    fused Gaussian pair, which the models keep for their default prior.
    """

    def __init__(self, prior: TransitionComponent, guide: nn.Module, prior_known: Tensor | None,
                 guide_known: Tensor | None, observed: Tensor, n_samples: int, v_first: bool,
                 residual: bool = False):
        if prior_known is not None and not prior.use_previous:
            raise ValueError("a prior that does not read z_(t-1) takes the loop's value as its features alone.")
        self.prior, self.guide = prior, guide
        self.prior_known = None if prior_known is None else time_major(prior_known, n_samples).unbind(0)
        self.guide_known = None if guide_known is None else time_major(guide_known, n_samples).unbind(0)
        self.v_first, self.residual, self.observed, self.n_samples = v_first, residual, observed, n_samples
        self.seen = time_major(observed[..., None], n_samples).unbind(0)

    def __call__(self, v: Tensor, t: int) -> tuple[Distribution, Distribution]:
        if self.prior.use_previous:
            p = self.prior(v, None if self.prior_known is None else self.prior_known[t])
        else:
            p = self.prior(None, v)
        if self.guide_known is None:
            inputs = v
        else:
            parts = [v, self.guide_known[t]] if self.v_first else [self.guide_known[t], v]
            inputs = torch.cat(parts, dim=-1)
        q = self.guide(inputs)
        if self.residual:
            q = Independent(Normal(p.mean + q.base_dist.loc, q.base_dist.scale, validate_args=False), 1)
        return p, q

    def draw(self, out: tuple[Distribution, Distribution], t: int) -> Tensor:
        p, q = out
        from_prior = p.rsample() if p.has_rsample else p.sample()
        return torch.where(self.seen[t], q.rsample(), from_prior)

    def terms(self, outs: list[tuple[Distribution, Distribution]], z: Tensor) -> tuple[Tensor, Tensor]:
        """``log p(z_t) - log q(z_t)`` and ``KL(q_t || p_t)`` ``(S, B, T)`` for the draws ``z`` ``(S, B, T, Z)``
        (0 where not observed)."""
        steps = z.permute(2, 0, 1, 3).reshape(z.shape[2], -1, z.shape[-1]).unbind(0)
        ratios, kls = [], []
        for (p, q), z_t in zip(outs, steps):
            ratios.append(p.log_prob(z_t) - q.log_prob(z_t))
            kls.append(kl_term(q, p, z_t))
        zero = torch.zeros((), dtype=z.dtype, device=z.device)
        ratio, kl = (batch_major(torch.stack(x)[..., None], self.n_samples)[..., 0] for x in (ratios, kls))
        return torch.where(self.observed, ratio, zero), torch.where(self.observed, kl, zero)


#: the name of the stochastic RNNs' default prior, an MLP Gaussian that their fused training loops run fast
DEFAULT_PRIOR = "gaussian"


def learned_prior(transition, latent_dim: int, feature_dim: int, hidden_dim: int, use_previous: bool) -> nn.Module:
    """A stochastic RNN's prior network: for ``"gaussian"`` (the default) the
    :class:`~tsgen.components.latent.DiagonalGaussian` that :class:`GaussianPair` fuses, else the
    component :func:`make_transition` builds (a copy of an instance)."""
    if isinstance(transition, str) and transition.lower() == DEFAULT_PRIOR:
        return DiagonalGaussian(latent_dim * bool(use_previous) + feature_dim, [hidden_dim], latent_dim)
    return make_transition(transition, latent_dim, feature_dim, hidden_dim, use_previous, copy=True)


def prior_distribution(prior: nn.Module, z_prev: Tensor | None, features: Tensor | None) -> Distribution:
    """The distribution of :func:`learned_prior`'s network at ``(z_prev, features)``."""
    if isinstance(prior, TransitionComponent):
        return prior(z_prev, features)
    inputs = [t for t in (z_prev, features) if t is not None]
    return prior(inputs[0] if len(inputs) == 1 else torch.cat(inputs, dim=-1))


def latent_pair(prior: nn.Module, *args, **kwargs) -> GaussianPair | ComponentPair:
    """The training loop's pair for :func:`learned_prior`'s network: fused for the Gaussian, else generic."""
    return (ComponentPair if isinstance(prior, TransitionComponent) else GaussianPair)(prior, *args, **kwargs)

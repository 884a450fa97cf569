r"""Conditional normalizing flows as emission and transition components.

A flow component is a Gaussian location-scale head whose standard-normal
noise is first bent by a learned, conditional bijection ``g``:

.. math::

    \varepsilon \sim \mathcal N(0, I_D), \qquad
    u = g(\varepsilon; c), \qquad
    x = s\,(\mu(c) + \sigma(c) \odot u)

with ``c`` the model's features (an emission) or ``[z_{t-1}, features]`` (a
transition), ``mu``/``sigma`` the Normal head's projections and ``s`` the
DeepAR data scale (1 without one). ``g`` acts in standardised units, where
a spline's bounding box ``[-bound, bound]`` covers the bulk of the mass
whatever the units of the data; ``g = id`` is exactly the Normal head, and
every ``g`` except the autoregressive spline starts at the identity (pyro
pins a spline's edge derivatives at 0.999, so a spline starts within about
1e-3 of it): an untrained flow is the Gaussian it generalises. The data
scale is an affine change of units: ``log p(x) = log p_u(u) - sum_d log(s_d
sigma_d)``, which the affine transform's log-Jacobian supplies.

The layers come from :mod:`pyro.distributions.transforms` and run in the
direction whose density is one network pass (what the particle filter and
the likelihood need at every step): couplings are one pass both ways;
autoregressive layers are used as MAFs (the data-to-noise direction is one
masked pass, sampling takes ``D`` passes). Variants, by name:

- ``flow``: an elementwise conditional rational-linear spline, then (for
  ``D > 1``) ``n_layers`` conditional affine couplings;
- ``flow_spline``: ``n_layers`` conditional autoregressive splines (MAF);
- ``flow_coupling``: ``n_layers`` conditional affine couplings;
- ``flow_maf``: ``n_layers`` conditional affine autoregressive layers (MAF).

With ``D = 1`` every variant is one conditional spline: a coupling has no other
coordinate to condition on and a one-dimensional affine MAF is the
Gaussian head again. Consecutive multivariate layers reverse the
coordinates so each is transformed given every other one somewhere in the
stack. A one-dimensional flow factorises (``factorizes`` True, masking
works per value); a flow over ``D > 1`` couples the coordinates
(``factorizes`` False: a partially observed vector cannot be scored).

A flow's mean has no closed form: :class:`FlowDistribution` estimates
``mean`` and ``variance`` by pushing a fixed scrambled-Sobol antithetic set
of normal points through the flow (deterministic; exact for an affine
``g``), which is what the auxiliary particle filter and placeholder values
need.
"""
from __future__ import annotations

import math
import numbers
from functools import lru_cache
from typing import ClassVar

import torch
from pyro.distributions import transforms as T
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal, TransformedDistribution
from torch.distributions.transforms import AffineTransform

from tsgen._validation import is_int
from tsgen.components.heads import DistributionHead, register_emission
from tsgen.components.mlp import MLP
from tsgen.components.positive import positive
from tsgen.components.transitions import TransitionComponent, register_transition

__all__ = [
    "ConditionalFlow",
    "CouplingFlowEmission",
    "CouplingFlowTransition",
    "FlowDistribution",
    "FlowEmission",
    "FlowTransition",
    "MAFFlowEmission",
    "MAFFlowTransition",
    "SplineFlowEmission",
    "SplineFlowTransition",
]

VARIANTS = ("default", "spline", "coupling", "maf")

#: antithetic pairs of quasi-random normal points behind a flow's estimated mean and variance
N_MOMENT_PAIRS = 64


@lru_cache(maxsize=16)
def _normal_points(dim: int) -> Tensor:
    """``(2 N_MOMENT_PAIRS, dim)`` standard normal points in float64: scrambled Sobol and their negatives."""
    engine = torch.quasirandom.SobolEngine(dim, scramble=True, seed=0)
    uniform = engine.draw(N_MOMENT_PAIRS, dtype=torch.float64).clamp(1e-6, 1 - 1e-6)
    points = math.sqrt(2.0) * torch.erfinv(2.0 * uniform - 1.0)
    return torch.cat([points, -points])


class FlowDistribution(TransformedDistribution):
    """A standard normal pushed through conditioned flow layers, with estimated ``mean`` and ``variance``.

    ``log_prob`` is exact (change of variables); ``mean`` and ``variance``
    are deterministic quasi-Monte Carlo estimates (see the module docstring).
    """

    def _pushforward(self) -> Tensor:
        event = self.base_dist.event_shape
        points = _normal_points(max(1, event.numel())).to(dtype=self.base_dist.mean.dtype,
                                                          device=self.base_dist.mean.device)
        n = points.shape[0]
        batch = self.base_dist.batch_shape
        x = points.reshape(n, *([1] * len(batch)), *event).expand(n, *batch, *event)
        for transform in self.transforms:
            x = transform(x)
        return x

    @property
    def mean(self) -> Tensor:
        return self._pushforward().mean(0)

    @property
    def variance(self) -> Tensor:
        return self._pushforward().var(0)


def _check_flow_options(n_layers, count_bins, bound, hidden_dims) -> None:
    for arg, value in (("n_layers", n_layers), ("count_bins", count_bins)):
        if not is_int(value) or value < 1:
            raise ValueError(f"`{arg}` must be a positive integer; got {value!r}.")
    if count_bins < 2:
        raise ValueError(f"`count_bins` must be at least 2; got {count_bins!r}.")
    if isinstance(bound, bool) or not isinstance(bound, numbers.Real) or not math.isfinite(bound) or bound <= 0:
        raise ValueError(f"`bound` must be a positive number; got {bound!r}.")
    if hidden_dims is not None and (
        isinstance(hidden_dims, (str, bytes)) or not all(is_int(h) and h > 0 for h in hidden_dims)
    ):
        raise ValueError(f"`hidden_dims` must be a sequence of positive integers or None; got {hidden_dims!r}.")


def _start_spline_at_identity(spline: T.ConditionalSpline) -> None:
    # equal bin widths and heights with unit knot derivatives make the rational-linear spline the identity
    last = spline.nn.layers[-1]
    dim, bins = spline.input_dim, spline.count_bins
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        # pyro maps the derivative outputs (third block) through softplus(.) + 1e-3
        start = 2 * dim * bins
        last.bias[start:start + dim * (bins - 1)] = math.log(math.expm1(1.0 - 1e-3))


def _start_at_identity(layer: nn.Module) -> None:
    # a zero last layer gives shift 0 and log-scale 0: the affine coupling / MAF layer is the identity
    last = (layer.nn if hasattr(layer, "nn") else layer.arn).layers[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()


class ConditionalFlow(nn.Module):
    r"""The bijection ``g(. ; c)`` of ``D`` standardised coordinates, conditioned on a context ``c``.

    Parameters
    ----------
    dim : int
        ``D``.
    context_dim : int
        Width of ``c``.
    variant : {"default", "spline", "coupling", "maf"}
        The layers (see the module docstring; with ``D = 1`` always one spline).
    n_layers : int
        Number of multivariate layers (``D > 1``).
    hidden_dims : sequence of int or None
        Hidden widths of each layer's hypernetwork (None: ``[max(32, 10 D)]``).
    count_bins, bound : int, float
        Spline segments and the half-width of the spline's box in standardised units.
    """

    def __init__(self, dim: int, context_dim: int, variant: str = "default", n_layers: int = 2,
                 hidden_dims=None, count_bins: int = 8, bound: float = 4.0):
        super().__init__()
        for arg, value in (("dim", dim), ("context_dim", context_dim)):
            if not is_int(value) or value < 1:
                raise ValueError(f"`{arg}` must be a positive integer; got {value!r}.")
        if variant not in VARIANTS:
            raise ValueError(f"`variant` must be one of {VARIANTS}; got {variant!r}.")
        _check_flow_options(n_layers, count_bins, bound, hidden_dims)
        self.dim, self.context_dim, self.variant = int(dim), int(context_dim), variant
        hidden = [int(h) for h in hidden_dims] if hidden_dims is not None else [max(32, 10 * self.dim)]
        self.elementwise = self.dim == 1
        layers: list[nn.Module] = []
        #: per layer: whether it is used inverted (a MAF: pyro's autoregressive forward is the IAF direction)
        inverted: list[bool] = []
        if self.elementwise or variant == "default":
            spline = T.conditional_spline(self.dim, self.context_dim, hidden_dims=hidden, count_bins=count_bins,
                                          bound=float(bound))
            _start_spline_at_identity(spline)
            layers.append(spline)
            inverted.append(False)
        if not self.elementwise:
            for _ in range(n_layers):
                if variant in ("default", "coupling"):
                    layer = T.conditional_affine_coupling(self.dim, self.context_dim, hidden_dims=hidden)
                    _start_at_identity(layer)
                elif variant == "maf":
                    layer = T.conditional_affine_autoregressive(self.dim, self.context_dim, hidden_dims=hidden)
                    _start_at_identity(layer)
                else:
                    layer = T.conditional_spline_autoregressive(self.dim, self.context_dim, hidden_dims=hidden,
                                                                count_bins=count_bins, bound=float(bound))
                layers.append(layer)
                inverted.append(variant in ("maf", "spline"))
        self.layers = nn.ModuleList(layers)
        self.inverted = tuple(inverted)

    def transforms(self, context: Tensor) -> list:
        """The noise-to-data layers conditioned on ``context`` ``(..., context_dim)``."""
        if context.shape[-1] != self.context_dim:
            raise ValueError(f"`context` must have {self.context_dim} columns; got shape {tuple(context.shape)}.")
        out = []
        reverse = torch.arange(self.dim - 1, -1, -1, device=context.device)
        for k, (layer, inverted) in enumerate(zip(self.layers, self.inverted)):
            if k and not self.elementwise:
                out.append(T.Permute(reverse, dim=-1))
            conditioned = layer.condition(context)
            out.append(conditioned.inv if inverted else conditioned)
        return out

    def distribution(self, context: Tensor, loc: Tensor, sigma: Tensor) -> Distribution:
        """``x = loc + sigma * g(eps; context)``, event shape ``(D,)``; ``loc``/``sigma`` ``(..., D)``."""
        batch = torch.broadcast_shapes(context.shape[:-1], loc.shape[:-1], sigma.shape[:-1])
        zeros = torch.zeros((*batch, self.dim), dtype=loc.dtype, device=loc.device)
        base = Normal(zeros, torch.ones_like(zeros), validate_args=False)
        if self.elementwise:
            affine = AffineTransform(loc, sigma)
            return Independent(FlowDistribution(base, [*self.transforms(context), affine], validate_args=False),
                               1, validate_args=False)
        affine = AffineTransform(loc, sigma, event_dim=1)
        return FlowDistribution(Independent(base, 1, validate_args=False), [*self.transforms(context), affine],
                                validate_args=False)


class FlowEmission(DistributionHead):
    """A conditional normalizing-flow emission ``x_t ~ s (mu(h) + sigma(h) g(eps; h))`` (module docstring).

    Parameters
    ----------
    in_features, dim : int
        Width of the features ``h`` and ``D``.
    n_layers : int
        Multivariate flow layers (``D > 1``).
    hidden_dims : sequence of int or None
        Hidden widths of each layer's hypernetwork.
    count_bins : int
        Spline segments.
    bound : float
        Half-width of the spline's box, in units of ``sigma``.
    """

    name = "flow"
    #: which layers (see :class:`ConditionalFlow`)
    variant: ClassVar[str] = "default"
    args_dim = {"loc": 1, "scale": 1}
    location_scale = True
    factorizes = False  # a flow over D > 1 couples the coordinates; D = 1 sets it True per instance

    def __init__(self, in_features: int, dim: int, n_layers: int = 2, hidden_dims=None, count_bins: int = 8,
                 bound: float = 4.0):
        super().__init__(in_features, dim)
        self.n_layers, self.hidden_dims, self.count_bins, self.bound = n_layers, hidden_dims, count_bins, bound
        self.flow = ConditionalFlow(dim, in_features, self.variant, n_layers, hidden_dims, count_bins, bound)
        self.factorizes = self.flow.elementwise

    def domain_map(self, loc, scale):
        return {"loc": loc, "scale": positive(scale)}

    def forward(self, features: Tensor, scale: Tensor | None = None) -> Distribution:
        args = self.domain_map(**{arg: layer(features) for arg, layer in self.proj.items()})
        loc, sigma = args["loc"], args["scale"]
        if scale is not None:  # DeepAR scaling is a change of units; the affine log-Jacobian counts it
            loc, sigma = loc * scale, sigma * scale
        return self.flow.distribution(features, loc, sigma)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, variant={self.variant!r}, n_layers={self.n_layers}"


@register_emission
class SplineFlowEmission(FlowEmission):
    """:class:`FlowEmission` with autoregressive rational-linear splines (MAF direction) for ``D > 1``."""

    name = "flow_spline"
    variant = "spline"


@register_emission
class CouplingFlowEmission(FlowEmission):
    """:class:`FlowEmission` with conditional affine couplings for ``D > 1``."""

    name = "flow_coupling"
    variant = "coupling"


@register_emission
class MAFFlowEmission(FlowEmission):
    """:class:`FlowEmission` with conditional affine autoregressive layers (a MAF) for ``D > 1``."""

    name = "flow_maf"
    variant = "maf"


register_emission(FlowEmission)


class FlowTransition(TransitionComponent):
    r"""A conditional flow over ``z_t``: ``z_t = mu(u) + sigma(u) g(eps; u)``, ``u = [z_{t-1}, features]``.

    ``mu``/``sigma`` come from the same MLP as the Gaussian transition, so
    ``g = id`` (the start) is :class:`~tsgen.components.transitions.GaussianTransition`.
    ``rsample`` is exact and differentiable (the ELBO's reparameterisation);
    for the ``maf``/``spline`` variants with ``Z > 1`` it takes ``Z``
    network passes. There is no closed-form KL: ``kl_term`` takes the Monte
    Carlo difference.

    Parameters
    ----------
    latent_dim, feature_dim, hidden_dim, use_previous
        As :class:`~tsgen.components.transitions.TransitionComponent`.
    n_layers, count_bins, bound
        As :class:`FlowEmission` (the hypernetworks have one ``hidden_dim`` layer).
    """

    name = "flow"
    variant: ClassVar[str] = "default"

    def __init__(self, latent_dim, feature_dim=0, hidden_dim=64, use_previous=True, n_layers: int = 2,
                 count_bins: int = 8, bound: float = 4.0):
        super().__init__(latent_dim, feature_dim, hidden_dim, use_previous)
        self.net = MLP(self.in_features, [self.hidden_dim], 2 * self.latent_dim)
        self.flow = ConditionalFlow(self.latent_dim, self.in_features, self.variant, n_layers, [self.hidden_dim],
                                    count_bins, bound)

    def forward(self, z_prev, features=None):
        u = self.inputs(z_prev, features)
        loc, raw = self.net(u).chunk(2, dim=-1)
        return self.flow.distribution(u, loc, positive(raw))


@register_transition
class SplineFlowTransition(FlowTransition):
    """:class:`FlowTransition` with autoregressive splines (MAF direction) for ``Z > 1``."""

    name = "flow_spline"
    variant = "spline"


@register_transition
class CouplingFlowTransition(FlowTransition):
    """:class:`FlowTransition` with conditional affine couplings for ``Z > 1``."""

    name = "flow_coupling"
    variant = "coupling"


@register_transition
class MAFFlowTransition(FlowTransition):
    """:class:`FlowTransition` with conditional affine MAF layers for ``Z > 1``."""

    name = "flow_maf"
    variant = "maf"


register_transition(FlowTransition)

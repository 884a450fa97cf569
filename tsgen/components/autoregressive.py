r"""Autoregressive emissions over the ``D`` dimensions of ``x_t``: MADE and NADE, conditioned on the state.

The joint over the dimensions is the chain rule in a fixed order,

.. math::

    g(x_t \mid u_t) = \prod_{d=1}^{D} g_d(x_{t,d} \mid x_{t,<d}, u_t),

with ``u_t`` the model's features (its state). The conditionals are
Bernoulli (piano rolls) or Gaussian (real vectors). Two networks give all
``D`` conditionals' parameters in one pass over a full vector, so
``log_prob`` costs one pass and sampling ``D`` passes (dimension ``d`` is
drawn once ``x_{<d}`` is):

- **MADE** (Germain et al. 2015): ``pyro.nn.ConditionalAutoRegressiveNN``,
  an MLP whose weight masks make output ``d`` read inputs ``< d`` only, with
  the features as an unmasked context (``"made"``, Bernoulli;
  ``"made_normal"``, Gaussian).
- **NADE** (Larochelle & Murray 2011) with the RNN-NADE's conditioning
  (Boulanger-Lewandowski et al. 2012, used by the DMM paper's
  "DMM-Aug-NADE"): one hidden layer whose weights are shared along the
  order, ``h_d = sigmoid(c(u) + W_{:, <d} x_{<d})``, ``p(x_d = 1) =
  sigmoid(b_d(u) + V_d h_d)``; the state gives the biases ``b(u)`` and
  ``c(u)`` (``"nade"``, Bernoulli). The shared weights make every ``h_d`` an
  exclusive cumulative sum, so one pass scores a vector.

These emissions do not factorise over dimensions (``factorizes = False``):
a partially observed vector is refused, fully observed ones use the joint
density (:func:`tsgen.components.heads.masked_log_prob`).
"""
from __future__ import annotations

import math
import warnings
from typing import ClassVar, Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, constraints
from torch.nn import functional as F

from tsgen._validation import is_int
from tsgen.components.heads import DistributionHead, register_emission
from tsgen.components.positive import positive

__all__ = ["AutoregressiveDistribution", "AutoregressiveEmission", "GaussianMADE", "MADE", "NADE"]

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def _hidden_sizes(hidden_dims, in_features: int, dim: int) -> list[int]:
    if hidden_dims is None:
        # MADE needs at least D - 1 hidden units per layer for every output to see all its predecessors
        return [max(2 * dim, in_features)]
    if isinstance(hidden_dims, int):
        hidden_dims = [hidden_dims]
    sizes = list(hidden_dims)
    if not sizes or not all(is_int(h) and h >= 1 for h in sizes):
        raise ValueError(f"`hidden_dims` must be a positive integer or a list of them; got {hidden_dims!r}.")
    return [int(h) for h in sizes]


class AutoregressiveDistribution(Distribution):
    """The chain-rule distribution of an :class:`AutoregressiveEmission` at the features ``u`` ``(..., F)``.

    Batch shape ``(...)``, event shape ``(D,)``. ``scale`` (Gaussian only)
    is DeepAR's mean scale: the density is over ``x = s y`` with ``y`` drawn
    from the network (the ``-sum log s`` Jacobian included).
    """

    arg_constraints: ClassVar[dict] = {}
    #: read by tsgen.protocol.observed_log_prob: a joint density over the dimensions, exact
    factorises: ClassVar[bool] = False
    exact_log_prob: ClassVar[bool] = True

    def __init__(self, emission: AutoregressiveEmission, features: Tensor, scale: Tensor | None = None):
        self.emission = emission
        self.features = features
        self.scale = scale
        batch_shape = features.shape[:-1]
        if scale is not None:
            batch_shape = torch.broadcast_shapes(batch_shape, scale.shape[:-1])
        super().__init__(batch_shape, torch.Size([emission.dim]), validate_args=False)
        # where observed_log_prob reads vectors with nothing observed (a point of the support)
        self.fill_value = emission.fill_value

    @property
    def has_rsample(self) -> bool:
        return self.emission.family == "normal"

    @property
    def support(self):
        if self.emission.family == "bernoulli":
            return constraints.independent(constraints.boolean, 1)
        return constraints.independent(constraints.real, 1)

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape)
        features = self.features.expand(*shape, self.features.shape[-1])
        scale = None if self.scale is None else self.scale.expand(*shape, self.scale.shape[-1])
        return AutoregressiveDistribution(self.emission, features, scale)

    def _unscaled(self, x: Tensor) -> Tensor:
        return x if self.scale is None else x / self.scale

    def log_prob(self, value: Tensor) -> Tensor:
        """``log g(x)`` ``(...)``: every conditional from one pass of the network."""
        shape = torch.broadcast_shapes(value.shape[:-1], self.batch_shape)
        x = self._unscaled(value).expand(*shape, value.shape[-1])
        params = self.emission.conditionals(x, self.features)
        if self.emission.family == "bernoulli":
            return -F.binary_cross_entropy_with_logits(params[0], x, reduction="none").sum(-1)
        loc, sigma = params
        log_density = -((x - loc) / sigma).pow(2) / 2 - sigma.log() - _LOG_SQRT_2PI
        if self.scale is not None:
            log_density = log_density - self.scale.log()
        return log_density.sum(-1)

    def _draw(self, sample_shape, reparameterized: bool) -> Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape
        D = self.emission.dim
        features = self.features.expand(*shape, self.features.shape[-1])
        x = features.new_zeros(*shape, D)
        normal = self.emission.family == "normal"
        noise = torch.randn(*shape, D, dtype=x.dtype, device=x.device) if normal else None
        for d in range(D):
            params = self.emission.conditionals(x, features)
            if normal:
                column = params[0][..., d] + params[1][..., d] * noise[..., d]
            else:
                column = torch.bernoulli(torch.sigmoid(params[0][..., d]))
            # out of place, so a reparameterised draw keeps its graph
            x = torch.cat([x[..., :d], column[..., None], x[..., d + 1:]], dim=-1)
        return x if self.scale is None else x * self.scale

    def sample(self, sample_shape=torch.Size()) -> Tensor:
        """``D`` passes: dimension ``d`` from its conditional once ``x_{<d}`` is drawn."""
        with torch.no_grad():
            return self._draw(sample_shape, False)

    def rsample(self, sample_shape=torch.Size()) -> Tensor:
        if not self.has_rsample:
            raise NotImplementedError("a Bernoulli autoregressive emission has no reparameterised draws.")
        return self._draw(sample_shape, True)


class AutoregressiveEmission(DistributionHead):
    """Base of the autoregressive emissions: ``conditionals(x, features)`` gives every dimension's
    parameters ``(..., D)`` from one pass, dimension ``d`` reading ``x_{<d}`` only."""

    args_dim: ClassVar[dict[str, int]] = {}
    factorizes = False
    #: the conditionals' family: "bernoulli" (logits) or "normal" (loc, scale)
    family: ClassVar[str] = "bernoulli"
    scalable = False
    support = "binary values (0 or 1)"

    def outside_support(self, values):
        if self.family == "bernoulli":
            return (values != 0) & (values != 1)
        return super().outside_support(values)

    def conditionals(self, x: Tensor, features: Tensor) -> tuple[Tensor, ...]:
        raise NotImplementedError

    def output_bias(self) -> Tensor:
        """The bias added to every dimension's logit (Bernoulli families)."""
        raise NotImplementedError

    def initialise_frequency(self, frequency: Tensor) -> None:
        """Start every key's logit bias at the logit of its training frequency ``(D,)`` (as
        :class:`tsgen.components.heads.BernoulliHead` is started: see ``DeepForecaster._initialise``)."""
        with torch.no_grad():
            self.output_bias().copy_(torch.logit(frequency.clamp(1e-3, 1 - 1e-3)))

    def forward(self, features: Tensor, scale: Tensor | None = None) -> AutoregressiveDistribution:
        return AutoregressiveDistribution(self, features, scale if self.family == "normal" else None)


class _MADEBase(AutoregressiveEmission):
    def __init__(self, in_features: int, dim: int, hidden_dims: int | Sequence[int] | None = None):
        super().__init__(in_features, dim)
        # pyro's import is deferred to here: the module is loaded only when a model asks for it
        from pyro.nn import ConditionalAutoRegressiveNN

        self.hidden_dims = _hidden_sizes(hidden_dims, in_features, dim)
        param_dims = [1] if self.family == "bernoulli" else [1, 1]
        with warnings.catch_warnings():
            # D = 1 is a plain conditional distribution, which pyro warns about; the models allow it
            warnings.filterwarnings("ignore", message="ConditionalAutoRegressiveNN input_dim = 1")
            self.made = ConditionalAutoRegressiveNN(
                dim, in_features, self.hidden_dims, param_dims=param_dims, permutation=torch.arange(dim),
            )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, hidden_dims={self.hidden_dims}"


@register_emission
class MADE(_MADEBase):
    """Bernoulli MADE over the ``D`` binary dimensions: ``p(x_d = 1 | x_{<d}, u) = sigmoid(l_d)``.

    Parameters
    ----------
    in_features, dim : int
        Width of the state's features and ``D``.
    hidden_dims : int or list of int, optional
        Hidden layers of the masked network (default one of ``max(2D, in_features)``).
    """

    name = "made"

    def conditionals(self, x, features):
        logits = self.made(x, features)
        return (logits,)

    def output_bias(self):
        return self.made.layers[-1].bias


@register_emission
class GaussianMADE(_MADEBase):
    """Gaussian MADE over real vectors: ``x_d | x_{<d}, u ~ N(mu_d, sigma_d^2)``, ``sigma = softplus(.)``.

    With DeepAR scaling the network works on ``x / s`` (a location-scale family).
    """

    name = "made_normal"
    family = "normal"
    scalable = True
    location_scale = True
    support = None

    def conditionals(self, x, features):
        loc, raw = self.made(x, features)
        return loc, positive(raw)


@register_emission
class NADE(AutoregressiveEmission):
    r"""Bernoulli NADE with weights shared along the order, its biases given by the state (RNN-NADE).

    .. math::

        h_d = \sigma(c(u) + W_{:,<d}\, x_{<d}), \qquad
        p(x_d = 1 \mid x_{<d}, u) = \sigma(b_d(u) + V_d \cdot h_d)

    Parameters
    ----------
    in_features, dim : int
        Width of the state's features and ``D``.
    hidden_dim : int, optional
        NADE's hidden units (default ``max(D, 16)``; the RNN-NADE used 150 on the 88 piano keys).
    """

    name = "nade"

    def __init__(self, in_features: int, dim: int, hidden_dim: int | None = None):
        super().__init__(in_features, dim)
        hidden_dim = max(dim, 16) if hidden_dim is None else hidden_dim
        if not is_int(hidden_dim) or hidden_dim < 1:
            raise ValueError(f"`hidden_dim` must be a positive integer; got {hidden_dim!r}.")
        self.hidden_dim = int(hidden_dim)
        self.visible_bias = nn.Linear(in_features, dim)
        self.hidden_bias = nn.Linear(in_features, self.hidden_dim)
        self.W = nn.Parameter(torch.randn(dim, self.hidden_dim) / self.hidden_dim ** 0.5)
        self.V = nn.Parameter(torch.randn(dim, self.hidden_dim) / self.hidden_dim ** 0.5)

    #: rows per chunk: the hidden units of every dimension, (rows, D, H), are the memory NADE needs
    chunk_rows: ClassVar[int] = 4096

    def conditionals(self, x, features):
        shape = torch.broadcast_shapes(x.shape[:-1], features.shape[:-1])
        x = x.expand(*shape, x.shape[-1]).reshape(-1, x.shape[-1])
        features = features.expand(*shape, features.shape[-1]).reshape(-1, features.shape[-1])
        logits = [self._logits(x[i:i + self.chunk_rows], features[i:i + self.chunk_rows])
                  for i in range(0, max(len(x), 1), self.chunk_rows)]
        return (torch.cat(logits).reshape(*shape, self.dim),)

    def output_bias(self):
        return self.visible_bias.bias

    def _logits(self, x: Tensor, features: Tensor) -> Tensor:
        # a_d = c + sum_{j<d} x_j W_j: an exclusive cumulative sum over the order
        contributions = x[..., :, None] * self.W
        preceding = contributions.cumsum(-2) - contributions
        hidden = torch.sigmoid(self.hidden_bias(features)[..., None, :] + preceding)
        return self.visible_bias(features) + (hidden * self.V).sum(-1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, hidden_dim={self.hidden_dim}"

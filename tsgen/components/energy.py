"""Energy-based emissions: a learned energy ``E(x | h)`` of the observation given the model's features ``h``.

``"energy"`` (exact, one dimension at a time). The head predicts a base
location and scale ``mu, sigma`` (as the Normal head does) and an MLP ``f``
of ``(z, h)``, ``z = (x - mu) / sigma``; per dimension

    E(z | h) = z^2 / 2 + f(clip(z, -c, c), h),
    p(x | h) = exp(-E(z | h)) / (sigma Z(h)),   Z(h) = int exp(-E(u | h)) du.

The quadratic confines the density; ``f`` reshapes it (bimodal, skewed,
sharp). Beyond ``+-c`` (``bound``, in units of ``sigma``) ``f`` is frozen at
its value on the edge, so each tail is a Gaussian tail times a constant with
a closed-form mass: ``Z`` counts all the probability, and training cannot
gain likelihood by pushing mass where the grid does not look. Inside,
``Z`` is the trapezoid rule on ``grid_size`` equally spaced points of
``[-c, c]``: the grid moves and stretches with each step's ``mu, sigma``
(an adaptive grid). The trapezoid rule, not Simpson's, because for a smooth
integrand that is negligible at both ends its error falls exponentially
with the number of points (Euler-Maclaurin: every endpoint correction
vanishes) while Simpson's reweighting is only fourth order; ``f`` uses
SiLU units so it is smooth. ``log_prob`` evaluates the energy at ``x``
itself, so maximum likelihood is exact up to the quadrature error, which
:attr:`EnergyDistribution.quadrature_error` reports (the change of ``log Z``
when every other point is dropped: a bound on the error of the coarser
rule). Samples come by inverse CDF on the grid (the trapezoid CDF, inverted
within a cell as the piecewise-linear density it integrates, exactly in the
tails); mean and variance are grid moments plus the tails' closed forms.
Dimensions are independent given ``h``, so the emission factorises and
partially observed vectors are scored on their observed components.

``"energy_nce"`` (a few dimensions jointly, estimated). One energy over the
vector, ``p(x | h) = N(x; mu, diag sigma^2) exp(-g(clip(z, -c, c), h)) /
Z(h)``, with ``g`` an MLP of ``(z, h)`` and ``Z(h) = E_{eps ~ N(0, I)}
exp(-g(clip(eps), h))`` (finite: ``g`` is continuous on the box). A
``D``-dimensional grid is out of reach, so ``Z`` is importance-sampled with
``n_noise`` standard normal draws, the base Gaussian being the proposal.
``log_prob`` includes the scored point among the draws,

    log p^(x) = log N(x; mu, sigma) - g(z) - log[(exp(-g(z)) + sum_k exp(-g(eps_k))) / (K + 1)],

which makes ``-log p^(x)`` the ranking form of noise-contrastive estimation
(Ma & Collins 2018: classify the datum among ``K`` noise draws) for ``g``
with the base Gaussian as the noise, plus exact maximum likelihood for the
base (``Z`` does not depend on ``mu, sigma``). So the models' ordinary
training loss ``-log_prob`` *is* NCE: no other loss and no wiring are
needed. The estimate is consistent as ``K`` grows but not unbiased (the
log of a ratio; ``exp`` of it is not an unbiased density either, so a
particle filter weighting with it is consistent in ``K``, not exact), hence
``exact_log_prob = False``. With the datum among the draws the normaliser
is at least ``exp(-g(z)) / (K + 1)``, so ``log p^(x) <= log N(x; mu, sigma)
+ log(K + 1)``: training cannot run a datum's estimate off to infinity by
putting a spike where no noise draw lands. Samples are drawn by
sampling-importance-resampling from the base (``n_noise`` candidates per
draw; exact as ``K`` grows).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Independent, Normal, constraints
from torch.distributions.utils import broadcast_all, lazy_property

from tsgen._validation import is_int
from tsgen.components.heads import DistributionHead, register_emission
from tsgen.components.mlp import ConditionalMLP
from tsgen.components.positive import positive

__all__ = ["EnergyDistribution", "EnergyHead", "NCEEnergyDistribution", "NCEEnergyHead"]

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def _check_bound_and_points(bound, grid_size=None) -> None:
    if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not 2.0 <= bound <= 30.0:
        raise ValueError(f"`bound` must be a number of base scales in [2, 30]; got {bound!r}.")
    if grid_size is not None and (not is_int(grid_size) or grid_size < 9 or grid_size % 2 == 0):
        raise ValueError(
            f"`grid_size` must be an odd integer >= 9 (the error check drops every other point); got {grid_size!r}."
        )


def _batch_last(values: Tensor, n_batch: int) -> tuple[Tensor, torch.Size]:
    """``(*sample, *batch)`` -> ``(*batch, N)`` (contiguous, for ``searchsorted``/``gather``) and ``sample``'s shape."""
    sample_shape = values.shape[: values.dim() - n_batch]
    flat = values.reshape(-1, *values.shape[values.dim() - n_batch:])
    return flat.movedim(0, -1).contiguous(), sample_shape


def _batch_first(values: Tensor, sample_shape: torch.Size) -> Tensor:
    """The inverse of :func:`_batch_last`."""
    return values.movedim(-1, 0).reshape(torch.Size([*sample_shape, *values.shape[:-1]]))


class _StandardisedMoments:
    """``mean``/``variance`` of ``x = loc + scale z`` from ``_moments = (E z, E z^2)``."""

    @property
    def mean(self) -> Tensor:
        return self.loc + self.scale * self._moments[0]

    @property
    def variance(self) -> Tensor:
        first, second = self._moments
        return self.scale**2 * (second - first**2).clamp_min(0.0)


class EnergyDistribution(_StandardisedMoments, Distribution):
    """``p(x) = exp(-z^2/2 - f(clip(z, -c, c))) / (scale Z)``, ``z = (x - loc) / scale``, normalised by quadrature.

    Univariate (event shape ``()``), batch shape that of ``loc``/``scale``.
    See the module docstring for the construction.

    Parameters
    ----------
    loc, scale : Tensor
        Base location and (positive) scale, broadcastable to the batch shape.
    tilt : callable
        ``f``: maps ``z`` of shape ``(*sample, *batch_shape)`` to a tensor of the same shape (it must
        broadcast over leading sample dimensions; the grid enters as one of ``grid_size`` rows).
    bound : float
        ``c``, in base scales: the grid spans ``[-c, c]`` and ``f`` is frozen beyond it.
    grid_size : int
        Odd number of quadrature points.
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.real
    has_rsample = False

    def __init__(self, loc: Tensor, scale: Tensor, tilt: Callable[[Tensor], Tensor], bound: float = 8.0,
                 grid_size: int = 81, validate_args=None):
        _check_bound_and_points(bound, grid_size)
        if not callable(tilt):
            raise TypeError(f"`tilt` must be a callable z -> f(z); got {type(tilt).__name__}.")
        self.loc, self.scale = broadcast_all(loc, scale)
        self.tilt = tilt
        self.bound = float(bound)
        self.grid_size = int(grid_size)
        super().__init__(self.loc.shape, validate_args=validate_args)

    # ------------------------------------------------------------ the grid
    @lazy_property
    def _nodes(self) -> Tensor:
        return torch.linspace(-self.bound, self.bound, self.grid_size, dtype=self.loc.dtype, device=self.loc.device)

    @property
    def _spacing(self) -> float:
        return 2.0 * self.bound / (self.grid_size - 1)

    @lazy_property
    def _log_tail(self) -> Tensor:
        """``log int_c^inf exp(-u^2/2) du``."""
        c = torch.tensor(-self.bound, dtype=self.loc.dtype, device=self.loc.device)
        return _LOG_SQRT_2PI + torch.special.log_ndtr(c)

    @lazy_property
    def _unnormalised(self) -> tuple[Tensor, Tensor, Tensor]:
        """``-E`` on the grid ``(*batch, G)`` and the log masses of the two tails ``(*batch,)``."""
        n_batch = len(self.batch_shape)
        grid = self._nodes.reshape(-1, *([1] * n_batch)).expand(-1, *self.batch_shape)
        f = self.tilt(grid).movedim(0, -1)
        log_density = -0.5 * self._nodes**2 - f
        return log_density, self._log_tail - f[..., 0], self._log_tail - f[..., -1]

    def _log_normaliser(self, stride: int) -> Tensor:
        log_density, left, right = self._unnormalised
        log_density = log_density[..., ::stride]
        log_weights = torch.full((log_density.shape[-1],), math.log(stride * self._spacing),
                                 dtype=log_density.dtype, device=log_density.device)
        log_weights[[0, -1]] -= math.log(2.0)
        pieces = torch.cat([left.unsqueeze(-1), log_density + log_weights, right.unsqueeze(-1)], dim=-1)
        return torch.logsumexp(pieces, dim=-1)

    @lazy_property
    def log_normaliser(self) -> Tensor:
        """``log Z`` ``(*batch,)`` (in units of ``z``: the density of ``x`` also divides by ``scale``)."""
        return self._log_normaliser(1)

    @property
    def quadrature_error(self) -> Tensor:
        """``|log Z - log Z_{2h}|`` ``(*batch,)``: the normaliser's change when every other point is dropped.

        The trapezoid error shrinks much faster than the spacing, so this
        overstates the error of ``log_prob``; when it is not small the
        density has features narrower than the grid (raise ``grid_size``).
        """
        return (self.log_normaliser - self._log_normaliser(2)).abs()

    @lazy_property
    def _table(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Density on the grid ``p`` ``(*batch, G)``, the CDF at the nodes ``(*batch, G)`` and the tail masses."""
        log_density, left, right = self._unnormalised
        log_z = self.log_normaliser.unsqueeze(-1)
        p = torch.exp(log_density - log_z)
        p_left, p_right = torch.exp(left - log_z[..., 0]), torch.exp(right - log_z[..., 0])
        cells = 0.5 * self._spacing * (p[..., 1:] + p[..., :-1])
        cdf = torch.cat([torch.zeros_like(p[..., :1]), torch.cumsum(cells, dim=-1)], dim=-1) + p_left.unsqueeze(-1)
        return p, cdf, p_left, p_right

    def _table_for(self, batch_last: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """:attr:`_table` expanded to the batch dimensions of a ``(*batch', N)`` tensor (values that broadcast
        a batch dimension of size 1)."""
        batch = batch_last.shape[:-1]
        p, cdf, p_left, p_right = self._table
        return p.expand(*batch, -1), cdf.expand(*batch, -1), p_left.expand(batch), p_right.expand(batch)

    # ------------------------------------------------------------ density
    def _standardise(self, value: Tensor) -> Tensor:
        z = (value - self.loc) / self.scale
        return z.expand(torch.broadcast_shapes(z.shape, self.batch_shape))

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        z = self._standardise(value)
        f = self.tilt(z.clamp(-self.bound, self.bound))
        return -0.5 * z**2 - f - self.log_normaliser - torch.log(self.scale)

    def cdf(self, value: Tensor) -> Tensor:
        """The trapezoid CDF (the piecewise-linear density through the grid values), exact in the tails."""
        z, sample_shape = _batch_last(self._standardise(value), len(self.batch_shape))
        p, cdf, p_left, p_right = self._table_for(z)
        h, c = self._spacing, self.bound
        index = torch.floor((z + c) / h).clamp(0, self.grid_size - 2).long()
        t = ((z + c) / h - index).clamp(0.0, 1.0)
        p0, p1 = p.gather(-1, index), p.gather(-1, index + 1)
        inside = cdf.gather(-1, index) + h * (p0 * t + 0.5 * (p1 - p0) * t**2)
        log_tail_mass = torch.special.log_ndtr(torch.tensor(-c, dtype=z.dtype, device=z.device))
        below = p_left.unsqueeze(-1) * torch.exp(torch.special.log_ndtr(z) - log_tail_mass)
        above = cdf[..., -1:] + p_right.unsqueeze(-1) * (1 - torch.exp(torch.special.log_ndtr(-z) - log_tail_mass))
        result = torch.where(z < -c, below, torch.where(z > c, above, inside))
        return _batch_first(result, sample_shape)

    def icdf(self, value: Tensor) -> Tensor:
        """Inverse of :meth:`cdf`: a quadratic solved within the grid cell, the normal quantile in the tails."""
        u, sample_shape = _batch_last(value.expand(torch.broadcast_shapes(value.shape, self.batch_shape)),
                                      len(self.batch_shape))
        p, cdf, p_left, p_right = self._table_for(u)
        h = self._spacing
        index = (torch.searchsorted(cdf, u, right=True) - 1).clamp(0, self.grid_size - 2)
        p0, p1 = p.gather(-1, index), p.gather(-1, index + 1)
        # mass of the cell up to a fraction t: h (p0 t + (p1 - p0) t^2 / 2) = r, solved in the form without cancellation
        r = (u - cdf.gather(-1, index)).clamp_min(0.0)
        a, b = 0.5 * h * (p1 - p0), h * p0
        root = torch.sqrt((b * b + 4 * a * r).clamp_min(0.0))
        denominator = b + root
        t = torch.where(denominator > 0, 2 * r / denominator.clamp_min(torch.finfo(u.dtype).tiny),
                        torch.zeros_like(r)).clamp(0.0, 1.0)
        z = self._nodes[index] + t * h
        tail = torch.special.ndtr(torch.tensor(-self.bound, dtype=u.dtype, device=u.device))
        tiny = torch.finfo(u.dtype).tiny
        p_left, p_right = p_left.unsqueeze(-1), p_right.unsqueeze(-1)
        lower = torch.special.ndtri((u / p_left.clamp_min(tiny)).clamp(tiny, 1.0) * tail)
        upper = -torch.special.ndtri(((1 - u) / p_right.clamp_min(tiny)).clamp(tiny, 1.0) * tail)
        z = torch.where(u < p_left, lower.clamp(max=-self.bound), z)
        z = torch.where(u > cdf[..., -1:], upper.clamp(min=self.bound), z)
        loc, scale = (v.expand(u.shape[:-1]).unsqueeze(-1) for v in (self.loc, self.scale))
        return _batch_first(loc + scale * z, sample_shape)

    def sample(self, sample_shape=torch.Size()) -> Tensor:
        with torch.no_grad():
            shape = self._extended_shape(sample_shape)
            return self.icdf(torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device))

    # ------------------------------------------------------------ moments
    @lazy_property
    def _moments(self) -> tuple[Tensor, Tensor]:
        """``E z`` and ``E z^2``: trapezoid sums plus the tails (``E[z | z > c] = phi(c) / Phi(-c)``)."""
        p, _, p_left, p_right = self._table
        weights = torch.full_like(self._nodes, self._spacing)
        weights[[0, -1]] *= 0.5
        first = (p * weights * self._nodes).sum(-1)
        second = (p * weights * self._nodes**2).sum(-1)
        c = torch.tensor(self.bound, dtype=p.dtype, device=p.device)
        mills = torch.exp(-0.5 * c**2 - _LOG_SQRT_2PI - torch.special.log_ndtr(-c))
        first = first + (p_right - p_left) * mills
        second = second + (p_left + p_right) * (1 + c * mills)
        return first, second


class _BaseLocationScale(DistributionHead):
    """The base ``mu, sigma`` of both energy heads, as the Normal head predicts them (DeepAR scale applied)."""

    args_dim = {"loc": 1, "scale": 1}
    location_scale = True

    def domain_map(self, loc, scale):
        return {"loc": loc, "scale": positive(scale)}

    def base(self, features: Tensor, scale: Tensor | None) -> tuple[Tensor, Tensor]:
        args = self.domain_map(**{arg: layer(features) for arg, layer in self.proj.items()})
        if scale is None:
            return args["loc"], args["scale"]
        return args["loc"] * scale, args["scale"] * scale


class EnergyHead(_BaseLocationScale):
    """``"energy"``: per dimension an energy ``z^2/2 + f(z, h)`` normalised by quadrature (module docstring).

    The tilt ``f`` is a two-hidden-layer SiLU network of ``(z, h)`` with its
    own weights per dimension; its output layer starts at zero, so an
    untrained head is exactly the Normal head and training only adds the
    shape the data ask for.

    Parameters
    ----------
    in_features, dim : int
    hidden : int
        Width of the tilt's hidden layers.
    bound : float
        ``c`` in base scales.
    grid_size : int
        Odd number of quadrature points (81: spacing 0.2 base scales with ``bound=8``; for a smooth tilt the
        normaliser is then exact to ~1e-7, the sampler's CDF to ~1e-3, which is O(spacing^2)). The cost of a step
        is ``grid_size`` evaluations of the tilt per dimension (and per particle inside a particle filter);
        raise it when :attr:`EnergyDistribution.quadrature_error` of the fitted model is not small.
    """

    name = "energy"

    def __init__(self, in_features: int, dim: int, hidden: int = 16, bound: float = 8.0, grid_size: int = 81):
        super().__init__(in_features, dim)
        if not is_int(hidden) or hidden < 1:
            raise ValueError(f"`hidden` must be a positive integer; got {hidden!r}.")
        _check_bound_and_points(bound, grid_size)
        self.hidden, self.bound, self.grid_size = int(hidden), float(bound), int(grid_size)
        # the first layer is linear in (z, h): its features' part is computed once per step, not per grid point
        self.feature_layer = nn.Linear(in_features, dim * hidden)
        self.z_weight = nn.Parameter(torch.randn(dim, hidden))
        bound_hidden = 1.0 / math.sqrt(hidden)
        self.hidden_weight = nn.Parameter(torch.empty(dim, hidden, hidden).uniform_(-bound_hidden, bound_hidden))
        self.hidden_bias = nn.Parameter(torch.zeros(dim, hidden))
        self.out_weight = nn.Parameter(torch.zeros(dim, hidden))

    def _tilt(self, first: Tensor) -> Callable[[Tensor], Tensor]:
        """``f(., h)`` for the features' first-layer part ``first`` ``(..., D, hidden)``."""
        act = nn.functional.silu

        def tilt(z: Tensor) -> Tensor:
            u = act(first + z.unsqueeze(-1) * self.z_weight)
            u = act(torch.einsum("...dh,dhk->...dk", u, self.hidden_weight) + self.hidden_bias)
            return (u * self.out_weight).sum(-1)

        return tilt

    def forward(self, features: Tensor, scale: Tensor | None = None) -> Distribution:
        loc, sigma = self.base(features, scale)
        first = self.feature_layer(features).unflatten(-1, (self.dim, self.hidden))
        base = EnergyDistribution(loc, sigma, self._tilt(first), self.bound, self.grid_size, validate_args=False)
        return Independent(base, 1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, hidden={self.hidden}, bound={self.bound}, grid_size={self.grid_size}"


class NCEEnergyDistribution(_StandardisedMoments, Distribution):
    """``p(x) = N(x; loc, diag scale^2) exp(-g(clip(z, -c, c))) / Z`` over vectors, ``Z`` importance-sampled.

    Event shape ``(D,)``; see the module docstring for ``log_prob`` (the
    ranking-NCE form), sampling and what is estimated.

    Parameters
    ----------
    loc, scale : Tensor ``(..., D)``
    tilt : callable
        ``g``: ``z`` ``(*sample, ..., D)`` -> ``(*sample, ...)``.
    n_noise : int
        ``K``, the normal draws behind the normaliser and behind each sample.
    bound : float
        ``c`` in base scales.
    """

    arg_constraints = {"loc": constraints.real_vector, "scale": constraints.independent(constraints.positive, 1)}
    support = constraints.real_vector
    has_rsample = False

    def __init__(self, loc: Tensor, scale: Tensor, tilt: Callable[[Tensor], Tensor], n_noise: int = 128,
                 bound: float = 8.0, validate_args=None):
        _check_bound_and_points(bound)
        if not is_int(n_noise) or n_noise < 1:
            raise ValueError(f"`n_noise` must be a positive integer; got {n_noise!r}.")
        self.loc, self.scale = broadcast_all(loc, scale)
        if self.loc.dim() < 1:
            raise ValueError("`loc` must have a trailing event dimension (..., D).")
        self.tilt, self.n_noise, self.bound = tilt, int(n_noise), float(bound)
        super().__init__(self.loc.shape[:-1], self.loc.shape[-1:], validate_args=validate_args)

    def _log_weight(self, z: Tensor) -> Tensor:
        """``-g(clip(z))``: the log density ratio to the base."""
        return -self.tilt(z.clamp(-self.bound, self.bound))

    @lazy_property
    def _noise(self) -> tuple[Tensor, Tensor]:
        """``K`` standard normal draws ``(K, *batch, D)`` and their log weights ``(K, *batch)``."""
        eps = torch.randn((self.n_noise, *self.loc.shape), dtype=self.loc.dtype, device=self.loc.device)
        return eps, self._log_weight(eps)

    @property
    def log_normaliser(self) -> Tensor:
        """The importance estimate of ``log Z`` from the noise draws alone ``(*batch,)``."""
        return torch.logsumexp(self._noise[1], dim=0) - math.log(self.n_noise)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        z = (value - self.loc) / self.scale
        log_base = (-0.5 * z**2 - torch.log(self.scale) - _LOG_SQRT_2PI).sum(-1)
        log_w = self._log_weight(z)
        noise = self._noise[1]
        noise = noise.reshape(noise.shape[0], *([1] * (log_w.dim() - noise.dim() + 1)), *noise.shape[1:])
        pieces = torch.cat([log_w.unsqueeze(0), noise.expand(-1, *log_w.shape)], dim=0)
        return log_base + log_w - (torch.logsumexp(pieces, dim=0) - math.log(self.n_noise + 1))

    def sample(self, sample_shape=torch.Size()) -> Tensor:
        """Sampling-importance-resampling: one of ``K`` base draws, chosen in proportion to its weight."""
        with torch.no_grad():
            shape = self._extended_shape(sample_shape)
            candidates = torch.randn((self.n_noise, *shape), dtype=self.loc.dtype, device=self.loc.device)
            choice = Categorical(logits=self._log_weight(candidates).movedim(0, -1)).sample()
            index = choice.reshape(1, *choice.shape, 1).expand(1, *shape)
            z = candidates.gather(0, index).squeeze(0)
            return self.loc + self.scale * z

    @lazy_property
    def _moments(self) -> tuple[Tensor, Tensor]:
        """Self-normalised importance estimates of ``E z`` and ``E z^2`` from the noise draws."""
        eps, log_w = self._noise
        w = torch.softmax(log_w, dim=0).unsqueeze(-1)
        return (w * eps).sum(0), (w * eps**2).sum(0)


class NCEEnergyHead(_BaseLocationScale):
    """``"energy_nce"``: one energy over the ``D``-vector, trained by (ranking) NCE through ``-log_prob``.

    ``g`` is a two-hidden-layer SiLU network of ``(z, h)`` whose output layer
    starts at zero (an untrained head is the diagonal Normal head).

    Parameters
    ----------
    in_features, dim : int
    hidden : int
        Width of the tilt's hidden layers.
    n_noise : int
        ``K``: noise draws per step for the normaliser (and candidates per sample).
    bound : float
        ``c`` in base scales.
    """

    name = "energy_nce"
    factorizes = False
    exact_log_prob = False

    def __init__(self, in_features: int, dim: int, hidden: int = 16, n_noise: int = 128, bound: float = 8.0):
        super().__init__(in_features, dim)
        if not is_int(hidden) or hidden < 1:
            raise ValueError(f"`hidden` must be a positive integer; got {hidden!r}.")
        if not is_int(n_noise) or n_noise < 1:
            raise ValueError(f"`n_noise` must be a positive integer; got {n_noise!r}.")
        _check_bound_and_points(bound)
        self.hidden, self.n_noise, self.bound = int(hidden), int(n_noise), float(bound)
        self.tilt_net = ConditionalMLP(dim, in_features, [hidden, hidden], 1, activation=nn.SiLU)
        last = self.tilt_net.rest.net[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, features: Tensor, scale: Tensor | None = None) -> Distribution:
        loc, sigma = self.base(features, scale)
        conditioned = self.tilt_net.condition(features)

        def tilt(z: Tensor) -> Tensor:
            return self.tilt_net(z, conditioned).squeeze(-1)

        return NCEEnergyDistribution(loc, sigma, tilt, self.n_noise, self.bound, validate_args=False)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, hidden={self.hidden}, n_noise={self.n_noise}, bound={self.bound}"


register_emission(EnergyHead)
register_emission(NCEEnergyHead)

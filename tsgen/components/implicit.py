r"""Implicit distributions: defined by a sampler only (the seed's likelihood-free models).

An implicit transition or emission is a simulator
``z_t = g(z_{t-1}, eps_t, context_t)`` with noise ``eps_t`` from a fixed law:
it can be drawn from (and, when ``g`` is differentiable in its parameters,
drawn from reparameterised), but its density is unknown.
:class:`ImplicitDistribution` gives such a simulator the shape of a
``torch.distributions.Distribution`` so that it plugs into the places that
only draw:

- the bootstrap particle filter (an implicit **transition**: the filter
  only samples ``f`` and weighs by the emission's density), hence
  ``log_likelihood``/``filter``/``predict``/``sample`` of a
  :class:`tsgen.StateSpaceForecaster` with ``proposal="bootstrap"``;
- the likelihood-free fits (an implicit **emission** or transition):
  ``StateSpaceForecaster(method="mmd" | "energy" | "gan" | "abc")``, see
  :mod:`tsgen.inference.likelihood_free`.

Whatever needs the density refuses it with a :class:`NotImplementedError`
that says so and names the alternatives: the guided filter (``f / q``
weights), the auxiliary filter (the transition's mean), FFBSi and PGAS
(backward kernels ``f(z_{t+1} | z_t)``), particle EM's M-step and PMMH
with a particle filter over an implicit emission.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.distributions import Distribution, constraints

__all__ = ["ImplicitDistribution", "NO_DENSITY"]

#: the remedy every refusal names
NO_DENSITY = (
    "an ImplicitDistribution is defined only by its sampler and has no {what}: use the bootstrap particle filter "
    "(proposal='bootstrap') for an implicit transition, or fit by a likelihood-free method "
    "(method='mmd', 'energy', 'gan' or 'abc'); the guided and auxiliary filters, FFBSi, PGAS, particle EM and "
    "PMMH need the density."
)


def _shape(name: str, value) -> torch.Size:
    try:
        shape = torch.Size(value)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be a tuple of non-negative integers; got {value!r}.") from None
    if any(size < 0 for size in shape):
        raise ValueError(f"`{name}` must be a tuple of non-negative integers; got {tuple(value)}.")
    return shape


class ImplicitDistribution(Distribution):
    r"""A distribution known only through a sampler.

    Parameters
    ----------
    sampler : callable
        ``sampler(shape) -> Tensor`` of shape ``shape + event_shape``, where
        ``shape = sample_shape + batch_shape``: independent draws, the noise
        drawn by the sampler itself (e.g. ``torch.randn(shape)``) so that
        every batch element gets its own. Parameters the sampler reads
        broadcast against ``shape`` (leading particle and series dimensions).
    batch_shape : tuple of int
    event_shape : tuple of int, default ()
    reparameterized : bool, default True
        Whether ``sampler`` is differentiable in the parameters it reads
        (``rsample`` keeps the graph; the gradient fits need it). False:
        ``rsample`` raises and ``sample`` runs without a graph.
    support : torch.distributions.constraints.Constraint, default real

    Examples
    --------
    An implicit AR(1) step with a heavy-tailed, skewed noise (no closed
    density)::

        def transition(self, z_prev, context):
            def draw(shape):
                eps = torch.randn(shape)
                return self.phi * z_prev + self.sigma * (eps + 0.3 * eps.abs() ** 1.5)
            return ImplicitDistribution(draw, z_prev.shape)
    """

    arg_constraints: dict = {}

    def __init__(self, sampler: Callable[[torch.Size], Tensor], batch_shape=(), event_shape=(),
                 reparameterized: bool = True, support=constraints.real):
        if not callable(sampler):
            raise TypeError(f"`sampler` must be a callable shape -> Tensor; got {type(sampler).__name__}.")
        if not isinstance(reparameterized, bool):
            raise TypeError(f"`reparameterized` must be a bool; got {reparameterized!r}.")
        if not isinstance(support, constraints.Constraint):
            raise TypeError(f"`support` must be a torch.distributions constraint; got {type(support).__name__}.")
        self.sampler = sampler
        self.reparameterized = reparameterized
        self._support = support
        super().__init__(_shape("batch_shape", batch_shape), _shape("event_shape", event_shape), validate_args=False)

    # whether draws carry a gradient: read by the filters and the likelihood-free fits
    @property
    def has_rsample(self) -> bool:
        return self.reparameterized

    @property
    def support(self):
        return self._support

    def expand(self, batch_shape, _instance=None) -> "ImplicitDistribution":
        # the sampler is told the full shape at each call, so an expanded copy needs no new sampler: its
        # draws stay independent along the new dimensions
        batch_shape = _shape("batch_shape", batch_shape)
        if batch_shape != self.batch_shape:
            torch.broadcast_shapes(batch_shape, self.batch_shape)  # the usual expand error when incompatible
        return ImplicitDistribution(self.sampler, batch_shape, self.event_shape, self.reparameterized, self._support)

    def rsample(self, sample_shape=torch.Size()) -> Tensor:
        if not self.reparameterized:
            raise NotImplementedError(
                "this ImplicitDistribution was built with reparameterized=False: its draws carry no gradient."
            )
        return self._draw(sample_shape)

    def sample(self, sample_shape=torch.Size()) -> Tensor:
        with torch.no_grad():
            return self._draw(sample_shape)

    def _draw(self, sample_shape) -> Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        batch = shape[: len(shape) - len(self.event_shape)]
        value = self.sampler(batch)
        if not isinstance(value, Tensor):
            raise TypeError(f"the sampler of an ImplicitDistribution must return a Tensor; got {type(value).__name__}.")
        if value.shape != shape:
            # no silent broadcasting: a dimension left at size 1 would share one draw across particles
            raise ValueError(
                f"the sampler of an ImplicitDistribution must return shape (*shape, *event_shape) = {tuple(shape)} "
                f"for shape {tuple(batch)}; got {tuple(value.shape)}."
            )
        return value

    def log_prob(self, value: Tensor) -> Tensor:
        raise NotImplementedError(NO_DENSITY.format(what="log_prob"))

    @property
    def mean(self) -> Tensor:
        raise NotImplementedError(NO_DENSITY.format(what="closed-form mean (the auxiliary filter's look-ahead)"))

    @property
    def mode(self) -> Tensor:
        raise NotImplementedError(NO_DENSITY.format(what="mode"))

    @property
    def variance(self) -> Tensor:
        raise NotImplementedError(NO_DENSITY.format(what="closed-form variance"))

    def entropy(self) -> Tensor:
        raise NotImplementedError(NO_DENSITY.format(what="entropy"))

    def __repr__(self) -> str:
        return (f"ImplicitDistribution(batch_shape={tuple(self.batch_shape)}, event_shape={tuple(self.event_shape)}, "
                f"reparameterized={self.reparameterized})")

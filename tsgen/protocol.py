r"""The model protocol (DESIGN §2): one step of a sequential generative model.

Every sequential model in tsgen, from the linear-Gaussian state-space
model to the Deep Markov Model and the stochastic RNNs, writes its
generative step in one shape, so that ancestral sampling, particle
filtering and smoothing (:mod:`tsgen.inference.smc`), likelihoods,
forecasting and anomaly detection are written once. This module sits below
both ``models/`` and ``inference/``: inference code imports it, never a model.

One step ``t`` of the joint ``p(x_{1:T}, z_{1:T})``::

    state, f_t = model.transition(state, x_{t-1}, context_t)   # deterministic update, then f(z_t | ...)
    z_t ~ f_t                                                   # (q(z_t | ...) = model.proposal(...) in a guided filter)
    state = model.commit(state, z_t, context_t)                 # recurrences that read z_t (STORN)
    x_t ~ model.emission(state, context_t)                      # g(x_t | ...)

- ``prepare(values, mask, covariates, horizon)`` computes, in one pass over
  the observed sequences, whatever the steps need and that does not depend
  on the latent path: data scales, a guide's backward-RNN summaries,
  SRNN's deterministic states, emitted Kalman parameters. It returns a
  :class:`Context`: tensors with a time axis (length ``T + horizon``) and
  static ones, batch first. ``context.at(t)`` is ``context_t``.
- ``init_state(context, sample_shape)`` is the state before ``t = 1`` with
  batch shape ``(*sample_shape, B)``.
- ``transition`` returns ``(state, f_t)``; ``f_t`` is a
  ``torch.distributions.Distribution`` with event shape ``(latent_dim,)``
  and batch shape the state's, or None for models without a latent (an
  autoregressive RNN). ``x_prev`` is ``(*batch, D)`` with NaN where not
  observed, or None before the first step.
- ``emission`` returns the distribution of ``x_t`` with event shape ``(D,)``.
- ``proposal(state, x_t, mask_t, context_t)`` returns a learned
  ``q(z_t | ...)`` (the guide's step) or None: a filter then proposes from
  ``f_t`` (bootstrap).

Flags: ``latent_dim`` (0 without a latent) and ``markov_latent``: True when
``f(z_t | ...)`` depends on a particle only through ``z_{t-1}`` (and on
deterministic context), which backward simulation (FFBSi) needs; such
models also implement ``state_from_latent(z, context_t)``, the state a
particle with latent ``z`` has after ``commit``.

Shapes: every tensor of a state has the batch dimensions in front, so
particles and samples are leading dimensions ``(N, B, ...)`` and a context
tensor ``(B, ...)`` broadcasts against them. :func:`map_state`,
:func:`expand_state`, :func:`index_state` and :func:`stack_states` work on
any state (a tensor, a dataclass of tensors, or a tuple/list of those).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, MultivariateNormal

__all__ = [
    "Context",
    "SequentialModel",
    "ancestral_sample",
    "expand_state",
    "index_state",
    "map_state",
    "observed_log_prob",
    "stack_states",
]


@dataclass
class Context:
    """Per-sequence context from :meth:`SequentialModel.prepare`.

    ``steps`` holds tensors with a time axis at dimension 1,
    ``(B, L, ...)``, where ``L`` covers the observed steps and the forecast
    horizon; ``static`` holds tensors without one, ``(B, ...)``.
    ``at(t)`` merges the static tensors with the ``t``-th step of the
    others into one mapping, the ``context_t`` a step receives.
    """

    steps: dict[str, Tensor] = field(default_factory=dict)
    static: dict[str, Tensor] = field(default_factory=dict)

    def at(self, t: int) -> dict[str, Tensor]:
        return {**self.static, **{name: value[:, t] for name, value in self.steps.items()}}

    def sequence(self, stop: int) -> list[dict[str, Tensor]]:
        """``[at(0), ..., at(stop - 1)]``, each step tensor split by one ``unbind`` (a loop over
        time then pays no indexing op per step and tensor)."""
        columns = {name: value.unbind(1) for name, value in self.steps.items()}
        return [{**self.static, **{name: column[t] for name, column in columns.items()}} for t in range(stop)]

    @property
    def length(self) -> int | None:
        """``L``, the steps covered (None when nothing depends on time)."""
        for value in self.steps.values():
            return value.shape[1]
        return None

    def select(self, rows) -> "Context":
        """The context of a subset of sequences (``rows`` indexes dimension 0)."""
        return Context({k: v[rows] for k, v in self.steps.items()}, {k: v[rows] for k, v in self.static.items()})


class SequentialModel(nn.Module):
    """Base of the generative modules (see the module docstring for the protocol).

    Subclasses implement ``init_state``, ``transition`` and ``emission``,
    and, where they apply, ``prepare``, ``commit``, ``proposal`` and
    ``state_from_latent``.
    """

    #: size of ``z_t`` (0: no latent variable)
    latent_dim: int = 0
    #: whether ``f(z_t | ...)`` depends on a particle only through ``z_{t-1}``
    markov_latent: bool = False

    def prepare(self, values: Tensor, mask: Tensor, covariates: Tensor | None = None, horizon: int = 0) -> Context:
        """The per-sequence context; covariates ``(B, T + horizon, K)`` become the step tensor ``"covariates"``."""
        steps = {} if covariates is None else {"covariates": covariates}
        return Context(steps)

    def init_state(self, context: Context, sample_shape=()):
        raise NotImplementedError

    def transition(self, state, x_prev: Tensor | None, context_t: dict) -> tuple[object, Distribution | None]:
        raise NotImplementedError

    def commit(self, state, z: Tensor, context_t: dict):
        """The state after drawing ``z_t``: by default a state holding ``z`` in a field ``z``, or ``z`` itself."""
        if dataclasses.is_dataclass(state) and any(f.name == "z" for f in dataclasses.fields(state)):
            return dataclasses.replace(state, z=z)
        return z

    def emission(self, state, context_t: dict) -> Distribution:
        raise NotImplementedError

    def proposal(self, state, x: Tensor, mask: Tensor, context_t: dict) -> Distribution | None:
        """A learned ``q(z_t | state, x_t)``, or None (propose from the transition)."""
        return None

    def state_from_latent(self, z: Tensor, context_t: dict):
        """The committed state of a particle whose latent is ``z`` (Markov-latent models only)."""
        raise NotImplementedError(f"{type(self).__name__} does not rebuild its state from z_t alone.")


# ------------------------------------------------------------------ states
def map_state(state, fn):
    """Apply ``fn`` to every tensor of ``state`` (a tensor, a dataclass of tensors, or a tuple/list of them)."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return fn(state)
    if dataclasses.is_dataclass(state):
        return dataclasses.replace(
            state, **{f.name: map_state(getattr(state, f.name), fn) for f in dataclasses.fields(state)}
        )
    if isinstance(state, (tuple, list)):
        return type(state)(map_state(s, fn) for s in state)
    return state


def expand_state(state, n_samples: int):
    """Add a leading sample dimension: every tensor ``(*batch, ...)`` -> ``(n_samples, *batch, ...)``."""
    return map_state(state, lambda t: t.unsqueeze(0).expand(n_samples, *t.shape).contiguous())


def index_state(state, ancestors: Tensor):
    """Resample particles: ``ancestors`` ``(N, B)`` picks, for every series ``b``, particle
    ``ancestors[n, b]`` of each tensor ``(N_old, B, ...)`` -> ``(N, B, ...)``."""
    def pick(t: Tensor) -> Tensor:
        index = ancestors.reshape(*ancestors.shape, *([1] * (t.dim() - 2)))
        return torch.gather(t, 0, index.expand(ancestors.shape[0], ancestors.shape[1], *t.shape[2:]))

    return map_state(state, pick)


def stack_states(states: list, dim: int = 0):
    """One state whose tensors stack those of ``states`` along a new dimension ``dim``."""
    first = states[0]
    if first is None:
        return None
    if isinstance(first, torch.Tensor):
        return torch.stack(states, dim)
    if dataclasses.is_dataclass(first):
        return dataclasses.replace(
            first, **{f.name: stack_states([getattr(s, f.name) for s in states], dim) for f in dataclasses.fields(first)}
        )
    if isinstance(first, (tuple, list)):
        return type(first)(stack_states(list(parts), dim) for parts in zip(*states))
    return first


def state_device(state) -> torch.device:
    found = []
    map_state(state, lambda t: found.append(t.device) or t)
    return found[0] if found else torch.device("cpu")


# --------------------------------------------------------------- emissions
def factorises(distribution: Distribution) -> bool:
    """Whether ``distribution`` (event shape ``(D,)``) is a product over its ``D`` components."""
    declared = getattr(distribution, "factorises", None)
    if declared is not None:
        return bool(declared)
    return isinstance(distribution, Independent) and distribution.reinterpreted_batch_ndims == 1


def observed_log_prob(distribution: Distribution, x: Tensor, mask: Tensor) -> Tensor:
    """``log p(x_obs)``: the density of the observed components of ``x`` ``(..., D)``.

    Fully observed rows use ``log_prob``; a factorised emission sums the
    observed components' densities; a multivariate normal uses the exact
    marginal of the observed block; a distribution with its own
    ``observed_log_prob(x, mask)`` (a latent-variable emission) scores its
    observed block itself; any other emission on a partially observed
    vector raises. Rows with nothing observed give exactly 0, and
    neither the value nor its gradient depends on unobserved entries.
    """
    shape = torch.broadcast_shapes(x.shape, mask.shape, distribution.batch_shape + distribution.event_shape)
    x, mask = x.expand(shape), mask.expand(shape)
    if factorises(distribution):
        base = distribution.base_dist if isinstance(distribution, Independent) else distribution
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        safe = torch.where(mask, x, zero)
        return torch.where(mask, base.log_prob(safe), zero).sum(-1)
    if isinstance(distribution, MultivariateNormal):
        return _mvn_observed_log_prob(distribution, x, mask)
    marginal = getattr(distribution, "observed_log_prob", None)
    if marginal is not None:  # it marginalises its unobserved components itself (the 'vae' emission)
        return marginal(x, mask)
    everything, nothing = mask.all(-1), ~mask.any(-1)
    if bool(everything.all()):
        return distribution.log_prob(x)
    if bool((everything | nothing).all()):
        # unobserved vectors are read at a point inside the support: a component's fill_value, else the mean
        fill = getattr(distribution, "fill_value", None)
        placeholder = distribution.mean.detach().expand(x.shape) if fill is None else torch.full_like(x, fill)
        value = distribution.log_prob(torch.where(mask, x, placeholder))
        return torch.where(everything, value, torch.zeros((), dtype=value.dtype, device=value.device))
    raise ValueError(
        f"`emission` {type(distribution).__name__} does not factorise over dimensions, so a partially observed "
        f"vector cannot be scored; emissions that allow partially observed vectors are the factorised ones "
        f"(normal, studentt, bernoulli, poisson, negbin, per-dimension mixtures, energy), multivariate normals and "
        f"the latent-variable 'vae' emission."
    )


def _mvn_observed_log_prob(distribution: MultivariateNormal, x: Tensor, mask: Tensor) -> Tensor:
    # unobserved components are decoupled from the rest with unit variance and read at their mean,
    # so the full density is the observed block's marginal times N(0; 0, 1) per unobserved component
    loc = distribution.loc.expand(x.shape)
    cov = distribution.covariance_matrix.expand(*x.shape, x.shape[-1])
    m = mask.to(x.dtype)
    outer = m.unsqueeze(-1) * m.unsqueeze(-2)
    eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    decoupled = cov * outer + eye * (1 - m).unsqueeze(-1)
    safe = torch.where(mask, x, loc)
    value = MultivariateNormal(loc, decoupled, validate_args=False).log_prob(safe)
    return value + 0.5 * math.log(2 * math.pi) * (1 - m).sum(-1)


# ---------------------------------------------------------------- sampling
def ancestral_sample(model: SequentialModel, state, context: Context, start: int, horizon: int,
                     x_prev: Tensor | None = None, reparameterized: bool = False) -> Tensor:
    """Sample paths forward from ``state`` for steps ``start .. start + horizon - 1`` of ``context``.

    ``state`` already carries the sample dimensions (for latent models,
    draws from the filtering posterior at step ``start - 1``); ``x_prev``
    ``(*batch, D)`` is the last observation, fed to the first transition.
    Randomness comes from torch's global generator (callers fork it with
    :func:`tsgen.training.seeded_from`). ``reparameterized=True`` draws by
    ``rsample`` and keeps the graph (the simulator of the likelihood-free fits).

    Returns
    -------
    Tensor (*batch, horizon, D)
    """
    draws = []
    draw = (lambda d: d.rsample()) if reparameterized else (lambda d: d.sample())
    with torch.set_grad_enabled(reparameterized and torch.is_grad_enabled()):
        for k in range(start, start + horizon):
            context_t = context.at(k)
            state, latent = model.transition(state, x_prev, context_t)
            if latent is not None:
                state = model.commit(state, draw(latent), context_t)
            x_prev = draw(model.emission(state, context_t))
            draws.append(x_prev)
    return torch.stack(draws, dim=-2)

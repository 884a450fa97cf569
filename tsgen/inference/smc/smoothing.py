r"""Particle smoothers over the model protocol (:mod:`tsgen.protocol`).

All of them read a :class:`~tsgen.inference.smc.filter.FilterOutput` kept
with ``keep="particles"``: the latent particles ``z`` ``(T, N, B, Z)``, their
ancestors ``(T, N, B)`` and the normalised filtering weights
``(T, N, B)``, so ``sum_n w_t^n delta(z_t^n)`` is the filter at ``t``.

- :func:`ffbsi`: forward filtering, backward simulation (Godsill, Doucet &
  West 2004). Each of ``M`` trajectories is drawn backwards from the
  filters with ``P(z_t = z_t^i | z_{t+1}) \propto w_t^i f(z_{t+1} | z_t^i)``;
  exact backward steps cost ``O(M N)`` per step. With ``rejection=True``
  the index is proposed from ``w_t`` and accepted with probability
  ``f(z_{t+1} | z_t^i) / rho_t``, ``rho_t`` a bound of the transition
  density (its value at the mode, maximised over particles), which costs
  ``O(N)`` per step on average (Douc, Garivier, Moulines & Olsson 2011);
  trajectories still pending after ``max_trials`` proposals take the exact
  step, the hybrid of Taghavi, Lindsten, Svensson & Schon (2013), so a
  loose bound costs time, never correctness. Needs a Markov latent:
  ``f(z_{t+1} | .)`` must depend on a particle only through ``z_t``, and the
  model must rebuild that state with ``state_from_latent``.
- :func:`fixed_lag` / :class:`FixedLagSmoother`: the genealogy of the
  particles at ``t`` read ``lag`` steps back estimates ``z_{t-lag}`` given
  ``x_{1:t}`` (Kitagawa & Sato 2001); cheap and usable on a stream, with a
  bias that vanishes as the model forgets and a variance that grows with
  the lag (path degeneracy).
- :func:`genealogy`: the paths of the final particles traced back through
  their ancestors, weighted by the final weights (Kitagawa 1996): a
  consistent smoother that collapses onto few distinct early states.

Randomness comes from torch's global generator (callers fork it with
:func:`tsgen.training.seeded_from`).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from tsgen._validation import is_int
from tsgen.exceptions import NumericalError
from tsgen.protocol import Context, index_state

__all__ = ["FixedLagSmoother", "WeightedPaths", "ffbsi", "fixed_lag", "genealogy", "trace_genealogy"]

#: elements of one block of pairwise transition log-densities (M_block x N x B x Z)
_BLOCK_ELEMENTS = 2**22


class WeightedPaths(NamedTuple):
    """Particle estimates of the latent path: ``sum_n exp(log_weights[n, b, t]) delta(z[n, b, t])``
    approximates the law of ``z_t`` of series ``b``."""

    z: Tensor  # (N, B, T, Z)
    log_weights: Tensor  # (N, B, T), normalised over N


# ------------------------------------------------------------------ checks
def _require_history(output, function: str) -> None:
    if getattr(output, "z", None) is None and getattr(output, "ancestors", None) is not None:
        raise ValueError(f"`output` has no latent particles to smooth for {function}: the model has no latent variable.")
    missing = [name for name in ("z", "ancestors", "log_weights_history") if getattr(output, name, None) is None]
    if missing:
        raise ValueError(
            f"`output` must hold the particle history for {function} (missing {', '.join(missing)}); "
            f"run particle_filter(..., keep='particles')."
        )


def _require_markov(model, function: str) -> None:
    name = type(model).__name__
    if int(getattr(model, "latent_dim", 0)) <= 0:
        raise ValueError(f"`model` must have a latent variable for {function}; {name} has latent_dim = 0.")
    if not getattr(model, "markov_latent", False):
        raise ValueError(
            f"`model` must have a Markov latent (markov_latent=True) for {function}; {name} does not: its "
            f"transition depends on a particle's history beyond z_(t-1), so the backward kernel "
            f"f(z_(t+1) | z_t) is not available. Use genealogy() or fixed_lag() instead."
        )


def _check_count(value, name: str, minimum: int = 1) -> int:
    if not is_int(value) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}; got {value!r}.")
    return int(value)


def _check_observations(values: Tensor, mask: Tensor | None,
                        extent: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]:
    """``(values with NaN where unobserved, mask)``: the first is what transitions receive as
    ``x_prev``; a None mask means ``~isnan(values)``; ``extent`` is the ``(B, T)`` they must cover."""
    if not isinstance(values, Tensor) or values.dim() != 3 or not values.is_floating_point():
        raise ValueError(
            f"`values` must be a floating tensor (B, T, D); got {type(values).__name__} "
            f"{tuple(getattr(values, 'shape', ()))}."
        )
    if mask is None:
        mask = ~torch.isnan(values)
    if not isinstance(mask, Tensor) or mask.shape != values.shape or mask.dtype != torch.bool:
        raise ValueError(
            f"`mask` must be a bool tensor of the shape of `values` {tuple(values.shape)}; got "
            f"{getattr(mask, 'dtype', type(mask))} {tuple(getattr(mask, 'shape', ()))}."
        )
    if extent is not None and tuple(values.shape[:2]) != tuple(extent):
        raise ValueError(f"`values` must cover the filtered steps, (B, T) = {tuple(extent)}; got {tuple(values.shape[:2])}.")
    return torch.where(mask, values, torch.full((), math.nan, dtype=values.dtype, device=values.device)), mask


# ------------------------------------------------------------------ helpers
def _categorical(logits: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """One index per slice drawn with probabilities ``softmax(logits)`` along ``dim``, and the slices'
    largest logit (not finite where every entry is impossible).

    By inverting the cumulative weights: one exponential per entry and a binary search per slice,
    several times cheaper on the CPU than Gumbel-max's two logarithms per entry.
    """
    moved = logits.movedim(dim, -1)
    top = moved.amax(-1, keepdim=True)
    cdf = torch.exp(moved - torch.nan_to_num(top, 0.0, 0.0, 0.0)).cumsum(-1).contiguous()
    point = torch.rand(cdf.shape[:-1] + (1,), dtype=cdf.dtype, device=cdf.device) * cdf[..., -1:]
    # right=True: a point picks the first entry whose cumulative weight exceeds it, never a zero-weight one
    index = torch.searchsorted(cdf, point, right=True).clamp_(max=cdf.shape[-1] - 1)
    return index[..., 0], top[..., 0]


def _sample_index(logits: Tensor, dim: int) -> Tensor:
    """One index per slice drawn with probabilities ``softmax(logits)`` along ``dim``."""
    return _categorical(logits, dim)[0]


def _rows(context_t: dict, rows: Tensor, n_series: int) -> dict:
    """``context_t`` restricted to the series ``rows`` (tensors without a series axis pass through)."""
    return {
        name: value[rows] if isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == n_series else value
        for name, value in context_t.items()
    }


def trace_genealogy(z: Tensor, ancestors: Tensor, index: Tensor) -> Tensor:
    """The paths of particles ``index`` ``(K, B)`` of the last step, traced back through their ancestors.

    Parameters
    ----------
    z : Tensor ``(T, N, B, Z)``
    ancestors : Tensor ``(T, N, B)`` int64, ``ancestors[t, n]`` the index at ``t - 1`` of particle ``n`` at ``t``
    index : Tensor ``(K, B)`` int64

    Returns
    -------
    Tensor ``(K, B, T, Z)``
    """
    path = [None] * z.shape[0]
    for t in range(z.shape[0] - 1, -1, -1):
        path[t] = index_state(z[t], index)
        if t > 0:
            index = torch.gather(ancestors[t], 0, index)
    return torch.stack(path, dim=2)


def genealogy(output) -> Tensor:
    """The genealogy-tracing smoother: every final particle's path ``(N, B, T, Z)``.

    Weighted by ``output.log_weights``, the paths approximate
    ``p(z_{1:T} | x_{1:T})``; early steps rest on few distinct ancestors.
    """
    _require_history(output, "genealogy")
    n_particles, n_series = output.z.shape[1:3]
    final = torch.arange(n_particles, device=output.z.device).unsqueeze(1).expand(n_particles, n_series)
    return trace_genealogy(output.z, output.ancestors, final)


class FixedLagSmoother:
    """Fixed-lag smoothing on a stream: feed each filtering step, get ``z_{t-lag}`` given ``x_{1:t}``.

    The smoother keeps the last ``lag + 1`` latents of every particle's path
    (reindexed by each step's ancestors), so memory is ``O(lag N B Z)``
    whatever the stream's length.

    Parameters
    ----------
    lag : int >= 0
        0 gives the filtering particles back.
    """

    def __init__(self, lag: int):
        self.lag = _check_count(lag, "lag", minimum=0)
        self._window: Tensor | None = None  # (<= lag + 1, N, B, Z)
        self._log_weights: Tensor | None = None

    def update(self, z: Tensor, ancestors: Tensor | None, log_weights: Tensor) -> tuple[Tensor, Tensor] | None:
        """Add step ``t``: particles ``z`` ``(N, B, Z)``, their ancestors at ``t - 1`` ``(N, B)`` (None at
        the first step) and normalised ``log_weights`` ``(N, B)``.

        Returns ``(particles (N, B, Z), log_weights (N, B))`` for ``z_{t-lag}``
        once ``lag`` steps have passed, else None.
        """
        if self._window is None or ancestors is None:
            window = z.unsqueeze(0)
        else:
            index = ancestors.reshape(1, *ancestors.shape, 1).expand(self._window.shape[0], *ancestors.shape,
                                                                       self._window.shape[-1])
            window = torch.cat([torch.gather(self._window, 1, index), z.unsqueeze(0)])
        self._log_weights = log_weights
        if window.shape[0] > self.lag:
            self._window = window[1:]
            return window[0], log_weights
        self._window = window
        return None

    def flush(self) -> tuple[Tensor, Tensor]:
        """The last ``min(lag, steps seen)`` steps smoothed by the final genealogy:
        ``(particles (k, N, B, Z), log_weights (N, B))``."""
        if self._window is None:
            raise ValueError("FixedLagSmoother.flush() needs at least one update().")
        return self._window, self._log_weights


def fixed_lag(output, lag: int) -> WeightedPaths:
    """Fixed-lag smoothing of a kept filter run: ``z_s`` estimated given ``x_{1:min(s + lag, T)}``.

    Step ``s`` is read from the genealogy of the particles at ``s + lag``
    (the final particles for the last ``lag`` steps), weighted by that
    step's filtering weights; ``lag = 0`` is the filter, ``lag >= T - 1``
    the genealogy smoother.

    Returns
    -------
    WeightedPaths
        ``z`` ``(N, B, T, Z)`` and ``log_weights`` ``(N, B, T)``.
    """
    _require_history(output, "fixed_lag")
    smoother = FixedLagSmoother(lag)
    particles, weights = [], []
    for t in range(output.z.shape[0]):
        found = smoother.update(output.z[t], output.ancestors[t] if t > 0 else None, output.log_weights_history[t])
        if found is not None:
            particles.append(found[0])
            weights.append(found[1])
    window, last = smoother.flush()
    particles.extend(window.unbind(0))
    weights.extend([last] * window.shape[0])
    return WeightedPaths(torch.stack(particles, dim=2), torch.stack(weights, dim=2))


# ------------------------------------------------------------------ FFBSi
def _backward_exact(transition, log_weights: Tensor, z_next: Tensor, t: int) -> Tensor:
    """Indices ``(M, B)`` drawn from ``w_t^i f(z_next | z_t^i)`` over all particle pairs."""
    n_particles, n_series = log_weights.shape
    block = max(1, _BLOCK_ELEMENTS // (n_particles * n_series * max(1, z_next.shape[-1])))
    picks = []
    for chunk in z_next.split(block, dim=0):
        index, top = _categorical(transition.log_prob(chunk.unsqueeze(1)) + log_weights, dim=1)  # over (m, N, B)
        dead = ~torch.isfinite(top)
        if bool(dead.any()):
            series = int(dead.nonzero()[0, 1])
            raise NumericalError(
                f"backward simulation failed at step {t + 1} of series {series}: the transition density of a "
                f"trajectory's z_{t + 2} is 0 (or not finite) from every particle at step {t + 1}; use more particles."
            )
        picks.append(index)
    return torch.cat(picks)


def _log_density_bound(transition) -> Tensor | None:
    """``log rho`` ``(B,)``: the largest transition density over particles, read at each one's mode
    (None where the distribution has no usable mode, e.g. an unbounded or implicit density)."""
    try:
        mode = transition.mode
        peak = transition.log_prob(mode)  # (N, B)
    except (NotImplementedError, ValueError, AttributeError):
        return None
    bound = peak.amax(0)
    return bound if bool(torch.isfinite(bound).all()) else None


def _backward_rejection(model, z_t: Tensor, transition, log_weights: Tensor, z_next: Tensor, x_t: Tensor,
                        context_t: dict, context_next: dict, t: int, max_trials: int) -> Tensor:
    bound = _log_density_bound(transition)
    if bound is None:
        return _backward_exact(transition, log_weights, z_next, t)
    n_draws, n_series = z_next.shape[:2]
    index = torch.zeros(n_draws, n_series, dtype=torch.long, device=z_next.device)
    pending = torch.ones(n_draws, n_series, dtype=torch.bool, device=z_next.device)
    probabilities = log_weights.exp().T  # (B, N)
    for _ in range(max_trials):
        draw, series = pending.nonzero(as_tuple=True)
        if draw.numel() == 0:
            return index
        # O(N + M log N) per series and round, never O(N) per trajectory
        candidates = torch.multinomial(probabilities, n_draws, replacement=True).T[draw, series]  # (K,)
        state = model.state_from_latent(z_t[candidates, series].unsqueeze(0), _rows(context_t, series, n_series))
        _, proposed = model.transition(state, x_t[series].unsqueeze(0), _rows(context_next, series, n_series))
        log_density = proposed.log_prob(z_next[draw, series].unsqueeze(0))[0]  # (K,)
        accept = torch.log(torch.rand_like(log_density)) < log_density - bound[series]
        index[draw[accept], series[accept]] = candidates[accept]
        pending[draw[accept], series[accept]] = False
    rows = pending.any(1).nonzero(as_tuple=True)[0]
    if rows.numel():
        exact = _backward_exact(transition, log_weights, z_next[rows], t)
        index[rows] = torch.where(pending[rows], exact, index[rows])
    return index


def ffbsi(model, output, values: Tensor, mask: Tensor | None, context: Context | None = None, n_trajectories: int = 100,
          *, rejection: bool = False, max_trials: int = 32) -> Tensor:
    """Forward filtering, backward simulation: ``M`` draws from ``p(z_{1:T} | x_{1:T})``.

    Parameters
    ----------
    model : SequentialModel
        With ``markov_latent = True`` and ``state_from_latent``; others are
        refused with a ValueError.
    output : FilterOutput
        ``particle_filter(model, values, mask, ..., keep="particles")``.
    values, mask : Tensor ``(B, T, D)``
        The filtered observations (mask bool, True where observed; None:
        ``~isnan(values)``).
    context : Context, optional
        ``model.prepare(values, mask, covariates)`` as the filter used it;
        computed without covariates when None.
    n_trajectories : int
        ``M``, the number of trajectories per series.
    rejection : bool
        Propose backward indices from the filtering weights and accept by
        the transition density over its bound (``O(N)`` per step on
        average); falls back to the exact step when the transition has no
        bounded mode and after ``max_trials`` rejections of a trajectory.

    Returns
    -------
    Tensor ``(M, B, T, Z)``
        Equally weighted smoothing trajectories.
    """
    _require_markov(model, "ffbsi")
    _require_history(output, "ffbsi")
    n_trajectories = _check_count(n_trajectories, "n_trajectories")
    max_trials = _check_count(max_trials, "max_trials", minimum=0)
    z, log_weights = output.z, output.log_weights_history
    x, mask = _check_observations(values, mask, (z.shape[2], z.shape[0]))
    if context is None:
        context = model.prepare(values, mask)
    steps, n_particles, n_series = log_weights.shape
    with torch.no_grad():
        index = _sample_index(log_weights[-1].T.unsqueeze(0).expand(n_trajectories, n_series, n_particles), dim=2)
        z_next = index_state(z[-1], index)
        path = [z_next]
        context_next = context.at(steps - 1)
        for t in range(steps - 2, -1, -1):
            context_t = context.at(t)
            state = model.state_from_latent(z[t], context_t)
            _, transition = model.transition(state, x[:, t].expand(n_particles, n_series, x.shape[-1]), context_next)
            if rejection:
                index = _backward_rejection(model, z[t], transition, log_weights[t], z_next, x[:, t],
                                            context_t, context_next, t, max_trials)
            else:
                index = _backward_exact(transition, log_weights[t], z_next, t)
            z_next = index_state(z[t], index)
            path.append(z_next)
            context_next = context_t
    return torch.stack(path[::-1], dim=2)

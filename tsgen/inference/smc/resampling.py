r"""Resampling schemes for particle filters, as pure tensor functions.

Every scheme maps log-weights ``(N, B)`` (particles first, one column per
series; normalised or not) to ancestor indices ``(N, B)`` int64 such that
particle ``i`` of series ``b`` is chosen ``N W_i`` times in expectation
(``W`` the normalised weights). They differ in the variance of the
offspring counts: multinomial draws ``N`` independent indices; stratified
draws one uniform per stratum ``[(n-1)/N, n/N)``; systematic one uniform
shared by all strata; residual keeps ``floor(N W_i)`` copies and draws the
rest multinomially (Douc, Cappé & Moulines 2005). Stratified, systematic
and residual have lower variance than multinomial.

The inverse-CDF schemes run as one ``searchsorted`` of ``B`` rows of ``N``
points into the cumulative weights, so a step costs ``O(B N log N)`` with no
Python loop. Randomness comes from torch's global generator.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

__all__ = ["RESAMPLERS", "ess", "multinomial", "normalise", "resampler", "residual", "stratified", "systematic"]


def normalise(log_weights: Tensor, dim: int = 0) -> tuple[Tensor, Tensor]:
    """Normalised log-weights and the log normaliser ``logsumexp(log_weights, dim)``."""
    log_norm = torch.logsumexp(log_weights, dim)
    return log_weights - log_norm.unsqueeze(dim), log_norm


def ess(log_weights: Tensor) -> Tensor:
    """Effective sample size ``1 / sum_i W_i^2`` over dimension 0 of ``(N, B)`` log-weights -> ``(B,)``."""
    normalised, _ = normalise(log_weights, 0)
    return torch.exp(-torch.logsumexp(2 * normalised, 0))


def _cumulative(log_weights: Tensor) -> Tensor:
    """Cumulative normalised weights ``(B, N)``, the last entry exactly 1 (rounding can leave it short)."""
    weights = torch.softmax(log_weights.detach(), 0).T
    cdf = torch.cumsum(weights, -1)
    return cdf / cdf[:, -1:]


def _invert(cdf: Tensor, points: Tensor) -> Tensor:
    # right=True: point u picks the first i with u < cdf[i], so zero-weight particles are never picked
    index = torch.searchsorted(cdf, points, right=True)
    return index.clamp_(max=cdf.shape[-1] - 1).T


def _offsets(cdf: Tensor, n: int) -> Tensor:
    return torch.arange(n, dtype=cdf.dtype, device=cdf.device)


def multinomial(log_weights: Tensor) -> Tensor:
    """``N`` independent draws from the weights (searchsorted needs no sorted points)."""
    cdf = _cumulative(log_weights)
    return _invert(cdf, torch.rand(cdf.shape, dtype=cdf.dtype, device=cdf.device))


def stratified(log_weights: Tensor) -> Tensor:
    """One uniform in each of the ``N`` strata ``[(n + U_n) / N]``."""
    cdf = _cumulative(log_weights)
    n = cdf.shape[-1]
    points = (_offsets(cdf, n) + torch.rand(cdf.shape, dtype=cdf.dtype, device=cdf.device)) / n
    return _invert(cdf, points)


def systematic(log_weights: Tensor) -> Tensor:
    """One uniform shared by the ``N`` strata of each series: ``(n + U) / N``."""
    cdf = _cumulative(log_weights)
    b, n = cdf.shape
    points = (_offsets(cdf, n) + torch.rand((b, 1), dtype=cdf.dtype, device=cdf.device)) / n
    return _invert(cdf, points)


def residual(log_weights: Tensor) -> Tensor:
    """``floor(N W_i)`` copies of particle ``i``, the remaining ``R`` drawn multinomially from the residuals."""
    weights = torch.softmax(log_weights.detach(), 0).T  # (B, N)
    b, n = weights.shape
    scaled = n * weights
    counts = torch.floor(scaled)
    remainder = scaled - counts
    n_left = n - counts.sum(-1, keepdim=True)  # (B, 1), an integer in [0, N)
    # N residual draws per series, of which the first R_b count (keeps the shapes fixed across series)
    cdf = torch.cumsum(remainder, -1)
    total = cdf[:, -1:]
    cdf = torch.where(total > 0, cdf / total.clamp_min(torch.finfo(cdf.dtype).tiny), torch.ones_like(cdf))
    draws = torch.searchsorted(cdf, torch.rand((b, n), dtype=cdf.dtype, device=cdf.device), right=True)
    draws = draws.clamp_(max=n - 1)
    used = torch.arange(n, dtype=cdf.dtype, device=cdf.device) < n_left
    counts = counts.scatter_add(-1, draws, used.to(counts.dtype))
    # particle i fills the slots [C_{i-1}, C_i) of the cumulative counts
    ends = torch.cumsum(counts, -1)
    slots = torch.arange(n, dtype=ends.dtype, device=ends.device).expand(b, n).contiguous()
    return _invert(ends, slots)


RESAMPLERS: dict[str, Callable[[Tensor], Tensor]] = {
    "multinomial": multinomial,
    "stratified": stratified,
    "systematic": systematic,
    "residual": residual,
}


def resampler(name: str) -> Callable[[Tensor], Tensor]:
    """The scheme called ``name`` in :data:`RESAMPLERS`."""
    try:
        return RESAMPLERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"`resampling` must be one of {sorted(RESAMPLERS)}; got {name!r}.") from None

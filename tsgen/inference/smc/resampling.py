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

Stratified, systematic and residual resampling cost ``O(B N)`` with no
Python loop: the number of sorted points below each cumulative weight is
known in closed form, and one scatter plus one cumsum turns those counts
into ancestors. Multinomial uses ``searchsorted`` (``O(B N log N)``).
Randomness comes from torch's global generator.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

__all__ = ["RESAMPLERS", "WEIGHT_RESAMPLERS", "ess", "multinomial", "normalise", "resampler", "residual", "stratified", "systematic"]


def normalise(log_weights: Tensor, dim: int = 0) -> tuple[Tensor, Tensor]:
    """Normalised log-weights and the log normaliser ``logsumexp(log_weights, dim)``."""
    log_norm = torch.logsumexp(log_weights, dim)
    return log_weights - log_norm.unsqueeze(dim), log_norm


def ess(log_weights: Tensor) -> Tensor:
    """Effective sample size ``1 / sum_i W_i^2`` over dimension 0 of ``(N, B)`` log-weights -> ``(B,)``."""
    normalised, _ = normalise(log_weights, 0)
    return torch.exp(-torch.logsumexp(2 * normalised, 0))


def _ancestors(first_slot: Tensor, n: int) -> Tensor:
    """Ancestors ``(B, n)`` from ``first_slot`` ``(B, N)`` int64: particle ``i`` takes the output slots from
    ``first_slot[i - 1]`` up to ``first_slot[i]`` (nondecreasing in ``i``), i.e. slot ``j`` goes to the
    number of particles ``i`` with ``first_slot[i] <= j``: one scatter and one cumsum, O(N)."""
    # the clamp also maps NaN weights (cast to the most negative integer) into range
    first_slot = first_slot.clamp_(0, n)
    # scatter_add_ rather than bincount: bincount makes two extra passes (min and max) to size its output
    marks = torch.zeros(first_slot.shape[0], n + 1, dtype=torch.int64, device=first_slot.device)
    # the ones are one broadcast scalar: no (B, N) tensor to fill
    marks.scatter_add_(1, first_slot, first_slot.new_ones(()).expand(first_slot.shape))
    return torch.cumsum(marks[:, :n], -1).clamp_(max=first_slot.shape[1] - 1)


def _scaled_cdf(weights: Tensor, n: int) -> Tensor:
    """``n`` times the cumulative normalised weights ``(B, N)``, the last entry ``n`` up to rounding."""
    cdf = torch.cumsum(weights, -1)
    return cdf * (n / cdf[:, -1:])


def systematic_weights(weights: Tensor) -> Tensor:
    """Systematic resampling of ``weights`` ``(B, N)`` (nonnegative, any total) -> ancestors ``(B, N)``."""
    b, n = weights.shape
    cdf = torch.cumsum(weights, -1)
    # the points (j + U) / N below the cumulative weight C_i number ceil(N C_i - U) = floor(N C_i + 1 - U),
    # and 1 - U is uniform too; the values are >= 0, so the integer cast is the floor
    u = torch.rand((b, 1), dtype=cdf.dtype, device=cdf.device)
    return _ancestors(torch.addcdiv(u, cdf, cdf[:, -1:], value=n).to(torch.int64), n)


def stratified_weights(weights: Tensor) -> Tensor:
    """Stratified resampling of ``weights`` ``(B, N)`` -> ancestors ``(B, N)``."""
    b, n = weights.shape
    scaled = _scaled_cdf(weights, n)
    u = torch.rand((b, n), dtype=scaled.dtype, device=scaled.device)
    # points (j + U_j) / N below C_i: all j < floor(N C_i), and j = floor(N C_i) when U_j < frac(N C_i)
    whole = scaled.to(torch.int64)  # the floor: scaled >= 0
    below = torch.gather(u, 1, whole.clamp(0, n - 1)) < scaled - whole
    return _ancestors(whole + below, n)


def multinomial_weights(weights: Tensor) -> Tensor:
    """Multinomial resampling of ``weights`` ``(B, N)`` -> ancestors ``(B, N)`` (searchsorted needs no sorted points)."""
    b, n = weights.shape
    scaled = _scaled_cdf(weights, n)
    points = n * torch.rand((b, n), dtype=scaled.dtype, device=scaled.device)
    # right=True: point u picks the first i with u < C_i, so zero-weight particles are never picked
    return torch.searchsorted(scaled, points, right=True).clamp_(max=n - 1)


def residual_weights(weights: Tensor) -> Tensor:
    """Residual resampling of ``weights`` ``(B, N)`` -> ancestors ``(B, N)``."""
    b, n = weights.shape
    scaled = n * weights / weights.sum(-1, keepdim=True)
    counts = torch.floor(scaled)
    n_left = n - counts.sum(-1, keepdim=True)  # (B, 1), an integer in [0, N)
    remainder = scaled - counts
    total = remainder.sum(-1, keepdim=True)
    # N residual draws per series of which the first R_b count (fixed shapes across series); a series
    # with no remainder (R_b = 0) draws from uniform weights and counts none of them
    remainder = torch.where(total > 0, remainder, torch.ones_like(remainder))
    draws = multinomial_weights(remainder)
    used = torch.arange(n, dtype=counts.dtype, device=counts.device) < n_left
    counts = counts.scatter_add(-1, draws, used.to(counts.dtype))
    # particle i fills the slots from C_{i-1} to C_i of the cumulative counts
    return _ancestors(torch.cumsum(counts, -1).to(torch.int64), n)


def _on_log_weights(scheme: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    def resample(log_weights: Tensor) -> Tensor:
        log_weights = log_weights.detach()
        top = torch.nan_to_num(log_weights.amax(0), 0.0, 0.0, 0.0)
        return scheme(torch.exp(log_weights - top).T).T

    resample.__name__ = scheme.__name__.removesuffix("_weights")
    resample.__doc__ = f"{scheme.__doc__.split(' of ')[0]} of log-weights ``(N, B)`` -> ancestors ``(N, B)``."
    return resample


multinomial = _on_log_weights(multinomial_weights)
stratified = _on_log_weights(stratified_weights)
systematic = _on_log_weights(systematic_weights)
residual = _on_log_weights(residual_weights)

#: the same schemes on weights ``(B, N)`` (series first), for loops that already hold them
WEIGHT_RESAMPLERS: dict[str, Callable[[Tensor], Tensor]] = {
    "multinomial": multinomial_weights,
    "stratified": stratified_weights,
    "systematic": systematic_weights,
    "residual": residual_weights,
}

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

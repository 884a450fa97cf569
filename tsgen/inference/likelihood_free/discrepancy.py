r"""Distances between two samples of windows: the maximum mean discrepancy and the energy distance.

Both compare a simulated sample ``x_1..x_m`` with an observed one
``y_1..y_n`` (rows of ``(..., m, d)`` and ``(..., n, d)``; a window of ``L``
steps of ``D`` variables is one row of ``d = L D``) and are zero exactly when
the two laws agree:

- **MMD** (Gretton et al. 2012) with a Gaussian kernel
  ``k(x, y) = exp(-|x - y|^2 / (2 s^2))``, or the sum of several
  bandwidths ``s`` (a multi-bandwidth kernel is characteristic as each of
  its terms is, and is less sensitive to a poor bandwidth)::

      MMD^2 = E k(x, x') + E k(y, y') - 2 E k(x, y)

  ``unbiased=True`` is the U-statistic (diagonal terms left out); it can be
  slightly negative. The bandwidth defaults to the median heuristic: the
  median distance between the pooled rows, times ``BANDWIDTH_FACTORS``.
- **Energy distance** (Székely & Rizzo 2013)::

      E = 2 E|x - y| - E|x - x'| - E|y - y'|

  which needs no bandwidth; the unbiased form leaves out the diagonals.

Leading dimensions batch independent comparisons (ABC compares each
particle's simulations with the same data). Gradients flow to ``x`` (the
reparameterised simulator): the distances at the diagonals are never
differentiated, so the norm's kink at zero does no harm.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from tsgen._validation import is_int

__all__ = [
    "BANDWIDTH_FACTORS", "energy_distance", "median_bandwidth", "mmd", "moment_distance", "pairwise_sq_distances",
    "window_moments", "with_autocovariances",
]

#: multiples of the median distance that make up the default multi-bandwidth kernel
BANDWIDTH_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)


def _check_pair(x: Tensor, y: Tensor) -> None:
    for name, value in (("x", x), ("y", y)):
        if not isinstance(value, Tensor) or not value.is_floating_point() or value.dim() < 2:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"`{name}` must be a floating-point tensor (..., n, d); got {shape}.")
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"`x` and `y` must have rows of one size d; got {x.shape[-1]} and {y.shape[-1]}.")
    if x.shape[-2] < 2 or y.shape[-2] < 2:
        raise ValueError(f"`x` and `y` must have at least 2 rows each; got {x.shape[-2]} and {y.shape[-2]}.")


def pairwise_sq_distances(x: Tensor, y: Tensor) -> Tensor:
    """``|x_i - y_j|^2`` ``(..., m, n)``, clamped at 0 (the expanded form can round below it)."""
    x2 = x.square().sum(-1, keepdim=True)
    y2 = y.square().sum(-1).unsqueeze(-2)
    return (x2 + y2 - 2 * x @ y.transpose(-1, -2)).clamp_min(0)


def median_bandwidth(x: Tensor, y: Tensor | None = None) -> Tensor:
    """The median heuristic: the median distance between distinct rows of ``x`` and ``y`` pooled ``(...)``.

    Computed without a gradient (a bandwidth is a setting, not a parameter).
    """
    with torch.no_grad():
        pooled = x if y is None else torch.cat([x, y.expand(*x.shape[:-2], *y.shape[-2:])], -2)
        n = pooled.shape[-2]
        d2 = pairwise_sq_distances(pooled, pooled)
        upper = torch.triu_indices(n, n, 1, device=pooled.device)
        median = d2[..., upper[0], upper[1]].median(-1).values.sqrt()
        # all rows equal: any bandwidth gives MMD 0, and 1 keeps the kernel finite
        return torch.where(median > 0, median, torch.ones_like(median))


def _bandwidths(bandwidths, x: Tensor, y: Tensor) -> Tensor:
    """Bandwidths ``(..., K)`` from a setting: None (median heuristic times BANDWIDTH_FACTORS), a
    number, a sequence of numbers, or a tensor broadcasting against the batch with the K last."""
    if bandwidths is None:
        factors = torch.tensor(BANDWIDTH_FACTORS, dtype=x.dtype, device=x.device)
        return median_bandwidth(x, y).unsqueeze(-1) * factors
    if isinstance(bandwidths, (int, float)) and not isinstance(bandwidths, bool):
        bandwidths = [bandwidths]
    if isinstance(bandwidths, Sequence):
        bandwidths = torch.tensor([float(b) for b in bandwidths], dtype=x.dtype, device=x.device)
    if not isinstance(bandwidths, Tensor) or bandwidths.dim() == 0 or not bool((bandwidths > 0).all()):
        raise ValueError(
            f"`bandwidths` must be None (median heuristic), a positive number, a sequence of them or a tensor "
            f"(..., K) of them; got {bandwidths!r:.80}."
        )
    return bandwidths.to(x)


def _kernel(d2: Tensor, bandwidths: Tensor) -> Tensor:
    """Sum over bandwidths ``(..., K)`` of Gaussian kernels on squared distances ``(..., m, n)``."""
    scale = (-0.5 / bandwidths.square()).unsqueeze(-2).unsqueeze(-2)  # (..., 1, 1, K)
    # one bandwidth at a time: a (..., m, n, K) temporary is K times the memory (ABC batches particles)
    return sum(torch.exp(d2 * scale[..., k]) for k in range(scale.shape[-1]))


def _off_diagonal_mean(matrix: Tensor) -> Tensor:
    n = matrix.shape[-1]
    return (matrix.sum((-2, -1)) - matrix.diagonal(dim1=-2, dim2=-1).sum(-1)) / (n * (n - 1))


def mmd(x: Tensor, y: Tensor, bandwidths=None, unbiased: bool = True) -> Tensor:
    r"""The squared maximum mean discrepancy between the rows of ``x`` and ``y`` (module docstring).

    Parameters
    ----------
    x : Tensor (..., m, d)
        Simulated rows (the gradient flows through them).
    y : Tensor (..., n, d) or (n, d)
        Observed rows.
    bandwidths : None, float, sequence of floats, or Tensor (..., K)
        Gaussian kernel bandwidths ``s``; None: the median heuristic times
        ``BANDWIDTH_FACTORS`` (a multi-bandwidth kernel).
    unbiased : bool
        The U-statistic (an unbiased estimate of the population MMD^2, can be
        below 0) or the V-statistic (biased, >= 0).

    Returns
    -------
    Tensor (...)
    """
    _check_pair(x, y)
    s = _bandwidths(bandwidths, x, y)
    kxx = _kernel(pairwise_sq_distances(x, x), s)
    kyy = _kernel(pairwise_sq_distances(y, y), s)
    kxy = _kernel(pairwise_sq_distances(x, y), s)
    if unbiased:
        return _off_diagonal_mean(kxx) + _off_diagonal_mean(kyy) - 2 * kxy.mean((-2, -1))
    return kxx.mean((-2, -1)) + kyy.mean((-2, -1)) - 2 * kxy.mean((-2, -1))


def _distances(x: Tensor, y: Tensor) -> Tensor:
    """``|x_i - y_j|`` ``(..., m, n)`` with a zero gradient where rows coincide (the norm's kink: a
    repeated row, the diagonal), instead of sqrt's infinite one."""
    # by differences, not the expanded |x|^2 + |y|^2 - 2 x.y: its rounding leaves ~1e-8 on the diagonal after
    # the square root, and the energy distance (unlike a kernel) is sensitive to it
    d2 = (x.unsqueeze(-2) - y.unsqueeze(-3)).square().sum(-1)
    positive = d2 > 0
    return torch.where(positive, torch.where(positive, d2, torch.ones_like(d2)).sqrt(), torch.zeros_like(d2))


def energy_distance(x: Tensor, y: Tensor, unbiased: bool = True) -> Tensor:
    r"""The energy distance ``2 E|x - y| - E|x - x'| - E|y - y'|`` between the rows of ``x`` and ``y``.

    Shapes as in :func:`mmd`. ``unbiased=True`` averages ``|x - x'|`` over
    distinct pairs (an unbiased estimate, can be below 0); otherwise over all
    pairs (>= 0).
    """
    _check_pair(x, y)
    within = _off_diagonal_mean if unbiased else (lambda m: m.mean((-2, -1)))
    return 2 * _distances(x, y).mean((-2, -1)) - within(_distances(x, x)) - within(_distances(y, y))


def window_moments(windows: Tensor) -> tuple[Tensor, Tensor]:
    """Mean ``(..., d)`` and covariance ``(..., d, d)`` of windows ``(..., n, L, D)`` or rows ``(..., n, d)``
    (``d = L D``): for stationary windows, the level and the autocovariances up to lag ``L - 1``."""
    rows = windows.flatten(-2) if windows.dim() >= 3 else windows
    mean = rows.mean(-2)
    centred = rows - mean.unsqueeze(-2)
    return mean, centred.transpose(-1, -2) @ centred / (rows.shape[-2] - 1)


def with_autocovariances(windows: Tensor, max_lag: int | None = None) -> Tensor:
    r"""Windows ``(n, L, D)`` followed by their own autocovariances: ``(n, L + K + 1, D)``, rows ``L + k`` the
    lag-``k`` products ``mean_t (x_t - xbar)(x_{t+k} - xbar)`` within each window and channel, ``k = 0..K``
    (``K = max_lag``, default ``L - 1``).

    A window kernel (MMD, energy distance) on raw windows of a noisy persistent series is dominated by the
    marginal noise: on stochastic-volatility ``log y^2`` (noise variance 4.9 against 0.84 for the volatility)
    it barely sees the autocorrelation, and the fit slides along the phi/sigma ridge. The products put the
    second-order structure in coordinates of their own; the window's own mean is used, so they do not move
    with the level, which the raw rows fix.
    """
    if not isinstance(windows, Tensor) or not windows.is_floating_point() or windows.dim() != 3:
        shape = tuple(windows.shape) if isinstance(windows, Tensor) else type(windows).__name__
        raise ValueError(f"`windows` must be a floating-point tensor (n, L, D); got {shape}.")
    L = windows.shape[1]
    if max_lag is None:
        max_lag = L - 1
    if not is_int(max_lag) or not 0 <= max_lag < L:
        raise ValueError(f"`max_lag` must be an integer in [0, {L - 1}] (the window length minus one); got {max_lag!r}.")
    centred = windows - windows.mean(1, keepdim=True)
    products = [(centred[:, : L - k] * centred[:, k:]).mean(1) for k in range(max_lag + 1)]
    return torch.cat([windows, torch.stack(products, 1)], 1)


def moment_distance(mean: Tensor, cov: Tensor, observed_mean: Tensor, observed_cov: Tensor, unit: Tensor | float) -> Tensor:
    r"""``sqrt(|m - m_o|^2 / (d u) + |C - C_o|_F^2 / (d u)^2)``: window moments compared in units ``u``
    of variance (ABC's default distance; zero when the first two moments of the windows agree)."""
    d = mean.shape[-1]
    return ((mean - observed_mean).square().sum(-1) / (d * unit)
            + (cov - observed_cov).square().sum((-2, -1)) / (d * unit) ** 2).sqrt()

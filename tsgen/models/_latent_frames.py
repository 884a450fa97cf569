"""Frames of latent states estimated by sequential Monte Carlo: one layout for every latent estimator.

``filter(y, ...)`` and ``smooth(y, ...)`` of the estimators whose models
run on :mod:`tsgen.protocol` (:class:`tsgen.StateSpaceForecaster` and its
subclasses, :class:`tsgen.DeepMarkovModel`) summarise particles the same
way and return the same frames: one per series, indexed by its time steps,
with the ``mean`` and ``q<level>`` columns of each latent component (flat
columns for one latent, a ``(latent, statistic)`` column MultiIndex for
several).

- filtering ``p(z_t | y_1:t)``: the particle filter's weighted particles at
  each step (:func:`filtering_summary`);
- smoothing ``p(z_t | y_1:T)``: equally weighted trajectories, e.g. FFBSi
  draws (:func:`smoothing_summary`).
"""
from __future__ import annotations

import pandas as pd
import torch
from sklearn.utils.validation import check_is_fitted
from torch import Tensor

from tsgen.base import _check_quantiles
from tsgen.data import SeriesBatch, quantile_label, to_series_batch

__all__ = ["filtering_summary", "frame_input", "latent_frames", "latent_names", "smoothing_summary",
           "weighted_quantiles"]


def weighted_quantiles(values: Tensor, log_weights: Tensor, levels) -> Tensor:
    """Quantiles of weighted particles.

    Parameters
    ----------
    values : Tensor (N, ...)
        Particles along dimension 0.
    log_weights : Tensor (N, ...)
        Log-weights (normalised or not) broadcasting against ``values``.
    levels : sequence of float in (0, 1)

    Returns
    -------
    Tensor (len(levels), ...)
        For each level ``q`` the smallest particle whose cumulative weight reaches ``q``
        (with ``M`` equal weights, the ``ceil(q M)``-th smallest).
    """
    # float64 sums, compared with a tolerance above their rounding: equal weights put cumulative sums exactly
    # on the levels (5 of 100 on 0.05), where rounding would otherwise pick the next particle at random
    weights = torch.softmax(log_weights.to(torch.float64), 0).expand(values.shape)
    ordered, order = values.sort(0)
    cdf = weights.gather(0, order).cumsum(0).movedim(0, -1).contiguous()  # (..., N)
    q = torch.as_tensor(list(levels), dtype=cdf.dtype, device=cdf.device)
    slack = 4 * values.shape[0] * torch.finfo(cdf.dtype).eps
    targets = ((q - slack) * cdf[..., -1:]).contiguous()  # (..., Q): cdf's last entry is 1 up to rounding
    index = torch.searchsorted(cdf, targets).clamp_(max=values.shape[0] - 1)
    return ordered.movedim(0, -1).gather(-1, index).movedim(-1, 0)


def filtering_summary(z: Tensor, log_weights: Tensor, levels) -> tuple[Tensor, dict]:
    """Weighted mean ``(B, T, Z)`` and quantiles ``{level: (B, T, Z)}`` of filtering particles.

    ``z`` ``(T, N, B, Z)`` and ``log_weights`` ``(T, N, B)`` are a particle
    filter's ``z`` and ``log_weights_history`` (``keep="particles"``).
    """
    log_w = log_weights.unsqueeze(-1)
    means = (torch.softmax(log_w, 1) * z).sum(1)  # (T, B, Z)
    bands = weighted_quantiles(z.movedim(1, 0), log_w.movedim(1, 0), levels)  # (Q, T, B, Z)
    return means.movedim(0, 1), {q: bands[k].movedim(0, 1) for k, q in enumerate(levels)}


def smoothing_summary(paths: Tensor, levels) -> tuple[Tensor, dict]:
    """Mean ``(B, T, Z)`` and quantiles ``{level: (B, T, Z)}`` of equally weighted trajectories ``(M, B, T, Z)``."""
    bands = weighted_quantiles(paths, paths.new_zeros(paths.shape[:2] + (1, 1)), levels)
    return paths.mean(0), dict(zip(levels, bands))


def latent_frames(batch: SeriesBatch, means: Tensor, bands: dict, names) -> list[pd.DataFrame]:
    """One frame per series indexed by its time steps: ``mean`` and ``q<level>`` columns per latent.

    ``means`` and each band are ``(B, T, Z)``; one latent gets flat columns,
    several get a ``(latent, statistic)`` column MultiIndex.
    """
    stats = ["mean"] + [quantile_label(q) for q in bands]
    block = torch.stack([means] + [bands[q] for q in bands], -1).detach().cpu().numpy()  # (B, T, Z, S)
    Z = block.shape[2]
    if Z == 1:
        columns = pd.Index(stats)
    else:
        columns = pd.MultiIndex.from_product([list(names), stats], names=["latent", "statistic"])
    frames = []
    for i, index in enumerate(batch.indexes):
        n = int(batch.lengths[i])
        frames.append(pd.DataFrame(block[i, :n].reshape(n, -1), index=index.copy(), columns=columns.copy(), copy=True))
    return frames


def latent_names(names, Z: int) -> list[str]:
    """``names`` when it names all ``Z`` latents, else ``z0, ..., z{Z-1}``."""
    return list(names) if names is not None and len(names) == Z else [f"z{k}" for k in range(Z)]


def frame_input(estimator, y, X, quantiles) -> tuple[SeriesBatch, Tensor | None, tuple[float, ...]]:
    """``y`` as a batch, its covariates and the checked quantile levels, for a fitted ``estimator``."""
    check_is_fitted(estimator)
    levels = _check_quantiles(quantiles)
    batch = to_series_batch(y, "y", 1)
    if batch.n_dims != estimator.n_dims_:
        raise ValueError(f"`y` has {batch.n_dims} variables; the model was fitted on {estimator.n_dims_}.")
    return batch, estimator._covariates(X, batch, 0), levels

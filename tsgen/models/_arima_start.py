"""Starting values by Hannan-Rissanen (1982), batched over series.

On the differenced series ``w = Delta(L) y`` (NaN where missing or padded):

1. regression effects: ``beta`` by least squares of ``w`` on ``Delta(L) x``;
2. a long autoregression of ``u = w - Delta(L) x' beta`` gives innovations
   ``e_t`` (order ``m`` well above p + sP and q + sQ);
3. least squares of ``u_t`` on ``u_{t-i}`` (i in 1..p, s..Ps) and ``e_{t-j}``
   (j in 1..q, s..Qs) gives the AR and MA coefficients (the multiplicative
   cross terms are left to the MLE).

Coefficients outside the stationary / invertible region are pulled inside
by the parameter transform (partial autocorrelations clipped at 0.99).
"""
from __future__ import annotations

import torch
from torch import Tensor

from tsgen.models._arima_spec import ArimaSpec


def masked_least_squares(target: Tensor, design: Tensor, ridge: float = 1e-8) -> tuple[Tensor, Tensor]:
    """Per-series least squares ignoring rows with NaN; ``target`` ``(B, n)``, ``design`` ``(B, n, k)``.

    Returns coefficients ``(B, k)`` and residuals ``(B, n)`` (NaN on ignored rows).
    """
    valid = torch.isfinite(target) & torch.isfinite(design).all(-1)
    zero = torch.zeros((), dtype=target.dtype)
    X = torch.where(valid.unsqueeze(-1), design, zero)
    y = torch.where(valid, target, zero)
    gram = X.transpose(-1, -2) @ X
    scale = torch.diagonal(gram, dim1=-2, dim2=-1).mean(-1).clamp_min(1e-12)
    eye = torch.eye(X.shape[-1], dtype=X.dtype)
    coef = torch.linalg.solve(gram + ridge * scale[:, None, None] * eye, (X.transpose(-1, -2) @ y.unsqueeze(-1)))
    coef = coef.squeeze(-1)
    resid = torch.where(valid, target - (design.nan_to_num() @ coef.unsqueeze(-1)).squeeze(-1), torch.nan)
    return coef, resid


def lagged(values: Tensor, lags: list[int]) -> Tensor:
    """``(B, n)`` -> ``(B, n, len(lags))`` with column j holding ``values[t - lags[j]]`` (NaN before the start)."""
    cols = []
    for lag in lags:
        pad = torch.full((values.shape[0], lag), torch.nan, dtype=values.dtype)
        cols.append(torch.cat([pad, values[:, : values.shape[1] - lag]], 1))
    return torch.stack(cols, -1) if cols else values.new_zeros(*values.shape, 0)


def hannan_rissanen(spec: ArimaSpec, w: Tensor, wx: Tensor) -> Tensor:
    """Constrained starting parameters ``(B, k)`` from differenced data ``w`` ``(B, n)``
    and differenced regressors ``wx`` ``(B, n, n_regressors)``."""
    B, n = w.shape
    params = torch.zeros(B, spec.n_params, dtype=w.dtype)
    blocks = spec.blocks
    if spec.n_regressors:
        beta, u = masked_least_squares(w, wx)
        params[:, blocks["beta"]] = beta
    else:
        u = w
    n_valid = torch.isfinite(u).sum(1)
    ar_lags = list(range(1, spec.p + 1)) + [spec.s * j for j in range(1, spec.P + 1)]
    ma_lags = list(range(1, spec.q + 1)) + [spec.s * j for j in range(1, spec.Q + 1)]
    resid = u
    n_cols = len(ar_lags) + len(ma_lags)
    if n_cols:
        long_order = max(spec.ar_order, spec.ma_order) + 3 if ma_lags else 0
        # per series, so that a short series in the batch does not change the others' starts
        enough = n_valid > 3 * (long_order + max(spec.ar_order, spec.ma_order) + n_cols) + 10
        if bool(enough.any()):
            if ma_lags:
                _, innovations = masked_least_squares(u, lagged(u, list(range(1, long_order + 1))))
                design = torch.cat([lagged(u, ar_lags), lagged(innovations, ma_lags)], -1)
            else:
                design = lagged(u, ar_lags)
            coef, fitted_resid = masked_least_squares(u, design)
            coef = torch.where(enough[:, None], torch.nan_to_num(coef).clamp(-0.99, 0.99), 0.0)
            resid = torch.where(enough[:, None], fitted_resid, u)
            k = 0
            for name, size in (("ar", spec.p), ("sar", spec.P)):
                params[:, blocks[name]] = coef[:, k : k + size]
                k += size
            for name, size in (("ma", spec.q), ("sma", spec.Q)):
                params[:, blocks[name]] = coef[:, k : k + size]
                k += size
    resid2 = torch.where(torch.isfinite(resid), resid * resid, torch.zeros((), dtype=w.dtype))
    count = torch.isfinite(resid).sum(1).clamp_min(1)
    sigma2 = resid2.sum(1) / count
    fallback = torch.where(torch.isfinite(u), u * u, torch.zeros((), dtype=w.dtype)).sum(1) / n_valid.clamp_min(1)
    sigma2 = torch.where(sigma2 > 0, sigma2, fallback).clamp_min(1e-8)
    params[:, blocks["sigma2"]] = sigma2.unsqueeze(-1)
    return params

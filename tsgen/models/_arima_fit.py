"""Batched maximum likelihood for one ARIMA order over many series.

Every series gets its own parameters; its negative log-likelihood per
observation is minimised by its own BFGS, all series in one compiled call
(:mod:`._arima_kernels`). The likelihood is the exact Kalman filter on the
levels form of :mod:`._arima_statespace`, so it is the exact likelihood of
the differenced series (statsmodels' ``llf``).

Free parameters: ``beta * xscale`` (regressors in units of the differenced
series), Monahan-Jones transforms of the AR/MA blocks, ``log sigma2``. Each
series is divided by the scale of its differences first so that one set of
tolerances suits all series; results are mapped back exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from tsgen.models._arima_kernels import MAX_FREE_PACF, STEADY_TOL, minimize
from tsgen.models._arima_spec import ArimaSpec
from tsgen.models._arima_start import hannan_rissanen
from tsgen.models._arima_statespace import kalman_params
from tsgen.models._arima_transforms import constrain_ar, constrain_ma, unconstrain_ar, unconstrain_ma


#: BFGS: gradient (per observation) and relative-decrease tolerances, line-search halvings
GTOL, FTOL, MAX_HALVINGS = 1e-6, 1e-12, 30


def regressors(spec: ArimaSpec, rows: int, covariates: Tensor | None, n_series: int) -> Tensor:
    """Trend columns (``1``, ``t = 1..rows``) then exogenous ones: ``(B, rows, n_regressors)``."""
    t = torch.arange(1, rows + 1, dtype=torch.float64)
    cols = [t.pow(k).expand(n_series, rows) for k in spec.trend_degrees]
    trend = torch.stack(cols, -1) if cols else torch.zeros(n_series, rows, 0, dtype=torch.float64)
    if spec.n_exog:
        return torch.cat([trend, covariates[:, :rows].to(torch.float64)], -1)
    return trend


def difference(spec: ArimaSpec, values: Tensor) -> Tensor:
    """``Delta(L)`` along the time axis of ``(B, T)`` or ``(B, T, k)`` tensors."""
    moved = values.movedim(1, -1)
    return torch.as_tensor(spec.difference(moved.numpy())).movedim(-1, 1)


def check_initial_observed(spec: ArimaSpec, y: Tensor, series=None) -> None:
    """Refuse a row of ``y`` with a missing value among its first ``d + s*D`` steps; ``series`` numbers the
    rows as the user does when ``y`` holds a subset of them."""
    n = spec.n_integration
    if n and not bool(torch.isfinite(y[:, :n]).all()):
        bad = int(torch.nonzero(~torch.isfinite(y[:, :n]).all(1))[0, 0])
        raise ValueError(
            f"`y` series {bad if series is None else series[bad]} has a missing value among its first "
            f"d + s*D = {n} steps; the ARIMA likelihood conditions on them, so they must be observed (a series "
            "that starts late can start at its first value: y.loc[y.first_valid_index():])."
        )


def check_identifiable(spec: ArimaSpec, y: Tensor) -> None:
    """Raise a ValueError naming ``order`` or ``seasonal_order`` when a row of ``y``
    has too few observations after differencing to identify ``spec``."""
    n_observed = torch.isfinite(y[:, spec.n_integration:]).sum(1)
    worst = int(torch.argmin(n_observed))
    which = "`y`" if y.shape[0] == 1 else f"`y` series {worst}"
    spec.check_identifiable(int(n_observed[worst]), which)


def _squash(z: Tensor) -> Tensor:
    """The optimiser's AR/MA variable to the Monahan-Jones argument (bounded: see MAX_FREE_PACF)."""
    return MAX_FREE_PACF * torch.tanh(z / MAX_FREE_PACF)


def _unsquash(x: Tensor) -> Tensor:
    return MAX_FREE_PACF * torch.atanh(x / MAX_FREE_PACF)


def constrain(spec: ArimaSpec, free: Tensor, xscale: Tensor) -> Tensor:
    b = spec.blocks
    parts = [
        free[:, b["beta"]] / xscale,
        constrain_ar(_squash(free[:, b["ar"]])),
        constrain_ma(_squash(free[:, b["ma"]])),
        constrain_ar(_squash(free[:, b["sar"]])),
        constrain_ma(_squash(free[:, b["sma"]])),
        torch.exp(free[:, b["sigma2"]]),
    ]
    return torch.cat(parts, -1)


def unconstrain(spec: ArimaSpec, params: Tensor, xscale: Tensor) -> Tensor:
    b = spec.blocks
    parts = [
        params[:, b["beta"]] * xscale,
        _unsquash(unconstrain_ar(params[:, b["ar"]])),
        _unsquash(unconstrain_ma(params[:, b["ma"]])),
        _unsquash(unconstrain_ar(params[:, b["sar"]])),
        _unsquash(unconstrain_ma(params[:, b["sma"]])),
        torch.log(params[:, b["sigma2"]]),
    ]
    return torch.cat(parts, -1)


def state_space_inputs(spec: ArimaSpec, params: Tensor, y: Tensor, X: Tensor):
    """``eta = y - X beta`` split into the conditioning lags and the filtered part."""
    beta = params[:, spec.blocks["beta"]]
    eta = y - (X @ beta.unsqueeze(-1)).squeeze(-1) if spec.n_regressors else y
    n = spec.n_integration
    lags = eta[:, :n].flip(-1)
    return kalman_params(spec, params, lags), eta[:, n:].unsqueeze(-1)


@dataclass
class FitResult:
    """Estimates for a batch of series under one ``spec`` (original scale)."""

    spec: ArimaSpec
    params: Tensor  # (B, k) constrained
    llf: Tensor  # (B,)
    n_obs: Tensor  # (B,) observations that enter the likelihood
    converged: Tensor  # (B,)
    n_free_rows: Tensor | None = None  # (B,) free parameters when some are pinned at 0

    @property
    def n_free(self):
        return self.spec.n_params if self.n_free_rows is None else self.n_free_rows

    @property
    def aic(self) -> Tensor:
        return -2.0 * self.llf + 2.0 * self.n_free

    @property
    def bic(self) -> Tensor:
        return -2.0 * self.llf + self.n_free * torch.log(self.n_obs)

    @property
    def aicc(self) -> Tensor:
        """``AIC + 2k(k+1)/(n-k-1)``; infinite when n <= k + 1 (as statsmodels and R)."""
        k = self.n_free
        denom = self.n_obs - k - 1
        extra = torch.where(denom > 0, 2.0 * k * (k + 1) / denom.clamp_min(1e-12), torch.full_like(denom, math.inf))
        return self.aic + extra


def fit_spec(
    spec: ArimaSpec,
    y: Tensor,
    covariates: Tensor | None,
    start: Tensor | None = None,
    max_iter: int = 200,
    max_transient: int | None = None,
    free_mask: Tensor | None = None,
) -> FitResult:
    """Fit ``spec`` to every row of ``y`` ``(B, T)`` (NaN = missing or padding).

    ``start``: constrained parameters to start from (default Hannan-Rissanen);
    ``max_transient``: exact Riccati steps before the gain is frozen (see
    :mod:`._arima_kernels`; None = exact throughout);
    ``free_mask`` ``(B, k)``: parameters that are estimated, the others stay
    at 0 on the free scale, which pins regression coefficients at 0 and
    trailing partial autocorrelations at 0, i.e. fits a lower order inside
    ``spec`` (how the automatic search fits many orders in one batch).
    """
    B, T = y.shape
    check_initial_observed(spec, y)
    X = regressors(spec, T, covariates, B)
    w = difference(spec, y)
    wx = difference(spec, X)
    scale = torch.nan_to_num(
        torch.sqrt(torch.nanmean(torch.square(w - torch.nanmean(w, 1, keepdim=True)), 1)), nan=1.0
    )
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    ys = y / scale[:, None]
    ws = w / scale[:, None]
    xscale = torch.sqrt(torch.nanmean(wx * wx, 1)) if spec.n_regressors else torch.ones(B, 0, dtype=y.dtype)
    xscale = torch.where(xscale > 0, xscale, torch.ones_like(xscale))
    n_obs = torch.isfinite(y[:, spec.n_integration :]).sum(1).to(y.dtype)

    if start is None:
        start_params = hannan_rissanen(spec, ws, wx)
    else:
        start_params = scaled_params(spec, start, 1.0 / scale)
    free0 = unconstrain(spec, start_params, xscale)
    if free_mask is not None:
        free0 = torch.where(free_mask, free0, torch.zeros((), dtype=free0.dtype))

    n_free = None if free_mask is None else free_mask.sum(1)
    mask = np.ones(free0.shape, dtype=bool) if free_mask is None else np.ascontiguousarray(free_mask.numpy())
    free0 = np.ascontiguousarray(free0.numpy())

    def run(cap, start, iterations):
        arrays = (np.ascontiguousarray(v.numpy()) for v in (xscale, ys, X, n_obs))
        data = (mask, spec.n_regressors, spec.p, spec.q, spec.P, spec.Q, spec.s,
                spec.integration_coefficients(), *arrays, STEADY_TOL, -1 if cap is None else int(cap))
        return minimize(start, data, int(iterations), GTOL, FTOL, MAX_HALVINGS)

    # No capped-transient first phase before the exact one: on seasonal MA models
    # whose covariance converges over many seasons (period 24), a gain frozen after
    # 40 steps favoured a seasonal MA root at -1, where the exact phase could not
    # leave the boundary (llf -1521.8 against -1367.6 at statsmodels' optimum on a
    # simulated (1,0,1)(0,1,1,24) series), and it was not faster either.
    free, f, converged = run(max_transient, free0, max_iter)
    free, f, converged = (torch.from_numpy(v) for v in (free, f, converged))
    params_scaled = constrain(spec, torch.where(torch.from_numpy(mask), free, 0.0), xscale)
    llf = -f * n_obs - n_obs * torch.log(scale)
    return FitResult(spec, scaled_params(spec, params_scaled, scale), llf, n_obs, converged, n_free)


def scaled_params(spec: ArimaSpec, params: Tensor, scale) -> Tensor:
    """Parameters of ``scale * y`` from those of ``y``: beta and sqrt(sigma2) scale linearly."""
    scale = torch.as_tensor(scale, dtype=params.dtype)
    scale = scale.reshape(-1, 1) if scale.dim() else scale
    out = params.clone()
    b = spec.blocks
    out[:, b["beta"]] = params[:, b["beta"]] * scale
    out[:, b["sigma2"]] = params[:, b["sigma2"]] * scale * scale
    return out

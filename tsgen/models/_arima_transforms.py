"""Stationarity and invertibility by reparameterisation (Monahan 1984; Jones 1980).

An unconstrained vector ``x`` in R^n maps to partial autocorrelations
``r_k = x_k / sqrt(1 + x_k^2)`` in (-1, 1), and the Durbin-Levinson recursion

    y[k, i] = y[k-1, i] + r_k y[k-1, k-i-1],   y[k, k] = r_k

turns them into the coefficients of a stationary AR polynomial. This is
statsmodels' ``constrain_stationary_univariate`` (the sign convention
included: AR coefficients are ``-y[n-1]``, MA coefficients ``+y[n-1]``),
written batched over leading dimensions and differentiable.
"""
from __future__ import annotations

import torch
from torch import Tensor


def _levinson(r: Tensor) -> Tensor:
    """Last row of the Durbin-Levinson recursion from partial autocorrelations ``(*b, n)``."""
    n = r.shape[-1]
    row = r[..., :0]
    for k in range(n):
        # y[k, i] = y[k-1, i] + r_k y[k-1, k-1-i], i < k
        row = torch.cat([row + r[..., k : k + 1] * row.flip(-1), r[..., k : k + 1]], dim=-1)
    return row


def constrain_ar(x: Tensor) -> Tensor:
    """Unconstrained ``(*b, n)`` -> coefficients of a stationary AR polynomial."""
    if x.shape[-1] == 0:
        return x
    return -_levinson(x / torch.sqrt(1.0 + x * x))


def constrain_ma(x: Tensor) -> Tensor:
    """Unconstrained ``(*b, n)`` -> coefficients of an invertible MA polynomial."""
    if x.shape[-1] == 0:
        return x
    return _levinson(x / torch.sqrt(1.0 + x * x))


def _partial_autocorrelations(row: Tensor) -> Tensor:
    """Invert :func:`_levinson`: step down from the last row to the diagonal ``r``."""
    n = row.shape[-1]
    rs = []
    for k in range(n - 1, -1, -1):
        r_k = row[..., k : k + 1]
        rs.append(r_k)
        head = row[..., :k]
        row = (head - r_k * head.flip(-1)) / (1.0 - r_k * r_k)
    return torch.cat(rs[::-1], dim=-1)


def unconstrain_ar(coefficients: Tensor, max_abs_pacf: float = 0.99) -> Tensor:
    """Inverse of :func:`constrain_ar`; partial autocorrelations are clipped to
    ``max_abs_pacf`` so that a non-stationary start becomes a nearby stationary one."""
    if coefficients.shape[-1] == 0:
        return coefficients
    return _to_free(_partial_autocorrelations(-coefficients), max_abs_pacf)


def unconstrain_ma(coefficients: Tensor, max_abs_pacf: float = 0.99) -> Tensor:
    if coefficients.shape[-1] == 0:
        return coefficients
    return _to_free(_partial_autocorrelations(coefficients), max_abs_pacf)


def _to_free(r: Tensor, max_abs_pacf: float) -> Tensor:
    r = torch.nan_to_num(r, nan=0.0).clamp(-max_abs_pacf, max_abs_pacf)
    return r / torch.sqrt(1.0 - r * r)


def is_stationary(coefficients: Tensor) -> Tensor:
    """Whether ``1 - sum_i c_i z^i`` has all roots outside the unit circle ``(*b,)``."""
    if coefficients.shape[-1] == 0:
        return torch.ones(coefficients.shape[:-1], dtype=torch.bool)
    r = _partial_autocorrelations(-coefficients)
    return (r.abs() < 1.0).all(-1) & torch.isfinite(r).all(-1)

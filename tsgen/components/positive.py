"""The one map from an unconstrained network output to a positive scale, rate or dispersion.

``positive(r) = softplus(r) + floor``. In float32 ``softplus(r)`` underflows
to exactly 0 for ``r`` below about -104, and a Normal with scale 0 is
rejected by torch (or has an infinite log-density). Adding the floor after
the softplus keeps the output at least ``floor`` while its gradient stays
``sigmoid(r)`` everywhere: unlike a clamp, a unit pushed below the floor
still feels the loss and can come back.

Every learned scale goes through here (distribution heads, the DMM's
transition and inference network), so the floor is one number. It is
relative: heads multiply their outputs by the data scale (DeepAR scaling,
:mod:`tsgen.components.scaling`), and latent scales live in the latent
space the model chose, so no floor is tied to the units of the data.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["MIN_POSITIVE", "inverse_positive", "positive", "positive_derivative"]

#: added after the softplus: scales are at least this (relative to the data scale for heads)
MIN_POSITIVE = 1e-6


def positive(raw: Tensor) -> Tensor:
    """``softplus(raw) + MIN_POSITIVE``: positive, never below the floor, gradient ``sigmoid(raw)``."""
    return F.softplus(raw) + MIN_POSITIVE


def positive_derivative(output: Tensor) -> Tensor:
    """``d positive(r) / dr`` written through the output ``y = positive(r)``.

    ``sigmoid(r) = 1 - exp(-softplus(r))``, so hand-written backward passes
    need only the scale they stored, not the pre-activation.
    """
    return -torch.expm1(-(output - MIN_POSITIVE))


def inverse_positive(value) -> Tensor:
    """The raw output that :func:`positive` maps to ``value`` (> ``MIN_POSITIVE``), in float64: for
    starting a network's bias at a chosen scale."""
    value = torch.as_tensor(value, dtype=torch.float64) - MIN_POSITIVE
    return value + torch.log(-torch.expm1(-value))  # log(expm1(value)), finite for large values

"""Checks of plain arguments shared by every layer (no torch, no pandas)."""
from __future__ import annotations

from numbers import Integral

import numpy as np


def is_int(value) -> bool:
    """Whether ``value`` is an integer: a Python int or a numpy integer, but not a bool.

    Every integer argument of tsgen (orders, periods, horizons, sample counts,
    layer sizes, epochs) is checked with this, so numpy integers (e.g. from
    ``np.arange`` or a DataFrame cell) are accepted wherever ints are."""
    return isinstance(value, Integral) and not isinstance(value, (bool, np.bool_))

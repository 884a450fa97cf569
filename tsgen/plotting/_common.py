"""Shared plumbing: figures without pyplot's global state, time axes matplotlib understands."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def new_axes(n_rows: int = 1, ax=None, figsize=None, sharex: bool = False):
    """``(figure, list of axes)``: a fresh Figure (never registered with pyplot), or ``ax``'s own."""
    if ax is not None:
        axes = list(np.atleast_1d(ax))
        if len(axes) != n_rows:
            raise ValueError(f"`ax` must hold {n_rows} axes for this plot; got {len(axes)}.")
        return axes[0].figure, axes
    figure = Figure(figsize=figsize or (9, 2.8 * n_rows + 0.6), layout="constrained")
    axes = figure.subplots(n_rows, 1, sharex=sharex, squeeze=False)[:, 0]
    return figure, list(axes)


def time_values(index: pd.Index):
    """Index values matplotlib can place on an axis (periods become their start timestamps)."""
    if isinstance(index, pd.PeriodIndex):
        return index.to_timestamp()
    return index


def as_frame(y, name: str) -> pd.DataFrame:
    if isinstance(y, pd.Series):
        return y.to_frame(y.name if y.name is not None else "y")
    if isinstance(y, pd.DataFrame):
        return y
    raise TypeError(f"`{name}` must be a pandas Series or DataFrame; got {type(y).__name__}.")

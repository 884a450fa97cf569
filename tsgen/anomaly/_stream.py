"""Streams as they come: what a model sees of a series whose timestamps are irregular or repeated.

Rule (documented on :class:`AnomalyDetector`):

- a regular, strictly increasing DatetimeIndex/PeriodIndex is used as is;
- one that is strictly increasing and lies on the grid of a known frequency
  with some steps absent is put on that grid, the absent steps missing
  (NaN: the model marginalises them, they are neither scored nor flagged);
- anything else (irregular spacing, repeated timestamps, out of order) is
  scored **by arrival order**: the model sees the values one after the
  other, positions replacing the timestamps. A repeated timestamp is
  therefore a further observation that arrives after the earlier one and is
  scored given it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from tsgen.data._index import infer_offset

#: a gap-filled grid may at most be this many times longer than the rows it holds
MAX_GRID_GROWTH = 2.0


def check_values(data, name: str) -> None:
    """Refuse values no model can score, naming the argument: text, and infinities (NaN is a missing step).

    An infinite value in a stream would otherwise enter the online learner's
    recursion and leave every later score NaN, i.e. never flagged.
    """
    try:
        values = np.asarray(data, dtype=np.float64)
    except (TypeError, ValueError):
        kind = getattr(data, "dtypes", getattr(data, "dtype", type(data).__name__))
        raise TypeError(f"`{name}` must hold numbers (NaN for a missing step); got {kind}.") from None
    if np.isinf(values).any():
        raise ValueError(f"`{name}` contains infinite values: expected finite numbers or NaN (a missing step).")


def _strictly_increasing(index) -> bool:
    # Under pandas 2 a slice inherits its parent's "has duplicates" flag, so the labels decide.
    return index.is_monotonic_increasing and (index.is_unique or not index.duplicated().any())


def frequency_of(index) -> str | None:
    """The frequency of a regular, strictly increasing time index, else None."""
    if not isinstance(index, (pd.DatetimeIndex, pd.PeriodIndex)) or len(index) < 3:
        return None
    if not _strictly_increasing(index):
        return None
    if index.freq is not None:
        return index.freqstr
    try:
        offset = infer_offset(index)
    except (TypeError, ValueError):
        return None
    return None if offset is None else offset.freqstr


def _same_frequency(own: str, freq: str, periods: bool) -> bool:
    """Whether two frequency strings name the same step; a PeriodIndex's ("M", "Q-DEC") are period
    aliases, which pandas 3 no longer accepts as offsets ("M" is month-end "ME" there)."""
    try:
        if periods:
            return pd.Period("2000-01-01", freq=own).freq == pd.Period("2000-01-01", freq=freq).freq
        return pd.tseries.frequencies.to_offset(own) == pd.tseries.frequencies.to_offset(freq)
    except (TypeError, ValueError):
        return False


def stream_view(data, freq: str | None):
    """``(view, rows)``: the series the model sees and the row of ``view`` holding each row of ``data``.

    ``rows`` is None when ``view`` is ``data`` itself.
    """
    index = getattr(data, "index", None)
    if not isinstance(index, (pd.DatetimeIndex, pd.PeriodIndex)):
        return data, None
    own = frequency_of(index)
    if own is not None and (freq is None or _same_frequency(own, freq, isinstance(index, pd.PeriodIndex))):
        return data, None
    if freq is not None and len(index) and _strictly_increasing(index):
        if isinstance(index, pd.PeriodIndex):
            grid = pd.period_range(index[0], index[-1], freq=freq)
        else:
            grid = pd.date_range(index[0], index[-1], freq=freq)
        rows = grid.get_indexer(index)
        if (rows >= 0).all() and len(grid) <= MAX_GRID_GROWTH * len(index):
            return data.reindex(grid), rows
    return data.reset_index(drop=True), np.arange(len(data))


def _rows_per_cycle(stamps, cycle: pd.Timedelta, step: pd.Timedelta) -> int | None:
    """The rows of an arrival-order stream per cycle where its gaps are systematic, else None (``cycle / step``).

    Every cycle-long stretch of time (stopping half a step short, so that
    jittered timestamps count each step once) is counted; when the counts
    agree (interquartile range within 10% of their median) and their median
    is more than 10% off ``cycle / step``, the gaps are a pattern (the
    weekends of business days: 5 rows a week) and the median is the cycle.
    Occasional gaps (a missing hour) leave the counts scattered or close to
    ``cycle / step``, which then stays.
    """
    ordered = np.sort(stamps.asi8)
    length = int((cycle - step / 2) / pd.Timedelta(1, unit=getattr(stamps, "unit", "ns")))
    whole = ordered + length <= ordered[-1]
    if not whole.any():
        return None
    counts = (np.searchsorted(ordered, ordered + length, side="left") - np.arange(len(ordered)))[whole]
    low, median, high = np.percentile(counts, [25, 50, 75])
    nominal = cycle / step
    if high - low <= 0.1 * median and abs(median - nominal) > 0.1 * nominal:
        return int(round(median))
    return None


def season_length(index, n_rows: int, min_cycles: float = 3) -> int | None:
    """Rows per natural cycle of a time index (a day below daily steps, a week for days, a year above).

    A regular index has ``cycle / step`` rows per cycle. A stream scored by
    arrival order (see the module docstring) is seen row after row: where
    its gaps are systematic its cycle is the rows it holds per cycle
    (business days with holidays: 5 rows a week, not the 7 of a daily
    grid), while a 5-minute stream with the odd gap keeps its 288 a day
    (:func:`_rows_per_cycle`).
    None when there is no time index or the cycle does not fit ``min_cycles`` times in ``n_rows``.
    """
    if not isinstance(index, (pd.DatetimeIndex, pd.PeriodIndex)) or len(index) < 3:
        return None
    stamps = index.to_timestamp() if isinstance(index, pd.PeriodIndex) else index
    step = pd.Series(stamps).diff().median()
    if not isinstance(step, pd.Timedelta) or step <= pd.Timedelta(0):
        return None
    if step < pd.Timedelta("1D"):
        cycle = pd.Timedelta("1D")
    elif step < pd.Timedelta("7D"):
        cycle = pd.Timedelta("7D")
    else:
        cycle = pd.Timedelta("365.25D")
    period = int(round(cycle / step))
    if frequency_of(index) is None:
        period = _rows_per_cycle(stamps, cycle, step) or period
    return period if 2 <= period and min_cycles * period <= n_rows else None

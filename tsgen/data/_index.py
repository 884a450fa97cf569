"""Time indexes: validation, continuation into the future, and a JSON form.

Invariants of an index accepted by tsgen:
- it is a ``DatetimeIndex`` or ``PeriodIndex`` whose frequency is set or
  inferable, or an integer index with a constant positive step (a
  ``RangeIndex`` qualifies);
- it is strictly increasing, without duplicates or gaps.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from tsgen._validation import is_int


def infer_offset(index: pd.Index):
    """``pd.infer_freq(index)`` as an offset, None when no frequency fits (pandas 3.1 warns on every call
    that the string it returns will become an offset; either form works here)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*infer_freq.*")
        freq = pd.infer_freq(index)
    return None if freq is None else pd.tseries.frequencies.to_offset(freq)


def unique_index(index: pd.Index, name: str, remedy: str = "") -> pd.Index:
    """``index`` when its labels are unique, else a ValueError naming ``name`` and the first repeat.

    Under pandas 2 a slice inherits its parent's "has duplicates" flag, so a regular
    stretch cut from a series with a repeated timestamp reads as having repeats (and
    ``get_indexer`` refuses it); the labels themselves decide, and such an index comes
    back as a copy that has its own flag.
    """
    if not index.has_duplicates:
        return index
    repeated = index.duplicated()
    if repeated.any():
        raise ValueError(f"`{name}` has duplicated timestamps (first: {index[repeated][0]!r}){remedy}.")
    return index.copy(deep=True)


def validate_index(index: pd.Index, name: str) -> pd.Index:
    """Return ``index`` with its frequency set, or raise naming ``name``."""
    if len(index) == 0:
        raise ValueError(f"`{name}` is empty: expected at least one time step.")
    # Fast paths for the usual indexes, which cost O(1) or one pass instead of
    # building a reference range: pandas only lets a DatetimeIndex carry a
    # freq that its timestamps follow (checked when the freq is set), and
    # consecutive periods have ordinals one frequency step apart.
    if isinstance(index, pd.DatetimeIndex) and index.freq is not None and index.freq.n > 0:
        return index
    if isinstance(index, pd.PeriodIndex) and (len(index) == 1 or bool(np.all(np.diff(index.asi8) == index.freq.n))):
        return index
    index = unique_index(index, name)
    if isinstance(index, pd.PeriodIndex):
        if not index.is_monotonic_increasing:
            raise ValueError(f"`{name}` must have an increasing time index.")
        expected = pd.period_range(index[0], periods=len(index), freq=index.freq)
        if not index.equals(expected):
            raise ValueError(
                f"`{name}` has an irregular PeriodIndex: expected consecutive periods "
                f"at frequency {index.freqstr!r}."
            )
        return index
    if isinstance(index, pd.DatetimeIndex):
        if not index.is_monotonic_increasing:
            raise ValueError(f"`{name}` must have an increasing time index.")
        if len(index) < 3 and index.freq is None:
            raise ValueError(
                f"`{name}` has a DatetimeIndex without a frequency and too few "
                "timestamps to infer one: set `index.freq` (e.g. with `asfreq`)."
            )
        freq = index.freq or pd.DatetimeIndex(index, freq="infer").freq
        if freq is None:
            raise ValueError(
                f"`{name}` has an irregular DatetimeIndex: no frequency could be "
                "inferred. Resample it (e.g. `y.asfreq('D')`, which marks gaps as NaN)."
            )
        expected = pd.date_range(index[0], periods=len(index), freq=freq)
        if not index.equals(expected):
            raise ValueError(f"`{name}` has an irregular DatetimeIndex for frequency {freq!r}.")
        return pd.DatetimeIndex(index, freq=freq)
    if pd.api.types.is_integer_dtype(index.dtype):
        if isinstance(index, pd.RangeIndex):
            if index.step <= 0:
                raise ValueError(f"`{name}` must have an increasing time index.")
            return index
        values = np.asarray(index, dtype=np.int64)
        steps = np.diff(values)
        if len(values) > 1 and (steps[0] <= 0 or np.any(steps != steps[0])):
            raise ValueError(
                f"`{name}` has an integer index without a constant positive step."
            )
        step = int(steps[0]) if len(values) > 1 else 1
        return pd.RangeIndex(int(values[0]), int(values[0]) + step * len(values), step)
    raise TypeError(
        f"`{name}` must have a DatetimeIndex, PeriodIndex or integer index, "
        f"got {type(index).__name__} of dtype {index.dtype} (first label {index[:1].tolist()[0]!r})"
        f"{_index_remedy(index, name)}."
    )


def _index_remedy(index: pd.Index, name: str) -> str:
    """How to turn an index of another kind into one tsgen takes: the two that users meet are dates read
    from a CSV as text and whole years stored as floats (statsmodels' Nile data)."""
    if pd.api.types.is_float_dtype(index.dtype):
        values = np.asarray(index, dtype=float)
        if np.all(np.isfinite(values)) and np.all(values == np.round(values)):
            return (f"; whole numbers stored as floats (e.g. years) work as integers: "
                    f"`{name}.index = {name}.index.astype(int)`")
        return ""
    if pd.api.types.is_object_dtype(index.dtype) or pd.api.types.is_string_dtype(index.dtype):
        return (f"; parse text dates first, e.g. `{name}.index = pd.to_datetime({name}.index)` or "
                f"`pd.PeriodIndex({name}.index, freq=...)`")
    return ""


#: seasonal period of common frequencies (by the first letters of the frequency code)
SEASONAL_PERIODS = {"M": 12, "Q": 4, "W": 52, "D": 7, "B": 5, "H": 24, "h": 24}


def seasonal_period(index: pd.Index) -> int:
    """Seasonal period implied by the index frequency (1 when there is none)."""
    freq = getattr(index, "freqstr", None)
    if not freq:
        return 1
    code = freq.lstrip("0123456789").split("-")[0]
    if code in ("B", "C"):  # business and custom business days
        return SEASONAL_PERIODS["B"]
    if code[:1] in "BC" and code not in ("BH", "CBH"):
        # business month/quarter/year starts and ends (BME, BQS, CBMS, ...) keep their calendar's season
        code = code.lstrip("BC")
    return SEASONAL_PERIODS.get(code[:1], 1)


def resolve_period(period, indexes) -> int:
    """An estimator's ``period`` argument if given, else the seasonal period shared by ``indexes``
    (1: none; ``indexes`` None when there is no data yet)."""
    if period is not None:
        if not is_int(period) or period < 1:
            raise ValueError(f"`period` must be a positive integer or None; got {period!r}.")
        return int(period)
    if indexes is None:
        return 1
    periods = {seasonal_period(index) for index in indexes}
    if len(periods) > 1:
        raise ValueError(
            f"the series of `y` have index frequencies with different seasonal periods "
            f"{sorted(periods)}; pass `period`."
        )
    return periods.pop()


def future_index(index: pd.Index, horizon: int) -> pd.Index:
    """The ``horizon`` timestamps that follow ``index`` at its frequency."""
    if isinstance(index, pd.PeriodIndex):
        return pd.period_range(index[-1] + 1, periods=horizon, freq=index.freq)
    if isinstance(index, pd.DatetimeIndex):
        return pd.date_range(index[-1], periods=horizon + 1, freq=index.freq)[1:]
    step = index.step if isinstance(index, pd.RangeIndex) else 1
    start = int(index[-1]) + step
    return pd.RangeIndex(start, start + step * horizon, step)


def index_to_spec(index: pd.Index) -> dict:
    """A JSON-serialisable description from which :func:`index_from_spec` rebuilds ``index``."""
    if isinstance(index, pd.PeriodIndex):
        return {"kind": "period", "start": str(index[0]), "freq": index.freqstr, "length": len(index)}
    if isinstance(index, pd.DatetimeIndex):
        return {
            "kind": "datetime",
            "start": index[0].isoformat(),
            "freq": index.freqstr,
            "length": len(index),
            "tz": str(index.tz) if index.tz is not None else None,
        }
    step = index.step if isinstance(index, pd.RangeIndex) else 1
    return {"kind": "range", "start": int(index[0]), "step": int(step), "length": len(index)}


def index_from_spec(spec: dict) -> pd.Index:
    kind, length = spec["kind"], spec["length"]
    if kind == "period":
        return pd.period_range(spec["start"], periods=length, freq=spec["freq"])
    if kind == "datetime":
        start, tz = pd.Timestamp(spec["start"]), spec.get("tz")
        if tz is not None:
            # the text keeps the first stamp's UTC offset only; the zone (with its daylight-saving rules) is stored apart
            start = start.tz_convert(tz) if start.tz is not None else start.tz_localize(tz)
        return pd.date_range(start, periods=length, freq=spec["freq"])
    if kind == "range":
        return pd.RangeIndex(spec["start"], spec["start"] + spec["step"] * length, spec["step"])
    raise ValueError(f"unknown index kind {kind!r} in saved model")

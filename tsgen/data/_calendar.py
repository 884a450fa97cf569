"""Calendar covariates from a time index: known in advance for any future timestamp."""
from __future__ import annotations

import numpy as np
import pandas as pd

from tsgen.data._batch import validate_horizon
from tsgen.data._index import future_index, infer_offset, validate_index
from tsgen.data._output import _concat, id_array
from tsgen.data._panel import ID_COL, TIME_COL, Panel, from_long, is_long_frame

#: the calendar cycles each frequency family has: (name, period, value of a timestamp in the cycle)
_CYCLES = {
    "month": (12, lambda ix: ix.month - 1),
    "quarter": (4, lambda ix: ix.quarter - 1),
    "dayofweek": (7, lambda ix: ix.dayofweek),
    "hour": (24, lambda ix: ix.hour),
    "minute": (60, lambda ix: ix.minute),
}
#: the cycles worth modelling at each base frequency (pandas' period codes): those longer than one step
_BY_FREQUENCY = {
    "Y": (), "Q": ("quarter",), "M": ("month",), "W": ("month",), "D": ("dayofweek", "month"),
    "B": ("dayofweek", "month"), "h": ("hour", "dayofweek"), "min": ("minute", "hour"), "s": ("minute",),
}


def _base_code(index: pd.Index) -> str:
    if isinstance(index, pd.PeriodIndex):
        code = index.freqstr
    elif isinstance(index, pd.DatetimeIndex):
        freq = index.freq or (infer_offset(index) if len(index) >= 3 else None)
        if freq is None:
            raise ValueError("`index` has no frequency (set `freq` or use a regular index): calendar "
                             "features follow the frequency.")
        # the period code names the base frequency alike for month starts and ends ("MS", "ME" -> "M")
        # (a time zone plays no part in it: dropped first, which to_period would warn about)
        code = pd.DatetimeIndex(index[:1].tz_localize(None), freq=freq).to_period().freqstr
    else:
        raise TypeError(f"`index` must be a DatetimeIndex or PeriodIndex; got {type(index).__name__}.")
    code = code.lstrip("0123456789").split("-")[0]
    for key in sorted(_BY_FREQUENCY, key=len, reverse=True):
        if code.upper().startswith(key.upper()) and (key != "M" or not code.lower().startswith("min")):
            return key
    raise ValueError(f"`index` has frequency {code!r}, for which tsgen knows no calendar cycle.")


def calendar_features(index, kind: str = "onehot", *, cycles=None, n_terms: int | None = None,
                      horizon: int = 0) -> pd.DataFrame:
    """Calendar covariates of ``index``: one-hot dummies or Fourier terms of its calendar cycles.

    The cycles follow the index frequency: quarter of year for quarterly
    data, month of year for monthly and weekly, day of week and month for
    daily, hour of day and day of week for hourly, minute and hour below
    that; none for yearly data. Being functions of the timestamp alone,
    they are future-known covariates: build them for ``y.index`` to fit and
    for the forecast timestamps (``tsgen.data.future_index``) to predict.

    For panel data, pass the long frame (``unique_id``, ``ds``, ...) or
    :class:`tsgen.data.Panel` itself: the result is a long frame keyed by
    id and time, the ``X`` such ``y`` takes; with ``horizon`` it also covers
    each series' next ``horizon`` steps, so the same frame serves as ``X``
    at fit and as ``X_future`` at predict.

    Parameters
    ----------
    index : pd.DatetimeIndex or pd.PeriodIndex, or a long frame / Panel
        Timestamps with a frequency (set or inferable); or panel data (a
        long frame with ``unique_id`` and ``ds`` columns, other names
        through :func:`tsgen.data.from_long`).
    kind : {"onehot", "fourier"}
        ``"onehot"``: one 0/1 column per value of each cycle but the first
        (``month_2`` ... ``month_12``; the first is the baseline, so a model
        with an intercept stays identifiable). ``"fourier"``: ``sin``/``cos``
        pairs ``sin_month_1``, ``cos_month_1``, ... of the cycle's
        harmonics 1..``n_terms``, smooth seasonality with few columns.
    cycles : sequence of str, optional
        Cycles to use instead of the frequency's: any of ``month``,
        ``quarter``, ``dayofweek``, ``hour``, ``minute``.
    n_terms : int, optional
        Harmonics per cycle for ``"fourier"`` (default: all, ``period // 2``;
        the last cosine-only pair's sine is dropped when it is identically 0).
    horizon : int
        Future steps to cover after the last timestamp (of each series).

    Returns
    -------
    pd.DataFrame
        Float columns indexed by ``index`` (and its future steps); for panel
        data a long frame: the id and time columns, then the features.
    """
    if kind not in ("onehot", "fourier"):
        raise ValueError(f"`kind` must be 'onehot' or 'fourier'; got {kind!r}.")
    horizon = horizon if isinstance(horizon, (int, np.integer)) and horizon == 0 else validate_horizon(horizon)
    if isinstance(index, (pd.DataFrame, Panel)):
        return _panel_calendar(index, kind, cycles, n_terms, horizon)
    if horizon:
        index = index.append(future_index(validate_index(index, "index"), horizon))
    if cycles is None:
        cycles = _BY_FREQUENCY[_base_code(index)]
    elif not isinstance(index, (pd.DatetimeIndex, pd.PeriodIndex)):
        raise TypeError(f"`index` must be a DatetimeIndex or PeriodIndex; got {type(index).__name__}.")
    unknown = [c for c in cycles if c not in _CYCLES]
    if unknown:
        raise ValueError(f"`cycles` must name cycles among {sorted(_CYCLES)}; got {unknown}.")
    if n_terms is not None and (not isinstance(n_terms, (int, np.integer)) or n_terms < 1):
        raise ValueError(f"`n_terms` must be a positive integer or None; got {n_terms!r}.")
    columns = {}
    for cycle in cycles:
        period, position = _CYCLES[cycle]
        value = np.asarray(position(index), dtype=np.int64)
        if kind == "onehot":
            for k in range(1, period):
                columns[f"{cycle}_{k + 1 if cycle in ('month', 'quarter') else k}"] = (value == k).astype(float)
            continue
        for k in range(1, min(n_terms or period // 2, period // 2) + 1):
            angle = 2 * np.pi * k * value / period
            if not (2 * k == period):  # the Nyquist harmonic's sine is zero at every integer step
                columns[f"sin_{cycle}_{k}"] = np.sin(angle)
            columns[f"cos_{cycle}_{k}"] = np.cos(angle)
    return pd.DataFrame(columns, index=index, dtype=float)


def _panel_calendar(y, kind: str, cycles, n_terms, horizon: int) -> pd.DataFrame:
    """Calendar features of every series' timestamps (and ``horizon`` more) as one long frame."""
    if isinstance(y, pd.DataFrame):
        if not is_long_frame(y):
            raise TypeError(f"`index` is a DataFrame without {ID_COL!r} and {TIME_COL!r} columns: pass a time index, "
                            "a long frame, or tsgen.data.from_long(frame, id_col=..., time_col=...).")
        # from_long's checks (one frequency, no gaps, no repeats) on the keys alone: y may hold only future rows
        y = from_long(y[[ID_COL, TIME_COL]].assign(_calendar=0.0), value_col="_calendar", name="index")
    indexes = list(y._indexes)
    if cycles is None:
        cycles = _BY_FREQUENCY[_base_code(indexes[0])]
    if horizon:
        # from_long shares one index between series of the same span: extend each distinct one once
        extended = {id(ix): ix for ix in indexes}
        extended = {key: ix.append(future_index(ix, horizon)) for key, ix in extended.items()}
        indexes = [extended[id(ix)] for ix in indexes]
    stamps = _concat(indexes)
    features = calendar_features(stamps, kind, cycles=cycles, n_terms=n_terms).reset_index(drop=True)
    codes = np.repeat(np.arange(len(indexes)), [len(ix) for ix in indexes])
    keys = pd.DataFrame({y.id_col: id_array(y.ids).take(codes), y.time_col: stamps})
    return pd.concat([keys, features], axis=1)

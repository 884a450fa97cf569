"""Panel data: many series keyed by id, in the long format warehouses and statsforecast use.

A long frame has one row per (series, timestamp): an id column, a time
column and one or more value columns (``unique_id``, ``ds``, ``y`` by
default, Nixtla's names). :func:`from_long` splits it once into a
:class:`Panel` (a read-only mapping ``{id: Series}``); every estimator also
takes a long frame with the default column names, or a plain dict
``{id: Series | DataFrame | array}``, directly.

The rules of panel input (what :func:`tsgen.data.to_series_batch` relies on):
- series are ordered by id (sorted when the ids are sortable, else in order
  of first appearance), so the row order of a long frame, or the insertion
  order of a dict, never changes a result;
- each series' rows are sorted by time; a (id, time) pair may occur once;
- all series share one frequency; a series with gaps is refused with the
  remedy (:func:`regularize` makes its index regular with NaN);
- results come back as one long frame keyed by id and time (see
  :func:`tsgen.data.forecast_output`), under the input's column names.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import numpy as np
import pandas as pd

from tsgen.data._index import infer_offset, unique_index

#: the column names of a long frame unless told otherwise (statsforecast's)
ID_COL, TIME_COL, VALUE_COL = "unique_id", "ds", "y"


def is_long_frame(y) -> bool:
    """Whether ``y`` is a long frame under the default column names (an id and a time column)."""
    return isinstance(y, pd.DataFrame) and ID_COL in y.columns and TIME_COL in y.columns


def sorted_ids(ids) -> list:
    """``ids`` sorted when they are mutually comparable, else in their given order."""
    ids = list(ids)
    try:
        return sorted(ids)
    except TypeError:
        return ids


class Panel(Mapping):
    """Many series keyed by id: a read-only mapping ``{id: pd.Series}`` (``pd.DataFrame`` for several value columns).

    Built by :func:`from_long` (or :meth:`from_dict`); estimators take it as
    ``y`` and return long frames whose id and time columns are named
    ``id_col`` and ``time_col``.

    Attributes
    ----------
    ids : tuple
        The series ids in the order every result uses.
    columns : tuple
        The value column name(s).
    id_col, time_col : str
        Column names of the long frames this panel came from and results go to.
    """

    def __init__(self, ids, values, indexes, columns, id_col: str = ID_COL, time_col: str = TIME_COL):
        self.ids = tuple(ids)
        self._values = list(values)  # each (T_i, D) float64, read-only by contract
        self._indexes = list(indexes)
        self.columns = tuple(columns)
        self.id_col = id_col
        self.time_col = time_col
        self._position = {key: i for i, key in enumerate(self.ids)}

    @classmethod
    def from_dict(cls, mapping: Mapping, name: str = "y", id_col: str = ID_COL, time_col: str = TIME_COL) -> "Panel":
        """A panel from ``{id: Series | DataFrame | array}`` (each value one series)."""
        from tsgen.data._batch import _item_values
        from tsgen.data._index import validate_index

        if len(mapping) == 0:
            raise ValueError(f"`{name}` is an empty dict: expected at least one series.")
        ids = sorted_ids(mapping)
        values, indexes, columns = [], [], None
        for key in ids:
            label = f"{name}[{key!r}]"
            array, index, item_columns, _ = _item_values(mapping[key], label)
            if array.shape[0] == 0:
                raise ValueError(f"`{label}` is empty: expected at least one time step.")
            if columns is None:
                columns = item_columns
            elif len(item_columns) != len(columns):
                raise ValueError(
                    f"`{label}` has {len(item_columns)} variables but `{name}[{ids[0]!r}]` has {len(columns)}: "
                    "all series must have the same variables."
                )
            values.append(array if array.ndim == 2 else array[:, None])
            indexes.append(pd.RangeIndex(len(array)) if index is None else validate_index(index, label))
        check_one_frequency(ids, indexes, name)
        return cls(ids, values, indexes, columns, id_col, time_col)

    def __getitem__(self, key):
        i = self._position[key]
        values, index = self._values[i], self._indexes[i]
        if len(self.columns) == 1:
            return pd.Series(values[:, 0].copy(), index=index, name=self.columns[0])
        return pd.DataFrame(values.copy(), index=index, columns=list(self.columns))

    def __iter__(self):
        return iter(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        lengths = [len(v) for v in self._values]
        return (f"Panel({len(self.ids)} series, lengths {min(lengths)}-{max(lengths)}, "
                f"values {list(self.columns)}, id_col={self.id_col!r}, time_col={self.time_col!r})")

    def to_long(self) -> pd.DataFrame:
        """The panel back as one long frame (id, time and value columns)."""
        from tsgen.data._output import id_array

        lengths = np.array([len(v) for v in self._values])
        frame = pd.DataFrame({
            self.id_col: id_array(self.ids).take(np.repeat(np.arange(len(lengths)), lengths)),
            self.time_col: _concat_indexes(self._indexes),
        })
        block = np.concatenate(self._values)
        for j, column in enumerate(self.columns):
            frame[column] = block[:, j]
        return frame


def _concat_indexes(indexes) -> pd.Index:
    first = indexes[0]
    return first.append(list(indexes[1:])) if len(indexes) > 1 else first.copy()


def _frequency_label(index: pd.Index) -> str:
    if isinstance(index, (pd.DatetimeIndex, pd.PeriodIndex)):
        return index.freqstr if index.freq is not None else "none"
    return f"integer step {index.step if isinstance(index, pd.RangeIndex) else 1}"


def check_one_frequency(ids, indexes, name: str) -> None:
    """Refuse series of different frequencies (or index kinds) in one call, naming two of them."""
    first = indexes[0]
    first_label = (type(first), _frequency_label(first))
    for key, index in zip(ids, indexes):
        if len(index) == 1 and type(index) is type(first):
            continue  # a single timestamp has no frequency of its own to disagree with
        label = (type(index), _frequency_label(index))
        if label != first_label:
            raise ValueError(
                f"`{name}` mixes frequencies: series {ids[0]!r} has {type(first).__name__} frequency "
                f"{first_label[1]!r} but series {key!r} has {type(index).__name__} frequency {label[1]!r}. "
                "Forecast series of different frequencies in separate calls (or resample them to one)."
            )


def _check_columns(frame: pd.DataFrame, name: str, wanted: dict) -> None:
    available = [str(c) for c in frame.columns]
    for argument, column in wanted.items():
        if column not in frame.columns:
            raise ValueError(
                f"`{argument}` {column!r} is not a column of `{name}`; columns: {available}. "
                "A long frame needs an id, a time and a value column (pass their names)."
            )


def _time_values(times: pd.Series, name: str, time_col: str):
    """The time column as ``(int64 keys, kind, freq hint)``: datetimes, periods or integers."""
    dtype = times.dtype
    if isinstance(dtype, pd.PeriodDtype):
        return pd.PeriodIndex(times), "period"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return pd.DatetimeIndex(times), "datetime"
    if pd.api.types.is_integer_dtype(dtype):
        return pd.Index(times.to_numpy(dtype=np.int64)), "integer"
    if pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype):
        try:
            return pd.DatetimeIndex(pd.to_datetime(times, format="ISO8601")), "datetime"
        except (ValueError, TypeError):
            pass
    raise TypeError(
        f"`{name}` column {time_col!r} must hold datetimes, periods, ISO date strings or integers; "
        f"got dtype {dtype}."
    )


def _keys(times: pd.Index, kind: str) -> np.ndarray:
    return np.asarray(times.asi8 if kind != "integer" else times, dtype=np.int64)


def from_long(
    frame: pd.DataFrame,
    id_col: str = ID_COL,
    time_col: str = TIME_COL,
    value_col: str | list = VALUE_COL,
    *,
    freq=None,
    name: str = "y",
) -> Panel:
    """Split a long frame (one row per series and timestamp) into a :class:`Panel`.

    Parameters
    ----------
    frame : pd.DataFrame
        One row per (id, time): ``id_col``, ``time_col`` and the value column(s).
        Row order does not matter; other columns are ignored.
    id_col, time_col : str
        Names of the id and time columns (default ``unique_id``, ``ds``).
    value_col : str or list of str
        The value column (default ``y``), or several for multivariate series.
    freq : str or pandas offset, optional
        The frequency of a datetime time column; default: inferred from the
        data (every series must follow it).
    name : str
        The argument's name in error messages.

    Returns
    -------
    Panel
        ``{id: Series}`` ordered by id.

    Raises
    ------
    ValueError
        Missing columns, missing ids or times, a repeated (id, time), series
        of different frequencies, or a series with gaps (remedy:
        :func:`regularize`).
    """
    from tsgen.data._batch import _numeric_values

    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"`{name}` must be a long pandas DataFrame; got {type(frame).__name__}.")
    values_cols = [value_col] if isinstance(value_col, str) or not isinstance(value_col, (list, tuple)) else list(value_col)
    _check_columns(frame, name, {"id_col": id_col, "time_col": time_col,
                                 **{"value_col": c for c in values_cols}})
    if len(frame) == 0:
        raise ValueError(f"`{name}` has no rows: expected at least one series.")
    raw_ids = frame[id_col]
    if frame[time_col].isna().any():
        raise ValueError(f"`{name}` column {time_col!r} is missing at row {int(frame[time_col].isna().to_numpy().argmax())}.")
    try:
        codes, uniques = pd.factorize(raw_ids, sort=True)
    except TypeError:  # ids of mixed types: kept in order of first appearance
        codes, uniques = pd.factorize(raw_ids, sort=False)
    if codes.min() < 0:  # factorize marks a missing id -1 (cheaper than isna on a column of strings)
        raise ValueError(f"`{name}` column {id_col!r} is missing at row {int(np.argmax(codes < 0))}.")
    times, kind = _time_values(frame[time_col], name, time_col)
    keys = _keys(times, kind)
    order = np.lexsort((keys, codes))
    codes, keys = codes[order], keys[order]
    times = times[order]
    repeated = (np.diff(codes) == 0) & (np.diff(keys) == 0)
    if repeated.any():
        at = int(np.argmax(repeated)) + 1
        raise ValueError(
            f"`{name}` has two rows for series {uniques[codes[at]]!r} at {times[at]!r}: "
            "each (id, time) pair needs exactly one row."
        )
    block = _numeric_values(frame[values_cols], name)[order]
    counts = np.bincount(codes, minlength=len(uniques))
    bounds = np.concatenate([[0], np.cumsum(counts)])
    ids = [u.item() if isinstance(u, np.generic) else u for u in uniques]
    indexes = _series_indexes(ids, times, keys, bounds, kind, freq, name)
    values = [block[bounds[i] : bounds[i + 1]] for i in range(len(ids))]
    return Panel(ids, values, indexes, values_cols, id_col, time_col)


def _series_indexes(ids, times: pd.Index, keys: np.ndarray, bounds: np.ndarray, kind: str, freq, name: str) -> list:
    """Each series' regular index, built once per distinct (start, length) and shared between series."""
    spans = [(int(bounds[i]), int(bounds[i + 1])) for i in range(len(ids))]
    if kind == "period":
        step = times.freq.n
        return [_checked(ids[i], times[a:b], np.all(np.diff(keys[a:b]) == step), name) for i, (a, b) in enumerate(spans)]
    if kind == "integer":
        steps = {int(keys[a + 1] - keys[a]) for a, b in spans if b - a > 1}
        if len(steps) > 1:
            raise ValueError(
                f"`{name}` mixes frequencies: the integer time steps of its series differ ({sorted(steps)}). "
                "Forecast series of different frequencies in separate calls."
            )
        step = steps.pop() if steps else 1
        out = []
        for i, (a, b) in enumerate(spans):
            regular = np.all(np.diff(keys[a:b]) == step)
            out.append(_checked(ids[i], pd.RangeIndex(int(keys[a]), int(keys[a]) + step * (b - a), step), regular, name))
        return out
    offset = pd.tseries.frequencies.to_offset(freq) if freq is not None else _common_offset(ids, times, spans, name)
    cache: dict = {}
    out = []
    for i, (a, b) in enumerate(spans):
        key = (int(keys[a]), b - a)
        regular_index = cache.get(key)
        if regular_index is None:
            # in the column's own unit (parquet gives us or ms): keys are compared in it
            regular_index = cache[key] = pd.date_range(times[a], periods=b - a, freq=offset, unit=times.unit)
        if not np.array_equal(regular_index.asi8, keys[a:b]):
            own = infer_offset(times[a:b]) if b - a >= 3 else None
            if own is not None:
                raise ValueError(
                    f"`{name}` mixes frequencies: series {ids[i]!r} has frequency {own.freqstr!r} but the others "
                    f"have {offset.freqstr!r}. Forecast series of different frequencies in separate calls."
                )
            _checked(ids[i], None, False, name)
        out.append(regular_index)
    return out


def _common_offset(ids, times: pd.Index, spans: list, name: str):
    """The frequency of the first series (in id order) from which one can be inferred."""
    long_enough = False
    for a, b in spans:
        if b - a >= 3:
            long_enough = True
            inferred = infer_offset(times[a:b])
            if inferred is not None:
                return inferred
    # a frequency is read off a whole series, so a gap anywhere in it counts, however long its regular runs
    reason = (f"every series of `{name}` with 3 or more timestamps has gaps or irregular steps" if long_enough
              else f"`{name}` has no series with 3 or more timestamps")
    raise ValueError(
        f"{reason}, so its frequency cannot be inferred: give it, e.g. `tsgen.data.from_long(frame, freq='D')` "
        f"as `{name}`, or fill the gaps with tsgen.data.regularize."
    )


def _checked(key, index, regular: bool, name: str):
    if not regular:
        raise ValueError(
            f"`{name}` series {key!r} has gaps or irregular timestamps: expected consecutive steps at one "
            "frequency. Insert the missing timestamps with NaN values (tsgen.data.regularize, or "
            "`tsgen forecast --fill nan`)."
        )
    return index


def regularize(y, freq=None, *, id_col: str = ID_COL, time_col: str = TIME_COL):
    """``y`` on a regular time grid, with NaN at the timestamps it lacks (never filled with values).

    tsgen models marginalise NaN, so a series with gaps can be forecast
    once its gaps are explicit.

    Parameters
    ----------
    y : pd.Series, pd.DataFrame (time-indexed), or a long frame with ``id_col`` and ``time_col``
    freq : str or pandas offset, optional
        The grid's frequency; default: the most common step between
        consecutive timestamps (per series for a long frame, which must agree).

    Returns
    -------
    The same kind of object, a copy: each series spans its own first to
    last timestamp at ``freq``.
    """
    if isinstance(y, pd.DataFrame) and id_col in y.columns and time_col in y.columns:
        return _regularize_long(y, freq, id_col, time_col)
    if not isinstance(y, (pd.Series, pd.DataFrame)):
        raise TypeError(f"`y` must be a pandas Series or DataFrame; got {type(y).__name__}.")
    index = y.index
    if not isinstance(index, (pd.DatetimeIndex, pd.PeriodIndex)):
        raise TypeError(f"`y` must have a DatetimeIndex or PeriodIndex to be regularized; got {type(index).__name__}.")
    checked = unique_index(index, "y")
    if checked is not index:  # pandas 2 flagged repeats that the labels do not have: use the unflagged copy
        y, index = y.set_axis(checked), checked
    ordered = y.sort_index()
    offset = _grid_offset(ordered.index, freq)
    if isinstance(index, pd.PeriodIndex):
        grid = pd.period_range(ordered.index[0], ordered.index[-1], freq=offset)
    else:
        grid = pd.date_range(ordered.index[0], ordered.index[-1], freq=offset)
        stray = ~ordered.index.isin(grid)
        if stray.any():
            raise ValueError(
                f"`y` has timestamps off the {offset.freqstr!r} grid (first: {ordered.index[stray][0]!r}): "
                "resample it (e.g. y.resample(...).mean()) instead."
            )
    out = ordered.reindex(grid)
    out.index.name = index.name
    return out


def _grid_offset(index: pd.Index, freq):
    """``freq`` as an offset, else the frequency most runs of 3 consecutive timestamps show (gaps break few runs)."""
    if freq is not None:
        return pd.tseries.frequencies.to_offset(freq)
    if isinstance(index, pd.PeriodIndex):
        return index.freq
    if len(index) < 3:
        raise ValueError("`y` has fewer than 3 timestamps, too few to infer a frequency: pass `freq`.")
    named = [infer_offset(index[k : k + 3]) for k in range(min(len(index) - 2, 200))]
    named = [f for f in named if f is not None]
    if not named:
        raise ValueError("no frequency could be inferred from the timestamps of `y`: pass `freq` (e.g. freq='D').")
    offset = pd.tseries.frequencies.to_offset(Counter(named).most_common(1)[0][0])
    if offset.n == 1 and offset.name in ("D", "B"):
        # three weekdays in a row read as days or business days alike: weekend stamps decide
        return pd.tseries.frequencies.to_offset("D" if (index.dayofweek >= 5).any() else "B")
    return offset


def _regularize_long(frame: pd.DataFrame, freq, id_col: str, time_col: str) -> pd.DataFrame:
    times, kind = _time_values(frame[time_col], "y", time_col)
    if kind == "integer":
        raise TypeError(f"`y` column {time_col!r} must hold datetimes or periods to be regularized; "
                        f"got {frame[time_col].dtype}.")
    work = frame.assign(**{time_col: times})
    offsets = {}
    pieces = []
    for key, rows in work.groupby(id_col, sort=True, dropna=False):
        series = rows.drop(columns=[id_col]).set_index(time_col)
        filled = regularize(series, freq)
        if len(filled) > 1:
            offsets[key] = filled.index.freqstr
        pieces.append(filled.reset_index().assign(**{id_col: key}))
    if len(set(offsets.values())) > 1:
        first, *_ = offsets.items()
        other = next((k, f) for k, f in offsets.items() if f != first[1])
        raise ValueError(
            f"`y` mixes frequencies: series {first[0]!r} has {first[1]!r} but series {other[0]!r} has "
            f"{other[1]!r}; pass `freq` or forecast them in separate calls."
        )
    out = pd.concat(pieces, ignore_index=True)
    return out[list(frame.columns)]

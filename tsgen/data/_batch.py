"""The pandas edge: user series in, padded tensors plus masks out, and back.

Invariants of a :class:`SeriesBatch` (what every model below the edge may rely on):
- ``values`` is float64 ``(batch, time, dim)``; series shorter than the
  longest are padded at the end;
- ``mask`` has the same shape, True where a value was observed; missing
  values (NaN) and padding are False and hold NaN in ``values``;
- ``lengths[i]`` is the number of time steps of series ``i`` (padding excluded);
- ``indexes[i]`` is the validated time index of series ``i``;
- ``ids`` names each series of panel input (kind ``"panel"``: a long frame
  or a dict, ordered by id) and is None otherwise (series are then known by
  position); ``names``, when not None, holds each series' own variable
  names where they differ between series (a list of differently named
  Series), ``columns`` being the first series';
- the caller's objects are never modified or aliased.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from tsgen._validation import is_int
from tsgen.data._index import index_from_spec, index_to_spec, validate_index
from tsgen.data._panel import ID_COL, TIME_COL, Panel, from_long, is_long_frame

#: how the user handed the data in, so results go back in the same shape
INPUT_KINDS = ("series", "frame", "array", "list", "arrays", "panel")


@dataclass(frozen=True)
class SeriesBatch:
    values: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor
    indexes: tuple
    columns: tuple
    kind: str
    ids: tuple | None = None
    names: tuple | None = None
    id_col: str = ID_COL
    time_col: str = TIME_COL

    @property
    def n_series(self) -> int:
        return self.values.shape[0]

    @property
    def n_dims(self) -> int:
        return self.values.shape[-1]

    @property
    def is_collection(self) -> bool:
        return self.kind in ("list", "arrays", "panel")

    @property
    def is_panel(self) -> bool:
        """Whether results go back as one long frame keyed by id (input was a long frame or a dict)."""
        return self.kind == "panel"

    @property
    def series_ids(self) -> tuple:
        """Each series' id: the panel's ids, else positions 0..n-1."""
        return self.ids if self.ids is not None else tuple(range(self.n_series))

    def columns_of(self, i: int) -> tuple:
        """The variable names of series ``i`` (its own name for a univariate Series)."""
        return self.names[i] if self.names is not None else self.columns

    @property
    def n_observed(self) -> int:
        return int(self.mask.sum())

    def to_spec(self) -> tuple[dict, dict[str, torch.Tensor]]:
        """JSON metadata and tensors that :meth:`from_spec` turns back into this batch."""
        meta = {
            "indexes": [index_to_spec(ix) for ix in self.indexes],
            "columns": [str(c) for c in self.columns],
            "kind": self.kind,
        }
        if self.ids is not None:
            meta.update(ids=[_json_id(key) for key in self.ids], id_col=str(self.id_col), time_col=str(self.time_col))
        if self.names is not None:
            meta["names"] = [[str(c) for c in names] for names in self.names]
        return meta, {"values": self.values, "mask": self.mask, "lengths": self.lengths}

    @classmethod
    def from_spec(cls, meta: dict, tensors: dict[str, torch.Tensor]) -> "SeriesBatch":
        return cls(
            values=tensors["values"],
            mask=tensors["mask"],
            lengths=tensors["lengths"],
            indexes=tuple(index_from_spec(s) for s in meta["indexes"]),
            columns=tuple(meta["columns"]),
            kind=meta["kind"],
            ids=tuple(meta["ids"]) if meta.get("ids") is not None else None,
            names=tuple(tuple(n) for n in meta["names"]) if meta.get("names") is not None else None,
            id_col=meta.get("id_col", ID_COL),
            time_col=meta.get("time_col", TIME_COL),
        )


def _json_id(key):
    """An id as JSON keeps it: integers and strings as they are, anything else by its text."""
    if isinstance(key, (bool, np.bool_)):
        return str(key)
    if isinstance(key, (int, np.integer)):
        return int(key)
    return key if isinstance(key, str) else str(key)


def _is_real(dtype) -> bool:
    if isinstance(dtype, np.dtype):
        return dtype.kind in "iuf"  # the common case, decided without pandas' slower checks
    return (pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
            and not pd.api.types.is_complex_dtype(dtype))


def _check_real(dtypes, columns, name: str) -> None:
    bad = [(c, dtype) for c, dtype in zip(columns, dtypes) if not _is_real(dtype)]
    if bad:
        # refused rather than converted, as statsmodels does: an object column may mix numbers and text
        kinds = sorted({str(dtype) for _, dtype in bad})
        textual = any((isinstance(dtype, np.dtype) and dtype.kind in "OSU") or pd.api.types.is_string_dtype(dtype)
                      for _, dtype in bad)
        hint = (" (if they hold numbers as objects or text, convert them first, e.g. with `pd.to_numeric` or "
                "`.astype(float)`)") if textual else ""
        raise TypeError(
            f"`{name}` has non-numeric column(s) {[c for c, _ in bad]!r} of dtype {', '.join(kinds)}: "
            f"expected real numbers (NaN for missing){hint}."
        )


def _numeric_values(frame: pd.DataFrame, name: str) -> np.ndarray:
    """A frame's values as a float64 copy, after checking that every column holds real numbers."""
    if frame.shape[1] == 0:
        raise ValueError(f"`{name}` has no columns: expected at least one value column.")
    _check_real(frame.dtypes, frame.columns, name)
    values = frame.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
    if np.isinf(values).any():
        raise ValueError(f"`{name}` contains infinite values: expected finite numbers or NaN.")
    return values


def _item_values(item, name: str) -> tuple[np.ndarray, pd.Index | None, tuple, str]:
    """``(values (T, D), index or None, columns, kind)`` of one series.

    ``values`` may share memory with ``item``: the caller copies it into the
    padded block, so nothing of the user's is aliased or modified."""
    if isinstance(item, pd.Series):
        dtype = item.dtype  # a property that costs ~1 us: read once (lists of thousands of series)
        if isinstance(dtype, np.dtype) and dtype.kind in "iuf":
            values = item.values
        else:  # extension dtypes (nullable, Arrow) mark missing values with NA
            _check_real([dtype], [item.name], name)
            values = item.to_numpy(dtype=np.float64, na_value=np.nan)
        return values[:, None], item.index, (item.name if item.name is not None else "y",), "series"
    if isinstance(item, pd.DataFrame):
        if item.shape[1] == 0:
            raise ValueError(f"`{name}` has no columns: expected at least one value column.")
        _check_real(item.dtypes, item.columns, name)
        return item.to_numpy(dtype=np.float64, na_value=np.nan), item.index, tuple(item.columns), "frame"
    if isinstance(item, (np.ndarray, torch.Tensor)) or (
        isinstance(item, (list, tuple)) and len(item) > 0 and np.isscalar(item[0])
    ):
        array = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item)
        if array.ndim == 1:
            array = array[:, None]
        if array.ndim != 2:
            raise ValueError(
                f"`{name}` arrays must have shape (time,) or (time, dim), got shape {array.shape}."
            )
        columns = tuple(f"y{j}" for j in range(array.shape[1]))
        _check_real([array.dtype] * array.shape[1], columns, name)
        return array, None, columns, "array"
    raise TypeError(
        f"`{name}` must be a pandas Series, a DataFrame, an array, or a list of them; "
        f"got {type(item).__name__}."
    )


def _plain_series_values(item) -> np.ndarray | None:
    """The values of a Series backed by a real numpy array, else None.

    The common item of a long list, decided in under 1 us: ``Series.values`` is a
    numpy array exactly when the dtype is a numpy dtype (extension dtypes give
    their own array type), and the array's dtype is read without pandas'
    property chain."""
    if not isinstance(item, pd.Series):
        return None
    values = item.values
    if type(values) is np.ndarray and values.dtype.kind in "iuf":
        return values
    return None


def to_series_batch(y, name: str = "y", min_length: int = 1) -> SeriesBatch:
    """Validate ``y`` and convert it once to a :class:`SeriesBatch`.

    ``y`` is a ``pd.Series`` (univariate), a ``pd.DataFrame`` (columns are
    variables), an array of shape ``(time,)``/``(time, dim)``, or a list of
    any of those (many series, or a collection of sequences); or panel
    input keyed by id (kind ``"panel"``, see :mod:`tsgen.data._panel`): a
    :class:`~tsgen.data.Panel`, a dict ``{id: series}``, or a long frame with
    ``unique_id`` and ``ds`` columns (values in ``y``).

    Many series cost little more than one: each series is only unpacked
    (values and index) in Python, the value checks (infinite, all missing,
    too short) and the mask run once on the padded block, equal lengths are
    stacked in one copy, an index object shared by several series is
    validated once, and an index carrying its frequency costs O(1).
    """
    if isinstance(y, SeriesBatch):
        return y
    if y is None:
        raise TypeError(f"`{name}` is required: expected a Series, DataFrame, array or list of them.")
    if is_long_frame(y):
        y = from_long(y, name=name)
    elif isinstance(y, Mapping) and not isinstance(y, Panel):
        y = Panel.from_dict(y, name)
    if isinstance(y, Panel):
        return _panel_batch(y, name, min_length)
    is_list = isinstance(y, (list, tuple)) and not (len(y) > 0 and np.isscalar(y[0]))
    items = list(y) if is_list else [y]
    if len(items) == 0:
        raise ValueError(f"`{name}` is an empty list: expected at least one series.")

    def label(i: int) -> str:  # built only for an error message
        return f"{name}[{i}]" if is_list else name

    arrays, raw_indexes, columns, first_kind = [], [], None, None
    own_columns = []  # each series' variable names, kept when they differ (a list of differently named series)
    for i, item in enumerate(items):
        values = _plain_series_values(item)
        if values is not None:  # (T,): the univariate fast path
            index, kind = item.index, "series"
            n_columns = 1
            item_columns = (item.name if item.name is not None else "y",)
        else:
            values, index, item_columns, kind = _item_values(item, label(i))
            n_columns = len(item_columns)
        if columns is None:
            columns = item_columns
        own_columns.append(item_columns)
        if values.shape[0] == 0:
            raise ValueError(f"`{label(i)}` is empty: expected at least {max(min_length, 1)} time steps.")
        if n_columns != len(columns):
            raise ValueError(
                f"`{label(i)}` has {n_columns} variables but `{name}[0]` has {len(columns)}: "
                "all series must have the same variables."
            )
        if first_kind is None:
            first_kind = kind
        arrays.append(values)
        raw_indexes.append(index)
    lengths = np.fromiter((a.shape[0] for a in arrays), dtype=np.int64, count=len(arrays))
    padded = _padded_block(arrays, lengths, len(columns))
    mask = np.isnan(padded)
    np.logical_not(mask, out=mask)
    _check_block(padded, mask, lengths, label, min_length)
    indexes = _validated_indexes(raw_indexes, lengths, label)
    kind = ("arrays" if first_kind == "array" else "list") if is_list else first_kind
    differ = any(c != columns for c in own_columns)
    return SeriesBatch(
        values=torch.from_numpy(padded),
        mask=torch.from_numpy(mask),
        lengths=torch.from_numpy(lengths),
        indexes=indexes,
        columns=columns,
        kind=kind,
        names=tuple(own_columns) if differ else None,
    )


def _panel_batch(panel: Panel, name: str, min_length: int) -> SeriesBatch:
    """A panel's series (already split, validated and ordered by id) as one padded batch."""
    ids = panel.ids

    def label(i: int) -> str:
        return f"{name}[{ids[i]!r}]"

    arrays = panel._values
    lengths = np.fromiter((a.shape[0] for a in arrays), dtype=np.int64, count=len(arrays))
    padded = _padded_block(arrays, lengths, len(panel.columns))
    mask = np.isnan(padded)
    np.logical_not(mask, out=mask)
    _check_block(padded, mask, lengths, label, min_length)
    return SeriesBatch(
        values=torch.from_numpy(padded),
        mask=torch.from_numpy(mask),
        lengths=torch.from_numpy(lengths),
        indexes=tuple(panel._indexes),
        columns=panel.columns,
        kind="panel",
        ids=ids,
        id_col=panel.id_col,
        time_col=panel.time_col,
    )


def _padded_block(arrays: list, lengths: np.ndarray, n_columns: int) -> np.ndarray:
    """One float64 copy ``(batch, max length, n_columns)`` of ``arrays`` (each
    ``(T_i,)`` for one column or ``(T_i, n_columns)``), NaN past each end."""
    num_times = int(lengths.max())
    if int(lengths.min()) == num_times:
        # Equal lengths (the usual many-series input): one stacking copy, no NaN fill.
        padded = np.empty((len(arrays), num_times, n_columns))
        if n_columns == 1 and all(a.ndim == 1 for a in arrays):
            np.stack(arrays, out=padded.reshape(len(arrays), num_times))
            return padded
        if all(a.ndim == 2 for a in arrays):
            np.stack(arrays, out=padded)
            return padded
    padded = np.full((len(arrays), num_times, n_columns), np.nan)
    for i, a in enumerate(arrays):
        padded[i, : len(a)] = a if a.ndim == 2 else a[:, None]
    return padded


def _check_block(padded: np.ndarray, mask: np.ndarray, lengths: np.ndarray, label, min_length: int) -> None:
    """Value checks over all series at once; each error names the first offending series."""
    infinite = np.isinf(padded).any(axis=(1, 2))
    if infinite.any():
        raise ValueError(f"`{label(int(np.argmax(infinite)))}` contains infinite values: expected finite numbers or NaN.")
    unobserved = ~mask.any(axis=(1, 2))
    if unobserved.any():
        raise ValueError(f"`{label(int(np.argmax(unobserved)))}` is all NaN: expected at least one observed value.")
    short = lengths < min_length
    if short.any():
        i = int(np.argmax(short))
        raise ValueError(f"`{label(i)}` has {lengths[i]} time steps; this model needs at least {min_length}.")


def _validated_indexes(raw_indexes: list, lengths: np.ndarray, label) -> tuple:
    """Each series' validated index; an index object shared by several series is checked once."""
    seen: dict[int, pd.Index] = {}
    out = []
    for i, index in enumerate(raw_indexes):
        if index is None:
            out.append(pd.RangeIndex(int(lengths[i])))
            continue
        checked = seen.get(id(index))
        if checked is None:
            checked = seen[id(index)] = validate_index(index, label(i))
        out.append(checked)
    return tuple(out)


def validate_horizon(horizon) -> int:
    if not is_int(horizon):
        raise TypeError(f"`horizon` must be a positive integer, got {horizon!r}.")
    if horizon <= 0:
        raise ValueError(f"`horizon` must be a positive integer, got {horizon}.")
    return int(horizon)

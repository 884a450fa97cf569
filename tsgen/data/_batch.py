"""The pandas edge: user series in, padded tensors plus masks out, and back.

Invariants of a :class:`SeriesBatch` (what every model below the edge may rely on):
- ``values`` is float64 ``(batch, time, dim)``; series shorter than the
  longest are padded at the end;
- ``mask`` has the same shape, True where a value was observed; missing
  values (NaN) and padding are False and hold NaN in ``values``;
- ``lengths[i]`` is the number of time steps of series ``i`` (padding excluded);
- ``indexes[i]`` is the validated time index of series ``i``;
- the caller's objects are never modified or aliased.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from tsgen._validation import is_int
from tsgen.data._index import index_from_spec, index_to_spec, validate_index

#: how the user handed the data in, so results go back in the same shape
INPUT_KINDS = ("series", "frame", "array", "list", "arrays")


@dataclass(frozen=True)
class SeriesBatch:
    values: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor
    indexes: tuple
    columns: tuple
    kind: str

    @property
    def n_series(self) -> int:
        return self.values.shape[0]

    @property
    def n_dims(self) -> int:
        return self.values.shape[-1]

    @property
    def is_collection(self) -> bool:
        return self.kind in ("list", "arrays")

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
        )


def _is_real(dtype) -> bool:
    if isinstance(dtype, np.dtype):
        return dtype.kind in "iuf"  # the common case, decided without pandas' slower checks
    return (pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
            and not pd.api.types.is_complex_dtype(dtype))


def _check_real(dtypes, columns, name: str) -> None:
    bad = [c for c, dtype in zip(columns, dtypes) if not _is_real(dtype)]
    if bad:
        raise TypeError(
            f"`{name}` has non-numeric column(s) {bad!r}: expected real numbers (NaN for missing)."
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


def to_series_batch(y, name: str = "y", min_length: int = 1) -> SeriesBatch:
    """Validate ``y`` and convert it once to a :class:`SeriesBatch`.

    ``y`` is a ``pd.Series`` (univariate), a ``pd.DataFrame`` (columns are
    variables), an array of shape ``(time,)``/``(time, dim)``, or a list of
    any of those (many series, or a collection of sequences).

    Many series cost little more than one: each series is only unpacked
    (values and index) in Python, and the value checks (infinite, all
    missing, too short) and the mask run once on the padded block.
    """
    if isinstance(y, SeriesBatch):
        return y
    if y is None:
        raise TypeError(f"`{name}` is required: expected a Series, DataFrame, array or list of them.")
    is_list = isinstance(y, (list, tuple)) and not (len(y) > 0 and np.isscalar(y[0]))
    items = list(y) if is_list else [y]
    if len(items) == 0:
        raise ValueError(f"`{name}` is an empty list: expected at least one series.")
    labels = [f"{name}[{i}]" for i in range(len(items))] if is_list else [name]
    arrays, raw_indexes, kinds, columns = [], [], [], None
    for i, (item, label) in enumerate(zip(items, labels)):
        values, index, item_columns, kind = _item_values(item, label)
        if len(values) == 0:
            raise ValueError(f"`{label}` is empty: expected at least {max(min_length, 1)} time steps.")
        if columns is None:
            columns = item_columns
        elif len(item_columns) != len(columns):
            raise ValueError(
                f"`{label}` has {len(item_columns)} variables but `{name}[0]` has {len(columns)}: "
                "all series must have the same variables."
            )
        arrays.append(values)
        raw_indexes.append(index)
        kinds.append(kind)
    lengths = np.array([len(a) for a in arrays])
    padded = np.full((len(arrays), int(lengths.max()), len(columns)), np.nan)
    for i, a in enumerate(arrays):
        padded[i, : len(a)] = a
    mask = ~np.isnan(padded)
    _check_block(padded, mask, lengths, labels, min_length)
    indexes = _validated_indexes(raw_indexes, lengths, labels)
    kind = ("arrays" if kinds[0] == "array" else "list") if is_list else kinds[0]
    return SeriesBatch(
        values=torch.from_numpy(padded),
        mask=torch.from_numpy(mask),
        lengths=torch.from_numpy(lengths.astype(np.int64)),
        indexes=indexes,
        columns=columns,
        kind=kind,
    )


def _check_block(padded: np.ndarray, mask: np.ndarray, lengths: np.ndarray, labels: list, min_length: int) -> None:
    """Value checks over all series at once; each error names the first offending series."""
    infinite = np.isinf(padded).any(axis=(1, 2))
    if infinite.any():
        raise ValueError(f"`{labels[int(np.argmax(infinite))]}` contains infinite values: expected finite numbers or NaN.")
    unobserved = ~mask.any(axis=(1, 2))
    if unobserved.any():
        raise ValueError(f"`{labels[int(np.argmax(unobserved))]}` is all NaN: expected at least one observed value.")
    short = lengths < min_length
    if short.any():
        i = int(np.argmax(short))
        raise ValueError(f"`{labels[i]}` has {lengths[i]} time steps; this model needs at least {min_length}.")


def _validated_indexes(raw_indexes: list, lengths: np.ndarray, labels: list) -> tuple:
    """Each series' validated index; an index object shared by several series is checked once."""
    seen: dict[int, pd.Index] = {}
    out = []
    for index, n, label in zip(raw_indexes, lengths, labels):
        if index is None:
            out.append(pd.RangeIndex(int(n)))
            continue
        checked = seen.get(id(index))
        if checked is None:
            checked = seen[id(index)] = validate_index(index, label)
        out.append(checked)
    return tuple(out)


def validate_horizon(horizon) -> int:
    if not is_int(horizon):
        raise TypeError(f"`horizon` must be a positive integer, got {horizon!r}.")
    if horizon <= 0:
        raise ValueError(f"`horizon` must be a positive integer, got {horizon}.")
    return int(horizon)

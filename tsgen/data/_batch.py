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


def _as_frame(item, name: str) -> tuple[pd.DataFrame, str]:
    if isinstance(item, pd.Series):
        return item.to_frame(name=item.name if item.name is not None else "y"), "series"
    if isinstance(item, pd.DataFrame):
        return item, "frame"
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
        return pd.DataFrame(array, columns=[f"y{j}" for j in range(array.shape[1])]), "array"
    raise TypeError(
        f"`{name}` must be a pandas Series, a DataFrame, an array, or a list of them; "
        f"got {type(item).__name__}."
    )


def _numeric_values(frame: pd.DataFrame, name: str) -> np.ndarray:
    if frame.shape[1] == 0:
        raise ValueError(f"`{name}` has no columns: expected at least one value column.")
    bad = [c for c in frame.columns if not (
        pd.api.types.is_numeric_dtype(frame[c].dtype) and not pd.api.types.is_bool_dtype(frame[c].dtype)
    ) or pd.api.types.is_complex_dtype(frame[c].dtype)]
    if bad:
        raise TypeError(
            f"`{name}` has non-numeric column(s) {bad!r}: expected real numbers (NaN for missing)."
        )
    values = frame.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
    if np.isinf(values).any():
        raise ValueError(f"`{name}` contains infinite values: expected finite numbers or NaN.")
    return values


def to_series_batch(y, name: str = "y", min_length: int = 1) -> SeriesBatch:
    """Validate ``y`` and convert it once to a :class:`SeriesBatch`.

    ``y`` is a ``pd.Series`` (univariate), a ``pd.DataFrame`` (columns are
    variables), an array of shape ``(time,)``/``(time, dim)``, or a list of
    any of those (many series, or a collection of sequences).
    """
    if isinstance(y, SeriesBatch):
        return y
    if y is None:
        raise TypeError(f"`{name}` is required: expected a Series, DataFrame, array or list of them.")
    is_list = isinstance(y, (list, tuple)) and not (len(y) > 0 and np.isscalar(y[0]))
    items = list(y) if is_list else [y]
    if len(items) == 0:
        raise ValueError(f"`{name}` is an empty list: expected at least one series.")
    frames, kinds, arrays, indexes = [], [], [], []
    for i, item in enumerate(items):
        label = f"{name}[{i}]" if is_list else name
        frame, kind = _as_frame(item, label)
        values = _numeric_values(frame, label)
        if len(values) == 0:
            raise ValueError(f"`{label}` is empty: expected at least {max(min_length, 1)} time steps.")
        if np.isnan(values).all():
            raise ValueError(f"`{label}` is all NaN: expected at least one observed value.")
        if len(values) < min_length:
            raise ValueError(
                f"`{label}` has {len(values)} time steps; this model needs at least {min_length}."
            )
        index = validate_index(frame.index, label) if kind != "array" else pd.RangeIndex(len(values))
        frames.append(frame)
        kinds.append(kind)
        arrays.append(values)
        indexes.append(index)
    columns = tuple(frames[0].columns)
    for i, frame in enumerate(frames[1:], start=1):
        if frame.shape[1] != len(columns):
            raise ValueError(
                f"`{name}[{i}]` has {frame.shape[1]} variables but `{name}[0]` has {len(columns)}: "
                "all series must have the same variables."
            )
    kind = ("arrays" if kinds[0] == "array" else "list") if is_list else kinds[0]
    max_len = max(len(a) for a in arrays)
    padded = np.full((len(arrays), max_len, len(columns)), np.nan)
    for i, a in enumerate(arrays):
        padded[i, : len(a)] = a
    values = torch.from_numpy(padded)
    return SeriesBatch(
        values=values,
        mask=~torch.isnan(values),
        lengths=torch.tensor([len(a) for a in arrays], dtype=torch.long),
        indexes=tuple(indexes),
        columns=columns,
        kind=kind,
    )


def validate_horizon(horizon) -> int:
    if isinstance(horizon, (bool, np.bool_)) or not isinstance(horizon, (int, np.integer)):
        raise TypeError(f"`horizon` must be a positive integer, got {horizon!r}.")
    if horizon <= 0:
        raise ValueError(f"`horizon` must be a positive integer, got {horizon}.")
    return int(horizon)

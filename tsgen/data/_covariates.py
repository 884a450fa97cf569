"""Exogenous regressors ``X``: validated and aligned to the time steps of ``y``.

Invariants of the tensor :func:`to_covariates` returns (what models rely on):
- float64 ``(n_series, rows, n_features)``, fully observed (no NaN in any
  row a series uses); rows past a series' own need are zero padding;
- row ``j`` of series ``i`` belongs to the ``j``-th timestamp that series
  needs: its history (when ``history=True``) followed by ``horizon`` future
  steps at the index's frequency;
- when both ``X`` and the series have a time index (``DatetimeIndex`` or
  ``PeriodIndex``) rows are picked by timestamp, so ``X`` may be longer
  than needed and in any order; otherwise (plain arrays, integer indexes)
  rows are matched by position and ``X`` must have exactly the rows needed;
- the caller's objects are never modified.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from tsgen.data._batch import _numeric_values
from tsgen.data._index import future_index

_TIME_INDEXES = (pd.DatetimeIndex, pd.PeriodIndex)


def _is_collection(X) -> bool:
    return isinstance(X, (list, tuple)) and len(X) > 0 and not np.isscalar(X[0])


def _as_frame(item, label: str) -> pd.DataFrame:
    if isinstance(item, pd.Series):
        return item.to_frame()
    if isinstance(item, pd.DataFrame):
        return item
    array = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError(f"`{label}` must have shape (rows,) or (rows, features); got shape {array.shape}.")
    return pd.DataFrame(array)


def _names(frame: pd.DataFrame) -> tuple[str, ...] | None:
    """Column names worth reporting (all strings, as scikit-learn's ``feature_names_in_``)."""
    columns = list(frame.columns)
    return tuple(columns) if columns and all(isinstance(c, str) for c in columns) else None


def _select_columns(frame: pd.DataFrame, label: str, feature_names, n_features) -> pd.DataFrame:
    """The fitted columns in their fitted order when ``X`` names them; a width check otherwise."""
    if feature_names is not None and _names(frame) is not None:
        missing = [c for c in feature_names if c not in frame.columns]
        if missing:
            raise ValueError(
                f"`{label}` lacks column(s) {missing} that the model was fitted with "
                f"(fitted columns: {list(feature_names)})."
            )
        return frame[list(feature_names)]
    if n_features is not None and frame.shape[1] != n_features:
        raise ValueError(f"`{label}` has {frame.shape[1]} columns; the model was fitted with {n_features}.")
    return frame


def _needed_index(index: pd.Index, horizon: int, history: bool) -> pd.Index:
    if horizon == 0:
        return index
    future = future_index(index, horizon)
    return index.append(future) if history else future


def _describe(n_history: int, horizon: int, history: bool) -> str:
    past = f"the {n_history} time steps of `y`"
    future = f"the {horizon} forecast steps"
    if history and horizon:
        return f"{past} and {future}"
    return past if history else future


def _rows_by_timestamp(frame: pd.DataFrame, label: str, needed: pd.Index, what: str) -> np.ndarray:
    """Positions in ``frame`` of the ``needed`` timestamps, or an error naming the first one missing."""
    index = frame.index
    if type(index) is not type(needed):
        raise ValueError(
            f"`{label}` has a {type(index).__name__} but `y` has a {type(needed).__name__}: "
            "index both by the same kind of time index."
        )
    if isinstance(index, pd.PeriodIndex) and index.freqstr != needed.freqstr:
        raise ValueError(
            f"`{label}` has periods of frequency {index.freqstr!r} but `y` has {needed.freqstr!r}."
        )
    if index.has_duplicates:
        raise ValueError(
            f"`{label}` has duplicated timestamps (first: {index[index.duplicated()][0]!r}): "
            "each timestamp needs exactly one row."
        )
    positions = index.get_indexer(needed)
    missing = positions < 0
    if missing.any():
        raise ValueError(
            f"`{label}` does not cover {what} ({needed[0]} to {needed[-1]}): "
            f"{int(missing.sum())} of those {len(needed)} timestamps are missing, the first {needed[missing][0]}."
        )
    return positions


def to_covariates(
    X,
    name: str,
    indexes,
    horizon: int = 0,
    *,
    history: bool = True,
    feature_names=None,
    n_features: int | None = None,
) -> tuple[torch.Tensor, tuple[str, ...] | None]:
    """Exogenous regressors aligned to each series' time steps (see the module docstring).

    Parameters
    ----------
    X : DataFrame, Series, array ``(rows, features)``, or a list with one of them per series
    name : the argument's name for error messages
    indexes : the validated time index of each series (``SeriesBatch.indexes``)
    horizon : number of future steps needed after each series' last timestamp
    history : whether the rows of the history are needed too (else only the future)
    feature_names, n_features : what the model was fitted with (None at fit)

    Returns
    -------
    covariates : float64 tensor ``(n_series, rows, n_features)``
    names : the column names when ``X`` names its columns with strings, else None
    """
    n_series = len(indexes)
    items = list(X) if _is_collection(X) else [X]
    if len(items) != n_series:
        raise ValueError(f"`{name}` has {len(items)} entries but there are {n_series} series.")
    arrays, names = [], None
    for i, (item, index) in enumerate(zip(items, indexes)):
        label = f"{name}[{i}]" if _is_collection(X) else name
        what = _describe(len(index), horizon, history)
        frame = _select_columns(_as_frame(item, label), label, feature_names, n_features)
        item_names = _names(frame)
        if i == 0:
            names = item_names
        elif item_names != names and item_names is not None and names is not None:
            raise ValueError(
                f"`{label}` has columns {list(item_names)} but `{name}[0]` has {list(names)}: "
                "all entries must have the same columns."
            )
        if isinstance(frame.index, _TIME_INDEXES) and isinstance(index, _TIME_INDEXES):
            needed = _needed_index(index, horizon, history)
            positions = _rows_by_timestamp(frame, label, needed, what)
            frame = frame.iloc[positions]
        else:
            rows = (len(index) if history else 0) + horizon
            if len(frame) != rows:
                raise ValueError(
                    f"`{label}` has {len(frame)} rows; expected exactly {rows} ({what}). Rows are "
                    "matched by position because `X` or `y` has no time index; index both by "
                    "timestamp to match rows by date."
                )
        values = _numeric_values(frame, label)
        bad = np.isnan(values).any(axis=1)
        if bad.any():
            raise ValueError(
                f"`{label}` contains NaN (first at {frame.index[bad][0]!r}): covariates must be fully observed."
            )
        arrays.append(values)
    widths = {a.shape[1] for a in arrays}
    if len(widths) != 1:
        raise ValueError(f"`{name}` entries must all have the same number of columns; got {sorted(widths)}.")
    # rows beyond a series' own need are padding, like the padding of `y`
    padded = np.zeros((n_series, max(len(a) for a in arrays), arrays[0].shape[1]))
    for i, a in enumerate(arrays):
        padded[i, : len(a)] = a
    return torch.from_numpy(padded), names

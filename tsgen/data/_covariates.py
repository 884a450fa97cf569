"""Exogenous regressors ``X``: validated and aligned to the time steps of ``y``.

Invariants of the tensor :func:`to_covariates` returns (what models rely on):
- float64 ``(n_series, rows, n_features)``, fully observed (no NaN in any
  row a series uses); rows past a series' own need are zero padding;
- row ``j`` of series ``i`` belongs to the ``j``-th timestamp that series
  needs: its history (when ``history=True``) followed by ``horizon`` future
  steps at the index's frequency;
- when both ``X`` and the series have a time index (``DatetimeIndex`` or
  ``PeriodIndex``) rows are picked by timestamp, so ``X`` may be longer
  than needed and in any order; so are they by value when the series has
  an integer index (years, steps) and ``X`` is a pandas object whose
  integer index labels those steps (any but the default ``0 .. n-1``);
  otherwise (plain arrays, the default index, a time index on one side
  only) rows are matched by position and ``X`` must have exactly the rows
  needed;
- for panel ``y`` (series keyed by id) ``X`` may be a long frame with the
  same id and time columns (one row per id and timestamp, covariates in the
  other columns) or a dict ``{id: frame}``: each series takes its own id's
  rows, matched by timestamp (by value for an integer time column of a long
  frame too); a long frame must not carry ``y``'s value column;
- the caller's objects are never modified.

Kinds of covariates (how :class:`tsgen.base.BaseForecaster` uses them):
future-known columns (calendars, prices set in advance) are read over the
history and the forecast steps; past-observed columns (``past_covariates``
at fit) are read up to each forecast origin only: :func:`hold_past` puts
their last observed value in every later row, so a value after the origin
can never reach a forecast; static covariates (one row per series,
:func:`to_static`) enter as constant columns after the time-varying ones.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from collections.abc import Mapping

from tsgen.data._batch import _numeric_values
from tsgen.data._index import future_index, unique_index
from tsgen.data._panel import ID_COL, TIME_COL, _time_values

_TIME_INDEXES = (pd.DatetimeIndex, pd.PeriodIndex)


def _is_collection(X) -> bool:
    return isinstance(X, (list, tuple)) and len(X) > 0 and not np.isscalar(X[0])


def _split_long(X: pd.DataFrame, name: str, id_col: str, time_col: str) -> dict:
    """A long covariate frame as ``{id: frame indexed by time}`` (rows sorted by time)."""
    times, _ = _time_values(X[time_col], name, time_col)
    work = X.drop(columns=[id_col, time_col]).set_axis(times, axis=0)
    out = {}
    for key, rows in work.groupby(X[id_col].to_numpy(), sort=False):
        out[key.item() if isinstance(key, np.generic) else key] = rows.sort_index()
    return out


def _per_series(X, name: str, n_series: int, ids, id_col: str, time_col: str) -> tuple[list, list, bool]:
    """``(items, labels, keyed)``: one covariate object per series, taken by id for panel ``y``; ``keyed``
    when ``X`` was a long frame, whose time column gives every row its timestamp (integers included)."""
    keyed = False
    if isinstance(X, pd.DataFrame) and id_col in X.columns and time_col in X.columns:
        if ids is None:
            raise ValueError(f"`{name}` is a long frame keyed by {id_col!r} but `y` has no series ids: pass `y` "
                             "as a long frame or a dict keyed by the same ids.")
        X, keyed = _split_long(X, name, id_col, time_col), True
    elif isinstance(X, pd.DataFrame) and ids is not None and len(ids) > 1:
        missing = [c for c in (id_col, time_col) if c not in X.columns]
        raise ValueError(
            f"`{name}` is one frame for {len(ids)} series: key it like `y`, as a long frame with {id_col!r} and "
            f"{time_col!r} columns (it lacks {missing}) or a dict {{id: frame}}."
        )
    if isinstance(X, Mapping):
        if ids is None:
            raise TypeError(f"`{name}` is a dict keyed by series id but `y` has no ids: pass `y` as a dict or "
                            "long frame too, or `{name}` as a list in the order of `y`.")
        missing = [key for key in ids if key not in X]
        if missing:
            raise ValueError(f"`{name}` has no covariates for series {missing[0]!r} "
                             f"({len(missing)} of {len(ids)} series missing).")
        return [X[key] for key in ids], [f"{name}[{key!r}]" for key in ids], keyed
    items = list(X) if _is_collection(X) else [X]
    if len(items) != n_series:
        raise ValueError(f"`{name}` has {len(items)} entries but there are {n_series} series.")
    labels = [f"{name}[{i}]" for i in range(n_series)] if _is_collection(X) else [name]
    return items, labels, False


def hold_past(covariates: torch.Tensor, origins, columns) -> torch.Tensor:
    """``covariates`` ``(series, rows, features)`` with each ``columns`` entry held at its value at row
    ``origins[i] - 1`` from row ``origins[i]`` on (a copy): what is known of a past-observed covariate at
    the forecast origin, whatever the later rows held."""
    if covariates is None or not len(columns):
        return covariates
    rows = covariates.shape[1]
    origins = torch.as_tensor(origins, dtype=torch.long).reshape(-1, 1)
    source = torch.minimum(torch.arange(rows).expand(covariates.shape[0], rows), origins - 1).clamp(min=0)
    columns = torch.as_tensor(list(columns), dtype=torch.long)
    held = covariates.clone()
    picked = torch.gather(covariates[..., columns], 1, source[..., None].expand(-1, -1, len(columns)))
    held[..., columns] = picked
    return held


def to_static(static, name: str, n_series: int, ids=None, feature_names=None,
              id_col: str = ID_COL) -> tuple[torch.Tensor, tuple]:
    """Static covariates: one row of numbers per series, ``(n_series, n_static)`` float64, and their names.

    ``static`` is a DataFrame with one row per series (for panel ``y``
    indexed by id, or with the ids in an ``id_col`` column as statsforecast's
    ``static_df``; else in series order), a dict ``{id: {feature: value}}``,
    or an array ``(n_series, n_static)``; a Series is one feature.
    """
    if ids is not None and isinstance(static, pd.DataFrame) and id_col in static.columns:
        if static[id_col].duplicated().any():
            raise ValueError(f"`{name}` has two rows for series {static[id_col][static[id_col].duplicated()].iloc[0]!r}: "
                             "static covariates need one row per series.")
        static = static.set_index(id_col)
    if isinstance(static, Mapping):
        static = pd.DataFrame.from_dict(dict(static), orient="index")
    if isinstance(static, pd.Series):
        static = static.to_frame(static.name if static.name is not None else "static")
    if not isinstance(static, pd.DataFrame):
        array = static.detach().cpu().numpy() if isinstance(static, torch.Tensor) else np.asarray(static)
        if array.ndim == 1:
            array = array[:, None]
        if array.ndim != 2:
            raise ValueError(f"`{name}` must have shape (n_series, features); got shape {array.shape}.")
        static = pd.DataFrame(array, columns=[f"static{j}" for j in range(array.shape[1])])
    if ids is not None and not isinstance(static.index, pd.RangeIndex):
        missing = [key for key in ids if key not in static.index]
        if missing:
            raise ValueError(f"`{name}` has no row for series {missing[0]!r}: index it by the series ids.")
        static = static.loc[list(ids)]
    if len(static) != n_series:
        raise ValueError(f"`{name}` has {len(static)} rows; expected one per series ({n_series}).")
    if feature_names is not None:
        static = _select_columns(static, name, feature_names, len(feature_names))
    values = _numeric_values(static, name)
    if np.isnan(values).any():
        raise ValueError(f"`{name}` contains NaN: static covariates must be fully observed.")
    return torch.from_numpy(values), tuple(str(c) for c in static.columns)


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


def _labels_integer_steps(item, frame: pd.DataFrame) -> bool:
    """Whether a pandas ``X`` carries integer labels of its own: any integer index but the default
    ``0 .. n-1`` that pandas gives an unlabelled frame (which is matched by position, like an array)."""
    index = frame.index
    if not isinstance(item, (pd.Series, pd.DataFrame)) or not pd.api.types.is_integer_dtype(index.dtype):
        return False
    return not (isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1)


def _rows_by_timestamp(frame: pd.DataFrame, label: str, needed: pd.Index, what: str) -> np.ndarray:
    """Positions in ``frame`` of the ``needed`` timestamps, or an error naming the first one missing."""
    index = frame.index
    if type(index) is not type(needed):
        raise ValueError(
            f"`{label}` has a {type(index).__name__} but `y` has a {type(needed).__name__}: "
            "index both by the same kind of time index."
        )
    if isinstance(index, pd.DatetimeIndex) and (index.tz is None) != (needed.tz is None):
        # aware and naive stamps never match (aware ones in two zones do, as instants)
        raise ValueError(f"`{label}` has time zone {index.tz} but `y` has {needed.tz}: localize both or neither "
                         "(Series.dt.tz_localize).")
    if isinstance(index, pd.PeriodIndex) and index.freqstr != needed.freqstr:
        raise ValueError(
            f"`{label}` has periods of frequency {index.freqstr!r} but `y` has {needed.freqstr!r}."
        )
    index = unique_index(index, label, ": each timestamp needs exactly one row")
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
    ids=None,
    id_col: str = ID_COL,
    time_col: str = TIME_COL,
    target=(),
) -> tuple[torch.Tensor, tuple[str, ...] | None]:
    """Exogenous regressors aligned to each series' time steps (see the module docstring).

    Parameters
    ----------
    X : DataFrame, Series, array ``(rows, features)``, or a list with one of them per series;
        for panel ``y`` also a dict ``{id: frame}`` or a long frame with ``id_col`` and ``time_col``
    name : the argument's name for error messages
    indexes : the validated time index of each series (``SeriesBatch.indexes``)
    horizon : number of future steps needed after each series' last timestamp
    history : whether the rows of the history are needed too (else only the future)
    feature_names, n_features : what the model was fitted with (None at fit)
    ids, id_col, time_col : the series ids of panel ``y`` (None otherwise) and its column names
    target : the value column names of ``y``, refused as columns of ``X`` (panel ``y``; empty otherwise)

    Returns
    -------
    covariates : float64 tensor ``(n_series, rows, n_features)``
    names : the column names when ``X`` names its columns with strings, else None
    """
    n_series = len(indexes)
    items, labels, keyed = _per_series(X, name, n_series, ids, id_col, time_col)
    arrays, names = [], None
    for i, (item, index, label) in enumerate(zip(items, indexes, labels)):
        what = _describe(len(index), horizon, history)
        frame = _as_frame(item, label)
        clash = [c for c in frame.columns if c in target]
        if clash:
            # statsforecast-style frames carry y beside the covariates: as a covariate the target would be
            # read over the horizon (its own future in a backtest)
            raise ValueError(
                f"`{label}` has the target's column(s) {clash}: `{name}` must hold covariates only "
                f"(drop {clash}, e.g. `{name}.drop(columns={clash})`)."
            )
        frame = _select_columns(frame, label, feature_names, n_features)
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
        elif not isinstance(index, _TIME_INDEXES) and (keyed or _labels_integer_steps(item, frame)):
            # integer time columns of long frames, and an integer index that labels y's integer steps (years),
            # are timestamps too: match them by value, not position
            needed = pd.Index(np.asarray(_needed_index(index, horizon, history), dtype=np.int64))
            # as a plain Index of int64 (a RangeIndex slice would not compare as the same kind of index)
            steps = pd.Index(np.asarray(frame.index, dtype=np.int64))
            positions = _rows_by_timestamp(frame.set_axis(steps), label, needed, what)
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

"""Results back to pandas, indexed by each series' own (continued) time index.

What a result looks like follows what the user handed in (``SeriesBatch.kind``):

- one Series/DataFrame/array: one frame (or array, or Series);
- a list: a list of them, in the same order (each series under its own name);
- panel input (a long frame or a dict keyed by id): ONE long frame keyed by
  the id and time columns (the input's names, ``unique_id``/``ds`` for a
  dict), with a ``variable`` column for multivariate series, then the
  statistics (``mean``, ``q<level>``) or values; sample paths, which a
  frame cannot hold, come back as a dict ``{id: array}``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from tsgen.data._batch import SeriesBatch
from tsgen.data._index import future_index


def quantile_label(q: float) -> str:
    return f"q{q:g}"


def _continuation_key(index: pd.Index, horizon: int):
    """What the future index of ``index`` depends on, so that series ending together share one."""
    if isinstance(index, (pd.DatetimeIndex, pd.PeriodIndex)):
        return type(index), index.freq, getattr(index, "tz", None), int(index.asi8[-1]), index.name, horizon
    step = index.step if isinstance(index, pd.RangeIndex) else 1
    return type(index), step, int(index[-1]), index.name, horizon


def forecast_frames(
    batch: SeriesBatch, mean: np.ndarray, quantiles: dict[float, np.ndarray]
) -> list[pd.DataFrame]:
    """One forecast frame per series: ``mean`` and ``q<level>`` columns.

    ``mean`` and each quantile array have shape ``(batch, horizon, dim)``.
    Univariate targets get flat columns; multivariate targets get a
    ``(variable, statistic)`` column MultiIndex.
    """
    horizon = mean.shape[1]
    stats = ["mean"] + [quantile_label(q) for q in quantiles]
    # (batch, horizon, dim, statistic): one stack for all series, each frame takes its slice
    block = np.stack([mean] + [quantiles[q] for q in quantiles], axis=-1)
    if batch.n_dims == 1:
        columns = pd.Index(stats)
        rows = block[:, :, 0, :]
    else:
        columns = pd.MultiIndex.from_product([list(batch.columns), stats], names=["variable", "statistic"])
        rows = block.reshape(block.shape[0], horizon, -1)  # variable-major
    futures: dict = {}
    frames = []
    for i, index in enumerate(batch.indexes):
        key = _continuation_key(index, horizon)
        future = futures.get(key)
        if future is None:
            future = futures[key] = future_index(index, horizon).rename(index.name)
        # each frame gets its own Index object: renaming one frame's index must not rename another's
        frames.append(pd.DataFrame(rows[i], index=future.copy(), columns=columns.copy(), copy=True))
    return frames


def per_step_series(batch: SeriesBatch, per_step: np.ndarray, name: str = "log_likelihood") -> list[pd.Series]:
    """Per-step values ``(batch, time)`` as one Series per series (each cut to its own length)."""
    return [pd.Series(per_step[i, : int(n)].astype(float), index=index, name=name)
            for i, (index, n) in enumerate(zip(batch.indexes, batch.lengths))]


def unwrap(batch: SeriesBatch, items: list):
    """Per-series results as the input was given: one item, a list, or for panel input one long
    frame keyed by id and time (frames and Series) or a dict ``{id: item}`` (arrays and the like)."""
    if batch.is_panel:
        if all(isinstance(item, (pd.Series, pd.DataFrame)) for item in items):
            return pd.concat([_long_piece(batch, key, item) for key, item in zip(batch.series_ids, items)],
                             ignore_index=True)
        return dict(zip(batch.series_ids, items))
    return items if batch.is_collection else items[0]


def _future_indexes(batch: SeriesBatch, horizon: int) -> list:
    """Each series' ``horizon`` future timestamps; series ending together share one index object."""
    futures: dict = {}
    out = []
    for index in batch.indexes:
        key = _continuation_key(index, horizon)
        future = futures.get(key)
        if future is None:
            future = futures[key] = future_index(index, horizon).rename(index.name)
        out.append(future)
    return out


def _concat(indexes: list) -> pd.Index:
    first = indexes[0]
    if isinstance(first, pd.DatetimeIndex) and first.tz is None and all(ix.dtype == first.dtype for ix in indexes):
        # one concatenation of the stamps: Index.append over thousands of indexes is far slower
        return pd.DatetimeIndex(np.concatenate([ix.values for ix in indexes]), name=first.name)
    return first.append(list(indexes[1:])) if len(indexes) > 1 else first.copy()


def id_array(ids):
    """``ids`` as an array of their own dtype (int64 for integer ids, as the user's id column had; an
    object array would not equal-compare or merge like it), taken per row with ``.take(codes)``."""
    values = np.empty(len(ids), dtype=object)
    values[:] = list(ids)  # element-wise: tuple ids stay tuples
    return pd.Series(values, copy=False).infer_objects().array


def _long_keys(batch: SeriesBatch, times: list, repeat: int = 1) -> dict:
    """The id and time columns of a long frame whose series ``i`` has ``len(times[i]) * repeat`` rows."""
    counts = np.fromiter((len(t) for t in times), dtype=np.int64, count=len(times))
    stamps = _concat(times)
    if repeat > 1:  # variable-major within a step: each timestamp once per variable
        stamps = stamps.repeat(repeat)
    codes = np.repeat(np.arange(len(counts)), counts * repeat)
    return {batch.id_col: id_array(batch.series_ids).take(codes), batch.time_col: stamps}


def forecast_long(batch: SeriesBatch, mean: np.ndarray, quantiles: dict[float, np.ndarray]) -> pd.DataFrame:
    """One long frame for all series: id, time (and ``variable`` when multivariate), ``mean``, ``q<level>``."""
    horizon, n_dims = mean.shape[1], batch.n_dims
    stats = {"mean": mean, **{quantile_label(q): quantiles[q] for q in quantiles}}
    columns = _long_keys(batch, _future_indexes(batch, horizon), n_dims)
    if n_dims > 1:
        columns["variable"] = np.tile(np.array(list(batch.columns), dtype=object), batch.n_series * horizon)
    for label, values in stats.items():
        columns[label] = np.asarray(values, dtype=np.float64).reshape(-1)  # (series, step, variable) order
    return pd.DataFrame(columns)


def forecast_output(batch: SeriesBatch, mean: np.ndarray, quantiles: dict[float, np.ndarray]):
    """``predict``'s result for ``batch``'s kind of input (see the module docstring)."""
    if batch.is_panel:
        return forecast_long(batch, mean, quantiles)
    return unwrap(batch, forecast_frames(batch, mean, quantiles))


def per_step_output(batch: SeriesBatch, per_step: np.ndarray, name: str = "log_likelihood"):
    """Per-step values ``(batch, time)`` for ``batch``'s kind of input: Series, a list, or one long frame."""
    if not batch.is_panel:
        return unwrap(batch, per_step_series(batch, per_step, name))
    lengths = batch.lengths.numpy()
    columns = _long_keys(batch, list(batch.indexes))
    keep = np.arange(per_step.shape[1])[None, :] < lengths[:, None]
    columns[name] = per_step[keep].astype(float)
    return pd.DataFrame(columns)


def _long_piece(batch: SeriesBatch, key, item) -> pd.DataFrame:
    frame = item.to_frame() if isinstance(item, pd.Series) else item
    if isinstance(frame.columns, pd.MultiIndex):
        frame = frame.stack(level=0, future_stack=True).rename_axis([None, "variable"]).reset_index(level="variable")
    frame = frame.rename_axis(batch.time_col).reset_index()
    frame.insert(0, batch.id_col, [key] * len(frame))
    return frame

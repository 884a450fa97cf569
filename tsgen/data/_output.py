"""Results back to pandas, indexed by each series' own (continued) time index."""
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
    """A single item for single-series input, the list otherwise (output mirrors input)."""
    return items if batch.is_collection else items[0]

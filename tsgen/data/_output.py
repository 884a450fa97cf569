"""Results back to pandas, indexed by each series' own (continued) time index."""
from __future__ import annotations

import numpy as np
import pandas as pd

from tsgen.data._batch import SeriesBatch
from tsgen.data._index import future_index


def quantile_label(q: float) -> str:
    return f"q{q:g}"


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
    frames = []
    for i, index in enumerate(batch.indexes):
        blocks = [mean[i]] + [quantiles[q][i] for q in quantiles]  # each (horizon, dim)
        future = future_index(index, horizon)
        future.name = index.name
        if batch.n_dims == 1:
            frame = pd.DataFrame(np.column_stack([b[:, 0] for b in blocks]), index=future, columns=stats)
        else:
            data = np.stack(blocks, axis=-1).reshape(horizon, -1)  # variable-major
            columns = pd.MultiIndex.from_product([list(batch.columns), stats], names=["variable", "statistic"])
            frame = pd.DataFrame(data, index=future, columns=columns)
        frames.append(frame)
    return frames


def per_step_series(batch: SeriesBatch, per_step: np.ndarray, name: str = "log_likelihood") -> list[pd.Series]:
    """Per-step values ``(batch, time)`` as one Series per series (each cut to its own length)."""
    return [pd.Series(per_step[i, : int(n)].astype(float), index=index, name=name)
            for i, (index, n) in enumerate(zip(batch.indexes, batch.lengths))]


def unwrap(batch: SeriesBatch, items: list):
    """A single item for single-series input, the list otherwise (output mirrors input)."""
    return items if batch.is_collection else items[0]

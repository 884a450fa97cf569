"""How good is a detector: point-wise scores and event-wise recall.

Labels and flags are boolean sequences of equal length compared by
position (pandas objects must share their index). An *event* is a maximal
run of consecutive labelled steps.

The NAB score lives in :mod:`tsgen.anomaly._nab`.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import precision_recall_fscore_support


def _as_bool(values, name: str) -> np.ndarray:
    array = values.to_numpy() if hasattr(values, "to_numpy") else np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"`{name}` must be one-dimensional; got shape {array.shape}.")
    if array.dtype == bool:
        return array.copy()
    if array.dtype.kind in "iuf" and np.isin(array[~np.isnan(array.astype(float))], (0, 1)).all():
        return np.nan_to_num(array.astype(float)) == 1  # missing means not flagged / not labelled
    raise TypeError(f"`{name}` must hold booleans (or 0/1); got dtype {array.dtype}.")


def _pair(labels, flags) -> tuple[np.ndarray, np.ndarray]:
    if hasattr(labels, "index") and hasattr(flags, "index") and not labels.index.equals(flags.index):
        raise ValueError("`flags` must have the same index as `labels`: detections are compared by position.")
    truth, predicted = _as_bool(labels, "labels"), _as_bool(flags, "flags")
    if len(truth) != len(predicted):
        raise ValueError(f"`flags` has {len(predicted)} steps but `labels` has {len(truth)}.")
    return truth, predicted


def events(labels) -> list[tuple[int, int]]:
    """``(first, last)`` positions (inclusive) of each run of True."""
    truth = _as_bool(labels, "labels").astype(np.int8)
    edges = np.diff(np.concatenate([[0], truth, [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), (np.flatnonzero(edges == -1) - 1).tolist()))


def point_scores(labels, flags) -> dict[str, float]:
    """Point-wise ``precision``, ``recall`` and ``f1`` of the flags (0 where undefined)."""
    truth, predicted = _pair(labels, flags)
    precision, recall, f1, _ = precision_recall_fscore_support(
        truth, predicted, average="binary", zero_division=0
    )
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1)}


def event_recall(labels, flags, tolerance: int = 0) -> float:
    """Fraction of events with a flag no more than ``tolerance`` steps before or after them."""
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, np.integer)) or tolerance < 0:
        raise ValueError(f"`tolerance` must be a non-negative int; got {tolerance!r}.")
    truth, predicted = _pair(labels, flags)
    runs = events(truth)
    if not runs:
        raise ValueError("`labels` has no anomaly: event recall is undefined.")
    hits = np.concatenate([[0], np.cumsum(predicted)])  # flags in [a, b] = hits[b + 1] - hits[a]
    n = len(truth)
    found = [hits[min(b + tolerance, n - 1) + 1] - hits[max(a - tolerance, 0)] > 0 for a, b in runs]
    return float(np.mean(found))

"""How good is a detector: point-wise scores, event-wise recall, and the NAB score.

Labels and flags are boolean sequences of equal length compared by
position (pandas objects must share their index). An *event* is a maximal
run of consecutive labelled steps.

NAB score (Lavin & Ahmad 2015, "Evaluating real-time anomaly detection
algorithms - the Numenta Anomaly Benchmark"):

- every event gets an anomaly window centred on it, of total width
  ``0.1 * T / n_events`` (at least the event itself); overlapping windows
  merge;
- the first flag inside a window is a true positive worth
  ``A_TP * sigma(p) / sigma(-1)``, with the scaled sigmoid
  ``sigma(p) = 2 / (1 + exp(5 p)) - 1`` and the relative position
  ``p = -(right - i + 1) / width`` running from -1 at the window's left
  edge to about 0 at its right edge, so early detection earns the most;
  later flags in the same window count for nothing;
- a window without any flag costs ``-A_FN``;
- a flag outside every window is a false positive worth
  ``A_FP * sigma(p)`` (negative), with ``p = (i - right_prev) / (width_prev - 1)``
  its distance past the previous window (flags before the first window
  cost ``-A_FP``), so flags just after a window cost less;
- the raw score ``S`` is normalised as ``100 (S - S_null) / (S_perfect - S_null)``
  where the null detector flags nothing (``S_null = -A_FN * n_windows``) and
  the perfect one flags each window's first step (``S_perfect = A_TP * n_windows``),
  so the null detector scores 0 and a perfect one 100.

Profiles ``(A_TP, A_FP, A_FN)`` are NAB's: standard ``(1, 0.11, 1)``,
reward_low_FP_rate ``(1, 0.22, 1)``, reward_low_FN_rate ``(1, 0.11, 2)``.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import precision_recall_fscore_support

NAB_PROFILES = {
    "standard": (1.0, 0.11, 1.0),
    "reward_low_FP_rate": (1.0, 0.22, 1.0),
    "reward_low_FN_rate": (1.0, 0.11, 2.0),
}
#: NAB's window budget: 10% of the series length shared among the events
NAB_WINDOW_FRACTION = 0.1


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


def nab_windows(labels, window_size: int | None = None) -> list[tuple[int, int]]:
    """NAB anomaly windows ``(left, right)`` (inclusive), centred on each event, overlaps merged."""
    truth = _as_bool(labels, "labels")
    runs = events(truth)
    if not runs:
        return []
    width = int(NAB_WINDOW_FRACTION * len(truth) / len(runs)) if window_size is None else window_size
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 1:
        raise ValueError(f"`window_size` must be a positive int; got {window_size!r}.")
    windows = []
    for a, b in runs:
        centre = (a + b) // 2
        left = max(0, min(a, centre - width // 2))
        right = min(len(truth) - 1, max(b, left + width - 1))
        if windows and left <= windows[-1][1] + 1:
            windows[-1] = (windows[-1][0], max(right, windows[-1][1]))
        else:
            windows.append((left, right))
    return windows


def _scaled_sigmoid(position: float) -> float:
    if position > 3.0:  # NAB's cap: far past a window a false positive costs the full A_FP
        return -1.0
    return 2.0 / (1.0 + np.exp(5.0 * position)) - 1.0


def _nab_raw(truth, predicted, weights, window_size) -> tuple[float, int]:
    a_tp, a_fp, a_fn = weights
    windows = nab_windows(truth, window_size)
    max_tp = _scaled_sigmoid(-1.0)
    score, w, detected = 0.0, 0, [False] * len(windows)
    for i in np.flatnonzero(predicted):
        while w < len(windows) and windows[w][1] < i:
            w += 1
        if w < len(windows) and windows[w][0] <= i:
            if not detected[w]:
                left, right = windows[w]
                position = -(right - i + 1) / (right - left + 1)
                score += a_tp * _scaled_sigmoid(position) / max_tp
                detected[w] = True
        elif w == 0:
            score -= a_fp
        else:
            left, right = windows[w - 1]
            past = abs(i - right) / max(right - left, 1)
            score += a_fp * _scaled_sigmoid(past)
    score -= a_fn * (len(windows) - sum(detected))
    return score, len(windows)


def nab_score(labels, flags, profile: str = "standard", window_size: int | None = None) -> float:
    """Normalised NAB score in the given profile: 0 for the null detector, 100 for a perfect one.

    ``labels`` and ``flags`` may also be lists (one entry per series); the
    raw scores are then summed before normalising, as NAB does over its
    corpus. See the module docstring for the definition.
    """
    if profile not in NAB_PROFILES:
        raise ValueError(f"`profile` must be one of {tuple(NAB_PROFILES)}; got {profile!r}.")
    many = isinstance(labels, (list, tuple)) and len(labels) > 0 and not np.isscalar(labels[0])
    pairs = zip(labels, flags) if many else [(labels, flags)]
    if many and len(labels) != len(flags):
        raise ValueError(f"`flags` has {len(flags)} series but `labels` has {len(labels)}.")
    weights = NAB_PROFILES[profile]
    raw, n_windows = 0.0, 0
    for lab, flag in pairs:
        s, n = _nab_raw(*_pair(lab, flag), weights, window_size)
        raw, n_windows = raw + s, n_windows + n
    if n_windows == 0:
        raise ValueError("`labels` has no anomaly: the NAB score is undefined (its perfect and null scores agree).")
    null, perfect = -weights[2] * n_windows, weights[0] * n_windows
    return float(100.0 * (raw - null) / (perfect - null))

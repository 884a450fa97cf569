"""The Numenta Anomaly Benchmark score, computed as NAB v1.1 computes it.

Lavin & Ahmad 2015, "Evaluating real-time anomaly detection algorithms -- the
Numenta Anomaly Benchmark", and NAB's ``sweeper.py`` / ``optimizer.py`` /
``runner.py`` (github.com/numenta/NAB), whose rules are, per series of ``n``
rows:

- the first ``min(floor(0.15 n), 0.15 * 5000)`` rows are the probationary
  period: nothing there is scored, flag or miss (a window lying wholly in it
  is not counted as missed);
- anomaly windows are given (NAB's ``combined_windows.json``), as inclusive
  ``(first, last)`` timestamps; a row ``i`` inside the window ``[l, r]`` of
  width ``w = r - l + 1`` rows has the relative position
  ``p = -(r - i + 1) / w`` (-1 at the left edge, about 0 at the right) and
  is worth ``A_TP * sigma(p) / sigma(-1)`` if flagged, with the scaled
  sigmoid ``sigma(p) = 2 / (1 + exp(5 p)) - 1`` (and ``-1`` for ``p > 3``);
  a window scores its best, i.e. its earliest, flagged row and ``-A_FN``
  when nothing in it is flagged, so only the first detection counts;
- a flagged row outside every window costs ``A_FP * sigma(p)`` with
  ``p = |i - r_prev| / (w_prev - 1)`` its distance past the previous
  window (negative, smaller just after a window), and ``-A_FP`` before the
  first window;
- a detector's anomaly scores become flags with one threshold for the whole
  corpus (``score >= threshold``); NAB's optimiser takes the threshold, among
  the distinct scores, that maximises the raw score summed over every file
  of the corpus (ties: the highest), for each profile separately;
- the corpus raw score ``S`` is normalised as
  ``100 (S - S_null) / (S_perfect - S_null)``: the null detector flags
  nothing (``S_null = -A_FN`` per window with a row past the probationary
  period) and the perfect one earns ``A_TP`` per window.

Profiles ``(A_TP, A_FP, A_FN)`` are NAB's: standard ``(1, 0.11, 1)``,
reward_low_FP_rate ``(1, 0.22, 1)``, reward_low_FN_rate ``(1, 0.11, 2)``.

Checked on NAB's published Numenta HTM detections (58 files): 70.10 / 63.21 /
74.32 against the published 70.10 / 63.12 / 74.32; the low-FP difference is
the threshold (NAB's published 0.5752 came from its older local-search
optimiser; at that threshold this scorer gives 63.12). See ``benchmarks/nab.py
--published``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tsgen.anomaly._evaluate import _as_bool, events

NAB_PROFILES = {
    "standard": (1.0, 0.11, 1.0),
    "reward_low_FP_rate": (1.0, 0.22, 1.0),
    "reward_low_FN_rate": (1.0, 0.11, 2.0),
}
#: NAB's window budget when windows are built from labels: 10% of the series length shared among the events
NAB_WINDOW_FRACTION = 0.1
#: NAB's probationary period: this fraction of each file, capped at this fraction of 5000 rows
NAB_PROBATIONARY_PERCENT = 0.15
NAB_PROBATIONARY_CAP_ROWS = 5000


def scaled_sigmoid(position) -> np.ndarray:
    """NAB's ``sigma(p) = 2 / (1 + exp(5 p)) - 1``, and -1 far (``p > 3``) past a window."""
    p = np.asarray(position, dtype=np.float64)
    return np.where(p > 3.0, -1.0, 2.0 / (1.0 + np.exp(5.0 * np.minimum(p, 3.0))) - 1.0)


def probationary_length(n_rows: int, percent: float = NAB_PROBATIONARY_PERCENT) -> int:
    """Rows of a series of ``n_rows`` that NAB leaves unscored: ``min(floor(percent n), percent 5000)``."""
    return int(math.ceil(min(math.floor(percent * n_rows), percent * NAB_PROBATIONARY_CAP_ROWS)))


def nab_windows(labels, window_size: int | None = None) -> list[tuple[int, int]]:
    """Windows ``(left, right)`` (inclusive positions) centred on each labelled event, overlaps merged.

    NAB's own rule for building windows from labels (width
    ``0.1 * n / n_events`` rows); NAB scores with the windows of its windows
    file, which :func:`read_nab_windows` reads and :func:`nab_score` takes as
    given.
    """
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


def read_nab_windows(path) -> dict[str, list[tuple[pd.Timestamp, pd.Timestamp]]]:
    """NAB's ``combined_windows.json``: ``{file: [(first, last), ...]}`` as Timestamps."""
    with open(Path(path)) as handle:
        raw = json.load(handle)
    if not isinstance(raw, dict):
        raise ValueError(f"`path` must hold a JSON object of windows per file; got {type(raw).__name__}.")
    return {name: [(pd.Timestamp(a), pd.Timestamp(b)) for a, b in limits] for name, limits in raw.items()}


@dataclass(frozen=True)
class NABResult:
    """A detector's NAB evaluation in one profile.

    ``score`` is the normalised corpus score (null 0, perfect 100), ``raw``
    the summed raw score it normalises, ``null`` and ``perfect`` the raw
    scores of those two detectors, ``threshold`` the anomaly-score threshold
    used (``inf``: nothing flagged; ``None``: flags were given) and
    ``per_series`` one row per series with its raw score, the windows
    detected and missed and the false-positive rows.
    """

    score: float
    raw: float
    null: float
    perfect: float
    threshold: float | None
    profile: str
    per_series: pd.DataFrame


@dataclass
class _Rows:
    """One series' scored rows (past the probationary period): anomaly score, worth if flagged, window id."""

    scores: np.ndarray
    worth: np.ndarray
    window: np.ndarray  # corpus-wide window number, -1 outside every window
    n_windows: int  # windows of this series, including those wholly in the probationary period


def _is_labels(limits) -> bool:
    """Whether a series' ``windows`` entry is boolean labels (one per row) rather than (first, last) pairs."""
    if isinstance(limits, pd.Series) or (isinstance(limits, np.ndarray) and limits.ndim == 1):
        return True
    return isinstance(limits, (list, tuple)) and len(limits) > 0 and np.isscalar(limits[0])


def _window_positions(limits, scores, name: str) -> list[tuple[int, int]]:
    """Inclusive row positions of each window; timestamps are looked up in ``scores``' index (first match)."""
    if _is_labels(limits):
        return nab_windows(limits)  # boolean labels, one per row: NAB's label -> window rule
    n = len(scores)
    out = []
    for pair in limits:
        if len(pair) != 2:
            raise ValueError(f"`windows`{name} must hold (first, last) pairs; got {pair!r}.")
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pair):
            left, right = int(pair[0]), int(pair[1])
        else:
            if not isinstance(getattr(scores, "index", None), pd.DatetimeIndex):
                raise ValueError(f"`scores`{name} must be a Series with a DatetimeIndex when `windows` are "
                                 "timestamps.")
            index = scores.index
            positions = []
            for value in pair:
                hits = np.flatnonzero(index == pd.Timestamp(value))
                if not len(hits):
                    raise ValueError(f"`windows`{name}: {value} is not a timestamp of the series.")
                positions.append(int(hits[0]))
            left, right = positions
        if not 0 <= left <= right < n:
            raise ValueError(f"`windows`{name}: window {pair!r} is not a range of the series' {n} rows.")
        if out and left <= out[-1][1]:
            raise ValueError(f"`windows`{name} must be sorted and must not overlap; got {limits!r}.")
        out.append((left, right))
    return out


def _as_scores(values, name: str) -> tuple[np.ndarray, bool]:
    """``(scores, is_flags)``: booleans (or only 0/1) are flags, other numbers anomaly scores (NaN never flags)."""
    array = values.to_numpy() if hasattr(values, "to_numpy") else np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"`scores`{name} must be one-dimensional; got shape {array.shape}.")
    if array.dtype == bool:
        return array.astype(np.float64), True
    if array.dtype.kind not in "iuf":
        raise TypeError(f"`scores`{name} must hold anomaly scores or booleans; got dtype {array.dtype}.")
    array = array.astype(np.float64)
    finite = array[~np.isnan(array)]
    if np.isin(finite, (0.0, 1.0)).all():
        return np.nan_to_num(array), True
    return np.where(np.isnan(array), -np.inf, array), False


def _rows(limits, values, weights, percent: float, first_window: int, name: str) -> tuple[_Rows, bool]:
    a_tp, a_fp, _ = weights
    scores, is_flags = _as_scores(values, name)
    windows = _window_positions(limits, values, name)
    n = len(scores)
    i = np.arange(n)
    window = np.full(n, -1)
    worth = np.empty(n)
    lefts = np.array([w[0] for w in windows], dtype=np.int64)
    rights = np.array([w[1] for w in windows], dtype=np.int64)
    # the window a row is in, else the last one that ended before it
    k = np.searchsorted(lefts, i, side="right") - 1
    inside = (k >= 0) & (i <= rights[np.maximum(k, 0)]) if len(windows) else np.zeros(n, dtype=bool)
    if inside.any():
        left, right = lefts[k[inside]], rights[k[inside]]
        width = right - left + 1
        worth[inside] = a_tp * scaled_sigmoid(-(right - i[inside] + 1) / width) / scaled_sigmoid(-1.0)
        window[inside] = first_window + k[inside]
    outside = ~inside
    before = outside & (k < 0)
    worth[before] = -a_fp
    after = outside & (k >= 0)
    if after.any():
        left, right = lefts[k[after]], rights[k[after]]
        # a one-row window has width - 1 = 0 (NAB divides by zero there): distances count in rows then
        worth[after] = a_fp * scaled_sigmoid(np.abs(i[after] - right) / np.maximum(right - left, 1))
    keep = i >= probationary_length(n, percent)
    return _Rows(scores[keep], worth[keep], window[keep], len(windows)), is_flags


def _sweep(rows: list[_Rows], weights) -> tuple[np.ndarray, np.ndarray]:
    """Raw corpus score for every threshold: ``(thresholds, scores)``, thresholds decreasing from ``inf``."""
    a_fn = weights[2]
    scores = np.concatenate([r.scores for r in rows])
    worth = np.concatenate([r.worth for r in rows])
    window = np.concatenate([r.window for r in rows])
    scored_windows = np.unique(window[window >= 0])
    order = np.argsort(-scores, kind="stable")
    scores, worth, window = scores[order], worth[order], window[order]
    fp_total = np.cumsum(np.where(window < 0, worth, 0.0))
    # a window is worth its best flagged row so far (-A_FN before any): add each improvement when it happens
    in_window = window >= 0
    frame = pd.DataFrame({"window": window[in_window], "worth": worth[in_window]})
    best = frame.groupby("window")["worth"].cummax().to_numpy()
    previous = frame.assign(best=best).groupby("window")["best"].shift(1).fillna(-a_fn).to_numpy()
    gain = np.zeros(len(scores))
    gain[in_window] = best - previous
    total = -a_fn * len(scored_windows) + fp_total + np.cumsum(gain)
    # a threshold flags every row scoring at least it: read the total after the last row of each distinct score
    last = np.flatnonzero(np.append(scores[1:] != scores[:-1], True))
    thresholds = np.concatenate([[np.inf], scores[last]])
    totals = np.concatenate([[-a_fn * len(scored_windows)], total[last]])
    finite = thresholds > -np.inf  # flagging the NaN rows too is not a threshold
    return thresholds[finite], totals[finite]


def _raw_at(rows: _Rows, threshold: float, weights) -> dict:
    flagged = rows.scores >= threshold
    fp = flagged & (rows.window < 0)
    raw = float(rows.worth[fp].sum())
    detected = missed = 0
    for w in np.unique(rows.window[rows.window >= 0]):
        hits = flagged & (rows.window == w)
        if hits.any():
            raw += float(rows.worth[hits].max())
            detected += 1
        else:
            raw -= weights[2]
            missed += 1
    return {"raw": raw, "detected": detected, "missed": missed, "false_positive_rows": int(fp.sum()),
            "windows": rows.n_windows}


def _corpus(windows, scores) -> list[tuple[str, object, object]]:
    if isinstance(scores, dict):
        if not isinstance(windows, dict) or set(windows) != set(scores):
            raise ValueError("`windows` must be a dict with the same keys as `scores`.")
        return [(f"[{k!r}]", k, windows[k], scores[k]) for k in scores]
    many = isinstance(scores, (list, tuple)) and len(scores) > 0 and not np.isscalar(scores[0])
    if not many:
        return [("", 0, windows, scores)]
    if not isinstance(windows, (list, tuple)) or len(windows) != len(scores):
        raise ValueError(f"`windows` must be a list of {len(scores)} entries, one per series of `scores`.")
    return [(f"[{j}]", j, w, s) for j, (w, s) in enumerate(zip(windows, scores))]


def nab_evaluate(windows, scores, profile: str = "standard", threshold: float | None = None,
                 probationary_percent: float = NAB_PROBATIONARY_PERCENT) -> NABResult:
    """NAB evaluation of one series or a corpus; see the module docstring for the rules.

    Parameters
    ----------
    windows : windows of one series, or a list / dict of them (one per series of ``scores``)
        A series' windows are inclusive ``(first, last)`` pairs of timestamps
        (looked up in ``scores``' index) or of integer row positions, sorted
        and disjoint; or boolean labels, one per row, from which windows are
        built by :func:`nab_windows` (NAB's labelling rule).
    scores : pd.Series or array, or a list / dict of them
        Anomaly scores (any real numbers, higher = more anomalous; NaN never
        flagged) or flags (booleans, or numbers that are all 0 or 1, scored
        as given).
    profile : {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}
    threshold : float, optional
        Flag rows scoring at least this; by default NAB's optimiser picks the
        best threshold for ``profile`` over the whole corpus.
    probationary_percent : float
        NAB's 0.15; 0 scores every row.
    """
    if profile not in NAB_PROFILES:
        raise ValueError(f"`profile` must be one of {tuple(NAB_PROFILES)}; got {profile!r}.")
    if isinstance(probationary_percent, bool) or not isinstance(probationary_percent, (int, float)) or not (
        0 <= probationary_percent < 1
    ):
        raise ValueError(f"`probationary_percent` must be in [0, 1); got {probationary_percent!r}.")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.number))
                                  or np.isnan(threshold)):
        raise ValueError(f"`threshold` must be a number or None; got {threshold!r}.")
    weights = NAB_PROFILES[profile]
    entries = _corpus(windows, scores)
    rows, keys, first, flags_given = [], [], 0, []
    for name, key, limits, values in entries:
        if isinstance(limits, pd.Series) and hasattr(values, "index") and not limits.index.equals(values.index):
            raise ValueError(f"`scores`{name} must have the same index as the labels in `windows`{name}.")
        if _is_labels(limits) and len(limits) != len(values):
            raise ValueError(f"`scores`{name} has {len(values)} steps but the labels have {len(limits)}.")
        r, is_flags = _rows(limits, values, weights, probationary_percent, first, name)
        first += r.n_windows
        rows.append(r)
        keys.append(key)
        flags_given.append(is_flags)
    n_windows = sum(r.n_windows for r in rows)
    if n_windows == 0:
        raise ValueError("`windows` has no anomaly window: the NAB score is undefined (its perfect and null "
                         "scores agree).")
    if all(flags_given) and threshold is None:
        threshold_used = None
        cut = 0.5
    elif threshold is None:
        thresholds, totals = _sweep(rows, weights)
        cut = threshold_used = float(thresholds[int(np.argmax(totals))])  # argmax: the first, highest, of ties
    else:
        cut = threshold_used = float(threshold)
    parts = [_raw_at(r, cut, weights) for r in rows]
    raw = float(sum(p["raw"] for p in parts))
    null = -weights[2] * sum(p["detected"] + p["missed"] for p in parts)
    perfect = weights[0] * n_windows
    score = 100.0 * (raw - null) / (perfect - null)
    return NABResult(score, raw, null, perfect, threshold_used, profile, pd.DataFrame(parts, index=keys))


def nab_score(windows, scores, profile: str = "standard", threshold: float | None = None,
              probationary_percent: float = NAB_PROBATIONARY_PERCENT) -> float:
    """Normalised NAB score (null detector 0, perfect 100); arguments as in :func:`nab_evaluate`.

    ``nab_score(labels, flags)`` with boolean labels and flags of one series
    (or lists of them) still works: windows are then built from the labels.
    """
    return nab_evaluate(windows, scores, profile, threshold, probationary_percent).score

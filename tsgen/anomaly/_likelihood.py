"""Calibrated anomaly probabilities from raw scores: the "anomaly likelihood" of Ahmad et al. 2017.

Ahmad, Lavin, Purdy & Agha, "Unsupervised real-time anomaly detection for
streaming data", Neurocomputing 262 (2017), section 4.2: raw scores are
non-stationary and heavy-tailed, so a step is judged by how unusual the
*recent* level of its scores is against their *long-run* distribution:

    m_t   = mean of the last ``short_window`` raw scores          (the recent level)
    H_t   = the last ``long_window`` values of m before t          (the long-run distribution)
    tail_t = P(M >= m_t),  M ~ H_t                                  (upper tail probability)

Under the null (the stream keeps behaving as in its recent past) ``tail_t``
is uniform on (0, 1): a calibrated p-value, so "flag when ``tail_t < q``"
has false-alarm rate ``q`` whatever the model's scale. With
``tail="gaussian"``, ``P(M >= m)`` is that of a normal with ``H_t``'s mean and
standard deviation, as in the paper; with ``tail="empirical"`` (default) it
is the rank of ``m_t`` in ``H_t`` (mid-rank for ties, ``(rank + 1/2) / (n + 1)``),
extended past the largest past value by a Gaussian tail, so it stays exact
for the skewed scores ``-log p`` give and still orders extreme steps.
``tails="both"`` also flags an unusually *low* level (a stream that went
flat or too predictable): ``2 min(P(M >= m), P(M <= m))``.

The detector reports ``-log10(tail_t)``: 2 means a 1% tail, and a threshold
``-log10(q)`` has false-alarm rate ``q``.
"""
from __future__ import annotations

import bisect
import math
from collections import deque

import numpy as np

TAILS = ("upper", "both")


def _normal_sf(x: float, mean: float, sd: float) -> float:
    return 0.5 * math.erfc((x - mean) / (sd * math.sqrt(2.0)))

SHAPES = ("empirical", "gaussian")


class AnomalyLikelihood:
    """Streaming tail probabilities of short-window score averages (module docstring).

    Parameters
    ----------
    short_window : int
        Raw scores averaged into the recent level ``m_t`` (Ahmad et al.: 10).
    long_window : int
        Past levels forming the reference distribution (Ahmad et al.: 8640;
        the cost per step is ``O(log long_window)`` plus a memory move).
    tail : {"empirical", "gaussian"}
    tails : {"upper", "both"}
    min_history : int
        Steps with fewer past levels get ``tail = 1`` (nothing to compare with).
    """

    def __init__(self, short_window: int = 10, long_window: int = 2000, tail: str = "empirical",
                 tails: str = "upper", min_history: int = 50):
        for name, value, low in (("short_window", short_window, 1), ("long_window", long_window, 2),
                                 ("min_history", min_history, 2)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"`{name}` must be an int >= {low}; got {value!r}.")
        if tail not in SHAPES:
            raise ValueError(f"`tail` must be one of {SHAPES}; got {tail!r}.")
        if tails not in TAILS:
            raise ValueError(f"`tails` must be one of {TAILS}; got {tails!r}.")
        self.short_window, self.long_window, self.tail, self.tails = short_window, long_window, tail, tails
        self.min_history = min(min_history, long_window)
        self.recent: deque = deque(maxlen=short_window)
        self.history: deque = deque()  # levels in arrival order
        self.ordered: list = []  # the same levels, sorted
        self.total = self.total_sq = 0.0

    def _tail(self, m: float) -> float:
        n = len(self.history)
        if n < self.min_history:
            return 1.0
        mean = self.total / n
        sd = np.sqrt(max(self.total_sq / n - mean * mean, 0.0)) or 1e-12 * (abs(mean) + 1.0)
        if self.tail == "gaussian":
            upper = _normal_sf(m, mean, sd)
            lower = 1.0 - upper
        else:
            below = bisect.bisect_left(self.ordered, m)
            not_above = bisect.bisect_right(self.ordered, m)
            upper = (n - (below + not_above) / 2 + 0.5) / (n + 1)
            lower = ((below + not_above) / 2 + 0.5) / (n + 1)
            # beyond the past's range, a Gaussian tail keeps extreme levels in order
            if m > self.ordered[-1]:
                upper *= _normal_sf(m, self.ordered[-1], sd) * 2
            elif m < self.ordered[0]:
                lower *= _normal_sf(-m, -self.ordered[0], sd) * 2
        tail = upper if self.tails == "upper" else min(1.0, 2 * min(upper, lower))
        return float(max(tail, 1e-300))

    def step(self, score: float) -> float:
        """The tail probability of the step scored ``score`` (NaN: missing, returns NaN and learns nothing)."""
        if np.isnan(score):
            return float("nan")
        self.recent.append(float(score))
        m = sum(self.recent) / len(self.recent)
        tail = self._tail(m)
        self.history.append(m)
        bisect.insort(self.ordered, m)
        self.total += m
        self.total_sq += m * m
        if len(self.history) > self.long_window:
            old = self.history.popleft()
            del self.ordered[bisect.bisect_left(self.ordered, old)]
            self.total -= old
            self.total_sq -= old * old
        return tail

    def transform(self, scores) -> np.ndarray:
        """Tail probabilities of a sequence of scores, in order (the state continues)."""
        return np.array([self.step(s) for s in np.asarray(scores, dtype=np.float64)])

    def state(self) -> dict[str, np.ndarray]:
        return {"recent": np.array(self.recent, dtype=np.float64), "history": np.array(self.history, np.float64)}

    def restore(self, state: dict) -> "AnomalyLikelihood":
        self.recent = deque((float(v) for v in state["recent"]), maxlen=self.short_window)
        self.history = deque(float(v) for v in state["history"])
        self.ordered = sorted(self.history)
        values = np.asarray(self.ordered)
        self.total, self.total_sq = float(values.sum()), float((values**2).sum())
        return self

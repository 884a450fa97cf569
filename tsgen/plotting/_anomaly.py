"""Anomaly chart: the series with flagged points, and the scores against the threshold."""
from __future__ import annotations

import numpy as np
import pandas as pd

from tsgen.anomaly import events
from tsgen.plotting._common import as_frame, new_axes, time_values


def plot_anomalies(y, scores: pd.Series, threshold=None, flags: pd.Series | None = None, labels=None,
                   ax=None, title=None):
    """Two panels: ``y`` with flagged (and optionally labelled) steps, and the anomaly scores.

    Parameters
    ----------
    y : pd.Series or pd.DataFrame
        The scored series (every variable is drawn in the top panel).
    scores : pd.Series
        Anomaly scores indexed like ``y`` (``AnomalyDetector.score``).
    threshold : float or pd.Series, optional
        Constant threshold, or one per step (streaming SPOT).
    flags : boolean pd.Series, optional
        Flagged steps (default: ``scores > threshold``).
    labels : boolean pd.Series, optional
        Known anomalies, drawn as shaded spans for comparison.
    """
    frame = as_frame(y, "y")
    if not isinstance(scores, pd.Series) or len(scores) != len(frame):
        raise ValueError(f"`scores` must be a pandas Series with one score per step of `y` ({len(frame)}).")
    if flags is None:
        flags = scores > threshold if threshold is not None else pd.Series(False, index=scores.index)
    flags = np.asarray(flags, dtype=bool)
    if len(flags) != len(frame):
        raise ValueError(f"`flags` must have one entry per step of `y` ({len(frame)}); got {len(flags)}.")
    figure, (top, bottom) = new_axes(2, ax, sharex=True)
    x = time_values(frame.index)
    for column in frame.columns:
        top.plot(x, frame[column].to_numpy(dtype=float), lw=1, label=str(column))
        top.scatter(x[flags], frame[column].to_numpy(dtype=float)[flags], color="red", s=18, zorder=3)
    if labels is not None:
        for start, stop in events(np.asarray(labels, dtype=bool)):
            top.axvspan(x[start], x[stop], color="orange", alpha=0.25, lw=0)
    top.set_title(title or f"Anomalies: {int(flags.sum())} flagged")
    top.legend(loc="upper left", fontsize="small")
    bottom.plot(x, scores.to_numpy(dtype=float), color="tab:gray", lw=1, label="score")
    if threshold is not None:
        level = np.broadcast_to(np.asarray(threshold, dtype=float), len(frame))
        bottom.plot(x, level, color="red", ls="--", lw=1, label="threshold")
    bottom.scatter(x[flags], scores.to_numpy(dtype=float)[flags], color="red", s=18, zorder=3)
    bottom.set_ylabel("-log p(y_t | y_<t)")
    bottom.legend(loc="upper left", fontsize="small")
    return figure


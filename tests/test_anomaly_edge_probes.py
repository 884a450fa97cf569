"""Regressions from the stop-12 new-user probes on the anomaly detector's input edges."""
import warnings

import numpy as np
import pandas as pd

import tsgen
from tsgen.anomaly._stream import frequency_of, stream_view


def _sliced_past_a_repeat(n=40):
    stamps = pd.date_range("2014-03-07", periods=n + 10, freq="5min")
    stamps = stamps.insert(3, stamps[3])
    full = pd.Series(np.sin(np.arange(len(stamps)) / 3.0) + 10, index=stamps)
    assert full.index.has_duplicates
    return full.iloc[-n:]


def test_a_stretch_cut_after_a_repeated_timestamp_keeps_its_frequency():
    # pandas 2 carries the parent's "has duplicates" flag into the slice: the labels must decide
    y = _sliced_past_a_repeat()
    assert frequency_of(y.index) == "5min"
    view, rows = stream_view(y, None)
    assert rows is None and view.index.equals(y.index)


def test_a_jump_on_a_flat_line_is_flagged_under_a_point_mass_model():
    index = pd.date_range("2020-01-01", periods=60, freq="D")
    flat = pd.Series(45.0, index=index)
    jumped = flat.where(np.arange(60) != 30, 80.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # no finite calibration scores: the quantile rule
        detector = tsgen.AnomalyDetector(tsgen.Naive()).fit(flat)
    assert not np.isnan(detector.threshold_)
    flags = detector.predict(jumped)
    assert bool(flags.iloc[30])
    assert not flags.iloc[:30].any()

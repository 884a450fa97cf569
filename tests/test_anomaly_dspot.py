"""AnomalyDetector(method="dspot"): Siffer et al.'s drift-aware threshold (SPOT on each score less the mean of
the ``dspot_depth`` normal scores before it), reachable from the detector, following a drifting score baseline,
and kept by save/load mid-stream."""
import numpy as np
import pandas as pd
import pytest

import tsgen
from tsgen.anomaly import SPOT, AnomalyDetector


def _series(n, seed=0):
    rng = np.random.default_rng(seed)
    return pd.Series(rng.normal(size=n), index=pd.date_range("2024-01-01", periods=n, freq="h"))


def _detector(**options):
    return AnomalyDetector(tsgen.ARIMA((1, 0, 0)), calibration=None, onset_window=0, suppress=0, **options)


def test_dspot_threshold_is_spot_of_the_scores_less_their_local_mean():
    y = _series(800)
    detector = _detector(method="dspot", dspot_depth=10, false_alarm_rate=1e-2, spot_level=0.9).fit(y.iloc[:600])
    by_hand = SPOT(1e-2, 0.9, depth=10).fit(detector.train_scores_.to_numpy())
    assert detector.threshold_ == pytest.approx(by_hand.alarm_level_)
    frame = detector.update(y.iloc[600:])
    for score in frame["score"]:
        by_hand.step(score)
    assert detector.threshold_ == pytest.approx(by_hand.alarm_level_)


def test_dspot_follows_a_drifting_score_baseline_where_spot_floods():
    """A baseline that rises after calibration: SPOT's fixed tail flags a growing share, DSPOT's moves with it."""
    rng = np.random.default_rng(1)
    scores = np.concatenate([rng.gumbel(size=1000), rng.gumbel(size=2000) + np.linspace(0, 4, 2000)])
    spot, dspot = SPOT(1e-3, 0.98).fit(scores[:1000]), SPOT(1e-3, 0.98, depth=10).fit(scores[:1000])
    spot_flags = sum(spot.step(s) for s in scores[1000:])
    dspot_flags = sum(dspot.step(s) for s in scores[1000:])
    # 2,000 normal steps at 1e-3: about 2 false alarms expected; SPOT's tail adapts through its peaks but lags
    assert dspot_flags <= 10 and spot_flags >= 50, (dspot_flags, spot_flags)


def test_dspot_state_survives_save_and_load_mid_stream(tmp_path):
    y = _series(900, seed=2)
    whole = _detector(method="dspot").fit(y.iloc[:600])
    expected = whole.update(y.iloc[600:])
    first = _detector(method="dspot").fit(y.iloc[:600])
    head = first.update(y.iloc[600:700])
    first.save(tmp_path / "d")
    tail = tsgen.load(tmp_path / "d").update(y.iloc[700:])
    pd.testing.assert_frame_equal(pd.concat([head, tail]), expected)


def test_bad_dspot_depth_is_named():
    for bad in (0, -3, 2.5, True, "10"):
        with pytest.raises(ValueError, match="`dspot_depth`"):
            AnomalyDetector(method="dspot", dspot_depth=bad).fit(_series(700))
    with pytest.raises(ValueError, match="`method`"):
        AnomalyDetector(method="DSPOT").fit(_series(700))

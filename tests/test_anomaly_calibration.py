"""Calibrated scores (issue 13 §2): anomaly likelihood uniform under the null, robust incremental SPOT/DSPOT."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import tsgen
from tsgen.anomaly import SPOT, AnomalyDetector, AnomalyLikelihood


def _rates_match_uniform(p: np.ndarray) -> None:
    """P(p <= q) = q for several q, within 4 binomial standard errors."""
    n = len(p)
    for q in (0.01, 0.05, 0.2, 0.5):
        se = np.sqrt(q * (1 - q) / n)
        assert abs(np.mean(p <= q) - q) < 4 * se, q


@pytest.mark.parametrize("tails", ["upper", "both"])
def test_anomaly_likelihood_is_uniform_under_the_null(tails):
    rng = np.random.default_rng(0)
    # raw scores -log p of well-specified Gaussian steps: skewed (chi-square), the empirical tail stays exact
    raw = 0.5 * rng.normal(size=60_000) ** 2
    likelihood = AnomalyLikelihood(short_window=10, long_window=5000, tails=tails)
    tail = likelihood.transform(raw)[5000::10]  # past the warm-up; one per short window (independent levels)
    assert stats.kstest(tail, "uniform").statistic < 1.63 / np.sqrt(len(tail)) * 1.5
    _rates_match_uniform(tail)


def test_detector_likelihood_scores_are_calibrated_on_simulated_gaussian_data():
    rng = np.random.default_rng(1)
    n = 30_000
    y = np.empty(n)
    y[0] = 0.0
    for t in range(1, n):
        y[t] = 0.5 * y[t - 1] + rng.normal()
    series = pd.Series(y, index=pd.date_range("2024-01-01", periods=n, freq="D"))
    # online RLS without forgetting (the exact recursion) and the frozen model; a forgetting factor makes the
    # scale estimate wander, and the tail probabilities drift from uniform (about 0.26 below 0.2 at 0.999)
    for online in ("rls", None):
        detector = AnomalyDetector(tsgen.ARIMA((1, 0, 0), trend="c"), calibration="likelihood", method="quantile",
                                   online=online, forgetting=1.0, long_window=4000).fit(series.iloc[:2000])
        out = detector.update(series.iloc[2000:])
        tail = 10 ** -out["score"].to_numpy()[4000::10]  # the reported score is -log10 of the tail probability
        _rates_match_uniform(tail)


def test_spot_on_flat_tied_and_short_calibration():
    flat = SPOT(1e-3, 0.98).fit(np.full(604, 2.5))
    assert flat.threshold_ == 2.5 and not flat.step(2.5) and flat.step(2.5 + 1e-9)
    rng = np.random.default_rng(2)
    tied = np.where(rng.uniform(size=604) < 0.97, 0.0, rng.integers(1, 4, size=604).astype(float))
    spot = SPOT(1e-3, 0.98).fit(tied)  # 2% of 604 rows are 13 peaks, even with ties at the top
    assert np.isfinite(spot.threshold_) and spot.threshold_ >= 3.0
    with pytest.raises(ValueError, match="give at least 500 calibration values"):
        SPOT(1e-3, 0.98).fit(rng.normal(size=300))
    # the detector lowers the level on short data, and falls back to the quantile below 20 scores
    y = pd.Series(np.cumsum(rng.normal(size=120)))
    detector = AnomalyDetector(tsgen.ARIMA((1, 1, 0)), false_alarm_rate=1e-3, calibration=None).fit(y)
    assert detector.spot_.level == pytest.approx(1 - 10 / detector.train_scores_.notna().sum())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        short = AnomalyDetector(tsgen.ARIMA((1, 1, 0)), false_alarm_rate=1e-3, calibration=None).fit(y.iloc[:15])
    assert not hasattr(short, "spot_") and any("too few for SPOT" in str(w.message) for w in caught)


def test_incremental_spot_refits_rarely_and_matches_the_every_peak_algorithm():
    rng = np.random.default_rng(3)
    calibration, stream = rng.normal(size=2000), rng.normal(size=5000)
    spot, exact = SPOT(1e-3, 0.98).fit(calibration), SPOT(1e-3, 0.98, refit_growth=0.0).fit(calibration)
    refits, last = 0, spot.fitted_peaks_
    flags, exact_flags = [], []
    for x in stream:
        flags.append(spot.step(x))
        exact_flags.append(exact.step(x))
        if spot.fitted_peaks_ != last:
            refits, last = refits + 1, spot.fitted_peaks_
    assert refits <= 12  # steps of 10 peaks (40 -> 140): not one per peak (about 100 here)
    assert spot.threshold_ == pytest.approx(exact.threshold_, rel=0.02)
    assert abs(sum(flags) - sum(exact_flags)) <= 2 and sum(flags) <= 20  # 5 expected


def test_dspot_follows_a_drifting_baseline():
    rng = np.random.default_rng(4)
    drift = np.linspace(0, 30, 12_000)
    x = drift + rng.normal(size=12_000)
    spot, dspot = SPOT(1e-3, 0.98).fit(x[:2000]), SPOT(1e-3, 0.98, depth=20).fit(x[:2000])
    spot_alarms = sum(spot.step(v) for v in x[2000:])
    dspot_alarms = sum(dspot.step(v) for v in x[2000:])
    assert spot_alarms > 5000 and dspot_alarms < 60
    assert dspot.step(x[-1] + 8.0)  # a real jump is still an alarm
    with pytest.raises(ValueError, match="`depth`"):
        SPOT(1e-3, 0.98, depth=0).fit(x[:2000])

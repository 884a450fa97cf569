"""The time-of-day profile scored beside the online autoregression (issue 13: pattern changes the one-step
likelihood absorbs)."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from test_anomaly_stream import _ar

import tsgen
from tsgen.anomaly import AnomalyDetector
from tsgen.anomaly._profile import SeasonalProfile
from tsgen.anomaly._stream import frequency_of


def _daily(days: int, seed: int, flat_day: int | None = None) -> pd.Series:
    """Hourly sine cycle plus noise; on ``flat_day`` the cycle stops from 06:00 to 18:00, held (without a jump)
    at its 06:00 peak."""
    rng = np.random.default_rng(seed)
    hours = np.arange(24 * days)
    y = 10.0 + 3.0 * np.sin(2 * np.pi * hours / 24) + 0.3 * rng.normal(size=len(hours))
    if flat_day is not None:
        stretch = slice(24 * flat_day + 6, 24 * flat_day + 18)
        y[stretch] = 13.0 + 0.3 * rng.normal(size=12)
    return pd.Series(y, index=pd.date_range("2024-01-01", periods=len(y), freq="h"))


def test_slot_locations_are_the_weighted_averages_of_their_visits_and_the_density_a_student_t():
    rng = np.random.default_rng(0)
    values = rng.normal(size=4 * 30) * 2.0 + 5.0
    values[9] = np.nan  # a missing value advances its slot (1) and teaches nothing
    profile = SeasonalProfile(period=4, rate=0.1, df=5.0)
    scores = profile.start(values)
    assert np.isnan(scores[:4]).all() and np.isnan(scores[9]) and np.isfinite(scores[10:]).all()
    z = (values - profile.centre) / profile.spread
    for slot in range(4):
        visits = z[slot::4][~np.isnan(z[slot::4])]
        mean = 0.0
        for k, v in enumerate(visits):  # plain averages for the first 1 / rate visits, then weight 0.1
            mean += max(0.1, 1.0 / (k + 1)) * (v - mean)
        assert profile.mean[slot] == pytest.approx(mean, rel=1e-12)
        assert profile.visits[slot] == len(visits)
    # the next value's score is the Student-t log-density of its slot, in the stream's units
    s, value = profile.position % 4, 6.5
    scale = np.sqrt(profile.variance[s]) * profile.spread
    expected = stats.t(5.0, loc=profile.centre + profile.mean[s] * profile.spread, scale=scale).logpdf(value)
    assert profile.step(value) == pytest.approx(expected, rel=1e-10)


def test_the_profile_sees_a_cycle_gone_flat_that_the_one_step_model_absorbs():
    y = _daily(30, seed=1, flat_day=22)
    stretch = slice(y.index[24 * 22 + 6], y.index[24 * 22 + 17])
    peaks = {}
    for profile in (None, "auto"):
        # two days of training, fewer than the three cycles the autoregression's seasonal lags need (as on NAB's
        # 5-minute streams): its lags carry the flat stretch, the profile knows the cycle
        detector = AnomalyDetector(profile=profile).fit(y.iloc[:48])
        assert detector.online_.seasonal_period is None
        out = detector.update(y.iloc[48:])
        peaks[profile] = out["score"].loc[stretch].max()
        outside = out["score"].loc[: y.index[24 * 22 + 5]]
        if profile == "auto":
            assert detector.profile_.period == 24
            assert out["anomaly"].loc[stretch].any() and not out["anomaly"].loc[outside.index].any()
    assert peaks["auto"] > peaks[None] + 3  # three more decades of tail probability (measured: 8.0 against 0.7)


def test_the_combined_score_keeps_its_false_alarm_rate_under_the_null():
    n = 24_000
    series = pd.Series(_ar(n, seed=2, phi=0.5, level=0.0), index=pd.date_range("2024-01-01", periods=n, freq="h"))
    # exact RLS (no forgetting), as the calibration test of the one-step scores does
    detector = AnomalyDetector(tsgen.ARIMA((1, 0, 0), trend="c"), calibration="likelihood", method="quantile",
                               online="rls", forgetting=1.0, long_window=4000, profile=0.1).fit(series.iloc[:2000])
    assert detector.profile_ is not None
    p = 10 ** -detector.update(series.iloc[2000:])["score"].to_numpy()[4000::10]
    for q in (0.01, 0.05, 0.2):
        se = np.sqrt(q * (1 - q) / len(p))
        # twice the smaller of two calibrated tails: at most q (Bonferroni), at least q / 2 (the one-step tail alone)
        assert q / 2 - 4 * se < np.mean(p <= q) < q + 4 * se, q


def test_profile_state_survives_save_and_load(tmp_path):
    y = _daily(20, seed=3, flat_day=15)
    whole = AnomalyDetector().fit(y.iloc[:100])
    expected = whole.update(y.iloc[100:])
    part = AnomalyDetector().fit(y.iloc[:100])
    first = part.update(y.iloc[100: 24 * 15 + 9])  # stop inside the flat stretch
    part.save(tmp_path / "d.tsgen")
    loaded = tsgen.load(tmp_path / "d.tsgen")
    np.testing.assert_array_equal(loaded.profile_.mean, part.profile_.mean)
    assert loaded.profile_.position == part.profile_.position
    rest = loaded.update(y.iloc[24 * 15 + 9:])
    pd.testing.assert_frame_equal(pd.concat([first, rest]), expected)


def test_a_stream_without_a_time_index_has_no_profile():
    y = _daily(10, seed=4).reset_index(drop=True)
    detector = AnomalyDetector().fit(y.iloc[:120])
    assert detector.profile_ is None
    assert detector.update(y.iloc[120:])["score"].notna().all()


def test_bad_profile_settings_are_refused():
    y = _daily(10, seed=5)
    for bad in ("daily", 0, 1.5, True):
        with pytest.raises(ValueError, match="`profile` must be None, 'auto' or a rate"):
            AnomalyDetector(profile=bad).fit(y)
    with pytest.raises(ValueError, match="needs `online`='rls' and `calibration`='likelihood'"):
        AnomalyDetector(tsgen.ARIMA((1, 0, 0)), profile=0.1).fit(y)
    for kwargs in ({"period": 1}, {"period": 24, "rate": 0}, {"period": 24, "df": -1}):
        with pytest.raises(ValueError, match=f"`{list(kwargs)[-1]}`"):
            SeasonalProfile(**kwargs)
    with pytest.raises(ValueError, match="at least 2 observed values"):
        SeasonalProfile(24).start([np.nan, 1.0])


def test_the_stream_frequency_is_read_without_pandas_warnings():
    index = pd.DatetimeIndex(pd.date_range("2024-01-01", periods=50, freq="5min").to_numpy())  # no freq set
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert frequency_of(index) == "5min"

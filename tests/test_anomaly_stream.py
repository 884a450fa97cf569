"""Streams as they come, online learning and streaming state (issue 13 §1 and the stream rules)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import tsgen
from tsgen.anomaly import AnomalyDetector
from tsgen.anomaly._online import OnlineAR


def _ar(n, seed=0, phi=0.6, level=10.0):
    rng = np.random.default_rng(seed)
    y = np.empty(n)
    y[0] = level
    for t in range(1, n):
        y[t] = level + phi * (y[t - 1] - level) + rng.normal()
    return y


def _least_squares(z, lags):
    """Batch OLS of z_t on (1, z_{t-lag}) over the steps whose lags are all data (t >= max lag): what RLS from a
    diffuse start solves (the first max-lag values only fill the lags)."""
    memory = max(lags)
    padded = np.concatenate([np.zeros(memory), z])
    design = np.column_stack([np.ones(len(z))] + [padded[memory - lag : memory - lag + len(z)] for lag in lags])
    return np.linalg.lstsq(design[memory:], z[memory:], rcond=None)[0]


def test_recursive_least_squares_equals_the_batch_refit():
    y = _ar(400, seed=1)
    learner = OnlineAR(order=2, seasonal_period=5, forgetting=1.0, df=None).start(y[:250])
    for value in y[250:]:
        learner.step(value)
    z = (y - learner.centre) / learner.spread
    np.testing.assert_allclose(learner.theta, _least_squares(z, [1, 2, 5, 6]), atol=1e-5)
    # through the detector: fit on the first part, update with the rest in two calls
    series = pd.Series(y)
    detector = AnomalyDetector(tsgen.ARIMA((2, 0, 0), trend="c"), method="quantile", online="rls",
                               forgetting=1.0).fit(series.iloc[:250])
    detector.update(series.iloc[250:300])
    detector.update(series.iloc[300:])
    learner = detector.online_
    z = (y - learner.centre) / learner.spread
    np.testing.assert_allclose(learner.theta, _least_squares(z, [1, 2]), atol=1e-5)


def test_forgetting_follows_a_changed_coefficient_and_missing_points_stay_unflagged():
    y = np.concatenate([_ar(1500, seed=2, phi=0.9), _ar(3000, seed=3, phi=-0.5)])
    series = pd.Series(y)
    detector = AnomalyDetector(tsgen.ARIMA((1, 0, 0), trend="c"), method="quantile", online="rls",
                               forgetting=0.995, calibration=None).fit(series.iloc[:1500])
    assert detector.online_.theta[1] == pytest.approx(0.9, abs=0.15)
    gappy = series.iloc[1500:].copy()
    gappy.iloc[[100, 101]] = np.nan
    out = detector.update(gappy)
    assert detector.online_.theta[1] == pytest.approx(-0.5, abs=0.15)  # a memory of ~200 points followed
    assert out["score"].iloc[[100, 101]].isna().all() and not out["anomaly"].iloc[[100, 101]].any()
    assert out["score"].drop(out.index[[100, 101]]).notna().all()


def test_irregular_and_repeated_timestamps_are_scored_by_arrival_order():
    y = _ar(300, seed=4)
    index = pd.DatetimeIndex(pd.Timestamp("2024-01-01") + pd.to_timedelta(np.cumsum(
        np.random.default_rng(5).integers(1, 9, size=300)), unit="min"))
    index = index.insert(151, index[150]).delete(300)  # one repeated timestamp
    irregular = pd.Series(y, index=index)
    detector = AnomalyDetector(tsgen.ARIMA((1, 0, 0), trend="c"), method="quantile", online=None,
                               calibration=None).fit(irregular.iloc[:200])
    positional = pd.Series(y)
    expected = -detector.model_.log_likelihood(positional, per_step=True).to_numpy()
    scores = detector.score(irregular)
    assert scores.index.equals(irregular.index)  # the repeated timestamp keeps both rows
    np.testing.assert_allclose(scores.to_numpy(), expected, rtol=1e-10)
    out = detector.update(irregular.iloc[200:])
    assert out.index.equals(irregular.index[200:])
    np.testing.assert_allclose(out["score"].to_numpy(), expected[200:], rtol=1e-8)
    with pytest.raises(ValueError, match="`y_new` must continue"):
        detector.update(irregular.iloc[:5])


def test_a_gap_in_a_regular_stream_is_missing_steps_on_its_grid():
    y = pd.Series(_ar(300, seed=6), index=pd.date_range("2024-01-01", periods=300, freq="h"))
    detector = AnomalyDetector(tsgen.ARIMA((1, 0, 0), trend="c"), method="quantile", online=None,
                               calibration=None).fit(y.iloc[:200])
    arriving = y.iloc[200:].drop(y.index[[220, 221, 222]])  # three hours never arrive
    out = detector.update(arriving)
    assert out.index.equals(arriving.index)
    gapped = y.copy()
    gapped.iloc[[220, 221, 222]] = np.nan
    expected = -detector.model_.log_likelihood(gapped, per_step=True).drop(y.index[[220, 221, 222]])
    np.testing.assert_allclose(out["score"].to_numpy(), expected.iloc[200:].to_numpy(), rtol=1e-8)


def test_streaming_state_survives_save_and_load(tmp_path):
    rng = np.random.default_rng(7)
    n = 1600
    steps = rng.choice([5, 5, 5, 10], size=n)  # irregular 5-minute stream with a daily cycle
    index = pd.DatetimeIndex(pd.Timestamp("2024-01-01") + pd.to_timedelta(np.cumsum(steps), unit="min"))
    index = index.insert(900, index[899]).delete(n)  # and a repeated timestamp
    y = pd.Series(10 + 3 * np.sin(2 * np.pi * np.arange(n) / 288) + rng.normal(scale=0.3, size=n), index=index)
    y.iloc[1300] += 5.0
    detector = AnomalyDetector(false_alarm_rate=1e-3, long_window=500).fit(y.iloc[:900])
    assert detector.online_.seasonal_period is not None and detector.likelihood_.tails == "both"
    first = detector.update(y.iloc[900:1000])  # starts with the repeated timestamp
    path = tmp_path / "detector.pt"
    detector.save(path)
    loaded = tsgen.load(path)
    pd.testing.assert_series_equal(loaded.train_scores_, detector.train_scores_)
    pd.testing.assert_series_equal(loaded.history_, detector.history_)
    rest = y.iloc[1000:]
    out = detector.update(rest)
    pd.testing.assert_frame_equal(loaded.update(rest), out)
    np.testing.assert_array_equal(loaded.online_.theta, detector.online_.theta)
    assert first["score"].notna().all()
    assert out["anomaly"].iloc[300] and out["anomaly"].sum() <= 10  # the spike, and its short window


def test_update_on_arrays_keeps_positions_and_refit_mode(tmp_path):
    y = _ar(700, seed=8)
    detector = AnomalyDetector(tsgen.ARIMA((1, 0, 0), trend="c"), method="quantile", online="refit",
                               refit_every=100, long_window=300, context=50).fit(y[:400])
    before = detector.model_
    out = detector.update(y[400:550])
    assert list(out.index) == list(range(400, 550)) and detector.model_ is not before  # refitted once
    assert len(detector.history_) == 50 and detector.since_refit_ == 0
    with pytest.raises(ValueError, match="`online`"):
        AnomalyDetector(online="always").fit(y[:400])
    with pytest.raises(ValueError, match="`calibration`"):
        AnomalyDetector(calibration="z").fit(y[:400])
    with pytest.raises(ValueError, match="one univariate series"):
        AnomalyDetector(online="rls", model=tsgen.Naive()).fit(pd.DataFrame({"a": y, "b": y}))


def test_auto_is_the_default_model():
    detector = AnomalyDetector()
    assert detector.get_params()["model"] == "auto"
    y = pd.Series(_ar(600, seed=10), index=pd.date_range("2024-01-01", periods=600, freq="h"))
    detector.fit(y.iloc[:400])
    assert detector.model_.order == (3, 0, 0) and detector.online_.seasonal_period == 24
    assert detector.likelihood_.tails == "both"


def test_online_density_is_the_student_t_of_the_current_fit():
    from scipy import stats

    y = _ar(500, seed=11) * 40.0 + 7.0  # any scale: the learner standardises internally
    learner = OnlineAR(order=2, df=5.0).start(y[:400])
    for value in y[400:]:
        mean = learner.centre + learner.spread * float(learner.theta @ learner._features())
        scale = learner.spread * np.sqrt(learner.variance)
        assert learner.step(value) == pytest.approx(stats.t.logpdf(value, 5.0, mean, scale), rel=1e-10)
    assert np.isnan(learner.step(np.nan))
    with pytest.raises(ValueError, match="`forgetting`"):
        OnlineAR(forgetting=0.0)
    with pytest.raises(ValueError, match="needs at least"):
        OnlineAR(order=3).start(y[:4])


def test_an_episode_is_flagged_at_its_onset():
    y = pd.Series(_ar(700, seed=12))
    y.iloc[500:540] += 8.0  # a 40-step episode
    flagged = {}
    for window in (0, 100):
        detector = AnomalyDetector(tsgen.ARIMA((1, 0, 0), trend="c"), method="quantile", false_alarm_rate=1e-3,
                                   online=None, calibration=None, onset_window=window).fit(y.iloc[:400])
        out = detector.update(y.iloc[400:])
        flagged[window] = out.index[out["anomaly"]]
        assert (out["alert"] == out["score"]).all() if window == 0 else (out["alert"] <= out["score"]).all()
        np.testing.assert_array_equal(detector.predict(y).iloc[400:].to_numpy(), out["anomaly"].to_numpy())
    assert 500 in flagged[100] and len(flagged[100]) <= 3 < len(flagged[0])
    with pytest.raises(ValueError, match="`onset_window`"):
        AnomalyDetector(onset_window=-1).fit(y.iloc[:400])

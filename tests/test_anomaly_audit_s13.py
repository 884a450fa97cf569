"""Audit of issue 13 as a new user meets it: the public anomaly API on real streams and adversarial input.

Real data: ``datasets/wti_daily.csv`` (business days: weekends absent), statsmodels' sunspots and, where the
checkout has it, the NAB dev subset in ``../shared/datasets/nab_dev`` (those tests skip without it).
"""
from __future__ import annotations

import itertools
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy.special import logsumexp

import tsgen
from tsgen.anomaly import SPOT, AnomalyDetector, bocpd, nab_evaluate, nab_score, read_nab_windows
from tsgen.anomaly._nab import probationary_length

ROOT = Path(__file__).resolve().parents[1]
NAB = ROOT / ".." / "shared" / "datasets" / "nab_dev"
needs_nab = pytest.mark.skipif(not (NAB / "combined_windows.json").exists(), reason="NAB dev subset not present")


def _wti() -> pd.Series:
    frame = pd.read_csv(ROOT / "datasets" / "wti_daily.csv", parse_dates=["date"])
    return frame.set_index("date")["price"]


def _nab(name: str) -> pd.Series:
    path = next(NAB.glob(f"data/*/{name}.csv"))
    return pd.read_csv(path, parse_dates=["timestamp"]).set_index("timestamp")["value"]


def _quiet(function, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return function(*args, **kwargs)


# ------------------------------------------------------------------ 1. online learning
@pytest.mark.parametrize("model", [tsgen.ARIMA((1, 1, 0)), tsgen.ETS(), tsgen.LinearGaussianSSM(max_iter=5)],
                         ids=["ARIMA", "ETS", "LDS"])
def test_online_rls_follows_a_real_stream_and_missing_points_stay_unflagged(model):
    y = _wti().iloc[:900].copy()
    y.iloc[700:720] = np.nan  # a feed outage inside the stream
    detector = _quiet(AnomalyDetector(model, online="rls", calibration="likelihood").fit, y.iloc[:500])
    out = detector.update(y.iloc[500:])
    gap = out.index[200:220]
    assert out.loc[gap, "score"].isna().all() and not out.loc[gap, "anomaly"].any()
    assert out["score"].drop(gap).notna().all() and np.isfinite(out["score"].drop(gap)).all()
    # the learner kept learning: its coefficients moved away from where the training data left them
    assert detector.online_.seen > 480


def test_online_rls_equals_the_batch_least_squares_on_sunspots():
    y = sm.datasets.sunspots.load_pandas().data["SUNACTIVITY"].to_numpy()
    series = pd.Series(y)
    detector = AnomalyDetector(tsgen.ARIMA((2, 0, 0), trend="c"), method="quantile", online="rls",
                               forgetting=1.0, calibration=None).fit(series.iloc[:150])
    for start in range(150, len(y), 40):  # the stream arrives in pieces
        detector.update(series.iloc[start:start + 40])
    learner = detector.online_
    z = (y - learner.centre) / learner.spread
    design = np.column_stack([np.ones(len(z) - 2), z[1:-1], z[:-2]])
    np.testing.assert_allclose(learner.theta, np.linalg.lstsq(design, z[2:], rcond=None)[0], atol=1e-5)


def test_the_stream_scored_in_pieces_equals_the_stream_scored_at_once():
    y = _wti().iloc[:1200]
    whole = AnomalyDetector().fit(y.iloc[:600])
    pieces = AnomalyDetector().fit(y.iloc[:600])
    expected = whole.update(y.iloc[600:])
    got = pd.concat([pieces.update(y.iloc[a:a + 97]) for a in range(600, 1200, 97)])
    pd.testing.assert_frame_equal(got, expected)


def test_a_deep_model_is_refitted_on_a_sliding_window():
    y = _wti().iloc[:400]
    model = tsgen.RNNForecaster(hidden_dim=4, max_epochs=1, window_length=20, random_state=0, progress=False)
    detector = _quiet(AnomalyDetector(model, online="refit", refit_every=50, long_window=120).fit, y.iloc[:200])
    first = detector.model_
    out = _quiet(detector.update, y.iloc[200:260])
    assert detector.model_ is not first and detector.since_refit_ == 0  # refitted once, 60 points in
    assert out["score"].notna().all()
    assert "fit(long_window) / refit_every" in AnomalyDetector.__doc__  # the per-point cost is stated


def test_the_per_point_cost_of_online_learning_is_stated():
    doc = AnomalyDetector.__doc__
    assert "O(k^2)" in doc and "O(context)" in doc and "O(1)" in doc


# ------------------------------------------------------------------ 2. calibrated scores and SPOT
def test_spot_sets_aside_an_anomaly_in_its_calibration_data():
    rng = np.random.default_rng(0)
    clean = rng.exponential(size=600) / np.log(10)  # calibrated scores under the null: P(S > s) = 10^-s
    reference = SPOT(1e-4, 0.98).fit(clean)
    for extra in ([300.0], [300.0, 299.7, 26.8]):  # one huge score; several that would mask each other
        spot = SPOT(1e-4, 0.98).fit(np.concatenate([clean, extra]))
        assert spot.outliers_ == len(extra)
        assert spot.threshold_ == pytest.approx(reference.threshold_, rel=1e-9)
    assert reference.outliers_ == 0 and 3.0 < reference.threshold_ < 6.0  # about -log10(1e-4) = 4


@pytest.mark.parametrize("seed", range(5))
def test_spot_keeps_a_genuinely_heavy_tail(seed):
    scores = np.random.default_rng(seed).pareto(2.0, size=3000)  # GPD tail with gamma = 0.5
    spot = SPOT(1e-3, 0.98).fit(scores)
    assert spot.outliers_ <= 1 and spot.gamma_ > 0.2


@needs_nab
@pytest.mark.parametrize("name", ["art_daily_jumpsup", "art_daily_flatmiddle", "rogue_agent_key_updown"])
def test_the_default_threshold_on_real_training_data_is_a_reachable_score(name):
    """One calibrated score of 300 among ~600 training scores put SPOT's threshold at 280-340 (scores stop at 300)."""
    y = _nab(name)
    detector = AnomalyDetector().fit(y.iloc[:probationary_length(len(y))])
    assert detector.train_scores_.max() > 250  # the training stretch does hold such a score
    assert detector.threshold_ < 10


def test_spot_refits_rarely_at_a_low_false_alarm_rate():
    rng = np.random.default_rng(1)
    for q in (1e-2, 1e-4):
        spot = SPOT(q, 0.98).fit(rng.normal(size=2000))
        refits, last = 0, spot.fitted_peaks_
        for x in rng.normal(size=20_000):
            spot.step(x)
            refits, last = refits + (spot.fitted_peaks_ != last), spot.fitted_peaks_
        assert refits <= 30  # 40 -> ~440 peaks in steps of 10% (at least 10): ~22, not one refit per peak (~400)


def test_the_default_false_alarm_rate_is_the_monitoring_one():
    assert AnomalyDetector().false_alarm_rate == 1e-3  # chosen on the NAB dev subset's tune half (see its docstring)
    assert AnomalyDetector(false_alarm_rate=1e-2).fit(_wti().iloc[:600]).threshold_ >= 2.0  # -log10(q): the floor


# ------------------------------------------------------------------ 3. BOCPD on a latent model's SMC densities
def test_bocpd_on_smc_densities_of_a_deep_markov_model_equals_enumeration():
    rng = np.random.default_rng(3)
    train = pd.Series(np.sin(np.arange(120) / 4) + 0.1 * rng.normal(size=120))
    model = _quiet(tsgen.DeepMarkovModel(latent_dim=2, hidden_dim=8, emission_dim=8, transition_dim=8,
                                         max_epochs=3, window_length=20, random_state=0, progress=False).fit, train)
    y = pd.Series(np.r_[train.iloc[:4].to_numpy(), train.iloc[:3].to_numpy() + 4.0])
    hazard = 0.2
    result = bocpd(model, y, hazard=hazard)

    def segment(a, b):  # the model's own SMC log-density of y[a:b] as a fresh regime
        return float(model.log_likelihood(y.iloc[a:b], per_step=True, method="smc").sum())

    cache = {}
    T = len(y)
    for t in range(T):
        log_joint = np.full(t + 1, -np.inf)
        for changes in itertools.product([False, True], repeat=t):
            starts = [0] + [s for s, c in zip(range(1, t + 1), changes) if c]
            bounds = starts + [t + 1]
            log_prior = sum(math.log(hazard) if c else math.log1p(-hazard) for c in changes)
            log_lik = sum(cache.setdefault((a, b), segment(a, b)) for a, b in zip(bounds[:-1], bounds[1:]))
            run = t - starts[-1]
            log_joint[run] = np.logaddexp(log_joint[run], log_prior + log_lik)
        np.testing.assert_allclose(result.run_length_posterior[t, : t + 1], np.exp(log_joint - logsumexp(log_joint)),
                                   atol=1e-6)
    np.testing.assert_allclose(result.run_length_posterior.sum(axis=1), 1.0)


# ------------------------------------------------------------------ 4. model="auto" on monitoring data
@pytest.mark.parametrize("freq, period", [("5min", 288), ("h", 24), ("D", 7)])
def test_auto_takes_its_season_from_the_frequency(freq, period):
    rng = np.random.default_rng(4)
    n = 4 * period + 200
    index = pd.date_range("2024-01-01", periods=n, freq=freq)
    y = pd.Series(np.sin(2 * np.pi * np.arange(n) / period) + 0.1 * rng.normal(size=n), index=index)
    detector = AnomalyDetector().fit(y)
    assert detector.online_.seasonal_period == period and detector.profile_.period == period
    assert detector.online_.df == 5.0 and detector.online_.reset is not None  # Student-t; level shifts absorbed
    assert detector._calibration() == "likelihood" and detector._tails() == "both"


# ------------------------------------------------------------------ 5. NAB scoring
def _sigma(p):
    return 2.0 / (1.0 + math.exp(5.0 * p)) - 1.0


def test_nab_score_by_hand_with_the_probationary_period():
    n = 1000  # probationary rows: min(floor(0.15 * 1000), 0.15 * 5000) = 150
    windows = [(400, 499), (800, 819)]
    flags = np.zeros(n, dtype=bool)
    flags[[100, 200, 450, 480, 600, 950]] = True  # 100: probationary; 480: a second detection in a window
    tp = _sigma(-(499 - 450 + 1) / 100) / _sigma(-1.0)
    fp_before = -0.11
    fp_600 = 0.11 * _sigma(abs(600 - 499) / (100 - 1))
    fp_950 = 0.11 * _sigma(abs(950 - 819) / (20 - 1))  # p > 3: -1
    raw = tp + fp_before + fp_600 + fp_950 - 1.0  # the second window is missed
    result = nab_evaluate(windows, flags)
    assert result.raw == pytest.approx(raw, abs=1e-12)
    assert result.score == pytest.approx(100 * (raw + 2) / 4, abs=1e-12)
    assert fp_950 == pytest.approx(-0.11)
    low_fn = nab_evaluate(windows, flags, profile="reward_low_FN_rate")
    assert low_fn.raw == pytest.approx(tp + fp_before + fp_600 + fp_950 - 2.0, abs=1e-12)
    assert low_fn.score == pytest.approx(100 * (low_fn.raw + 4) / (2 + 4), abs=1e-12)


@needs_nab
def test_nab_perfect_and_null_on_the_windows_file():
    windows = read_nab_windows(NAB / "combined_windows.json")
    perfect, null = {}, {}
    for name, limits in windows.items():
        y = pd.read_csv(NAB / "data" / name, parse_dates=["timestamp"]).set_index("timestamp")["value"]
        flags = pd.Series(False, index=y.index)
        for left, _ in limits:
            flags.iloc[int(np.flatnonzero(y.index == left)[0])] = True
        perfect[name], null[name] = flags, pd.Series(False, index=y.index)
    assert nab_score(windows, perfect) == pytest.approx(100.0)
    assert nab_score(windows, null) == pytest.approx(0.0)
    # as scores, the optimiser finds the perfect threshold in every profile
    scores = {k: v.astype(float) * 0.5 + 0.25 for k, v in perfect.items()}
    for profile in ("standard", "reward_low_FP_rate", "reward_low_FN_rate"):
        assert nab_evaluate(windows, scores, profile).score == pytest.approx(100.0)


# ------------------------------------------------------------------ 6. streams as they come
def _stream(kind: str) -> pd.Series:
    y = _wti().iloc[:700].astype(float)
    if kind == "business days":
        return y
    if kind == "irregular":
        return y.set_axis(y.index + pd.to_timedelta(np.arange(700) % 7 * 13, unit="min"))
    if kind == "duplicated":
        return pd.concat([y.iloc[:400], y.iloc[399:401], y.iloc[401:]])  # two rows repeat a timestamp
    if kind == "tz-aware":
        return y.tz_localize("America/New_York")
    if kind == "NaN run":
        z = y.copy()
        z.iloc[450:480] = np.nan
        return z
    if kind == "starts with NaN":
        z = y.copy()
        z.iloc[:30] = np.nan
        return z
    if kind == "int":
        return y.round().astype(np.int64)
    if kind == "constant calibration":
        z = y.copy()
        z.iloc[:350] = 40.0
        return z
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["business days", "irregular", "duplicated", "tz-aware", "NaN run",
                                  "starts with NaN", "int", "constant calibration"])
def test_streams_are_accepted_as_they_come(kind):
    y = _stream(kind)
    detector = _quiet(AnomalyDetector().fit, y.iloc[:350])
    out = detector.update(y.iloc[350:])
    assert out.index.equals(y.index[350:])
    missing = y.iloc[350:].isna().to_numpy()
    assert out["score"].isna().to_numpy().tolist() == missing.tolist()
    assert not out["anomaly"].to_numpy()[missing].any()
    assert np.isfinite(detector.threshold_) and detector.threshold_ < 300  # a score that can still be reached


def test_a_very_short_stream_is_refused_or_scored_clearly():
    y = _wti().iloc[:40]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        detector = AnomalyDetector().fit(y.iloc[:15])
    assert any("too few for SPOT" in str(w.message) for w in caught)
    assert detector.update(y.iloc[15:])["score"].notna().all()
    with pytest.raises(ValueError, match="at least"):
        AnomalyDetector().fit(y.iloc[:4])


# ------------------------------------------------------------------ 7. save / load mid-stream
@pytest.mark.parametrize("kind", ["business days", "tz-aware", "duplicated"])
def test_save_and_load_mid_stream_equals_the_uninterrupted_stream(tmp_path, kind):
    y = _stream(kind)
    straight = AnomalyDetector().fit(y.iloc[:350])
    expected = straight.update(y.iloc[350:])
    interrupted = AnomalyDetector().fit(y.iloc[:350])
    first = interrupted.update(y.iloc[350:500])
    interrupted.save(tmp_path / "detector")
    restored = tsgen.load(tmp_path / "detector")
    got = pd.concat([first, restored.update(y.iloc[500:])])
    pd.testing.assert_frame_equal(got, expected)


def test_the_natural_cycle_of_an_arrival_order_stream_counts_its_rows():
    """Business days with holidays are scored by arrival order: a week is about 5 rows there, not 7 days' worth."""
    y = _wti().iloc[:1000]
    assert tsgen.anomaly._stream.frequency_of(y.index) is None  # holidays: no pandas frequency
    detector = AnomalyDetector().fit(y)
    assert detector.online_.seasonal_period == 5 and detector.profile_.period == 5
    hourly = pd.Series(np.arange(24 * 30.0), index=pd.date_range("2024-01-01", periods=24 * 30, freq="h"))
    jittered = hourly.set_axis(hourly.index + pd.to_timedelta(np.arange(24 * 30) % 3, unit="s"))
    assert tsgen.anomaly._stream.season_length(jittered.index, len(jittered)) == 24


@pytest.mark.parametrize("model", ["auto", tsgen.ARIMA((1, 1, 0))], ids=["auto", "ARIMA frozen"])
def test_an_infinite_or_text_value_in_the_stream_is_refused_and_leaves_the_detector_working(model):
    """One inf used to poison the online learner: every later score NaN (never flagged), silently."""
    y = _wti().iloc[:700]
    detector = AnomalyDetector(model).fit(y.iloc[:600])
    bad = y.iloc[600:650].copy()
    bad.iloc[10] = np.inf
    with pytest.raises(ValueError, match="`y_new` contains infinite values"):
        detector.update(bad)
    with pytest.raises(TypeError, match="`y_new` must hold numbers"):
        detector.update(pd.Series(["high"], index=y.index[600:601]))
    out = detector.update(y.iloc[600:])
    assert out["score"].notna().all()


def test_online_rls_takes_the_documented_order():
    """online='rls': AR order p + d + q of an ARIMA model, else 3 (the docstring); ETS/LDS templates got 1."""
    y = _wti().iloc[:400]
    assert AnomalyDetector(tsgen.ARIMA((1, 1, 1)), online="rls").fit(y).online_.order == 3
    assert AnomalyDetector(tsgen.ARIMA((1, 0, 0)), online="rls").fit(y).online_.order == 1
    assert _quiet(AnomalyDetector(tsgen.ETS(), online="rls").fit, y).online_.order == 3

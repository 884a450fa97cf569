"""Issue 13 (NAB): the marginal tail beside the one-step likelihood and the profile, the decision rule's
suppression after a flag, and the profile's start run over all slots at once."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_anomaly_stream import _ar

import tsgen
from tsgen.anomaly import AnomalyDetector, AnomalyLikelihood
from tsgen.anomaly._detector import suppress_repeats
from tsgen.anomaly._profile import SeasonalProfile


def _hourly(values) -> pd.Series:
    return pd.Series(values, index=pd.date_range("2024-01-01", periods=len(values), freq="h"))


def test_profile_start_over_all_slots_equals_stepping_one_value_at_a_time():
    rng = np.random.default_rng(3)
    y = np.sin(np.arange(1003) * 2 * np.pi / 24) + 0.1 * rng.normal(size=1003)
    y[rng.random(1003) < 0.05] = np.nan
    y[50:90] = np.nan  # slots first visited in the second or third cycle
    y[500] = 40.0  # an error beyond 10 scales enters as 10 scales
    together = SeasonalProfile(24, rate=0.1)
    scores = together.start(y)
    one = SeasonalProfile(24, rate=0.1)
    one.centre, one.spread = together.centre, together.spread
    one.mean, one.variance, one.visits, one.position = np.zeros(24), np.ones(24), np.zeros(24), 0
    expected = np.array([one.step(v) for v in y])
    np.testing.assert_array_equal(np.isnan(scores), np.isnan(expected))
    np.testing.assert_allclose(scores, expected, rtol=1e-12, atol=1e-12)
    for name in ("mean", "variance", "visits"):
        np.testing.assert_allclose(getattr(together, name), getattr(one, name), rtol=1e-13, atol=1e-15)
    assert together.position == one.position == len(y)
    assert together.step(0.3) == pytest.approx(one.step(0.3), rel=1e-13)


def test_suppress_repeats_keeps_one_flag_per_period_and_carries_its_state_across_calls():
    flags = np.zeros(30, dtype=bool)
    flags[[2, 3, 5, 6, 9, 20, 21]] = True
    kept, since = suppress_repeats(flags, 3)
    assert np.flatnonzero(kept).tolist() == [2, 6, 20]  # 3 and 5 within 3 rows of 2; 9 within 3 of 6
    assert since == 10  # row 30 is 10 rows after row 20
    assert suppress_repeats(flags, 0)[0].tolist() == flags.tolist()
    # in pieces, the rows since the last flag kept carry over
    first, since = suppress_repeats(flags[:4], 3)
    second, _ = suppress_repeats(flags[4:], 3, since)
    assert np.concatenate([first, second]).tolist() == kept.tolist()


def test_marginal_tail_is_the_bonferroni_minimum_with_the_values_rank():
    y = _hourly(_ar(900, seed=4))
    detector = AnomalyDetector(profile=None, marginal=True, suppress=0).fit(y.iloc[:600])
    out = detector.update(y.iloc[600:])
    # the same tails from scratch: the one-step likelihood of the online scores and the rank of each value
    reference = AnomalyDetector(profile=None, marginal=False).fit(y.iloc[:600])
    train_values = y.iloc[:600].to_numpy()
    onestep = AnomalyLikelihood(10, 2000, tails="both")
    onestep.transform(_train_raw(reference, y.iloc[:600]))
    marginal = AnomalyLikelihood(1, 2000, tails="both")
    marginal.transform(train_values)
    raw = -np.array([reference.online_.step(v) for v in y.iloc[600:].to_numpy()])
    tails = np.vstack([onestep.transform(raw), marginal.transform(y.iloc[600:].to_numpy())])
    expected = -np.log10(np.minimum(1.0, 2 * tails.min(axis=0)))
    np.testing.assert_allclose(out["score"].to_numpy(), expected, rtol=1e-10, atol=1e-12)


def _train_raw(detector, y):
    """The one-step raw scores the detector calibrated on at fit (its learner's in-sample view)."""
    return -detector.online_.in_sample_log_density(y.to_numpy())


def test_marginal_scores_stay_calibrated_under_the_null():
    # exchangeable values: every tail is uniform, the Bonferroni minimum exceeds -log10(q) at most a fraction q
    rng = np.random.default_rng(6)
    y = _hourly(10.0 + rng.normal(size=6000))
    out = AnomalyDetector(marginal=True).fit(y.iloc[:1000]).update(y.iloc[1000:])
    scores = out["score"].to_numpy()
    for q in (0.1, 0.01):
        # Bonferroni bounds the rate by q; 4 binomial standard errors of slack
        assert np.mean(scores > -np.log10(q)) <= q + 4 * np.sqrt(q * (1 - q) / len(scores))


def test_streamed_flags_are_suppressed_and_survive_chunks_and_save_load(tmp_path):
    rng = np.random.default_rng(7)
    values = _ar(3000, seed=7)
    for start in (1500, 1530, 1560, 2200, 2240):  # spikes closer together than the suppression period
        values[start] += 12.0 + 4.0 * rng.random()
    y = _hourly(values)
    whole = AnomalyDetector(suppress=50, false_alarm_rate=1e-2).fit(y.iloc[:1000])
    out = whole.update(y.iloc[1000:])
    flagged = np.flatnonzero(out["anomaly"].to_numpy())
    assert len(flagged) >= 2 and np.diff(flagged).min() > 50
    # the same stream in two pieces, saved and restored in between
    piece = AnomalyDetector(suppress=50, false_alarm_rate=1e-2).fit(y.iloc[:1000])
    first = piece.update(y.iloc[1000:1510])
    piece.save(tmp_path / "detector")
    restored = tsgen.load(tmp_path / "detector")
    assert restored.since_flag_ == piece.since_flag_
    second = restored.update(y.iloc[1510:])
    both = pd.concat([first, second])
    np.testing.assert_array_equal(both["anomaly"].to_numpy(), out["anomaly"].to_numpy())
    np.testing.assert_allclose(both["score"].to_numpy(), out["score"].to_numpy(), rtol=1e-12)
    # without suppression the alerts are the same and more steps are flagged
    free = AnomalyDetector(suppress=0, false_alarm_rate=1e-2).fit(y.iloc[:1000]).update(y.iloc[1000:])
    np.testing.assert_array_equal(free["alert"].to_numpy(), out["alert"].to_numpy())
    assert free["anomaly"].sum() > out["anomaly"].sum()


def test_predict_applies_the_same_suppression():
    values = _ar(1500, seed=8)
    values[[1100, 1110, 1300]] += 15.0
    y = _hourly(values)
    detector = AnomalyDetector(tsgen.ARIMA((1, 0, 0)), suppress=20, onset_window=5).fit(y.iloc[:1000])
    flags = detector.predict(y.iloc[1000:]).to_numpy()
    free = detector.set_params(suppress=0).predict(y.iloc[1000:]).to_numpy()
    assert flags[100] and not flags[110] and free[110] and flags[300]


@pytest.mark.parametrize("params, name", [({"marginal": "yes"}, "marginal"), ({"suppress": -1}, "suppress"),
                                          ({"suppress": 2.5}, "suppress"),
                                          ({"model": tsgen.ARIMA((1, 0, 0)), "marginal": True}, "marginal")])
def test_bad_marginal_or_suppress_is_refused_by_name(params, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        AnomalyDetector(**params).fit(_hourly(_ar(300)))


def test_a_detector_saved_before_the_marginal_tail_and_suppression_loads_and_streams():
    y = _hourly(_ar(1200, seed=9))
    detector = AnomalyDetector(marginal=False).fit(y.iloc[:800])
    meta, tensors = detector._to_payload()
    # what an older file lacks: the marginal entry and the suppression state
    del meta["marginal"], tensors["since_flag"]
    for key in ("marginal", "suppress"):
        meta["params"].pop(key, None)
    restored = AnomalyDetector._from_payload(meta, tensors)
    assert restored.marginal_likelihood_ is None and restored.since_flag_ == np.inf
    expected = detector.update(y.iloc[800:])
    np.testing.assert_allclose(restored.update(y.iloc[800:])["score"].to_numpy(), expected["score"].to_numpy(),
                               rtol=1e-12)

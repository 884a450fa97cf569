"""Level shifts absorbed after detection: streaming BOCPD over recent shifts as the online model's reset signal."""
import itertools

import numpy as np
import pandas as pd
import pytest
from scipy.stats import multivariate_normal

import tsgen
from tsgen.anomaly import AnomalyDetector
from tsgen.anomaly._online import OnlineAR
from tsgen.anomaly._reset import LevelShiftBOCPD


def _a(t: int, s: int, phi: np.ndarray, lags: np.ndarray) -> float:
    """How much a unit shift at step s moves the prediction of step t >= s (the lags inside the regime cancel it)."""
    return 1.0 - phi[lags <= t - s].sum()


def test_run_length_posterior_matches_exact_enumeration():
    # Gaussian errors (df=None): the recursion is then exact Bayes over every path of change points
    rng = np.random.default_rng(0)
    T, hazard, tau = 7, 0.2, 2.0
    phi, lags = np.array([0.5, 0.2]), np.array([1, 2])
    u = rng.normal(size=T) + np.r_[0, 0, 0, 2.5, 2.5, 2.5, 2.5]
    monitor = LevelShiftBOCPD(hazard=hazard, horizon=T + 2, min_run=T + 2, prior_scale=tau, df=None)
    for value in u:
        assert monitor.step(value, phi, lags) is None  # min_run beyond the horizon: nothing is confirmed
    p, p_none = monitor.posterior()
    # enumerate every path: c_t = 1 when a new regime (an unknown shift from the model's prediction) starts at t
    last = np.zeros(T + 1)  # last[s + 1]: posterior mass of "the latest change is at s"; last[0]: no change
    for path in itertools.product((0, 1), repeat=T):
        prior = np.prod([hazard if c else 1 - hazard for c in path])
        starts = [t for t, c in enumerate(path) if c]
        log_lik = float(np.sum(-0.5 * u[: starts[0] if starts else T] ** 2 - 0.5 * np.log(2 * np.pi)))
        for k, s in enumerate(starts):
            end = starts[k + 1] if k + 1 < len(starts) else T
            a = np.array([_a(t, s, phi, lags) for t in range(s, end)])
            cov = np.eye(end - s) + tau**2 * np.outer(a, a)
            log_lik += multivariate_normal(np.zeros(end - s), cov).logpdf(u[s:end])
        last[starts[-1] + 1 if starts else 0] += prior * np.exp(log_lik)
    last /= last.sum()
    np.testing.assert_allclose(p_none, last[0], rtol=1e-10)
    exact = last[1:][::-1]  # by age: the change at the current step T - 1 is 1 step ago
    np.testing.assert_allclose(p[:T], exact, rtol=1e-10, atol=1e-300)
    assert np.all(p[T:] == 0)


def test_shift_level_moves_the_prediction_by_the_shift_less_what_the_regime_lags_already_carry():
    rng = np.random.default_rng(1)
    y = np.cumsum(rng.normal(size=300)) * 0.1 + np.sin(np.arange(300) * 2 * np.pi / 12)
    learner = OnlineAR(order=2, seasonal_period=12, forgetting=0.99, df=5.0).start(y)

    def prediction():
        x = learner._features()
        return learner.centre + learner.spread * float(learner.theta @ x)

    before = prediction()
    phi = learner.theta[1:]
    learner.shift_level(2, 3.0)
    assert prediction() - before == pytest.approx(3.0 * (1.0 - phi[learner.lags <= 2].sum()), rel=1e-10)
    with pytest.raises(ValueError, match="age"):
        learner.shift_level(0, 1.0)
    with pytest.raises(ValueError, match="delta"):
        learner.shift_level(1, np.nan)


def _daily(n_days: int, shift_day: int, shift: float, seed: int) -> pd.Series:
    rng = np.random.default_rng(seed)
    n = 24 * n_days
    t = np.arange(n)
    y = 10 + 3 * np.sin(2 * np.pi * t / 24) + 0.3 * rng.normal(size=n)
    y[24 * shift_day + 7:] += shift
    return pd.Series(y, index=pd.date_range("2024-01-01", periods=n, freq="h"))


def test_a_level_shift_is_absorbed_once_and_not_replayed_a_cycle_later():
    y = _daily(40, 30, 4.0, seed=2)
    start = 24 * 30 + 7
    outs = {}
    for reset in (None, "auto"):
        # the autoregression's scores alone: the time-of-day profile is not moved by absorbed shifts (by design), and
        # the marginal tail scores the value, not the model
        detector = AnomalyDetector(reset=reset, profile=None, marginal=False).fit(y.iloc[: 24 * 10])
        outs[reset] = detector.update(y.iloc[24 * 10:])
    shifts = outs["auto"]["level_shift"]
    found = shifts[shifts != 0]
    assert len(found) == 1  # one shift, none on the 30 normal days before it nor after
    at = y.index.get_loc(found.index[0])
    assert 5 <= at - start + 1 <= 19  # confirmed after min_run steps, within the horizon
    assert found.iloc[0] == pytest.approx(4.0, abs=4 * 0.3)
    assert (outs[None]["level_shift"] == 0).all()
    # one cycle later the seasonal lags see the jump again unless the level moved with it
    raw = {k: v["score"].loc[y.index[start + 24 - 3]: y.index[start + 24 + 3]].max() for k, v in outs.items()}
    assert raw["auto"] < raw[None]
    onset = outs["auto"]["anomaly"].loc[y.index[start]: y.index[start + 4]]
    assert onset.any()  # the shift itself is still reported, at its onset


def test_no_shift_is_confirmed_on_a_stationary_stream():
    rng = np.random.default_rng(3)
    monitor = LevelShiftBOCPD()
    u = rng.standard_t(5, size=20_000) * np.sqrt(3 / 5)  # unit-variance Student-t errors
    assert not any(monitor.step(v, np.array([-0.5, 0.2]), np.array([1, 2])) for v in u)
    assert 0.0 <= monitor.changepoint_probability() < 0.9


def test_reset_state_survives_save_and_load(tmp_path):
    y = _daily(30, 20, 4.0, seed=4)
    whole = AnomalyDetector().fit(y.iloc[:240])
    expected = whole.update(y.iloc[240:])
    part = AnomalyDetector().fit(y.iloc[:240])
    first = part.update(y.iloc[240: 24 * 20 + 10])  # stop inside the shift, with candidates pending
    assert part.online_.reset.changepoint_probability() > 0
    part.save(tmp_path / "d.tsgen")
    loaded = tsgen.load(tmp_path / "d.tsgen")
    np.testing.assert_array_equal(loaded.online_.reset.log_mass, part.online_.reset.log_mass)
    rest = loaded.update(y.iloc[24 * 20 + 10:])
    pd.testing.assert_frame_equal(pd.concat([first, rest]), expected)


def test_bad_reset_settings_are_refused():
    with pytest.raises(ValueError, match="reset"):
        AnomalyDetector(reset="yes").fit(_daily(12, 11, 0.0, seed=5))
    with pytest.raises(ValueError, match="online"):
        AnomalyDetector(tsgen.ARIMA((1, 0, 0)), online=None, reset="bocpd").fit(_daily(12, 11, 0.0, seed=5))
    for kwargs, name in ((dict(hazard=0.0), "hazard"), (dict(horizon=1), "horizon"),
                         (dict(min_run=50), "min_run"), (dict(threshold=0.2), "threshold"),
                         (dict(prior_scale=-1.0), "prior_scale"), (dict(df=0.0), "df")):
        with pytest.raises(ValueError, match=name):
            LevelShiftBOCPD(**kwargs)

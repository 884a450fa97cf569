"""tsgen.StochasticVolatility (Kim, Shephard & Chib 1998) and tsgen.NonlinearGrowth (Kitagawa 1996) estimators."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import tsgen
from tsgen.data import to_series_batch
from tsgen.models.stochastic_volatility import _moment_start

MU, PHI, SIGMA = 0.0, 0.9, 0.5


def simulate_sv(rng, n_series, length, mu=MU, phi=PHI, sigma=SIGMA):
    h = np.empty((n_series, length))
    h[:, 0] = rng.normal(mu, sigma / math.sqrt(1 - phi**2), n_series)
    for t in range(1, length):
        h[:, t] = mu + phi * (h[:, t - 1] - mu) + sigma * rng.normal(size=n_series)
    return np.exp(h / 2) * rng.normal(size=(n_series, length)), h


@pytest.fixture(scope="module")
def panel():
    rng = np.random.default_rng(0)
    y, h = simulate_sv(rng, 20, 200)
    index = pd.date_range("2019-01-01", periods=200, freq="B")
    return [pd.Series(row, index=index) for row in y], h


@pytest.fixture(scope="module")
def fitted(panel):
    return tsgen.StochasticVolatility(max_iter=5, n_particles=200, n_trajectories=30, random_state=0).fit(panel[0])


def test_particle_em_recovers_the_simulated_parameters(fitted):
    # Tolerances: 4 standard deviations of the estimates over 6 simulated panels of this size
    # (20 x 200 returns; same settings): sd 0.086 (mu), 0.012 (phi), 0.024 (sigma).
    assert abs(fitted.mu_ - MU) < 4 * 0.086
    assert abs(fitted.phi_ - PHI) < 4 * 0.012
    assert abs(fitted.sigma_ - SIGMA) < 4 * 0.024
    assert len(fitted.log_evidences_) == fitted.n_iter_ == 5


def test_moment_start_lies_near_the_truth(panel):
    start = _moment_start(to_series_batch(panel[0]))
    assert abs(start["phi"] - PHI) < 0.1 and abs(start["sigma"] - SIGMA) < 0.2 and abs(start["mu"] - MU) < 0.4


def test_filter_and_smooth_track_the_log_variance(fitted, panel):
    y, h = panel
    smooth, filtered = fitted.smooth(y), fitted.filter(y)  # all 20 series at once
    assert list(smooth[0].columns) == ["mean", "q0.05", "q0.5", "q0.95"] and smooth[0].index.equals(y[0].index)
    means = np.stack([frame["mean"].to_numpy() for frame in smooth])
    assert np.mean([np.corrcoef(m, truth)[0, 1] for m, truth in zip(means, h)]) > 0.7
    # smoothing uses the whole series: closer to h than filtering
    filtered_means = np.stack([frame["mean"].to_numpy() for frame in filtered])
    assert np.mean((means - h) ** 2) < 0.9 * np.mean((filtered_means - h) ** 2)
    low, high = (np.stack([frame[q].to_numpy() for frame in smooth]) for q in ("q0.05", "q0.95"))
    assert 0.8 < np.mean((low <= h) & (h <= high)) < 0.97  # 90% bands over 4000 correlated steps


def test_one_step_densities_are_causal_and_flag_a_shock(fitted, panel):
    y = panel[0][0].copy()
    y.iloc[150] = 15 * y.abs().mean()
    per_step = fitted.log_likelihood(y, per_step=True)
    assert per_step.idxmin() == y.index[150]
    changed = y.copy()
    changed.iloc[100:] = 0.1
    # the same seed: everything up to step 100 is computed from the same draws and data
    np.testing.assert_array_equal(fitted.log_likelihood(changed, per_step=True).iloc[:100], per_step.iloc[:100])
    assert fitted.log_likelihood(y) == pytest.approx(per_step.sum(), rel=1e-12)


def test_forecasts_widen_with_the_volatility(fitted, panel):
    y = panel[0][0]
    calm, wild = y * 0.1, y * 10
    spread = [float((fitted.predict(3, y=s)["q0.95"] - fitted.predict(3, y=s)["q0.05"]).iloc[0]) for s in (calm, wild)]
    assert spread[1] > 10 * spread[0]
    draws = fitted.sample(4, n_samples=6)
    assert len(draws) == 20 and draws[0].shape == (6, 4, 1)


def test_save_load_round_trip(fitted, panel, tmp_path):
    fitted.save(tmp_path / "sv.tsgen")
    again = tsgen.load(tmp_path / "sv.tsgen")
    assert (again.mu_, again.phi_, again.sigma_) == (fitted.mu_, fitted.phi_, fitted.sigma_)
    for before, after in zip(fitted.predict(3), again.predict(3)):
        pd.testing.assert_frame_equal(after, before)


def test_pmmh_gives_posterior_draws(panel):
    model = tsgen.StochasticVolatility(method="pmmh", max_iter=30, burn_in=0.2, n_particles=32, random_state=0)
    model.fit(panel[0][0])
    assert set(model.posterior_samples_) == {"mu", "phi", "sigma"}
    assert all(draws.shape == (24,) for draws in model.posterior_samples_.values())
    assert model.phi_ == pytest.approx(model.posterior_samples_["phi"].mean())
    assert 0 <= model.acceptance_rate_ <= 1


def test_bad_input_names_the_argument(panel):
    y = panel[0][0]
    with pytest.raises(ValueError, match="univariate"):
        tsgen.StochasticVolatility(max_iter=0).fit(pd.DataFrame({"a": y, "b": y}))
    for argument, value in (("phi", 1.2), ("sigma", 0.0), ("mu", float("nan")), ("method", "mle"),
                            ("n_particles", 1), ("burn_in", -0.1)):
        with pytest.raises(ValueError, match=f"`{argument}`"):
            tsgen.StochasticVolatility(max_iter=0, **{argument: value}).fit(y)
    with pytest.raises(ValueError, match="`process_variance`"):
        tsgen.NonlinearGrowth(process_variance=-1.0).fit(y)


# ------------------------------------------------------------------ Kitagawa
def simulate_growth(rng, n_series, length, process_variance=10.0, observation_variance=1.0):
    x = np.empty((n_series, length))
    x[:, 0] = rng.normal(scale=math.sqrt(5.0), size=n_series)
    for t in range(1, length):  # x[:, t] is x_{t+1}: the cosine reads the 1-based time
        prev = x[:, t - 1]
        x[:, t] = 0.5 * prev + 25 * prev / (1 + prev**2) + 8 * math.cos(1.2 * (t + 1))
        x[:, t] += math.sqrt(process_variance) * rng.normal(size=n_series)
    return x**2 / 20 + math.sqrt(observation_variance) * rng.normal(size=x.shape), x


def test_nonlinear_growth_filter_tracks_the_state_up_to_its_sign():
    rng = np.random.default_rng(1)
    y, x = simulate_growth(rng, 1, 100)
    model = tsgen.NonlinearGrowth(process_variance=10.0, observation_variance=1.0, max_iter=0, n_particles=1000,
                                  random_state=0).fit(pd.Series(y[0]))
    frame = model.filter(pd.Series(y[0]))
    # y reveals |x| only: the filtered median of x^2 / 20 follows y's signal, and |x| sits inside the band of |x|
    magnitude = np.maximum(frame["q0.95"].abs(), frame["q0.05"].abs())
    assert np.mean(np.abs(x[0]) <= magnitude + 1.0) > 0.9
    forecast = model.predict(4)
    assert forecast.shape == (4, 4) and np.isfinite(forecast.to_numpy()).all()

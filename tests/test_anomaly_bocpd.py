"""Bayesian online change-point detection (issue 13 §3) against exact enumeration of segmentations."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy.special import logsumexp

from tsgen.anomaly import bocpd
from tsgen.anomaly._bocpd import segment_log_densities
from tsgen.models.lds import LinearGaussianSSM


def _local_level():
    # a proper first-step density (the initial state's), so that a new regime can explain a jump
    return LinearGaussianSSM.from_params(
        transition_matrices=[[1.0]], observation_matrices=[[1.0]], transition_covariance=[[0.01]],
        observation_covariance=[[1.0]], initial_state_mean=[0.0], initial_state_covariance=[[25.0]],
    )


def _enumerated_posterior(L, hazard, t):
    """P(r_t = k | y_1:t) by summing over every segmentation of steps 0..t (change points before each step)."""
    log_joint = np.full(t + 1, -np.inf)
    for changes in itertools.product([False, True], repeat=t):
        starts = [0] + [s for s, c in zip(range(1, t + 1), changes) if c]
        log_prior = sum(np.log(hazard) if c else np.log1p(-hazard) for c in changes)
        bounds = starts + [t + 1]
        log_lik = sum(L[a, j] for a, b in zip(bounds[:-1], bounds[1:]) for j in range(b - a))
        run = t - starts[-1]
        log_joint[run] = np.logaddexp(log_joint[run], log_prior + log_lik)
    return np.exp(log_joint - logsumexp(log_joint))


def test_run_length_posterior_equals_exact_enumeration():
    y = pd.Series([0.3, -0.5, 0.8, 0.1, 5.2, 4.6, 5.5, 4.9], index=pd.date_range("2024-01-01", periods=8, freq="D"))
    model, hazard = _local_level(), 0.1
    result = bocpd(model, y, hazard=hazard)
    L = segment_log_densities(model, y, len(y))
    # L is the model's own per-step densities of each regime
    np.testing.assert_allclose(L[3, :5], model.log_likelihood(y.iloc[3:], per_step=True).to_numpy())
    for t in range(len(y)):
        exact = _enumerated_posterior(L, hazard, t)
        np.testing.assert_allclose(result.run_length_posterior[t, : t + 1], exact, atol=1e-12)
        assert result.run_length_posterior[t, t + 1 :].sum() == 0.0
    assert result.changepoint_probability.index.equals(y.index)
    assert result.changepoint_probability.iloc[4] > 0.9  # the jump at step 4
    assert result.changepoint_probability.drop(y.index[4]).iloc[1:].max() < 0.2
    assert list(result.map_run_length.iloc[4:]) == [0, 1, 2, 3]
    everything = _enumerated_posterior(L, hazard, len(y) - 1)  # the evidence: every segmentation's mass
    assert np.isfinite(result.log_evidence) and everything.sum() == pytest.approx(1.0)


def test_truncated_run_lengths_keep_the_change_and_bad_input():
    rng = np.random.default_rng(0)
    y = np.r_[rng.normal(0, 1, 25), rng.normal(6, 1, 15)]
    result = bocpd(_local_level(), y, hazard=0.02, max_run_length=8)
    assert result.run_length_posterior.shape == (40, 8)
    np.testing.assert_allclose(result.run_length_posterior.sum(axis=1), 1.0)
    assert result.changepoint_probability.iloc[1:].idxmax() == 25 and result.changepoint_probability.iloc[25] > 0.9
    with pytest.raises(ValueError, match="`hazard`"):
        bocpd(_local_level(), y, hazard=1.5)
    with pytest.raises(ValueError, match="`max_run_length`"):
        bocpd(_local_level(), y, max_run_length=1)
    with pytest.raises(TypeError, match="`model`"):
        bocpd(object(), y)

"""Named results of the Kalman routines (shapes with ``*b`` batch, T steps,
S states, D observed dims, h forecast steps)."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor


class FilterResult(NamedTuple):
    """Kalman filter output; ``predicted_*`` are the moments of x_t given y_{<t}."""

    predicted_means: Tensor  # (*b, T, S)
    predicted_covariances: Tensor  # (*b, T, S, S)
    filtered_means: Tensor  # (*b, T, S)
    filtered_covariances: Tensor  # (*b, T, S, S)
    log_likelihoods: Tensor  # (*b, T): log p(y_t | y_{<t}) over observed components


class SmootherResult(NamedTuple):
    smoothed_means: Tensor  # (*b, T, S)
    smoothed_covariances: Tensor  # (*b, T, S, S)
    smoothed_cross_covariances: Tensor  # (*b, T-1, S, S): Cov(x_{t+1}, x_t | y_{1:T})
    filtered: FilterResult


class ForecastResult(NamedTuple):
    state_means: Tensor  # (*b, h, S)
    state_covariances: Tensor  # (*b, h, S, S)
    observation_means: Tensor  # (*b, h, D)
    observation_covariances: Tensor  # (*b, h, D, D)


class MarginalForecast(NamedTuple):
    """Per-step predictive marginals of the observations (no cross-step or state covariances)."""

    observation_means: Tensor  # (*b, h, D)
    observation_variances: Tensor  # (*b, h, D): diagonals of the predictive covariances


class KalmanState(NamedTuple):
    """Predictive moments of the state at the next time, the streaming filter's carry."""

    mean: Tensor  # (*b, S)
    covariance: Tensor  # (*b, S, S)


class StepResult(NamedTuple):
    filtered: KalmanState  # moments of x_t given y_{1:t}
    predicted: KalmanState  # moments of x_{t+1} given y_{1:t}: feed to the next step
    log_likelihood: Tensor  # (*b,) log p(y_t | y_{<t})


class SampleResult(NamedTuple):
    states: Tensor  # (n_samples, *batch, T, S)
    observations: Tensor  # (n_samples, *batch, T, D)

"""Streaming change points as the reset signal of online learning: BOCPD over recent level shifts.

A level shift breaks an autoregression learned online in a way its own
recursion repairs slowly: the intercept is re-learned over the memory of the
forgetting factor (about ``1 / (1 - lam)`` points), and the seasonal lags
replay the jump one period later, so that one shift raises alarms for days.
This module decides, online, *whether and when* the level shifted, with the
run-length recursion of Bayesian online change-point detection (Adams &
MacKay 2007) restricted to the last ``horizon`` steps, and the detector then
absorbs the shift into the model (:meth:`tsgen.anomaly._online.OnlineAR.shift_level`).

Hypotheses at step ``t``: ``H_none`` (the model as it stands is right; its
one-step predictive density is the model's own) and, for each of the last
``horizon`` steps ``s``, ``H_s``: the level moved by an unknown ``delta`` at
``s``. For an autoregression ``y_t - mu = sum_i phi_i (y_{t-i} - mu) + e_t``,
a level moving from ``mu`` to ``mu + delta`` at ``s`` moves the prediction of
``y_t`` (``t >= s``) by ``a_{t,s} delta`` with

    a_{t,s} = 1 - sum_{i : t - i >= s} phi_i

(only the lags already inside the new regime cancel the shift), so under
``H_s`` the model's standardised one-step error ``u_t = e_t / sigma_t`` is
``a_{t,s} delta' + noise`` with ``delta' = delta / sigma``: a one-parameter
regression. With the conjugate prior ``delta' ~ N(0, prior_scale^2)`` its
posterior ``N(m_s, v_s)`` is updated in ``O(1)`` per hypothesis and step, and
the predictive density of ``u_t`` under ``H_s`` is the model's Student-t
with location ``a m_s`` and scale ``sqrt(1 + a^2 v_s)``; the posterior update
weighs each step by its Student-t (IRLS) weight ``(df + 1) / (df + r^2)`` so
that one outlier does not pass for a shift (an approximation: the Student-t
prior-posterior pair is not conjugate).

The run-length recursion with constant hazard ``H``:

    P(H_t, u_1:t)  = H       sum_{all} P(., u_1:t-1) p_prior(u_t)
    P(H_s, u_1:t)  = (1 - H) P(H_s, u_1:t-1) p_s(u_t)          s < t
    P(H_none, u_1:t) = (1 - H) P(H_none, u_1:t-1) p_model(u_t)

A hypothesis older than ``horizon`` steps leaves the set (its mass is
dropped: the shift, if any, was not confirmed in time). When one ``H_s``
whose regime has lasted at least ``min_run`` steps holds posterior mass
``>= threshold``, the shift is *confirmed*: :meth:`step` returns
``(steps since s, delta in the model's units)``, the caller moves the model's
level, and the posterior restarts on ``H_none``.
"""
from __future__ import annotations

import math

import numpy as np
from tsgen.anomaly._online import standardised_log_density


def _check(name: str, value, low: float, high: float, integer: bool = False) -> None:
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        kind = "an int" if integer else "a number"
        raise ValueError(f"`{name}` must be {kind} in [{low:g}, {high:g}]; got {value!r}.")


class LevelShiftBOCPD:
    """Run-length posterior over level shifts in the last ``horizon`` steps (module docstring).

    Parameters
    ----------
    hazard : float
        Prior probability of a shift at each step.
    horizon : int
        Steps a candidate change point is tracked before it is dropped.
    min_run : int
        Steps a new regime must last before it can be confirmed (a spike
        lasts one step and is not a shift).
    threshold : float
        Posterior probability of one change point that confirms it.
    prior_scale : float
        Prior standard deviation of a shift, in one-step standard deviations.
    df : float or None
        Degrees of freedom of the model's standardised predictive density
        (None: Gaussian).
    """

    def __init__(self, hazard: float = 1e-3, horizon: int = 20, min_run: int = 5, threshold: float = 0.9,
                 prior_scale: float = 10.0, df: float | None = 5.0):
        _check("hazard", hazard, 1e-12, 0.5)
        _check("horizon", horizon, 2, 10_000, integer=True)
        _check("min_run", min_run, 1, horizon, integer=True)
        _check("threshold", threshold, 0.5, 1.0)
        _check("prior_scale", prior_scale, 1e-6, 1e6)
        if df is not None:
            _check("df", df, 1e-6, 1e12)
        self.hazard, self.horizon, self.min_run, self.threshold = float(hazard), int(horizon), int(min_run), threshold
        self.prior_scale, self.df = float(prior_scale), df
        self.reset()

    def reset(self) -> "LevelShiftBOCPD":
        """All mass on ``H_none`` (no candidate change point)."""
        self.log_none = 0.0
        # slot j holds the candidate change point j + 1 steps old (-inf mass: no candidate there): its log
        # mass, and the posterior precision and precision-weighted mean of its shift (in one-step sds)
        self.log_mass = np.full(self.horizon - 1, -np.inf)
        self.precision = np.full(self.horizon - 1, 1.0 / self.prior_scale**2)
        self.weighted = np.zeros(self.horizon - 1)
        self.age = np.arange(1, self.horizon)
        return self

    def posterior(self) -> tuple[np.ndarray, float]:
        """``(p, p_none)``: ``p[k]`` the posterior probability that the level shifted ``k + 1`` steps ago (the
        current step is 1 step ago), ``p_none`` that it did not shift within ``horizon - 1`` steps."""
        norm = np.logaddexp(_logsumexp(self.log_mass), self.log_none)
        return np.exp(self.log_mass - norm), float(np.exp(self.log_none - norm))

    def changepoint_probability(self) -> float:
        """Posterior mass of a change in the last ``horizon`` steps."""
        total = _logsumexp(self.log_mass)
        return float(1.0 / (1.0 + math.exp(self.log_none - total))) if np.isfinite(total) else 0.0

    def step(self, u: float, phi: np.ndarray, lags: np.ndarray) -> tuple[int, float] | None:
        """Take the model's standardised one-step error ``u`` (NaN: missing) and its lag coefficients.

        ``phi[j]`` multiplies lag ``lags[j]``. Returns ``(age, delta)`` when a
        shift of ``delta`` one-step standard deviations, ``age`` steps ago
        (1: at this step), is confirmed, else None.
        """
        if np.isnan(u):
            return None
        # a_{t,s} = 1 - (sum of phi over the lags no longer than age - 1: those inside the new regime)
        inside = np.asarray(lags)[None, :] <= (self.age - 1)[:, None]
        a = 1.0 - inside @ np.asarray(phi, dtype=np.float64)
        log_1mh = math.log1p(-self.hazard)
        # every candidate ages by one step; a new one at this step takes H of all the mass
        total = np.logaddexp(_logsumexp(self.log_mass), self.log_none)
        self.log_mass[1:] = self.log_mass[:-1] + log_1mh
        self.log_mass[0] = total + math.log(self.hazard)
        self.precision[1:], self.precision[0] = self.precision[:-1], 1.0 / self.prior_scale**2
        self.weighted[1:], self.weighted[0] = self.weighted[:-1], 0.0
        self.log_none += log_1mh
        variance = 1.0 / self.precision
        scale = np.sqrt(1.0 + a * a * variance)
        residual = (u - a * self.weighted * variance) / scale
        self.log_mass += standardised_log_density(residual, self.df) - np.log(scale)
        self.log_none += float(standardised_log_density(u, self.df))
        weight = 1.0 if self.df is None else (self.df + 1.0) / (self.df + residual * residual)
        self.precision += weight * a * a
        self.weighted += weight * a * u
        # renormalise, so that the log masses stay finite over an endless stream
        norm = np.logaddexp(_logsumexp(self.log_mass), self.log_none)
        self.log_mass -= norm
        self.log_none -= norm
        best = int(np.argmax(self.log_mass))
        if best + 1 >= self.min_run and self.log_mass[best] >= math.log(self.threshold):
            found = best + 1, float(self.weighted[best] / self.precision[best])
            self.reset()
            return found
        return None

    def state(self) -> dict[str, np.ndarray]:
        return {"log_mass": self.log_mass, "precision": self.precision, "weighted": self.weighted,
                "log_none": np.array([self.log_none])}

    def restore(self, state: dict) -> "LevelShiftBOCPD":
        self.reset()
        for key in ("log_mass", "precision", "weighted"):
            value = np.asarray(state[key], dtype=np.float64)
            if value.shape != (self.horizon - 1,):
                raise ValueError(f"the saved change-point state does not match `horizon`={self.horizon}.")
            setattr(self, key, value.copy())
        self.log_none = float(np.asarray(state["log_none"])[0])
        return self


def _logsumexp(values: np.ndarray) -> float:
    """log(sum(exp(values))) of a short vector; -inf when every entry is -inf (scipy's is slow per call)."""
    top = values.max()
    return float(top + math.log(np.exp(values - top).sum())) if np.isfinite(top) else -np.inf

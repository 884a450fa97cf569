"""Online re-estimation of an autoregression by exponentially weighted recursive least squares (EW-RLS).

The one-step predictive model of a stream is the regression

    y_t = theta' x_t + e_t,    x_t = (1, y_{t-1}, ..., y_{t-p}, y_{t-m}, y_{t-m-1}),

(the seasonal lags only with a period ``m``), the AR(infinity) form of an
ARIMA or linear state-space model truncated at ``p`` lags. With forgetting
factor ``lam`` the estimate minimises ``sum_s lam^(t-s) (y_s - theta' x_s)^2``
and is updated in ``O(k^2)`` per point (``k = len(x_t)``):

    K = P x / (lam + x' P x),  theta += K (y - theta' x),  P = (P - K x' P) / lam.

With ``lam = 1`` and a diffuse start (``P_0 = delta I``, ``delta`` large) this
is ordinary least squares on everything seen, to ``O(1/delta)``. The scale of
the one-step errors is tracked the same way, ``v_t = lam v_{t-1} + (1 - lam) e_t^2``
(also from ``1 / (1 - lam)``-point memory), and the predictive density is a
Student-t with ``df`` degrees of freedom and that scale (``df=None``: Gaussian),
so that single outliers do not dominate. A missing ``y_t`` is not scored and
not learned from; its lag is replaced by its prediction.

The coefficients are learned by plain (unweighted) RLS: Student-t weights
``(df + 1) / (df + r^2)`` in the recursion were tried and lost on the NAB dev
subset's tuning files (52.7 against 58.3), because a seasonal edge not yet
learned is a large error that the weights then refuse to learn from.

A level shift is absorbed by :meth:`OnlineAR.shift_level` (signalled by :class:`tsgen.anomaly._reset.LevelShiftBOCPD` when the learner
has a ``reset`` monitor): the level moves, and the lags already inside the
new regime are re-expressed around it, so neither the intercept nor the
seasonal lags replay the old level.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from scipy import special

#: the diffuse start of RLS: P_0 = DIFFUSE * I on the standardised stream
DIFFUSE = 1e6
#: the smallest one-step variance on the standardised stream: a flat stream keeps a finite density
VARIANCE_FLOOR = 1e-8


@functools.lru_cache(maxsize=64)
def _t_log_constant(df: float) -> float:
    return float(special.gammaln((df + 1) / 2) - special.gammaln(df / 2) - 0.5 * math.log(df * math.pi))


def standardised_log_density(residual, df: float | None):
    """``log f(r)`` of the standard Student-t with ``df`` degrees of freedom (None: standard normal), any shape.

    A float gives a float: the streaming learners call this once per point, where numpy's and scipy's
    per-call overhead was most of their cost.
    """
    if isinstance(residual, float):
        if df is None:
            return -0.5 * residual * residual - 0.5 * math.log(2 * math.pi)
        return _t_log_constant(df) - (df + 1) / 2 * math.log1p(residual * residual / df)
    r = np.asarray(residual, dtype=np.float64)
    if df is None:
        return -0.5 * r**2 - 0.5 * math.log(2 * math.pi)
    return _t_log_constant(df) - (df + 1) / 2 * np.log1p(r**2 / df)


def robust_location_scale(observed: np.ndarray) -> tuple[float, float]:
    """Median and normal-consistent MAD of a stream's observed values (the std, or 1, where the MAD is 0): the
    streaming learners work on values standardised by them, so their diffuse starts and floors are scale-free."""
    centre = float(np.median(observed))
    return centre, float(np.median(np.abs(observed - centre))) * 1.4826 or float(np.std(observed)) or 1.0


class OnlineAR:
    """EW-RLS autoregression with a Student-t one-step predictive density (module docstring).

    Parameters
    ----------
    order : int
        Number of ordinary lags ``p`` (>= 1).
    seasonal_period : int, optional
        Adds the lags ``m`` and ``m + 1``.
    forgetting : float
        ``lam`` in (0, 1]: the memory is about ``1 / (1 - lam)`` points.
    df : float or None
        Degrees of freedom of the predictive Student-t (None: Gaussian).
    """

    def __init__(self, order: int = 3, seasonal_period: int | None = None, forgetting: float = 0.999,
                 df: float | None = 5.0):
        if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 1:
            raise ValueError(f"`order` must be a positive int; got {order!r}.")
        if seasonal_period is not None and (isinstance(seasonal_period, bool) or not isinstance(
                seasonal_period, (int, np.integer)) or seasonal_period <= order):
            raise ValueError(f"`seasonal_period` must be None or an int above `order`; got {seasonal_period!r}.")
        if isinstance(forgetting, bool) or not isinstance(forgetting, (int, float)) or not 0 < forgetting <= 1:
            raise ValueError(f"`forgetting` must be in (0, 1]; got {forgetting!r}.")
        if df is not None and (isinstance(df, bool) or not isinstance(df, (int, float)) or df <= 0):
            raise ValueError(f"`df` must be None or a positive number; got {df!r}.")
        self.order, self.seasonal_period, self.forgetting, self.df = int(order), seasonal_period, forgetting, df
        #: an optional LevelShiftBOCPD: its confirmed shifts are absorbed by shift_level
        self.reset = None
        #: the level shift absorbed at the last step (the stream's units; 0: none)
        self.last_shift = 0.0
        lags = list(range(1, self.order + 1))
        if seasonal_period:
            lags += [int(seasonal_period), int(seasonal_period) + 1]
        self.lags = np.array(lags)
        self.memory = int(self.lags.max())

    @property
    def n_features(self) -> int:
        return 1 + len(self.lags)

    def start(self, values: np.ndarray) -> "OnlineAR":
        """Learn from ``values`` from a diffuse start (also the state a later :meth:`step` continues)."""
        y = np.asarray(values, dtype=np.float64).ravel()
        observed = y[~np.isnan(y)]
        if len(observed) < self.memory + 2:
            raise ValueError(f"the stream needs at least {self.memory + 2} observed values to start; "
                             f"got {len(observed)}.")
        self.centre, self.spread = robust_location_scale(observed)
        self.theta = np.zeros(self.n_features)
        self.P = np.eye(self.n_features) * DIFFUSE
        self.variance = 1.0
        self.seen = 0
        self.buffer = np.zeros(self.memory)  # standardised lags, most recent last
        # the first `memory` values only fill the lags: a regression on lags that are not data yet (the
        # centre) would teach the seasonal coefficients a relation the stream never had
        self.buffer[:] = np.nan_to_num((y[: self.memory] - self.centre) / self.spread)
        errors = [self._learn((v - self.centre) / self.spread) for v in y[self.memory:]]
        # the first errors come from a start that knew nothing: the scale restarts from the second half's
        late = np.array(errors[len(errors) // 2:], dtype=np.float64)
        late = late[~np.isnan(late)]
        self.variance = max(float(np.mean(late**2)), VARIANCE_FLOOR) if len(late) else 1.0
        return self

    def _features(self) -> np.ndarray:
        x = np.empty(self.n_features)
        x[0] = 1.0
        x[1:] = self.buffer[-self.lags]
        return x

    def step(self, value: float) -> float:
        """Score ``value`` by its one-step predictive log-density, then learn from it (NaN: not scored)."""
        z = (value - self.centre) / self.spread
        x = self._features()
        scale = math.sqrt(max(self.variance, VARIANCE_FLOOR))
        u = (z - self.theta @ x) / scale
        log_density = float("nan") if np.isnan(z) else float(
            standardised_log_density(u, self.df) - math.log(scale * self.spread))
        phi = self.theta[1:].copy()  # the coefficients that made the prediction
        self._learn(z)
        self.last_shift = 0.0
        if self.reset is not None:
            found = self.reset.step(u, phi, self.lags)
            if found is not None:
                self.last_shift = found[1] * scale * self.spread
                self.shift_level(found[0], self.last_shift)
        return log_density

    def shift_level(self, age: int, delta: float) -> None:
        """Absorb a level shift of ``delta`` (the stream's units) that started ``age`` steps ago (1: the last step).

        The level moves by ``delta`` and the last ``age`` lags, already at the
        new level, are re-expressed around it: the coefficients, the scale and
        the older lags stay, so the model predicts the old dynamics around the
        new level from the next step on, seasonal lags included.
        """
        if isinstance(age, bool) or not isinstance(age, (int, np.integer)) or not 1 <= age:
            raise ValueError(f"`age` must be a positive int; got {age!r}.")
        if not np.isfinite(delta):
            raise ValueError(f"`delta` must be a finite number; got {delta!r}.")
        dz = delta / self.spread
        self.centre += delta
        self.buffer[len(self.buffer) - min(age, len(self.buffer)):] -= dz

    def _learn(self, z: float) -> float:
        """One RLS step on a standardised value; returns its one-step error (NaN when missing)."""
        x = self._features()
        mean = float(self.theta @ x)
        if np.isnan(z):
            error, z = float("nan"), mean
        else:
            error = z - mean
            lam = self.forgetting
            Px = self.P @ x
            gain = Px / (lam + x @ Px)
            self.theta = self.theta + gain * error
            P = (self.P - np.outer(gain, Px)) / lam
            # kept symmetric: the rounding of the plain update otherwise builds up under forgetting until P has
            # a negative eigenvalue and the coefficients diverge (seen after ~3000 steps at lam = 0.995)
            self.P = 0.5 * (P + P.T)
            # the scale: a running mean of squared errors, exponentially weighted once the memory is full;
            # an error beyond 10 scales enters as 10 scales, so that one anomaly does not mask the next
            rate = max(1.0 - lam, 1.0 / (self.seen + 1))
            self.variance += rate * (min(error * error, 100.0 * self.variance) - self.variance)
            self.seen += 1
        self.buffer[:-1] = self.buffer[1:]
        self.buffer[-1] = z
        return error

    def in_sample_log_density(self, values) -> np.ndarray:
        """One-step log-densities of ``values`` under the current coefficients and scale (no learning).

        The fitted model's view of its own training data; NaN where missing and
        for the first ``memory`` values (their lags are not all data), as in
        :meth:`start`, which learns from the later ones only.
        """
        z = (np.asarray(values, dtype=np.float64) - self.centre) / self.spread
        padded = np.concatenate([np.zeros(self.memory), np.where(np.isnan(z), 0.0, z)])
        n = len(z)
        design = np.ones((n, self.n_features))
        for j, lag in enumerate(self.lags):
            design[:, 1 + j] = padded[self.memory - lag : self.memory - lag + n]
        scale = math.sqrt(max(self.variance, VARIANCE_FLOOR))
        residual = (z - design @ self.theta) / scale
        density = standardised_log_density(residual, self.df) - math.log(scale) - math.log(self.spread)
        density[: self.memory] = np.nan
        return np.where(np.isnan(z), np.nan, density)

    def state(self) -> dict[str, np.ndarray]:
        return {"theta": self.theta, "P": self.P, "buffer": self.buffer,
                "scalars": np.array([self.variance, self.centre, self.spread, self.seen], dtype=np.float64)}

    def restore(self, state: dict) -> "OnlineAR":
        # copies: the learner updates its buffer in place, and a state may share memory with another learner's
        self.theta = np.array(state["theta"], dtype=np.float64)
        self.P = np.array(state["P"], dtype=np.float64)
        self.buffer = np.array(state["buffer"], dtype=np.float64)
        variance, centre, spread, seen = (float(v) for v in np.asarray(state["scalars"]))
        self.variance, self.centre, self.spread, self.seen = variance, centre, spread, int(seen)
        if self.theta.shape != (self.n_features,) or self.P.shape != (self.n_features,) * 2:
            raise ValueError("the saved online state does not match the detector's lags.")
        return self

"""The order of a seasonal ARIMA model with regression effects, and its parameter layout.

Model (statsmodels' ``ARIMA`` convention: trend terms are regressors)::

    y_t = x_t' beta + eta_t,
    phi(L) Phi(L^s) (1 - L)^d (1 - L^s)^D eta_t = theta(L) Theta(L^s) eps_t,   eps_t ~ N(0, sigma2)

with ``phi(L) = 1 - sum_i phi_i L^i``, ``theta(L) = 1 + sum_j theta_j L^j`` and
the same for the seasonal polynomials. The regressors ``x_t`` are the trend
terms (``1`` for "c", ``t = 1, 2, ...`` for "t") followed by the user's ``X``.
Parameters are stored in statsmodels' order: trend, exog, ar, ma, seasonal ar,
seasonal ma, sigma2.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import comb

import numpy as np

TRENDS = {None: (), "n": (), "c": (0,), "t": (1,), "ct": (0, 1)}


def _non_negative_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"`{name}` must hold non-negative integers; got {value!r}.")
    return int(value)


@dataclass(frozen=True)
class ArimaSpec:
    """One (p, d, q)(P, D, Q, s) order with its trend and number of exogenous regressors.

    Every instance is a model the kernels can run: the constructor checks
    what :meth:`from_args` checks (the automatic search builds specs directly,
    and a seasonal order with period 0 once reached the compiled filter and
    wrote past its arrays). ``s`` is 0 exactly when P = D = Q = 0 and the
    trend ``"n"`` is stored as None, so equal models compare equal.
    """

    p: int
    d: int
    q: int
    P: int = 0
    D: int = 0
    Q: int = 0
    s: int = 0
    trend: str | None = None
    n_exog: int = 0

    def __post_init__(self):
        p, d, q = (_non_negative_int(getattr(self, k), "order") for k in "pdq")
        P, D, Q, s = (_non_negative_int(getattr(self, k), "seasonal_order") for k in "PDQs")
        if (P or D or Q) and s < 2:
            raise ValueError(
                f"`seasonal_order` needs a period s >= 2 when P, D or Q > 0; got {(P, D, Q, s)!r}."
            )
        if not (P or D or Q):
            s = 0
        if self.trend not in TRENDS:
            raise ValueError(f"`trend` must be None, 'n', 'c', 't' or 'ct'; got {self.trend!r}.")
        trend = None if self.trend == "n" else self.trend
        lowest = min(TRENDS[trend], default=None)
        if lowest is not None and lowest < d + D:
            raise ValueError(
                f"`trend`={self.trend!r} has a term of degree {lowest}, which differencing of total "
                f"order d + D = {d + D} removes; use trend='t' (drift) for d + D = 1 or no trend."
            )
        n_exog = _non_negative_int(self.n_exog, "n_exog")
        for name, value in zip(("p", "d", "q", "P", "D", "Q", "s", "trend", "n_exog"),
                               (p, d, q, P, D, Q, s, trend, n_exog)):
            object.__setattr__(self, name, value)

    @classmethod
    def from_args(cls, order, seasonal_order, trend, n_exog: int = 0) -> "ArimaSpec":
        """Validate the estimator's arguments (errors name the argument)."""
        if not isinstance(order, (tuple, list)) or len(order) != 3:
            raise ValueError(f"`order` must be a tuple (p, d, q) or 'auto'; got {order!r}.")
        if not isinstance(seasonal_order, (tuple, list)) or len(seasonal_order) != 4:
            raise ValueError(f"`seasonal_order` must be a tuple (P, D, Q, s); got {seasonal_order!r}.")
        return cls(*order, *seasonal_order, trend, n_exog)

    def with_order(self, p, d, q, P, D, Q) -> "ArimaSpec":
        return ArimaSpec(p, d, q, P, D, Q, self.s if (P or D or Q) else 0, self.trend, self.n_exog)

    def min_observations(self) -> int:
        """Observations after differencing needed to identify the model: more than its
        longest AR or MA lag (a lag never seen in the data has no information) and
        more than its number of parameters."""
        return max(self.ar_order, self.ma_order, self.n_params) + 1

    def check_identifiable(self, n_observed: int, which: str = "the series") -> None:
        """Raise a ValueError naming the argument at fault when ``n_observed``
        observations after differencing cannot identify this model."""
        if n_observed >= self.min_observations():
            return
        seasonal_lag = self.s * max(self.P, self.Q)
        if seasonal_lag >= n_observed:
            name, value = "seasonal_order", self.seasonal_order
        else:
            name, value = "order", self.order
        raise ValueError(
            f"`{name}`={value!r} cannot be estimated from {which}: the model (order={self.order}, "
            f"seasonal_order={self.seasonal_order}) has {self.n_params} parameters and lags up to "
            f"{max(self.ar_order, self.ma_order)}, so it needs at least {self.min_observations()} "
            f"observed values after differencing (d + s*D = {self.n_integration} consumed); got "
            f"{n_observed}. Use lower orders or a longer series."
        )

    # ------------------------------------------------------------- layout
    @property
    def trend_degrees(self) -> tuple[int, ...]:
        return TRENDS[self.trend]

    @property
    def n_regressors(self) -> int:
        return len(self.trend_degrees) + self.n_exog

    @property
    def ar_order(self) -> int:
        """Degree of the full AR polynomial phi(L) Phi(L^s)."""
        return self.p + self.s * self.P

    @property
    def ma_order(self) -> int:
        return self.q + self.s * self.Q

    @property
    def n_integration(self) -> int:
        """Number of observations the differencing consumes (d + s D)."""
        return self.d + self.s * self.D

    @property
    def arma_state_dim(self) -> int:
        return max(self.ar_order, self.ma_order + 1)

    @property
    def state_dim(self) -> int:
        return self.n_integration + self.arma_state_dim

    @property
    def blocks(self) -> dict[str, slice]:
        """Slices of the parameter vector, statsmodels' order."""
        sizes = [("beta", self.n_regressors), ("ar", self.p), ("ma", self.q),
                 ("sar", self.P), ("sma", self.Q), ("sigma2", 1)]
        out, start = {}, 0
        for name, size in sizes:
            out[name] = slice(start, start + size)
            start += size
        return out

    @property
    def n_params(self) -> int:
        return self.n_regressors + self.p + self.q + self.P + self.Q + 1

    @property
    def param_names(self) -> list[str]:
        names = {0: "const", 1: "drift"}
        out = [names[k] for k in self.trend_degrees]
        out += [f"x{j + 1}" for j in range(self.n_exog)]
        out += [f"ar.L{i}" for i in range(1, self.p + 1)]
        out += [f"ma.L{i}" for i in range(1, self.q + 1)]
        out += [f"ar.S.L{self.s * i}" for i in range(1, self.P + 1)]
        out += [f"ma.S.L{self.s * i}" for i in range(1, self.Q + 1)]
        return out + ["sigma2"]

    @property
    def order(self) -> tuple[int, int, int]:
        return (self.p, self.d, self.q)

    @property
    def seasonal_order(self) -> tuple[int, int, int, int]:
        return (self.P, self.D, self.Q, self.s)

    def integration_coefficients(self) -> np.ndarray:
        """``delta`` with ``(1 - L)^d (1 - L^s)^D = 1 - sum_i delta_i L^i`` (length d + sD)."""
        poly = np.zeros(self.n_integration + 1)
        for k in range(self.D + 1):
            for j in range(self.d + 1):
                poly[j + self.s * k] += comb(self.d, j) * (-1) ** j * comb(self.D, k) * (-1) ** k
        return -poly[1:]

    def difference(self, values: np.ndarray) -> np.ndarray:
        """Apply ``(1 - L)^d (1 - L^s)^D`` along the last axis (drops d + sD leading values)."""
        out = values
        for _ in range(self.d):
            out = out[..., 1:] - out[..., :-1]
        for _ in range(self.D):
            out = out[..., self.s:] - out[..., :-self.s]
        return out

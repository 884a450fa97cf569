r"""The Theta method (Assimakopoulos & Nikolopoulos 2000, the M3 winner) as statsmodels' ``ThetaModel``.

For each series (Hyndman & Billah 2003: simple exponential smoothing with drift):

1. If ``deseasonalize`` and the series has a seasonal period ``m > 1`` that
   passes statsmodels' test (``n r_m^2 / sum_{k<m} r_k^2 > 2.7055``, the 90%
   point of chi2(1), with ``r`` the autocorrelations), divide by the
   seasonal factors of a classical multiplicative decomposition (centred
   moving average, period averages normalised to mean 1); additive when
   the series is not positive or a factor is not positive.
2. ``b0``: the OLS slope of the (adjusted) series on ``t = 0 .. T-1``.
3. ``alpha``: simple exponential smoothing from the known level ``x_0``,
   least squares over ``[0, 1]``.
4. Forecast ``x_T(h) = ell_T + (1 - 1/theta) b0 (h - 1 + 1/alpha - (1 - alpha)^T / alpha)``,
   reseasonalised with the factor of step ``T + h - 1``.

Uncertainty: ``sigma^2`` is the innovation variance of an ARIMA(0,1,1) with
drift fitted to the raw series by exact maximum likelihood (statsmodels'
choice, here through :mod:`tsgen.models._arima_fit`); the ``h``-step
predictive is ``N(forecast, sigma^2 (1 + (h - 1) alpha^2))``, the variance
of SES with drift, i.e. of that ARIMA(0,1,1) with ``theta_1 = alpha - 1``.
(statsmodels' ``prediction_intervals`` writes ``1 + (h-1)(1 + (alpha-1)^2)``,
which is not that model's variance; the two agree at ``alpha = 1``.) Sample
paths carry the same covariance: ``e_h + alpha (e_1 + ... + e_{h-1})``.
``log_likelihood`` scores each step by the method's own one-step forecast
from the steps before it, ``N(yhat_t, sigma^2)`` (the first step is not
scored); on another series the seasonal factors are applied by position.

A series of magnitude past 1e100 (or below 1e-100) is fitted in units of a
power of two (:mod:`._units`; the seasonality test's sums of squares
underflowed at 1e-200), with ``sigma2_`` reported in the data's units (inf
past about 1e154).

Missing values are not supported (the decomposition and the least squares
need every step): ``fit`` and ``log_likelihood`` refuse NaN. Many series
are fitted together: the SES parameter by a golden-section search run on
all series at once; the decomposition and test per series.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from tsgen.base import BaseForecaster
from tsgen.data import SeriesBatch
from tsgen.models._units import check_units, in_units, paired_units, units_of
from tsgen.models.baselines import resolve_period

_LOG_2PI = math.log(2.0 * math.pi)
_SEASONAL_CRITICAL = 2.705543454095404  # chi2(1) at 90%, statsmodels' threshold
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def _acf(x: np.ndarray, nlags: int) -> np.ndarray:
    x = x - x.mean()
    denom = float(x @ x)
    return np.array([float(x[: len(x) - k] @ x[k:]) / denom for k in range(nlags + 1)])


def _is_seasonal(x: np.ndarray, period: int) -> bool:
    if np.ptp(x) == 0:  # no variance, no autocorrelation: statsmodels' acf is NaN there and its test says no season
        return False
    rho = _acf(x, period)
    return bool(len(x) * rho[-1] ** 2 / np.sum(rho[:-1] ** 2) > _SEASONAL_CRITICAL)


def _decompose(x: np.ndarray, period: int, multiplicative: bool) -> np.ndarray:
    """statsmodels' ``seasonal_decompose`` seasonal factors for one season ``(period,)``."""
    if period % 2 == 0:  # 2 x m centred moving average
        weights = np.r_[0.5, np.ones(period - 1), 0.5] / period
    else:
        weights = np.ones(period) / period
    trend = np.convolve(x, weights, mode="valid")
    half = len(weights) // 2
    full = np.full(len(x), np.nan)
    full[half : half + len(trend)] = trend
    detrended = x / full if multiplicative else x - full
    averages = np.array([np.nanmean(detrended[i::period]) for i in range(period)])
    return averages / averages.mean() if multiplicative else averages - averages.mean()


def _ses_sse(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Sum of squared one-step errors of SES from the known level ``x_0``, for each row and alpha column."""
    level = x[:, :1].expand_as(alpha).clone()
    sse = torch.zeros_like(alpha)
    for t in range(1, x.shape[1]):
        error = x[:, t : t + 1] - level
        sse = sse + error**2
        level = level + alpha * error
    return sse


def _fit_alpha(x: torch.Tensor, iterations: int = 60) -> torch.Tensor:
    """The SES ``alpha`` in [0, 1] minimising the squared errors, per row: a grid, then golden sections."""
    grid = torch.linspace(0.0, 1.0, 21, dtype=x.dtype).expand(x.shape[0], -1)
    best = _ses_sse(x, grid).argmin(1)
    low = grid.gather(1, (best - 1).clamp(min=0)[:, None])
    high = grid.gather(1, (best + 1).clamp(max=20)[:, None])
    for _ in range(iterations):
        a = high - _GOLDEN * (high - low)
        b = low + _GOLDEN * (high - low)
        fa, fb = _ses_sse(x, torch.cat([a, b], 1)).unbind(1)
        left = (fa <= fb)[:, None]
        high = torch.where(left, b, high)
        low = torch.where(left, low, a)
    return ((low + high) / 2)[:, 0]


def _ses_levels(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Levels ``ell_t`` after each step ``(rows, T)`` (``ell_0 = x_0``)."""
    levels = torch.empty_like(x)
    level = x[:, 0].clone()
    levels[:, 0] = level
    for t in range(1, x.shape[1]):
        level = level + alpha * (x[:, t] - level)
        levels[:, t] = level
    return levels


class Theta(BaseForecaster):
    """Theta method: simple exponential smoothing with drift, seasonally adjusted (statsmodels' ``ThetaModel``).

    Parameters
    ----------
    theta : float
        The theta parameter (>= 1); 2 is the classical method (half the
        OLS slope added to SES).
    period : int or None
        Season length; None infers it from ``y``'s index frequency as
        :class:`tsgen.ARIMA` does (1: no season).
    deseasonalize : bool
        Whether to adjust by a classical decomposition.
    use_test : bool
        Adjust only if the seasonality test rejects (statsmodels' default).
    method : {"auto", "multiplicative", "additive"}
        Decomposition; "auto" is multiplicative for positive series.
    random_state : int or None
        Seed of ``sample``.

    Attributes
    ----------
    b0_ : float or list of float
        The OLS slope of the (adjusted) series on ``t = 0 .. T-1`` (a list
        per series when ``fit`` got a list; so are the attributes below).
    alpha_ : float or list of float
        The SES smoothing parameter.
    sigma2_ : float or list of float
        The innovation variance.
    seasonal_ : list of float or None (or a list of them)
        Factors of one season, None when not adjusted.
    method_ : str or list of str
        The decomposition used, ``"multiplicative"`` or ``"additive"``.

    Notes
    -----
    See :mod:`tsgen.models.theta` for the equations, the uncertainty model
    and missing values.
    """

    _fits_series_independently = True

    def __init__(self, theta=2.0, period=None, deseasonalize=True, use_test=True, method="auto",
                 random_state=None):
        self.theta = theta
        self.period = period
        self.deseasonalize = deseasonalize
        self.use_test = use_test
        self.method = method
        self.random_state = random_state

    @classmethod
    def get_test_params(cls):
        return [{"random_state": 0}, {"theta": 3.0, "deseasonalize": False, "random_state": 0}]

    def _min_length(self) -> int:
        return 4

    # --------------------------------------------------------------- fitting
    def _check(self, data: SeriesBatch, name: str = "y") -> None:
        if data.n_dims != 1:
            raise ValueError(f"`{name}` must be univariate for Theta; got {data.n_dims} variables.")
        missing = [i for i in range(data.n_series) if not bool(data.mask[i, : int(data.lengths[i])].all())]
        if missing:
            raise ValueError(
                f"`{name}` series {missing[0]} has missing values (NaN): Theta needs every step observed "
                "(fill or drop them first, or use ETS, which handles gaps)."
            )

    def _fit(self, data, covariates):
        if isinstance(self.theta, bool) or not isinstance(self.theta, (int, float)) or not self.theta >= 1:
            raise ValueError(f"`theta` must be a number >= 1; got {self.theta!r}.")
        if self.method not in ("auto", "multiplicative", "additive", "mul", "add"):
            raise ValueError(f"`method` must be 'auto', 'multiplicative' or 'additive'; got {self.method!r}.")
        self._check(data)
        period = resolve_period(self.period, data)
        # fitted in units of a power of two where squares of the data would overflow or underflow (_units)
        units = units_of(data)
        data = in_units(data, units)
        values, lengths = data.values[..., 0], data.lengths
        seasonal, methods = [], []
        adjusted = values.clone()
        for i in range(data.n_series):  # the test and decomposition per series (ragged, cheap)
            x = values[i, : int(lengths[i])].numpy()
            multiplicative = self.method in ("multiplicative", "mul") or (self.method == "auto" and x.min() > 0)
            factors = None
            if self.deseasonalize and period > 1 and len(x) >= 2 * period and (
                    not self.use_test or _is_seasonal(x, period)):
                factors = _decompose(x, period, multiplicative)
                if multiplicative and factors.min() <= 0:
                    multiplicative, factors = False, _decompose(x, period, False)
                tiled = np.resize(factors, len(x))
                adjusted[i, : len(x)] = torch.from_numpy(x / tiled if multiplicative else x - tiled)
            seasonal.append(factors)
            methods.append("multiplicative" if multiplicative else "additive")
        self._seasonal, self._methods, self.period_ = seasonal, methods, period
        self._params = self._estimate(adjusted, lengths)
        self._sigma2 = self._innovation_variance(values)
        self._units = units
        self._set_attributes(data.is_collection)

    def _estimate(self, adjusted: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``(b0, alpha, one-step level)`` per series, in groups of equal length (one batch each)."""
        out = torch.zeros(adjusted.shape[0], 3, dtype=adjusted.dtype)
        for n in lengths.unique().tolist():
            rows = (lengths == n).nonzero().flatten()
            x = adjusted[rows, :n]
            t = torch.arange(n, dtype=x.dtype)
            slope = ((t - t.mean()) * (x - x.mean(1, keepdim=True))).sum(1) / ((t - t.mean()) ** 2).sum()
            alpha = _fit_alpha(x)
            out[rows] = torch.stack([slope, alpha, _ses_levels(x, alpha)[:, -1]], 1)
        return out

    @staticmethod
    def _innovation_variance(values: torch.Tensor) -> torch.Tensor:
        from tsgen.models._arima_fit import fit_spec
        from tsgen.models._arima_spec import ArimaSpec

        # statsmodels' ThetaModel takes sigma^2 from SARIMAX((0, 1, 1), trend="c") on the raw series: an
        # ARIMA(0,1,1) with drift, which is tsgen's ARIMA (0, 1, 1) with trend "t" (statsmodels' ARIMA convention)
        spec = ArimaSpec.from_args((0, 1, 1), (0, 0, 0, 0), "t")
        return fit_spec(spec, values, None).params[:, -1].detach()

    def _set_attributes(self, collection: bool):
        """The public ``*_`` attributes in the user's units (``sigma2_`` past about 1e154 overflows to inf)."""
        def out(values):
            values = list(values)
            return values if collection else values[0]

        units = self._units.numpy()
        b0, alpha, _ = self._params.T.numpy()
        self._collection = collection
        self.b0_ = out((b0 * units).tolist())
        self.alpha_ = out(alpha.tolist())
        with np.errstate(over="ignore"):  # inf past about 1e154, as documented
            self.sigma2_ = out((self._sigma2.numpy() * units**2).tolist())
        self.seasonal_ = out(None if s is None else (s if m == "multiplicative" else s * u).tolist()
                             for s, m, u in zip(self._seasonal, self._methods, units))
        self.method_ = out(self._methods)

    # ------------------------------------------------------------ machinery
    def _paired(self, n_series: int) -> np.ndarray:
        n_fitted = self._params.shape[0]
        if n_fitted == 1:
            return np.zeros(n_series, int)
        if n_fitted == n_series:
            return np.arange(n_series)
        raise ValueError(
            f"`y` has {n_series} series but the model was fitted on {n_fitted}; pass {n_fitted} series "
            "(one per fitted model) or refit."
        )

    def _factors(self, k: int, steps: np.ndarray) -> np.ndarray:
        """Seasonal factors of fitted series ``k`` at the given step positions (1 or 0 when not adjusted)."""
        factors = self._seasonal[k]
        multiplicative = self._methods[k] == "multiplicative"
        if factors is None:
            return np.full(steps.shape, 1.0 if multiplicative else 0.0)
        return np.asarray(factors)[steps % len(factors)]

    def _apply(self, k: int, x: np.ndarray, steps: np.ndarray) -> np.ndarray:
        factors = self._factors(k, steps)
        return x * factors if self._methods[k] == "multiplicative" else x + factors

    def _remove(self, k: int, y: np.ndarray, steps: np.ndarray) -> np.ndarray:
        factors = self._factors(k, steps)
        return y / factors if self._methods[k] == "multiplicative" else y - factors

    def _trend_weight(self) -> float:
        return (self.theta - 1.0) / self.theta

    def _conditioned(self, history: SeriesBatch, horizon: int):
        """Point forecasts ``(series, horizon)`` in the fitted units, ``alpha``, the fitted series and the units
        per series, from each history's last level."""
        self._check(history)
        pairs = self._paired(history.n_series)
        continuing = history is self.history_  # its last levels were stored by the fit
        units = paired_units(self._units, history.n_series)
        history = in_units(history, units)
        points = np.zeros((history.n_series, horizon))
        alphas = np.zeros(history.n_series)
        h = np.arange(horizon, dtype=float)
        for i, k in enumerate(pairs):  # one short SES pass per series (levels on its own adjusted data)
            n = int(history.lengths[i])
            y = history.values[i, :n, 0].numpy()
            b0, alpha, level = self._params[k].tolist()
            if not continuing:
                x = self._remove(int(k), y, np.arange(n))
                level = float(_ses_levels(torch.from_numpy(x)[None], torch.tensor(alpha, dtype=torch.float64))[0, -1])
            trend = h + (1.0 / alpha - (1.0 - alpha) ** n / alpha if alpha > 0 else 0.0)
            x_future = level + self._trend_weight() * b0 * trend
            points[i] = self._apply(int(k), x_future, n + np.arange(horizon))
            alphas[i] = alpha
        return points, alphas, pairs, units.numpy()

    # ---------------------------------------------------------------- hooks
    def _predict_gaussian(self, horizon, history, covariates):
        points, alphas, pairs, units = self._conditioned(history, horizon)
        sigma2 = self._sigma2.numpy()[pairs]
        var = sigma2[:, None] * (1.0 + np.arange(horizon)[None, :] * alphas[:, None] ** 2)
        units = units[:, None, None]
        return torch.from_numpy(points[..., None] * units), torch.from_numpy(np.sqrt(var)[..., None] * units)

    def _sample(self, horizon, n_samples, history, covariates, generator):
        points, alphas, pairs, units = self._conditioned(history, horizon)
        sigma = torch.from_numpy(np.sqrt(self._sigma2.numpy()[pairs]))[:, None, None]
        shocks = sigma * torch.randn(history.n_series, n_samples, horizon, generator=generator, dtype=torch.float64)
        # SES with drift: e_h + alpha (e_1 + ... + e_{h-1}), the ARIMA(0,1,1) covariance
        earlier = torch.cumsum(shocks, 2) - shocks
        paths = torch.from_numpy(points)[:, None, :] + shocks + torch.from_numpy(alphas)[:, None, None] * earlier
        return paths[..., None] * torch.from_numpy(units)[:, None, None, None]

    def _log_likelihood(self, data, covariates, **options):
        if options:
            raise TypeError(f"Theta.log_likelihood got unexpected option(s) {sorted(options)}.")
        self._check(data)
        pairs = self._paired(data.n_series)
        units = paired_units(self._units, data.n_series)
        data = in_units(data, units)
        out = torch.zeros(data.values.shape[:2], dtype=torch.float64)
        for i, k in enumerate(pairs):
            n = int(data.lengths[i])
            y = data.values[i, :n, 0].numpy()
            steps = np.arange(n)
            b0, alpha, _ = self._params[k].tolist()
            x = self._remove(int(k), y, steps)
            levels = _ses_levels(torch.from_numpy(x)[None], torch.tensor(alpha, dtype=torch.float64))[0].numpy()
            # the method's one-step forecast of step t from steps 0..t-1 (t of them)
            seen = steps[1:].astype(float)
            drift = 1.0 / alpha - (1.0 - alpha) ** seen / alpha if alpha > 0 else np.zeros_like(seen)
            predicted = self._apply(int(k), levels[:-1] + self._trend_weight() * b0 * drift, steps[1:])
            sigma2 = float(self._sigma2[k])
            dens = -0.5 * (_LOG_2PI + math.log(sigma2) + (y[1:] - predicted) ** 2 / sigma2)
            out[i, 0] = torch.nan
            out[i, 1:n] = torch.from_numpy(dens)
        return out - torch.log(units)[:, None]  # a density of y / u is u times the density of y

    # ------------------------------------------------------------ save/load
    def _fitted_state(self):
        check_is_fitted(self)
        meta = {"seasonal": [None if s is None else [float(v) for v in s] for s in self._seasonal],
                "methods": self._methods, "period": self.period_, "collection": self._collection}
        return meta, {"params": self._params, "sigma2": self._sigma2, "units": self._units}

    def _load_fitted_state(self, meta, tensors):
        params, sigma2 = tensors["params"], tensors["sigma2"]
        n = len(meta["methods"])
        if params.shape != (n, 3) or sigma2.shape != (n,) or len(meta["seasonal"]) != n:
            raise ValueError("stored Theta parameters do not match the stored series")
        if not bool(torch.isfinite(params).all()) or not bool((sigma2 > 0).all()):
            raise ValueError("stored Theta parameters are not finite with a positive sigma2")
        if any(m not in ("multiplicative", "additive") for m in meta["methods"]):
            raise ValueError("stored Theta decomposition methods are invalid")
        self._params, self._sigma2 = params, sigma2
        self._units = check_units(tensors.get("units"), n)  # files saved before units were fitted in 1
        self._seasonal = [None if s is None else np.asarray(s, float) for s in meta["seasonal"]]
        self._methods, self.period_ = list(meta["methods"]), int(meta["period"])
        self._set_attributes(bool(meta["collection"]))

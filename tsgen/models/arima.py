r"""Seasonal ARIMA with regression effects, on tsgen's Kalman filter.

Generative model (statsmodels' ``ARIMA`` convention)::

    y_t = x_t' beta + eta_t
    phi(L) Phi(L^s) (1 - L)^d (1 - L^s)^D eta_t = theta(L) Theta(L^s) eps_t,   eps_t ~ N(0, sigma2)

``x_t`` holds the trend terms (``1`` for "c", ``t = 1, 2, ...`` for "t") and
the exogenous regressors ``X``. The model is run as a linear-Gaussian
state-space model on the levels (:mod:`._arima_statespace`): the likelihood
is exact, conditions on the first ``d + sD`` values and equals the exact
likelihood of the differenced series, i.e. statsmodels' ``llf`` (for
d + D > 0, that of ``SARIMAX(..., simple_differencing=True)``, which
agrees with ours to 1e-10, as R's ``arima`` and statsforecast do).
statsmodels' default for d + D > 0 is another number: it starts the
differencing states from an approximate diffuse prior (variance 1e6) and
burns the first steps, which is close to ours only while the series'
level is small against 1e3 (the Nile, about 1e3: 0.01 apart) and drifts
away, estimates included, as the level grows (monthly wine sales, about
3e4, ARIMA(2,1,1)(0,1,1,12): -1495.9 here and with
``simple_differencing=True``, -1528.5 at statsmodels' default fit); its
``use_exact_diffuse=True`` filter is ours less ``0.5 log(2 pi)`` per
differencing state (``d + sD`` of them). Missing values after the first
``d + sD`` steps are marginalised by the filter.

Fitting is maximum likelihood, batched over series: one BFGS with a
separate inverse Hessian and step length per series, stationarity and
invertibility enforced by the Monahan-Jones reparameterisation, starting
from Hannan-Rissanen estimates. ``order="auto"`` (and
``seasonal_order="auto"`` with ``period``) runs the Hyndman-Khandakar
stepwise search by AICc, with KPSS tests for ``d`` and a seasonal-strength
test for ``D`` (:mod:`._arima_auto`).
"""
from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from tsgen.base import BaseForecaster
from tsgen.data import SeriesBatch
from tsgen.data._index import resolve_period
from tsgen.exceptions import ConvergenceWarning
from tsgen.models._arima_auto import AutoOptions, auto_fit
from tsgen.models._arima_filter import filter_history
from tsgen.models._arima_fit import (FitResult, check_identifiable, check_initial_observed, fit_spec, regressors,
                                     scaled_params)
from tsgen.models._arima_forecast import forecast_moments, future_regression, sample_paths
from tsgen.models._arima_spec import ArimaSpec
from tsgen.models._arima_statespace import lag_polynomial
from tsgen.models._units import check_units, in_units, paired_units, units_of


def _spec_to_json(spec: ArimaSpec) -> dict:
    return {"order": list(spec.order), "seasonal_order": list(spec.seasonal_order),
            "trend": spec.trend, "n_exog": spec.n_exog}


def _spec_from_json(meta: dict) -> ArimaSpec:
    P, D, Q, s = meta["seasonal_order"]
    return ArimaSpec(*meta["order"], P, D, Q, s, meta["trend"], meta["n_exog"])


def _check_loaded_params(specs: list[ArimaSpec], params: list, n_series: int) -> None:
    """Refuse stored parameters that do not fit their specs or make no valid model
    (``tsgen.load`` reports the ValueError as a file it cannot load).

    Checked one batch per spec: a partitioned fit of many series is merged through here."""
    if len(specs) not in (1, n_series):
        raise ValueError(f"{len(specs)} stored ARIMA models for {n_series} stored series")
    groups: dict[ArimaSpec, list[int]] = {}
    for i, (spec, value) in enumerate(zip(specs, params)):
        if tuple(value.shape) != (spec.n_params,) or not value.is_floating_point():
            raise ValueError(f"stored parameters {i} have shape {tuple(value.shape)}; expected ({spec.n_params},)")
        groups.setdefault(spec, []).append(i)
    for spec, rows in groups.items():
        block = torch.stack([params[i] for i in rows])
        blocks = spec.blocks
        valid = torch.isfinite(block).all(1) & (block[:, blocks["sigma2"]] > 0.0).all(1)
        if not bool(valid.all()):
            bad = rows[int(torch.nonzero(~valid)[0, 0])]
            raise ValueError(f"stored parameters {bad} are not finite with a positive sigma2")
        ar = lag_polynomial(block[:, blocks["ar"]], block[:, blocks["sar"]], spec.s, -1.0).numpy()
        m = ar.shape[1]
        if m:  # stationary: the companion matrix of phi(L) Phi(L^s) has its eigenvalues inside the unit circle
            companion = np.broadcast_to(np.eye(m, k=-1), (len(rows), m, m)).copy()
            companion[:, 0] = ar
            outside = np.abs(np.linalg.eigvals(companion)).max(1) >= 1.0
            if outside.any():
                raise ValueError(f"stored parameters {rows[int(np.argmax(outside))]} have a non-stationary AR part")


class ARIMA(BaseForecaster):
    """Seasonal ARIMA(p, d, q)(P, D, Q, s) with trend and exogenous regressors.

    Parameters
    ----------
    order : tuple (p, d, q) or "auto"
        Non-seasonal orders; ``"auto"`` selects them by a stepwise AICc search.
    seasonal_order : tuple (P, D, Q, s), tuple (P, D, Q) or "auto"
        Seasonal orders and period; ``"auto"`` searches P, D, Q. A period
        ``s`` of None (or a 3-tuple) takes ``period``. Fixed parts of a
        partly automatic model are kept as given: ``order=(1, 0, 0),
        seasonal_order="auto"`` searches only P, D, Q, and a fixed
        ``seasonal_order`` with ``order="auto"`` searches only p, d, q.
    trend : None, "n", "c", "t", "ct" or "auto"
        Trend regressors (statsmodels' meaning: "c" a constant, "t" a
        linear trend, "ct" both, "n" none). ``None`` (the default) means
        what it means in statsmodels for fixed orders: "c" when d + D = 0,
        otherwise "n"; for automatic orders it means ``"auto"``. ``"auto"``
        includes a mean when d + D = 0 and a drift when d + D = 1 if that
        lowers the AICc, as R's ``auto.arima`` and statsforecast do (with
        fixed orders it chooses between that term and none).
    period : int or None
        Seasonal period for ``seasonal_order="auto"`` or a seasonal order
        without ``s``. None infers it from the frequency of ``y``'s index
        (12 monthly, 4 quarterly, 7 daily, 24 hourly, 52 weekly, 5 business
        daily; 1, i.e. no seasonal part, for other or no frequency).
    max_p, max_q, max_P, max_Q, max_d, max_D, max_order : int
        Bounds of the automatic search (``max_order`` bounds p + q + P + Q).
    max_iter : int
        BFGS iterations per fit.
    random_state : int or None
        Seed of ``sample`` and of ``log_likelihood(method="smc")``.

    ``log_likelihood(y, per_step=False, X=None, method="kalman", n_particles=None)``:
    ``"kalman"`` (the default) is the exact likelihood, of the differenced
    series when d + D > 0 (statsmodels' ``llf`` with
    ``simple_differencing=True``; its default differs on series of large
    level, see :mod:`tsgen.models.arima`); ``"smc"`` estimates it
    by a bootstrap particle filter with ``n_particles`` particles (default
    1000) on the model protocol (:mod:`tsgen.protocol`), the route every
    latent model takes: the total is the log of an unbiased estimate of
    ``p(y)`` and ``per_step=True`` gives its one-step densities. A check of
    the SMC layer against the Kalman filter, not a faster route.

    Fitted attributes (one value per series, a list when ``fit`` got a list):
    ``order_``, ``seasonal_order_``, ``trend_``, ``params_`` (dict name -> value,
    statsmodels' names, except that a regressor is ``x.<column>`` after
    ``X``'s column where statsmodels writes the bare column name; ``x1``,
    ``x2``, ... for unnamed columns), ``llf_``, ``aic_``, ``aicc_``, ``bic_``, ``sigma2_``,
    ``converged_``. A series of magnitude past 1e100 (or below 1e-100) is
    fitted in units of a power of two (:mod:`tsgen.models._units`; at 1e200
    the Kalman filter's squares overflowed and forecasts were NaN): its
    forecasts and ``llf_`` are exact, its ``sigma2_`` overflows to inf past
    about 1e154 (underflows to 0 below 1e-154), as statsmodels' does.
    """

    _supports_covariates = True
    _fits_series_independently = True  # a list is fitted by one batched BFGS with per-series parameters

    def __init__(
        self,
        order=(1, 0, 0),
        seasonal_order=(0, 0, 0, 0),
        trend=None,
        period=None,
        max_p=5,
        max_q=5,
        max_P=2,
        max_Q=2,
        max_d=2,
        max_D=1,
        max_order=5,
        max_iter=200,
        random_state=None,
    ):
        self.order = order
        self.seasonal_order = seasonal_order
        self.trend = trend
        self.period = period
        self.max_p = max_p
        self.max_q = max_q
        self.max_P = max_P
        self.max_Q = max_Q
        self.max_d = max_d
        self.max_D = max_D
        self.max_order = max_order
        self.max_iter = max_iter
        self.random_state = random_state

    @classmethod
    def get_test_params(cls):
        return [
            {"order": (1, 0, 0), "trend": "c", "random_state": 0},
            {"order": (0, 1, 1), "random_state": 0},
            {"order": (1, 0, 1), "seasonal_order": (1, 0, 0, 4), "random_state": 0},
        ]

    # ----------------------------------------------------------- helpers
    @property
    def _is_auto(self) -> bool:
        return isinstance(self.order, str) or isinstance(self.seasonal_order, str) or self.trend == "auto"

    def _period(self, data: SeriesBatch | None) -> int:
        """``period``, else the seasonal period of ``y``'s index frequency (1: none)."""
        return resolve_period(self.period, None if data is None else data.indexes)

    def _seasonal_tuple(self, data: SeriesBatch | None):
        """``seasonal_order`` with a missing period filled in from :meth:`_period`."""
        seasonal = self.seasonal_order
        if isinstance(seasonal, (tuple, list)) and (len(seasonal) == 3 or (len(seasonal) == 4 and seasonal[3] is None)):
            P, D, Q = seasonal[:3]
            if not (P or D or Q):
                return (P, D, Q, 0)
            period = self._period(data)
            if period < 2 and data is not None:
                raise ValueError(
                    f"`seasonal_order`={seasonal!r} has no period and none could be inferred from the "
                    "index of `y`: pass `period` (an integer >= 2) or a 4-tuple (P, D, Q, s)."
                )
            return (P, D, Q, max(period, 2))
        return seasonal

    def _fixed_spec(self, n_exog: int, data: SeriesBatch | None = None) -> ArimaSpec:
        seasonal = self._seasonal_tuple(data)
        if self.trend is None:
            # statsmodels' default: a constant when nothing is differenced
            spec = ArimaSpec.from_args(self.order, seasonal, None, n_exog)
            return replace(spec, trend="c" if spec.d + spec.D == 0 else None)
        return ArimaSpec.from_args(self.order, seasonal, self.trend, n_exog)

    def _auto_options(self, data: SeriesBatch) -> AutoOptions:
        for name in ("order", "seasonal_order"):
            value = getattr(self, name)
            if isinstance(value, str) and value != "auto":
                raise ValueError(f"`{name}` must be a tuple or 'auto'; got {value!r}.")
        if self.trend not in (None, "n", "c", "t", "ct", "auto"):
            raise ValueError(f"`trend` must be None, 'n', 'c', 't', 'ct' or 'auto'; got {self.trend!r}.")
        bounds = {}
        for name in ("max_p", "max_q", "max_P", "max_Q", "max_d", "max_D", "max_order"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"`{name}` must be a non-negative integer; got {value!r}.")
            bounds[name] = int(value)
        # the fixed parts, validated as a fixed model would be
        order = seasonal_order = None
        if self.order != "auto":
            spec = ArimaSpec.from_args(self.order, (0, 0, 0, 0), None)
            order = spec.order
        seasonal = self._seasonal_tuple(data)
        if seasonal != "auto":
            spec = ArimaSpec.from_args((0, 0, 0), seasonal, None)
            seasonal_order = spec.seasonal_order
        return AutoOptions(
            order=order,
            seasonal_order=seasonal_order,
            period=self._period(data) if seasonal == "auto" else 0,
            trend="auto" if self.trend is None else self.trend,
            max_iter=self.max_iter,
            **bounds,
        )

    def _min_length(self) -> int:
        if self._is_auto:
            return 3
        spec = self._fixed_spec(0)
        return spec.n_integration + 2

    @staticmethod
    def _univariate(batch: SeriesBatch, name: str = "y") -> torch.Tensor:
        if batch.n_dims != 1:
            raise ValueError(f"`{name}` must be univariate for ARIMA; got {batch.n_dims} variables.")
        return batch.values[..., 0]

    # -------------------------------------------------------------- hooks
    def _fit(self, data: SeriesBatch, covariates):
        if isinstance(self.max_iter, bool) or not isinstance(self.max_iter, (int, np.integer)) or self.max_iter < 1:
            raise ValueError(f"`max_iter` must be a positive integer; got {self.max_iter!r}.")
        # fitted in units of a power of two where squares of the data would overflow or underflow (_units)
        units = units_of(data)
        y = self._univariate(in_units(data, units))
        n_exog = 0 if covariates is None else covariates.shape[-1]
        if self._is_auto:
            results = auto_fit(y, data.lengths, covariates, self._auto_options(data), n_exog)
        else:
            spec = self._fixed_spec(n_exog, data)
            check_identifiable(spec, y)
            results = [(fit_spec(spec, y, covariates, max_iter=int(self.max_iter)), np.arange(y.shape[0]))]
        self._units = units
        self._set_results(results, y.shape[0], data.is_collection)

    def _set_results(self, results: list[tuple[FitResult, np.ndarray]], n_series: int, collection: bool):
        """Store per-series specs and parameters (in ``self._units``) and the public ``*_`` attributes (in the
        user's units: ``sigma2_`` of a series past about 1e154 overflows to inf, as statsmodels' does)."""
        specs = [None] * n_series
        params = [None] * n_series
        stats = {k: np.zeros(n_series) for k in ("llf", "aic", "aicc", "bic")}
        converged = np.zeros(n_series, dtype=bool)
        values = [None] * n_series  # parameters as Python floats, for ``params_``
        # one conversion per group of series, not per series: a list of many series is set in O(groups) tensor ops
        for result, rows in results:
            rows = np.asarray(rows)
            block = result.params.detach().clone()
            units = self._units[torch.as_tensor(rows)]
            shown = scaled_params(result.spec, block, units)
            result = replace(result, llf=result.llf - result.n_obs * torch.log(units))
            for i, row, floats in zip(rows.tolist(), block.unbind(0), shown.tolist()):
                specs[i] = result.spec
                params[i] = row.clone()  # its own storage, so that saving one series does not save all
                values[i] = floats
            for k in stats:
                stats[k][rows] = getattr(result, k).detach().numpy()
            converged[rows] = result.converged.numpy()
        self._specs = specs
        self._params = params
        self._filter_cache = {}

        def out(values):
            return list(values) if collection else values[0]

        names = {}
        for spec in set(specs):
            names[spec] = self._param_names(spec)
        self.order_ = out([s.order for s in specs])
        self.seasonal_order_ = out([s.seasonal_order for s in specs])
        self.trend_ = out([s.trend for s in specs])
        self.params_ = out([dict(zip(names[s], v)) for s, v in zip(specs, values)])
        self.sigma2_ = out([v[-1] for v in values])
        self.llf_ = out(stats["llf"].tolist())
        self.aic_ = out(stats["aic"].tolist())
        self.aicc_ = out(stats["aicc"].tolist())
        self.bic_ = out(stats["bic"].tolist())
        self.converged_ = out(converged.tolist())
        n_failed = sum(not bool(v) for v in converged)
        if n_failed:
            warnings.warn(
                f"the optimiser did not converge for {n_failed} of {len(converged)} series within "
                f"`max_iter`={self.max_iter}; see `converged_`.",
                ConvergenceWarning,
                stacklevel=3,
            )

    def _param_names(self, spec: ArimaSpec) -> list[str]:
        """statsmodels' names, with regressors named ``x.<column>`` after ``X``'s columns when it had names."""
        columns = self.__dict__.get("feature_names_in_")
        if columns is None or not spec.n_exog:
            return spec.param_names
        exog = {f"x{j + 1}": f"x.{c}" for j, c in enumerate(columns)}
        return [exog.get(n, n) for n in spec.param_names]

    def _groups(self, n_series: int):
        """Series grouped by spec, so that each group runs as one batch.

        A model fitted on one series applies to any number of series; a
        model fitted on many pairs its series one to one with ``y``'s."""
        n_fitted = len(self._specs)
        if n_fitted == 1:
            pairs = [0] * n_series
        elif n_fitted == n_series:
            pairs = list(range(n_series))
        else:
            raise ValueError(
                f"`y` has {n_series} series but the model was fitted on {n_fitted}; pass "
                f"{n_fitted} series (one per fitted model) or refit."
            )
        groups: dict[ArimaSpec, list[tuple[int, int]]] = {}
        for i, k in enumerate(pairs):
            groups.setdefault(self._specs[k], []).append((i, k))
        for spec, members in groups.items():
            rows = torch.tensor([i for i, _ in members])
            params = torch.stack([self._params[k] for _, k in members])
            yield spec, rows, params

    def _filtered(self, spec, rows, params, y, lengths, covariates, horizon=0):
        """The filter over ``y[rows]`` and the regressors over the history and ``horizon`` more steps.

        ``predict``, ``sample`` and ``log_likelihood`` on the same history share
        one filter pass: the last few are kept, keyed by everything they depend on."""
        cov = None if covariates is None else covariates[rows]
        y_rows, len_rows = y[rows], lengths[rows]
        check_initial_observed(spec, y_rows)
        X = regressors(spec, y.shape[1] + horizon, cov, len(rows))
        X_hist = X[:, : y.shape[1]]
        key = (spec, params.numpy().tobytes(), y_rows.numpy().tobytes(), tuple(y_rows.shape),
               len_rows.numpy().tobytes(), X_hist.numpy().tobytes())
        cache = self.__dict__.setdefault("_filter_cache", {})
        summary = cache.get(key)
        if summary is None:
            summary = filter_history(spec, params, y_rows, X_hist, len_rows)
            if len(cache) >= 8:
                cache.pop(next(iter(cache)))
            cache[key] = summary
        return summary, X

    def _log_likelihood(self, data, covariates, method="kalman", n_particles=None, **options):
        from tsgen.models.lds import _inference_method

        if options:
            raise TypeError(f"ARIMA.log_likelihood got unexpected option(s) {sorted(options)}.")
        units = paired_units(self._units, data.n_series)
        data = in_units(data, units)
        if _inference_method(method, n_particles) == "smc":
            out = self._smc_log_likelihood(data, covariates, 1000 if n_particles is None else n_particles)
        else:
            y = self._univariate(data)
            out = torch.zeros_like(y)
            for spec, rows, params in self._groups(y.shape[0]):
                summary, _ = self._filtered(spec, rows, params, y, data.lengths, covariates)
                out[rows] = summary.log_likelihoods
                # the first d + sD steps only start the differencing: they carry no density
                # (statsmodels' llf convention), so they are not scored rather than scored 0
                out[rows, : spec.n_integration] = torch.nan
        # a density of y / u is u times the density of y
        return out - torch.log(units).to(out.dtype)[:, None]

    def _smc_log_likelihood(self, data, covariates, n_particles):
        """The one-step densities (in the fitted units) by a particle filter on the model protocol
        (:mod:`._arima_smc`), seeded by ``random_state``: a check of the Kalman route through the code path
        nonlinear models take."""
        from tsgen.models._arima_smc import smc_log_likelihoods
        from tsgen.training import seeded_from
        from tsgen.training.randomness import make_generator

        y = self._univariate(data)
        out = torch.zeros_like(y)
        with torch.no_grad(), seeded_from(make_generator(self.random_state)):
            for spec, rows, params in self._groups(y.shape[0]):
                cov = None if covariates is None else covariates[rows]
                out[rows] = smc_log_likelihoods(spec, params, y[rows], cov, n_particles)
                out[rows, : spec.n_integration] = torch.nan  # not scored, as in the Kalman route
        return out

    def _predict_gaussian(self, horizon, history, covariates):
        units = paired_units(self._units, history.n_series)
        history = in_units(history, units)
        y = self._univariate(history)
        mean = torch.zeros(y.shape[0], horizon, 1, dtype=y.dtype)
        std = torch.zeros_like(mean)
        for spec, rows, params in self._groups(y.shape[0]):
            summary, X = self._filtered(spec, rows, params, y, history.lengths, covariates, horizon)
            regression = future_regression(spec, params, X, history.lengths[rows], horizon)
            m, s = forecast_moments(summary, regression, horizon)
            mean[rows, :, 0] = m
            std[rows, :, 0] = s
        return mean * units[:, None, None], std * units[:, None, None]

    def _sample(self, horizon, n_samples, history, covariates, generator):
        units = paired_units(self._units, history.n_series)
        history = in_units(history, units)
        y = self._univariate(history)
        draws = torch.zeros(y.shape[0], n_samples, horizon, 1, dtype=y.dtype)
        for spec, rows, params in self._groups(y.shape[0]):
            summary, X = self._filtered(spec, rows, params, y, history.lengths, covariates, horizon)
            regression = future_regression(spec, params, X, history.lengths[rows], horizon)
            draws[rows, ..., 0] = sample_paths(summary, regression, horizon, n_samples, generator)
        return draws * units[:, None, None, None]

    def _fitted_state(self):
        check_is_fitted(self)
        converged = self.converged_ if isinstance(self.converged_, list) else [self.converged_]
        meta = {"specs": [_spec_to_json(s) for s in self._specs],
                "collection": isinstance(self.llf_, list), "converged": converged}
        tensors = {f"params.{i}": p for i, p in enumerate(self._params)}
        # the fit's own log-likelihoods travel with the parameters: a partitioned fit's merge (and a load)
        # takes them instead of running the Kalman filter over every series again
        tensors["llf"] = torch.as_tensor(np.atleast_1d(self.llf_), dtype=torch.float64)
        tensors["units"] = self._units  # the parameters' units (_units); files without them were fitted in 1
        return meta, tensors

    def _load_fitted_state(self, meta, tensors):
        decoded: dict[str, ArimaSpec] = {}  # many series share a few specs: each is decoded (and checked) once
        specs = []
        for m in meta["specs"]:
            if repr(m) not in decoded:
                decoded[repr(m)] = _spec_from_json(m)
            specs.append(decoded[repr(m)])
        self._specs = specs
        self._params = [tensors[f"params.{i}"] for i in range(len(specs))]
        self._units = check_units(tensors.get("units"), len(specs))
        _check_loaded_params(specs, self._params, self.history_.n_series)
        llf = tensors.get("llf")  # absent from files saved before it was stored
        if llf is not None and (tuple(llf.shape) != (len(specs),) or llf.dtype != torch.float64):
            raise ValueError(f"stored log-likelihoods have shape {tuple(llf.shape)} and dtype {llf.dtype}; "
                             f"expected ({len(specs)},) float64")
        self._restore_attributes(meta["collection"], meta.get("converged"), llf)

    def _restore_attributes(self, collection: bool, converged=None, llf=None):
        """The ``*_`` statistics from the stored parameters, history and (when stored) log-likelihoods, in the
        user's units; without those the Kalman filter recomputes them."""
        units = paired_units(self._units, self.history_.n_series)
        y = self._univariate(in_units(self.history_, units))
        results = []
        for spec, rows, params in self._groups(y.shape[0]):
            n_obs = torch.isfinite(y[rows, spec.n_integration:]).sum(1).to(y.dtype)
            if llf is None:
                summary, _ = self._filtered(spec, rows, params, y, self.history_.lengths, self.covariates_)
                row_llf = summary.log_likelihoods.sum(1)
            else:  # _set_results takes the fitted units' log-likelihood
                row_llf = llf[rows] + n_obs * torch.log(units[rows])
            flags = torch.tensor([True if converged is None else bool(converged[int(i)]) for i in rows])
            results.append((FitResult(spec, params, row_llf, n_obs, flags), rows.numpy()))
        self._set_results(results, y.shape[0], collection)

r"""Exponential smoothing (ETS) as an innovations state-space model, fitted to many series at once.

Generative model, for state ``x_t = (l_t, b_t, s_t, ..., s_{t-m+1})`` and
``eps_t ~ N(0, sigma^2)`` i.i.d. (Hyndman, Koehler, Ord & Snyder, *Forecasting
with Exponential Smoothing*, 2008)::

    y_t = yhat_t + eps_t               (additive error)
    y_t = yhat_t (1 + eps_t)           (multiplicative error)
    yhat_t = w(x_{t-1}),   x_t = f(x_{t-1}, y_t)

with ``w`` and ``f`` statsmodels' ``ETSModel`` component form
(:mod:`._ets_kernels`): level, optional additive or multiplicative trend
(optionally damped by ``phi``) and optional additive or multiplicative
season of period ``m``. The additive-error models with additive or no
trend and season are linear-Gaussian state-space models, ``x_t = F x_{t-1}
+ g eps_t``, ``y_t = w' x_{t-1} + eps_t``, with exact Gaussian forecasts
``N(w' F^{h-1} x_T, sigma^2 (1 + sum_{j<h} c_j^2))``,
``c_j = alpha + beta (phi + ... + phi^j) + gamma [j = 0 mod m]``; the others
are nonlinear and their quantiles are simulated by running the recursion.
Their mean is the point forecast where that is exact (statsmodels' mean):
at every step unless the trend or the season multiplies, up to ``h = m``
under a multiplicative season; elsewhere (a multiplicative trend, a
multiplicative season beyond one period) the average of the paths.

The likelihood is statsmodels' (``sigma^2`` concentrated out), so fixed
parameters give ``ETSModel.loglike``'s numbers (statsmodels itself takes no
missing values). Missing values are zero innovations (``y_t`` replaced by
``yhat_t`` in the recursion and left out of the likelihood): the states
continue along their conditional mean, so predictions after a gap are the
exact conditional means of the linear forms, but their one-step variance
is not widened for the gap (a Kalman filter would widen it).

A series of magnitude past 1e100 (or below 1e-100) is fitted in units of a
power of two (:mod:`._units`), where the likelihood's squares stay finite:
``c y`` then gets ``c`` times the forecasts of ``y``; ``sigma2_`` of an
additive error past about 1e154 overflows to inf (the model keeps it in
its units).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy import stats
from sklearn.utils.validation import check_is_fitted

from tsgen._validation import is_int
from tsgen.base import BaseForecaster
from tsgen.data import SeriesBatch
from tsgen.models import _ets_kernels as kernels
from tsgen.models._ets_spec import EtsForm, candidate_forms, components
from tsgen.models._units import check_units, in_units, paired_units, units_of
from tsgen.models.baselines import resolve_period

_LOG_2PI = math.log(2.0 * math.pi)


def _information_criteria(llf: np.ndarray, k: np.ndarray, n: np.ndarray) -> dict:
    aic = -2.0 * llf + 2.0 * k
    return {"aic": aic, "aicc": aic + 2.0 * k * (k + 1) / (n - k - 1), "bic": -2.0 * llf + np.log(n) * k}


class ETS(BaseForecaster):
    """Exponential smoothing state-space model (ETS), fixed or selected automatically by AICc.

    Parameters
    ----------
    error : {"add", "mul", "auto"}
        Error type.
    trend : {None, "add", "mul", "auto"}
        Trend component.
    seasonal : {None, "add", "mul", "auto"}
        Seasonal component, of period ``period``.
    damped : bool or "auto"
        Damped trend (``phi`` in [0.8, 0.98]).
    period : int or None
        Season length; None infers it from ``y``'s index frequency as
        :class:`tsgen.ARIMA` does (1: no season).
    model : str or None
        R's ``ets`` notation, overriding the four above: error, trend (with
        ``d`` for damped) and season letters from ``A``, ``M``, ``N``, and
        ``Z`` for automatic: ``"ANN"`` (simple exponential smoothing),
        ``"AAdN"``, ``"MAM"``, ``"ZZZ"`` (the full automatic search).
    allow_multiplicative_trend : bool
        Whether ``"auto"`` trends include the multiplicative trend (R's and
        statsforecast's default: no). As theirs, the search then still
        leaves out an additive error with it and ``MMA`` / ``MMdA``.
    max_evals : int
        Most Nelder-Mead evaluations per series and form.
    random_state : int or None
        Seed of ``sample`` and of ``predict`` for the nonlinear forms.

    Attributes
    ----------
    model_ : str or list of str
        The form, e.g. ``"MAdN"`` (one value per series, a list when
        ``fit`` got many series; so are the attributes below).
    params_ : dict or list of dict
        Parameters with statsmodels' names ``smoothing_level``,
        ``smoothing_trend``, ``smoothing_seasonal``, ``damping_trend``,
        ``initial_level``, ``initial_trend``, ``initial_seasonal.0..m-1``.
    sigma2_ : float or list of float
        Mean squared residual (relative for a multiplicative error).
    llf_, aic_, aicc_, bic_ : float or list of float
        Log-likelihood and information criteria.
    converged_ : bool or list of bool
        Whether the optimiser converged.

    Notes
    -----
    Automatic selection works as R's ``ets``: every admissible form (see
    ``tsgen.models._ets_spec.candidate_forms``: multiplicative components
    only for strictly positive series, no additive error with a
    multiplicative season) is fitted by maximum likelihood and the smallest
    AICc wins, per series. Parameters are bounded as statsmodels'
    ``ETSModel``: ``alpha``, ``beta/alpha``, ``gamma/(1-alpha)`` in
    [1e-4, 1-1e-4] and ``phi`` in [0.8, 0.98]; the initial states are
    estimated (profiled out by least squares for additive forms, see
    ``tsgen.models._ets_kernels``). Information criteria count the
    smoothing parameters, the free initial states (``m - 1`` seasonal ones)
    and ``sigma^2``, as R does. The search starts each form from a nested
    form's estimates (a damped trend from the undamped fit, a
    multiplicative error from the additive one) and fits the forms that
    end within 2 of a series' best AICc again from the default starts,
    keeping the better fit (a warm start can trap the optimiser in a worse
    local optimum); a fit that settles far behind the series' best is
    stopped before its last digits.

    Many series (a list) are fitted in one compiled call per form, each
    with its own parameters and form (in partitions, possibly in parallel:
    :func:`tsgen.config_context`). A model fitted on one series applies to
    any series; one fitted on many pairs its series one to one with
    ``y``'s. Conditioning on ``y`` runs the fitted recursion over ``y`` from
    the fitted initial states.

    Examples
    --------
    >>> import numpy as np, pandas as pd, tsgen
    >>> index = pd.period_range("2000Q1", periods=40, freq="Q")
    >>> y = pd.Series(50 + np.arange(40) + 5 * np.tile([1, -1, 2, -2], 10), index=index)
    >>> model = tsgen.ETS(model="AAA").fit(y)
    >>> model.model_
    'AAA'
    >>> list(model.predict(4).columns)
    ['mean', 'q0.05', 'q0.5', 'q0.95']
    """

    _fits_series_independently = True

    def __init__(self, error="add", trend=None, seasonal=None, damped=False, period=None, model=None,
                 allow_multiplicative_trend=False, max_evals=400, random_state=None):
        self.error = error
        self.trend = trend
        self.seasonal = seasonal
        self.damped = damped
        self.period = period
        self.model = model
        self.allow_multiplicative_trend = allow_multiplicative_trend
        self.max_evals = max_evals
        self.random_state = random_state

    @classmethod
    def get_test_params(cls):
        return [
            {"random_state": 0},
            {"model": "AAdA", "period": 4, "random_state": 0},
            {"model": "MNM", "random_state": 0},
            {"model": "ZZZ", "random_state": 0},
        ]

    def _min_length(self) -> int:
        return 3

    # --------------------------------------------------------------- fitting
    def _components(self):
        return components(self.error, self.trend, self.seasonal, self.damped, self.model)

    def _fit(self, data: SeriesBatch, covariates):
        if data.n_dims != 1:
            raise ValueError(f"`y` must be univariate for ETS; got {data.n_dims} variables.")
        if not is_int(self.max_evals) or self.max_evals < 10:
            raise ValueError(f"`max_evals` must be an integer >= 10; got {self.max_evals!r}.")
        error, trend, seasonal, damped = self._components()
        auto = "auto" in (error, trend, seasonal, damped)
        period = resolve_period(self.period, data)
        if seasonal not in (None, "auto") and period < 2:
            raise ValueError(
                f"`seasonal`={seasonal!r} needs a period >= 2: pass `period`, or give `y` an index with a "
                "seasonal frequency."
            )
        # fitted in units of a power of two where squares of the data would overflow or underflow (_units)
        units = units_of(data)
        data = in_units(data, units)
        y = data.values[..., 0].numpy()
        observed = data.mask[..., 0].numpy()
        lengths = data.lengths.numpy().astype(np.int64)
        n_obs = observed.sum(1)
        positive = ((y > 0) | ~observed).all(1)
        wants_mul = "mul" in (error, trend, seasonal)
        if wants_mul and not positive.all():
            bad = int(np.argmin(positive))
            raise ValueError(
                f"`y` series {bad} has values <= 0: a multiplicative error, trend or season needs strictly "
                "positive data; use additive components."
            )
        candidates: dict[EtsForm, list] = {}
        # the candidates depend on a series only through its sign and length: one look-up per kind
        kinds, kind_of = np.unique(np.stack([positive, n_obs]), axis=1, return_inverse=True)
        for q, (pos, count) in enumerate(kinds.T):
            forms = candidate_forms(error, trend, seasonal, damped, period, bool(pos), int(count),
                                    bool(self.allow_multiplicative_trend))
            members = np.flatnonzero(kind_of.ravel() == q)
            if not forms:
                raise ValueError(
                    f"`y` series {members[0]} has {int(count)} observed values: too few for "
                    f"{'any admissible ETS form' if auto else 'this ETS form'} (needs more observations than "
                    "parameters + 1); use a simpler form."
                )
            for form in forms:
                candidates.setdefault(form, []).append(members)
        candidates = {form: np.sort(np.concatenate(parts)) for form, parts in candidates.items()}
        best = np.full(len(y), np.inf)
        chosen: list = [None] * len(y)
        states = np.zeros((len(y), 2 + max(period, 1)))
        smoothing = np.zeros((len(y), 4))
        converged = np.zeros(len(y), bool)

        def fit(form, rows, starts, margin):
            """Fit ``form`` to ``rows`` from ``starts`` and keep it where it beats the best so far."""
            # -llf at which this form's AICc would trail the best so far by `margin`: the optimiser gives up
            # there once roughly settled (the form cannot win there; only its fit's last digits are lost)
            penalty = _information_criteria(np.zeros(len(rows)), form.n_params, n_obs[rows])["aicc"]
            ceilings = (best[rows] + margin - penalty) / 2.0
            sm, x0, llf, conv = kernels.fit_many(
                y[rows], observed[rows], lengths[rows], form.error, form.trend, form.season, form.damped,
                form.period, int(self.max_evals), _FTOL, np.ascontiguousarray(starts), ceilings, _COARSE_FTOL)
            crit = _information_criteria(llf, form.n_params, n_obs[rows])["aicc"]
            better = np.isfinite(crit) & (crit < best[rows])
            won = rows[better]
            best[won] = crit[better]
            smoothing[won] = sm[better]
            states[won] = 0.0
            states[won, : 2 + form.period] = x0[better]
            converged[won] = conv[better]
            for i in won:
                chosen[i] = form
            return sm, llf, crit

        estimates: dict[EtsForm, np.ndarray] = {}  # smoothing parameters per form, NaN where not fitted
        warm: dict[EtsForm, tuple] = {}  # (rows, AICc) of the forms fitted from a nested form's estimates
        # nested forms first, so that a damped trend starts from the undamped fit and a multiplicative
        # error from the additive one: fewer iterations than from the defaults
        for form in sorted(candidates, key=lambda f: (f.damped, f.error, f.season == 2, f.trend, f.season)):
            rows = candidates[form]
            starts = np.full((len(y), 4), np.nan)
            for parent in _parents(form):
                if parent in estimates:
                    fill = np.isnan(starts[:, 0])
                    starts[fill] = estimates[parent][fill]
            sm, llf, crit = fit(form, rows, starts[rows], _ABANDON_MARGIN)
            estimates[form] = np.full((len(y), 4), np.nan)
            estimates[form][rows] = np.where(np.isfinite(llf)[:, None], sm, np.nan)
            started = np.isfinite(starts[rows, 0])
            if started.any():
                warm[form] = (rows[started], crit[started])
        # a warm start can trap Nelder-Mead in a worse local optimum than the defaults reach (M3 N1211:
        # MAM from MAA's estimates lost to MAdM's AICc 441.93, from the defaults it reaches 438.10): the
        # forms that could still win are fitted again from the defaults, the better fit kept
        for form, (rows, crit) in warm.items():
            again = rows[~(crit > best[rows] + _REFIT_MARGIN) | ~np.isfinite(crit)]
            if len(again):
                fit(form, again, np.full((len(again), 4), np.nan), _REFIT_ABANDON_MARGIN)
        failed = [i for i, form in enumerate(chosen) if form is None]
        if failed:
            raise ValueError(
                f"`y` series {failed[0]}: no ETS form could be fitted (the likelihood was not finite at any "
                "parameter tried); check the data for extreme values."
            )
        self._forms = chosen
        self._units = units
        self._smoothing = torch.from_numpy(smoothing)
        self._states = torch.from_numpy(states)
        self._sigma2 = torch.from_numpy(self._mean_squared_residuals(data))
        self._set_attributes(data, converged)

    def _mean_squared_residuals(self, data: SeriesBatch) -> np.ndarray:
        out = np.zeros(data.n_series)
        for form, rows, sm, x0 in self._groups(data.n_series):
            yhat, _, _ = self._run(form, rows, sm, x0, data)
            y = data.values[rows, :, 0].numpy()
            r = y - yhat
            if form.error == 2:
                r = r / yhat
            ok = data.mask[rows, :, 0].numpy()
            out[rows] = np.where(ok, r * r, 0.0).sum(1) / ok.sum(1)
        return out

    def _set_attributes(self, data: SeriesBatch, converged):
        """The public ``*_`` attributes, in the user's units, from ``data`` in the fitted units."""
        n = len(self._forms)
        llf = np.zeros(n)
        for form, rows, sm, x0 in self._groups(n):
            _, _, llf[rows] = self._run(form, rows, sm, x0, data)
        n_obs = data.mask[..., 0].sum(1).numpy()
        units = self._units.numpy()
        llf = llf - n_obs * np.log(units)  # a density of y / u is u times the density of y
        collection = data.is_collection
        k = np.array([f.n_params for f in self._forms], float)
        crit = _information_criteria(llf, k, np.asarray(n_obs, float))

        def out(values):
            values = list(values)
            return values if collection else values[0]

        self._collection = collection
        self._converged = np.asarray(converged, bool)
        self.model_ = out(f.name for f in self._forms)
        smoothing, states = self._smoothing.numpy(), self._states.numpy()
        self.params_ = out(self._param_dict(form, smoothing[i], states[i], units[i])
                           for i, form in enumerate(self._forms))
        # relative (multiplicative error) or in squared units: past about 1e154 it overflows to inf
        additive = np.array([f.error == 1 for f in self._forms])
        with np.errstate(over="ignore"):
            self.sigma2_ = out((self._sigma2.numpy() * np.where(additive, units**2, 1.0)).tolist())
        self.llf_ = out(llf.tolist())
        self.aic_ = out(crit["aic"].tolist())
        self.aicc_ = out(crit["aicc"].tolist())
        self.bic_ = out(crit["bic"].tolist())
        self.converged_ = out(self._converged.tolist())

    @staticmethod
    def _param_dict(form: EtsForm, smoothing: np.ndarray, states: np.ndarray, unit: float = 1.0) -> dict:
        """statsmodels-named parameters from fitted ones in units ``unit``: the level and the additive trend
        and season carry the data's units, a multiplicative trend or season none."""
        alpha, beta_star, gamma_star, phi = smoothing.tolist()
        carries_units = np.r_[True, form.trend == 1, np.full(len(states) - 2, form.season == 1)]
        x0 = np.where(carries_units, states * unit, states).tolist()
        params = {"smoothing_level": alpha}
        if form.trend:
            params["smoothing_trend"] = beta_star * alpha
        if form.season:
            params["smoothing_seasonal"] = gamma_star * (1.0 - alpha)
        if form.damped:
            params["damping_trend"] = phi
        params["initial_level"] = x0[0]
        if form.trend:
            params["initial_trend"] = x0[1]
        if form.season:
            params.update({f"initial_seasonal.{j}": x0[2 + j] for j in range(form.period)})
        return params

    # ----------------------------------------------------- shared machinery
    def _groups(self, n_series: int):
        """``(form, rows, smoothing, x0)`` per form, pairing fitted series with ``n_series`` series."""
        n_fitted = len(self._forms)
        if n_fitted == 1:
            pairs = np.zeros(n_series, int)
        elif n_fitted == n_series:
            pairs = np.arange(n_series)
        else:
            raise ValueError(
                f"`y` has {n_series} series but the model was fitted on {n_fitted}; pass {n_fitted} series "
                "(one per fitted model) or refit."
            )
        groups: dict[EtsForm, list[int]] = {}
        for i, k in enumerate(pairs):
            groups.setdefault(self._forms[k], []).append(i)
        for form, rows in groups.items():
            rows = np.asarray(rows)
            fitted = pairs[rows]
            yield (form, rows, self._smoothing[fitted].numpy(),
                   np.ascontiguousarray(self._states[fitted, : 2 + form.period].numpy()))

    @staticmethod
    def _run(form: EtsForm, rows, smoothing, x0, data: SeriesBatch):
        y = np.ascontiguousarray(data.values[rows, :, 0].numpy())
        observed = np.ascontiguousarray(data.mask[rows, :, 0].numpy())
        lengths = data.lengths[rows].numpy().astype(np.int64)
        return kernels.filter_many(smoothing, x0, y, observed, lengths, form.error, form.trend, form.season,
                                   form.period)

    def _sigma2_rows(self, rows, n_series):
        n_fitted = len(self._forms)
        fitted = np.zeros(n_series, int) if n_fitted == 1 else np.arange(n_series)
        return self._sigma2[fitted[rows]].numpy()

    # --------------------------------------------------------------- scoring
    def _log_likelihood(self, data, covariates, **options):
        if options:
            raise TypeError(f"ETS.log_likelihood got unexpected option(s) {sorted(options)}.")
        if data.n_dims != 1:
            raise ValueError(f"`y` must be univariate for ETS; got {data.n_dims} variables.")
        units = paired_units(self._units, data.n_series)
        data = in_units(data, units)
        out = np.zeros(data.values.shape[:2])
        for form, rows, sm, x0 in self._groups(data.n_series):
            yhat, _, _ = self._run(form, rows, sm, x0, data)
            sigma2 = self._sigma2_rows(rows, data.n_series)[:, None]
            y = data.values[rows, :, 0].numpy()
            if form.error == 2:
                with np.errstate(invalid="ignore", divide="ignore"):
                    scale = np.abs(yhat)
                    dens = -0.5 * (_LOG_2PI + np.log(sigma2) + ((y - yhat) / yhat) ** 2 / sigma2) - np.log(scale)
                dens = np.where(yhat > 0, dens, -np.inf)
            else:
                dens = -0.5 * (_LOG_2PI + np.log(sigma2) + (y - yhat) ** 2 / sigma2)
            out[rows] = np.where(data.mask[rows, :, 0].numpy(), dens, 0.0)
        return torch.from_numpy(out - np.log(units.numpy())[:, None])  # a density of y / u is u times y's

    # ----------------------------------------------------------- forecasting
    def _forecast(self, horizon, history, covariates, levels):
        units = paired_units(self._units, history.n_series)
        mean, bands = self._forecast_in_units(horizon, in_units(history, units), covariates, levels)
        units = units.numpy()[:, None, None]
        return mean * units, {q: band * units for q, band in bands.items()}

    def _forecast_in_units(self, horizon, history, covariates, levels):
        """Exact Gaussian quantiles for the linear forms; simulated ones for the others (``history`` and the
        results in the fitted units)."""
        mean = np.zeros((history.n_series, horizon, 1))
        bands = {q: np.zeros_like(mean) for q in levels}
        nonlinear, exact_means = [], []
        for form, rows, sm, x0 in self._groups(history.n_series):
            _, final, _ = self._run(form, rows, sm, x0, history)
            if not form.linear and form.trend == 2:
                nonlinear.append(rows)
                continue
            point = kernels.point_forecasts(sm, final, form.trend, form.season, form.period, horizon)
            if not form.linear:
                # With a multiplicative error the states stay linear in y unless the trend or season multiplies,
                # so the point forecast is the conditional mean (Hyndman et al. 2008, class 2), as statsmodels
                # reports it, not only the average of the simulated paths; a multiplicative season multiplies a
                # factor that is still known at the origin up to h = m.
                nonlinear.append(rows)
                exact_means.append((rows, point[:, : horizon if form.season != 2 else form.period]))
                continue
            std = np.sqrt(self._sigma2_rows(rows, history.n_series)[:, None] * self._variance_factors(
                form, sm, horizon))
            mean[rows, :, 0] = point
            for q in levels:
                bands[q][rows, :, 0] = point + stats.norm.ppf(q) * std
        if nonlinear:
            draws = self._sample_in_units(horizon, self._n_predict_samples, history, covariates,
                                          _generator(self.random_state)).numpy()
            rows = np.concatenate(nonlinear)
            mean[rows] = draws[rows].mean(1)
            qs = np.quantile(draws[rows], levels, axis=1)
            for k, q in enumerate(levels):
                bands[q][rows] = qs[k]
            for rows, point in exact_means:
                mean[rows, : point.shape[1], 0] = point
        return mean, bands

    def _predict_gaussian(self, horizon, history, covariates):
        if not all(form.linear for form in self._forms):
            return None
        mean, bands = self._forecast(horizon, history, covariates, (stats.norm.cdf(1.0),))
        std = next(iter(bands.values())) - mean
        return torch.from_numpy(mean), torch.from_numpy(std)

    @staticmethod
    def _variance_factors(form: EtsForm, smoothing: np.ndarray, horizon: int) -> np.ndarray:
        """``1 + sum_{j<h} c_j^2`` ``(rows, horizon)`` of the linear forms (Hyndman et al. 2008, Table 6.1)."""
        alpha, beta_star, gamma_star, phi = smoothing.T
        beta = beta_star * alpha
        gamma = gamma_star * (1.0 - alpha)
        j = np.arange(1, horizon)
        damped_sum = np.cumsum(phi[:, None] ** j[None, :], axis=1)  # phi + ... + phi^j
        c = alpha[:, None] + beta[:, None] * damped_sum
        if form.season:
            c = c + gamma[:, None] * (j % form.period == 0)
        return np.concatenate([np.ones((len(alpha), 1)), 1.0 + np.cumsum(c**2, axis=1)], axis=1)

    def _sample(self, horizon, n_samples, history, covariates, generator):
        units = paired_units(self._units, history.n_series)
        draws = self._sample_in_units(horizon, n_samples, in_units(history, units), covariates, generator)
        return draws * units[:, None, None, None]

    def _sample_in_units(self, horizon, n_samples, history, covariates, generator):
        """Paths by running the recursion on simulated observations, all series and paths at once (in the
        fitted units)."""
        out = torch.zeros(history.n_series, n_samples, horizon, 1, dtype=torch.float64)
        shocks = torch.randn(history.n_series, n_samples, horizon, generator=generator, dtype=torch.float64).numpy()
        step = kernels.step.py_func
        for form, rows, sm, x0 in self._groups(history.n_series):
            _, final, _ = self._run(form, rows, sm, x0, history)
            sigma = np.sqrt(self._sigma2_rows(rows, history.n_series))[:, None]
            alpha, beta_star, gamma_star, phi = (v[:, None] for v in sm.T)
            level = np.repeat(final[:, :1], n_samples, 1)
            slope = np.repeat(final[:, 1:2], n_samples, 1)
            m = form.period
            season = np.repeat(final[:, None, 2:][:, :, ::-1], n_samples, 1).copy()  # (rows, paths, m): oldest first
            paths = np.empty((len(rows), n_samples, horizon))
            with np.errstate(all="ignore"):
                for h in range(horizon):
                    s_old = season[:, :, h % m]
                    eps = sigma * shocks[rows, :, h]
                    base = level * slope**phi if form.trend == 2 else level + phi * slope
                    yhat = base * s_old if form.season == 2 else base + s_old
                    y = yhat * (1.0 + eps) if form.error == 2 else yhat + eps
                    _, level, slope, s_new = step(level, slope, s_old, y, True, alpha, beta_star, gamma_star, phi,
                                                  form.trend, form.season)
                    season[:, :, h % m] = s_new
                    paths[:, :, h] = y
            out[rows, :, :, 0] = torch.from_numpy(paths)
        return out

    # ------------------------------------------------------------- save/load
    def _fitted_state(self):
        check_is_fitted(self)
        meta = {"forms": [[f.error, f.trend, f.season, bool(f.damped), f.period] for f in self._forms],
                "collection": self._collection, "converged": self._converged.tolist()}
        return meta, {"smoothing": self._smoothing, "states": self._states, "sigma2": self._sigma2,
                      "units": self._units}

    def _load_fitted_state(self, meta, tensors):
        forms = []
        for entry in meta["forms"]:
            e, t, s, d, p = entry
            if e not in (1, 2) or t not in (0, 1, 2) or s not in (0, 1, 2) or not isinstance(d, bool) or not (
                    is_int(p) and p >= 1):
                raise ValueError(f"stored ETS form {entry!r} is invalid")
            forms.append(EtsForm(e, t, s, d, p))
        smoothing, states, sigma2 = tensors["smoothing"], tensors["states"], tensors["sigma2"]
        n = len(forms)
        width = 2 + max(f.period for f in forms)
        if smoothing.shape != (n, 4) or sigma2.shape != (n,) or states.dim() != 2 or states.shape[0] != n or (
                states.shape[1] < width):
            raise ValueError("stored ETS parameters do not match the stored forms")
        if not all(bool(torch.isfinite(t).all()) for t in (smoothing, states, sigma2)) or bool((sigma2 <= 0).any()):
            raise ValueError("stored ETS parameters are not finite with a positive sigma2")
        if n not in (1, self.history_.n_series):
            raise ValueError(f"{n} stored ETS models for {self.history_.n_series} stored series")
        self._forms, self._smoothing, self._states, self._sigma2 = forms, smoothing, states, sigma2
        self._units = check_units(tensors.get("units"), n)  # files saved before units were fitted in 1
        self._set_attributes(in_units(self.history_, paired_units(self._units, self.history_.n_series)),
                             meta["converged"])


#: Nelder-Mead stops when the simplex's -log-likelihoods agree to this relative tolerance (R's optim uses
#: 1e-8; statsforecast's stops at a standard deviation of 1e-4): about 2e-4 in a quarterly series' AICc,
#: far less than what separates forms
_FTOL = 1e-6
#: forms fitted from a nested form's estimates are fitted again from the default starts where their AICc is
#: within this of the series' best (the chosen form included): on the M3 dev series a margin of 10 found
#: little more (mean AICc 0.01 lower on Quarterly) for a third more time
_REFIT_MARGIN = 2.0
#: a fit whose simplex has settled to _COARSE_FTOL with an AICc _ABANDON_MARGIN (_REFIT_ABANDON_MARGIN for
#: the second fits from the defaults) behind the series' best so far is abandoned: it cannot win, and
#: settling to _FTOL took about twice the evaluations. A refit abandoned as soon as it trails the best (margin
#: 0) missed M3 N2992's MAdN, which catches up only after settling
_COARSE_FTOL = 1e-4
_ABANDON_MARGIN = 4.0
_REFIT_ABANDON_MARGIN = 2.0


def _parents(form: EtsForm) -> list[EtsForm]:
    """Forms nested in ``form`` (or nearly: ``phi`` <= 0.98) whose estimates make good starts."""
    out = []
    if form.damped:
        out.append(EtsForm(form.error, form.trend, form.season, False, form.period))
    if form.error == 2:
        out.append(EtsForm(1, form.trend, form.season, form.damped, form.period))
    if form.season == 2:
        out.append(EtsForm(form.error, form.trend, 1, form.damped, form.period))
    return out


def _generator(random_state):
    from tsgen.training.randomness import make_generator

    return make_generator(random_state)

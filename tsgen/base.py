"""BaseForecaster: the scikit-learn contract shared by every tsgen estimator.

Public methods validate and convert user data once (``tsgen.data``), then
call private hooks that receive tensors only:

- ``_fit(data, covariates)``
- ``_sample(horizon, n_samples, history, covariates, generator)``
  -> ``(n_series, n_samples, horizon, dim)``
- ``_log_likelihood(data, covariates, **options)`` -> ``(n_series, time)``
  one-step predictive log densities, 0 where nothing was observed and NaN
  at steps the model does not score (e.g. ARIMA's first d + sD steps)
- optional ``_predict_gaussian(horizon, history, covariates)`` -> ``(mean, std)``
  each ``(n_series, horizon, dim)``, for models with exact Gaussian marginals
- optional ``_fitted_state()`` / ``_load_fitted_state(meta, tensors)`` for save/load

``data``/``history`` is a :class:`tsgen.data.SeriesBatch`. ``covariates`` is
``None`` or a float64 tensor ``(n_series, rows, features)`` aligned with each
series' own time steps: row ``j`` belongs to step ``j`` of that series, so
for a forecast rows ``length_i .. length_i + horizon - 1`` are the future.
The edge aligns the user's ``X`` to those steps by timestamp when both are
time-indexed and by position otherwise (:func:`tsgen.data.to_covariates`);
``feature_names_in_`` keeps ``X``'s column names (None when it had none).

Covariates come in three kinds (``fit(y, X=..., static=..., past_covariates=...)``):
future-known columns of ``X`` are read over the history and the forecast
steps (``predict(h, X_future=...)`` gives their future rows); the
``past_covariates`` columns of ``X`` are observed with ``y`` and read up to
the forecast origin only: from the origin on they hold their last observed
value (:func:`tsgen.data.hold_past`), so no value after the origin reaches
a forecast, whatever the caller passes; ``static`` covariates, one row per
series, are appended as constant columns after ``X``'s (``n_static_`` of
the ``n_features_`` columns a model sees).
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import torch
from scipy import stats
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from tsgen._partition import by_partition, fit_partitioned
from tsgen._validation import is_int
from tsgen.data import (
    SeriesBatch,
    forecast_output,
    hold_past,
    per_step_output,
    to_covariates,
    to_static,
    to_series_batch,
    unwrap,
    validate_horizon,
)
from tsgen.training.randomness import check_random_state, make_generator

_FORMAT = "tsgen-model"
_FORMAT_VERSION = 1
_REGISTRY: dict[str, type] = {}
_UNSET = object()


def _check_quantiles(quantiles) -> tuple[float, ...]:
    try:
        levels = tuple(float(q) for q in quantiles)
    except TypeError:
        raise TypeError(f"`quantiles` must be a sequence of levels in (0, 1), got {quantiles!r}.") from None
    if any(not 0.0 < q < 1.0 for q in levels):
        raise ValueError(f"`quantiles` must lie strictly between 0 and 1, got {levels}.")
    return levels


def _check_n_samples(n_samples) -> int:
    if not is_int(n_samples) or n_samples < 1:
        raise ValueError(f"`n_samples` must be a positive integer, got {n_samples!r}.")
    return int(n_samples)


def _encode(value):
    """Constructor arguments to JSON, keeping tuples apart from lists."""
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (np.ndarray, torch.Tensor)):
        array = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value)
        return {"__array__": array.tolist(), "dtype": str(array.dtype)}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(
        f"cannot save a model whose constructor argument is a {type(value).__name__}; "
        "only numbers, strings, None and lists/tuples/dicts of them can be saved."
    )


def _decode(value):
    if isinstance(value, dict):
        if set(value) == {"__tuple__"}:
            return tuple(_decode(v) for v in value["__tuple__"])
        if set(value) == {"__array__", "dtype"}:
            return np.asarray(value["__array__"], dtype=value["dtype"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


class BaseForecaster(BaseEstimator):
    """Base class of all tsgen estimators (see the module docstring for the hooks)."""

    #: whether exogenous regressors ``X`` are accepted
    _supports_covariates = False
    #: samples drawn by ``predict`` when the model has no closed-form marginals
    _n_predict_samples = 500
    #: whether ``fit`` on a list fits each series on its own (no shared parameters), so one call can stand for many fits
    _fits_series_independently = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not cls.__name__.startswith("_"):
            _REGISTRY[cls.__name__] = cls

    # ---------------------------------------------------------------- hooks
    def _min_length(self) -> int:
        """Shortest series this configuration can fit."""
        return 1

    def _fit(self, data: SeriesBatch, covariates):
        raise NotImplementedError

    def _sample(self, horizon, n_samples, history, covariates, generator):
        raise NotImplementedError

    def _log_likelihood(self, data, covariates, **options):
        raise NotImplementedError

    def _predict_gaussian(self, horizon, history, covariates):
        return None

    def _total_log_likelihood(self, data, covariates, **options):
        """Optional: ``log p(y)`` per series ``(n_series,)`` by a route faster than
        summing per-step terms, or None to use ``_log_likelihood``."""
        return None

    def _fitted_state(self) -> tuple[dict, dict]:
        return {}, {}

    def _load_fitted_state(self, meta: dict, tensors: dict) -> None:
        pass

    # ---------------------------------------------------------- validation
    def _n_time_features(self) -> int:
        """Columns of ``X`` the model was fitted with (its covariates less the static ones)."""
        return getattr(self, "n_features_", 0) - getattr(self, "n_static_", 0)

    def _past_columns(self) -> tuple:
        return tuple(getattr(self, "past_covariates_", ()))

    def _time_covariates(self, X, batch: SeriesBatch, horizon: int, name: str, history: bool, known_only: bool = False):
        """``X`` aligned to ``batch``'s steps (if ``history``) and ``horizon`` future steps; only the
        future-known columns when ``known_only``."""
        names = getattr(self, "feature_names_in_", None)
        n_features = self._n_time_features()
        keep = [j for j in range(n_features) if not known_only or j not in self._past_columns()]
        unnamed_subset = known_only and names is None and len(keep) < n_features
        if known_only and names is not None:
            names = names[keep]
        covariates, _ = to_covariates(
            X, name, batch.indexes, horizon, history=history, feature_names=names,
            n_features=None if unnamed_subset else len(keep),
            ids=batch.ids, id_col=batch.id_col, time_col=batch.time_col, target=_target(batch),
        )
        if unnamed_subset:  # columns by position: all of X's (the past ones then ignored) or the known ones only
            if covariates.shape[-1] == n_features:
                return covariates[..., keep]
            if covariates.shape[-1] != len(keep):
                raise ValueError(
                    f"`{name}` has {covariates.shape[-1]} columns; expected the model's {n_features} or its "
                    f"{len(keep)} future-known ones."
                )
        return covariates

    def _check_given(self, name: str, given: bool) -> None:
        n_features = self._n_time_features()
        if not given:
            return
        if not self._supports_covariates:
            raise ValueError(f"`{name}` was given but {type(self).__name__} takes no covariates.")
        if not n_features:
            raise ValueError(
                f"`{name}` was given but the model was fitted without covariates; refit with "
                f"`fit(y, X=...)` to use them, or leave `{name}` out."
            )

    def _covariates(self, X, batch: SeriesBatch, horizon: int, name: str = "X", history: bool = True,
                    static=None, continuing: bool = False):
        """All covariates for a fitted model over ``batch``'s steps and ``horizon`` more: ``X`` (past-observed
        columns held from each series' end on) and the static columns (``static``, or the fitted series'
        own when ``continuing``)."""
        self._check_given(name, X is not None)
        n_features = self._n_time_features()
        if X is None and n_features:
            raise ValueError(f"`{name}` is required: the model was fitted with {n_features} covariate(s).")
        time = None if X is None else self._time_covariates(X, batch, horizon, name, history)
        if time is not None and history and horizon:
            time = hold_past(time, batch.lengths, self._past_columns())
        return self._with_static(time, batch, static, continuing, (int(batch.lengths.max()) if history else 0) + horizon)

    def _with_static(self, time, batch: SeriesBatch, static, continuing: bool, rows: int):
        """``time`` covariates with the static columns appended (constant over ``rows``)."""
        n_static = getattr(self, "n_static_", 0)
        if static is not None and not n_static:
            raise ValueError("`static` was given but the model was fitted without static covariates.")
        if not n_static:
            return time
        if static is None:
            if not continuing:
                raise ValueError(
                    f"`static` is required: the model was fitted with {n_static} static covariate(s) "
                    f"{list(self.static_names_)}; give one row per series of `y`."
                )
            values = self.static_
        else:
            values, _ = to_static(static, "static", batch.n_series, batch.ids, feature_names=self.static_names_,
                                  id_col=batch.id_col)
        constant = values[:, None, :].expand(-1, rows if time is None else time.shape[1], -1)
        return constant.clone() if time is None else torch.cat([time, constant.to(time.dtype)], dim=-1)

    def _future_covariates(self, X, history: SeriesBatch, horizon: int, conditioned: bool, X_future=None,
                           static=None):
        """Covariates for history plus future.

        Continuing the fit data (``not conditioned``): the stored history and
        ``X_future`` (or ``X``) for the future-known columns of the
        ``horizon`` steps. Conditioning on a new ``y``: ``X`` over its steps
        and either the horizon too or ``X_future`` for it. Past-observed
        columns never need future rows: they hold their last value.
        """
        if X is not None and X_future is not None and not conditioned:
            raise ValueError("give the future covariates once: `X_future` (or `X`, its older name), not both.")
        n_features = self._n_time_features()
        known = [j for j in range(n_features) if j not in self._past_columns()]
        if conditioned and X_future is None:
            return self._covariates(X, history, horizon, static=static)
        future_X, future_name = (X_future, "X_future") if X_future is not None else (X, "X")
        self._check_given(future_name, future_X is not None)
        if not n_features:
            return self._with_static(None, history, static, not conditioned, int(history.lengths.max()) + horizon)
        if known and future_X is None:
            raise ValueError(
                f"`X` is required: the model was fitted with {len(known)} future-known covariate(s) and needs "
                f"their values over the {horizon} forecast steps (pass them as `X_future`)."
            )
        if conditioned:
            self._check_given("X", X is not None)
            if X is None:
                raise ValueError(f"`X` is required with `y`: the model was fitted with {n_features} covariate(s).")
            past = self._time_covariates(X, history, 0, "X", True)
        else:
            past = self.covariates_[..., :n_features]
        future = None if not known else self._time_covariates(future_X, history, horizon, future_name, False,
                                                               known_only=True)
        lengths = history.lengths
        combined = torch.zeros(history.n_series, int(lengths.max()) + horizon, n_features, dtype=past.dtype)
        combined[:, : past.shape[1]] = past[:, : combined.shape[1]]
        if future is not None:
            series = torch.arange(history.n_series)[:, None]
            steps = lengths[:, None] + torch.arange(horizon)[None, :]
            block = combined[series, steps]
            block[..., known] = future[:, :horizon].to(combined.dtype)
            combined[series, steps] = block
        combined = hold_past(combined, lengths, self._past_columns())
        return self._with_static(combined, history, static, not conditioned, combined.shape[1])

    def _history(self, y) -> tuple[SeriesBatch, bool]:
        if y is None:
            if self.history_ is None:
                raise ValueError(
                    "`y` is required: this model was built from fixed parameters and has no "
                    "fitted series to continue."
                )
            return self.history_, False
        return self._new_series(y, self._min_length()), True

    def _new_series(self, y, min_length: int) -> SeriesBatch:
        """``y`` given to a fitted model (to continue or to score) as a batch it can pair with its fits."""
        batch = to_series_batch(y, "y", min_length)
        if batch.n_dims != self.n_dims_:
            raise ValueError(f"`y` has {batch.n_dims} variables; the model was fitted on {self.n_dims_}.")
        fitted = self.history_
        if (self._fits_series_independently and batch.is_panel and fitted is not None and fitted.is_panel
                and fitted.n_series > 1 and batch.ids != fitted.ids):
            # each series has its own fitted parameters, paired with y's series by position: other ids
            # would silently take another series' model
            unknown = [key for key in batch.ids if key not in set(fitted.ids)]
            lacking = [key for key in fitted.ids if key not in set(batch.ids)]
            found = (f"has series {unknown[0]!r}, which the model was not fitted on" if unknown
                     else f"lacks the fitted series {lacking[0]!r}")
            raise ValueError(
                f"`y` {found}: {type(self).__name__} fits each series' own parameters, so `y` must hold the "
                f"{fitted.n_series} fitted series (refit to forecast others)."
            )
        return batch

    # -------------------------------------------------------------- public
    def fit(self, y, X=None, static=None, past_covariates=None):
        """Fit the model to ``y``; returns ``self``.

        Parameters
        ----------
        y : Series, DataFrame, array, a list of them, a dict ``{id: series}`` or a long frame
        X : time-varying covariates aligned with ``y`` by timestamp (see :func:`tsgen.data.to_covariates`;
            for panel ``y`` also a long frame keyed by id and time, or a dict by id)
        static : covariates with one row per series (a frame indexed by id for panel ``y``)
        past_covariates : names (or positions) of ``X``'s columns that are observed with ``y`` and unknown
            in advance: forecasts read them up to the origin only (see the module docstring)
        """
        # checked at use, not in the constructor (scikit-learn's contract), before any work
        check_random_state(self.random_state)
        data = to_series_batch(y, "y", self._min_length())
        covariates, names, static_values, static_names = None, None, None, ()
        if (X is not None or static is not None) and not self._supports_covariates:
            raise ValueError(f"`{'X' if X is not None else 'static'}` was given but {type(self).__name__} "
                             "takes no covariates.")
        if X is not None:
            covariates, names = to_covariates(X, "X", data.indexes, ids=data.ids, id_col=data.id_col,
                                              time_col=data.time_col, target=_target(data))
        past = _past_positions(past_covariates, names, 0 if covariates is None else covariates.shape[-1])
        if static is not None:
            static_values, static_names = to_static(static, "static", data.n_series, data.ids, id_col=data.id_col)
            rows = int(data.lengths.max()) if covariates is None else covariates.shape[1]
            constant = static_values[:, None, :].expand(-1, rows, -1)
            covariates = constant.clone() if covariates is None else torch.cat([covariates, constant], dim=-1)
        # set before `_fit` so that a model can name its coefficients after X's columns
        previous = self.__dict__.get("feature_names_in_", _UNSET)
        self.feature_names_in_ = None if names is None else np.asarray(names, dtype=object)
        try:
            # many series of a per-series model: partitions through tsgen.set_config's backend
            if not fit_partitioned(self, data, covariates):
                self._fit(data, covariates)
        except BaseException:
            if previous is _UNSET:
                del self.feature_names_in_
            else:
                self.feature_names_in_ = previous
            raise
        self.history_ = data
        self.n_dims_ = data.n_dims
        self.n_features_ = 0 if covariates is None else covariates.shape[-1]
        self.covariates_ = covariates
        self.n_static_ = len(static_names)
        self.static_ = static_values
        self.static_names_ = tuple(static_names)
        self.past_covariates_ = past
        return self

    def sample(self, horizon, n_samples=100, y=None, X=None, *, X_future=None, static=None):
        """Joint sample paths ``(n_samples, horizon, n_dims)`` (a list of them for many series, a dict by id
        for panel input); ``X_future``/``static`` as in :meth:`predict`."""
        check_is_fitted(self)
        horizon = validate_horizon(horizon)
        n_samples = _check_n_samples(n_samples)
        history, covariates = self._conditioning(horizon, y, X, X_future, static)
        return unwrap(history, list(by_partition(self, "_draw_paths", horizon, n_samples, history, covariates)))

    def predict(self, horizon, y=None, X=None, quantiles=(0.05, 0.5, 0.95), *, X_future=None, static=None):
        """Forecast frame(s): ``mean`` and one ``q<level>`` column per quantile (one long frame keyed by id
        and time for panel input).

        ``X_future``: the future-known covariates over the ``horizon`` steps
        (``X`` is its older name when continuing the fitted series; with a
        new ``y``, ``X`` covers ``y``'s steps and, without ``X_future``, the
        horizon too). ``static``: one row per series of a new ``y``.
        """
        check_is_fitted(self)
        horizon = validate_horizon(horizon)
        levels = _check_quantiles(quantiles)
        history, covariates = self._conditioning(horizon, y, X, X_future, static)
        mean, bands = by_partition(self, "_forecast", horizon, history, covariates, levels)
        return forecast_output(history, mean, bands)

    # ------------------------------------------- array-level results (no pandas)
    def _conditioning(self, horizon, y, X, X_future=None, static=None):
        """The validated history to continue and its covariates over history and horizon."""
        history, conditioned = self._history(y)
        return history, self._future_covariates(X, history, horizon, conditioned, X_future, static)

    def _draw_paths(self, horizon, n_samples, history, covariates) -> np.ndarray:
        """Joint sample paths ``(series, n_samples, horizon, n_dims)``."""
        draws = self._sample(horizon, n_samples, history, covariates, make_generator(self.random_state))
        return draws.detach().cpu().numpy()

    def _forecast(self, horizon, history, covariates, levels) -> tuple[np.ndarray, dict]:
        """Predictive mean ``(series, horizon, n_dims)`` and one such array per quantile level."""
        gaussian = self._predict_gaussian(horizon, history, covariates)
        if gaussian is not None:
            mean, std = (t.detach().cpu().numpy() for t in gaussian)
            return mean, {q: mean + stats.norm.ppf(q) * std for q in levels}
        draws = self._sample(
            horizon, self._n_predict_samples, history, covariates, make_generator(self.random_state)
        ).detach().cpu()
        qs = torch.quantile(draws, torch.tensor(levels, dtype=draws.dtype), dim=1).numpy()
        return draws.mean(1).numpy(), {q: qs[k] for k, q in enumerate(levels)}

    def _per_step_log_likelihood(self, data: SeriesBatch, covariates, **options) -> np.ndarray:
        """``log p(y_t | y_<t)`` ``(series, time)``; NaN where nothing was observed or past a series' end."""
        values = self._log_likelihood(data, covariates, **options).detach().cpu().numpy().astype(float)
        observed = data.mask.any(-1).numpy()
        return np.where(observed, values, np.nan)

    def log_likelihood(self, y, per_step=False, X=None, *, static=None, **options):
        """Total ``log p(y)``, or per-step ``log p(y_t | y_<t)`` as Series when ``per_step``."""
        check_is_fitted(self)
        self._check_likelihood_options(options)
        data = self._new_series(y, 1)
        covariates = self._covariates(X, data, 0, static=static)
        if not per_step:
            totals = by_partition(self, "_total_log_likelihood", data, covariates, **options)
            if totals is not None:
                return float(totals.sum())
        per_step_values = by_partition(self, "_per_step_log_likelihood", data, covariates, **options)
        if per_step:
            return per_step_output(data, per_step_values)
        return float(np.nansum(per_step_values))

    def _check_likelihood_options(self, options: dict) -> None:
        """Refuse options that ``_log_likelihood`` does not name, listing the ones it takes (a misspelt
        ``n_particle=`` reached Python's "_log_likelihood() got an unexpected keyword argument")."""
        parameters = inspect.signature(self._log_likelihood).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            return  # the model checks its own options
        unknown = sorted(set(options) - set(parameters))
        if unknown:
            # a leading underscore marks an option the estimator passes itself, not one for the user
            accepted = [n for n in list(parameters)[2:] if not n.startswith("_")]
            takes = f"it takes {accepted}" if accepted else "it takes none"
            raise TypeError(f"{type(self).__name__}.log_likelihood got unknown option(s) {unknown}; {takes}.")

    def score(self, y, X=None, *, static=None):
        """Mean log-likelihood per observed value (higher is better)."""
        data = to_series_batch(y, "y", 1)
        return self.log_likelihood(data, X=X, static=static) / data.n_observed

    #: fitted attributes that describe the fit as a whole, not one series
    _SHARED_ATTRIBUTES = frozenset({"history_", "covariates_", "n_dims_", "n_features_", "feature_names_in_",
                                    "n_static_", "static_", "static_names_", "past_covariates_"})

    def per_series(self):
        """The per-series fitted attributes as one frame indexed by series id.

        One row per fitted series (its id for panel input, a long frame or a
        dict, else its position), one column per fitted attribute that holds
        one value per series (e.g. ARIMA's ``order_``, ``llf_``, ``aicc_``);
        an attribute holding a dict per series (``params_``) gives one
        column per key, named ``params_<key>``. The attributes themselves
        are unchanged (lists in series order for many series).
        """
        import pandas as pd

        check_is_fitted(self)
        if self.history_ is None:
            raise ValueError("per_series needs fitted series; this model was built from fixed parameters.")
        ids = list(self.history_.series_ids)
        many = self.history_.is_collection
        columns = {}
        for name, value in sorted(vars(self).items()):
            if not name.endswith("_") or name.startswith("_") or name in self._SHARED_ATTRIBUTES:
                continue
            if many and not (isinstance(value, list) and len(value) == len(ids)):
                continue
            values = value if many else [value]
            if all(isinstance(v, dict) for v in values):
                for key in dict.fromkeys(k for v in values for k in v):
                    columns[f"{name}{key}"] = [v.get(key, np.nan) for v in values]
            else:
                columns[name] = values
        return pd.DataFrame(columns, index=pd.Index(ids, name=self.history_.id_col if many else None))

    # ------------------------------------------------------------ save/load
    def save(self, path) -> None:
        """Store a JSON config and tensors; :func:`tsgen.load` never unpickles objects."""
        check_is_fitted(self)
        write_payload(path, *self._to_payload())

    def _to_payload(self) -> tuple[dict, dict]:
        """``(meta, tensors)``: JSON-ready metadata and the tensors that :meth:`_from_payload` rebuilds from."""
        fitted_meta, tensors = self._fitted_state()
        all_tensors = {f"model.{k}": v.detach().cpu() for k, v in tensors.items()}
        history_meta = None
        if self.history_ is not None:
            history_meta, history_tensors = self.history_.to_spec()
            all_tensors.update({f"history.{k}": v for k, v in history_tensors.items()})
        if self.covariates_ is not None:
            all_tensors["covariates"] = self.covariates_
        if getattr(self, "static_", None) is not None:
            all_tensors["static"] = self.static_
        meta = {
            "class": type(self).__name__,
            "params": _encode(self.get_params(deep=False)),
            "fitted": fitted_meta,
            "history": history_meta,
            "n_dims": self.n_dims_,
            "n_features": self.n_features_,
            "n_static": getattr(self, "n_static_", 0),
            "static_names": list(getattr(self, "static_names_", ())),
            "past_covariates": list(getattr(self, "past_covariates_", ())),
            "feature_names": None if getattr(self, "feature_names_in_", None) is None
            else [str(c) for c in self.feature_names_in_],
        }
        return meta, all_tensors

    @classmethod
    def _from_payload(cls, meta: dict, tensors: dict):
        _check_stored_sizes(meta, tensors)
        model = cls(**_decode(meta["params"]))
        model.history_ = None if meta["history"] is None else SeriesBatch.from_spec(
            meta["history"], {k[len("history."):]: v for k, v in tensors.items() if k.startswith("history.")}
        )
        model.n_dims_ = meta["n_dims"]
        model.n_features_ = meta["n_features"]
        model.covariates_ = tensors.get("covariates")
        model.n_static_ = int(meta.get("n_static", 0))
        model.static_ = tensors.get("static")
        model.static_names_ = tuple(meta.get("static_names", ()))
        model.past_covariates_ = tuple(int(j) for j in meta.get("past_covariates", ()))
        if meta.get("feature_names") is not None:  # X's columns are then matched by name, as before saving
            model.feature_names_in_ = np.asarray(meta["feature_names"], dtype=object)
        model._load_fitted_state(
            meta["fitted"], {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        )
        return model


def _target(batch: SeriesBatch) -> tuple:
    """The value columns of panel ``y`` (named by its long frame), which no covariate may be."""
    return tuple(batch.columns) if batch.is_panel else ()


def _past_positions(past_covariates, names, n_features: int) -> tuple:
    """``fit``'s ``past_covariates`` (column names of ``X``, or positions) as sorted column positions."""
    if past_covariates is None:
        return ()
    if isinstance(past_covariates, (str, int, np.integer)):
        past_covariates = [past_covariates]
    if not n_features:
        raise ValueError("`past_covariates` names columns of `X`, but no `X` was given.")
    positions = []
    for column in past_covariates:
        if is_int(column) and 0 <= int(column) < n_features:
            positions.append(int(column))
        elif names is not None and column in names:
            positions.append(list(names).index(column))
        else:
            raise ValueError(
                f"`past_covariates` must name columns of `X` ({list(names) if names else f'positions 0..{n_features - 1}'}); "
                f"got {column!r}."
            )
    return tuple(sorted(set(positions)))


def register_saveable(cls: type) -> type:
    """Let :func:`load` rebuild ``cls`` (a class with ``_to_payload``/``_from_payload``, e.g. AnomalyDetector)."""
    _REGISTRY[cls.__name__] = cls
    return cls


def saved_class(name, path, base: type = object) -> type:
    """The registered class a file names, importing tsgen's public one on first use; never any other object."""
    cls = _REGISTRY.get(name) if isinstance(name, str) else None
    if cls is None and isinstance(name, str):
        # tsgen imports its estimators on first use: a fresh process may not have this one yet
        import tsgen

        if name in tsgen.__all__:
            getattr(tsgen, name)
            cls = _REGISTRY.get(name)
    if cls is None or not issubclass(cls, base):
        raise ValueError(f"unknown model class {name!r} in {str(path)!r}.")
    return cls


def write_payload(path, meta: dict, tensors: dict) -> None:
    """The one file format of :func:`load`: JSON metadata and a flat dict of tensors (``weights_only`` safe)."""
    meta = {"format": _FORMAT, "version": _FORMAT_VERSION, **meta}
    torch.save({"meta": json.dumps(meta), "tensors": tensors}, Path(path))


def load(path):
    """Load an estimator (or AnomalyDetector) written by ``save``.

    Safe on any file: only tensors and JSON are read (``weights_only``, so no
    crafted file runs code), and a file that is not a complete tsgen model
    file of a known format version -- empty, truncated, garbage, another
    program's, or with sizes or parameters that do not fit its configuration
    -- raises ``ValueError("not a tsgen model file: ...")``.
    """
    try:
        payload = torch.load(Path(path), weights_only=True, map_location="cpu")
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as error:  # noqa: BLE001 - torch.load fails in many types (EOF, zip, unpickling)
        raise _not_a_model_file(path, f"unreadable: {type(error).__name__}") from error
    if (
        not isinstance(payload, dict)
        or set(payload) != {"meta", "tensors"}
        or not isinstance(payload["meta"], str)
        or not isinstance(payload["tensors"], dict)
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in payload["tensors"].items())
    ):
        raise _not_a_model_file(path, "it does not hold JSON metadata and named tensors")
    try:
        meta = json.loads(payload["meta"])
    except json.JSONDecodeError:
        raise _not_a_model_file(path, "its metadata is not JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        raise _not_a_model_file(path, f"no {_FORMAT!r} format marker")
    version = meta.get("version")
    if not is_int(version) or version < 1:
        raise _not_a_model_file(path, f"invalid format version {version!r}")
    if version > _FORMAT_VERSION:
        raise ValueError(
            f"not a tsgen model file for this version of tsgen: {str(path)!r} has format version "
            f"{version}; this tsgen reads versions up to {_FORMAT_VERSION}. Upgrade tsgen to load it."
        )
    tensors = payload["tensors"]
    try:
        return saved_class(meta.get("class"), path)._from_payload(meta, tensors)
    except (KeyError, TypeError, IndexError, AttributeError, RuntimeError, ValueError) as error:
        detail = f"missing entry {error}" if isinstance(error, KeyError) else str(error)
        raise _not_a_model_file(path, detail) from error


def _not_a_model_file(path, reason: str) -> ValueError:
    return ValueError(f"not a tsgen model file: {str(path)!r} ({reason}).")


def _check_stored_sizes(meta: dict, tensors: dict) -> None:
    """The sizes of the stored history and covariates agree with each other and the metadata."""
    n_dims, n_features = meta.get("n_dims"), meta.get("n_features", 0)
    history = meta.get("history")
    if not (is_int(n_dims) and n_dims >= 1 and is_int(n_features) and n_features >= 0):
        raise ValueError(f"stored sizes n_dims={n_dims!r}, n_features={n_features!r} are invalid")
    if history is None:
        return
    values, mask, lengths = (tensors.get(f"history.{k}") for k in ("values", "mask", "lengths"))
    if values is None or mask is None or lengths is None:
        raise ValueError("the stored history is incomplete")
    if values.dim() != 3 or not values.is_floating_point() or values.shape[-1] != n_dims:
        raise ValueError(f"stored history values have shape {tuple(values.shape)}; expected (series, time, {n_dims})")
    if mask.dtype != torch.bool or mask.shape != values.shape:
        raise ValueError("the stored history mask does not match its values")
    n_series, n_times = values.shape[:2]
    if lengths.shape != (n_series,) or lengths.is_floating_point() or bool(
        ((lengths < 1) | (lengths > n_times)).any()
    ):
        raise ValueError(f"stored history lengths must be {n_series} integers in 1..{n_times}")
    if not bool(torch.isfinite(values[mask]).all()):
        raise ValueError("the stored history has non-finite observed values")
    indexes = history.get("indexes")
    if not isinstance(indexes, list) or len(indexes) != n_series or any(
        not isinstance(ix, dict) or ix.get("length") != int(n) for ix, n in zip(indexes, lengths.tolist())
    ):
        raise ValueError("the stored time indexes do not match the stored history lengths")
    covariates = tensors.get("covariates")
    if covariates is not None and (
        covariates.dim() != 3
        or covariates.shape[0] != n_series
        or covariates.shape[-1] != n_features
        or not bool(torch.isfinite(covariates).all())
    ):
        raise ValueError(f"stored covariates must be finite, shaped ({n_series}, rows, {n_features})")
    static, n_static = tensors.get("static"), meta.get("n_static", 0)
    if (static is None) != (not n_static) or (static is not None and (
            static.shape != (n_series, n_static) or not bool(torch.isfinite(static).all()))):
        raise ValueError(f"stored static covariates must be finite, shaped ({n_series}, {n_static})")

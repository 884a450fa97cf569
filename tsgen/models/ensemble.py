"""Forecast combination: a weighted mixture (linear pool) of tsgen estimators.

``Ensemble([m_1, ..., m_K], weights)`` fits every member on the same data
and combines their forecast distributions with weights ``w_k`` (fixed,
equal, or learned from each member's rolling-origin CRPS):

- ``sample`` mixes whole sample paths: each path comes from one member,
  drawn with probability ``w_k``, so at every step the paths follow the
  mixture ``sum_k w_k F_k`` of the members' marginals and within a path
  each member's own dependence across steps is kept;
- ``predict`` gives the mixture's mean ``sum_k w_k mean_k`` and either the
  mixture's quantiles (``combine="mixture"``: exact, by bisection on
  ``sum_k w_k F_k(x) = q``, when every member has Gaussian marginals; from
  mixture samples otherwise) or the weighted average of the members'
  quantiles (``combine="quantile"``, Vincentization: a sharper
  distribution whose quantiles are averaged rather than its probabilities);
- ``log_likelihood(per_step=True)`` is ``log sum_k w_k p_k(y_t | y_<t)``,
  the one-step predictive density of the linear pool (the forecast the
  ensemble issues one step ahead), and the total is their sum, the
  prequential log-likelihood of the pool.

Covariates (``fit(y, X=..., static=..., past_covariates=...)``,
``predict(h, X_future=...)``) go to every member as given, so each member
fits and forecasts with them as it would alone (the ``"crps"`` backtest
too); every member must then take covariates.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from scipy import stats
from scipy.special import logsumexp
from sklearn.base import clone
from sklearn.utils.validation import check_is_fitted

from tsgen._config import nested_work
from tsgen._validation import is_int
from tsgen.base import BaseForecaster, _decode, _encode, saved_class
from tsgen.data import SeriesBatch
from tsgen.training.randomness import check_random_state

_COMBINE = ("mixture", "quantile")
_BISECTION_STEPS = 80


def _mixture_quantiles(weights, means, stds, levels) -> dict[float, np.ndarray]:
    """Quantiles of ``sum_k w_k N(mean_k, std_k^2)``; means/stds ``(K, ...)``, by bisection on the CDF."""
    w = weights.reshape((-1,) + (1,) * (means.ndim - 1))
    safe = np.maximum(stds, 1e-300)
    out = {}
    for q in levels:
        z = stats.norm.ppf(q)
        # the mixture's q-quantile lies between the members' own q-quantiles
        lo = (means + z * stds).min(0)
        hi = (means + z * stds).max(0)
        for _ in range(_BISECTION_STEPS):
            mid = 0.5 * (lo + hi)
            below = (w * stats.norm.cdf((mid - means) / safe)).sum(0) < q
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
        out[q] = 0.5 * (lo + hi)
    return out


class Ensemble(BaseForecaster):
    """Weighted mixture of tsgen estimators (see the module docstring).

    ``X``, ``X_future`` and ``static`` are passed through to the members,
    which must all take covariates (e.g. ``ARIMA``, ``RNNForecaster``).

    Parameters
    ----------
    models : list of tsgen estimators
        The members (unfitted templates; each is cloned and fitted on the
        same data).
    weights : None, "crps" or sequence of K non-negative floats
        None: equal weights. A sequence: fixed weights (normalised to sum
        to 1). ``"crps"``: weights proportional to ``1 / CRPS_k``, the
        member's mean CRPS over a rolling-origin backtest of ``horizon``
        steps at the last ``n_windows`` origins of the training data.
    combine : {"mixture", "quantile"}
        How ``predict`` combines quantiles: the mixture's quantiles, or the
        weighted average of the members' quantiles.
    horizon, n_windows : int
        The backtest of ``weights="crps"`` (unused otherwise).
    random_state : int or None
        Seeds the mixing of paths, the backtest, and members that have no
        seed of their own (member k gets ``random_state + k``).

    Attributes
    ----------
    models_ : list of fitted estimators
    weights_ : ndarray (K,)
        The normalised weights.
    crps_ : ndarray (K,) or None
        Each member's backtest CRPS (``weights="crps"`` only).
    """

    # passed through to the members, which must each take them (checked in `fit`, naming the member)
    _supports_covariates = True

    def __init__(self, models=None, weights=None, combine="mixture", horizon=6, n_windows=10, random_state=None):
        self.models = models
        self.weights = weights
        self.combine = combine
        self.horizon = horizon
        self.n_windows = n_windows
        self.random_state = random_state

    @classmethod
    def get_test_params(cls):
        from tsgen.models.baselines import Drift, Mean, Naive

        return [
            {"models": [Naive(), Drift()], "random_state": 0},
            {"models": [Mean(), Naive()], "weights": "crps", "combine": "quantile", "horizon": 3, "n_windows": 5,
             "random_state": 0},
        ]

    # ------------------------------------------------------------ validation
    def _fixed_weights(self) -> np.ndarray | None:
        """Normalised fixed weights, None for ``"crps"``."""
        k = len(self.models)
        if self.weights is None:
            return np.full(k, 1.0 / k)
        if isinstance(self.weights, str):
            if self.weights != "crps":
                raise ValueError(f"`weights` must be None, 'crps' or a sequence of {k} floats; got {self.weights!r}.")
            return None
        try:
            w = np.asarray(self.weights, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"`weights` must be None, 'crps' or a sequence of {k} floats; got {self.weights!r}.") from None
        if w.shape != (k,) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError(
                f"`weights` must be {k} finite non-negative numbers (one per model) with a positive sum; got {w.tolist()}."
            )
        return w / w.sum()

    def _validate(self):
        if not isinstance(self.models, (list, tuple)) or len(self.models) == 0:
            raise TypeError(f"`models` must be a non-empty list of tsgen estimators; got {self.models!r}.")
        for i, model in enumerate(self.models):
            if not isinstance(model, BaseForecaster):
                raise TypeError(f"`models[{i}]` must be a tsgen estimator; got {type(model).__name__}.")
        if self.combine not in _COMBINE:
            raise ValueError(f"`combine` must be one of {_COMBINE}; got {self.combine!r}.")
        for name in ("horizon", "n_windows"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ValueError(f"`{name}` must be a positive int; got {value!r}.")
        self._fixed_weights()

    def _min_length(self) -> int:
        # the first thing fit asks, so the arguments are checked before the data
        self._validate()
        need = max(m._min_length() for m in self.models)
        return need + self.horizon + self.n_windows - 1 if isinstance(self.weights, str) else need

    def _history(self, y):
        # another history only has to be long enough for the members, not for the weight backtest
        if y is None:
            return super()._history(None)
        return self.models_[int(np.argmax([m._min_length() for m in self.models_]))]._history(y)

    # ----------------------------------------------------------------- fit
    def fit(self, y, X=None, static=None, past_covariates=None):
        """Fit every member on ``y`` (with the covariates, as each would be fitted alone); returns ``self``."""
        self._validate()
        for name, value in (("X", X), ("static", static)):
            if value is None:
                continue
            refusing = [(i, m) for i, m in enumerate(self.models) if not m._supports_covariates]
            if refusing:
                i, member = refusing[0]
                raise ValueError(
                    f"`{name}` was given but the ensemble's member `models[{i}]` ({type(member).__name__}) takes "
                    "no covariates; use members that take them (e.g. ARIMA) or leave the covariates out."
                )
        # the members need the covariates as the user gave them (to fit and name them as they would alone)
        self._member_inputs = {"X": X, "static": static, "past_covariates": past_covariates}
        try:
            return super().fit(y, X=X, static=static, past_covariates=past_covariates)
        finally:
            del self._member_inputs

    def _fit(self, data: SeriesBatch, covariates):
        from tsgen.evaluation import aggregate, backtest

        inputs = getattr(self, "_member_inputs", {})
        weights = self._fixed_weights()
        self.crps_ = None
        if weights is None:
            crps = []
            for model in self.models:
                result = backtest(model, data, self.horizon, start=-(self.horizon + self.n_windows - 1),
                                  refit=False, random_state=self.random_state, **inputs)
                crps.append(float(aggregate(result.metrics, result.forecasts)["crps"]))
            self.crps_ = np.asarray(crps)
            if not (np.isfinite(self.crps_).all() and (self.crps_ > 0).all()):
                raise ValueError(f"the members' backtest CRPS must be finite and positive to weigh them; got {crps}.")
            weights = (1.0 / self.crps_) / (1.0 / self.crps_).sum()
        members = []
        for k, template in enumerate(self.models):
            model = clone(template)
            params = model.get_params(deep=False)
            if "random_state" in params and params["random_state"] is None and self.random_state is not None:
                model.set_params(random_state=int(self.random_state) + k)
            with nested_work():  # a member's training bar stays hidden unless tsgen.set_config(progress=True)
                members.append(model.fit(data, **inputs))
        self.models_ = members
        self.weights_ = weights

    # ------------------------------------------------------------ forecasts
    def _draw_paths(self, horizon, n_samples, history, covariates) -> np.ndarray:
        generator = np.random.default_rng(check_random_state(self.random_state))
        counts = generator.multinomial(n_samples, self.weights_)
        parts = [m._draw_paths(horizon, int(c), history, covariates) for m, c in zip(self.models_, counts) if c > 0]
        paths = np.concatenate(parts, axis=1)  # (series, n_samples, horizon, dims)
        # shuffled so that the member a path comes from does not depend on its position
        return paths[:, generator.permutation(n_samples)]

    def _forecast(self, horizon, history, covariates, levels):
        # the members were fitted on the same covariates: the ensemble's columns are theirs
        members = [m._forecast(horizon, history, covariates, levels) for m in self.models_]
        w = self.weights_.reshape(-1, 1, 1, 1)
        mean = (w * np.stack([mu for mu, _ in members])).sum(0)
        if self.combine == "quantile" or not levels:
            return mean, {q: (w * np.stack([bands[q] for _, bands in members])).sum(0) for q in levels}
        mixture = self._predict_mixture(horizon, history, covariates)
        if mixture is not None:
            return mean, _mixture_quantiles(*mixture, levels)
        draws = self._draw_paths(horizon, self._n_predict_samples, history, covariates)
        qs = np.quantile(draws, levels, axis=1)
        return mean, {q: qs[k] for k, q in enumerate(levels)}

    def _predict_mixture(self, horizon, history, covariates):
        """The exact marginals ``sum_k w_k N(mean_k, std_k^2)`` as ``(weights (K,), means, stds)`` (each
        ``(K, series, horizon, dim)``) when every member's are Gaussian in closed form, else None (a backtest
        then scores its CRPS exactly)."""
        gaussian = [m._predict_gaussian(horizon, history, covariates) for m in self.models_]
        if any(g is None for g in gaussian):
            return None
        means = np.stack([g[0].detach().cpu().numpy() for g in gaussian])
        stds = np.stack([g[1].detach().cpu().numpy() for g in gaussian])
        return self.weights_, means, stds

    # --------------------------------------------------------- likelihoods
    def _per_step_log_likelihood(self, data, covariates, **options):
        steps = np.stack([m._per_step_log_likelihood(data, covariates, **options) for m in self.models_])
        scored = ~np.isnan(steps)
        with np.errstate(divide="ignore"):
            log_w = np.log(self.weights_).reshape(-1, 1, 1)
        # a member that does not score a step (e.g. ARIMA's first d steps) leaves it unscored for the pool
        pooled = logsumexp(np.where(scored, steps, 0.0) + log_w, axis=0)
        return np.where(scored.all(0), pooled, np.nan)

    # ------------------------------------------------------------ save/load
    def _fitted_state(self):
        meta, tensors = {"members": []}, {"weights": torch.as_tensor(self.weights_)}
        if self.crps_ is not None:
            tensors["crps"] = torch.as_tensor(self.crps_)
        for k, model in enumerate(self.models_):
            member_meta, member_tensors = model._to_payload()
            meta["members"].append(member_meta)
            tensors.update({f"member{k}.{name}": v for name, v in member_tensors.items()})
        return meta, tensors

    def _load_fitted_state(self, meta, tensors):
        members = []
        for k, member_meta in enumerate(meta["members"]):
            prefix = f"member{k}."
            cls = saved_class(member_meta["class"], "an ensemble member", BaseForecaster)
            members.append(cls._from_payload(
                member_meta, {n[len(prefix):]: v for n, v in tensors.items() if n.startswith(prefix)}))
        self.models_ = members
        self.weights_ = tensors["weights"].numpy().astype(np.float64)
        self.crps_ = tensors["crps"].numpy().astype(np.float64) if "crps" in tensors else None

    def _to_payload(self):
        check_is_fitted(self)
        # the templates are stored by class and parameters, not as a JSON constructor argument
        shallow = copy.copy(self)
        shallow.models = None
        meta, tensors = BaseForecaster._to_payload(shallow)
        meta["templates"] = [{"class": type(m).__name__, "params": _encode(m.get_params(deep=False))}
                             for m in self.models]
        return meta, tensors

    @classmethod
    def _from_payload(cls, meta, tensors):
        ensemble = super()._from_payload(meta, tensors)
        templates = [saved_class(t["class"], "an ensemble member", BaseForecaster)(**_decode(t["params"]))
                     for t in meta["templates"]]
        ensemble.set_params(models=templates)
        return ensemble

"""Likelihood-based anomaly detection with any tsgen estimator."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, clone
from sklearn.utils.validation import check_is_fitted

from tsgen._validation import is_int
from tsgen.anomaly._spot import SPOT, _check_probability
from tsgen.base import BaseForecaster, _decode, _encode, register_saveable, saved_class, write_payload
from tsgen.data import SeriesBatch, future_index, to_series_batch

METHODS = ("spot", "quantile")


class AnomalyDetector(BaseEstimator):
    """Flag observations that the model finds improbable.

    The anomaly score of step ``t`` is the negative one-step predictive
    log-density under the fitted model,

        s_t = -log p(y_t | y_{<t}),

    taken from ``model.log_likelihood(y, per_step=True)`` (exact for the
    Kalman/ARIMA/RNN models; for latent models, whose estimators set
    ``_latent_model``, the one-step densities of a particle filter with
    ``n_particles`` particles, ``method="smc"``, causal by construction; a
    multivariate ``y_t`` is scored jointly), optionally averaged over the
    last ``window`` steps. Steps with nothing observed score NaN and are
    never flagged. A step is an anomaly when its score exceeds the
    threshold, set on the training scores either as their
    ``1 - false_alarm_rate`` quantile or by peaks-over-threshold extreme
    value theory (SPOT, Siffer et al. 2017), which extrapolates the tail so
    that small false-alarm rates need no huge training set.

    Parameters
    ----------
    model : tsgen estimator
        Unfitted template; :meth:`fit` fits a clone on (mostly normal) data.
    method : {"spot", "quantile"}
        How the threshold is set from the training scores.
    false_alarm_rate : float
        Target probability that a normal step is flagged.
    window : int
        Number of steps the scores are averaged over (1 = pointwise).
    spot_level : float
        Quantile of the training scores used as SPOT's initial threshold.
    adapt : bool
        With ``method="spot"``, let :meth:`update` refine the threshold
        with the new non-anomalous peaks (the streaming SPOT algorithm).
    n_particles : int
        Particles of the filter that scores a latent model (ignored for
        models with an exact likelihood).

    Attributes
    ----------
    model_ : fitted estimator
    threshold_ : float
    train_scores_ : pd.Series

    A fitted detector is saved with :meth:`save` and restored with
    :func:`tsgen.load` in the estimators' format (JSON and tensors, no
    pickle): the fitted model, the threshold, SPOT's peaks and the data
    seen so far, so that :meth:`update` continues where it stopped.
    """

    def __init__(self, model, method="spot", false_alarm_rate=0.01, window=1, spot_level=0.98, adapt=True,
                 n_particles=1000):
        self.model = model
        self.method = method
        self.false_alarm_rate = false_alarm_rate
        self.window = window
        self.spot_level = spot_level
        self.adapt = adapt
        self.n_particles = n_particles

    def _validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"`method` must be one of {METHODS}; got {self.method!r}.")
        _check_probability(self.false_alarm_rate, "false_alarm_rate")
        if isinstance(self.window, bool) or not isinstance(self.window, (int, np.integer)) or self.window < 1:
            raise ValueError(f"`window` must be a positive int; got {self.window!r}.")
        if not hasattr(self.model, "log_likelihood"):
            raise TypeError(f"`model` must be a tsgen estimator with log_likelihood; got {type(self.model).__name__}.")
        if not is_int(self.n_particles) or self.n_particles < 2:
            raise ValueError(f"`n_particles` must be an integer >= 2; got {self.n_particles!r}.")

    def fit(self, y, X=None) -> "AnomalyDetector":
        """Fit a clone of ``model`` on ``y`` and set the threshold from ``y``'s own scores."""
        self._validate()
        batch = to_series_batch(y, "y")
        if batch.is_collection:
            raise TypeError("`y` must be one Series or DataFrame: fit one detector per series.")
        self.model_ = clone(self.model).fit(y, X=X)
        self.history_ = y.copy() if hasattr(y, "copy") else np.array(y, copy=True)
        self.train_scores_ = self._aggregate(self._raw_scores(y, X))
        if self.method == "spot":
            self.spot_ = SPOT(self.false_alarm_rate, self.spot_level).fit(self.train_scores_.to_numpy())
            self.threshold_ = self.spot_.threshold_
        else:
            self.threshold_ = float(np.nanquantile(self.train_scores_.to_numpy(), 1 - self.false_alarm_rate))
        return self

    def _raw_scores(self, y, X=None) -> pd.Series:
        options = {}
        if getattr(self.model_, "_latent_model", False):  # a particle estimate, not a difference of bounds
            options = {"method": "smc", "n_particles": self.n_particles}
        log_density = self.model_.log_likelihood(y, per_step=True, X=X, **options)
        return (0.0 - log_density).rename("anomaly_score")  # 0.0 - keeps exact zeros unsigned

    def _aggregate(self, raw: pd.Series) -> pd.Series:
        if self.window == 1:
            return raw
        smoothed = raw.rolling(self.window, min_periods=1).mean()
        return smoothed.where(raw.notna())  # a missing step stays unscored

    def score(self, y, X=None) -> pd.Series:
        """Anomaly scores ``-log p(y_t | y_<t)`` (window-averaged), indexed like ``y``; NaN where missing."""
        check_is_fitted(self)
        return self._aggregate(self._raw_scores(y, X))

    def predict(self, y, X=None) -> pd.Series:
        """Boolean Series: True where the score exceeds ``threshold_`` (missing steps are False)."""
        scores = self.score(y, X)
        return (scores > self.threshold_).rename("anomaly")

    def update(self, y_new) -> pd.DataFrame:
        """Score observations that continue the data seen so far, without refitting.

        The model is conditioned on all earlier observations (those of
        :meth:`fit` and previous updates). Returns a frame indexed like
        ``y_new`` with ``score``, the ``threshold`` in force at each step
        and the ``anomaly`` flag. With ``method="spot"`` and ``adapt`` the
        threshold learns from the new normal peaks.
        """
        check_is_fitted(self)
        if type(y_new) is not type(self.history_):
            raise TypeError(
                f"`y_new` must be a {type(self.history_).__name__} like the data given to fit; "
                f"got {type(y_new).__name__}."
            )
        if isinstance(self.history_, (pd.Series, pd.DataFrame)):
            expected = future_index(to_series_batch(self.history_, "y").indexes[0], 1)[0]
            if len(y_new) == 0 or y_new.index[0] != expected:
                first = y_new.index[0] if len(y_new) else "nothing"
                raise ValueError(f"`y_new` must continue the series: expected it to start at {expected}; got {first}.")
            combined = pd.concat([self.history_, y_new])
        else:
            combined = np.concatenate([self.history_, np.asarray(y_new)])
        scores = self.score(combined).iloc[len(self.history_):].to_numpy()
        thresholds, flags = np.empty(len(scores)), np.zeros(len(scores), dtype=bool)
        for k, s in enumerate(scores):
            thresholds[k] = self.threshold_
            if self.method == "spot" and self.adapt:
                flags[k] = self.spot_.step(s)
                self.threshold_ = self.spot_.threshold_
            else:
                flags[k] = bool(s > self.threshold_)
        self.history_ = combined
        index = y_new.index if hasattr(y_new, "index") else pd.RangeIndex(len(combined) - len(scores), len(combined))
        return pd.DataFrame({"score": scores, "threshold": thresholds, "anomaly": flags}, index=index)

    # ------------------------------------------------------------ save/load
    def save(self, path) -> None:
        """Store the fitted detector; :func:`tsgen.load` restores it (JSON and tensors, no pickle)."""
        check_is_fitted(self)
        write_payload(path, *self._to_payload())

    def _to_payload(self) -> tuple[dict, dict]:
        params = self.get_params(deep=False)
        template = params.pop("model")
        if not _is_saveable(template):
            raise TypeError(f"cannot save a detector whose `model` is a {type(template).__name__}; "
                            "only tsgen estimators can be saved.")
        model_meta, model_tensors = self.model_._to_payload()
        history = to_series_batch(self.history_, "history")
        history_meta, history_tensors = history.to_spec()
        history_meta["name"] = _encode(getattr(self.history_, "name", None))
        history_meta["ndim"] = int(np.ndim(self.history_))
        tensors = {f"model.{k}": v for k, v in model_tensors.items()}
        tensors.update({f"history.{k}": v for k, v in history_tensors.items()})
        tensors["train_scores"] = torch.as_tensor(self.train_scores_.to_numpy(dtype=np.float64))
        meta = {
            "class": type(self).__name__,
            "params": _encode(params),
            "template": {"class": type(template).__name__, "params": _encode(template.get_params(deep=False))},
            "model": model_meta,
            "history": history_meta,
            "threshold": float(self.threshold_),
            "spot": None,
        }
        if hasattr(self, "spot_"):
            spot = self.spot_
            tensors["spot.peaks"] = torch.as_tensor(np.asarray(spot.peaks_, dtype=np.float64))
            meta["spot"] = {"initial_threshold": spot.initial_threshold_, "n": int(spot.n_), "gamma": spot.gamma_,
                            "sigma": spot.sigma_, "threshold": spot.threshold_}
        return meta, tensors

    @classmethod
    def _from_payload(cls, meta: dict, tensors: dict) -> "AnomalyDetector":
        # a truncated or hand-edited file raises KeyError/TypeError/...: tsgen.load turns them
        # into its one "not a tsgen model file" ValueError, as for every class it loads
        template = meta["template"]
        model_cls = saved_class(template["class"], "the detector's model", BaseForecaster)
        detector = cls(model=model_cls(**_decode(template["params"])), **_decode(meta["params"]))
        detector._validate()
        fitted = saved_class(meta["model"]["class"], "the detector's model", BaseForecaster)
        detector.model_ = fitted._from_payload(
            meta["model"], {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        )
        history_meta = meta["history"]
        batch = SeriesBatch.from_spec(
            history_meta, {k[len("history."):]: v for k, v in tensors.items() if k.startswith("history.")}
        )
        detector.history_ = _as_input(batch, _decode(history_meta["name"]), history_meta["ndim"])
        scores = tensors["train_scores"].numpy().astype(np.float64)
        index = batch.indexes[0][: len(scores)]  # arrays get a RangeIndex at the edge
        detector.train_scores_ = pd.Series(scores, index=index, name="anomaly_score")
        detector.threshold_ = float(meta["threshold"])
        if meta["spot"] is not None:
            state = meta["spot"]
            spot = SPOT(detector.false_alarm_rate, detector.spot_level)
            spot.initial_threshold_, spot.n_ = float(state["initial_threshold"]), int(state["n"])
            spot.gamma_, spot.sigma_, spot.threshold_ = (float(state[k]) for k in ("gamma", "sigma", "threshold"))
            spot.peaks_ = [float(v) for v in tensors["spot.peaks"].numpy()]
            detector.spot_ = spot
        return detector


def _is_saveable(model) -> bool:
    """Whether ``tsgen.load`` can rebuild ``model``'s class (a registered public estimator)."""
    try:
        return saved_class(type(model).__name__, "", BaseForecaster) is type(model)
    except ValueError:
        return False


def _as_input(batch: SeriesBatch, name, ndim: int):
    """The one series of ``batch`` as the kind of object the detector was given (Series, DataFrame or array)."""
    values = batch.values[0, : int(batch.lengths[0])].numpy().copy()
    if batch.kind == "series":
        return pd.Series(values[:, 0], index=batch.indexes[0], name=name)
    if batch.kind == "frame":
        return pd.DataFrame(values, index=batch.indexes[0], columns=list(batch.columns))
    return values[:, 0] if ndim == 1 else values


register_saveable(AnomalyDetector)

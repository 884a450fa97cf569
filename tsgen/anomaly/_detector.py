"""Likelihood-based anomaly detection with any tsgen estimator."""
from __future__ import annotations

import copy
import warnings

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, clone
from sklearn.utils.validation import check_is_fitted

from tsgen._validation import is_int
from tsgen.anomaly._likelihood import AnomalyLikelihood
from tsgen.anomaly._online import OnlineAR
from tsgen.anomaly._profile import SeasonalProfile
from tsgen.anomaly._reset import LevelShiftBOCPD
from tsgen.anomaly._spot import MIN_PEAKS, SPOT, _check_probability
from tsgen.anomaly._stream import check_values, frequency_of, season_length, stream_view
from tsgen.base import BaseForecaster, _decode, _encode, register_saveable, saved_class, write_payload
from tsgen.data import SeriesBatch, future_index, to_series_batch

METHODS = ("spot", "dspot", "quantile")
CALIBRATIONS = (None, "likelihood", "auto")
ONLINE = (None, "rls", "refit", "auto")
RESETS = (None, "bocpd", "auto")
#: model="auto" reports an anomalous episode once, unless it escalates, within this many steps
AUTO_ONSET_WINDOW = 100
#: profile="auto": each time-of-day slot's memory is about 1 / AUTO_PROFILE_RATE cycles
AUTO_PROFILE_RATE = 0.1
#: the profile's scores are averaged over this many steps by its anomaly likelihood (the one-step model's over
#: `short_window`): chosen on the NAB dev subset's tuning files (3 and 5 scored alike there, 10 lower)
PROFILE_SHORT_WINDOW = 5


def AUTO_MODEL():
    """The model behind ``model="auto"`` (its one-step densities are then re-estimated online)."""
    from tsgen.models.arima import ARIMA

    return ARIMA((3, 0, 0), trend="c")


def _index_of(data) -> pd.Index:
    return data.index if hasattr(data, "index") else pd.RangeIndex(len(data))


def _back(scores: pd.Series, data, rows) -> pd.Series:
    """Scores of the model's view, put back on ``data``'s own rows and index."""
    values = scores.to_numpy() if rows is None else scores.to_numpy()[rows]
    return pd.Series(values, index=_index_of(data), name="anomaly_score")


def _univariate(data, what: str) -> np.ndarray:
    values = np.asarray(data, dtype=np.float64)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise ValueError(f"`y` must be one univariate series for {what}; got shape {values.shape}.")
    return values


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
    model : tsgen estimator or "auto"
        Unfitted template; :meth:`fit` fits a clone on (mostly normal) data.
        ``"auto"`` (the default, for monitoring streams): an
        ``ARIMA((3, 0, 0), trend="c")`` whose one-step densities are
        re-estimated online (``online="rls"``, with the lags of the natural
        cycle of the index: a day for sub-daily data, a week for daily
        data), Student-t errors (robust to outliers), a time-of-day profile
        and the value's rank scored beside it (``profile``, ``marginal``),
        calibrated two-tailed scores (``calibration="likelihood"``,
        ``tails="both"``), and one flag per episode (``onset_window``,
        ``suppress``).
    method : {"spot", "dspot", "quantile"}
        How the threshold is set from the training scores: SPOT's
        peaks-over-threshold tail, DSPOT's (Siffer et al. 2017, section 4.2:
        the same tail for each score less the mean of the ``dspot_depth``
        normal scores before it, so a slowly drifting score baseline does
        not drift into alarms; the reported ``threshold`` is then the
        current alarm level, tail threshold plus that local mean), or the
        training scores' ``1 - false_alarm_rate`` quantile.
    false_alarm_rate : float
        Target probability that a normal step is flagged (before onsets and
        suppression thin the flags). The default 1e-3 was chosen on the tune
        half of the NAB dev subset (the default detector's own flags,
        standard / low-FP / low-FN, as ``benchmarks/nab.py`` scores them):
        tune half 69.83 / 67.69 / 72.48
        at 1e-3 against 38.85 at 1e-4, 43.86 at 3e-4, 51.51 at 3e-3 and
        31.31 at 1e-2; on the held-out half 24.92 / 14.70 / 30.90 at 1e-3
        against 23.39 / 19.46 / 25.12 at 1e-4; the whole subset 57.26 against
        34.52. For 5-minute data 1e-3 is one flag in about 3.5 days of normal
        steps, a rate an operator can read.
    window : int
        Number of steps the scores are averaged over (1 = pointwise).
    dspot_depth : int
        With ``method="dspot"``, how many earlier normal scores the local
        mean takes (Siffer et al.'s ``d``).
    spot_level : float
        Quantile of the training scores used as SPOT's initial threshold
        (lowered for short training data until it leaves 10 peaks; with
        fewer than 20 scores the threshold is their ``1 - false_alarm_rate``
        quantile, with a warning).
    adapt : bool
        With ``method="spot"``, let :meth:`update` refine the threshold
        with the new non-anomalous peaks (the streaming SPOT algorithm).
    n_particles : int
        Particles of the filter that scores a latent model (ignored for
        models with an exact likelihood).
    calibration : {None, "likelihood", "auto"}
        ``"likelihood"``: report the anomaly likelihood of Ahmad et al.
        2017 (:class:`tsgen.anomaly.AnomalyLikelihood`) as
        ``-log10(tail probability)`` of the short-window mean of the raw
        scores under its long-window distribution: under the null a step
        exceeds ``-log10(q)`` with probability ``q`` (2 = a 1% tail) whatever
        the model's scale; the threshold is then never below ``-log10(false_alarm_rate)``.
        ``"auto"``: "likelihood" with ``model="auto"``, else None (raw scores).
    short_window, long_window : int
        The anomaly likelihood's windows (Ahmad et al.: 10 and 8640).
    tails : {"upper", "both", "auto"}
        ``"both"`` also flags an unusually low score level (a stream gone
        flat). ``"auto"``: "both" with ``model="auto"``, else "upper".
    online : {None, "rls", "refit", "auto"}
        How :meth:`update` follows the stream. None: the model stays as
        fitted and each update scores the new points given the last
        ``context`` observations (``O(context)`` per call). ``"rls"``: an
        autoregression re-estimated by exponentially weighted recursive
        least squares (:class:`tsgen.anomaly._online.OnlineAR`, AR order
        ``p + d + q`` of an ARIMA model, else 3, the natural cycle's lags
        added) gives the one-step densities: ``O(k^2)`` per point for ``k``
        coefficients (about 0.1 ms for k = 6), for ARIMA/LDS/ETS-type
        models. ``"refit"``: every ``refit_every`` points a clone of the
        model is refitted on the last ``long_window`` observations (warm
        started from the current parameters where the estimator has
        ``warm_start``): amortised cost ``fit(long_window) / refit_every``
        per point, for deep models. ``"auto"``: "rls" with ``model="auto"``,
        else None. :meth:`score` and :meth:`predict` always use the model as
        fitted (``model_``, for ``model="auto"`` the ARIMA fitted by maximum
        likelihood), with no online learner, profile or level shifts: they
        judge a whole series at once, while :meth:`update` is the streaming
        detector, whose scores can differ from theirs on the same data.
    forgetting : float
        ``"rls"``'s forgetting factor (memory about ``1 / (1 - forgetting)`` points).
    context : int
        Past observations a frozen model conditions on in :meth:`update`.
    refit_every : int
        Points between refits with ``online="refit"``.
    onset_window : int or "auto"
        Report an anomalous episode at its onset: a step is flagged only if
        its score also tops every score of the previous ``onset_window``
        steps (its onset, or an escalation), and :meth:`update`'s ``alert``
        column is the score there and 0 elsewhere. One episode then raises
        one alarm, not one per step it lasts (NAB charges every flagged
        step outside a window). 0: every step above the threshold is
        flagged. ``"auto"``: 100 with ``model="auto"``, else 0.
    reset : {None, "bocpd", "auto"}
        Level shifts absorbed after detection (``online="rls"`` only).
        ``"bocpd"``: a streaming Bayesian online change-point detector over
        the online model's own one-step errors
        (:class:`tsgen.anomaly._reset.LevelShiftBOCPD`: run lengths up to 20
        steps, hazard 1e-3) confirms a level shift once the new level has
        held for 5 steps with posterior probability 0.9; the model's level
        then moves to it (the coefficients and older lags stay), so that the
        shift is reported once, at its onset, and is not replayed by the
        intercept or by the seasonal lags a cycle later. :meth:`update`'s
        ``level_shift`` column gives the shift absorbed at each step.
        ``"auto"``: "bocpd" whenever ``online`` resolves to "rls".
    profile : None, "auto" or float
        A second, slow likelihood beside the online autoregression, which
        sees pattern changes that the one-step density absorbs within a few
        steps (a daily cycle gone flat, a peak that does not come): the
        density of ``y_t`` under its slot of the natural cycle of the index
        (a day below daily steps, a week for daily data; learned from the
        slot's own visits with this rate, a memory of about ``1 / rate``
        cycles: :class:`tsgen.anomaly._profile.SeasonalProfile`). Each of
        the two raw scores has its own anomaly likelihood (the profile's
        short window is 5 steps), and the reported score is
        ``-log10(min(1, 2 min(tail_onestep, tail_profile)))``: still a
        p-value on the ``-log10`` scale (Bonferroni: under the null a step
        exceeds ``-log10(q)`` with probability at most ``q``). Needs
        ``online="rls"`` and ``calibration="likelihood"``; ``O(1)`` per
        point. None without a time index (no cycle), and a slot not yet
        visited leaves the one-step tail alone. ``"auto"``: 0.1 with
        ``model="auto"``, else None. On the NAB dev subset the profile
        took the default detector from 41.9 to 60.5 (standard profile).
    marginal : bool or "auto"
        A third tail beside the one-step likelihood and the profile: the
        two-sided tail probability of the value ``y_t`` itself under the
        stream's empirical distribution over the last ``long_window``
        observed values (its rank among them, with a Gaussian tail past the
        range seen: :class:`tsgen.anomaly.AnomalyLikelihood` with a short
        window of 1): HTM's "spatial anomaly" (a value outside the range
        seen) as a likelihood. A value below (above) all of the last ``n``
        has a tail of at most about ``1 / n`` however predictable the
        one-step model and the profile found it (a day that drifts to a new
        low), less the further it lies past the range; under the null
        (values exchangeable over the window) the tail is uniform. The
        reported score is then ``-log10(min(1, k min(tails)))`` over the
        ``k`` tails that scored the step (Bonferroni). Needs
        ``online="rls"`` and ``calibration="likelihood"``; ``O(log
        long_window)`` per point. ``"auto"``: True with ``model="auto"``.
        On the NAB dev subset it took the default detector from 60.5 to 65.1
        (standard profile; tune half 70.8 -> 75.2, held-out 35.2 -> 44.0).
    suppress : int or "auto"
        The decision rule's refractory period: after a flagged step, no step
        is flagged (the ``anomaly`` column of :meth:`update` and
        :meth:`predict`) for the next ``suppress`` rows, escalations
        included; the scores and the ``alert`` column are not changed. An
        alarm then stands for its episode (NAB, like an operator, credits
        only the first detection of an anomaly and charges every later
        flag outside its window). 0: every onset above the threshold is
        flagged. ``"auto"``: ``onset_window`` (100 with ``model="auto"``,
        else 0). The state (rows since the last flag) is saved.

    Streams are accepted as they come: a regular time index is used as is,
    a regular one with absent steps is put on its grid (the absent steps
    missing), and irregular or repeated timestamps are scored by arrival
    order (a repeated timestamp is a further observation scored given the
    earlier one; see :mod:`tsgen.anomaly._stream`). Missing values score NaN
    and are never flagged, learned from or calibrated on.

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

    def __init__(self, model="auto", method="spot", false_alarm_rate=1e-3, window=1, spot_level=0.98, adapt=True,
                 dspot_depth=10, n_particles=1000, calibration="auto", short_window=10, long_window=2000, tails="auto",
                 online="auto", forgetting=0.999, context=1000, refit_every=500, onset_window="auto", reset="auto",
                 profile="auto", marginal="auto", suppress="auto"):
        self.model = model
        self.method = method
        self.false_alarm_rate = false_alarm_rate
        self.window = window
        self.spot_level = spot_level
        self.adapt = adapt
        self.dspot_depth = dspot_depth
        self.n_particles = n_particles
        self.calibration = calibration
        self.short_window = short_window
        self.long_window = long_window
        self.tails = tails
        self.online = online
        self.forgetting = forgetting
        self.context = context
        self.refit_every = refit_every
        self.onset_window = onset_window
        self.reset = reset
        self.profile = profile
        self.marginal = marginal
        self.suppress = suppress

    def _validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"`method` must be one of {METHODS}; got {self.method!r}.")
        _check_probability(self.false_alarm_rate, "false_alarm_rate")
        if isinstance(self.window, bool) or not isinstance(self.window, (int, np.integer)) or self.window < 1:
            raise ValueError(f"`window` must be a positive int; got {self.window!r}.")
        if not is_int(self.dspot_depth) or self.dspot_depth < 1:
            raise ValueError(f"`dspot_depth` must be a positive int; got {self.dspot_depth!r}.")
        if not (isinstance(self.model, str) and self.model == "auto") and not hasattr(self.model, "log_likelihood"):
            raise TypeError(f"`model` must be a tsgen estimator with log_likelihood or 'auto'; got "
                            f"{type(self.model).__name__}.")
        if not is_int(self.n_particles) or self.n_particles < 2:
            raise ValueError(f"`n_particles` must be an integer >= 2; got {self.n_particles!r}.")
        if self.calibration not in CALIBRATIONS:
            raise ValueError(f"`calibration` must be one of {CALIBRATIONS}; got {self.calibration!r}.")
        if self.online not in ONLINE:
            raise ValueError(f"`online` must be one of {ONLINE}; got {self.online!r}.")
        if self.reset not in RESETS:
            raise ValueError(f"`reset` must be one of {RESETS}; got {self.reset!r}.")
        if self.reset == "bocpd" and self._online() != "rls":
            raise ValueError("`reset`='bocpd' moves the level of the online autoregression: it needs `online`='rls' "
                             f"(or 'auto' with model='auto'); got `online`={self.online!r}.")
        for name in ("context", "refit_every"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ValueError(f"`{name}` must be a positive int; got {value!r}.")
        if not (self.onset_window == "auto" or (is_int(self.onset_window) and self.onset_window >= 0)):
            raise ValueError(f"`onset_window` must be a non-negative int or 'auto'; got {self.onset_window!r}.")
        if isinstance(self.profile, str):
            if self.profile != "auto":
                raise ValueError(f"`profile` must be None, 'auto' or a rate in (0, 1]; got {self.profile!r}.")
        elif self.profile is not None:
            if isinstance(self.profile, bool) or not isinstance(self.profile, (int, float)) or not (
                    0 < self.profile <= 1):
                raise ValueError(f"`profile` must be None, 'auto' or a rate in (0, 1]; got {self.profile!r}.")
            if self._online() != "rls" or self._calibration() != "likelihood":
                raise ValueError("`profile` is scored beside the online autoregression and combined through the "
                                 "calibrated tails: it needs `online`='rls' and `calibration`='likelihood' (or "
                                 f"'auto' with model='auto'); got `online`={self.online!r}, "
                                 f"`calibration`={self.calibration!r}.")
        if not (self.marginal == "auto" or isinstance(self.marginal, (bool, np.bool_))):
            raise ValueError(f"`marginal` must be True, False or 'auto'; got {self.marginal!r}.")
        if self.marginal is True and (self._online() != "rls" or self._calibration() != "likelihood"):
            raise ValueError("`marginal`=True is combined with the one-step likelihood through the calibrated tails "
                             "of the streamed values: it needs `online`='rls' and `calibration`='likelihood' (or "
                             f"'auto' with model='auto'); got `online`={self.online!r}, "
                             f"`calibration`={self.calibration!r}.")
        if not (self.suppress == "auto" or (is_int(self.suppress) and self.suppress >= 0)):
            raise ValueError(f"`suppress` must be a non-negative int or 'auto'; got {self.suppress!r}.")
        # the likelihood's own checks name short_window, long_window and tails
        AnomalyLikelihood(self.short_window, self.long_window, tails=self._tails())
        if isinstance(self.forgetting, bool) or not isinstance(self.forgetting, (int, float)) or not (
                0 < self.forgetting <= 1):
            raise ValueError(f"`forgetting` must be in (0, 1]; got {self.forgetting!r}.")

    # ------------------------------------------------------------ resolved settings
    @property
    def _auto(self) -> bool:
        return isinstance(self.model, str) and self.model == "auto"

    def _calibration(self):
        return ("likelihood" if self._auto else None) if self.calibration == "auto" else self.calibration

    def _online(self):
        return ("rls" if self._auto else None) if self.online == "auto" else self.online

    def _reset(self):
        return ("bocpd" if self._online() == "rls" else None) if self.reset == "auto" else self.reset

    def _tails(self) -> str:
        return ("both" if self._auto else "upper") if self.tails == "auto" else self.tails

    def _onset_window(self) -> int:
        return (AUTO_ONSET_WINDOW if self._auto else 0) if self.onset_window == "auto" else int(self.onset_window)

    def _marginal(self) -> bool:
        return bool(self._auto if self.marginal == "auto" else self.marginal)

    def _suppress(self) -> int:
        return self._onset_window() if self.suppress == "auto" else int(self.suppress)

    def _template(self):
        return AUTO_MODEL() if self._auto else self.model

    # ------------------------------------------------------------ fit / score
    def fit(self, y, X=None) -> "AnomalyDetector":
        """Fit a clone of ``model`` on ``y`` and set the threshold from ``y``'s own scores."""
        self._validate()
        if isinstance(y, list):
            raise TypeError("`y` must be one Series or DataFrame: fit one detector per series.")
        self.freq_ = frequency_of(getattr(y, "index", None))
        view, _ = stream_view(y, self.freq_)
        batch = to_series_batch(view, "y")
        if batch.is_collection:
            raise TypeError("`y` must be one Series or DataFrame: fit one detector per series.")
        if self._auto:
            # the default model's own refusal would name its `order`, which the user never set
            needed = AUTO_MODEL()._fixed_spec(0).min_observations()
            if batch.n_observed < needed:
                raise ValueError(
                    f"`y` has {batch.n_observed} observed values; AnomalyDetector(model='auto') needs at least "
                    f"{needed} to fit its one-step model: give a longer series or pass a `model`."
                )
        self.model_ = clone(self._template()).fit(view, X=X)
        self.history_ = y.copy() if hasattr(y, "copy") else np.array(y, copy=True)
        online = self._online()
        self.profile_ = self.marginal_likelihood_ = profile_raw = marginal_raw = None
        if online == "rls":
            values = _univariate(view, "online='rls'")
            self.online_ = self._online_learner(view).start(values)
            rows = None if view is y else stream_view(y, self.freq_)[1]
            raw = pd.Series(-self.online_.in_sample_log_density(values), index=_index_of(view), name="anomaly_score")
            raw = _back(raw, y, rows)
            self.profile_ = self._new_profile(view)
            if self.profile_ is not None:
                # the profile's own one-step scores while it learned: it has no in-sample view of a fixed model
                profile_raw = _back(pd.Series(0.0 - self.profile_.start(values), index=_index_of(view)), y, rows)
            if self._marginal():
                marginal_raw = _back(pd.Series(values, index=_index_of(view)), y, rows).to_numpy(dtype=np.float64)
        else:
            raw = self._raw_scores(y, X)
        if online == "refit":
            self.since_refit_ = 0
        self.recent_raw_ = raw.iloc[len(raw) - (self.window - 1):]
        aggregated = self._aggregate(raw)
        if self._calibration() == "likelihood":
            self.likelihood_ = self._new_likelihood()
            if self.profile_ is not None:
                self.profile_likelihood_ = AnomalyLikelihood(PROFILE_SHORT_WINDOW, self.long_window,
                                                             tails=self._tails())
                profile_raw = profile_raw.to_numpy(dtype=np.float64)
            if marginal_raw is not None:
                self.marginal_likelihood_ = self._new_marginal_likelihood()
            aggregated = pd.Series(self._tail_scores(aggregated.to_numpy(dtype=np.float64), profile_raw,
                                                     marginal_raw), index=aggregated.index, name="anomaly_score")
        self.train_scores_ = aggregated
        self._set_threshold(aggregated.to_numpy(dtype=np.float64))
        window = self._onset_window()
        self.recent_scores_ = aggregated.to_numpy(dtype=np.float64)[len(aggregated) - window:] if window else \
            np.empty(0)
        self.n_seen_ = len(y)
        self.since_flag_ = np.inf  # the training rows are not reported: no flag to suppress after
        self.history_ = self._recent(self.history_)
        return self

    def _set_threshold(self, scores: np.ndarray) -> None:
        q = self.false_alarm_rate
        scored = scores[~np.isnan(scores)]
        # +-inf are steps the model calls certain or impossible (a point mass, e.g. Naive on a flat line):
        # SPOT's tail fit uses the finite scores, and the quantile below takes an observed score, not inf - inf
        finite = scored[np.isfinite(scored)]
        n = finite.size
        if self.method in ("spot", "dspot"):
            depth = self.dspot_depth if self.method == "dspot" else None
            usable = n - (depth or 0)  # DSPOT's first `depth` scores only start its local mean
            # short calibration data: lower SPOT's level until it leaves MIN_PEAKS peaks
            level = min(self.spot_level, 1 - MIN_PEAKS / usable) if usable > 0 else self.spot_level
            if usable >= 2 * MIN_PEAKS and q < 1 - level:
                self.spot_ = SPOT(q, level, depth=depth).fit(finite if n < scored.size else scores)
                self.threshold_ = max(self.spot_.alarm_level_, self._floor())
                return
            warnings.warn(f"{n} finite calibration scores are too few for SPOT at `false_alarm_rate`={q:g}; the "
                          f"threshold is their {1 - q:g} quantile instead.", UserWarning, stacklevel=3)
        if scored.size == 0:
            self.threshold_ = self._floor()
            return
        method = "linear" if n == scored.size else "higher"
        self.threshold_ = max(float(np.quantile(scored, 1 - q, method=method)), self._floor())

    def _floor(self) -> float:
        """Calibrated scores exceed ``-log10(q)`` with probability ``q`` under the null: no threshold goes lower
        (a flat or short training stretch would otherwise put SPOT's threshold at its flat level)."""
        return -np.log10(self.false_alarm_rate) if self._calibration() == "likelihood" else -np.inf

    def _recent(self, data):
        """The observations :meth:`update` needs from the past (the last ``context``, at least ``window``)."""
        keep = max(self.context, self.window)
        return data.iloc[-keep:] if hasattr(data, "iloc") else data[-keep:]

    def _online_learner(self, view) -> OnlineAR:
        order = getattr(self.model_, "order", None)
        p = int(sum(order)) if isinstance(order, tuple) and len(order) == 3 and all(is_int(v) for v in order) else 0
        p = min(p, 10) if p else 3  # an order-free template (ETS, LDS, deep): the docstring's 3 lags
        seasonal = getattr(self.model_, "seasonal_order", None)
        period = int(seasonal[3]) if isinstance(seasonal, tuple) and len(seasonal) == 4 and seasonal[3] > 1 else None
        if period is None:
            period = season_length(getattr(self.history_, "index", None), len(view))
        if period is not None and period <= p:
            period = None
        learner = OnlineAR(p, period, self.forgetting, df=5.0)
        if self._reset() == "bocpd":
            learner.reset = LevelShiftBOCPD(df=learner.df)
        return learner

    def _profile_rate(self):
        return (AUTO_PROFILE_RATE if self._auto else None) if isinstance(self.profile, str) else self.profile

    def _new_profile(self, view) -> SeasonalProfile | None:
        """The time-of-day profile beside the online model, None without a profile or a natural cycle."""
        rate = self._profile_rate()
        # the profile learns its slots as the stream visits them: one cycle need not fit in the training data
        period = None if rate is None else season_length(getattr(self.history_, "index", None), len(view), 0)
        return None if period is None else SeasonalProfile(period, rate, df=5.0)

    def _tail_scores(self, scores: np.ndarray, profile_scores: np.ndarray | None,
                     marginal_values: np.ndarray | None = None) -> np.ndarray:
        """``-log10`` of the calibrated tail of each step; with companions (the profile's scores, the values for
        the marginal tail), of the smallest tail times the number of tails that scored the step.

        The factor (Bonferroni) keeps the meaning of the output: under the
        null a step exceeds ``-log10(q)`` with probability at most ``q``.
        A step a companion cannot score (a profile slot not yet visited) is
        judged by the others; a step missing from the stream stays NaN.
        """
        tails = [self.likelihood_.transform(scores)]
        if profile_scores is not None:
            tails.append(self.profile_likelihood_.transform(profile_scores))
        if marginal_values is not None:
            tails.append(self.marginal_likelihood_.transform(marginal_values))
        if len(tails) == 1:
            return -np.log10(tails[0])
        stack = np.vstack(tails)
        scored = ~np.isnan(stack)
        smallest = np.min(np.where(scored, stack, np.inf), axis=0)
        count = scored.sum(axis=0)
        tail = np.minimum(1.0, np.maximum(count, 1) * smallest)  # no tail at all: NaN below, not 0 * inf
        return -np.log10(np.where(scored[0], tail, np.nan))

    def _new_likelihood(self) -> AnomalyLikelihood:
        return AnomalyLikelihood(self.short_window, self.long_window, tails=self._tails())

    def _new_marginal_likelihood(self) -> AnomalyLikelihood:
        # each value on its own, both tails whatever `tails` says: a value below the range is as unusual as above
        return AnomalyLikelihood(1, self.long_window, tails="both")

    def _raw_scores(self, y, X=None) -> pd.Series:
        view, rows = stream_view(y, getattr(self, "freq_", None))
        options = {}
        if getattr(self.model_, "_latent_model", False):  # a particle estimate, not a difference of bounds
            options = {"method": "smc", "n_particles": self.n_particles}
        log_density = self.model_.log_likelihood(view, per_step=True, X=X, **options)
        raw = (0.0 - log_density).rename("anomaly_score")  # 0.0 - keeps exact zeros unsigned
        return _back(raw, y, rows)

    def _aggregate(self, raw: pd.Series) -> pd.Series:
        if self.window == 1:
            return raw
        smoothed = raw.rolling(self.window, min_periods=1).mean()
        return smoothed.where(raw.notna())  # a missing step stays unscored

    @staticmethod
    def _calibrate(scores: pd.Series, likelihood: AnomalyLikelihood) -> pd.Series:
        return pd.Series(-np.log10(likelihood.transform(scores.to_numpy())), index=scores.index,
                         name="anomaly_score")

    def score(self, y, X=None) -> pd.Series:
        """Anomaly scores, indexed like ``y``; NaN where missing.

        ``-log p(y_t | y_<t)`` under the fitted model (window-averaged); with
        ``calibration="likelihood"``, ``-log10`` of its anomaly-likelihood
        tail probability, the calibration starting afresh at ``y``'s start.
        The fitted model is ``model_`` as fitted, also when :meth:`update`
        scores with an online learner (``online``) and a profile: the
        streaming scores are :meth:`update`'s.
        """
        check_is_fitted(self)
        scores = self._aggregate(self._raw_scores(y, X))
        if self._calibration() == "likelihood":
            scores = self._calibrate(scores, self._new_likelihood())
        return scores

    def predict(self, y, X=None) -> pd.Series:
        """Boolean Series: True where the score exceeds ``threshold_`` at an episode's onset (``onset_window``) and
        no earlier step within ``suppress`` rows was flagged; missing steps are False."""
        scores = self.score(y, X)
        flags = scores > self.threshold_
        window = self._onset_window()
        if window:  # an episode's onset, or its escalation: above every score of the last onset_window steps
            flags &= scores > scores.shift(1).rolling(window, min_periods=1).max().fillna(-np.inf)
        kept, _ = suppress_repeats(flags.to_numpy(dtype=bool), self._suppress())
        return pd.Series(kept, index=flags.index, name="anomaly")

    # ------------------------------------------------------------ streaming
    def update(self, y_new) -> pd.DataFrame:
        """Score observations that continue the data seen so far, and learn from them.

        Returns a frame indexed like ``y_new`` with ``score``, ``alert``
        (the score at an episode's onset, else 0; see ``onset_window``), the
        ``threshold`` in force at each step, the ``anomaly`` flag and the
        ``level_shift`` absorbed there (see ``reset``; 0 elsewhere). The
        model follows the stream as ``online`` says; with
        ``method="spot"`` and ``adapt`` the threshold learns from the new
        normal peaks; the calibration continues its windows. ``y_new`` must
        not start before the last timestamp seen (arrival order); for data
        without a time index, it must continue the positions.
        """
        check_is_fitted(self)
        combined = self._continue(y_new)
        check_values(y_new, "y_new")
        n_new = len(y_new)
        if not n_new:  # nothing to score or learn from, whatever the container
            index = y_new.index if hasattr(y_new, "index") else pd.RangeIndex(self.n_seen_, self.n_seen_)
            nothing = np.empty(0)
            return _update_frame(nothing, nothing, nothing, np.zeros(0, dtype=bool), nothing, index)
        online = self._online()
        shifts = np.zeros(n_new)
        profile_raw = marginal_raw = None
        if online == "rls":
            raw, shifts, profile_raw, marginal_raw = self._online_scores(combined, n_new)
            joined = pd.concat([self.recent_raw_, raw])
            scores = self._aggregate(joined).iloc[-n_new:]
            self.recent_raw_ = joined.iloc[len(joined) - (self.window - 1):]  # what the next window needs
        else:
            if online == "refit":
                self._maybe_refit(combined, n_new)
            start = max(len(combined) - n_new - max(self.context, self.window), 0)
            tail = combined.iloc[start:] if hasattr(combined, "iloc") else combined[start:]
            scores = self._aggregate(self._raw_scores(tail)).iloc[-n_new:]
        values = scores.to_numpy(dtype=np.float64)
        if self._calibration() == "likelihood":
            values = self._tail_scores(values, None if getattr(self, "profile_", None) is None else profile_raw,
                                       None if getattr(self, "marginal_likelihood_", None) is None else marginal_raw)
        thresholds, flags = np.empty(len(values)), np.zeros(len(values), dtype=bool)
        floor = self._floor()
        alerts = self._alerts(values)
        for k, s in enumerate(values):
            thresholds[k] = self.threshold_
            if hasattr(self, "spot_") and self.adapt:
                flags[k] = self.spot_.step(s) and s > floor and alerts[k] > 0
                self.threshold_ = max(self.spot_.alarm_level_, floor)
            else:
                flags[k] = bool(s > self.threshold_ and alerts[k] > 0)
        flags, self.since_flag_ = suppress_repeats(flags, self._suppress(), getattr(self, "since_flag_", np.inf))
        self.history_ = self._recent(combined)
        self.n_seen_ += n_new
        index = y_new.index if hasattr(y_new, "index") else pd.RangeIndex(self.n_seen_ - n_new, self.n_seen_)
        return _update_frame(values, alerts, thresholds, flags, shifts, index)

    def _alerts(self, values: np.ndarray) -> np.ndarray:
        """Each step's score where it tops the last ``onset_window`` scores (an onset or escalation), else 0."""
        window = self._onset_window()
        if not window:
            return values.copy()
        joined = np.concatenate([self.recent_scores_, values])
        past = pd.Series(joined).shift(1).rolling(window, min_periods=1).max().to_numpy()[len(self.recent_scores_):]
        alerts = np.where(np.isnan(values), np.nan, np.where(~(values <= past), values, 0.0))
        self.recent_scores_ = joined[len(joined) - window:]
        return alerts

    def _continue(self, y_new):
        if type(y_new) is not type(self.history_):
            raise TypeError(
                f"`y_new` must be a {type(self.history_).__name__} like the data given to fit; "
                f"got {type(y_new).__name__}."
            )
        if not isinstance(self.history_, (pd.Series, pd.DataFrame)):
            return np.concatenate([self.history_, np.asarray(y_new)])
        if len(y_new) == 0:
            return self.history_
        index = self.history_.index
        if isinstance(index, (pd.DatetimeIndex, pd.PeriodIndex)):
            if y_new.index[0] < index[-1]:
                raise ValueError(f"`y_new` must continue the series: it starts at {y_new.index[0]}, before the "
                                 f"last timestamp seen, {index[-1]}.")
        else:
            expected = future_index(to_series_batch(self.history_, "y").indexes[0], 1)[0]
            if y_new.index[0] != expected:
                raise ValueError(f"`y_new` must continue the series: expected it to start at {expected}; "
                                 f"got {y_new.index[0]}.")
        return pd.concat([self.history_, y_new])

    def _online_scores(self, combined, n_new: int) -> tuple[pd.Series, np.ndarray, np.ndarray, np.ndarray]:
        # the last seen row and the new ones, on the model's grid: absent steps are fed as missing
        start = len(combined) - n_new - 1
        tail = combined.iloc[start:] if hasattr(combined, "iloc") else combined[start:]
        view, rows = stream_view(tail, self.freq_)
        values = _univariate(view, "online='rls'")
        rows = np.arange(len(values)) if rows is None else rows
        learner, profile = self.online_, getattr(self, "profile_", None)
        steps = np.full((len(values) - rows[0] - 1, 3), np.nan)
        for k, v in enumerate(values[rows[0] + 1:]):
            steps[k, 0] = learner.step(v)
            steps[k, 1] = learner.last_shift
            if profile is not None:  # not moved by the level shifts absorbed: see tsgen.anomaly._profile
                steps[k, 2] = profile.step(v)
        new_rows = rows[1:] - rows[0] - 1
        # a shift confirmed on a step absent from y_new (a gap on the grid) is reported at the next row
        confirmed = np.concatenate([[0.0], np.cumsum(steps[:, 1])])
        shifts = np.diff(np.concatenate([[0.0], confirmed[new_rows + 1]]))
        index = tail.index[1:] if hasattr(tail, "index") else pd.RangeIndex(start + 1, len(combined))
        return (pd.Series(0.0 - steps[new_rows, 0], index=index, name="anomaly_score"), shifts,
                0.0 - steps[new_rows, 2], values[rows[0] + 1:][new_rows])

    def _maybe_refit(self, combined, n_new: int) -> None:
        self.since_refit_ += n_new
        if self.since_refit_ < self.refit_every:
            return
        recent = combined.iloc[-self.long_window:] if hasattr(combined, "iloc") else combined[-self.long_window:]
        if "warm_start" in self.model_.get_params():  # continue from the current parameters
            # on a copy: a refit that fails leaves the current model, and one that succeeds replaces it whole
            model = copy.deepcopy(self.model_).set_params(warm_start=True)
        else:
            model = clone(self.model_)
        self.model_ = model.fit(stream_view(recent, self.freq_)[0])
        self.since_refit_ = 0

    # ------------------------------------------------------------ save/load
    def save(self, path) -> None:
        """Store the fitted detector; :func:`tsgen.load` restores it (JSON and tensors, no pickle)."""
        check_is_fitted(self)
        write_payload(path, *self._to_payload())

    def _to_payload(self) -> tuple[dict, dict]:
        params = self.get_params(deep=False)
        template = params.pop("model")
        if not self._auto and not _is_saveable(template):
            raise TypeError(f"cannot save a detector whose `model` is a {type(template).__name__}; "
                            "only tsgen estimators can be saved.")
        model_meta, model_tensors = self.model_._to_payload()
        history_meta, history_tensors = _history_to_spec(self.history_)
        tensors = {f"model.{k}": v for k, v in model_tensors.items()}
        tensors.update({f"history.{k}": v for k, v in history_tensors.items()})
        scores_meta, scores_tensors = _history_to_spec(self.train_scores_)
        tensors.update({f"train_scores.{k}": v for k, v in scores_tensors.items()})
        # a copy: under pandas 3 (copy-on-write) to_numpy gives a read-only view, which torch warns about
        tensors["recent_raw"] = torch.as_tensor(self.recent_raw_.to_numpy(dtype=np.float64, copy=True))
        tensors["recent_scores"] = torch.as_tensor(np.asarray(self.recent_scores_, dtype=np.float64))
        tensors["since_flag"] = torch.tensor([float(getattr(self, "since_flag_", np.inf))], dtype=torch.float64)
        template_meta = ({"class": "auto"} if self._auto else
                         {"class": type(template).__name__, "params": _encode(template.get_params(deep=False))})
        meta = {
            "class": type(self).__name__,
            "params": _encode(params),
            "template": template_meta,
            "model": model_meta,
            "history": history_meta,
            "train_scores": scores_meta,
            "n_seen": int(self.n_seen_),
            "threshold": float(self.threshold_),
            "freq": self.freq_,
            "since_refit": int(getattr(self, "since_refit_", 0)),
            "spot": None,
            "online": None,
        }
        if hasattr(self, "spot_"):
            spot = self.spot_
            tensors["spot.peaks"] = torch.as_tensor(np.asarray(spot.peaks_, dtype=np.float64))
            meta["spot"] = {"level": spot.level, "initial_threshold": spot.initial_threshold_, "n": int(spot.n_),
                            "gamma": spot.gamma_, "sigma": spot.sigma_, "threshold": spot.threshold_,
                            "fitted_peaks": spot.fitted_peaks_, "depth": spot.depth, "outliers": int(spot.outliers_)}
            if spot.depth:
                tensors["spot.recent"] = torch.as_tensor(np.asarray(spot.recent_, dtype=np.float64))
        if hasattr(self, "online_"):
            learner = self.online_
            meta["online"] = {"order": learner.order, "period": learner.seasonal_period,
                              "forgetting": learner.forgetting, "df": learner.df}
            tensors.update({f"online.{k}": torch.as_tensor(v) for k, v in learner.state().items()})
            if learner.reset is not None:
                tensors.update({f"reset.{k}": torch.as_tensor(v) for k, v in learner.reset.state().items()})
        if hasattr(self, "likelihood_"):
            tensors.update({f"likelihood.{k}": torch.as_tensor(v) for k, v in self.likelihood_.state().items()})
        profile = getattr(self, "profile_", None)
        meta["profile"] = None if profile is None else {"period": profile.period, "rate": profile.rate,
                                                        "df": profile.df}
        if profile is not None:
            tensors.update({f"profile.{k}": torch.as_tensor(v) for k, v in profile.state().items()})
            tensors.update({f"profile_likelihood.{k}": torch.as_tensor(v)
                            for k, v in self.profile_likelihood_.state().items()})
        meta["marginal"] = getattr(self, "marginal_likelihood_", None) is not None
        if meta["marginal"]:
            tensors.update({f"marginal_likelihood.{k}": torch.as_tensor(v)
                            for k, v in self.marginal_likelihood_.state().items()})
        return meta, tensors

    @classmethod
    def _from_payload(cls, meta: dict, tensors: dict) -> "AnomalyDetector":
        # a truncated or hand-edited file raises KeyError/TypeError/...: tsgen.load turns them
        # into its one "not a tsgen model file" ValueError, as for every class it loads
        template = meta["template"]
        if template["class"] == "auto":
            model = "auto"
        else:
            model = saved_class(template["class"], "the detector's model", BaseForecaster)(
                **_decode(template["params"]))
        detector = cls(model=model, **_decode(meta["params"]))
        detector._validate()
        fitted = saved_class(meta["model"]["class"], "the detector's model", BaseForecaster)
        detector.model_ = fitted._from_payload(meta["model"], _prefixed(tensors, "model."))
        detector.history_ = _history_from_spec(meta["history"], _prefixed(tensors, "history."))
        index = _index_of(detector.history_)
        detector.train_scores_ = _history_from_spec(meta["train_scores"], _prefixed(tensors, "train_scores."))
        detector.n_seen_ = int(meta["n_seen"])
        recent = tensors["recent_raw"].numpy().astype(np.float64)
        detector.recent_raw_ = pd.Series(recent, index=index[len(index) - len(recent):], name="anomaly_score")
        detector.threshold_ = float(meta["threshold"])
        detector.recent_scores_ = tensors["recent_scores"].numpy().astype(np.float64)
        # files saved before suppression existed have no "since_flag": nothing to suppress after
        detector.since_flag_ = float(tensors["since_flag"][0]) if "since_flag" in tensors else np.inf
        detector.freq_ = meta["freq"]
        if detector._online() == "refit":
            detector.since_refit_ = int(meta["since_refit"])
        if meta["spot"] is not None:
            state = meta["spot"]
            spot = SPOT(detector.false_alarm_rate, float(state["level"]), depth=state.get("depth"))
            spot.initial_threshold_, spot.n_ = float(state["initial_threshold"]), int(state["n"])
            spot.gamma_, spot.sigma_, spot.threshold_ = (float(state[k]) for k in ("gamma", "sigma", "threshold"))
            spot.fitted_peaks_ = int(state["fitted_peaks"])
            # files saved before it was stored: the count is lost, and it only describes the calibration
            spot.outliers_ = int(state.get("outliers", 0))
            spot.peaks_ = [float(v) for v in tensors["spot.peaks"].numpy()]
            if spot.depth:
                spot.recent_ = [float(v) for v in tensors["spot.recent"].numpy()]
            detector.spot_ = spot
        if meta["online"] is not None:
            o = meta["online"]
            detector.online_ = OnlineAR(o["order"], o["period"], o["forgetting"], o["df"]).restore(
                {k: v.numpy() for k, v in _prefixed(tensors, "online.").items()})
            if detector._reset() == "bocpd":
                detector.online_.reset = LevelShiftBOCPD(df=o["df"]).restore(
                    {k: v.numpy() for k, v in _prefixed(tensors, "reset.").items()})
        if detector._calibration() == "likelihood":
            detector.likelihood_ = detector._new_likelihood().restore(
                {k: v.numpy() for k, v in _prefixed(tensors, "likelihood.").items()})
        # files saved before the profile existed have no "profile" entry
        profile = meta.get("profile")
        detector.profile_ = None
        if profile is not None:
            detector.profile_ = SeasonalProfile(profile["period"], profile["rate"], profile["df"]).restore(
                {k: v.numpy() for k, v in _prefixed(tensors, "profile.").items()})
            detector.profile_likelihood_ = AnomalyLikelihood(
                PROFILE_SHORT_WINDOW, detector.long_window, tails=detector._tails()).restore(
                {k: v.numpy() for k, v in _prefixed(tensors, "profile_likelihood.").items()})
        detector.marginal_likelihood_ = None
        if meta.get("marginal"):  # absent from files saved before the marginal tail existed
            detector.marginal_likelihood_ = detector._new_marginal_likelihood().restore(
                {k: v.numpy() for k, v in _prefixed(tensors, "marginal_likelihood.").items()})
        return detector


def suppress_repeats(flags, period: int, since: float = np.inf) -> tuple[np.ndarray, float]:
    """Keep a flag only if more than ``period`` rows separate it from the last flag kept; ``since``: rows from the
    last flag kept before ``flags`` to their first row (1: the row just before; inf: none). Returns the flags kept
    and ``since`` for the rows that follow (the state of a stream). ``O(number of flags)``."""
    flags = np.asarray(flags, dtype=bool)
    kept = np.zeros(len(flags), dtype=bool)
    last = -since  # position of the last flag kept, relative to the first row
    for i in np.flatnonzero(flags):
        if i - last > period:
            kept[i] = True
            last = i
    return kept, float(len(flags) - last)


def _prefixed(tensors: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _history_to_spec(history) -> tuple[dict, dict]:
    """The data seen so far; an irregular time index is kept as its own int64 stamps beside the values."""
    stamps = None
    index = getattr(history, "index", None)
    if isinstance(index, (pd.DatetimeIndex, pd.PeriodIndex)) and frequency_of(index) is None:
        if isinstance(index, pd.PeriodIndex):
            stamps = {"kind": "period", "freq": index.freqstr}, index.asi8.copy()
        else:
            # asi8 counts in the index's own unit (pandas 3 reads CSV dates at "us"): keep the unit
            stamps = ({"kind": "datetime", "tz": None if index.tz is None else str(index.tz),
                       "unit": getattr(index, "unit", "ns")}, index.asi8.copy())
        history = history.reset_index(drop=True)
    meta, tensors = to_series_batch(history, "history").to_spec()
    meta["name"] = _encode(getattr(history, "name", None))
    meta["ndim"] = int(np.ndim(history))
    meta["stamps"] = None if stamps is None else stamps[0]
    if stamps is not None:
        tensors = {**tensors, "stamps": torch.as_tensor(stamps[1])}
    return meta, tensors


def _history_from_spec(meta: dict, tensors: dict):
    batch = SeriesBatch.from_spec(meta, tensors)
    history = _as_input(batch, _decode(meta["name"]), meta["ndim"])
    stamps = meta["stamps"]
    if stamps is not None:
        values = tensors["stamps"].numpy().astype(np.int64)
        if stamps["kind"] == "period":
            index = pd.PeriodIndex.from_ordinals(values, freq=stamps["freq"])
        else:
            index = pd.DatetimeIndex(values.astype(f"datetime64[{stamps.get('unit', 'ns')}]"))
            if stamps["tz"] is not None:
                index = index.tz_localize("UTC").tz_convert(stamps["tz"])
        history.index = index
    return history


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


def _update_frame(scores, alerts, thresholds, flags, shifts, index) -> pd.DataFrame:
    """What :meth:`AnomalyDetector.update` returns, one row per new step."""
    return pd.DataFrame({"score": scores, "alert": alerts, "threshold": thresholds, "anomaly": flags,
                         "level_shift": shifts}, index=index)

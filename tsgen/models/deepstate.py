r"""Deep State Space Models (Rangapuram, Seeger, Gasthaus, Stella, Wang & Januschowski, NeurIPS 2018).

An LSTM reads the covariates only (time features, regressors; never the
target), and emits at every step the parameters of a linear-Gaussian
state-space model, whose likelihood the Kalman filter then gives exactly
(:func:`tsgen.inference.kalman.kalman_log_likelihood`, differentiable, with
time-varying parameters)::

    h_t = LSTM(h_{t-1}, u_t),     u_t = [covariates_t, onehot(t mod m), 1]
    z_1 ~ N(m_1, diag p_1^2)                                     (learned, per model)
    z_{t+1} = F z_t + w_t,        w_t ~ N(0, diag(g_t^2 * e_t))    (innovation strengths from h_t)
    y_t = a_t' z_t + b_t + v_t,   v_t ~ N(0, sigma_t^2)           (offset, noise from h_t)

The state is level and trend (``F = [[1, 1], [0, 1]]``, ``a = [1, 0]``)
and, with ``season_length = m``, ``m`` seasonal components of which the
one for ``t mod m`` is observed (``a_t`` selects it) and takes that step's
seasonal innovation (DeepState's seasonal model; ``e_t`` marks which
components move). The season's phase is counted from each sequence's first
step, so training windows need no calendar. (Counting it from the calendar,
as GluonTS's month-of-year indicators do, lets the LSTM tell July from
January; it was tried and measured worse on airline's 24-month hold-out:
80% coverage 0.13 against 0.38, the model fitting the training years' swings
more tightly.)

Units. ``s_0`` (the training data's mean absolute value) is the unit of
the level's prior; ``c_0``, the mean absolute change ``|y_t - y_{t-1}|``,
is the unit of everything that moves: offset, noise and innovation
standard deviations, and the trend's and seasons' priors. Scaled by
``s_0``, CO2's noise started near 0.7 x 330 ppm against monthly changes of
about 1 ppm, and training stopped early with 80% intervals ±300 ppm wide
(coverage 1.00, MAE 13.3, 27x ARIMA's). The emitted parameters are in the
data's units, so the Kalman filter runs on ``y`` itself.

No differencing. The other deep models model lag differences of a real
series (:class:`tsgen.components.scaling.LagDifference`, chosen by
:class:`tsgen.models.deep_estimator.DeepForecaster`); DeepState has no
``scaling`` argument and so models the raw series. Its state already is
the integration a difference would remove (a random-walk level, a local
trend, a season that repeats every ``m`` steps): differencing first would
leave the level and season states with nothing to carry, and filter and
smooth would return states of the differences rather than of the series.

Because the parameters depend on covariates only, ``log p(y_{1:T})`` is
exact, the per-step values are the filter's ``log p(y_t | y_{<t})`` (causal),
and forecasts draw from the filtered state at each series' last step
forward through the emitted future parameters.

Context. A forecast filters the last ``window_length_`` steps (64 by
default), as every deep model forecasts from its training windows' length:
the LSTM was trained on sequences of that length, with the season's phase
counted from their first step. ``log_likelihood`` filters the whole series it
is given, so past the window its per-step density of ``y_t`` conditions on
more than a forecast made at ``t - 1`` does, and the two differ (by design).
The one-step forecast's density of a series' last step is
``log_likelihood(y.iloc[-(window_length_ + 1):], per_step=True).iloc[-1]``.

Precision. The Kalman filter, and the emitted fields it reads, run in
float64 whatever the LSTM's dtype (float32): a constant series drives the
noise to its floor, where the float32 covariance update lost positive
definiteness, and the squares of data of size 1e20 left float32's range.
Data beyond float32's range (about 3.4e38, after the target transform) is
refused naming ``y``: the network reads it in float32.
"""
from __future__ import annotations

import pandas as pd
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from tsgen._validation import is_int
from tsgen.components.positive import inverse_positive, positive
from tsgen.components.scaling import CausalScale, fitted_scale, lag_differences
from tsgen.data import SeriesBatch, unwrap
from tsgen.data._index import seasonal_period
from tsgen.inference.elbo import valid_steps
from tsgen.inference.kalman import (
    KalmanParams,
    kalman_filter,
    kalman_filter_last,
    kalman_log_likelihood,
    kalman_sample,
    kalman_smoother,
)
from tsgen.models._latent_frames import frame_input
from tsgen.models.deep_estimator import DeepForecaster
from tsgen.models.lds import StateEstimate
from tsgen.training import SequenceBatch

__all__ = ["DeepState", "DeepStateModule"]

#: states of the level-trend block
_LEVEL_TREND = 2


class DeepStateModule(nn.Module):
    """The LSTM that emits a level-trend(-seasonal) linear-Gaussian model per step (module docstring).

    Parameters
    ----------
    n_features : int
        Covariates per step (0 without).
    hidden_dim : int
    season_length : int >= 2 or None
    scale_window : int
        Unused by the fixed data scale; kept so the scaler is built as in the other deep models.
    """

    #: the step-by-step filter: on short training windows it runs (and differentiates) about 3x faster on a
    #: CPU than the parallel scan, with the same values
    kalman_method = "sequential"

    def __init__(self, n_features: int, hidden_dim: int, season_length: int | None = None, scale_window: int = 64):
        super().__init__()
        season_length = None if season_length is None else int(season_length)
        self.n_features, self.season_length = int(n_features), season_length
        self.state_dim = _LEVEL_TREND + (season_length or 0)
        inputs = self.n_features + (season_length or 0) + 1
        self.lstm = nn.LSTM(inputs, int(hidden_dim), batch_first=True)
        # offset, observation noise, level and trend innovations, seasonal innovation
        self.out = nn.Linear(int(hidden_dim), 4 + (1 if season_length else 0))
        self.initial_mean = nn.Parameter(torch.zeros(self.state_dim))
        self.initial_raw = nn.Parameter(torch.zeros(self.state_dim))
        self.scaler = CausalScale(1, scale_window, "fixed")
        # c_0: mean |y_t - y_{t-1}| of the training data, the unit of the noise, trend and season (set by the
        # estimator before training; a buffer so that save/load keeps it)
        self.register_buffer("change_scale", torch.ones(1))

    # ------------------------------------------------------------ inputs
    def inputs(self, covariates: Tensor | None, n_series: int, steps: int, start, like: Tensor
               ) -> tuple[Tensor, Tensor | None]:
        """LSTM inputs ``(B, steps, K + m + 1)`` for steps ``start, start + 1, ...`` of each sequence (``start``
        an int or ``(B,)``), and the seasonal one-hot ``(B, steps, m)`` of ``t mod m`` (None without a season)."""
        active = None
        parts = [] if covariates is None else [covariates.to(like.dtype)]
        if self.season_length:
            position = torch.as_tensor(start, device=like.device).reshape(-1, 1) + torch.arange(steps,
                                                                                                device=like.device)
            active = nn.functional.one_hot((position % self.season_length).expand(n_series, steps),
                                           self.season_length).to(like.dtype)
            parts.append(active)
        parts.append(like.new_ones(n_series, steps, 1))
        return torch.cat(parts, -1), active

    def emit(self, hidden: Tensor, active: Tensor | None, like: Tensor) -> dict[str, Tensor]:
        """The time-varying fields ``H``, ``Q``, ``R``, ``d`` ``(B, steps, ...)`` in the data's units from LSTM
        outputs ``(B, steps, hidden)`` and the seasonal one-hot of :meth:`inputs`."""
        n_series, steps = hidden.shape[:2]
        # float64 from here on, as the filter (_params): (c_0 * std)^2 of data of size 1e20 is past float32's range
        raw = self.out(hidden).double()
        scale = self.change_scale.double()[0]
        offset = raw[..., 0] * scale
        noise = positive(raw[..., 1]) * scale
        std = positive(raw[..., 2:4])  # level and trend innovations
        rows = torch.stack([like.new_ones(n_series, steps), like.new_zeros(n_series, steps)], -1)
        if self.season_length:
            # the season of step t is observed and takes that step's seasonal innovation
            std = torch.cat([std, positive(raw[..., 4:5]) * active], -1)
            rows = torch.cat([rows, active], -1)
        std = std * scale
        return {
            "H": rows.unsqueeze(-2),  # (B, steps, 1, S)
            "Q": torch.diag_embed(std.square()),
            "R": noise.square()[..., None, None],
            "d": offset.unsqueeze(-1),
        }

    def transition_matrix(self, like: Tensor) -> Tensor:
        F = torch.eye(self.state_dim, dtype=like.dtype, device=like.device)
        F[0, 1] = 1.0
        return F

    def _initial_units(self, like: Tensor) -> Tensor:
        """``(S,)``: the level's prior in units of ``s_0`` (the data's size), trend and season in ``c_0``
        (the size of its changes): a level-sized season or trend prior would take many steps to forget."""
        units = self.change_scale.double().expand(self.state_dim).clone()  # float64, as the filter (_params)
        units[0] = self.scaler.prior.double()[0]
        return units.to(like.device)

    def initial(self, like: Tensor) -> tuple[Tensor, Tensor]:
        units = self._initial_units(like)
        return self.initial_mean.double() * units, torch.diag(positive(self.initial_raw).double() * units).square()

    @torch.no_grad()
    def initialise(self, values: Tensor, mask: Tensor) -> None:
        """Units and starting point from training windows ``(B, T, 1)`` (after ``scaler.fit_prior``).

        ``c_0`` is the mean absolute first difference; the level's prior mean
        starts at the data's mean. Seasonal components start with a prior
        standard deviation of 3 ``c_0`` (airline's season spans several months'
        changes), the innovations' and observation noise's output biases at
        ``c_0 / 2`` (level, noise), ``c_0 / 4`` (season) and ``c_0 / 50``
        (trend): the trend innovation's variance grows a forecast's variance
        like ``h^3``, so a trend that moved by a typical change every step
        would give intervals many times the data's range at a 2-year horizon.
        """
        self.change_scale.copy_(fitted_scale(*lag_differences(values, mask, 1)).to(self.change_scale))
        # in float64: the float32 sum of every training window's values overflows long before the values do
        observed = torch.where(mask, values.double(), torch.zeros((), dtype=torch.float64))
        level = observed.sum() / mask.sum().clamp(min=1)
        self.initial_mean[0] = level / self.scaler.prior[0].to(level)
        if self.season_length:
            self.initial_raw[_LEVEL_TREND:] = inverse_positive(3.0)
        bias = [0.0, 0.5, 0.5, 0.02] + ([0.25] if self.season_length else [])
        self.out.bias[1:] = inverse_positive(torch.tensor(bias[1:]))
        self.out.bias[0] = 0.0

    def state_names(self) -> list[str]:
        """The state components in order: ``level``, ``trend``, then ``season_k`` for ``t mod m == k``."""
        return ["level", "trend"] + [f"season_{k}" for k in range(self.season_length or 0)]

    def kalman_params(self, values: Tensor, covariates: Tensor | None = None) -> KalmanParams:
        """The model emitted over sequences ``values`` ``(B, T, 1)`` (only their shape is read) and their
        covariates ``(B, T, K)``: :class:`KalmanParams` with ``H``, ``Q``, ``R``, ``d`` time-varying."""
        n_series, steps = values.shape[:2]
        inputs, active = self.inputs(covariates, n_series, steps, 0, values)
        hidden, _ = self.lstm(inputs)
        return self._params(self.emit(hidden, active, values), *self.initial(values), values)

    def _params(self, fields: dict, m1: Tensor, P1: Tensor, like: Tensor) -> KalmanParams:
        """The Kalman model of ``fields``, in float64 whatever the LSTM's dtype: in float32 a constant series
        drove the noise to its floor (variance ``1e-12 c_0^2`` against priors of ``9 c_0^2``) and the covariance
        update lost positive definiteness, and data of size 1e20 squared past float32's range (NumericalError
        either way, where the other deep models fit)."""
        fields = {name: field.double() for name, field in fields.items()}
        n_series = fields["H"].shape[0]
        return KalmanParams(
            transition_matrices=self.transition_matrix(like).double(),
            observation_matrices=fields["H"],
            transition_covariance=fields["Q"],
            observation_covariance=fields["R"],
            initial_state_mean=m1.double().expand(n_series, -1),
            initial_state_covariance=P1.double().expand(n_series, -1, -1),
            observation_offsets=fields["d"],
            time_varying=frozenset({"observation_matrices", "transition_covariance", "observation_covariance",
                                    "observation_offsets"}),
        )

    # ----------------------------------------------------------- objectives
    def log_likelihood(self, values: Tensor, mask: Tensor, covariates: Tensor | None = None) -> Tensor:
        """Exact ``log p(y_t | y_{<t})`` ``(B, T)`` (0 where nothing is observed)."""
        params = self.kalman_params(values, covariates)
        return kalman_log_likelihood(values.double(), mask, params, method=self.kalman_method,
                                     per_step=True).to(values.dtype)

    def loss(self, batch: SequenceBatch, kl_weight: float = 1.0) -> Tensor:
        """The negative exact log-likelihood per observed step."""
        steps = valid_steps(batch.mask).sum().clamp_min(1)
        return -self.log_likelihood(batch.values, batch.mask, batch.covariates).sum() / steps

    def sample(self, values: Tensor, mask: Tensor, lengths: Tensor, covariates: Tensor | None,
               future_covariates: Tensor | None, horizon: int, n_samples: int, generator=None) -> Tensor:
        """Paths ``(n_samples, B, horizon, 1)`` after each series' last step ``lengths - 1``: the filtered
        state there, moved by the parameters emitted for the following steps."""
        n_series, steps = values.shape[:2]
        inputs, active = self.inputs(covariates, n_series, steps, 0, values)
        hidden, _ = self.lstm(inputs)
        fields = self.emit(hidden, active, values)
        m1, P1 = self.initial(values)
        history = self._params(fields, m1, P1, values)
        filtered = kalman_filter_last(values.double(), mask, history, lengths)
        rows = torch.arange(n_series, device=values.device)
        ends = lengths.to(values.device) - 1
        F = history.transition_matrices
        mean = filtered.mean @ F.T
        cov = F @ filtered.covariance @ F.T + history.transition_covariance[rows, ends]
        # the LSTM's state at each series' own last step, then on through the future covariates
        packed = pack_padded_sequence(inputs, lengths.cpu(),
                                      batch_first=True, enforce_sorted=False)
        _, carry = self.lstm(packed)
        inputs, active = self.inputs(future_covariates, n_series, horizon, lengths.to(values.device), values)
        future, _ = self.lstm(inputs, carry)
        ahead = self.emit(future, active, values)
        params = self._params(ahead, mean, (cov + cov.transpose(-1, -2)) / 2, values)
        return kalman_sample(params, horizon, n_samples, generator=generator).observations.to(values.dtype)


class DeepState(DeepForecaster):
    r"""DeepState (Rangapuram et al. 2018): an LSTM over covariates emits a linear-Gaussian state-space
    model per step; the Kalman filter gives its exact likelihood.

    .. math::

        z_{t+1} = F z_t + g_t \odot \varepsilon_t,\quad y_t = a_t^\top z_t + b_t + \sigma_t \eta_t,\quad
        (g_t, b_t, \sigma_t) = \mathrm{MLP}(\mathrm{LSTM}(u_{1:t}))

    with a level-trend state and optional seasonality (:mod:`tsgen.models.deepstate`).
    ``u_t`` holds the covariates ``X`` (if given), the season's one-hot and a constant;
    the target never enters the LSTM, so ``log_likelihood`` is exact (per step:
    the Kalman filter's ``log p(y_t | y_{<t})``) and training maximises it directly.

    Parameters
    ----------
    season_length : "auto", int >= 2 or None
        Seasonal period ``m``. "auto" (default): the seasonal period of ``y``'s index frequency
        (12 for monthly, 7 daily, 24 hourly, ...; as ``tsgen.ARIMA``'s ``period``), and no season
        for arrays or an index without a frequency. None: level and trend only.
    hidden_dim : int
        LSTM size.
    target_transform : "auto", None, "log" or float in [0, 1]
        Box-Cox transform of positive series before the Kalman filter, undone on each forecast path
        (:mod:`tsgen.models.deep_estimator`). ``"auto"``: Guerrero's
        lambda for pandas series whose values are all positive (a seasonal swing that grows with the
        level, as airline passengers', is then modelled as one of constant size); None: no transform.
    window_length : int or None
        Training windows and forecast context length (None: 64 steps).
    max_epochs, batch_size, learning_rate, weight_decay, grad_clip, validation_fraction, patience, lr_decay,
    device, progress, max_seconds :
        Training settings (:class:`tsgen.training.TrainingConfig`).
    random_state : int or None
    warm_start : bool, default False
        When True, ``fit`` on a fitted estimator continues training its network for
        ``max_epochs`` more (see :class:`~tsgen.models.deep_estimator.DeepForecaster`).

    Attributes
    ----------
    season_length_ : int or None
        The seasonal period used.
    module_ : DeepStateModule
    training_history_ : list of dict
    """

    _supports_covariates = True

    def __init__(self, season_length="auto", hidden_dim=32, window_length=None, max_epochs=100, batch_size=32,
                 learning_rate=1e-2, weight_decay=0.0, grad_clip=10.0, validation_fraction="auto", patience=10,
                 lr_decay=1.0, random_state=None, device="cpu", progress=True, max_seconds=None,
                 target_transform="auto", warm_start=False):
        self.season_length = season_length
        self.hidden_dim = hidden_dim
        self.window_length = window_length
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.grad_clip = grad_clip
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.lr_decay = lr_decay
        self.random_state = random_state
        self.device = device
        self.progress = progress
        self.max_seconds = max_seconds
        self.target_transform = target_transform
        self.warm_start = warm_start

    @classmethod
    def get_test_params(cls):
        return [
            {"season_length": None, "hidden_dim": 4, "window_length": 12, "max_epochs": 2, "batch_size": 16,
             "progress": False, "random_state": 0},
            {"season_length": 12, "hidden_dim": 4, "window_length": 24, "max_epochs": 2, "progress": False,
             "random_state": 1},
        ]

    def _build_module(self, n_dims: int, n_features: int) -> DeepStateModule:
        if n_dims != 1:
            raise ValueError(f"DeepState models one variable per series; `y` has {n_dims}.")
        if not is_int(self.hidden_dim) or self.hidden_dim < 1:
            raise ValueError(f"`hidden_dim` must be a positive integer; got {self.hidden_dim!r}.")
        return DeepStateModule(n_features, self.hidden_dim, self.season_length_, self._scale_window())

    def _resolve_season_length(self, data: SeriesBatch) -> int | None:
        """``season_length``, with ``"auto"`` the seasonal period of the index frequency (None without one)."""
        season_length = self.season_length
        if isinstance(season_length, str) and season_length == "auto":
            periods = {seasonal_period(index) for index in data.indexes}  # 1 without a frequency (arrays)
            if len(periods) > 1:
                raise ValueError(f"the series of `y` have index frequencies with different seasonal periods "
                                 f"{sorted(periods)}; pass `season_length`.")
            period = periods.pop()
            return period if period >= 2 else None
        if season_length is not None and (not is_int(season_length) or season_length < 2):
            raise ValueError(f"`season_length` must be \"auto\", None or an integer >= 2; got {season_length!r}.")
        return None if season_length is None else int(season_length)

    def _fit(self, data, covariates):
        season_length = self._resolve_season_length(data)
        if self._continues_training() and season_length != self.season_length_:
            raise ValueError(f"`warm_start=True` continues training the fitted DeepState, whose season length is "
                             f"{self.season_length_}, but the new data's is {season_length}; pass season_length "
                             "or set warm_start=False.")
        self.season_length_ = season_length
        super()._fit(data, covariates)

    def _initialise(self, module: DeepStateModule, batch: SequenceBatch) -> None:
        module.initialise(batch.values, batch.mask)

    def _real_valued_target(self, module) -> bool:
        return True  # the Kalman filter's Gaussian observation

    def _fitted_state(self):
        meta, tensors = super()._fitted_state()
        return {**meta, "season_length": self.season_length_}, tensors

    def _load_fitted_state(self, meta, tensors):
        self.season_length_ = meta["season_length"]
        super()._load_fitted_state(meta, tensors)

    def _check_representable(self, data: SeriesBatch) -> None:
        """Refuse (transformed) data that the module's dtype cannot hold: cast to float32 it would be inf,
        and the filter would fail deep inside torch instead."""
        magnitude = torch.where(data.mask, data.values.abs(), torch.zeros((), dtype=data.values.dtype))
        largest = float(magnitude.max()) if magnitude.numel() else 0.0
        limit = torch.finfo(self.dtype).max
        if largest > limit:
            raise ValueError(
                f"`y` has values of magnitude {largest:.3g} (after its target transform), beyond {self.dtype}'s "
                f"range (about {limit:.2g}) in which DeepState's network reads the data; divide `y` by a constant "
                "(e.g. a power of ten) before fitting and multiply the forecasts by it, or pass "
                "target_transform='log' for positive data."
            )

    def _training_data(self, data: SeriesBatch, covariates):
        self._check_representable(data)
        return super()._training_data(data, covariates)

    def _kalman_inputs(self, data: SeriesBatch, covariates):
        """``values``, ``mask`` and the covariates of the steps of ``data``, on the module's device and dtype."""
        self._check_representable(data)
        values, mask = self._as_tensor(data.values), data.mask.to(self._device())
        if covariates is not None:
            covariates = self._as_tensor(covariates)[:, : values.shape[1]]
        return values, mask, covariates

    def _log_likelihood(self, data, covariates):
        values, mask, covariates = self._kalman_inputs(data, covariates)
        with torch.no_grad():
            return self.module_.log_likelihood(values, mask, covariates).double().cpu()

    # ----------------------------------------------------------- states
    def filter(self, y, X=None) -> StateEstimate:
        """Filtered states ``E[z_t | y_1:t]`` and covariances of the model the LSTM emits for ``y``'s steps.

        Returns
        -------
        StateEstimate
            ``means``: a frame per series indexed like it, with columns ``level``, ``trend`` and
            ``season_k`` (the component observed when ``t mod m == k``, ``t`` counted from the series'
            first step); ``covariances``: an array ``(time, S, S)`` per series.
        """
        batch, values, mask, params = self._state_inputs(y, X)
        with torch.no_grad():
            result = kalman_filter(values, mask, params, method=self.module_.kalman_method)
        return self._state_estimate(batch, result.filtered_means, result.filtered_covariances)

    def smooth(self, y, X=None) -> StateEstimate:
        """Smoothed states ``E[z_t | y_1:T]`` and covariances (RTS smoother); layout as :meth:`filter`."""
        batch, values, mask, params = self._state_inputs(y, X)
        with torch.no_grad():
            result = kalman_smoother(values, mask, params)
        return self._state_estimate(batch, result.smoothed_means, result.smoothed_covariances)

    def _state_inputs(self, y, X):
        """``y`` checked as for :meth:`log_likelihood`, and the Kalman inputs its likelihood uses."""
        batch, covariates, _ = frame_input(self, y, X, ())
        values, mask, covariates = self._kalman_inputs(self._transformed(batch), covariates)
        with torch.no_grad():
            params = self.module_.kalman_params(values, covariates)
        return batch, values.double(), mask, params  # the filter runs in float64 (DeepStateModule._params)

    def _state_estimate(self, batch: SeriesBatch, means: Tensor, covs: Tensor) -> StateEstimate:
        columns = self.module_.state_names()
        means, covs = means.double().cpu().numpy(), covs.double().cpu().numpy()
        frames, arrays = [], []
        for i, index in enumerate(batch.indexes):
            n = int(batch.lengths[i])
            frames.append(pd.DataFrame(means[i, :n].copy(), index=index.copy(), columns=list(columns)))
            arrays.append(covs[i, :n].copy())
        return StateEstimate(unwrap(batch, frames), unwrap(batch, arrays))

    def _sample(self, horizon, n_samples, history, covariates, generator):
        self._check_representable(self._transformed(history))
        values, mask, lengths, context_covariates, future_covariates = self._context(history, covariates, horizon)
        with torch.no_grad():
            draws = self.module_.sample(values, mask, lengths, context_covariates, future_covariates, horizon,
                                        n_samples, generator)
        return draws.transpose(0, 1).double().cpu()

"""The thin estimator shared by the deep models: data to training batches, the loop, save/load.

A deep estimator subclass writes its constructor (arguments stored
unchanged, sklearn style) and three hooks:

- ``_build_module(n_dims, n_features) -> nn.Module`` from its constructor
  arguments (called under a forked RNG seeded from ``random_state``);
- ``_loss(module, batch, kl_weight) -> Tensor``: the scalar to minimise
  for a :class:`tsgen.training.SequenceBatch` (default ``module.loss``, given
  ``objective`` and ``n_particles`` when the estimator has an ``objective``
  argument: latent models train by ``"elbo"``, ``"iwae"`` or ``"fivo"``);
- optionally ``_initialise(module, batch)``: data-dependent initialisation;
- BaseForecaster's ``_sample`` / ``_log_likelihood``.

Training data: a collection of sequences (a list of several arrays, e.g.
piano rolls) is used whole, padded at the end; pandas series (and a single
array) are cut into windows of ``window_length`` steps (default: 64, or
three seasons of the index frequency when longer, capped at the longest
series) aligned to each series' end.
Everything trains in float32.

Defaults chosen from the data (issue 11, "forecasting that works by default"):

- Differencing. For pandas input and a Normal or Student-t likelihood
  (``scaling`` True or "auto"), the module models ``z_t = (x_t - x_{t-p}) / c``
  (:class:`tsgen.components.scaling.LagDifference`): ``p`` is the seasonal
  period of the index frequency or 1, whichever differences are less spread
  out, and none when the series itself is less spread out than both (white
  noise). Log-densities carry the Jacobian ``-log c``, so they stay exact,
  causal and in the data's units; forecasts undo the differences on each
  sample path. This is ARIMA's ``I`` (here the seasonal one, ``D = 1``) in
  front of the network: DeepAR's mean scaling alone leaves a level of about
  330 in CO2's inputs, with the seasonal cycle 1% of it, and the default
  networks forecast it with 3-5x ARIMA's error. Arrays (no frequency),
  counts and binary data are modelled as given; ``scaling=False`` turns it off.
- Variance stabilisation (``target_transform``, default ``"auto"``). Before
  the differences, a pandas series whose values are all positive is mapped
  by a Box-Cox transform (:class:`tsgen.components.scaling.BoxCox`) with
  Guerrero's ``lambda`` searched in ``[0, 1]`` (from the log to no
  transform; :func:`tsgen.components.scaling.guerrero_lambda`, blocks of
  one season): a seasonal swing that grows with the level becomes one of
  constant size. The Jacobian ``(lambda - 1) log x_t`` is added to every
  per-step density, so log-likelihoods stay exact, causal and in the data's
  units (comparable with any other model's), and forecasts map each sample
  path back (quantiles are exact; the mean is the mean of the mapped paths).
  A series with a zero or negative value, arrays, counts, binary data and
  ``scaling=False`` are left as they are; ``"log"`` or a number asks for a
  transform explicitly (positive data only), None turns it off. Why on by
  default, when statsmodels' SARIMAX and statsforecast's AutoARIMA transform
  nothing unless asked and GluonTS's DeepAR only divides by the mean: these
  estimators already choose their differencing from the data, and on
  airline passengers without the transform the stochastic RNNs' 80%
  intervals covered 0.25-0.62 of the 24-month hold-out (the series'
  swing, and with it the size of its seasonal differences, grows with its
  level, beyond the training windows' range), DeepState's 0.38; with it
  (``lambda`` 0, the log) every default model covers 0.88-1.00 with MAE
  0.18-0.47x ARIMA's (``benchmarks/deep_forecast.py``, seed 0). Where the
  spread does not grow with the level Guerrero's ``lambda`` is near 1, and
  over a series' own range a transform near the log of a series far from 0
  (CO2: 313-370 ppm, ``lambda`` 0.05) is close to linear.
- Early stopping on a validation tail. ``validation_fraction="auto"``
  holds out the last 10% of each series (windows over the tail, read with
  the steps before it as context); training stops after ``patience``
  epochs without a better validation loss and keeps the best weights, so
  ``max_epochs`` is a ceiling rather than the epochs run (on CO2 the
  default RNN overfits after about 40 of its 100 epochs: 100 epochs give an
  80% interval covering 17% of a 24-month hold-out). A collection of
  sequences holds out nothing by default (a fraction holds out whole
  sequences). The tail is not trained on: GluonTS's choice too (a
  validation split), against statsmodels' fits on all the data. A latent
  model's validation loss is the mean of :data:`VALIDATION_DRAWS`
  evaluations of its bound with the same draws every epoch, so that
  epochs differ by their weights, not by their luck.
- Too little data. Fewer than ``MIN_TRAINING_STEPS`` (100) observed time
  steps warn (:class:`tsgen.exceptions.InsufficientDataWarning`) with what
  to use instead.

Before training, a module with a ``scaler``
(:class:`tsgen.components.scaling.CausalScale`) gets the (differenced)
training data's mean absolute value as its prior scale ``s_0``, so the
network works in units-free quantities; data outside the emission's support
(a count emission on non-integers) is refused with one sentence.
"""
from __future__ import annotations

import copy
import dataclasses
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from tsgen._validation import is_int
from tsgen.base import BaseForecaster, make_generator
from tsgen.components.heads import BernoulliHead
from tsgen.components.scaling import BoxCox, LagDifference, choose_difference_lag, guerrero_lambda
from tsgen.data import SeriesBatch
from tsgen.data._index import seasonal_period
from tsgen.data.windows import cut_windows, last_steps, tail_starts, take_steps
from tsgen.exceptions import InsufficientDataWarning
from tsgen.training import SequenceBatch, TrainingConfig, resolve_device, seeded_from, train

#: window length used for pandas series when ``window_length`` is None
DEFAULT_WINDOW_LENGTH = 64
#: at most this many windows per epoch: longer series get a larger stride
MAX_WINDOWS = 20_000
#: fewer observed time steps than this (over all series) and ``fit`` warns that the data is too little
MIN_TRAINING_STEPS = 100
#: input kinds (tsgen.data.SeriesBatch.kind) of pandas data, whose index gives a frequency
PANDAS_KINDS = ("series", "frame", "list", "panel")
#: share of each series' last steps held out for early stopping when ``validation_fraction="auto"``
VALIDATION_TAIL = 0.1
#: a latent model's validation loss is the mean of this many evaluations of its bound, the same draws every epoch
VALIDATION_DRAWS = 8

_CONFIG_FIELDS = (
    "max_epochs", "batch_size", "learning_rate", "weight_decay", "grad_clip", "validation_fraction",
    "patience", "kl_annealing_epochs", "kl_annealing_start", "lr_decay", "device", "progress", "max_seconds",
    "objective", "n_particles",
)


def _caller_stacklevel() -> int:
    """``stacklevel`` that makes a warning raised by the caller of this function point at
    the first frame outside the tsgen package (the user's ``fit``, however deep the overrides)."""
    package = str(Path(__file__).resolve().parents[1])
    frame, level = sys._getframe(1), 1
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def fit_rows(covariates: torch.Tensor, rows: int) -> torch.Tensor:
    """Covariates cut or zero-padded to ``rows`` (rows past a series' end are never used)."""
    if covariates.shape[1] >= rows:
        return covariates[:, :rows]
    padding = covariates.new_zeros(covariates.shape[0], rows - covariates.shape[1], covariates.shape[2])
    return torch.cat([covariates, padding], dim=1)


class DeepForecaster(BaseForecaster):
    """Base of the deep estimators (see the module docstring).

    Fitted attributes: ``module_`` (the trained ``nn.Module``, in eval mode),
    ``training_history_`` (one dict per epoch, see :func:`tsgen.training.train`)
    and ``window_length_`` (None when sequences were used whole).

    ``warm_start=True`` (scikit-learn's meaning): ``fit`` on a fitted estimator
    continues training a copy of ``module_`` for up to ``max_epochs`` more
    epochs, early stopping as usual, instead of a new network. The fitted
    window length, target transform and differencing are kept, so the module
    sees data on the scale it learned (the causal scale's prior is refitted to
    the new data); the data-dependent initialisation is skipped, and so is
    ``kl_annealing_epochs="auto"``'s warm-up. Data with another number of
    variables or covariates, or arguments changed so that they build another
    network, raise a ValueError naming ``warm_start``. ``training_history_``
    then holds the new epochs only. Unfitted, it is an ordinary fit.
    """

    dtype = torch.float32

    # ---------------------------------------------------------------- hooks
    def _build_module(self, n_dims: int, n_features: int) -> nn.Module:
        raise NotImplementedError

    def _loss(self, module: nn.Module, batch: SequenceBatch, kl_weight: float) -> torch.Tensor:
        objective = getattr(self, "objective", None)
        if objective is None:  # a model without a latent has one objective, its likelihood
            return module.loss(batch, kl_weight)
        if module.training:
            return module.loss(batch, kl_weight, objective=objective, n_particles=self.n_particles)
        # Validation, which early stopping reads: a bound drawn afresh each epoch varies more than training
        # moves it (the default DMM on CO2's 64-step tail: sd 0.12 nats a step at fixed weights, draws from
        # 0.19 to 0.84, against 0.47 -> 0.32 over 150 epochs of training), so the "best" epoch was the
        # luckiest draw and training stopped 10 draws later. The mean of VALIDATION_DRAWS evaluations with
        # the same draws every epoch (common random numbers) compares the weights instead.
        device = next(module.parameters()).device
        with seeded_from(torch.Generator().manual_seed(0), device):
            losses = [module.loss(batch, kl_weight, objective=objective, n_particles=self.n_particles)
                      for _ in range(VALIDATION_DRAWS)]
        return torch.stack(losses).mean()

    def _initialise(self, module: nn.Module, batch: SequenceBatch) -> None:
        """Data-dependent initialisation before training.

        Binary data: a Bernoulli emission's output bias starts at the logits of
        the training data's per-variable frequencies. At zero every key starts
        at probability 1/2 (88 log 2 = 61 nats a JSB step against about 10 for
        the base rates), and Adam moves a bias by about ``learning_rate`` per
        update: from that start a VRNN spent ~45 of its first 90 updates (60
        JSB chorales, batch 20) reaching the base rates. The head's weights
        keep their random start, so the state still shapes every step's logits.
        """
        head = self._emission_head(module)
        binary_component = getattr(head, "family", None) == "bernoulli" and hasattr(head, "initialise_frequency")
        if isinstance(head, BernoulliHead) or binary_component:
            frequency = torch.where(batch.mask, batch.values, 0.0).sum((0, 1)) / batch.mask.sum((0, 1)).clamp(min=1)
            if binary_component:  # an autoregressive emission over binary keys (components.autoregressive)
                head.initialise_frequency(frequency)
            else:
                head.proj["logits"].bias.copy_(torch.logit(frequency.clamp(1e-3, 1 - 1e-3)))

    @staticmethod
    def _emission_head(module: nn.Module):
        """The module's distribution head (None for a custom emission without one)."""
        return getattr(module, "head", None)

    # -------------------------------------------------------------- helpers
    def _training_config(self) -> TrainingConfig:
        """A :class:`TrainingConfig` from whichever of its fields the estimator has as arguments.

        Windowed series are validated on their tails (:meth:`_validation_tail`),
        so the loop draws no validation sequences of its own for them.
        """
        fields = {name: getattr(self, name) for name in _CONFIG_FIELDS if hasattr(self, name)}
        if isinstance(fields.get("validation_fraction"), str) and fields["validation_fraction"] == "auto":
            fields["validation_fraction"] = 0.0
        if fields.get("kl_annealing_epochs") == "auto" and self._continues_training():
            fields["kl_annealing_epochs"] = 0  # "auto": annealed by the first fit; a KL weight of 0 would undo it
        config = TrainingConfig(**fields)
        if self.window_length_ is not None:
            config = dataclasses.replace(config, validation_fraction=0.0)
        return config

    def _resolve_window_length(self, data: SeriesBatch) -> int | None:
        window_length = getattr(self, "window_length", None)
        if window_length is not None:
            if not is_int(window_length) or window_length < 2:
                raise ValueError(f"`window_length` must be None or an integer >= 2; got {window_length!r}.")
            return window_length
        if data.kind == "arrays" and data.n_series > 1:  # a collection of sequences: each one whole
            return None
        # at least three seasons of context (hourly data: 72 steps), never longer than the longest series
        period = seasonal_period(data.indexes[0])
        return min(max(DEFAULT_WINDOW_LENGTH, 3 * period), int(data.lengths.max()))

    def _warn_if_little_data(self, data: SeriesBatch) -> None:
        """An :class:`InsufficientDataWarning` when the training data has fewer than
        :data:`MIN_TRAINING_STEPS` observed steps: a network of thousands of weights
        cannot learn a series' dynamics from a few dozen values."""
        steps = int(data.mask.any(-1).sum())
        if steps < MIN_TRAINING_STEPS:
            warnings.warn(
                f"{type(self).__name__} was fitted on {steps} observed time steps ({data.n_series} series); deep "
                f"models need at least {MIN_TRAINING_STEPS} (better several hundred) to learn a series' dynamics, "
                "so these forecasts may be poor. For a series this short prefer ARIMA, ETS or Theta, or fit one "
                "model on many related series.",
                InsufficientDataWarning,
                stacklevel=_caller_stacklevel(),
            )

    def _validation_tail(self, data: SeriesBatch) -> torch.Tensor | None:
        """Steps held out at the end of each series ``(B,)`` for early stopping, or None.

        Windowed series hold out their last ``validation_fraction`` of steps
        (``"auto"``: :data:`VALIDATION_TAIL`); collections of sequences
        instead hold out whole sequences (:func:`tsgen.training.split_validation`,
        with ``"auto"``: none). Too short a series (no step to hold out, or
        fewer than two left to train on) trains on everything.
        """
        fraction = getattr(self, "validation_fraction", 0.0)
        if self.window_length_ is None or fraction == 0:
            return None
        fraction = VALIDATION_TAIL if fraction == "auto" else fraction
        tail = (fraction * data.lengths.double()).round().long()
        if bool((tail < 1).any() or (data.lengths - tail < 2).any()):
            return None
        return tail

    def _training_data(self, data: SeriesBatch, covariates: torch.Tensor | None
                       ) -> tuple[SequenceBatch, SequenceBatch | None]:
        """Training and validation batches, as float32: sequences whole (collections, validation
        drawn by the loop) or cut into windows (series, validated on their tails)."""
        window_length = self.window_length_
        values, mask, lengths = data.values, data.mask, data.lengths
        if covariates is not None:
            covariates = fit_rows(covariates, values.shape[1])
        if window_length is None:
            batch = SequenceBatch(values=values, mask=mask, covariates=covariates, lengths=lengths)
            return batch.to(dtype=self.dtype), None
        tail = self._validation_tail(data)
        valid = None
        if tail is not None:
            # windows over the tail; their first steps (training data) are the tail's context and count in the
            # validation loss too, a constant share that dilutes but does not hide a rise on the tail
            v_values, v_mask, v_lengths, v_covariates = cut_windows(
                values, mask, lengths, window_length, covariates=covariates,
                positions=tail_starts(lengths, window_length, tail))
            valid = SequenceBatch(values=v_values, mask=v_mask, covariates=v_covariates,
                                  lengths=v_lengths).to(dtype=self.dtype)
            lengths = lengths - tail
        n_windows = int((lengths - window_length).clamp(min=0).sum()) + data.n_series
        stride = max(1, -(-n_windows // MAX_WINDOWS))
        values, mask, lengths, covariates = cut_windows(values, mask, lengths, window_length, stride, covariates)
        batch = SequenceBatch(values=values, mask=mask, covariates=covariates, lengths=lengths)
        return batch.to(dtype=self.dtype), valid

    def _real_valued_target(self, module: nn.Module) -> bool:
        """Whether the module's likelihood is a density on the real line (Normal, Student-t): only
        those are transformed and differenced (counts and binary data keep their support)."""
        return bool(getattr(self._emission_head(module), "location_scale", False))

    def _choose_transform(self, data: SeriesBatch, module: nn.Module) -> BoxCox | None:
        """The Box-Cox transform the data gets before differencing, or None (``target_transform``).

        ``"auto"``: for pandas input, a real-valued likelihood and ``scaling`` not
        False, each variable whose observed values are all positive gets Guerrero's
        ``lambda`` in ``[0, 1]`` (:func:`guerrero_lambda`, blocks of one season);
        others, and a ``lambda`` of 1, are left as they are. ``"log"`` or a number
        in ``[0, 1]``: that transform of every variable (positive data only).
        """
        option = getattr(self, "target_transform", None)
        if option is None:
            return None
        explicit = not (isinstance(option, str) and option == "auto")
        if explicit:
            if isinstance(option, str) and option == "log":
                lam = 0.0
            elif isinstance(option, (int, float)) and not isinstance(option, bool) and 0 <= option <= 1:
                lam = float(option)
            else:
                raise ValueError("`target_transform` must be \"auto\", None, \"log\" or a Box-Cox lambda in "
                                 f"[0, 1]; got {option!r}.")
            if not self._real_valued_target(module):
                raise ValueError(f"`target_transform={option!r}` applies to a Normal or Student-t likelihood; this "
                                 "model's emission has another support. Use target_transform=None.")
            if bool((data.mask & (data.values <= 0)).any()):
                raise ValueError(f"`y` has values <= 0; target_transform={option!r} is defined for positive "
                                 "series only. Use target_transform=None (or \"auto\", which leaves such series "
                                 "as they are).")
            return BoxCox(torch.full((data.n_dims,), lam, dtype=torch.float64))
        if (data.kind not in PANDAS_KINDS or getattr(self, "scaling", True) is False
                or not self._real_valued_target(module)):
            return None
        lambdas = guerrero_lambda(data.values, data.mask, seasonal_period(data.indexes[0]))
        if lambdas is None:
            return None
        positive = ~(data.mask & (data.values <= 0)).any((0, 1)) & data.mask.any((0, 1))
        lambdas = torch.where(positive & torch.isfinite(lambdas), lambdas, torch.ones((), dtype=torch.float64))
        return BoxCox(lambdas) if bool((lambdas < 1).any()) else None

    def _choose_differencing(self, data: SeriesBatch, module: nn.Module) -> LagDifference | None:
        """The differencing the module's data gets, or None (see :class:`LagDifference`).

        Only for pandas input (series with a time index, whose frequency gives
        the seasonal period; arrays are modelled as given) and location-scale
        likelihoods (Normal, Student-t) with ``scaling`` True or "auto": count
        and binary data keep their units (and DeepState, without ``scaling``,
        has its own Kalman level and trend). The lag is the seasonal period of
        the index frequency or 1, whichever makes the training data more
        predictable (:func:`choose_difference_lag`), and none when neither does.
        """
        if (data.kind not in PANDAS_KINDS or getattr(self, "scaling", False) not in (True, "auto")
                or not self._real_valued_target(module)):
            return None
        lag = choose_difference_lag(data.values, data.mask, seasonal_period(data.indexes[0]))
        return None if lag is None else LagDifference.fit(data.values, data.mask, lag)

    def _transformed(self, data: SeriesBatch) -> SeriesBatch:
        """``data`` after the fitted Box-Cox transform (itself without one)."""
        transform = getattr(self, "target_transform_", None)
        if transform is None:
            return data
        return dataclasses.replace(data, values=transform.forward(data.values, data.mask))

    def _model_data(self, data: SeriesBatch, training: bool = False) -> SeriesBatch:
        """``data`` as the module sees it: transformed and differenced when the model does either.

        For training (and for scoring and the forecast context, which follow
        training), steps without their lagged value (a series' first ``p``
        steps) are masked: their location is a fallback, another distribution.
        """
        data = self._transformed(data)
        differencing = getattr(self, "differencing_", None)
        if differencing is None:
            return data
        values, has_lag = differencing.forward(data.values, data.mask)
        mask = data.mask & has_lag if training else data.mask
        if training:
            values = torch.where(mask, values, torch.full((), float("nan"), dtype=values.dtype))
        return dataclasses.replace(data, values=values, mask=mask)

    def _per_step_log_likelihood(self, data: SeriesBatch, covariates, **options):
        """The module's per-step densities of the transformed and differenced data, back in the data's
        units (each map's log-Jacobian added). Steps without their lagged value are not scored (NaN, as
        ARIMA's first d + sD steps): the module never trained on their fallback location, and fed to it as
        observed they moved the lag inputs and causal scale away from the forecast's, so that
        exp(log p(y_t | y_<t)) was not the one-step forecast's density on a series no longer than the window."""
        values = super()._per_step_log_likelihood(self._model_data(data, training=True), covariates, **options)
        differencing = getattr(self, "differencing_", None)
        if differencing is not None:
            values = values + differencing.log_det(data.mask).numpy()
        transform = getattr(self, "target_transform_", None)
        if transform is not None:
            values = values + transform.log_det(data.values, data.mask).numpy()
        return values

    def _sample_paths(self, horizon, n_samples, history, covariates, generator) -> torch.Tensor:
        """``_sample``'s draws ``(B, S, H, D)`` in the data's units: each path undifferenced, then
        back-transformed."""
        draws = self._sample(horizon, n_samples, history, covariates, generator)
        differencing = getattr(self, "differencing_", None)
        if differencing is not None:
            transformed = self._transformed(history)
            draws = differencing.invert(draws, transformed.values, history.mask, history.lengths)
        transform = getattr(self, "target_transform_", None)
        return draws if transform is None else transform.invert(draws)

    def _draw_paths(self, horizon, n_samples, history, covariates):
        draws = self._sample_paths(horizon, n_samples, history, covariates, make_generator(self.random_state))
        return draws.detach().cpu().numpy()

    def _forecast(self, horizon, history, covariates, levels):
        if getattr(self, "differencing_", None) is None and getattr(self, "target_transform_", None) is None:
            return super()._forecast(horizon, history, covariates, levels)
        draws = self._sample_paths(horizon, self._n_predict_samples, history, covariates,
                                   make_generator(self.random_state)).detach().cpu()
        qs = torch.quantile(draws, torch.tensor(levels, dtype=draws.dtype), dim=1).numpy()
        return draws.mean(1).numpy(), {q: qs[k] for k, q in enumerate(levels)}

    def _scale_window(self) -> int:
        """``W`` of the causal data scale: the training window (64 steps for whole sequences)."""
        return self.window_length_ or DEFAULT_WINDOW_LENGTH

    def _check_support(self, data: SeriesBatch, module: nn.Module | None = None) -> None:
        """One clear ``ValueError`` when ``y`` holds values the emission cannot produce."""
        head = self._emission_head(self.module_ if module is None else module)
        if head is not None and hasattr(head, "check_support"):
            head.check_support(data.values, data.mask, "y")

    def _device(self) -> torch.device:
        return next(self.module_.parameters()).device

    def _as_tensor(self, tensor: torch.Tensor | None) -> torch.Tensor | None:
        """A float64 edge tensor as the module's dtype and device."""
        if tensor is None:
            return None
        return tensor.to(device=self._device(), dtype=self.dtype if tensor.is_floating_point() else tensor.dtype)

    def _context(self, history: SeriesBatch, covariates: torch.Tensor | None, horizon: int):
        """What a forecast conditions on: the last ``window_length_`` steps of each series
        (the whole series for collections), their covariates and the future covariates.

        Returns ``values``, ``mask`` ``(B, L, D)``, ``lengths`` ``(B,)``,
        ``context_covariates`` ``(B, L, K)`` and ``future_covariates``
        ``(B, horizon, K)`` (both None without covariates), on the module's device.
        """
        # a series' first p differenced steps have a fallback location the module never trained on (training
        # masks them); in the context of a series no longer than the window they would poison the lag
        # inputs and the causal scale window (M3 Other: global RNN CRPS 1.79 -> 1.34, ARIMA 1.36)
        history = self._model_data(history, training=True)
        values, mask, lengths, starts = last_steps(
            history.values, history.mask, history.lengths, self.window_length_
        )
        context_covariates = future_covariates = None
        if covariates is not None:
            context_covariates = take_steps(covariates, starts, values.shape[1])
            future_covariates = take_steps(covariates, history.lengths, horizon)
        move = self._as_tensor
        return move(values), mask.to(self._device()), lengths, move(context_covariates), move(future_covariates)

    def _new_module(self, n_dims: int, n_features: int, generator: torch.Generator) -> nn.Module:
        # parameter initialisation draws from the global RNG: fork it so random_state decides
        with seeded_from(generator):
            module = self._build_module(n_dims, n_features)
        return module.to(dtype=self.dtype)

    # ------------------------------------------------------------------ fit
    def _continues_training(self) -> bool:
        """Whether this fit continues from the fitted module (``warm_start=True`` on a fitted estimator)."""
        warm_start = getattr(self, "warm_start", False)
        if not isinstance(warm_start, bool):
            raise ValueError(f"`warm_start` must be True or False; got {warm_start!r}.")
        return warm_start and hasattr(self, "module_")

    def _warm_module(self, data: SeriesBatch, n_features: int) -> nn.Module:
        """A copy of the fitted module to train on ``data`` (``warm_start``), after checking that it fits.

        A copy, so that a fit that fails leaves the fitted estimator whole.
        The module keeps the window, transform and differencing it was fitted
        with (they define the scale of what it learned); new data they cannot
        take, or changed arguments that build another network, are refused.
        """
        name = type(self).__name__
        differs = [f"{what} {new} where it was fitted with {old}"
                   for what, old, new in (("variables", self.n_dims_, data.n_dims),
                                          ("covariates", self.n_features_, n_features)) if old != new]
        if differs:
            raise ValueError(f"`warm_start=True` continues training the fitted {name}, but the new data have "
                             f"{' and '.join(differs)}; pass data like the first fit's or set warm_start=False.")
        fresh = self._new_module(data.n_dims, n_features, make_generator(0)).state_dict()
        fitted = self.module_.state_dict()
        if fresh.keys() != fitted.keys() or any(fresh[k].shape != fitted[k].shape for k in fresh):
            raise ValueError(f"`warm_start=True` continues training the fitted {name}, but its arguments now "
                             "build another network (a changed size, cell, emission or scaling); set them back "
                             "or set warm_start=False.")
        transform = self.target_transform_
        if transform is not None and bool((data.mask & (data.values <= 0) & transform.active).any()):
            raise ValueError(f"`warm_start=True` keeps the fitted target_transform ({transform.describe()}), "
                             "which needs positive values, but `y` has values <= 0; set warm_start=False.")
        self._check_support(data)
        return copy.deepcopy(self.module_)

    def _fit(self, data: SeriesBatch, covariates):
        self._warn_if_little_data(data)
        generator = make_generator(self.random_state)
        n_features = 0 if covariates is None else covariates.shape[-1]
        warm = self._continues_training()
        if warm:
            module = self._warm_module(data, n_features)
        else:
            self.window_length_ = self._resolve_window_length(data)
            module = self._new_module(data.n_dims, n_features, generator)
            self._check_support(data, module)
            self.target_transform_ = self._choose_transform(data, module)
            self.differencing_ = self._choose_differencing(self._transformed(data), module)
        config = self._training_config()
        data = self._model_data(data, training=True)
        scaler = getattr(module, "scaler", None)
        if scaler is not None:
            scaler.fit_prior(data.values, data.mask)
        batch, valid = self._training_data(data, covariates)
        if not warm:  # a warm module has learned what the data-dependent start would set
            with torch.no_grad():
                self._initialise(module, batch)
        self.training_history_ = train(
            module,
            lambda b, kl_weight: self._loss(module, b, kl_weight),
            batch,
            valid,
            config=config,
            generator=generator,
        )
        self.module_ = module.eval()

    # ------------------------------------------------------------ save/load
    def _fitted_state(self) -> tuple[dict, dict]:
        meta = {
            "n_dims": self.n_dims_,
            "n_features": self.n_features_,
            "window_length": self.window_length_,
            "training_history": self.training_history_,
            "differencing": None if self.differencing_ is None else self.differencing_.to_meta(),
            "target_transform": None if self.target_transform_ is None else self.target_transform_.to_meta(),
        }
        tensors = {k: v.detach().cpu() for k, v in self.module_.state_dict().items()}
        return meta, tensors

    def _load_fitted_state(self, meta: dict, tensors: dict) -> None:
        self.window_length_ = meta["window_length"]  # the module's scale window depends on it
        module = self._new_module(meta["n_dims"], meta["n_features"], make_generator(0))
        module.load_state_dict(tensors)
        self.training_history_ = meta["training_history"]
        differencing = meta.get("differencing")
        self.differencing_ = None if differencing is None else LagDifference.from_meta(differencing)
        transform = meta.get("target_transform")
        self.target_transform_ = None if transform is None else BoxCox.from_meta(transform)
        try:
            device = resolve_device(getattr(self, "device", "cpu"))
        except ValueError:  # saved on a GPU machine, loaded on one without
            device = torch.device("cpu")
        self.module_ = module.to(device).eval()

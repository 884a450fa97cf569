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
array) are cut into windows of ``window_length`` steps (default ``min(64, longest series)``)
aligned to each series' end. Everything trains in float32.

Before training, a module with a ``scaler``
(:class:`tsgen.components.scaling.CausalScale`) gets the training data's
mean absolute value as its prior scale ``s_0``, so the network works in
units-free quantities; data outside the emission's support (a count
emission on non-integers) is refused with one sentence.
"""
from __future__ import annotations

import torch
from torch import nn

from tsgen._validation import is_int
from tsgen.base import BaseForecaster, make_generator
from tsgen.components.heads import BernoulliHead
from tsgen.data import SeriesBatch
from tsgen.data.windows import cut_windows, last_steps, take_steps
from tsgen.training import SequenceBatch, TrainingConfig, resolve_device, seeded_from, train

#: window length used for pandas series when ``window_length`` is None
DEFAULT_WINDOW_LENGTH = 64
#: at most this many windows per epoch: longer series get a larger stride
MAX_WINDOWS = 20_000

_CONFIG_FIELDS = (
    "max_epochs", "batch_size", "learning_rate", "weight_decay", "grad_clip", "validation_fraction",
    "patience", "kl_annealing_epochs", "kl_annealing_start", "lr_decay", "device", "progress", "max_seconds",
    "objective", "n_particles",
)


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
    """

    dtype = torch.float32

    # ---------------------------------------------------------------- hooks
    def _build_module(self, n_dims: int, n_features: int) -> nn.Module:
        raise NotImplementedError

    def _loss(self, module: nn.Module, batch: SequenceBatch, kl_weight: float) -> torch.Tensor:
        objective = getattr(self, "objective", None)
        if objective is None:  # a model without a latent has one objective, its likelihood
            return module.loss(batch, kl_weight)
        return module.loss(batch, kl_weight, objective=objective, n_particles=self.n_particles)

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
        if isinstance(head, BernoulliHead):
            frequency = torch.where(batch.mask, batch.values, 0.0).sum((0, 1)) / batch.mask.sum((0, 1)).clamp(min=1)
            head.proj["logits"].bias.copy_(torch.logit(frequency.clamp(1e-3, 1 - 1e-3)))

    @staticmethod
    def _emission_head(module: nn.Module):
        """The module's distribution head (None for a custom emission without one)."""
        return getattr(module, "head", None)

    # -------------------------------------------------------------- helpers
    def _training_config(self) -> TrainingConfig:
        """A :class:`TrainingConfig` from whichever of its fields the estimator has as arguments."""
        return TrainingConfig(**{name: getattr(self, name) for name in _CONFIG_FIELDS if hasattr(self, name)})

    def _resolve_window_length(self, data: SeriesBatch) -> int | None:
        window_length = getattr(self, "window_length", None)
        if window_length is not None:
            if not is_int(window_length) or window_length < 2:
                raise ValueError(f"`window_length` must be None or an integer >= 2; got {window_length!r}.")
            return window_length
        if data.kind == "arrays" and data.n_series > 1:  # a collection of sequences: each one whole
            return None
        return min(DEFAULT_WINDOW_LENGTH, int(data.lengths.max()))

    def _training_data(self, data: SeriesBatch, covariates: torch.Tensor | None) -> SequenceBatch:
        """Sequences whole (collections) or cut into windows (series), as float32."""
        window_length = self.window_length_
        values, mask, lengths = data.values, data.mask, data.lengths
        if covariates is not None:
            covariates = fit_rows(covariates, values.shape[1])
        if window_length is not None:
            n_windows = int((data.lengths - window_length).clamp(min=0).sum()) + data.n_series
            stride = max(1, -(-n_windows // MAX_WINDOWS))
            values, mask, lengths, covariates = cut_windows(values, mask, lengths, window_length, stride, covariates)
        batch = SequenceBatch(values=values, mask=mask, covariates=covariates, lengths=lengths)
        return batch.to(dtype=self.dtype)

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
    def _fit(self, data: SeriesBatch, covariates):
        config = self._training_config()
        generator = make_generator(self.random_state)
        self.window_length_ = self._resolve_window_length(data)
        n_features = 0 if covariates is None else covariates.shape[-1]
        module = self._new_module(data.n_dims, n_features, generator)
        self._check_support(data, module)
        scaler = getattr(module, "scaler", None)
        if scaler is not None:
            scaler.fit_prior(data.values, data.mask)
        batch = self._training_data(data, covariates)
        with torch.no_grad():
            self._initialise(module, batch)
        self.training_history_ = train(
            module,
            lambda b, kl_weight: self._loss(module, b, kl_weight),
            batch,
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
        }
        tensors = {k: v.detach().cpu() for k, v in self.module_.state_dict().items()}
        return meta, tensors

    def _load_fitted_state(self, meta: dict, tensors: dict) -> None:
        self.window_length_ = meta["window_length"]  # the module's scale window depends on it
        module = self._new_module(meta["n_dims"], meta["n_features"], make_generator(0))
        module.load_state_dict(tensors)
        self.training_history_ = meta["training_history"]
        try:
            device = resolve_device(getattr(self, "device", "cpu"))
        except ValueError:  # saved on a GPU machine, loaded on one without
            device = torch.device("cpu")
        self.module_ = module.to(device).eval()

r"""Autoregressive RNN forecaster in the DeepAR style (Salinas et al., 2020).

Generative model for one series ``x_1:T`` (``D`` variables) with the causal
scale ``s_t`` of :mod:`tsgen.components.scaling` (the mean ``|x|`` of the
``W`` steps before ``t``, shrunk towards the training data's mean ``|x|``
``s_0``; ``s_t = s_0`` without DeepAR scaling for Normal/Student-t heads,
no scale for count and binary heads without scaling)::

    u_t = [x_{t-l} / s_t for l in lags,  1{x_{t-l} observed} for l in lags,  log(s_t / s_0),  c_t]
    h_t = RNN(h_{t-1}, u_t)                  (LSTM or GRU, h_0 = 0)
    x_t | x_<t ~ head(h_t; scale = s_t)       (any distribution head)

Everything in ``u_t`` and ``s_t`` is a function of ``x_<t``, so
``log p(x_1:T) = sum_t log p(x_t | x_<t)`` is exact and cheap: one
teacher-forced pass gives every one-step predictive density, and the one
at ``t`` does not move when later values change. A constant factor on the
data multiplies every ``s_t``: the model does not depend on units. Lags
before the first step, and missing values, enter as 0 with indicator 0:
the model conditions on which past values were observed. Forecasting runs
the RNN over the context (the last ``window_length`` steps), then samples
ancestrally, feeding each draw back as the next input.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution

from tsgen._validation import is_int
from tsgen.base import make_generator
from tsgen.components.heads import make_head, masked_log_prob
from tsgen.components.scaling import CausalScale, ScaleWindow, scale_mode
from tsgen.models.deep_estimator import DeepForecaster, fit_rows
from tsgen.protocol import Context, SequentialModel, ancestral_sample, expand_state
from tsgen.training import SequenceBatch, seeded_from

__all__ = ["RNNAutoregressive", "RNNForecaster", "RNNState"]

_CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}


@dataclass
class RNNState:
    """State after emitting step ``t``; every tensor has the batch dimensions in front.

    ``hidden``/``cell``: ``(*batch, layers, H)`` (``cell`` None for a GRU);
    ``lag_values``/``lag_mask``: ``(*batch, max_lag, D)``, the values
    ``x_{t-1}, x_{t-2}, ...`` (most recent first, 0 where missing) that
    produced ``h_t``; ``scale``: ``s_t`` ``(*batch, D)`` (None without a
    scale); ``window``: what ``s_t`` was computed from (None unless scaling).
    """

    hidden: Tensor
    cell: Tensor | None
    lag_values: Tensor
    lag_mask: Tensor
    scale: Tensor | None
    window: ScaleWindow | None = None


class RNNAutoregressive(SequentialModel):
    """The generative module of :class:`RNNForecaster` (see the module docstring).

    Parameters
    ----------
    n_dims, n_features : int
        ``D`` and the number of covariates ``K``.
    lags : tuple of int
        Positive lags fed as inputs.
    cell : {"lstm", "gru"}
    hidden_dim, num_layers : int
    dropout : float
        Between stacked RNN layers.
    emission : str or DistributionHead
        The likelihood head.
    scaling : bool or "auto"
        DeepAR mean scaling (``"auto"``: when the head supports it).
    scale_window : int
        ``W``, the steps the causal scale looks back over.
    """

    def __init__(self, n_dims, n_features, lags, cell, hidden_dim, num_layers, dropout, emission, scaling,
                 scale_window=64):
        super().__init__()
        self.n_dims, self.n_features = n_dims, n_features
        self.lags = tuple(lags)
        self.max_lag = max(self.lags)
        self.head = make_head(emission, hidden_dim, n_dims, copy=True)
        self.scaler = CausalScale(n_dims, scale_window, scale_mode(scaling, self.head))
        n_inputs = 2 * len(self.lags) * n_dims + n_dims + n_features
        # torch's recurrent layers take Python numbers only; the estimator may hold numpy ones
        self.rnn = _CELLS[cell](
            int(n_inputs), int(hidden_dim), num_layers=int(num_layers), batch_first=True,
            dropout=float(dropout) if num_layers > 1 else 0.0,
        )

    # -------------------------------------------------------------- inputs
    def _inputs(self, lagged: Tensor, lagged_mask: Tensor, scale: Tensor | None, covariates: Tensor | None) -> Tensor:
        """``u_t`` from lagged values/indicators ``(..., n_lags, D)`` (0 where missing) and ``s_t`` ``(..., D)``."""
        if scale is not None:
            lagged = lagged / scale.unsqueeze(-2)
        log_ratio = self.scaler.log_ratio(scale, lagged[..., 0, :])
        parts = [lagged.flatten(-2), lagged_mask.to(lagged.dtype).flatten(-2), log_ratio]
        if self.n_features:
            parts.append(torch.nan_to_num(covariates))  # padded rows may hold anything
        return torch.cat(parts, dim=-1)

    def scale_of(self, values: Tensor, mask: Tensor) -> Tensor | None:
        """``s_t`` ``(B, T, D)`` of every step of sequences ``(B, T, D)`` (None without a scale)."""
        return self.scaler.sequence(values, mask)

    def teacher_forced_inputs(self, values, mask, scale, covariates=None) -> Tensor:
        """``u_1:T`` ``(B, T, F)`` with the observed past as inputs; ``scale`` ``(B, T, D)`` or None."""
        observed = mask.to(values.dtype)
        raw = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))
        shifted, shifted_mask = [], []
        for lag in self.lags:  # a handful of lags, not a loop over time
            shifted.append(F.pad(raw, (0, 0, lag, 0))[:, : values.shape[1]])
            shifted_mask.append(F.pad(observed, (0, 0, lag, 0))[:, : values.shape[1]])
        lagged = torch.stack(shifted, dim=-2)
        lagged_mask = torch.stack(shifted_mask, dim=-2) > 0
        return self._inputs(lagged, lagged_mask, scale, covariates)

    def _distribution(self, hidden: Tensor, scale: Tensor | None) -> Distribution:
        return self.head(hidden, scale=scale)

    # --------------------------------------------------------- likelihood
    def step_log_probs(self, values, mask, covariates=None, scale=None) -> Tensor:
        """``log p(x_t | x_<t)`` over the observed variables of each step: ``(B, T)``, 0 where none."""
        if scale is None:
            scale = self.scale_of(values, mask)
        outputs, _ = self.rnn(self.teacher_forced_inputs(values, mask, scale, covariates))
        distribution = self._distribution(outputs, scale)
        return masked_log_prob(distribution, values, mask)

    def loss(self, batch: SequenceBatch, kl_weight: float = 1.0) -> Tensor:
        """Negative log-likelihood per observed value (``kl_weight`` unused: no latent)."""
        log_probs = self.step_log_probs(batch.values, batch.mask, batch.covariates)
        return -log_probs.sum() / max(batch.n_observed, 1)

    # ----------------------------------------------------------- protocol
    def prepare(self, values: Tensor, mask: Tensor, covariates: Tensor | None = None, horizon: int = 0) -> Context:
        """The context: the covariates ``(B, T + horizon, K)`` as step tensor ``"covariates"``, and the
        zero hidden state ``h_0`` ``(B, layers, H)`` (static ``"hidden"``), which fixes the batch."""
        context = super().prepare(values, mask, covariates, horizon)
        context.static["hidden"] = values.new_zeros(values.shape[0], self.rnn.num_layers, self.rnn.hidden_size)
        return context

    def init_state(self, context: Context, sample_shape=()) -> RNNState:
        """The state before step 1, batch shape ``(*sample_shape, B)``: zero hidden state, no lagged
        value observed, the prior scale."""
        hidden = context.static["hidden"]
        batch_shape = (*tuple(sample_shape), hidden.shape[0])
        hidden = hidden.expand(*batch_shape, *hidden.shape[1:])
        like = dict(dtype=hidden.dtype, device=hidden.device)
        window, scale = self.scaler.start(batch_shape, hidden)
        return RNNState(
            hidden=hidden,
            cell=hidden.clone() if isinstance(self.rnn, nn.LSTM) else None,
            lag_values=torch.zeros(*batch_shape, self.max_lag, self.n_dims, **like),
            lag_mask=torch.zeros(*batch_shape, self.max_lag, self.n_dims, dtype=torch.bool, device=like["device"]),
            scale=scale,
            window=window,
        )

    def transition(self, state: RNNState, x_prev: Tensor | None, context_t: dict) -> tuple[RNNState, None]:
        """Push ``x_prev`` (NaN/None = missing) into the lags and the scale window, advance the RNN
        one step; no latent (``None``)."""
        batch_shape = state.hidden.shape[:-2]
        if x_prev is None:
            x_prev = torch.full((*batch_shape, self.n_dims), float("nan"), dtype=state.hidden.dtype,
                                device=state.hidden.device)
        window, scale = self.scaler.advance(state.window, state.scale, x_prev)
        observed = ~torch.isnan(x_prev)
        raw = torch.where(observed, x_prev, torch.zeros((), dtype=x_prev.dtype, device=x_prev.device))
        lag_values = torch.cat([raw.unsqueeze(-2), state.lag_values[..., :-1, :]], dim=-2)
        lag_mask = torch.cat([observed.unsqueeze(-2), state.lag_mask[..., :-1, :]], dim=-2)
        picks = [lag - 1 for lag in self.lags]
        covariates = context_t.get("covariates")
        if covariates is not None:  # (B, K) for states with sample dimensions in front
            covariates = covariates.expand(*batch_shape, covariates.shape[-1])
        inputs = self._inputs(lag_values[..., picks, :], lag_mask[..., picks, :], scale, covariates)
        flat = inputs.reshape(-1, 1, inputs.shape[-1])

        def layers_first(t):
            return t.reshape(-1, *t.shape[-2:]).transpose(0, 1).contiguous()

        def batch_first(t):
            return t.transpose(0, 1).reshape(*batch_shape, t.shape[0], t.shape[-1])

        if state.cell is not None:
            _, (hidden, cell) = self.rnn(flat, (layers_first(state.hidden), layers_first(state.cell)))
            cell = batch_first(cell)
        else:
            _, hidden = self.rnn(flat, layers_first(state.hidden))
            cell = None
        return RNNState(batch_first(hidden), cell, lag_values, lag_mask, scale, window), None

    def emission(self, state: RNNState, context_t: dict) -> Distribution:
        """``p(x_t | h_t)`` from the top layer's hidden state."""
        return self._distribution(state.hidden[..., -1, :], state.scale)

    def condition(self, values, mask, lengths, covariates=None) -> tuple[RNNState, Tensor]:
        """Run over each sequence's steps ``1..lengths[i]``.

        Returns the state after the last step (batch shape ``(B,)``) and the
        last values ``(B, D)`` (NaN where missing), which the next transition takes.
        """
        scale = self.scale_of(values, mask)
        inputs = self.teacher_forced_inputs(values, mask, scale, covariates)
        packed = nn.utils.rnn.pack_padded_sequence(inputs, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, final = self.rnn(packed)
        hidden, cell = final if isinstance(final, tuple) else (final, None)
        hidden = hidden.transpose(0, 1).contiguous()
        cell = None if cell is None else cell.transpose(0, 1).contiguous()
        # lags of the *last* step's input: x_{T-1}, ..., x_{T-max_lag} (positions T-2 .. T-1-max_lag)
        rows = torch.arange(values.shape[0], device=values.device)[:, None]
        ends = lengths.to(values.device)[:, None]
        positions = ends - 2 - torch.arange(self.max_lag, device=values.device)
        inside = positions >= 0
        positions = positions.clamp(min=0)
        lag_mask = mask[rows, positions] & inside[..., None]
        lag_values = torch.where(lag_mask, values[rows, positions], torch.zeros((), dtype=values.dtype,
                                                                                device=values.device))
        last = torch.where(mask[rows[:, 0], ends[:, 0] - 1], values[rows[:, 0], ends[:, 0] - 1],
                           torch.full((), float("nan"), dtype=values.dtype, device=values.device))
        window, step_scale = self.scaler.at(values, mask, lengths.to(values.device) - 1)
        return RNNState(hidden, cell, lag_values, lag_mask, step_scale, window), last


class RNNForecaster(DeepForecaster):
    r"""Autoregressive LSTM/GRU forecaster with any likelihood head (DeepAR style).

    ``x_t | x_<t ~ head(h_t; s_t)`` with ``h_t = RNN(h_{t-1}, [x_{t-lags}/s_t, c_t])``;
    ``log_likelihood`` is exact (see :mod:`tsgen.models.rnn`).

    Parameters
    ----------
    cell : {"lstm", "gru"}
    hidden_dim : int
        Units per RNN layer.
    num_layers : int
        Stacked RNN layers.
    lags : tuple of int
        Lags of the target fed as inputs (e.g. ``(1, 12)`` for monthly data).
    emission : str, DistributionHead (class or instance) or factory
        ``"normal"``, ``"studentt"``, ``"bernoulli"``, ``"poisson"``, ``"negbin"``, or a family
        component's name (``"made"``, ``"nade"``, ``"made_normal"``: :mod:`tsgen.components.autoregressive`;
        any :func:`tsgen.components.register_emission` name), fed the RNN's ``hidden_dim`` outputs
        (RNN-NADE, Boulanger-Lewandowski et al. 2012, is ``emission="nade"``). An instance is copied
        before training; only names survive ``save``.
    dropout : float
        Dropout between RNN layers.
    scaling : bool or "auto"
        DeepAR mean scaling, causal: step ``t`` is scaled by the mean
        ``|x|`` of the ``window_length`` steps before it (64 when None),
        shrunk towards the training data's; ``"auto"`` scales unless the
        head is Bernoulli. Normal and Student-t heads have the training
        data's units divided out either way. With ``True``/``"auto"``, a
        Normal or Student-t head on pandas series models the series'
        seasonal (or first) differences, chosen from the data
        (:mod:`tsgen.models.deep_estimator`); ``False`` models the levels.
    target_transform : "auto", None, "log" or float in [0, 1]
        Box-Cox transform of positive series before differencing, undone on each forecast path
        (:mod:`tsgen.models.deep_estimator`). ``"auto"``: Guerrero's
        lambda for pandas series whose values are all positive (a seasonal swing that grows with the
        level, as airline passengers', is then modelled as one of constant size); None: no transform.
    window_length : int or None
        Length of training windows and of the forecast context (None: 64
        steps, or three seasons when longer, for pandas series; whole
        sequences for a list of arrays).
    validation_fraction : float or "auto"
        Share of each pandas series' last steps held out for early stopping
        (``"auto"``: 10%; whole sequences of a collection, none for "auto").
    max_epochs, batch_size, learning_rate, weight_decay, grad_clip,
    patience, lr_decay, device, progress, max_seconds :
        Training settings (:class:`tsgen.training.TrainingConfig`).
    random_state : int or None
        Seeds initialisation, shuffling, dropout and sampling.
    warm_start : bool, default False
        When True, ``fit`` on a fitted estimator continues training its network for
        ``max_epochs`` more (see :class:`~tsgen.models.deep_estimator.DeepForecaster`).

    Notes
    -----
    ``log_likelihood(y, per_step=True)`` at step ``t`` is the exact
    one-step predictive log-density ``log p(y_t | y_1, ..., y_{t-1})`` of
    the model started at the first step of ``y`` (zero hidden state, no
    lags), summed over the variables observed at ``t`` (NaN where none
    is). It reads only ``y`` up to ``t``: the scale ``s_t`` and the RNN
    inputs come from earlier values (the first step uses the training
    data's scale), so later values never move it. The total is the sum of
    the per-step values, ``log p(y)``. Training windows, scoring and
    forecasts use the same causal scale (and differences, whose Jacobian
    keeps the density in the data's units).
    """

    _supports_covariates = True

    def __init__(
        self,
        cell="lstm",
        hidden_dim=40,
        num_layers=2,
        lags=(1,),
        emission="normal",
        dropout=0.1,
        scaling="auto",
        window_length=None,
        max_epochs=100,
        batch_size=32,
        learning_rate=1e-3,
        weight_decay=0.0,
        grad_clip=10.0,
        validation_fraction="auto",
        patience=10,
        lr_decay=1.0,
        random_state=None,
        device="cpu",
        progress=True,
        max_seconds=None,
        target_transform="auto",
        warm_start=False,
    ):
        self.cell = cell
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.lags = lags
        self.emission = emission
        self.dropout = dropout
        self.scaling = scaling
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
            {"hidden_dim": 8, "num_layers": 1, "max_epochs": 2, "batch_size": 16, "progress": False,
             "random_state": 0},
            {"cell": "gru", "hidden_dim": 6, "num_layers": 2, "lags": (1, 2), "emission": "studentt",
             "window_length": 12, "max_epochs": 2, "progress": False, "random_state": 0},
        ]

    # ------------------------------------------------------------ building
    def _check_arguments(self) -> tuple[str, tuple[int, ...]]:
        cell = self.cell.lower() if isinstance(self.cell, str) else self.cell
        if cell not in _CELLS:
            raise ValueError(f"`cell` must be one of {sorted(_CELLS)}; got {self.cell!r}.")
        for name in ("hidden_dim", "num_layers"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer; got {value!r}.")
        lags = (self.lags,) if is_int(self.lags) else self.lags
        try:
            lags = tuple(lags)
        except TypeError:
            raise TypeError(f"`lags` must be a sequence of positive integers; got {self.lags!r}.") from None
        if not lags or any(not is_int(l) or l < 1 for l in lags):
            raise ValueError(f"`lags` must be a non-empty sequence of positive integers; got {self.lags!r}.")
        if not (is_int(self.dropout) or isinstance(self.dropout, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"`dropout` must be a number in [0, 1); got {self.dropout!r}.")
        if self.scaling not in (True, False, "auto"):
            raise ValueError(f"`scaling` must be True, False or 'auto'; got {self.scaling!r}.")
        return cell, tuple(sorted(set(lags)))

    def _build_module(self, n_dims: int, n_features: int) -> RNNAutoregressive:
        cell, lags = self._check_arguments()
        return RNNAutoregressive(
            n_dims, n_features, lags, cell, self.hidden_dim, self.num_layers, self.dropout, self.emission,
            self.scaling, scale_window=self._scale_window(),
        )

    # ---------------------------------------------------------- inference
    def _log_likelihood(self, data, covariates, **options):
        if options:
            raise TypeError(f"RNNForecaster.log_likelihood takes no options; got {sorted(options)}.")
        self._check_support(data)
        values = self._as_tensor(data.values)
        mask = data.mask.to(values.device)
        if covariates is not None:
            covariates = self._as_tensor(fit_rows(covariates, values.shape[1]))
        # an emission whose log_prob is an importance estimate ('vae', 'energy_nce') draws noise: random_state fixes it
        with torch.no_grad(), seeded_from(make_generator(self.random_state), self._device()):
            log_probs = self.module_.step_log_probs(values, mask, covariates)
        return log_probs.double().cpu()

    def _sample(self, horizon, n_samples, history, covariates, generator):
        values, mask, lengths, context_covariates, future_covariates = self._context(history, covariates, horizon)
        future = Context({} if future_covariates is None else {"covariates": future_covariates})
        with torch.no_grad(), seeded_from(generator, self._device()):
            state, last = self.module_.condition(values, mask, lengths, context_covariates)
            draws = ancestral_sample(self.module_, expand_state(state, n_samples), future, 0, horizon,
                                     last.expand(n_samples, *last.shape))
        return draws.transpose(0, 1).double().cpu()

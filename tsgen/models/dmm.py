r"""The Deep Markov Model (Krishnan, Shalit & Sontag, AAAI 2017).

Generative model, with a learned ``z_0``::

    z_t | z_{t-1} ~ N(mu(z_{t-1}), diag sigma^2(z_{t-1}))     (gated transition, t = 1..T)
    x_t | z_t     ~ g(. | MLP(z_t))                            (any distribution head)

Guide (inference network, see :mod:`tsgen.components.inference_networks`)::

    q(z_{1:T} | x_{1:T}) = prod_t q(z_t | z_{t-1}, h_t(x))

With DeepAR mean scaling (``scaling``), the guide reads ``x / s`` with
``s_d = mean_t |x_td|`` of the sequence and the head's scale argument maps
the emission back to the original units, so ``log p(x | s)`` stays a
density of the data.

Training maximises the ELBO with the KL in closed form given the sampled
``z_{t-1}`` (:mod:`tsgen.inference.elbo`). Only the guide's draw of
``z_{1:T}`` is sequential (a hand-differentiated scan); the transition, the
emission and the KL of all valid steps then run as single batched calls,
which is where the speed over a step-by-step Pyro model/guide comes from
(``benchmarks/dmm_speed.py``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal

from tsgen.base import make_generator
from tsgen.components.heads import make_head, masked_log_prob
from tsgen.components.inference_networks import GuideSample, StructuredInferenceNetwork
from tsgen.components.mlp import MLP
from tsgen.components.transitions import GatedTransition
from tsgen.inference.elbo import gaussian_kl, iwae_bound, per_step_iwae, sequence_elbo, valid_steps
from tsgen.models.base import SequentialModel, ancestral_sample
from tsgen.models.deep_estimator import DeepForecaster
from tsgen.training import SequenceBatch, mean_abs_scale, seeded_from

__all__ = ["DMMState", "DeepMarkovModel", "DeepMarkovModule", "Emitter"]


class Emitter(nn.Module):
    """``g(x_t | z_t)``: an MLP of ``z_t`` (ReLU hidden layers) fed to a distribution head.

    Pyro's DMM emitter is this with two hidden layers of ``emission_dim`` and
    a Bernoulli head.
    """

    def __init__(self, latent_dim: int, data_dim: int, emission_dim: int, emission="normal", n_hidden: int = 2):
        super().__init__()
        self.features = MLP(latent_dim, [emission_dim] * (n_hidden - 1), emission_dim, final_activation=nn.ReLU)
        self.head = make_head(emission, emission_dim, data_dim)

    def forward(self, z: Tensor, scale: Tensor | None = None) -> Distribution:
        """Distribution over ``x`` for ``z`` ``(..., Z)``; ``scale`` broadcastable to ``(..., D)``."""
        return self.head(self.features(z), scale=scale)


@dataclass
class DMMState:
    """The DMM's recurrent state: ``z`` ``(*batch, Z)`` and the data scale ``(*batch, D)`` (or None)."""

    z: Tensor
    scale: Tensor | None = None


def _randn(shape, generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Standard normal noise from a local generator, on ``like``'s device and dtype."""
    if generator is not None and generator.device != like.device:
        return torch.randn(shape, generator=generator, dtype=like.dtype).to(like.device)
    return torch.randn(shape, generator=generator, dtype=like.dtype, device=like.device)


def _carry_to_observed(per_step: Tensor, observed: Tensor) -> Tensor:
    """Move each unobserved step's value onto the next observed step ``(B, T)``.

    Values after the last observed step are dropped: they are zero here
    (outside the valid steps).
    """
    totals = per_step.cumsum(-1)
    steps = torch.arange(per_step.shape[-1], device=per_step.device)
    last_seen = torch.where(observed, steps, torch.full_like(steps, -1)).cummax(-1).values
    zero = torch.zeros((), dtype=per_step.dtype, device=per_step.device)
    totals = torch.where(last_seen >= 0, totals.gather(-1, last_seen.clamp_min(0)), zero)
    return torch.diff(totals, dim=-1, prepend=torch.zeros_like(totals[..., :1]))


class DeepMarkovModule(SequentialModel):
    """The DMM's generative model and guide, implementing the model protocol.

    Parameters
    ----------
    data_dim : int
        ``D``.
    emitter : nn.Module
        ``emitter(z, scale)`` maps ``z`` ``(..., Z)`` to a distribution over
        ``x`` with batch shape ``(...)`` and event shape ``(D,)`` (an
        :class:`Emitter`).
    latent_dim, transition_dim, rnn_dim : int
        Sizes of ``z``, the gated transition's hidden layers and the guide's RNN.
    inference, rnn_type, num_layers, rnn_dropout, observe_mask, iafs, iaf_dim :
        Passed to :class:`StructuredInferenceNetwork`.
    scaling : bool
        DeepAR mean scaling of each sequence (module docstring).
    transition : nn.Module, optional
        Replaces the gated transition: ``z_prev -> (loc, scale)``.
    """

    def __init__(
        self,
        data_dim: int,
        emitter: nn.Module,
        latent_dim: int = 100,
        transition_dim: int = 200,
        rnn_dim: int = 600,
        inference: str = "dks",
        rnn_type: str = "rnn",
        num_layers: int = 1,
        rnn_dropout: float = 0.0,
        observe_mask: bool = False,
        iafs: int = 0,
        iaf_dim: int = 100,
        scaling: bool = False,
        transition: nn.Module | None = None,
    ):
        super().__init__()
        self.data_dim = data_dim
        self.latent_dim = latent_dim
        self.scaling = scaling
        self.z_0 = nn.Parameter(torch.zeros(latent_dim))
        self.transition_net = transition if transition is not None else GatedTransition(latent_dim, transition_dim)
        self.emitter = emitter
        self.guide = StructuredInferenceNetwork(
            data_dim, latent_dim, rnn_dim, inference=inference, rnn_type=rnn_type, num_layers=num_layers,
            dropout=rnn_dropout, observe_mask=observe_mask, iafs=iafs, iaf_dim=iaf_dim,
        )

    # ------------------------------------------------------------ protocol
    def init_state(self, batch_shape, covariates=None, scale: Tensor | None = None) -> DMMState:
        """``z_0`` broadcast to ``(*batch_shape, Z)``."""
        return DMMState(self.z_0.expand(*tuple(batch_shape), self.latent_dim), scale)

    def transition_distribution(self, state: DMMState) -> Distribution:
        """``f(z_t | z_{t-1})``: a diagonal Gaussian with event shape ``(Z,)``."""
        loc, scale = self.transition_net(state.z)
        return Independent(Normal(loc, scale), 1)

    def transition(self, state: DMMState, x_prev=None, covariates=None) -> DMMState:
        """Draw ``z_t ~ f(. | z_{t-1})`` (global RNG, forked by the callers); ``x_prev`` is unused."""
        return DMMState(self.transition_distribution(state).sample(), state.scale)

    def emission(self, state: DMMState, covariates=None) -> Distribution:
        """``g(x_t | z_t)`` with event shape ``(D,)``."""
        return self.emitter(state.z, state.scale)

    # ------------------------------------------------------------- scaling
    def scale_of(self, values: Tensor, mask: Tensor) -> Tensor | None:
        """``s`` ``(B, D)`` of sequences ``(B, T, D)``, or None without scaling."""
        return mean_abs_scale(values, mask) if self.scaling else None

    # ----------------------------------------------------------- inference
    def sample_guide(self, values: Tensor, mask: Tensor, n_samples: int, generator=None, scale=None) -> GuideSample:
        """``n_samples`` draws of ``z_{1:T}`` from the guide, shapes ``(S, B, T, ...)``."""
        step_mask = valid_steps(mask)
        inputs = values if scale is None else values / scale.unsqueeze(-2)
        summary = self.guide.summarise(inputs, mask, step_mask)
        shape = (n_samples, *values.shape[:-1], self.latent_dim)
        return self.guide.sample(summary, _randn(shape, generator, summary), step_mask.sum(-1))

    def _step_terms(self, values: Tensor, mask: Tensor, draw: GuideSample, scale: Tensor | None):
        """``log g(x_t|z_t)``, ``f(z_t|z_{t-1})`` and ``q(z_t|.)`` pieces at the valid steps only.

        Transition and emission run as one batched call over the ``N`` valid
        (draw, sequence, step) positions, so padding costs nothing. Returns
        ``(where, log_lik, p_loc, p_scale, z, q_loc, q_scale, base, log_det)``
        with ``where`` ``(S, B, T)`` and the rest ``(N, ...)`` (``log_det``
        None without flows).
        """
        n_samples = draw.z.shape[0]
        where = valid_steps(mask).expand(n_samples, *mask.shape[:-1])
        z_0 = self.z_0.expand(*draw.z.shape[:-2], 1, self.latent_dim)
        z_prev = torch.cat([z_0, draw.z[..., :-1, :]], dim=-2)[where]
        p_loc, p_scale = self.transition_net(z_prev)
        z = draw.z[where]
        x, observed = values.expand(n_samples, *values.shape)[where], mask.expand(n_samples, *mask.shape)[where]
        if scale is not None:
            scale = scale[:, None, :].expand(n_samples, *values.shape)[where]
        log_lik = masked_log_prob(self.emitter(z, scale), x, observed)
        log_det = None if draw.log_det is None else draw.log_det[where]
        return where, log_lik, p_loc, p_scale, z, draw.loc[where], draw.scale[where], draw.base[where], log_det

    @staticmethod
    def _scatter(where: Tensor, values: Tensor) -> Tensor:
        """Values at the valid positions into a zero tensor shaped like ``where``."""
        out = values.new_zeros(where.shape)
        out[where] = values
        return out

    def elbo_terms(self, values: Tensor, mask: Tensor, n_samples: int = 1, generator=None):
        """``(log_lik, kl, step_mask)``: per-step ``(S, B, T)`` terms of the ELBO, 0 outside the valid steps.

        ``kl`` is analytic without flows and the one-sample ``log q - log f``
        with flows.
        """
        scale = self.scale_of(values, mask)
        draw = self.sample_guide(values, mask, n_samples, generator, scale)
        where, log_lik, p_loc, p_scale, z, q_loc, q_scale, base, log_det = self._step_terms(values, mask, draw, scale)
        if log_det is None:
            kl = gaussian_kl(q_loc, q_scale, p_loc, p_scale)
        else:
            log_q = Normal(q_loc, q_scale).log_prob(base).sum(-1) - log_det
            kl = log_q - Normal(p_loc, p_scale).log_prob(z).sum(-1)
        return self._scatter(where, log_lik), self._scatter(where, kl), valid_steps(mask)

    def elbo(self, values: Tensor, mask: Tensor, kl_weight: float = 1.0, n_samples: int = 1, generator=None) -> Tensor:
        """Per-sequence ELBO ``(S, B)`` (``kl_weight`` < 1 anneals the KL)."""
        log_lik, kl, step_mask = self.elbo_terms(values, mask, n_samples, generator)
        return sequence_elbo(log_lik, kl, step_mask, kl_weight)

    def loss(self, batch: SequenceBatch, kl_weight: float = 1.0, generator=None) -> Tensor:
        """Negative ELBO per valid time step of the minibatch (the figure Pyro's DMM reports)."""
        steps = valid_steps(batch.mask).sum().clamp_min(1)
        return -self.elbo(batch.values, batch.mask, kl_weight, 1, generator).sum() / steps

    def step_log_weights(self, values: Tensor, mask: Tensor, n_samples: int, generator=None) -> Tensor:
        """``log g(x_t|z_t) + log f(z_t|z_{t-1}) - log q(z_t|.)`` per draw and step ``(S, B, T)``.

        Zero at steps beyond each sequence's last observation.
        """
        scale = self.scale_of(values, mask)
        draw = self.sample_guide(values, mask, n_samples, generator, scale)
        where, log_lik, p_loc, p_scale, z, q_loc, q_scale, base, log_det = self._step_terms(values, mask, draw, scale)
        log_q = Normal(q_loc, q_scale).log_prob(base).sum(-1)
        if log_det is not None:
            log_q = log_q - log_det
        return self._scatter(where, log_lik + Normal(p_loc, p_scale).log_prob(z).sum(-1) - log_q)

    def log_likelihood(
        self,
        values: Tensor,
        mask: Tensor,
        method: str = "iwae",
        n_samples: int = 100,
        generator=None,
        max_rows: int = 200_000,
    ) -> Tensor:
        """Per-step contributions ``(B, T)`` to the log-likelihood estimate.

        ``method="iwae"``: the increments of the prefix IWAE estimates
        between observed steps (:func:`tsgen.inference.elbo.per_step_iwae`),
        which sum to the ``K = n_samples`` IWAE bound of each sequence and
        are 0 where nothing was observed. ``method="elbo"``: each step's
        ``E_q[log g(x_t|z_t)] - KL_t``, averaged over ``n_samples`` draws,
        summing to the ELBO; the KL of a step where nothing was observed is
        carried into the next observed step so that step reads 0 too. Draws are processed in
        chunks of at most ``max_rows`` latent rows to bound memory.
        """
        if method not in ("iwae", "elbo"):
            raise ValueError(f"`method` must be 'iwae' or 'elbo'; got {method!r}.")
        rows_per_draw = max(1, values.shape[0] * values.shape[1])
        chunk = max(1, min(n_samples, max_rows // rows_per_draw))
        pieces = []
        for start in range(0, n_samples, chunk):
            size = min(chunk, n_samples - start)
            if method == "iwae":
                pieces.append(self.step_log_weights(values, mask, size, generator))
            else:
                log_lik, kl, step_mask = self.elbo_terms(values, mask, size, generator)
                zero = torch.zeros((), dtype=log_lik.dtype, device=log_lik.device)
                pieces.append(torch.where(step_mask, log_lik - kl, zero))
        stacked = torch.cat(pieces, dim=0)
        if method == "iwae":
            return per_step_iwae(stacked, mask.any(-1))
        return _carry_to_observed(stacked.mean(0), mask.any(-1))

    def iwae(self, values: Tensor, mask: Tensor, n_samples: int, generator=None) -> Tensor:
        """The IWAE bound per sequence ``(B,)`` with ``K = n_samples`` draws."""
        return iwae_bound(self.step_log_weights(values, mask, n_samples, generator).sum(-1), dim=0)

    def condition(self, values: Tensor, mask: Tensor, lengths: Tensor, n_samples: int, generator=None) -> DMMState:
        """Draws of the state after each sequence's last step: ``z`` ``(n_samples, B, Z)``.

        The guide's marginal at the last observed step approximates the
        filtering posterior ``p(z_T | x_{1:T})`` for every inference network
        (at ``T`` smoothing and filtering coincide). Steps after the last
        observation up to ``lengths`` (trailing missing values) are bridged
        by the transition, so the forecast starts right after each series.
        """
        scale = self.scale_of(values, mask)
        draw = self.sample_guide(values, mask, n_samples, generator, scale)
        observed_steps = valid_steps(mask).sum(-1)
        last = (observed_steps - 1).clamp_min(0)
        index = last.view(1, -1, 1, 1).expand(n_samples, -1, 1, self.latent_dim)
        state = DMMState(
            torch.gather(draw.z, 2, index).squeeze(2),
            None if scale is None else scale.expand(n_samples, *scale.shape),
        )
        gap = lengths.to(observed_steps.device) - observed_steps  # trailing unobserved steps
        for k in range(int(gap.max()) if gap.numel() else 0):
            moved = self.transition(state)
            state = DMMState(torch.where((gap > k)[:, None], moved.z, state.z), state.scale)
        return state


class DeepMarkovModel(DeepForecaster):
    r"""Deep Markov Model (Krishnan, Shalit & Sontag, 2017) trained by the ELBO.

    .. math::

        z_t \mid z_{t-1} \sim \mathcal N(\mu(z_{t-1}), \operatorname{diag}\sigma^2(z_{t-1})),
        \qquad x_t \mid z_t \sim g(\cdot \mid \mathrm{MLP}(z_t))

    with the gated transition, an MLP emission with any head, and a
    structured inference network ``q(z_{1:T} | x_{1:T})``.

    ``log_likelihood(y, method="iwae", n_samples=K)`` is the importance
    weighted bound (the papers' reported figure; it tends to ``log p(y)``
    as K grows) and ``method="elbo"`` the ELBO (averaged over ``n_samples``
    draws). With ``per_step=True`` the IWAE is split into the increments of
    its prefix estimates ``log p̂(y_{1:t}) - log p̂(y_{1:t-1})`` (estimates of
    ``log p(y_t | y_{<t})`` that sum to the total), the ELBO into its
    per-step terms. Forecasts condition on the history through the guide's
    draw of the last latent state (the filtering posterior), then sample
    forward.

    Parameters
    ----------
    emission : str or DistributionHead
        ``"normal"``, ``"studentt"``, ``"bernoulli"`` (piano rolls),
        ``"poisson"``, ``"negbin"``.
    latent_dim : int
        Size of ``z_t``.
    hidden_dim : int
        Hidden size of the inference RNN (each direction).
    emission_dim : int
        Width of the emission MLP's two hidden layers.
    transition_dim : int
        Width of the gated transition's hidden layers.
    inference : {"dks", "st-l", "st-lr", "mf-lr"}
        Inference network (:mod:`tsgen.components.inference_networks`).
    rnn_type : {"rnn", "gru", "lstm"}
        Cell of the inference RNN (``"rnn"``: ReLU RNN as in Pyro's example).
    num_layers, rnn_dropout :
        Depth of the inference RNN and dropout between its layers.
    iafs, iaf_dim : int
        Inverse autoregressive flows in the guide (0: Gaussian guide).
    scaling : bool or "auto"
        DeepAR mean scaling; ``"auto"`` scales unless the head is Bernoulli.
    window_length : int or None
        Training windows and forecast context length for pandas series
        (None: 64 steps; a list of arrays is used whole).
    max_epochs, batch_size, learning_rate, weight_decay, grad_clip,
    validation_fraction, patience, kl_annealing_epochs, kl_annealing_start,
    lr_decay, device, progress, max_seconds :
        Training settings (:class:`tsgen.training.TrainingConfig`).
    random_state : int or None
        Seeds initialisation, shuffling, the ELBO's draws and sampling.

    Attributes
    ----------
    module_ : DeepMarkovModule
    training_history_ : list of dict
        Per-epoch losses: negative ELBO per time step.
    """

    def __init__(
        self,
        emission="normal",
        latent_dim=16,
        hidden_dim=64,
        emission_dim=64,
        transition_dim=64,
        inference="dks",
        rnn_type="rnn",
        num_layers=1,
        rnn_dropout=0.0,
        iafs=0,
        iaf_dim=100,
        scaling="auto",
        window_length=None,
        max_epochs=100,
        batch_size=32,
        learning_rate=1e-3,
        weight_decay=0.0,
        grad_clip=10.0,
        validation_fraction=0.0,
        patience=10,
        kl_annealing_epochs=0,
        kl_annealing_start=0.0,
        lr_decay=1.0,
        random_state=None,
        device="cpu",
        progress=True,
        max_seconds=None,
    ):
        self.emission = emission
        self.latent_dim = latent_dim
        self.hidden_dim = hidden_dim
        self.emission_dim = emission_dim
        self.transition_dim = transition_dim
        self.inference = inference
        self.rnn_type = rnn_type
        self.num_layers = num_layers
        self.rnn_dropout = rnn_dropout
        self.iafs = iafs
        self.iaf_dim = iaf_dim
        self.scaling = scaling
        self.window_length = window_length
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.grad_clip = grad_clip
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.kl_annealing_epochs = kl_annealing_epochs
        self.kl_annealing_start = kl_annealing_start
        self.lr_decay = lr_decay
        self.random_state = random_state
        self.device = device
        self.progress = progress
        self.max_seconds = max_seconds

    @classmethod
    def get_test_params(cls):
        return [
            {"latent_dim": 3, "hidden_dim": 8, "emission_dim": 8, "transition_dim": 8, "max_epochs": 2,
             "batch_size": 16, "progress": False, "random_state": 0},
            {"latent_dim": 2, "hidden_dim": 6, "emission_dim": 6, "transition_dim": 6, "inference": "st-lr",
             "rnn_type": "gru", "emission": "studentt", "window_length": 12, "max_epochs": 2,
             "progress": False, "random_state": 1},
        ]

    # ------------------------------------------------------------ building
    def _check_arguments(self) -> None:
        for name in ("latent_dim", "hidden_dim", "emission_dim", "transition_dim", "num_layers", "iaf_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer; got {value!r}.")
        if isinstance(self.iafs, bool) or not isinstance(self.iafs, int) or self.iafs < 0:
            raise ValueError(f"`iafs` must be a non-negative integer; got {self.iafs!r}.")
        if self.scaling not in (True, False, "auto"):
            raise ValueError(f"`scaling` must be True, False or 'auto'; got {self.scaling!r}.")
        dropout = self.rnn_dropout
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ValueError(f"`rnn_dropout` must be a number in [0, 1); got {dropout!r}.")

    def _build_module(self, n_dims: int, n_features: int) -> DeepMarkovModule:
        self._check_arguments()
        emitter = Emitter(self.latent_dim, n_dims, self.emission_dim, self.emission)
        scaling = emitter.head.scalable if self.scaling == "auto" else bool(self.scaling)
        return DeepMarkovModule(
            n_dims, emitter, latent_dim=self.latent_dim, transition_dim=self.transition_dim,
            rnn_dim=self.hidden_dim, inference=self.inference, rnn_type=self.rnn_type,
            num_layers=self.num_layers, rnn_dropout=self.rnn_dropout,
            observe_mask=getattr(self, "observe_mask_", False), iafs=self.iafs, iaf_dim=self.iaf_dim,
            scaling=scaling,
        )

    def _fit(self, data, covariates):
        # gaps inside sequences (not trailing padding) make the guide read the mask too
        inside = torch.arange(data.values.shape[1])[None, :] < data.lengths[:, None]
        self.observe_mask_ = bool((~data.mask & inside[..., None]).any())
        super()._fit(data, covariates)

    def _fitted_state(self) -> tuple[dict, dict]:
        meta, tensors = super()._fitted_state()
        return {**meta, "observe_mask": self.observe_mask_}, tensors

    def _load_fitted_state(self, meta: dict, tensors: dict) -> None:
        self.observe_mask_ = bool(meta["observe_mask"])
        super()._load_fitted_state(meta, tensors)

    # ---------------------------------------------------------- inference
    def _log_likelihood(self, data, covariates, method="iwae", n_samples=100, batch_size=64):
        """Per-step values ``(n_series, T)``; see the class docstring for ``method``."""
        if method not in ("iwae", "elbo"):
            raise ValueError(f"`method` must be 'iwae' or 'elbo'; got {method!r}.")
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"`n_samples` must be a positive integer; got {n_samples!r}.")
        generator = make_generator(self.random_state)
        values, mask = self._as_tensor(data.values), data.mask.to(self._device())
        pieces = []
        with torch.no_grad(), seeded_from(generator, self._device()):
            for start in range(0, values.shape[0], batch_size):
                rows = slice(start, start + batch_size)
                pieces.append(self.module_.log_likelihood(values[rows], mask[rows], method, n_samples))
        return torch.cat(pieces).double().cpu()

    def _sample(self, horizon, n_samples, history, covariates, generator):
        values, mask, lengths, _, _ = self._context(history, covariates, horizon)
        with torch.no_grad(), seeded_from(generator, self._device()):
            state = self.module_.condition(values, mask, lengths, n_samples)
        # the state already holds n_samples filtering draws per series: one path each
        draws = ancestral_sample(self.module_, state, horizon, 1, generator)[0]
        return draws.transpose(0, 1).double().cpu()

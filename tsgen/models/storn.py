r"""STORN, the stochastic recurrent network (Bayer & Osendorfer, 2014).

Generative model, with ``h_0 = 0`` and the causal data scale ``s_t`` of
:mod:`tsgen.components.scaling` (``u_t = [x_t / s_t, 1\{x_t \text{ observed}\}, \log(s_t / s_0)]``)::

    z_t                ~ N(0, I)                                       (i.i.d. prior)
    h_t                = RNN(h_{t-1}, [phi_x(u_{t-1}), phi_z(z_t)])    (GRU or LSTM cell; u_0 = nothing)
    x_t | h_t          ~ head(phi_dec(h_t); scale = s_t)               (any distribution head)

The latent enters the recurrence before the emission, so ``x_t`` depends
on ``z_{1:t}`` through ``h_t`` and the latent is not Markov
(``markov_latent = False``).

Recognition model: an RNN over ``phi_x(u_t)`` gives
``q(z_t | .) = N(mu(r_t), diag sigma^2(r_t))``, with ``r_t`` the forward
summary of ``x_{1:t}`` (``inference="filtering"``, causal) or the
bidirectional summary of ``x_{1:T}`` (``"smoothing"``, as in the paper's
reading of the whole sequence). ``q`` does not read ``z_{<t}``: its
parameters are computed once per sequence in :meth:`STORNModule.prepare`.

Protocol (:mod:`tsgen.protocol`): ``transition(state, x_{t-1})`` keeps
``phi_x(u_{t-1})`` in the state (zeros before the first step), moves the
data scale and returns the fixed prior; ``commit`` runs the recurrence on
``(phi_x(u_{t-1}), phi_z(z_t))``, the step the protocol's ``commit``
exists for; ``emission`` is the decoder; ``proposal`` is ``q``. The
filtering ``q`` reads only ``x_{<=t}``, so the guided filter's one-step
densities are causal; the smoothing ``q`` reads ahead, so its per-step
scores use the bootstrap filter (``causal_proposal``), as the DMM's
bidirectional guides do. A step where nothing is observed moves by the
prior and adds no likelihood term.

Training: the ELBO ``sum_t E_q[log g(x_t | h_t)] - KL(q_t || N(0, I))``
(``z`` drawn for every step at once, then one recurrence pass), the IWAE
bound over ``K`` such draws, or FIVO (the guided particle filter's
log-evidence, reparameterised).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, kl_divergence
from torch.nn import functional as F

from tsgen._validation import is_int
from tsgen.components.heads import make_head
from tsgen.components.latent import CELLS, RecurrentCell, diagonal_normal
from tsgen.components.mlp import MLP
from tsgen.components.positive import positive
from tsgen.components.scaling import CausalScale, ScaleWindow, scale_mode
from tsgen.inference.elbo import logmeanexp, prefix_increments, rerun_earlier_prefixes, valid_steps
from tsgen.inference.smc.filter import particle_filter
from tsgen.models.latent_estimator import LatentForecaster
from tsgen.protocol import Context, SequentialModel, observed_log_prob
from tsgen.training import SequenceBatch
from tsgen.training.config import OBJECTIVES

__all__ = ["INFERENCE", "STORN", "STORNModule", "STORNState"]

#: recognition models: the forward summary of x_{1:t} or the bidirectional one of x_{1:T}
INFERENCE = ("filtering", "smoothing")
_SEQUENCE_RNNS = {"gru": nn.GRU, "lstm": nn.LSTM}


@dataclass
class STORNState:
    """``h``, ``c`` (LSTM only): the recurrence ``(*batch, H)``; ``x_features``: ``phi_x(u_{t-1})``, the
    input the next ``commit`` reads beside ``z_t``; ``scale``/``window``: the data scale, carried by
    forecast states only (None: read each step's scale from the context)."""

    h: Tensor
    c: Tensor | None
    x_features: Tensor
    scale: Tensor | None = None
    window: ScaleWindow | None = None


class STORNModule(SequentialModel):
    """STORN's generative model and recognition model (module docstring).

    Parameters
    ----------
    data_dim, latent_dim, hidden_dim, feature_dim : int
        ``D``, ``Z``, the recurrences' ``H`` (generative and recognition) and the
        width of ``phi_x``, ``phi_z``, the recognition head and the decoder.
    emission : str or DistributionHead
    cell : {"gru", "lstm"}
        Cell of both recurrences.
    inference : {"filtering", "smoothing"}
    scaling : bool or {"auto"}
        DeepAR causal mean scaling (:func:`tsgen.components.scaling.scale_mode`).
    scale_window : int
    """

    markov_latent = False

    def __init__(self, data_dim, latent_dim, hidden_dim, feature_dim, emission="normal", cell="gru",
                 inference="filtering", scaling="auto", scale_window=64):
        super().__init__()
        if inference not in INFERENCE:
            raise ValueError(f"`inference` must be one of {list(INFERENCE)}; got {inference!r}.")
        D, Z, H, Fw = (int(v) for v in (data_dim, latent_dim, hidden_dim, feature_dim))
        self.data_dim, self.latent_dim, self.feature_dim, self.inference = D, Z, Fw, inference
        self.phi_x = MLP(3 * D, [Fw], Fw, final_activation=torch.nn.ReLU)
        self.phi_z = MLP(Z, [Fw], Fw, final_activation=torch.nn.ReLU)
        self.rnn = RecurrentCell(cell, 2 * Fw, H)
        bidirectional = inference == "smoothing"
        self.recognition = _SEQUENCE_RNNS[cell](Fw, H, batch_first=True, bidirectional=bidirectional)
        self.posterior = MLP((2 if bidirectional else 1) * H, [Fw], 2 * Z)
        self.decoder = MLP(H, [Fw], Fw, final_activation=torch.nn.ReLU)
        self.head = make_head(emission, Fw, D, copy=True)
        self.scaler = CausalScale(D, scale_window, scale_mode(scaling, self.head))

    @property
    def causal_proposal(self) -> str:
        """The particle filter's proposal whose one-step densities read only ``x_{<=t}``: the recognition
        model for ``"filtering"``, the prior (``"bootstrap"``) for ``"smoothing"``, which reads ahead."""
        return "guided" if self.inference == "filtering" else "bootstrap"

    # ------------------------------------------------------------ pieces
    def x_features(self, x: Tensor, observed: Tensor, scale: Tensor | None) -> Tensor:
        """``phi_x(u_t)`` for values ``(..., D)`` (anything where not ``observed``) and their step's scale."""
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        scaled = torch.where(observed, x if scale is None else x / scale, zero)
        inputs = torch.cat([scaled, observed.to(x.dtype), self.scaler.log_ratio(scale, scaled)], dim=-1)
        return self.phi_x(inputs)

    def _emit(self, h: Tensor, scale: Tensor | None) -> Distribution:
        return self.head(self.decoder(h), scale=scale)

    def _prior(self, like: Tensor) -> Independent:
        """``N(0, I)`` with the batch shape of ``like`` ``(*batch, H)``."""
        loc = like.new_zeros(*like.shape[:-1], self.latent_dim)
        return diagonal_normal(loc, torch.ones_like(loc))

    # ------------------------------------------------------------ protocol
    def prepare(self, values: Tensor, mask: Tensor, covariates: Tensor | None = None, horizon: int = 0) -> Context:
        """Step tensors of sequences ``(B, T, D)``: ``"q_loc"``, ``"q_scale"`` ``(B, L, Z)``, the recognition
        model per step; ``"scale"`` ``s_t`` (absent without one) and, when ``horizon`` is 0,
        ``"previous"`` ``phi_x(u_{t-1})`` (zeros at ``t = 1``; over a horizon the sampled values are not
        known, so transitions compute it from ``x_{t-1}`` and the state's own scale). Covariates are
        not used."""
        scale = self.scaler.sequence(values, mask)
        features = self.x_features(values, mask, scale)
        summary, _ = self.recognition(features)
        loc, raw = self.posterior(summary).chunk(2, dim=-1)
        steps = {"q_loc": loc, "q_scale": positive(raw)}
        if scale is not None:
            steps["scale"] = scale
        if horizon:
            fill = {"q_loc": 0.0, "q_scale": 1.0, "scale": float("nan")}
            steps = {k: torch.cat([v, v.new_full((v.shape[0], horizon, *v.shape[2:]), fill[k])], 1)
                     for k, v in steps.items()}
        else:
            steps["previous"] = F.pad(features, (0, 0, 1, 0))[:, :-1]
        return Context(steps)

    def init_state(self, context: Context, sample_shape=()) -> STORNState:
        like = context.steps["q_loc"]
        batch_shape = (*tuple(sample_shape), like.shape[0])
        h, c = self.rnn.initial(batch_shape, like)
        return STORNState(h, c, like.new_zeros(*batch_shape, self.feature_dim))

    def transition(self, state: STORNState, x_prev: Tensor | None, context_t: dict) -> tuple[STORNState,
                                                                                              Distribution]:
        """Keep ``phi_x(u_{t-1})`` for the commit (zeros before the first step) and return ``N(0, I)``."""
        features, window, scale = state.x_features, state.window, state.scale
        if x_prev is not None:
            features = context_t.get("previous")
            if features is None:  # a forecast: x_{t-1} may be a draw
                features = self.x_features(x_prev, ~torch.isnan(x_prev), scale)
            if scale is not None:
                window, scale = self.scaler.advance(window, scale, x_prev)
            features = features.expand(*state.h.shape[:-1], features.shape[-1])
        return STORNState(state.h, state.c, features, scale, window), self._prior(state.h)

    def commit(self, state: STORNState, z: Tensor, context_t: dict) -> STORNState:
        """``h_t = RNN(h_{t-1}, [phi_x(u_{t-1}), phi_z(z_t)])``."""
        z_features = self.phi_z(z)
        x_features = state.x_features.expand(*z_features.shape[:-1], state.x_features.shape[-1])
        h, c = self.rnn(torch.cat([x_features, z_features], dim=-1), state.h, state.c)
        return replace(state, h=h, c=c)

    def emission(self, state: STORNState, context_t: dict) -> Distribution:
        """``g(x_t | h_t)`` in the data's units."""
        scale = state.scale if state.scale is not None else context_t.get("scale")
        return self._emit(state.h, scale)

    def proposal(self, state: STORNState, x: Tensor, mask: Tensor, context_t: dict) -> Distribution:
        """``q(z_t | x_{1:t})`` (or ``x_{1:T}``), from :meth:`prepare`; the same for every particle."""
        shape = (*state.h.shape[:-1], self.latent_dim)
        return diagonal_normal(context_t["q_loc"].expand(shape), context_t["q_scale"].expand(shape))

    # ----------------------------------------------------------- inference
    def rollout(self, values: Tensor, mask: Tensor, n_samples: int = 1) -> tuple[Tensor, Tensor, Tensor]:
        """``n_samples`` draws (``rsample``) of ``z_{1:T}`` from ``q`` over sequences ``(B, T, D)``, then one
        recurrence pass.

        Returns ``(S, B, T)`` tensors: ``log g(x_t | h_t)``, ``log N(z_t; 0, I) - log q(z_t | .)`` and
        ``KL(q_t || N(0, I))``, the last two 0 where nothing is observed (``z_t`` drawn from the prior).
        """
        context = self.prepare(values, mask)
        q = diagonal_normal(context.steps["q_loc"], context.steps["q_scale"])  # batch (B, T)
        prior = diagonal_normal(torch.zeros_like(q.mean), torch.ones_like(q.mean))
        seen = mask.any(-1)
        # q reads no latent, so every step's draw is made at once
        z = torch.where(seen[..., None], q.rsample((n_samples,)), prior.sample((n_samples,)))
        zero = torch.zeros((), dtype=values.dtype, device=values.device)
        log_ratio = torch.where(seen, prior.log_prob(z) - q.log_prob(z), zero)
        kl = torch.where(seen, kl_divergence(q, prior), zero).expand_as(log_ratio)
        z_features = self.phi_z(z)  # (S, B, T, F)
        previous = context.steps["previous"].expand(n_samples, *context.steps["previous"].shape)
        inputs = torch.cat([previous, z_features], dim=-1)
        state = self.init_state(context, (n_samples,))
        # the decoder and the emission of every step in one batched call
        emission = self._emit(self.rnn.scan(inputs, state.h, state.c), context.steps.get("scale"))
        return observed_log_prob(emission, values, mask), log_ratio, kl

    def loss(self, batch: SequenceBatch, kl_weight: float = 1.0, objective: str = "elbo",
             n_particles: int = 8) -> Tensor:
        """The negative bound per valid time step: ``"elbo"`` (one draw, ``kl_weight`` anneals the KL),
        ``"iwae"`` (``n_particles`` draws) or ``"fivo"`` (a guided filter of ``n_particles``)."""
        values, mask = batch.values, batch.mask
        steps = valid_steps(mask).sum().clamp_min(1)
        if objective == "elbo":
            log_lik, _, kl = self.rollout(values, mask, 1)
            bound = (log_lik - kl_weight * kl).sum(-1)
        elif objective == "iwae":
            log_lik, log_ratio, _ = self.rollout(values, mask, n_particles)
            bound = logmeanexp((log_lik + log_ratio).sum(-1), 0)
        elif objective == "fivo":
            bound = particle_filter(self, values, mask, n_particles=n_particles, proposal="guided",
                                    reparameterized=True).log_evidence
        else:
            raise ValueError(f"`objective` must be one of {list(OBJECTIVES)}; got {objective!r}.")
        return -bound.sum() / steps

    def _step_totals(self, method: str, values: Tensor, mask: Tensor, n_samples: int) -> Tensor:
        """``(S, B, T)`` running totals of the per-draw bound terms."""
        log_lik, log_ratio, kl = self.rollout(values, mask, n_samples)
        return (log_lik + log_ratio if method == "iwae" else log_lik - kl).cumsum(-1)

    def log_likelihood(self, values: Tensor, mask: Tensor, method: str = "iwae", n_samples: int = 100,
                       max_rows: int = 200_000, causal: bool = True) -> Tensor:
        """Per-step increments ``(B, T)`` of the IWAE bound (``"iwae"``) or the ELBO (``"elbo"``) of
        every prefix ``x_{1:t}`` from ``n_samples`` draws (0 where nothing is observed).

        With the filtering recognition model the bound of ``x_{1:t}`` is the prefix of one pass. With
        the smoothing one and ``causal`` the bound at each observed step ``t`` before a sequence's
        last one reruns ``q`` on ``x_{1:t}`` alone (one extra sequence per such step, in groups of at
        most ``max_rows`` rows), so no value reads later data; ``causal=False`` takes every prefix from
        one whole-sequence pass (the same total).
        """
        if method not in ("iwae", "elbo"):
            raise ValueError(f"`method` must be 'iwae' or 'elbo'; got {method!r}.")
        B, T = values.shape[:2]
        chunk = max(1, min(n_samples, max_rows // max(1, B * T)))
        pieces = [self._step_totals(method, values, mask, min(chunk, n_samples - start))
                  for start in range(0, n_samples, chunk)]
        totals = torch.cat(pieces)
        if causal and self.inference == "smoothing":
            rerun_earlier_prefixes(totals, mask, max_rows, lambda b, length, prefix_mask: self._step_totals(
                method, values[b, :length], prefix_mask, n_samples)[..., -1])
        prefix = logmeanexp(totals, 0) if method == "iwae" else totals.mean(0)
        return prefix_increments(prefix, mask.any(-1))


class STORN(LatentForecaster):
    r"""STORN (Bayer & Osendorfer 2014): an RNN driven by i.i.d. standard normal latents.

    .. math::

        z_t \sim \mathcal N(0, I),\quad h_t = \mathrm{RNN}(h_{t-1}, \varphi_x(x_{t-1}), \varphi_z(z_t)),\quad
        x_t \sim g(\cdot \mid h_t)

    with a recognition RNN ``q(z_t | x_{1:t})`` (``inference="filtering"``) or
    ``q(z_t | x_{1:T})`` (``"smoothing"``) (:mod:`tsgen.models.storn`).

    ``log_likelihood(y, method=...)``: ``"smc"`` (default) is the particle
    filter (``n_particles``, default 1000) proposing from ``q`` with the
    filtering recognition model and from the prior with the smoothing one, so
    its per-step values ``log p_hat(y_t | y_{<t})`` read only ``y_{<=t}``;
    their sum is the log of an unbiased estimate of ``p(y)``. ``"iwae"``
    (``n_samples`` draws, default 100) and ``"elbo"`` are the bounds, per step
    the increments of the bound on each prefix (causal for both recognition
    models). Steps where nothing is observed score NaN. Forecasts condition
    on the history by the particle filter proposing from ``q``, draw states
    from its particles at the last step, and sample forward.

    Parameters
    ----------
    emission : str, DistributionHead (class or instance) or factory
        ``"normal"``, ``"studentt"``, ``"bernoulli"``, ``"poisson"``, ``"negbin"``, or a family
        component's name (``"made"``, ``"nade"``, ``"made_normal"``: :mod:`tsgen.components.autoregressive`;
        any :func:`tsgen.components.register_emission` name), fed the decoder's ``feature_dim``
        features. STORN's prior is ``N(0, I)``, so it takes no ``transition``. An instance is copied
        before training; only names survive ``save``.
    latent_dim : int
        Size of ``z_t``.
    hidden_dim : int
        Size of the generative recurrence ``h_t`` and of the recognition RNN (each direction).
    feature_dim : int
        Width of ``phi_x``, ``phi_z``, the recognition head and the decoder.
    cell : {"gru", "lstm"}
    inference : {"filtering", "smoothing"}
        Recognition model: a forward RNN over ``x_{1:t}`` or a bidirectional one over ``x_{1:T}``.
    scaling : bool or "auto"
        DeepAR mean scaling, causal (as :class:`tsgen.VRNN`).
    target_transform : "auto", None, "log" or float in [0, 1]
        Box-Cox transform of positive series before differencing, undone on each forecast path
        (:mod:`tsgen.models.deep_estimator`). ``"auto"``: Guerrero's
        lambda for pandas series whose values are all positive (a seasonal swing that grows with the
        level, as airline passengers', is then modelled as one of constant size); None: no transform.
    window_length : int or None
        Training windows and forecast context length (None: 64 steps; a list of arrays is used whole).
    max_epochs, batch_size, learning_rate, weight_decay, grad_clip, validation_fraction, patience,
    kl_annealing_epochs, kl_annealing_start, lr_decay, device, progress, max_seconds :
        Training settings (:class:`tsgen.training.TrainingConfig`). ``kl_annealing_epochs="auto"``
        warms the ELBO's KL term up from 0 over the first ``min(10, max_epochs // 3)`` epochs, against
        posterior collapse (:class:`tsgen.models.latent_estimator.LatentForecaster`).
    random_state : int or None
        Seeds initialisation, shuffling, the bounds' draws, filtering and sampling.
    warm_start : bool, default False
        When True, ``fit`` on a fitted estimator continues training its network for
        ``max_epochs`` more (see :class:`~tsgen.models.deep_estimator.DeepForecaster`).
    objective : {"elbo", "iwae", "fivo"}
        Training objective (FIVO: the guided filter's log-evidence, resampling gradients dropped).
    n_particles : int
        Draws (IWAE) or particles (FIVO, at least 2) of the objective.

    Attributes
    ----------
    module_ : STORNModule
    training_history_ : list of dict
    """

    def __init__(self, emission="normal", latent_dim=16, hidden_dim=64, feature_dim=64, cell="gru",
                 inference="filtering", scaling="auto", window_length=None, max_epochs=100, batch_size=32,
                 learning_rate=1e-3, weight_decay=0.0, grad_clip=10.0, validation_fraction="auto", patience=10,
                 kl_annealing_epochs="auto", kl_annealing_start=0.0, lr_decay=1.0, random_state=None, device="cpu",
                 progress=True, max_seconds=None, objective="elbo", n_particles=8, target_transform="auto",
                 warm_start=False):
        self.emission = emission
        self.latent_dim = latent_dim
        self.hidden_dim = hidden_dim
        self.feature_dim = feature_dim
        self.cell = cell
        self.inference = inference
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
        self.target_transform = target_transform
        self.objective = objective
        self.n_particles = n_particles
        self.warm_start = warm_start

    @classmethod
    def get_test_params(cls):
        return [
            {"latent_dim": 2, "hidden_dim": 8, "feature_dim": 8, "max_epochs": 2, "batch_size": 16,
             "progress": False, "random_state": 0},
            {"latent_dim": 2, "hidden_dim": 6, "feature_dim": 6, "cell": "lstm", "inference": "smoothing",
             "emission": "studentt", "objective": "iwae", "n_particles": 4, "window_length": 12, "max_epochs": 2,
             "progress": False, "random_state": 1},
        ]

    def _build_module(self, n_dims: int, n_features: int) -> STORNModule:
        for name in ("latent_dim", "hidden_dim", "feature_dim"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer; got {value!r}.")
        if not isinstance(self.cell, str) or self.cell not in CELLS:
            raise ValueError(f"`cell` must be one of {sorted(CELLS)}; got {self.cell!r}.")
        if not isinstance(self.inference, str) or self.inference not in INFERENCE:
            raise ValueError(f"`inference` must be one of {list(INFERENCE)}; got {self.inference!r}.")
        if self.scaling not in (True, False, "auto"):
            raise ValueError(f"`scaling` must be True, False or 'auto'; got {self.scaling!r}.")
        return STORNModule(n_dims, self.latent_dim, self.hidden_dim, self.feature_dim, self.emission, self.cell,
                           self.inference, self.scaling, scale_window=self._scale_window())

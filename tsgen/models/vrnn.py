r"""The Variational RNN (Chung, Kastner, Dinh, Goel, Courville & Bengio, NeurIPS 2015).

Generative model, with ``h_0 = 0`` and the causal data scale ``s_t`` of
:mod:`tsgen.components.scaling` (``u_t = [x_t / s_t, 1\{x_t \text{ observed}\}, \log(s_t / s_0)]``)::

    z_t | h_{t-1}       ~ N(mu_prior(h_{t-1}), diag sigma_prior^2(h_{t-1}))        (learned prior)
    x_t | z_t, h_{t-1}  ~ head(phi_dec(phi_z(z_t), h_{t-1}); scale = s_t)           (any distribution head)
    h_t = RNN(h_{t-1}, [phi_x(u_t), phi_z(z_t)])                                    (GRU or LSTM cell)

Filtering posterior (the inference network)::

    q(z_t | x_t, h_{t-1}) = N(mu_enc(phi_x(u_t), h_{t-1}), diag sigma_enc^2(...))

``h_{t-1}`` summarises ``x_{<t}`` and ``z_{<t}``, so the latent is not
Markov (``markov_latent = False``) and ``q`` reads nothing after ``t``: the
particle filter proposing from it (``proposal="guided"``) gives causal
one-step densities ``p_hat(x_t | x_{<t})``.

Protocol (:mod:`tsgen.protocol`): ``transition(state, x_{t-1})`` runs the
recurrence on ``(x_{t-1}, z_{t-1})`` (nothing at the first step) and returns
the prior; ``commit`` stores ``z_t`` and ``phi_z(z_t)``; ``emission`` is the
decoder; ``proposal`` is ``q``. A step where nothing is observed moves by
the prior and adds no likelihood term; its ``x`` enters the recurrence as
missing (``u_t`` zero with indicator 0).

Training: the ELBO ``sum_t E_q[log p(x_t | z_t, h_{t-1})] - KL(q_t || prior_t)``
(one pass over time with ``q``'s reparameterised draws, the KL by
``torch.distributions.kl_divergence``), the IWAE bound over ``K`` such
passes, or FIVO (the guided particle filter's log-evidence, reparameterised);
optionally plus the Z-forcing cost (:mod:`tsgen.components.zforcing`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor
from torch.distributions import Distribution
from torch.nn import functional as F

from tsgen._validation import is_int
from tsgen.components.heads import make_head
from tsgen.components.latent import CELLS, DiagonalGaussian, RecurrentCell, batch_major, time_major
from tsgen.components.mlp import MLP
from tsgen.components.scaling import CausalScale, ScaleWindow, scale_mode
from tsgen.components.transitions import latent_pair, learned_prior, prior_distribution
from tsgen.components.zforcing import ZForcing, check_z_forcing
from tsgen.inference.elbo import logmeanexp, prefix_increments, valid_steps
from tsgen.inference.smc.filter import particle_filter
from tsgen.models.latent_estimator import LatentForecaster
from tsgen.protocol import Context, SequentialModel, observed_log_prob
from tsgen.training import SequenceBatch
from tsgen.training.config import OBJECTIVES

__all__ = ["VRNN", "VRNNModule", "VRNNState"]


@dataclass
class VRNNState:
    """``h``, ``c`` (LSTM only): the recurrence ``(*batch, H)``; ``z``, ``z_features``: ``z_t`` and
    ``phi_z(z_t)``; ``scale``/``window``: the data scale, carried by forecast states only (None: read
    each step's scale from the context)."""

    h: Tensor
    c: Tensor | None
    z: Tensor
    z_features: Tensor
    scale: Tensor | None = None
    window: ScaleWindow | None = None


class VRNNModule(SequentialModel):
    """The VRNN's generative model and filtering posterior (module docstring).

    Parameters
    ----------
    data_dim, latent_dim, hidden_dim, feature_dim : int
        ``D``, ``Z``, the recurrence's ``H`` and the width of every feature
        network (``phi_x``, ``phi_z``, prior, posterior, decoder: one hidden layer each).
    emission : str or DistributionHead
    cell : {"gru", "lstm"}
    scaling : bool or {"auto"}
        DeepAR causal mean scaling (:func:`tsgen.components.scaling.scale_mode`).
    scale_window : int
    z_forcing : float
        Weight of the Z-forcing cost in the training loss (0: none, no parameters).
    transition : str, TransitionComponent or factory
        The prior ``p(z_t | h_{t-1})``: ``"gaussian"`` (the fused fast path) or any component
        (:func:`tsgen.components.transitions.learned_prior`).
    """

    markov_latent = False

    def __init__(self, data_dim, latent_dim, hidden_dim, feature_dim, emission="normal", cell="gru",
                 scaling="auto", scale_window=64, z_forcing=0.0, transition="gaussian"):
        super().__init__()
        D, Z, H, Fw = (int(v) for v in (data_dim, latent_dim, hidden_dim, feature_dim))
        self.data_dim, self.latent_dim = D, Z
        self.phi_x = MLP(3 * D, [Fw], Fw, final_activation=torch.nn.ReLU)
        self.phi_z = MLP(Z, [Fw], Fw, final_activation=torch.nn.ReLU)
        self.rnn = RecurrentCell(cell, 2 * Fw, H)
        self.prior = learned_prior(transition, Z, H, Fw, use_previous=False)
        self.posterior = DiagonalGaussian(Fw + H, [Fw], Z)
        self.decoder = MLP(Fw + H, [Fw], Fw, final_activation=torch.nn.ReLU)
        self.head = make_head(emission, Fw, D, copy=True)
        self.scaler = CausalScale(D, scale_window, scale_mode(scaling, self.head))
        self.z_forcing = float(z_forcing)
        self.zforcing = ZForcing(D, Z, Fw) if self.z_forcing > 0 else None

    # ------------------------------------------------------------ pieces
    def x_features(self, x: Tensor, observed: Tensor, scale: Tensor | None) -> Tensor:
        """``phi_x(u_t)`` for values ``(..., D)`` (anything where not ``observed``) and their step's scale."""
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        scaled = torch.where(observed, x if scale is None else x / scale, zero)
        inputs = torch.cat([scaled, observed.to(x.dtype), self.scaler.log_ratio(scale, scaled)], dim=-1)
        return self.phi_x(inputs)

    def _emit(self, h: Tensor, z_features: Tensor, scale: Tensor | None) -> Distribution:
        return self.head(self.decoder(torch.cat([z_features, h], dim=-1)), scale=scale)

    # ------------------------------------------------------------ protocol
    def prepare(self, values: Tensor, mask: Tensor, covariates: Tensor | None = None, horizon: int = 0) -> Context:
        """Step tensors of sequences ``(B, T, D)``: ``"features"`` ``phi_x(u_t)`` ``(B, L, F)`` (read by the
        posterior), ``"scale"`` ``s_t`` (absent without one) and, when ``horizon`` is 0, ``"previous"``
        ``phi_x(u_{t-1})`` (read by the recurrence; over a horizon the sampled values are not known, so
        transitions compute it from ``x_{t-1}`` and the state's own scale). Covariates are not used."""
        scale = self.scaler.sequence(values, mask)
        features = self.x_features(values, mask, scale)
        steps = {"features": features}
        if scale is not None:
            steps["scale"] = scale
        if horizon:
            fill = {"features": 0.0, "scale": float("nan")}
            steps = {k: torch.cat([v, v.new_full((v.shape[0], horizon, *v.shape[2:]), fill[k])], 1)
                     for k, v in steps.items()}
        else:
            steps["previous"] = F.pad(features, (0, 0, 1, 0))[:, :-1]
        return Context(steps)

    def init_state(self, context: Context, sample_shape=()) -> VRNNState:
        like = context.steps["features"]
        batch_shape = (*tuple(sample_shape), like.shape[0])
        h, c = self.rnn.initial(batch_shape, like)
        return VRNNState(h, c, like.new_zeros(*batch_shape, self.latent_dim), like.new_zeros(*batch_shape,
                                                                                              like.shape[-1]))

    def transition(self, state: VRNNState, x_prev: Tensor | None, context_t: dict) -> tuple[VRNNState, Distribution]:
        """``h_{t-1} = RNN(h_{t-2}, [phi_x(u_{t-1}), phi_z(z_{t-1})])`` (none before the first step),
        then the prior ``p(z_t | h_{t-1})``."""
        h, c, window, scale = state.h, state.c, state.window, state.scale
        if x_prev is not None:
            features = context_t.get("previous")
            if features is None:  # a forecast: x_{t-1} may be a draw
                features = self.x_features(x_prev, ~torch.isnan(x_prev), scale)
            if scale is not None:
                window, scale = self.scaler.advance(window, scale, x_prev)
            features = features.expand(*state.z_features.shape[:-1], features.shape[-1])
            h, c = self.rnn(torch.cat([features, state.z_features], dim=-1), h, c)
        return VRNNState(h, c, state.z, state.z_features, scale, window), prior_distribution(self.prior, None, h)

    def commit(self, state: VRNNState, z: Tensor, context_t: dict) -> VRNNState:
        return replace(state, z=z, z_features=self.phi_z(z))

    def emission(self, state: VRNNState, context_t: dict) -> Distribution:
        """``p(x_t | z_t, h_{t-1})`` in the data's units."""
        scale = state.scale if state.scale is not None else context_t.get("scale")
        return self._emit(state.h, state.z_features, scale)

    def proposal(self, state: VRNNState, x: Tensor, mask: Tensor, context_t: dict) -> Distribution:
        """``q(z_t | x_t, h_{t-1})``; ``x_t`` is read through ``phi_x(u_t)`` from :meth:`prepare`."""
        features = context_t["features"].expand(*state.h.shape[:-1], -1)
        return self.posterior(torch.cat([features, state.h], dim=-1))

    # ----------------------------------------------------------- inference
    def rollout(self, values: Tensor, mask: Tensor, n_samples: int = 1, latents: bool = False) -> tuple:
        """One pass of ``n_samples`` posterior draws (``rsample``) over sequences ``(B, T, D)``.

        Returns ``(S, B, T)`` tensors: ``log p(x_t | z_t, h_{t-1})``, ``log p(z_t | h_{t-1}) - log q(z_t | .)``
        and ``KL(q_t || p_t)``, the last two 0 where nothing is observed (``z_t`` drawn from the prior);
        with ``latents`` also the draws ``z`` ``(S, B, T, Z)``.
        """
        context = self.prepare(values, mask)
        features = context.steps["features"]
        S, T = n_samples, features.shape[1]
        # the loop holds only what reads the latent path (components.latent): the prior and q of a step in
        # two products, one draw, phi_z and the cell; the data's parts are projected for every step here
        pair = latent_pair(self.prior, self.posterior, None, features, mask.any(-1), S, v_first=False)
        gates = time_major(self.rnn.project(features), S).unbind(0)  # phi_x(u_t)'s part of h_t's input
        h, c = self.rnn.initial((S * features.shape[0],), features)
        hs, outs, zs, z_features = [], [], [], []
        for t in range(T):
            out = pair(h, t)
            z = pair.draw(out, t)
            hs.append(h)
            outs.append(out)
            zs.append(z)
            z_features.append(self.phi_z(z))
            if t + 1 < T:
                h, c = self.rnn.step(z_features[-1], gates[t], h, c)
        # the densities, the KL, the decoder and the emission of every step in one batched call each
        z = batch_major(torch.stack(zs), S)
        log_ratio, kl = pair.terms(outs, z)
        emission = self._emit(batch_major(torch.stack(hs), S), batch_major(torch.stack(z_features), S),
                              context.steps.get("scale"))
        terms = observed_log_prob(emission, values, mask), log_ratio, kl
        return (*terms, z) if latents else terms

    def loss(self, batch: SequenceBatch, kl_weight: float = 1.0, objective: str = "elbo",
             n_particles: int = 8) -> Tensor:
        """The negative bound per valid time step: ``"elbo"`` (one draw, ``kl_weight`` anneals the KL),
        ``"iwae"`` (``n_particles`` draws) or ``"fivo"`` (a guided filter of ``n_particles``); plus
        ``z_forcing`` times the Z-forcing cost (on the ELBO/IWAE draws; one more posterior pass for FIVO)."""
        values, mask = batch.values, batch.mask
        steps = valid_steps(mask).sum().clamp_min(1)
        latents = self.zforcing is not None
        z = None
        if objective == "elbo":
            log_lik, _, kl, *z = self.rollout(values, mask, 1, latents)
            bound = (log_lik - kl_weight * kl).sum(-1)
        elif objective == "iwae":
            log_lik, log_ratio, _, *z = self.rollout(values, mask, n_particles, latents)
            bound = logmeanexp((log_lik + log_ratio).sum(-1), 0)
        elif objective == "fivo":
            bound = particle_filter(self, values, mask, n_particles=n_particles, proposal="guided",
                                    reparameterized=True).log_evidence
        else:
            raise ValueError(f"`objective` must be one of {list(OBJECTIVES)}; got {objective!r}.")
        loss = -bound.sum() / steps
        if latents:
            z = z[0] if z else self.rollout(values, mask, 1, latents=True)[3]
            cost = self.zforcing.cost(z, values, mask, self.scaler.sequence(values, mask), mask.any(-1))
            loss = loss + self.z_forcing * cost.sum() / steps
        return loss

    def log_likelihood(self, values: Tensor, mask: Tensor, method: str = "iwae", n_samples: int = 100,
                       max_rows: int = 200_000, causal: bool = True) -> Tensor:
        """Per-step increments ``(B, T)`` of the IWAE bound (``"iwae"``) or the ELBO (``"elbo"``) of
        every prefix ``x_{1:t}`` from ``n_samples`` draws (0 where nothing is observed).

        The posterior is a filter, so the bound of ``x_{1:t}`` is the prefix of one pass: every value
        reads ``x_{<=t}`` only (``causal`` is always true here).
        """
        if method not in ("iwae", "elbo"):
            raise ValueError(f"`method` must be 'iwae' or 'elbo'; got {method!r}.")
        chunk = max(1, min(n_samples, max_rows // max(1, values.shape[0] * values.shape[1])))
        pieces = []
        for start in range(0, n_samples, chunk):
            log_lik, log_ratio, kl = self.rollout(values, mask, min(chunk, n_samples - start))
            pieces.append((log_lik + log_ratio if method == "iwae" else log_lik - kl).cumsum(-1))
        totals = torch.cat(pieces)
        prefix = logmeanexp(totals, 0) if method == "iwae" else totals.mean(0)
        return prefix_increments(prefix, mask.any(-1))


class VRNN(LatentForecaster):
    r"""Variational RNN (Chung et al. 2015): a latent ``z_t`` per step in an RNN, with a learned prior.

    .. math::

        z_t \sim \mathcal N(\mu(h_{t-1}), \operatorname{diag}\sigma^2(h_{t-1})),\quad
        x_t \sim g(\cdot \mid z_t, h_{t-1}),\quad h_t = \mathrm{RNN}(h_{t-1}, \varphi_x(x_t), \varphi_z(z_t))

    with the filtering posterior ``q(z_t | x_t, h_{t-1})`` (:mod:`tsgen.models.vrnn`).

    ``log_likelihood(y, method=...)``: ``"smc"`` (default) is the particle
    filter proposing from ``q`` (``n_particles``, default 1000); its per-step
    values ``log p_hat(y_t | y_{<t})`` read only ``y_{<=t}``, and their sum
    is the log of an unbiased estimate of ``p(y)``. ``"iwae"`` (``n_samples``
    draws, default 100) and ``"elbo"`` are the bounds, per step the
    increments of the bound on each prefix. Steps where nothing is observed
    score NaN. Forecasts condition on the history by the same guided filter,
    draw states from its particles at the last step, and sample forward.

    Parameters
    ----------
    emission : str, DistributionHead (class or instance) or factory
        ``"normal"``, ``"studentt"``, ``"bernoulli"``, ``"poisson"``, ``"negbin"``, or a family
        component's name (``"made"``, ``"nade"``, ``"made_normal"``: :mod:`tsgen.components.autoregressive`;
        any :func:`tsgen.components.register_emission` name), fed the decoder's ``feature_dim`` features.
        An instance is copied before training; only names survive ``save``.
    transition : str, TransitionComponent (class or instance) or factory
        The learned prior ``p(z_t | h_{t-1})``: ``"gaussian"`` (default; the fused training loop),
        ``"studentt"``, or any :func:`tsgen.components.register_transition` name, reading ``h_{t-1}`` with
        ``feature_dim`` hidden units. Its KL to the Gaussian posterior is closed-form where torch registers
        one, else the one-draw Monte Carlo ``log q - log p``.
    latent_dim : int
        Size of ``z_t``.
    hidden_dim : int
        Size of the recurrence ``h_t``.
    feature_dim : int
        Width of ``phi_x``, ``phi_z`` and of the prior, posterior and decoder networks.
    cell : {"gru", "lstm"}
    scaling : bool or "auto"
        DeepAR mean scaling, causal (as :class:`tsgen.DeepMarkovModel`).
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
    z_forcing : float >= 0
        Weight of the Z-forcing auxiliary cost (Goyal et al. 2017) in the training loss
        (:mod:`tsgen.components.zforcing`); 0 (default) leaves it out.

    Attributes
    ----------
    module_ : VRNNModule
    training_history_ : list of dict
    """

    def __init__(self, emission="normal", latent_dim=16, hidden_dim=64, feature_dim=64, cell="gru", scaling="auto",
                 window_length=None, max_epochs=100, batch_size=32, learning_rate=1e-3, weight_decay=0.0,
                 grad_clip=10.0, validation_fraction="auto", patience=10, kl_annealing_epochs="auto",
                 kl_annealing_start=0.0, lr_decay=1.0, random_state=None, device="cpu", progress=True,
                 max_seconds=None, objective="elbo", n_particles=8, z_forcing=0.0, transition="gaussian",
                 target_transform="auto", warm_start=False):
        self.emission = emission
        self.transition = transition
        self.latent_dim = latent_dim
        self.hidden_dim = hidden_dim
        self.feature_dim = feature_dim
        self.cell = cell
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
        self.z_forcing = z_forcing
        self.warm_start = warm_start

    @classmethod
    def get_test_params(cls):
        return [
            {"latent_dim": 2, "hidden_dim": 8, "feature_dim": 8, "max_epochs": 2, "batch_size": 16,
             "progress": False, "random_state": 0},
            {"latent_dim": 2, "hidden_dim": 6, "feature_dim": 6, "cell": "lstm", "emission": "studentt",
             "objective": "fivo", "n_particles": 4, "window_length": 12, "max_epochs": 2, "progress": False,
             "random_state": 1},
            {"latent_dim": 2, "hidden_dim": 6, "feature_dim": 6, "transition": "studentt", "emission": "made_normal",
             "window_length": 12, "max_epochs": 2, "progress": False, "random_state": 2},
        ]

    def _build_module(self, n_dims: int, n_features: int) -> VRNNModule:
        for name in ("latent_dim", "hidden_dim", "feature_dim"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer; got {value!r}.")
        if not isinstance(self.cell, str) or self.cell not in CELLS:
            raise ValueError(f"`cell` must be one of {sorted(CELLS)}; got {self.cell!r}.")
        if self.scaling not in (True, False, "auto"):
            raise ValueError(f"`scaling` must be True, False or 'auto'; got {self.scaling!r}.")
        check_z_forcing(self.z_forcing)
        return VRNNModule(n_dims, self.latent_dim, self.hidden_dim, self.feature_dim, self.emission, self.cell,
                          self.scaling, scale_window=self._scale_window(), z_forcing=self.z_forcing,
                          transition=self.transition)

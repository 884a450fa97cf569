r"""The Stochastic RNN (Fraccaro, Sønderby, Paquet & Winther, NeurIPS 2016).

Generative model, with ``d_0 = 0``, ``z_0 = 0`` and the causal data scale ``s_t`` of
:mod:`tsgen.components.scaling` (``u_t = [x_t / s_t, 1\{x_t \text{ observed}\}, \log(s_t / s_0)]``,
``u_0`` missing)::

    d_t = GRU(d_{t-1}, phi_x(u_{t-1}))                                    (deterministic layer)
    z_t | z_{t-1}, d_t ~ N(mu_p(z_{t-1}, d_t), diag sigma_p^2(z_{t-1}, d_t))  (stochastic layer)
    x_t | z_t, d_t     ~ head(phi_dec(z_t, d_t); scale = s_t)                (any distribution head)

Guide ``q(z_t | z_{t-1}, a_t) = N(mu_p(z_{t-1}, d_t) + mu_q(z_{t-1}, a_t), diag sigma_q^2(z_{t-1}, a_t))``
(the residual "Resq" mean: the network learns the correction to the prior's mean), with

- ``inference="smoothing"`` (the paper's): ``a_t = GRU_back(a_{t+1}, [d_t, phi_x(u_t)])``
  reads ``x_{t:T}``; the particle filter's causal one-step densities then
  propose from the prior (``causal_proposal = "bootstrap"``, as the DMM's
  smoothing guides), and the IWAE/ELBO per-step values rerun the guide on
  each prefix;
- ``inference="filtering"``: ``a_t = [d_t, phi_x(u_t)]`` reads ``x_{<=t}``
  only, so it is the causal proposal of the per-step filter.

Protocol (:mod:`tsgen.protocol`). ``d_t`` does not depend on the latent
path, so :meth:`SRNNModule.prepare` computes it for the observed steps in
one GRU pass (the context ``"d"``) and a transition reads it there; where
the context has none (forecasting, where ``x_{t-1}`` is a draw), the
transition runs the GRU step on the state's ``d_{t-1}`` and ``x_{t-1}``.
The state carries ``d`` either way, so a forecast continues from the
filter's last state. Given the context, ``f(z_t | z_{t-1}, d_t)`` depends
on a particle only through ``z_{t-1}``: the latent is Markov
(``markov_latent``) and FFBSi smoothing applies.

Training: the ELBO (one pass of ``q``'s reparameterised draws, KL by
``torch.distributions.kl_divergence``), IWAE over ``K`` passes, or FIVO (the
guided filter's log-evidence, reparameterised); optionally plus the
Z-forcing cost (:mod:`tsgen.components.zforcing`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal
from torch.nn import functional as F

from tsgen._validation import is_int
from tsgen.components.heads import make_head
from tsgen.components.latent import DiagonalGaussian, batch_major
from tsgen.components.mlp import MLP
from tsgen.components.scaling import CausalScale, ScaleWindow, scale_mode
from tsgen.components.transitions import latent_pair, learned_prior, prior_distribution
from tsgen.components.zforcing import ZForcing, check_z_forcing
from tsgen.inference.elbo import logmeanexp, prefix_increments, rerun_earlier_prefixes, valid_steps
from tsgen.inference.smc.filter import particle_filter
from tsgen.models.latent_estimator import LatentForecaster
from tsgen.protocol import Context, SequentialModel, observed_log_prob
from tsgen.training import SequenceBatch
from tsgen.training.config import OBJECTIVES

__all__ = ["INFERENCE", "SRNN", "SRNNModule", "SRNNState"]

#: the guides
INFERENCE = ("smoothing", "filtering")


@dataclass
class SRNNState:
    """``d``: ``d_t`` ``(*batch, H)``; ``z``: ``z_t`` (``z_{t-1}`` between transition and commit);
    ``scale``/``window``: the data scale, carried by forecast states only (None: read each step's
    scale from the context)."""

    d: Tensor
    z: Tensor
    scale: Tensor | None = None
    window: ScaleWindow | None = None


class SRNNModule(SequentialModel):
    """The SRNN's generative model and guide (module docstring).

    Parameters
    ----------
    data_dim, latent_dim, hidden_dim, feature_dim : int
        ``D``, ``Z``, the size of ``d_t`` and ``a_t``, and the width of ``phi_x`` and of the
        prior, guide and decoder networks (one hidden layer each).
    emission : str or DistributionHead
    inference : {"smoothing", "filtering"}
    scaling : bool or {"auto"}
    scale_window : int
    z_forcing : float
        Weight of the Z-forcing cost in the training loss (0: none, no parameters).
    """

    markov_latent = True

    def __init__(self, data_dim, latent_dim, hidden_dim, feature_dim, emission="normal", inference="smoothing",
                 scaling="auto", scale_window=64, z_forcing=0.0, transition="gaussian"):
        super().__init__()
        if inference not in INFERENCE:
            raise ValueError(f"`inference` must be one of {list(INFERENCE)}; got {inference!r}.")
        D, Z, H, Fw = (int(v) for v in (data_dim, latent_dim, hidden_dim, feature_dim))
        self.data_dim, self.latent_dim, self.inference = D, Z, inference
        self.phi_x = MLP(3 * D, [Fw], Fw, final_activation=nn.ReLU)
        self.deterministic = nn.GRU(Fw, H, batch_first=True)
        self.prior = learned_prior(transition, Z, H, Fw, use_previous=True)
        self.backward_rnn = nn.GRU(H + Fw, H, batch_first=True) if inference == "smoothing" else None
        self.posterior = DiagonalGaussian(Z + (H if inference == "smoothing" else H + Fw), [Fw], Z)
        self.decoder = MLP(Z + H, [Fw], Fw, final_activation=nn.ReLU)
        self.head = make_head(emission, Fw, D, copy=True)
        self.scaler = CausalScale(D, scale_window, scale_mode(scaling, self.head))
        self.z_forcing = float(z_forcing)
        self.zforcing = ZForcing(D, Z, Fw) if self.z_forcing > 0 else None

    @property
    def causal_proposal(self) -> str:
        """The filter's proposal whose one-step densities read only ``x_{<=t}``."""
        return "guided" if self.inference == "filtering" else "bootstrap"

    # ------------------------------------------------------------ pieces
    def x_features(self, x: Tensor, observed: Tensor, scale: Tensor | None) -> Tensor:
        """``phi_x(u_t)`` for values ``(..., D)`` (anything where not ``observed``) and their step's scale."""
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        scaled = torch.where(observed, x if scale is None else x / scale, zero)
        inputs = torch.cat([scaled, observed.to(x.dtype), self.scaler.log_ratio(scale, scaled)], dim=-1)
        return self.phi_x(inputs)

    def _gru_step(self, inputs: Tensor, d: Tensor) -> Tensor:
        """One step of the deterministic GRU over any leading dimensions."""
        shape = inputs.shape[:-1]
        flat = inputs.reshape(-1, 1, inputs.shape[-1])
        _, h = self.deterministic(flat, d.expand(*shape, d.shape[-1]).reshape(1, -1, d.shape[-1]).contiguous())
        return h[0].reshape(*shape, -1)

    def _posterior(self, prior: Distribution, z_prev: Tensor, guide: Tensor) -> Independent:
        """``q``: the prior's mean plus the guide network's correction (Resq), the guide's own scale."""
        guide = guide.expand(*z_prev.shape[:-1], guide.shape[-1])
        correction = self.posterior(torch.cat([z_prev, guide], dim=-1)).base_dist
        return Independent(Normal(prior.mean + correction.loc, correction.scale, validate_args=False), 1)

    def _emit(self, z: Tensor, d: Tensor, scale: Tensor | None) -> Distribution:
        return self.head(self.decoder(torch.cat([z, d], dim=-1)), scale=scale)

    # ------------------------------------------------------------ protocol
    def prepare(self, values: Tensor, mask: Tensor, covariates: Tensor | None = None, horizon: int = 0) -> Context:
        """Step tensors of sequences ``(B, T, D)``: ``"d"`` ``d_t`` ``(B, T, H)``, ``"guide"`` ``a_t`` and
        ``"scale"`` ``s_t`` (absent without one). With a ``horizon`` the context covers the observed steps
        and the horizon with the scale only: transitions then run the GRU themselves. Covariates are
        not used."""
        scale = self.scaler.sequence(values, mask)
        if horizon:
            if scale is None:
                return Context()
            pad = scale.new_full((scale.shape[0], horizon, scale.shape[-1]), float("nan"))
            return Context({"scale": torch.cat([scale, pad], 1)})
        features = self.x_features(values, mask, scale)
        # d_1's input u_0 does not exist: zero features (transition does the same without a context)
        d = self.deterministic(F.pad(features, (0, 0, 1, 0))[:, :-1])[0]
        guide = torch.cat([d, features], dim=-1)
        if self.backward_rnn is not None:
            guide = self.backward_rnn(guide.flip(1))[0].flip(1)
        steps = {"d": d, "guide": guide}
        if scale is not None:
            steps["scale"] = scale
        return Context(steps)

    def init_state(self, context: Context, sample_shape=()) -> SRNNState:
        like = context.steps.get("d", context.steps.get("scale"))
        if like is None:
            raise ValueError("SRNNModule.init_state needs the `context` of prepare(values, mask) (horizon 0) on "
                             "the sequences.")
        batch_shape = (*tuple(sample_shape), like.shape[0])
        return SRNNState(like.new_zeros(*batch_shape, self.deterministic.hidden_size),
                         like.new_zeros(*batch_shape, self.latent_dim))

    def transition(self, state: SRNNState, x_prev: Tensor | None, context_t: dict) -> tuple[SRNNState, Distribution]:
        """``d_t`` (from the context, else the GRU step on ``(d_{t-1}, x_{t-1})``), then ``p(z_t | z_{t-1}, d_t)``."""
        window, scale = state.window, state.scale
        d = context_t.get("d")
        if d is None:  # a forecast: x_{t-1} may be a draw
            if x_prev is None:  # u_0 is missing: zero features, as in prepare
                inputs = state.d.new_zeros(*state.d.shape[:-1], self.deterministic.input_size)
            else:
                inputs = self.x_features(x_prev, ~torch.isnan(x_prev), scale)
            d = self._gru_step(inputs, state.d)
        else:
            d = d.expand(*state.z.shape[:-1], d.shape[-1])
        if x_prev is not None and scale is not None:
            window, scale = self.scaler.advance(window, scale, x_prev)
        return SRNNState(d, state.z, scale, window), prior_distribution(self.prior, state.z, d)

    def commit(self, state: SRNNState, z: Tensor, context_t: dict) -> SRNNState:
        return replace(state, z=z)

    def emission(self, state: SRNNState, context_t: dict) -> Distribution:
        """``p(x_t | z_t, d_t)`` in the data's units."""
        scale = state.scale if state.scale is not None else context_t.get("scale")
        return self._emit(state.z, state.d, scale)

    def proposal(self, state: SRNNState, x: Tensor, mask: Tensor, context_t: dict) -> Distribution:
        """``q(z_t | z_{t-1}, a_t)``; ``x_t`` is read through ``a_t`` from :meth:`prepare`."""
        prior = prior_distribution(self.prior, state.z, state.d)
        return self._posterior(prior, state.z, context_t["guide"])

    def state_from_latent(self, z: Tensor, context_t: dict) -> SRNNState:
        """The state of a particle at ``z`` given the context: ``d_t`` is the context's."""
        return SRNNState(context_t["d"].expand(*z.shape[:-1], -1), z)

    # ----------------------------------------------------------- inference
    def rollout(self, values: Tensor, mask: Tensor, n_samples: int = 1) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One pass of ``n_samples`` guide draws (``rsample``) over sequences ``(B, T, D)``.

        Returns ``(S, B, T)`` tensors ``log p(x_t | z_t, d_t)``, ``log p(z_t | z_{t-1}, d_t) - log q(z_t | .)``
        and ``KL(q_t || p_t)`` (the last two 0 where nothing is observed: ``z_t`` drawn from the prior),
        and the draws ``z`` ``(S, B, T, Z)``.
        """
        context = self.prepare(values, mask)
        d = context.steps["d"]
        # the loop holds only what reads z_{t-1} (components.latent): the prior and the guide's correction in
        # two products and one draw; d_t's and a_t's parts of their first layers are projected here
        pair = latent_pair(self.prior, self.posterior, d, context.steps["guide"], mask.any(-1), n_samples,
                           v_first=True, residual=True)
        z = values.new_zeros(n_samples * d.shape[0], self.latent_dim)
        outs, zs = [], []
        for t in range(d.shape[1]):
            out = pair(z, t)
            z = pair.draw(out, t)
            outs.append(out)
            zs.append(z)
        # the densities, the KL, the decoder and the emission of every step in one batched call each
        zs = batch_major(torch.stack(zs), n_samples)
        log_ratio, kl = pair.terms(outs, zs)
        emission = self._emit(zs, d.expand(n_samples, *d.shape), context.steps.get("scale"))
        return observed_log_prob(emission, values, mask), log_ratio, kl, zs

    def loss(self, batch: SequenceBatch, kl_weight: float = 1.0, objective: str = "elbo",
             n_particles: int = 8) -> Tensor:
        """The negative bound per valid time step: ``"elbo"`` (one draw, ``kl_weight`` anneals the KL),
        ``"iwae"`` (``n_particles`` draws) or ``"fivo"`` (a guided filter of ``n_particles``); plus
        ``z_forcing`` times the Z-forcing cost (on the ELBO/IWAE draws; one more guide pass for FIVO)."""
        values, mask = batch.values, batch.mask
        steps = valid_steps(mask).sum().clamp_min(1)
        z = None
        if objective == "elbo":
            log_lik, _, kl, z = self.rollout(values, mask, 1)
            bound = (log_lik - kl_weight * kl).sum(-1)
        elif objective == "iwae":
            log_lik, log_ratio, _, z = self.rollout(values, mask, n_particles)
            bound = logmeanexp((log_lik + log_ratio).sum(-1), 0)
        elif objective == "fivo":
            bound = particle_filter(self, values, mask, n_particles=n_particles, proposal="guided",
                                    reparameterized=True).log_evidence
        else:
            raise ValueError(f"`objective` must be one of {list(OBJECTIVES)}; got {objective!r}.")
        loss = -bound.sum() / steps
        if self.zforcing is not None:
            if z is None:
                z = self.rollout(values, mask, 1)[3]
            cost = self.zforcing.cost(z, values, mask, self.scaler.sequence(values, mask), mask.any(-1))
            loss = loss + self.z_forcing * cost.sum() / steps
        return loss

    def _step_values(self, method: str, values: Tensor, mask: Tensor, n_samples: int) -> Tensor:
        """``(S, B, T)`` per draw and step: the log weights (``"iwae"``) or ``log g - KL`` (``"elbo"``)."""
        log_lik, log_ratio, kl, _ = self.rollout(values, mask, n_samples)
        return log_lik + log_ratio if method == "iwae" else log_lik - kl

    def log_likelihood(self, values: Tensor, mask: Tensor, method: str = "iwae", n_samples: int = 100,
                       max_rows: int = 200_000, causal: bool = True) -> Tensor:
        """Per-step increments ``(B, T)`` of the IWAE bound (``"iwae"``) or the ELBO (``"elbo"``) of
        every prefix ``x_{1:t}`` from ``n_samples`` draws (0 where nothing is observed).

        The filtering guide reads ``x_{<=t}``, so one pass gives every prefix. The smoothing guide
        reads ahead: with ``causal`` the bound of each earlier prefix reruns the guide on ``x_{1:t}``
        alone (the later values masked out, one extra sequence per observed step, in groups of at
        most ``max_rows`` latent rows); the last observed step's prefix is the whole-sequence pass,
        drawn first, so the totals do not depend on ``causal``.
        """
        if method not in ("iwae", "elbo"):
            raise ValueError(f"`method` must be 'iwae' or 'elbo'; got {method!r}.")
        B, T = values.shape[:2]
        chunk = max(1, min(n_samples, max_rows // max(1, B * T)))
        sizes = [min(chunk, n_samples - start) for start in range(0, n_samples, chunk)]
        totals = torch.cat([self._step_values(method, values, mask, size).cumsum(-1) for size in sizes])
        observed = mask.any(-1)
        if causal and self.inference == "smoothing":
            def score(b, length, prefix_mask):
                return torch.cat([self._step_values(method, values[b, :length], prefix_mask, size)
                                  for size in sizes]).sum(-1)

            rerun_earlier_prefixes(totals, mask, max_rows, score)
        prefix = logmeanexp(totals, 0) if method == "iwae" else totals.mean(0)
        return prefix_increments(prefix, observed)


class SRNN(LatentForecaster):
    r"""Stochastic RNN (Fraccaro et al. 2016): a deterministic GRU layer with a Markov latent layer on top.

    .. math::

        d_t = \mathrm{GRU}(d_{t-1}, \varphi_x(x_{t-1})),\quad
        z_t \sim \mathcal N(\mu(z_{t-1}, d_t), \operatorname{diag}\sigma^2(z_{t-1}, d_t)),\quad
        x_t \sim g(\cdot \mid z_t, d_t)

    with the guide ``q(z_t | z_{t-1}, a_t)`` whose mean is the prior's plus a learned correction
    ("Resq"); ``a_t`` is a backward RNN over ``(d_t, x_t)`` (``inference="smoothing"``, the paper's)
    or ``(d_t, x_t)`` itself (``"filtering"``) (:mod:`tsgen.models.srnn`).

    ``log_likelihood(y, method=...)``: ``"smc"`` (default) is the particle
    filter (``n_particles``, default 1000) whose per-step values
    ``log p_hat(y_t | y_{<t})`` read only ``y_{<=t}``: it proposes from the
    filtering guide, or from the prior with the smoothing guide (which reads
    ahead); their sum is the log of an unbiased estimate of ``p(y)``.
    ``"iwae"`` (``n_samples`` draws, default 100) and ``"elbo"`` are the
    bounds, per step the increments of the bound on each prefix (the
    smoothing guide rerun on each prefix). Steps where nothing is observed
    score NaN. Forecasts condition on the history by the guided filter, draw
    states from its particles at the last step and sample forward, running
    the GRU on the drawn values. The latent is Markov given ``d``, so
    ``smooth(y)`` gives FFBSi frames of ``p(z_t | y_1:T)``.

    Parameters
    ----------
    emission : str, DistributionHead (class or instance) or factory
        ``"normal"``, ``"studentt"``, ``"bernoulli"``, ``"poisson"``, ``"negbin"``, or a family
        component's name (``"made"``, ``"nade"``, ``"made_normal"``; any
        :func:`tsgen.components.register_emission` name). Only names survive ``save``.
    transition : str, TransitionComponent (class or instance) or factory
        The prior ``p(z_t | z_{t-1}, d_t)``: ``"gaussian"`` (default; the fused training loop), ``"studentt"``
        or any :func:`tsgen.components.register_transition` name. The residual guide adds its correction to
        the prior's ``mean``, which the component's distribution must provide.
    latent_dim : int
        Size of ``z_t``.
    hidden_dim : int
        Size of ``d_t`` and of the backward state ``a_t``.
    feature_dim : int
        Width of ``phi_x`` and of the prior, guide and decoder networks.
    inference : {"smoothing", "filtering"}
        The guide (above).
    scaling : bool or "auto"
        DeepAR mean scaling, causal (as :class:`tsgen.DeepMarkovModel`).
    z_forcing : float >= 0
        Weight of the Z-forcing auxiliary cost (Goyal et al. 2017) in the training loss
        (:mod:`tsgen.components.zforcing`); 0 (default) leaves it out.
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
    module_ : SRNNModule
    training_history_ : list of dict
    """

    def __init__(self, emission="normal", latent_dim=16, hidden_dim=64, feature_dim=64, inference="smoothing",
                 scaling="auto", z_forcing=0.0, window_length=None, max_epochs=100, batch_size=32,
                 learning_rate=1e-3, weight_decay=0.0, grad_clip=10.0, validation_fraction="auto", patience=10,
                 kl_annealing_epochs="auto", kl_annealing_start=0.0, lr_decay=1.0, random_state=None, device="cpu",
                 progress=True, max_seconds=None, objective="elbo", n_particles=8, transition="gaussian",
                 target_transform="auto", warm_start=False):
        self.emission = emission
        self.transition = transition
        self.latent_dim = latent_dim
        self.hidden_dim = hidden_dim
        self.feature_dim = feature_dim
        self.inference = inference
        self.scaling = scaling
        self.z_forcing = z_forcing
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
            {"latent_dim": 2, "hidden_dim": 6, "feature_dim": 6, "inference": "filtering", "emission": "studentt",
             "objective": "fivo", "n_particles": 4, "z_forcing": 0.5, "window_length": 12, "max_epochs": 2,
             "progress": False, "random_state": 1},
        ]

    def _build_module(self, n_dims: int, n_features: int) -> SRNNModule:
        for name in ("latent_dim", "hidden_dim", "feature_dim"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer; got {value!r}.")
        if not isinstance(self.inference, str) or self.inference not in INFERENCE:
            raise ValueError(f"`inference` must be one of {list(INFERENCE)}; got {self.inference!r}.")
        if self.scaling not in (True, False, "auto"):
            raise ValueError(f"`scaling` must be True, False or 'auto'; got {self.scaling!r}.")
        check_z_forcing(self.z_forcing)
        return SRNNModule(n_dims, self.latent_dim, self.hidden_dim, self.feature_dim, self.emission, self.inference,
                          self.scaling, scale_window=self._scale_window(), z_forcing=self.z_forcing,
                          transition=self.transition)


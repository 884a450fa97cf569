r"""The Deep Markov Model (Krishnan, Shalit & Sontag, AAAI 2017).

Generative model, with a learned ``z_0``::

    z_t | z_{t-1} ~ N(mu(z_{t-1}), diag sigma^2(z_{t-1}))     (gated transition, t = 1..T)
    x_t | z_t     ~ g(. | MLP(z_t))                            (any distribution head)

Guide (inference network, see :mod:`tsgen.components.inference_networks`)::

    q(z_{1:T} | x_{1:T}) = prod_t q(z_t | z_{t-1}, h_t(x))

With DeepAR mean scaling (``scaling``), step ``t`` has the causal scale
``s_t`` of :mod:`tsgen.components.scaling` (the mean ``|x|`` of the steps
before ``t``, shrunk towards the training data's): the guide reads
``x_t / s_t`` and the head's scale argument maps the emission back to the
original units, so ``g(x_t | z_t, s_t)`` stays a density of the data and,
``s_t`` being a function of ``x_{<t}``, the model stays a density of the
sequence. Normal and Student-t emissions without DeepAR scaling still have
the training data's units divided out (``s_t = s_0``).

Training maximises the ELBO with the KL in closed form given the sampled
``z_{t-1}`` (:mod:`tsgen.inference.elbo`), or the IWAE bound. Only the
guide's draw of ``z_{1:T}`` is sequential (a hand-differentiated scan); the
transition, the emission and the KL of all valid steps then run as single
batched calls, which is where the speed over a step-by-step Pyro
model/guide comes from (``benchmarks/dmm_speed.py``). The third objective,
FIVO, and everything that conditions on data after training (likelihoods
by ``method="smc"``, forecasts) go through the model protocol
(:mod:`tsgen.protocol`) and the particle filter of
:mod:`tsgen.inference.smc`, with the guide's combiner step as the proposal.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal, TransformedDistribution

from tsgen._validation import is_int
from tsgen.components.heads import make_head, masked_log_prob
from tsgen.components.inference_networks import GuideSample, StructuredInferenceNetwork
from tsgen.components.mlp import MLP
from tsgen.components.scaling import CausalScale, ScaleWindow, scale_mode
from tsgen.components.transitions import GatedTransition, TransitionComponent, kl_term, make_transition
from tsgen.inference.elbo import gaussian_kl, iwae_bound, logmeanexp, prefix_increments, rerun_earlier_prefixes, sequence_elbo, valid_steps
from tsgen.inference.smc.filter import particle_filter
from tsgen.models.latent_estimator import FORECAST_PARTICLES, LatentForecaster, condition
from tsgen.protocol import Context, SequentialModel
from tsgen.training import SequenceBatch
from tsgen.training.config import OBJECTIVES

__all__ = ["DMMState", "DeepMarkovModel", "DeepMarkovModule", "Emitter"]

class Emitter(nn.Module):
    """``g(x_t | z_t)``: an MLP of ``z_t`` (ReLU hidden layers) fed to a distribution head.

    Pyro's DMM emitter is this with two hidden layers of ``emission_dim`` and
    a Bernoulli head.
    """

    def __init__(self, latent_dim: int, data_dim: int, emission_dim: int, emission="normal", n_hidden: int = 2):
        super().__init__()
        self.features = MLP(latent_dim, [emission_dim] * (n_hidden - 1), emission_dim, final_activation=nn.ReLU)
        self.head = make_head(emission, emission_dim, data_dim, copy=True)

    def forward(self, z: Tensor, scale: Tensor | None = None) -> Distribution:
        """Distribution over ``x`` for ``z`` ``(..., Z)``; ``scale`` broadcastable to ``(..., D)``."""
        return self.head(self.features(z), scale=scale)


@dataclass
class DMMState:
    """The DMM's state: ``z`` ``(*batch, Z)``; ``scale``, the data scale ``s_t`` ``(*batch, D)``,
    and ``window``, what it was computed from, are carried only by a forecast's state (sampled
    values move them); None means the step's scale is read from the context (filtering), so
    particles do not each carry a copy of the data's scale window."""

    z: Tensor
    scale: Tensor | None = None
    window: ScaleWindow | None = None


def _pad_steps(tensor: Tensor, horizon: int, fill) -> Tensor:
    """``tensor`` ``(B, T, ...)`` extended by ``horizon`` steps of ``fill``."""
    padding = tensor.new_full((tensor.shape[0], horizon, *tensor.shape[2:]), fill)
    return torch.cat([tensor, padding], dim=1)


def _randn(shape, generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Standard normal noise from a local generator, on ``like``'s device and dtype."""
    if generator is not None and generator.device != like.device:
        return torch.randn(shape, generator=generator, dtype=like.dtype).to(like.device)
    return torch.randn(shape, generator=generator, dtype=like.dtype, device=like.device)


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
    scaling : bool or {"prefix", "fixed", "none"}
        The data scale (:mod:`tsgen.components.scaling`): True is DeepAR's
        causal mean scaling ("prefix"), False none.
    scale_window : int
        ``W``, the steps the causal scale looks back over.
    transition : nn.Module, optional
        Replaces the gated transition: a module ``z_prev -> (loc, scale)`` of a
        diagonal Gaussian (the batched fast path, closed-form KL), or a
        :class:`~tsgen.components.transitions.TransitionComponent`, whose
        distribution's KL to the guide is :func:`~tsgen.components.transitions.kl_term`.

    Protocol (:mod:`tsgen.protocol`): the state is ``z_t`` (``markov_latent``),
    the context holds the guide's RNN summaries and the data scale, and
    :meth:`proposal` is the guide's combiner step, so a guided particle
    filter proposes from the inference network.
    """

    markov_latent = True

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
        scaling: bool | str = False,
        transition: nn.Module | None = None,
        scale_window: int = 64,
    ):
        super().__init__()
        # torch's shapes and splits take Python ints; the estimator may hold numpy ones
        data_dim, latent_dim = int(data_dim), int(latent_dim)
        self.data_dim = data_dim
        self.latent_dim = latent_dim
        mode = ("prefix" if scaling else "none") if isinstance(scaling, bool) else scaling
        self.scaler = CausalScale(data_dim, scale_window, mode)
        self.z_0 = nn.Parameter(torch.zeros(latent_dim))
        self.transition_net = transition if transition is not None else GatedTransition(latent_dim, transition_dim)
        self.emitter = emitter
        self.guide = StructuredInferenceNetwork(
            data_dim, latent_dim, rnn_dim, inference=inference, rnn_type=rnn_type, num_layers=num_layers,
            dropout=rnn_dropout, observe_mask=observe_mask, iafs=iafs, iaf_dim=iaf_dim,
        )

    # ------------------------------------------------------------ protocol
    def prepare(self, values: Tensor, mask: Tensor, covariates: Tensor | None = None, horizon: int = 0) -> Context:
        """The per-sequence context of sequences ``(B, T, D)``, one pass over the data.

        Step tensors (length ``T + horizon``): ``"guide"``, the guide RNN's
        share of the combiner ``(B, L, 2Z)`` (its summaries ``h_t`` read
        ``x_t / s_t``); ``"scale"``, the causal data scale ``s_t``
        ``(B, L, D)`` (absent without one; NaN over the horizon, which
        sampling never reads: a forecast state carries its own scale);
        ``"first"``, True at the first step (where the guide starts from its
        own ``z_0``). Covariates are not used by the DMM.
        """
        step_mask = valid_steps(mask)
        scale = self.scale_of(values, mask)
        summary = self.guide.summarise(values if scale is None else values / scale, mask, step_mask)
        first = torch.zeros(mask.shape[:2], dtype=torch.bool, device=mask.device)
        first[:, :1] = True
        steps = {"guide": self.guide.combiner.summary_term(summary), "first": first}
        if scale is not None:
            steps["scale"] = scale
        if horizon:
            fill = {"guide": 0.0, "first": False, "scale": float("nan")}
            steps = {name: _pad_steps(value, horizon, fill[name]) for name, value in steps.items()}
        return Context(steps)

    def init_state(self, context: Context, sample_shape=()) -> DMMState:
        """``z_0`` broadcast to ``(*sample_shape, B, Z)``; each step's data scale is read from ``context``."""
        batch = context.steps["guide"].shape[0]
        return DMMState(self.z_0.expand(*tuple(sample_shape), batch, self.latent_dim))

    def transition(self, state: DMMState, x_prev: Tensor | None, context_t: dict) -> tuple[DMMState, Distribution]:
        """``f(z_t | z_{t-1})``, a diagonal Gaussian with event shape ``(Z,)``.

        A state that carries its own scale (a forecast, where sampled
        values enter the scale window) moves it with ``x_prev`` (NaN/None =
        missing); otherwise the scale comes from the context.
        """
        window, scale = state.window, state.scale
        if scale is not None:
            window, scale = self.scaler.advance(window, scale, x_prev)
        return DMMState(state.z, scale, window), self._prior(state.z)

    def _prior(self, z_prev: Tensor) -> Distribution:
        """``f(z_t | z_{t-1})`` as a distribution."""
        if isinstance(self.transition_net, TransitionComponent):
            return self.transition_net(z_prev)
        loc, sd = self.transition_net(z_prev)
        return Independent(Normal(loc, sd), 1)

    @staticmethod
    def _log_prior(prior, z: Tensor) -> Tensor:
        """``log f(z)`` for a prior that is ``(loc, scale)`` (the gated fast path) or a distribution."""
        if isinstance(prior, tuple):
            return Normal(*prior).log_prob(z).sum(-1)
        return prior.log_prob(z)

    def emission(self, state: DMMState, context_t: dict) -> Distribution:
        """``g(x_t | z_t)`` with event shape ``(D,)``, in the data's units."""
        scale = state.scale if state.scale is not None else context_t.get("scale")
        return self.emitter(state.z, scale)

    def proposal(self, state: DMMState, x: Tensor, mask: Tensor, context_t: dict) -> Distribution:
        """The guide's step ``q(z_t | z_{t-1}, h_t)``: its combiner on the particle's ``z_{t-1}``
        and the RNN summary from :meth:`prepare` (``x`` is read through ``h_t``), with the
        guide's flows when it has them."""
        z_prev = state.z
        if self.guide.combiner.uses_previous:
            z_prev = torch.where(context_t["first"][..., None], self.guide.z_q_0, z_prev)
        loc, scale = self.guide.combiner.step(z_prev, context_t["guide"])
        q = Independent(Normal(loc.expand(state.z.shape), scale.expand(state.z.shape)), 1)
        if len(self.guide.iafs):
            q = TransformedDistribution(q, list(self.guide.iafs))
        return q

    def state_from_latent(self, z: Tensor, context_t: dict) -> DMMState:
        """The state of a particle at ``z``: the DMM's recurrence is ``z_t`` alone."""
        return DMMState(z)

    # ------------------------------------------------------------- scaling
    def scale_of(self, values: Tensor, mask: Tensor) -> Tensor | None:
        """``s_t`` ``(B, T, D)`` of every step of sequences ``(B, T, D)``, or None without a scale."""
        return self.scaler.sequence(values, mask)

    # ----------------------------------------------------------- inference
    def draw_guide(self, values: Tensor, mask: Tensor, noise: Tensor, scale: Tensor | None = None) -> GuideSample:
        """Draws of ``z_{1:T}`` from the guide driven by standard-normal ``noise`` ``(S, B, T, Z)``."""
        step_mask = valid_steps(mask)
        inputs = values if scale is None else values / scale
        summary = self.guide.summarise(inputs, mask, step_mask)
        return self.guide.sample(summary, noise, step_mask.sum(-1))

    def sample_guide(self, values: Tensor, mask: Tensor, n_samples: int, generator=None, scale=None) -> GuideSample:
        """``n_samples`` draws of ``z_{1:T}`` from the guide, shapes ``(S, B, T, ...)``."""
        shape = (n_samples, *values.shape[:-1], self.latent_dim)
        return self.draw_guide(values, mask, _randn(shape, generator, values), scale)

    def _step_terms(self, values: Tensor, mask: Tensor, draw: GuideSample, scale: Tensor | None):
        """``log g(x_t|z_t)``, ``f(z_t|z_{t-1})`` and ``q(z_t|.)`` pieces at the valid steps only.

        Transition and emission run as one batched call over the ``N`` valid
        (draw, sequence, step) positions, so padding costs nothing. Returns
        ``(where, log_lik, prior, z, q_loc, q_scale, base, log_det)``
        with ``where`` ``(S, B, T)`` and the rest ``(N, ...)`` (``log_det``
        None without flows); ``prior`` is the transition's ``(loc, scale)``
        for a Gaussian transition module, else its distribution.
        """
        n_samples = draw.z.shape[0]
        where = valid_steps(mask).expand(n_samples, *mask.shape[:-1])
        z_0 = self.z_0.expand(*draw.z.shape[:-2], 1, self.latent_dim)
        z_prev = torch.cat([z_0, draw.z[..., :-1, :]], dim=-2)[where]
        prior = self.transition_net(z_prev)
        z = draw.z[where]
        x, observed = values.expand(n_samples, *values.shape)[where], mask.expand(n_samples, *mask.shape)[where]
        if scale is not None:
            scale = scale.expand(n_samples, *values.shape)[where]
        log_lik = masked_log_prob(self.emitter(z, scale), x, observed)
        log_det = None if draw.log_det is None else draw.log_det[where]
        return where, log_lik, prior, z, draw.loc[where], draw.scale[where], draw.base[where], log_det

    @staticmethod
    def _scatter(where: Tensor, values: Tensor) -> Tensor:
        """Values at the valid positions into a zero tensor shaped like ``where``."""
        out = values.new_zeros(where.shape)
        out[where] = values
        return out

    def _elbo_terms(self, values, mask, noise, scale):
        draw = self.draw_guide(values, mask, noise, scale)
        where, log_lik, prior, z, q_loc, q_scale, base, log_det = self._step_terms(values, mask, draw, scale)
        if log_det is not None:
            log_q = Normal(q_loc, q_scale).log_prob(base).sum(-1) - log_det
            kl = log_q - self._log_prior(prior, z)
        elif isinstance(prior, tuple):
            kl = gaussian_kl(q_loc, q_scale, *prior)
        else:
            kl = kl_term(Independent(Normal(q_loc, q_scale), 1), prior, z)
        return self._scatter(where, log_lik), self._scatter(where, kl), valid_steps(mask)

    def elbo_terms(self, values: Tensor, mask: Tensor, n_samples: int = 1, generator=None):
        """``(log_lik, kl, step_mask)``: per-step ``(S, B, T)`` terms of the ELBO, 0 outside the valid steps.

        ``kl`` is analytic without flows (for a transition component, where
        torch registers its KL to a diagonal Gaussian) and the one-sample
        ``log q - log f`` otherwise.
        """
        shape = (n_samples, *values.shape[:-1], self.latent_dim)
        return self._elbo_terms(values, mask, _randn(shape, generator, values), self.scale_of(values, mask))

    def elbo(self, values: Tensor, mask: Tensor, kl_weight: float = 1.0, n_samples: int = 1, generator=None) -> Tensor:
        """Per-sequence ELBO ``(S, B)`` (``kl_weight`` < 1 anneals the KL)."""
        log_lik, kl, step_mask = self.elbo_terms(values, mask, n_samples, generator)
        return sequence_elbo(log_lik, kl, step_mask, kl_weight)

    def loss(self, batch: SequenceBatch, kl_weight: float = 1.0, generator=None, objective: str = "elbo",
             n_particles: int = 8) -> Tensor:
        """The negative bound per valid time step of the minibatch (for the ELBO, the figure Pyro's DMM reports).

        ``objective``: ``"elbo"`` (one draw, analytic KL, ``kl_weight``
        anneals it), ``"iwae"`` (``n_particles`` guide draws, the batched
        path of the ELBO) or ``"fivo"``: the log-evidence of a particle filter
        with ``n_particles`` particles proposing from the guide's combiner,
        reparameterised, the resampling gradient terms dropped (Maddison et
        al. 2017). ``generator`` seeds the ELBO's and IWAE's draws (FIVO draws
        from the global RNG, which the training loop forks).
        """
        values, mask = batch.values, batch.mask
        steps = valid_steps(mask).sum().clamp_min(1)
        if objective == "elbo":
            bound = self.elbo(values, mask, kl_weight, 1, generator)
        elif objective == "iwae":
            bound = self.iwae(values, mask, n_particles, generator)
        elif objective == "fivo":
            bound = particle_filter(self, values, mask, n_particles=n_particles, proposal="guided",
                                    reparameterized=True).log_evidence
        else:
            raise ValueError(f"`objective` must be one of {list(OBJECTIVES)}; got {objective!r}.")
        return -bound.sum() / steps

    def _log_weights(self, values, mask, noise, scale) -> Tensor:
        draw = self.draw_guide(values, mask, noise, scale)
        where, log_lik, prior, z, q_loc, q_scale, base, log_det = self._step_terms(values, mask, draw, scale)
        log_q = Normal(q_loc, q_scale).log_prob(base).sum(-1)
        if log_det is not None:
            log_q = log_q - log_det
        return self._scatter(where, log_lik + self._log_prior(prior, z) - log_q)

    def step_log_weights(self, values: Tensor, mask: Tensor, n_samples: int, generator=None) -> Tensor:
        """``log g(x_t|z_t) + log f(z_t|z_{t-1}) - log q(z_t|.)`` per draw and step ``(S, B, T)``.

        Zero at steps beyond each sequence's last observation.
        """
        shape = (n_samples, *values.shape[:-1], self.latent_dim)
        return self._log_weights(values, mask, _randn(shape, generator, values), self.scale_of(values, mask))

    def _step_values(self, method: str, values, mask, noise, scale) -> Tensor:
        """Per draw and step ``(S, B, T)``: the log weights (``"iwae"``) or ``log g - KL`` (``"elbo"``)."""
        if method == "iwae":
            return self._log_weights(values, mask, noise, scale)
        log_lik, kl, step_mask = self._elbo_terms(values, mask, noise, scale)
        return torch.where(step_mask, log_lik - kl, torch.zeros((), dtype=log_lik.dtype, device=log_lik.device))

    def _prefix_totals(self, method, values, mask, noise, scale, causal: bool, max_rows: int) -> Tensor:
        """``(S, B, T)``: at each observed step ``t`` the draws' totals over steps ``1..t`` of
        a bound on ``log p(x_{1:t})`` (other entries are never read).

        With ``causal`` and a guide that reads the future, the bound at ``t``
        runs the guide on ``x_{1:t}`` alone (one extra sequence per observed
        step, processed in groups of at most ``max_rows`` latent rows); each
        sequence's last observed step is the whole-sequence pass, so the
        totals equal the ``causal=False`` ones exactly.
        """
        totals = self._step_values(method, values, mask, noise, scale).cumsum(-1)
        if not causal or self.guide.causal:
            return totals
        def score(b, length, prefix_mask):
            prefix_scale = None if scale is None else scale[b, :length]
            return self._step_values(method, values[b, :length], prefix_mask, noise[:, b, :length],
                                     prefix_scale).sum(-1)

        return rerun_earlier_prefixes(totals, mask, max_rows, score)

    def log_likelihood(
        self,
        values: Tensor,
        mask: Tensor,
        method: str = "iwae",
        n_samples: int = 100,
        generator=None,
        max_rows: int = 200_000,
        causal: bool = True,
    ) -> Tensor:
        """Per-step contributions ``(B, T)`` to the log-likelihood estimate.

        The value at an observed step ``t`` is ``L_t - L_{t'}`` (``t'`` the
        previous observed step, ``L_0 = 0``), where ``L_t`` is a bound on
        ``log p(x_{1:t})`` from ``n_samples`` guide draws: the IWAE bound
        (``method="iwae"``) or the ELBO averaged over the draws
        (``method="elbo"``). Steps where nothing was observed read 0, and the
        values sum to the bound of the whole sequence.

        With ``causal=True`` each ``L_t`` is computed from ``x_{1:t}`` alone
        (the guide run on that prefix; one pass for the forward-only ``"st-l"``
        guide), so the value at ``t`` never depends on later data: an estimate
        of ``log p(x_t | x_{<t})``. ``causal=False`` takes every ``L_t`` from
        one guide pass over the whole sequence (cheaper; the same total, but
        a guide that reads ahead makes earlier values depend on later data).
        Draws are processed in chunks of at most ``max_rows`` latent rows to
        bound memory; the noise is drawn per chunk of the whole-sequence
        pass, so the totals do not depend on ``causal``.
        """
        if method not in ("iwae", "elbo"):
            raise ValueError(f"`method` must be 'iwae' or 'elbo'; got {method!r}.")
        scale = self.scale_of(values, mask)
        rows_per_draw = max(1, values.shape[0] * values.shape[1])
        chunk = max(1, min(n_samples, max_rows // rows_per_draw))
        pieces = []
        for start in range(0, n_samples, chunk):
            size = min(chunk, n_samples - start)
            noise = _randn((size, *values.shape[:-1], self.latent_dim), generator, values)
            pieces.append(self._prefix_totals(method, values, mask, noise, scale, causal, max_rows))
        totals = torch.cat(pieces, dim=0)
        prefix = logmeanexp(totals, dim=0) if method == "iwae" else totals.mean(0)
        # differences of float32 prefixes taken in float64 are exact, so the values sum to the total to
        # float64 rounding (float32 differences left it to luck: 2e-9 relative off on a 60-step series)
        return prefix_increments(prefix.double(), mask.any(-1))

    def iwae(self, values: Tensor, mask: Tensor, n_samples: int, generator=None) -> Tensor:
        """The IWAE bound per sequence ``(B,)`` with ``K = n_samples`` draws."""
        return iwae_bound(self.step_log_weights(values, mask, n_samples, generator).sum(-1), dim=0)

    @property
    def causal_proposal(self) -> str:
        """The particle filter's proposal whose one-step densities read only ``x_{<=t}``: the guide's
        combiner (``"guided"``) for the forward ``"st-l"`` guide, the transition (``"bootstrap"``)
        for guides whose RNN reads ahead."""
        return "guided" if self.guide.causal else "bootstrap"

    def condition(self, values: Tensor, mask: Tensor, lengths: Tensor, n_samples: int,
                  n_particles: int = FORECAST_PARTICLES) -> tuple[DMMState, Tensor]:
        """Draws of the state at each sequence's last step, and that step's values.

        A guided particle filter (the guide's combiner as proposal) runs
        over each sequence up to ``lengths`` (trailing missing values are
        pure propagation, so a forecast starts right after each series);
        ``n_samples`` latents are drawn from its weighted particles at the
        sequence's last step, the filtering posterior ``p(z_T | x_{1:T})``.
        Randomness from the global RNG (callers fork it).

        Returns a state with ``z`` ``(n_samples, B, Z)`` and the data scale
        of the last step, and the last values ``(n_samples, B, D)`` (NaN where
        missing), which the next transition takes (they move the scale).
        """
        return condition(self, values, mask, lengths, n_samples, n_particles)


class DeepMarkovModel(LatentForecaster):
    r"""Deep Markov Model (Krishnan, Shalit & Sontag, 2017).

    .. math::

        z_t \mid z_{t-1} \sim \mathcal N(\mu(z_{t-1}), \operatorname{diag}\sigma^2(z_{t-1})),
        \qquad x_t \mid z_t \sim g(\cdot \mid \mathrm{MLP}(z_t))

    with the gated transition, an MLP emission with any head, and a
    structured inference network ``q(z_{1:T} | x_{1:T})``. Training
    maximises the ELBO, the IWAE bound or FIVO's particle-filter bound
    (``objective``).

    ``log_likelihood(y, method=...)``:

    - ``"smc"`` (the default): a particle filter with ``n_particles``
      particles (default 1000). ``per_step=True`` gives its one-step
      predictive densities ``log p_hat(y_t | y_{<t})``, which are causal by
      construction: the proposal reads only ``y_{<=t}``. That is the guide's
      combiner for the forward ``"st-l"`` guide, and the transition
      (bootstrap filter) for guides whose RNN reads ahead (``"dks"``,
      ``"st-lr"``, ``"mf-lr"``). The total is the filter's log-evidence, the
      sum of the per-step values (the log of an unbiased estimate of
      ``p(y)``). ``proposal="guided"`` proposes from any guide (often a
      lower-variance total; per-step values of a guide that reads ahead
      then depend on later data), ``"auxiliary"`` is the auxiliary filter;
      ``resampling`` names the scheme (:mod:`tsgen.inference.smc.resampling`).
    - ``"iwae"`` (``n_samples=K`` guide draws; chosen when only
      ``n_samples`` is given): the importance weighted bound (the papers'
      reported figure; it tends to ``log p(y)`` as K grows); ``"elbo"`` the
      ELBO averaged over the draws. Per step, the value at an observed step
      ``t`` is ``L_t - L_{t'}``, where ``L_t`` is that bound on
      ``log p(y_1, ..., y_t)`` computed from ``y_1, ..., y_t`` alone (the
      guide is run on the prefix; ``t'`` the previous observed step): it
      depends on data up to ``t`` only and the values sum to the total.
      Scoring every prefix costs about ``T/2`` times the total for guides
      that read ahead.

    Steps where nothing was observed score NaN. Forecasts (``predict``,
    ``sample``) condition on the history by the guided particle filter
    (the guide's combiner as proposal, 1000 particles), draw the last
    latent state from its weighted particles (the filtering posterior),
    then sample forward through the generative model.

    ``filter(y)`` and ``smooth(y)`` return frames of the latent state's
    mean and quantiles per step (the layout of
    :meth:`tsgen.StateSpaceForecaster.filter`): the filtering
    distributions ``p(z_t | y_1:t)`` from the particle filter's weighted
    particles, and the smoothing distributions ``p(z_t | y_1:T)`` from
    forward-filtering backward-simulation (FFBSi) trajectories, which the
    DMM allows because its transition depends on ``z_{t-1}`` alone.

    Parameters
    ----------
    emission : str, DistributionHead (class or instance) or factory
        ``"normal"``, ``"studentt"``, ``"bernoulli"`` (piano rolls),
        ``"poisson"``, ``"negbin"``, or a family component by name:
        ``"made"``/``"nade"`` (autoregressive Bernoulli over the dimensions,
        :mod:`tsgen.components.autoregressive`), ``"made_normal"``, and
        whatever :func:`tsgen.components.register_emission` added. The
        emission's MLP features are ``emission_dim`` wide. An instance is
        copied before training; only names survive ``save`` (saving a model
        built from an object raises ``TypeError``).
    transition : str, TransitionComponent (class or instance) or factory
        ``"gated"`` (default: the paper's gated Gaussian transition, KL in
        closed form, the batched fast path), ``"gaussian"`` (an MLP),
        ``"studentt"``, or a family component's name
        (:func:`tsgen.components.register_transition`), built with
        ``transition_dim`` hidden units and read on ``z_{t-1}``. The KL to
        the guide is closed-form where torch registers one, else the
        one-draw Monte Carlo ``log q - log f``.
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
        DeepAR mean scaling, causal: step ``t`` is scaled by the mean
        ``|x|`` of the ``window_length`` steps before it (64 when None),
        shrunk towards the training data's; ``"auto"`` scales unless the
        head is Bernoulli. Normal and Student-t emissions have the training
        data's units divided out either way. A single pandas series that is
        Box-Cox transformed and differenced (``target_transform``) keeps
        those units, ``s_0``, at every step: mean scaling puts series of
        different sizes on one network, and a lone series has none to be put
        beside; the transform has already made its spread independent of
        the level, and the mean ``|x_t - x_{t-p}|`` of the differences over
        the last steps then follows the drift, not the noise. As the
        emission's scale it made the one-step predictive sd grow with the
        trend: on CO2 it rises 0.63 -> 1.29 over the training months while
        the one-step error does not, and the DMM's predictive variance stayed
        near ``0.14 s_t^2``, 0.5x the squared one-step error over the first
        96 months and 3x over the last 96 (seed 0; not the latent's spread:
        the SMC likelihood of the training series peaks at the fitted
        transition sd). Untransformed series keep the causal scale, whose
        level tracks a spread that grows with the level (airline passengers
        without the transform), and so do panels, whose sizes it tells apart.
    target_transform : "auto", None, "log" or float in [0, 1]
        Box-Cox transform of positive series before differencing, undone on each forecast path
        (:mod:`tsgen.models.deep_estimator`). ``"auto"``: Guerrero's
        lambda for pandas series whose values are all positive (a seasonal swing that grows with the
        level, as airline passengers', is then modelled as one of constant size); None: no transform.
    window_length : int or None
        Training windows and forecast context length for pandas series
        (None: 64 steps; a list of arrays is used whole).
    max_epochs, batch_size, learning_rate, weight_decay, grad_clip,
    validation_fraction, patience, kl_annealing_epochs, kl_annealing_start,
    lr_decay, device, progress, max_seconds :
        Training settings (:class:`tsgen.training.TrainingConfig`).
        ``kl_annealing_epochs="auto"`` warms the ELBO's KL term up from 0
        over the first ``min(10, max_epochs // 3)`` epochs: without it the
        posterior collapses onto the prior and the model ignores time
        (:class:`tsgen.models.latent_estimator.LatentForecaster`). With
        the ReLU RNN guide wider than 64 (the paper's ``hidden_dim=600``),
        its recurrent matrices learn at ``learning_rate * 64 / hidden_dim``
        and every other parameter at ``learning_rate``: at the full rate one
        Adam step can raise the recurrence's gain by ``learning_rate *
        hidden_dim`` (0.6 at 1e-3), and on JSB Chorales the guide's
        summaries exploded within five minibatches
        (:mod:`tsgen.components.inference_networks`). The paper's sizes
        train with the defaults.
    random_state : int or None
        Seeds initialisation, shuffling, the ELBO's draws and sampling.
    warm_start : bool, default False
        When True, ``fit`` on a fitted estimator continues training its network for
        ``max_epochs`` more (see :class:`~tsgen.models.deep_estimator.DeepForecaster`).
    objective : {"elbo", "iwae", "fivo"}
        Training objective: the ELBO (analytic KL, annealed by
        ``kl_annealing_epochs``), the IWAE bound with ``n_particles`` guide
        draws, or FIVO (Maddison et al. 2017): the log-evidence of a
        particle filter with ``n_particles`` particles proposing from the
        guide, reparameterised, the resampling gradient terms dropped as in
        the paper. FIVO steps through time per minibatch, so an epoch costs
        more than the ELBO's batched pass.
    n_particles : int
        Draws (IWAE) or particles (FIVO, at least 2) of the training
        objective; unused by the ELBO.

    Attributes
    ----------
    module_ : DeepMarkovModule
    training_history_ : list of dict
        Per-epoch losses: the negative objective per time step.
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
        validation_fraction="auto",
        patience=10,
        kl_annealing_epochs="auto",
        kl_annealing_start=0.0,
        lr_decay=1.0,
        random_state=None,
        device="cpu",
        progress=True,
        max_seconds=None,
        objective="elbo",
        n_particles=8,
        transition="gated",
        target_transform="auto",
        warm_start=False,
    ):
        self.emission = emission
        self.transition = transition
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
        self.target_transform = target_transform
        self.objective = objective
        self.n_particles = n_particles
        self.warm_start = warm_start

    @classmethod
    def get_test_params(cls):
        return [
            {"latent_dim": 3, "hidden_dim": 8, "emission_dim": 8, "transition_dim": 8, "max_epochs": 2,
             "batch_size": 16, "progress": False, "random_state": 0},
            {"latent_dim": 2, "hidden_dim": 6, "emission_dim": 6, "transition_dim": 6, "inference": "st-lr",
             "rnn_type": "gru", "emission": "studentt", "window_length": 12, "max_epochs": 2,
             "progress": False, "random_state": 1},
            {"latent_dim": 2, "hidden_dim": 6, "emission_dim": 6, "transition_dim": 6, "inference": "st-l",
             "objective": "fivo", "n_particles": 4, "window_length": 12, "max_epochs": 2, "progress": False,
             "random_state": 2},
            {"latent_dim": 2, "hidden_dim": 6, "emission_dim": 6, "transition_dim": 6, "emission": "made_normal",
             "transition": "studentt", "window_length": 12, "max_epochs": 2, "progress": False, "random_state": 3},
        ]

    # ------------------------------------------------------------ building
    def _check_arguments(self) -> None:
        for name in ("latent_dim", "hidden_dim", "emission_dim", "transition_dim", "num_layers", "iaf_dim"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer; got {value!r}.")
        if not is_int(self.iafs) or self.iafs < 0:
            raise ValueError(f"`iafs` must be a non-negative integer; got {self.iafs!r}.")
        if self.scaling not in (True, False, "auto"):
            raise ValueError(f"`scaling` must be True, False or 'auto'; got {self.scaling!r}.")
        dropout = self.rnn_dropout
        if not (is_int(dropout) or isinstance(dropout, float)) or not 0 <= dropout < 1:
            raise ValueError(f"`rnn_dropout` must be a number in [0, 1); got {dropout!r}.")

    def _build_module(self, n_dims: int, n_features: int) -> DeepMarkovModule:
        self._check_arguments()
        emitter = Emitter(self.latent_dim, n_dims, self.emission_dim, self.emission)
        scaling = scale_mode(self.scaling, emitter.head)
        transition = None  # the gated transition of the module's fast path
        if not (isinstance(self.transition, str) and self.transition.lower() == "gated"):
            transition = make_transition(self.transition, self.latent_dim, 0, self.transition_dim, copy=True)
        return DeepMarkovModule(
            n_dims, emitter, latent_dim=self.latent_dim, transition_dim=self.transition_dim,
            rnn_dim=self.hidden_dim, inference=self.inference, rnn_type=self.rnn_type,
            num_layers=self.num_layers, rnn_dropout=self.rnn_dropout,
            observe_mask=getattr(self, "observe_mask_", False), iafs=self.iafs, iaf_dim=self.iaf_dim,
            scaling=scaling, scale_window=self._scale_window(), transition=transition,
        )

    @staticmethod
    def _emission_head(module: DeepMarkovModule):
        return getattr(module.emitter, "head", None)

    def _fit(self, data, covariates):
        # gaps inside sequences (not trailing padding) make the guide read the mask too
        inside = torch.arange(data.values.shape[1])[None, :] < data.lengths[:, None]
        if not self._continues_training():  # a warm start keeps the fitted guide's inputs
            self.observe_mask_ = bool((~data.mask & inside[..., None]).any())
        super()._fit(data, covariates)

    def _choose_differencing(self, data, module):
        """The base class's differencing; a single transformed and differenced series then has the
        emission and the guide read the fixed scale ``s_0`` instead of the causal one (``scaling``)."""
        differencing = super()._choose_differencing(data, module)
        stabilised = differencing is not None and getattr(self, "target_transform_", None) is not None
        if stabilised and data.values.shape[0] == 1 and module.scaler.mode == "prefix":
            module.scaler.mode = "fixed"
        return differencing

    def _fitted_state(self) -> tuple[dict, dict]:
        meta, tensors = super()._fitted_state()
        return {**meta, "observe_mask": self.observe_mask_, "scale_mode": self.module_.scaler.mode}, tensors

    def _load_fitted_state(self, meta: dict, tensors: dict) -> None:
        self.observe_mask_ = bool(meta["observe_mask"])
        super()._load_fitted_state(meta, tensors)
        # files saved before the scale mode was recorded were fitted with the mode the arguments build
        self.module_.scaler.mode = meta.get("scale_mode", self.module_.scaler.mode)

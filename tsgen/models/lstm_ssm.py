r"""The State Space LSTM (Zheng, Zaheer, Ahmed, Wang, Xing & Smola 2017, "State Space LSTM Models with
Particle MCMC Inference").

Generative model, with ``h_0 = c_0 = 0``, ``z_0 = 0`` and the causal data scale ``s_t`` of
:mod:`tsgen.components.scaling`::

    h_t = LSTM(h_{t-1}, z_{t-1})                          (the LSTM reads the latent path only)
    z_t | h_t  ~ N(mu(h_t), diag sigma^2(h_t))              (f: the latent transition)
    x_t | z_t  ~ head(phi_dec(z_t); scale = s_t)            (g: any distribution head)

``h_t`` is a deterministic function of ``z_{<t}``, so the latent is not
Markov (``markov_latent = False``): ``f(z_t | .)`` depends on the whole
latent past. The data enter only through ``g``; ``x_t`` is conditionally
independent of everything else given ``z_t``.

Inference network (the guide, a filter): ``q(z_t | h_t, x_t) =
N(mu_q(h_t, phi_x(u_t)), ...)`` with ``u_t = [x_t / s_t, 1\{observed\},
\log(s_t / s_0)]``. It has the form of the locally optimal proposal
``p(z_t | h_t, x_t) ∝ f(z_t | h_t) g(x_t | z_t)`` and reads nothing after
``t``, so the guided particle filter's one-step densities are causal.

Training (``objective``):

- ``"pgas"`` (the paper's, the default): particle Gibbs with ancestor
  sampling draws a latent path ``z* ~ p(z_{1:T} | x_{1:T})`` for each
  training window, and the parameters take a gradient step on the
  complete-data log-likelihood ``log p(x, z*)`` (Fisher's identity: its
  expectation under the posterior is the gradient of ``log p(x)``: a
  stochastic EM). As in the paper's Algorithm 1 the chains persist
  (``persistent_chains=True``): each window keeps its last draw between
  epochs (:class:`tsgen.inference.smc.pmcmc.PathStore`, keyed by the
  training loop's window identity ``SequenceBatch.index`` and checked
  against the window's observations), and a visit runs ``sweeps`` (one)
  conditional SMC sweeps from it at the current parameters; only the first
  visit starts from a bootstrap filter's genealogy. ``persistent_chains=False``
  restarts every minibatch from a filter's draw (the former default, with
  ``sweeps=2``: about 2.3 sweeps' cost a visit against one). The guide
  is fitted to the same draws by maximum likelihood, ``log q(z*_t | h*_t,
  x_t)`` with ``h*`` held fixed (its gradient moves the guide only), so
  forecasting and scoring filters can propose from it.
- ``"elbo"``, ``"iwae"``: the bounds of the guide's reparameterised passes;
  ``"fivo"``: the guided filter's log-evidence.

How fast each learns, on JSB Chorales (88 binary keys; latent 16, hidden
64, batch 20, the settings of ``benchmarks/polyphonic.py --epochs 30``): PGAS is a
stochastic EM whose draws ``z*`` carry only what the filter's selection
among ``n_particles`` prior draws puts in them (at most ``log N`` nats a
step), so while the decoder barely reads ``z`` it learns little: after 4
epochs the model was still at the independent-Bernoulli baseline (IWAE
10.81 against 10.79 nats a step on 10 test chorales); after 30 it reached
IWAE 9.84 and guided SMC 8.90 against 10.73 (20 test chorales), at about
ten times the ELBO's cost per epoch. ``objective="elbo"`` (with the latent
estimators' KL warm-up) reached 10.05 (IWAE) and 9.97 (SMC) against 11.06
on the whole test set in the same 30 epochs. Persistent chains against the
former restarts (a filter and two sweeps a visit), 10 epochs each, the two
runs side by side on the shared machine (``polyphonic.py --epochs 10
--test-sequences 20``): 1000 s against 1760 s of training, and both still at
the baseline (IWAE / SMC 10.742 / 10.742 against 10.733 / 10.734; baseline
10.730): 10 epochs are too few to tell their learning apart.

Ancestor sampling on a non-Markov latent. :func:`tsgen.inference.smc.pgas`
refuses models without a Markov latent: the reference's new ancestor ``i``
at step ``t`` must be drawn with weight ``w_{t-1}^i p(z*_{t:T}, x_{t:T} |
z^i_{1:t-1})``, which needs the reference's future re-run under every
particle's LSTM state. Here (:meth:`LSTMSSMModule.conditional_sweep`) the
emission factors ``g(x_s | z*_s)`` are the same for every ``i`` and cancel,
leaving ``w_{t-1}^i \prod_{s=t}^{t+L-1} f(z*_s | h_s^{(i)})`` with
``h_s^{(i)}`` the LSTM run from particle ``i``'s state along ``z*_{t:s-1}``;
``L = ancestor_lag`` truncates the product (Lindsten, Jordan & Schön 2014,
§5: truncated ancestor sampling for non-Markov models; exact when ``L``
covers the rest of the sequence, at ``O(N T L)`` cell steps per sweep). The
LSTM forgets, so a short lag loses little; ``L = 1`` is the one-step
weight ``w_{t-1}^i f(z*_t | h_t^{(i)})``.

The look-ahead costs about 7 extra cell steps on all ``N`` particles per
time step (two thirds of a sweep at the defaults). With
``ancestor_proposals=3`` the ancestor is instead moved by three
independence Metropolis-Hastings steps from its current value (the
reference's own slot): a candidate ``i ~ w_{t-1}`` is accepted with
probability ``min(1, lambda_i / lambda_cur)``, ``lambda`` the look-ahead
product, so the look-ahead runs from 4 states rather than ``N``. Each move
leaves the ancestor's conditional invariant, so the sweep still leaves the
posterior invariant (tested against importance sampling, as the Gibbs
draw is); at random initialisation on JSB it changed the same share of the
reference's steps per sweep (93%) as the Gibbs draw, and a sweep took
0.64 CPU s against 1.13 (1.23 before the exact changes below; one JSB
batch of 20 chorales, latent 16, hidden 64, 16 particles). It is not the
default. In the small PGAS learning test of ``tests/test_lstm_ssm.py``
(latent 2, 8 particles, one sweep, lag 2, 30 epochs) the restarting Gibbs
sampler took the training loss from 6.33 to 1.67 nats a step, the moves
from 6.21 to 5.94, and persistent Gibbs chains from 6.33 to 6.01; but the
restarts' fall was the transition's own entropy, not the data: on that fit
``-log f(z* | h*)`` fell to 0.16 nats a step (0.265 the transition's mean
sd) against 2.22 (0.752) with persistent chains, ``-log g(x | z*)`` was 3.84
both ways, and the held-out log-likelihoods agreed within their noise (guided
SMC -26.4 and -25.5 over 24 months). Likely because a restart's draw is
mostly a bootstrap filter's, which favours paths typical of the current
transition, and the transition then narrows onto them (not tested further).
Those figures were measured before the latent models' validation loss
became an average over fixed draws (early stopping reads it); with it, the
same test fit went from 6.33 to 5.35 at best with persistent chains and to
5.60 with restarts. All of these were on seasonal differences of the test's
noisy sine, nearly white noise; on the sine itself (``scaling=False``, as
the test now fits) persistent chains take the loss from 7.90 to 0.66 and the
held-out log evidence from -101.1 to -14.6 (the generating density: -3.7).
Exact in either
mode (Gibbs sweeps returned the same paths as the earlier code, bit for
bit, in every case compared): the look-ahead's input projections of
``z*`` are computed once per sweep, ``f`` reads all look-ahead steps in one
call, and resampled particles pick their prior's parameters instead of
rerunning its network.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, Normal

from tsgen._validation import is_int
from tsgen.components.heads import make_head
from tsgen.components.latent import DiagonalGaussian, RecurrentCell, batch_major, diagonal_normal
from tsgen.components.mlp import MLP
from tsgen.components.positive import positive
from tsgen.components.scaling import CausalScale, ScaleWindow, scale_mode
from tsgen.components.transitions import TransitionComponent, latent_pair, learned_prior, prior_distribution
from tsgen.exceptions import NumericalError
from tsgen.inference.elbo import logmeanexp, prefix_increments, valid_steps
from tsgen.inference.smc.filter import particle_filter
from tsgen.inference.smc.pmcmc import PathStore
from tsgen.inference.smc.resampling import normalise, resampler
from tsgen.inference.smc.smoothing import _sample_index, trace_genealogy
from tsgen.models.latent_estimator import LatentForecaster
from tsgen.protocol import Context, SequentialModel, index_state, observed_log_prob
from tsgen.training import SequenceBatch, TrainingConfig
from tsgen.training.config import OBJECTIVES

__all__ = ["LSTMSSM", "LSTMSSMModule", "LSTMSSMState", "LSTMSSM_OBJECTIVES"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)

#: training objectives of the LSTM state-space model
LSTMSSM_OBJECTIVES = ("pgas", *OBJECTIVES)


@dataclass
class LSTMSSMState:
    """``h``, ``c``: the LSTM state ``h_t`` (after the transition) ``(*batch, H)``; ``z``: the last latent
    ``(*batch, Z)``; ``scale``/``window``: the data scale, carried by forecast states only (None: read each
    step's scale from the context)."""

    h: Tensor
    c: Tensor
    z: Tensor
    scale: Tensor | None = None
    window: ScaleWindow | None = None


def _pick(prior: Distribution, index: Tensor) -> Distribution:
    """``f(. | h_t)`` of the resampled particles ``index`` ``(N, B)``, or None (rerun the network). ``f`` reads
    ``h_t`` alone, so picking a diagonal Gaussian's parameters equals running the network on the picked states."""
    if isinstance(prior, Independent) and isinstance(prior.base_dist, Normal):
        return diagonal_normal(index_state(prior.base_dist.loc, index), index_state(prior.base_dist.scale, index))
    return None


class LSTMSSMModule(SequentialModel):
    """The State Space LSTM's generative model and filtering guide (module docstring).

    Parameters
    ----------
    data_dim, latent_dim, hidden_dim, feature_dim : int
        ``D``, ``Z``, the LSTM's ``H`` and the width of the transition, guide and decoder networks.
    emission : str or DistributionHead
    scaling : bool or {"auto"}
    scale_window : int
    sweeps : int >= 0
        Conditional SMC sweeps per PGAS draw (after the filter's first path, or from the stored path).
    persistent_chains : bool
        Keep each training sequence's draw between visits (:attr:`chains`, keyed by ``SequenceBatch.index``)
        and continue its chain from there, instead of a new filter draw at every visit.
    ancestor_lag : int >= 1
        ``L``, the steps of the reference's future read by ancestor sampling.
    ancestor_proposals : int >= 1 or None
        Metropolis-Hastings moves on the reference's ancestor per step (None: a draw from its conditional
        over every particle; :meth:`conditional_sweep`).
    """

    markov_latent = False
    causal_proposal = "guided"

    def __init__(self, data_dim, latent_dim, hidden_dim, feature_dim, emission="normal", scaling="auto",
                 scale_window=64, sweeps=1, ancestor_lag=8, transition="gaussian", ancestor_proposals=None,
                 persistent_chains=True):
        super().__init__()
        D, Z, H, Fw = (int(v) for v in (data_dim, latent_dim, hidden_dim, feature_dim))
        self.data_dim, self.latent_dim = D, Z
        self.sweeps, self.ancestor_lag = int(sweeps), int(ancestor_lag)
        self.ancestor_proposals = None if ancestor_proposals is None else int(ancestor_proposals)
        self.persistent_chains = bool(persistent_chains)
        #: each training sequence's last PGAS draw (training state: not in the state dict, cleared after a fit)
        self.chains = PathStore()
        self.rnn = RecurrentCell("lstm", Z, H)
        self.prior = learned_prior(transition, Z, H, Fw, use_previous=False)
        self.phi_x = MLP(3 * D, [Fw], Fw, final_activation=torch.nn.ReLU)
        self.posterior = DiagonalGaussian(Fw + H, [Fw], Z)
        self.decoder = MLP(Z, [Fw], Fw, final_activation=torch.nn.ReLU)
        self.head = make_head(emission, Fw, D, copy=True)
        self.scaler = CausalScale(D, scale_window, scale_mode(scaling, self.head))

    # ------------------------------------------------------------ pieces
    def _emit(self, z: Tensor, scale: Tensor | None) -> Distribution:
        return self.head(self.decoder(z), scale=scale)

    def _prior_log_density(self, h: Tensor, z: Tensor) -> Tensor:
        """``log f(z | h)`` without building a distribution (the ancestor look-ahead's inner loop)."""
        if isinstance(self.prior, TransitionComponent):
            return self.prior(None, h).log_prob(z)
        loc, raw = self.prior.net(h).chunk(2, dim=-1)
        scale = positive(raw)
        return (-0.5 * ((z - loc) / scale).square() - scale.log() - _HALF_LOG_2PI).sum(-1)

    def _hidden_path(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``h_{1:T}`` ``(*batch, T, H)`` along latent paths ``z`` ``(*batch, T, Z)`` and the LSTM's
        ``c_T`` (the recurrence reads ``z_0 = 0, z_1, ..., z_{T-1}``)."""
        batch = z.shape[:-2]
        h, c = self.rnn.initial(batch, z)
        previous = torch.zeros_like(z[..., 0, :])
        hs = []
        for t in range(z.shape[-2]):
            h, c = self.rnn(previous, h, c)
            hs.append(h)
            previous = z[..., t, :]
        return torch.stack(hs, -2), c

    # ------------------------------------------------------------ protocol
    def prepare(self, values: Tensor, mask: Tensor, covariates: Tensor | None = None, horizon: int = 0) -> Context:
        """Step tensors ``"features"`` ``phi_x(u_t)`` ``(B, L, F)`` (the guide's view of ``x_t``) and
        ``"scale"`` ``s_t`` (absent without one). Covariates are not used."""
        scale = self.scaler.sequence(values, mask)
        zero = torch.zeros((), dtype=values.dtype, device=values.device)
        scaled = torch.where(mask, values if scale is None else values / scale, zero)
        features = self.phi_x(torch.cat([scaled, mask.to(values.dtype), self.scaler.log_ratio(scale, scaled)], -1))
        steps = {"features": features}
        if scale is not None:
            steps["scale"] = scale
        if horizon:
            fill = {"features": 0.0, "scale": float("nan")}
            steps = {k: torch.cat([v, v.new_full((v.shape[0], horizon, *v.shape[2:]), fill[k])], 1)
                     for k, v in steps.items()}
        return Context(steps)

    def init_state(self, context: Context, sample_shape=()) -> LSTMSSMState:
        like = context.steps["features"]
        batch_shape = (*tuple(sample_shape), like.shape[0])
        h, c = self.rnn.initial(batch_shape, like)
        return LSTMSSMState(h, c, like.new_zeros(*batch_shape, self.latent_dim))

    def transition(self, state: LSTMSSMState, x_prev: Tensor | None, context_t: dict
                   ) -> tuple[LSTMSSMState, Distribution]:
        """``h_t = LSTM(h_{t-1}, z_{t-1})``, then ``f(z_t | h_t)``; ``x_{t-1}`` only moves a forecast's scale."""
        window, scale = state.window, state.scale
        if x_prev is not None and scale is not None:
            window, scale = self.scaler.advance(window, scale, x_prev)
        h, c = self.rnn(state.z, state.h, state.c)
        return LSTMSSMState(h, c, state.z, scale, window), prior_distribution(self.prior, None, h)

    def commit(self, state: LSTMSSMState, z: Tensor, context_t: dict) -> LSTMSSMState:
        return replace(state, z=z)

    def emission(self, state: LSTMSSMState, context_t: dict) -> Distribution:
        """``g(x_t | z_t)`` in the data's units."""
        scale = state.scale if state.scale is not None else context_t.get("scale")
        return self._emit(state.z, scale)

    def proposal(self, state: LSTMSSMState, x: Tensor, mask: Tensor, context_t: dict) -> Distribution:
        """``q(z_t | h_t, x_t)``; ``x_t`` is read through ``phi_x(u_t)`` from :meth:`prepare`."""
        features = context_t["features"].expand(*state.h.shape[:-1], -1)
        return self.posterior(torch.cat([features, state.h], dim=-1))

    # ------------------------------------------------------- complete data
    def complete_log_likelihood(self, z: Tensor, values: Tensor, mask: Tensor,
                                context: Context | None = None) -> tuple[Tensor, Tensor]:
        """``log f(z_t | h_t)`` and ``log g(x_t | z_t)`` per step, ``(*batch, B, T)`` each, for latent
        paths ``z`` ``(*batch, B, T, Z)`` (with gradients). Unobserved components add nothing to ``g``."""
        context = self.prepare(values, mask) if context is None else context
        h, _ = self._hidden_path(z)
        log_f = prior_distribution(self.prior, None, h).log_prob(z)
        log_g = observed_log_prob(self._emit(z, context.steps.get("scale")), values, mask)
        return log_f, log_g

    def conditional_sweep(self, values: Tensor, mask: Tensor, context: Context, reference: Tensor,
                          n_particles: int, ancestor_proposals: int | None = None) -> Tensor:
        """One conditional SMC sweep (bootstrap proposals, multinomial resampling at every step) with
        truncated ancestor sampling (module docstring); the reference ``(B, T, Z)`` holds the last particle
        slot. Returns the new reference, one final particle's genealogy ``(B, T, Z)``.

        ``ancestor_proposals``: None draws the reference's ancestor from its conditional over every
        particle (the look-ahead runs from all ``N``); ``k`` runs ``k`` independent Metropolis-Hastings
        moves on it instead (the look-ahead runs from ``k + 1`` states).
        """
        n_series, steps = values.shape[:2]
        last, lag = n_particles - 1, self.ancestor_lag
        x_nan = torch.where(mask, values, torch.full((), float("nan"), dtype=values.dtype, device=values.device))
        shape = (n_particles, n_series, values.shape[-1])
        draw = resampler("multinomial")
        # the look-ahead's LSTM inputs are the reference's z*, the same from every particle: their part of the
        # gates is computed for every step at once
        gates = self.rnn.project(reference) if lag > 1 and steps > 1 else None
        state = self.init_state(context, (n_particles,))
        zs, ancestors, log_weights = [], [], None
        for t in range(steps):
            context_t = context.at(t)
            moved, prior = self.transition(state, None if t == 0 else x_nan[:, t - 1].expand(shape), context_t)
            if t == 0:
                ancestors.append(torch.arange(n_particles, device=values.device)[:, None].expand(-1, n_series))
            else:
                index = draw(log_weights).clone()
                index[last] = self._reference_ancestor(moved, log_weights, gates, reference, t, ancestor_proposals)
                ancestors.append(index)
                # the transition is deterministic per particle: move, then pick, equals pick, then move
                moved, picked = index_state(moved, index), _pick(prior, index)
                prior = prior_distribution(self.prior, None, moved.h) if picked is None else picked
            z = torch.cat([prior.sample()[:last], reference[:, t].unsqueeze(0)])
            state = self.commit(moved, z, context_t)
            log_weights = observed_log_prob(self.emission(state, context_t), x_nan[:, t], mask[:, t])
            dead = ~torch.isfinite(log_weights.amax(0))
            if bool(dead.any()):
                raise NumericalError(f"conditional SMC lost every particle at step {t + 1} of series "
                                     f"{int(dead.nonzero()[0, 0])} (all log-weights -inf or NaN).")
            log_weights, _ = normalise(log_weights)
            zs.append(z)
        final = _sample_index(log_weights, dim=0).unsqueeze(0)
        return trace_genealogy(torch.stack(zs), torch.stack(ancestors), final)[0]

    def _reference_ancestor(self, moved: LSTMSSMState, log_weights: Tensor, gates: Tensor | None,
                            reference: Tensor, t: int, proposals: int | None) -> Tensor:
        """The reference's ancestor at step ``t`` ``(B,)``, from ``w_{t-1}^i lambda_i`` with ``lambda_i =
        prod_{s=t}^{t+L-1} f(z*_s | h_s^i)`` (``moved``: every particle's ``h_t``).

        Gibbs (``proposals`` None, or nothing to look ahead): one draw from those weights, ``lambda`` from
        every particle. Otherwise independence Metropolis-Hastings moves from the current ancestor, the
        reference's own slot ``N``: a candidate ``i ~ w_{t-1}`` is accepted with probability ``min(1,
        lambda_i / lambda_cur)`` (``w`` cancels against the proposal), so ``lambda`` is needed from
        ``proposals + 1`` states only. Each move leaves the ancestor's conditional invariant, so the sweep
        still leaves the posterior invariant: it replaces one Gibbs draw of the partially collapsed Gibbs
        sampler that PGAS is (Lindsten, Jordan & Schon 2014, Theorem 1) by a Metropolis-Hastings kernel with
        the same target.
        """
        n_particles, stop = log_weights.shape[0], min(t + self.ancestor_lag, reference.shape[1])
        if proposals is None or stop == t + 1:
            return _sample_index(log_weights + self._look_ahead(moved.h, moved.c, gates, reference, t, stop), dim=0)
        candidates = torch.multinomial(log_weights.T.exp(), proposals, replacement=True).T  # (k, B)
        rows = torch.cat([candidates, candidates.new_full((1, candidates.shape[1]), n_particles - 1)])
        scores = self._look_ahead(index_state(moved.h, rows), index_state(moved.c, rows), gates, reference, t, stop)
        current, current_score = rows[-1], scores[-1]
        accept = torch.rand_like(scores[:-1]).log()
        for k in range(proposals):
            move = accept[k] < scores[k] - current_score
            current = torch.where(move, rows[k], current)
            current_score = torch.where(move, scores[k], current_score)
        return current

    def _look_ahead(self, h: Tensor, c: Tensor, gates: Tensor | None, reference: Tensor, t: int, stop: int) -> Tensor:
        """``sum_{s=t}^{stop-1} log f(z*_s | h_s)`` ``(R, B)`` from the LSTM states ``(h, c)`` ``(R, B, H)`` of
        step ``t``, run along the reference's ``z*_{t:stop-2}`` (``gates``: :meth:`RecurrentCell.project` of the
        reference ``(B, T, 4H)``). Only the recurrence is a loop: ``f`` reads every step's states in one call."""
        rows, n_series, width = h.shape
        hs, h, c = [h], h.reshape(-1, width), c.reshape(-1, width)
        nothing = h.new_zeros(h.shape[0], 0)  # every input column is in the projected gates
        for s in range(t + 1, stop):
            projected = gates[:, s - 1].expand(rows, -1, -1).reshape(rows * n_series, -1)
            h, c = self.rnn.step(nothing, projected, h, c)
            hs.append(h.view(rows, n_series, width))
        future = reference[:, t:stop].transpose(0, 1).unsqueeze(1)  # (stop - t, 1, B, Z)
        return self._prior_log_density(torch.stack(hs), future).sum(0)

    def posterior_draw(self, values: Tensor, mask: Tensor, n_particles: int, sweeps: int | None = None,
                       context: Context | None = None, index: Tensor | None = None) -> Tensor:
        """A latent path per series ``(B, T, Z)`` from particle Gibbs with ancestor sampling: ``sweeps``
        (default the module's) conditional sweeps from the series' stored path, or from a bootstrap filter's
        genealogy on its first visit. ``index`` ``(B,)`` names the series (``SequenceBatch.index``); without it,
        or without ``persistent_chains``, every call starts from a filter. No gradients."""
        sweeps = self.sweeps if sweeps is None else sweeps
        steps = values.shape[1]
        with torch.no_grad():
            context = self.prepare(values, mask) if context is None else context
            persistent = index is not None and self.persistent_chains
            if persistent:
                prints = PathStore.fingerprint(values, mask)
                reference, held = self.chains.recall(index, prints, steps, self.latent_dim, values.dtype)
                fresh = held == 0
            if not persistent or bool(fresh.all()):
                reference = self._filter_path(values, mask, n_particles, context)
            else:
                if bool(fresh.any()):
                    rows = fresh.nonzero()[:, 0]
                    reference[rows] = self._filter_path(values[rows], mask[rows], n_particles, context.select(rows))
                if bool((held[~fresh] < steps).any()):
                    reference = self._extend(reference, torch.where(fresh, steps, held))
            for _ in range(sweeps):
                reference = self.conditional_sweep(values, mask, context, reference, n_particles,
                                                   self.ancestor_proposals)
            if persistent:
                self.chains.keep(index, reference, prints)
        return reference

    def _filter_path(self, values: Tensor, mask: Tensor, n_particles: int, context: Context) -> Tensor:
        """One final particle's genealogy from a bootstrap filter ``(B, T, Z)``: a chain's first state."""
        out = particle_filter(self, values, mask, n_particles=n_particles, proposal="bootstrap",
                              keep="particles", context=context)
        final = _sample_index(out.log_weights, dim=0).unsqueeze(0)
        return trace_genealogy(out.z, out.ancestors, final)[0]

    def _extend(self, path: Tensor, held: Tensor) -> Tensor:
        """``path`` ``(B, T, Z)`` with the steps from ``held`` ``(B,)`` on drawn from ``f`` along it.

        A stored chain is shorter than the minibatch when it was last cut to a shorter one; the missing steps
        are padding, unobserved and last, so their conditional given the rest is the prior ``f``: drawing
        them from it is an exact Gibbs step (had they data, the sweep after it would still target the
        posterior, from a worse start)."""
        n, steps = path.shape[:2]
        h, c = self.rnn.initial((n,), path)
        previous, zs = torch.zeros_like(path[:, 0]), []
        for t in range(steps):
            h, c = self.rnn(previous, h, c)
            if t >= int(held.min()):
                draw = prior_distribution(self.prior, None, h).sample()
                previous = torch.where((t >= held)[:, None], draw, path[:, t])
            else:
                previous = path[:, t]
            zs.append(previous)
        return torch.stack(zs, 1)

    # ----------------------------------------------------------- inference
    def rollout(self, values: Tensor, mask: Tensor, n_samples: int = 1, latents: bool = False) -> tuple:
        """One pass of ``n_samples`` guide draws (``rsample``) over sequences ``(B, T, D)``.

        Returns ``(S, B, T)`` tensors: ``log g(x_t | z_t)``, ``log f(z_t | h_t) - log q(z_t | .)`` and
        ``KL(q_t || f_t)``, the last two 0 where nothing is observed (``z_t`` drawn from ``f``); with
        ``latents`` also the draws ``z`` ``(S, B, T, Z)``.
        """
        context = self.prepare(values, mask)
        features = context.steps["features"]
        S, (B, T) = n_samples, features.shape[:2]
        # the loop holds only what reads the latent path (components.latent): the cell, f and q of a step in
        # two products, one draw; phi_x(u_t)'s part of q's first layer is projected here
        pair = latent_pair(self.prior, self.posterior, None, features, mask.any(-1), S, v_first=False)
        h, c = self.rnn.initial((S * B,), features)
        z = features.new_zeros(S * B, self.latent_dim)
        outs, zs = [], []
        for t in range(T):
            h, c = self.rnn(z, h, c)
            out = pair(h, t)
            z = pair.draw(out, t)
            outs.append(out)
            zs.append(z)
        # the densities, the KL and the emission of every step in one batched call each
        z = batch_major(torch.stack(zs), S)
        log_ratio, kl = pair.terms(outs, z)
        terms = observed_log_prob(self._emit(z, context.steps.get("scale")), values, mask), log_ratio, kl
        return (*terms, z) if latents else terms

    def loss(self, batch: SequenceBatch, kl_weight: float = 1.0, objective: str = "pgas",
             n_particles: int = 16) -> Tensor:
        """The negative objective per valid time step: ``"pgas"`` (``-log p(x, z*)`` at a PGAS draw ``z*``
        of ``n_particles`` particles, plus the guide's ``-log q(z* | .)``), ``"elbo"``, ``"iwae"`` or
        ``"fivo"`` (as :class:`tsgen.VRNN`)."""
        values, mask = batch.values, batch.mask
        steps = valid_steps(mask).sum().clamp_min(1)
        if objective == "pgas":
            context = self.prepare(values, mask)
            z = self.posterior_draw(values, mask, n_particles, context=context, index=batch.index)
            h, _ = self._hidden_path(z)
            log_f = prior_distribution(self.prior, None, h).log_prob(z)
            log_g = observed_log_prob(self._emit(z, context.steps.get("scale")), values, mask)
            # the guide learns the draws; h* is held fixed so this term moves the guide only
            guide = self.posterior(torch.cat([context.steps["features"], h.detach()], -1)).log_prob(z)
            observed = mask.any(-1)
            bound = (log_f + log_g).sum(-1) + torch.where(observed, guide, torch.zeros_like(guide)).sum(-1)
        elif objective == "elbo":
            log_lik, _, kl = self.rollout(values, mask, 1)
            bound = (log_lik - kl_weight * kl).sum(-1)
        elif objective == "iwae":
            log_lik, log_ratio, _ = self.rollout(values, mask, n_particles)
            bound = logmeanexp((log_lik + log_ratio).sum(-1), 0)
        elif objective == "fivo":
            bound = particle_filter(self, values, mask, n_particles=n_particles, proposal="guided",
                                    reparameterized=True).log_evidence
        else:
            raise ValueError(f"`objective` must be one of {list(LSTMSSM_OBJECTIVES)}; got {objective!r}.")
        return -bound.sum() / steps

    def log_likelihood(self, values: Tensor, mask: Tensor, method: str = "iwae", n_samples: int = 100,
                       max_rows: int = 200_000, causal: bool = True) -> Tensor:
        """Per-step increments ``(B, T)`` of the IWAE bound or the ELBO of every prefix ``x_{1:t}``
        (the guide is a filter: causal by construction)."""
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


class LSTMSSM(LatentForecaster):
    r"""State Space LSTM (Zheng et al. 2017): an LSTM over the latent path drives a Gaussian state.

    .. math::

        h_t = \mathrm{LSTM}(h_{t-1}, z_{t-1}),\quad
        z_t \sim \mathcal N(\mu(h_t), \operatorname{diag}\sigma^2(h_t)),\quad x_t \sim g(\cdot \mid z_t)

    trained, as in the paper, by particle Gibbs with ancestor sampling and
    gradient steps on ``log p(x, z)`` at the sampled paths
    (:mod:`tsgen.models.lstm_ssm`), or by a filtering guide's bounds.

    ``log_likelihood(y, method=...)``: ``"smc"`` (default) is the particle
    filter proposing from the guide (``n_particles``, default 1000), one-step
    values ``log p_hat(y_t | y_{<t})`` reading only ``y_{<=t}``; ``"iwae"``
    and ``"elbo"`` are the guide's bounds. Forecasts condition on the history
    by the guided filter and sample forward.

    Parameters
    ----------
    emission : str, DistributionHead (class or instance) or factory
        ``"normal"``, ``"studentt"``, ``"bernoulli"``, ``"poisson"``, ``"negbin"``, or a family
        component's name (``"made"``, ``"nade"``, ``"made_normal"``; any
        :func:`tsgen.components.register_emission` name). Only names survive ``save``.
    transition : str, TransitionComponent (class or instance) or factory
        ``f(z_t | h_t)``: ``"gaussian"`` (default; the fused training loop), ``"studentt"`` or any
        :func:`tsgen.components.register_transition` name, reading ``h_t`` with ``feature_dim`` hidden units.
    latent_dim : int
        Size of ``z_t``.
    hidden_dim : int
        Size of the LSTM state ``h_t``.
    feature_dim : int
        Width of the transition, guide and decoder networks.
    scaling : bool or "auto"
        DeepAR mean scaling, causal (as :class:`tsgen.DeepMarkovModel`).
    target_transform : "auto", None, "log" or float in [0, 1]
        Box-Cox transform of positive series before differencing, undone on each forecast path
        (:mod:`tsgen.models.deep_estimator`). ``"auto"``: Guerrero's
        lambda for pandas series whose values are all positive (a seasonal swing that grows with the
        level, as airline passengers', is then modelled as one of constant size); None: no transform.
    window_length : int or None
        Training windows and forecast context length (None: 64 steps).
    objective : {"pgas", "elbo", "iwae", "fivo"}
        ``"pgas"``: particle Gibbs draws then the complete-data log-likelihood
        (the guide fitted to the draws); ``"elbo"`` learns in a tenth of the time per
        epoch (module docstring).
    n_particles : int >= 2
        Particles of each PGAS sweep (FIVO's filter, IWAE's draws).
    sweeps : int >= 0
        Conditional SMC sweeps per PGAS draw: per visit of a training
        sequence, from its stored path (``persistent_chains``), or after a
        bootstrap filter's path on its first visit.
    persistent_chains : bool
        True (default, the paper's Algorithm 1): each training sequence
        keeps its latest draw between epochs and its chain continues from
        it, so a visit costs ``sweeps`` conditional sweeps. False: every
        minibatch restarts from a bootstrap filter's draw (a filter plus
        ``sweeps`` sweeps a visit).
    ancestor_lag : int >= 1
        Steps of the reference's future that weigh its new ancestor
        (truncated ancestor sampling; exact from the window length on).
    ancestor_proposals : int >= 1 or None
        None (default): the reference's new ancestor is drawn from all
        ``n_particles`` look-aheads. An integer ``k``: ``k``
        Metropolis-Hastings moves on it per step instead, the look-ahead
        run from ``k + 1`` states (the posterior stays invariant; a sweep
        about 1.8 times cheaper at ``k = 3``, but slower mixing: see the
        module docstring before making it the default).
    max_epochs, batch_size, learning_rate, weight_decay, grad_clip, validation_fraction, patience,
    kl_annealing_epochs, kl_annealing_start, lr_decay, device, progress, max_seconds :
        Training settings (:class:`tsgen.training.TrainingConfig`). ``kl_annealing_epochs="auto"``
        warms the ELBO's KL term up from 0 over the first ``min(10, max_epochs // 3)`` epochs, against
        posterior collapse (:class:`tsgen.models.latent_estimator.LatentForecaster`).
    random_state : int or None
    warm_start : bool, default False
        When True, ``fit`` on a fitted estimator continues training its network for
        ``max_epochs`` more (see :class:`~tsgen.models.deep_estimator.DeepForecaster`).

    Attributes
    ----------
    module_ : LSTMSSMModule
    training_history_ : list of dict
    """

    def __init__(self, emission="normal", latent_dim=4, hidden_dim=32, feature_dim=32, scaling="auto",
                 window_length=None, objective="pgas", n_particles=16, sweeps=1, ancestor_lag=8,
                 ancestor_proposals=None, persistent_chains=True, max_epochs=100,
                 batch_size=32, learning_rate=1e-3, weight_decay=0.0, grad_clip=10.0, validation_fraction="auto",
                 patience=10, kl_annealing_epochs="auto", kl_annealing_start=0.0, lr_decay=1.0, random_state=None,
                 device="cpu", progress=True, max_seconds=None, transition="gaussian", target_transform="auto",
                 warm_start=False):
        self.emission = emission
        self.transition = transition
        self.latent_dim = latent_dim
        self.hidden_dim = hidden_dim
        self.feature_dim = feature_dim
        self.scaling = scaling
        self.window_length = window_length
        self.objective = objective
        self.n_particles = n_particles
        self.sweeps = sweeps
        self.ancestor_lag = ancestor_lag
        self.ancestor_proposals = ancestor_proposals
        self.persistent_chains = persistent_chains
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
        self.warm_start = warm_start

    @classmethod
    def get_test_params(cls):
        return [
            {"latent_dim": 2, "hidden_dim": 8, "feature_dim": 8, "objective": "pgas", "n_particles": 4, "sweeps": 1,
             "ancestor_lag": 2, "window_length": 12, "max_epochs": 2, "batch_size": 16, "progress": False,
             "random_state": 0},
            {"latent_dim": 2, "hidden_dim": 6, "feature_dim": 6, "emission": "studentt", "objective": "elbo",
             "window_length": 12, "max_epochs": 2, "progress": False, "random_state": 1},
        ]

    def _training_config(self) -> TrainingConfig:
        if not isinstance(self.objective, str) or self.objective not in LSTMSSM_OBJECTIVES:
            raise ValueError(f"`objective` must be one of {list(LSTMSSM_OBJECTIVES)}; got {self.objective!r}.")
        if self.objective != "pgas":
            return super()._training_config()
        # TrainingConfig knows the guide bounds; PGAS is this model's own objective, with no KL to anneal
        saved = self.objective
        try:
            self.objective = "iwae"
            config = super()._training_config()
            if not is_int(self.n_particles) or self.n_particles < 2:
                raise ValueError(f"`n_particles` must be an integer >= 2 for objective='pgas'; "
                                 f"got {self.n_particles!r}.")
        finally:
            self.objective = saved
        config.objective = "pgas"
        return config

    def _build_module(self, n_dims: int, n_features: int) -> LSTMSSMModule:
        for name in ("latent_dim", "hidden_dim", "feature_dim", "ancestor_lag"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer; got {value!r}.")
        if not is_int(self.sweeps) or self.sweeps < 0:
            raise ValueError(f"`sweeps` must be an integer >= 0; got {self.sweeps!r}.")
        proposals = self.ancestor_proposals
        if proposals is not None and (not is_int(proposals) or proposals < 1):
            raise ValueError(f"`ancestor_proposals` must be None or a positive integer; got {proposals!r}.")
        if not isinstance(self.persistent_chains, bool):
            raise TypeError(f"`persistent_chains` must be True or False; got {self.persistent_chains!r}.")
        if self.objective == "pgas" and (not is_int(self.n_particles) or self.n_particles < 2):
            raise ValueError(f"`n_particles` must be an integer >= 2 for objective='pgas'; got {self.n_particles!r}.")
        if self.scaling not in (True, False, "auto"):
            raise ValueError(f"`scaling` must be True, False or 'auto'; got {self.scaling!r}.")
        return LSTMSSMModule(n_dims, self.latent_dim, self.hidden_dim, self.feature_dim, self.emission, self.scaling,
                             scale_window=self._scale_window(), sweeps=self.sweeps, ancestor_lag=self.ancestor_lag,
                             transition=self.transition, ancestor_proposals=self.ancestor_proposals,
                             persistent_chains=self.persistent_chains)

    def _fit(self, data, covariates):
        super()._fit(data, covariates)
        self.module_.chains.clear()  # the chains belong to this fit's training windows

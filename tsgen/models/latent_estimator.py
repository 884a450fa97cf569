r"""The estimator base of the latent sequence models: what sequential Monte Carlo gives every model on the protocol.

A latent model (:class:`tsgen.DeepMarkovModel`, :class:`tsgen.VRNN`, ...)
writes its generative module as a :class:`tsgen.protocol.SequentialModel`
with a learned ``proposal`` (its inference network's step) and, for
training and bounds,

- ``loss(batch, kl_weight, objective=..., n_particles=...)``: the negative
  ``"elbo"``, ``"iwae"`` or ``"fivo"`` bound per valid step
  (:class:`~tsgen.models.deep_estimator.DeepForecaster` passes the
  estimator's ``objective`` and ``n_particles``);
- ``log_likelihood(values, mask, method, n_samples, causal=...)``: per-step
  increments ``(B, T)`` of the IWAE bound or the ELBO (``method="iwae"`` or
  ``"elbo"``), causal when ``causal`` is True;
- optionally ``causal_proposal``: the filter proposal (``"guided"`` or
  ``"bootstrap"``) whose one-step densities read only ``y_{<=t}``
  (default ``"guided"``: a filtering guide).

:class:`LatentForecaster` then supplies, with no per-model code:
``log_likelihood(method="smc" | "iwae" | "elbo")`` (SMC: the particle
filter's one-step densities), forecasts conditioned by the guided particle
filter (:func:`condition`, then :func:`tsgen.protocol.ancestral_sample`),
``filter(y)`` frames of the filtering distributions ``p(z_t | y_1:t)``,
``smooth(y)`` frames of ``p(z_t | y_1:T)`` by FFBSi for models with a
Markov latent (``markov_latent``), and ``_latent_model``
(:class:`tsgen.AnomalyDetector` scores by SMC).

Training default, KL warm-up: the latent estimators default to
``kl_annealing_epochs="auto"`` (:class:`tsgen.training.TrainingConfig`):
the ELBO's KL term is weighted from 0 up to 1 over the first
``min(10, max_epochs // 3)`` epochs. Without it the posterior collapses in
the first epochs (``q(z_t | .) = p(z_t | .)``, KL 0.001-0.03 nats a step):
while the transition predicts nothing, each nat that ``z_t`` carries about
``x_t`` costs a nat of KL, and at ``q = p`` no gradient leads back. Models
with a deterministic path from ``x_{<t}`` to ``x_t`` (VRNN, STORN, SRNN)
then still learn as RNNs, but the DMM, whose data reach ``x_t`` only
through ``z_t``, stays at a model that ignores time: on JSB Chorales (latent
16, hidden 64, 30 epochs, batch 20) IWAE 10.72 nats a step against the
independent-Bernoulli 10.73 on 20 test chorales, and 8.84 with the warm-up
(KL 1.2 nats a step; 8.97 against 11.06 on all 77). The warm-up has to
outlast the decoder's first use of ``z``: with 4 warm-up epochs (of 12) the
KL still decayed to 0.03 once the weight reached 1. The IWAE, FIVO and
PGAS objectives have no KL term to weigh and are unaffected.

Forecast states and the data scale: a model whose state is a dataclass with
fields ``scale`` and ``window`` (None while filtering, when each step's
scale comes from the context) and which has a ``scaler``
(:class:`tsgen.components.scaling.CausalScale`) gets, in the conditioned
state, the scale of each series' last step; sampled values then move it.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from tsgen._validation import is_int
from tsgen.base import make_generator
from tsgen.data import unwrap
from tsgen.inference.smc.filter import particle_filter
from tsgen.inference.smc.smoothing import ffbsi
from tsgen.models._latent_frames import filtering_summary, frame_input, latent_frames, latent_names, smoothing_summary
from tsgen.models.deep_estimator import DeepForecaster
from tsgen.protocol import Context, SequentialModel, ancestral_sample, index_state, map_state, stack_states
from tsgen.training import seeded_from

__all__ = ["FORECAST_PARTICLES", "LIKELIHOOD_METHODS", "LIKELIHOOD_PARTICLES", "LatentForecaster", "condition"]

#: ``log_likelihood`` methods
LIKELIHOOD_METHODS = ("smc", "iwae", "elbo")
#: particles of the filter that scores (``method="smc"``) and of the one that conditions forecasts
LIKELIHOOD_PARTICLES = 1000
FORECAST_PARTICLES = 1000
#: at most this many state values kept per forecast chunk (steps x particles x series x state size)
KEPT_PARTICLE_VALUES = 2**24


def _state_size(module: SequentialModel, values: Tensor, mask: Tensor) -> int:
    """Values one particle's state holds at the start (the latent and any recurrence)."""
    state = module.init_state(module.prepare(values[:1], mask[:1]), (1,))
    sizes = []
    map_state(state, lambda t: sizes.append(t.numel()) or t)
    return max(1, sum(sizes))


def condition(module: SequentialModel, values: Tensor, mask: Tensor, lengths: Tensor, n_samples: int,
              n_particles: int = FORECAST_PARTICLES) -> tuple[object, Tensor]:
    """Draws of the state at each sequence's last step, and that step's values.

    A guided particle filter runs over each sequence up to ``lengths``
    (trailing missing values are pure propagation, so a forecast starts
    right after each series); ``n_samples`` states are drawn from its
    weighted particles at the sequence's last step, the filtering posterior.
    Randomness from the global RNG (callers fork it).

    Returns
    -------
    state
        Batch shape ``(n_samples, B)``; with the data scale of the last
        step when the model carries one (module docstring).
    Tensor (n_samples, B, D)
        The last values (NaN where missing), which the next transition takes.
    """
    ragged = bool((lengths < values.shape[1]).any())
    out = particle_filter(module, values, mask, n_particles=n_particles, proposal="guided",
                          keep="states" if ragged else "none")
    ends = lengths.to(values.device) - 1
    rows = torch.arange(values.shape[0], device=values.device)
    if ragged:  # each sequence's particles at its own last step
        stacked = stack_states(out.states)  # (T, N, B, ...)
        particles = map_state(stacked, lambda t: t[ends, :, rows].transpose(0, 1))
        log_weights = out.log_weights_history[ends, :, rows]  # (B, N)
    else:
        particles, log_weights = out.state, out.log_weights.t()
    picks = torch.multinomial(log_weights.exp(), n_samples, replacement=True)  # (B, S)
    state = index_state(particles, picks.t())
    x_last = torch.where(mask[rows, ends], values[rows, ends],
                         torch.full((), float("nan"), dtype=values.dtype, device=values.device))

    def per_draw(t):  # the same for every draw: a view, not a copy
        return t.expand(n_samples, *t.shape)

    scaler = getattr(module, "scaler", None)
    names = {f.name for f in dataclasses.fields(state)} if dataclasses.is_dataclass(state) else set()
    if scaler is not None and {"scale", "window"} <= names:
        window, step_scale = scaler.at(values, mask, ends)
        state = dataclasses.replace(state, scale=map_state(step_scale, per_draw), window=map_state(window, per_draw))
    return state, per_draw(x_last)


class LatentForecaster(DeepForecaster):
    """Base of the deep latent-variable estimators (see the module docstring).

    Subclasses add their constructor and ``_build_module``; the module
    follows the protocol and the hooks above.
    """

    #: scored by a particle filter's one-step densities (tsgen.AnomalyDetector)
    _latent_model = True

    # ------------------------------------------------------ initialisation
    # ---------------------------------------------------------- inference
    def log_likelihood(self, y, per_step=False, X=None, **options):
        """Total ``log p(y)`` estimate, or per-step values as Series when ``per_step``.

        Options: ``method`` (``"smc"``, ``"iwae"``, ``"elbo"``), ``n_particles``,
        ``proposal`` and ``resampling`` (SMC), ``n_samples`` (IWAE/ELBO),
        ``batch_size`` (series scored at once). Without ``per_step`` the
        IWAE/ELBO total takes the one-pass route (the same number as the sum
        of the per-step values); the SMC total is the sum of the filter's
        one-step values.
        """
        if not per_step:
            options = {**options, "_causal": False}
        return super().log_likelihood(y, per_step=per_step, X=X, **options)

    def _log_likelihood(self, data, covariates, method=None, n_samples=None, n_particles=None, proposal=None,
                        resampling="systematic", batch_size=64, _causal=True):
        """Per-step values ``(n_series, T)``; see the estimator's docstring for ``method``."""
        self._check_support(data)
        if method is None:  # IWAE's argument picks IWAE
            method = "smc" if n_samples is None else "iwae"
        if method not in LIKELIHOOD_METHODS:
            raise ValueError(f"`method` must be one of {list(LIKELIHOOD_METHODS)}; got {method!r}.")
        if not is_int(batch_size) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer; got {batch_size!r}.")
        module = self.module_
        if method == "smc":
            if n_samples is not None:
                raise ValueError("`n_samples` counts the guide draws of method='iwae' or 'elbo'; method='smc' "
                                 "takes `n_particles`.")
            n_particles = LIKELIHOOD_PARTICLES if n_particles is None else n_particles
            proposal = getattr(module, "causal_proposal", "guided") if proposal is None else proposal

            def score(values, mask):
                return particle_filter(module, values, mask, n_particles=n_particles, proposal=proposal,
                                       resampling=resampling).step_log_likelihood
        else:
            for name, value in (("n_particles", n_particles), ("proposal", proposal)):
                if value is not None:
                    raise ValueError(f"`{name}` applies to method='smc'; got {name}={value!r} with "
                                     f"method={method!r}.")
            n_samples = 100 if n_samples is None else n_samples
            if not is_int(n_samples) or n_samples < 1:
                raise ValueError(f"`n_samples` must be a positive integer; got {n_samples!r}.")

            def score(values, mask):
                return module.log_likelihood(values, mask, method, n_samples, causal=_causal)

        generator = make_generator(self.random_state)
        values, mask = self._as_tensor(data.values), data.mask.to(self._device())
        pieces = []
        with torch.no_grad(), seeded_from(generator, self._device()):
            for start in range(0, values.shape[0], batch_size):
                rows = slice(start, start + batch_size)
                pieces.append(score(values[rows], mask[rows]))
        return torch.cat(pieces).double().cpu()

    # ------------------------------------------------------ filter / smooth
    def filter(self, y, X=None, quantiles=(0.05, 0.5, 0.95), n_particles=None, proposal=None):
        """Filtering distributions ``p(z_t | y_1:t)`` by the particle filter.

        Parameters
        ----------
        y : Series, DataFrame or list of them
        X : None
            No covariates (the argument mirrors the other latent estimators).
        quantiles : sequence of float in (0, 1)
        n_particles : int >= 2, optional
            Particles of the filter (default 1000).
        proposal : {"guided", "bootstrap", "auxiliary"}, optional
            ``"guided"`` (the default) proposes from the inference network, as the
            filter that conditions forecasts does.

        Returns
        -------
        DataFrame (a list of them for many series)
            Indexed like ``y``: the weighted particle mean and quantiles of each
            latent component, columns ``(latent, statistic)`` (``z0, z1, ...`` by
            ``mean, q0.05, ...``; flat ``mean, q...`` columns for one latent).
            Reproducible for a fixed ``random_state``.
        """
        return self._latent_summary(y, X, quantiles, n_particles, proposal, None)

    def smooth(self, y, X=None, quantiles=(0.05, 0.5, 0.95), n_particles=None, n_trajectories=100, proposal=None):
        """Smoothing distributions ``p(z_t | y_1:T)`` by forward filtering, backward simulation (FFBSi).

        The particle filter of :meth:`filter` (same arguments) followed by
        ``n_trajectories`` backward draws; the frames are laid out as in
        :meth:`filter`. Models whose latent is not Markov (the backward
        kernel needs ``f(z_t | z_{t-1})`` alone) refuse it.
        """
        return self._latent_summary(y, X, quantiles, n_particles, proposal, n_trajectories)

    def _latent_summary(self, y, X, quantiles, n_particles, proposal, n_trajectories):
        batch, _, levels = frame_input(self, y, X, quantiles)
        module = self.module_
        if n_trajectories is not None and not module.markov_latent:
            raise ValueError(f"{type(self).__name__}.smooth needs a Markov latent (FFBSi's backward kernel reads "
                             f"f(z_t | z_(t-1)) alone); {type(self).__name__}'s prior depends on the whole past. "
                             "Use filter().")
        n_particles = FORECAST_PARTICLES if n_particles is None else n_particles
        for name, value, minimum in (("n_particles", n_particles, 2), ("n_trajectories", n_trajectories, 1)):
            if value is not None and (not is_int(value) or value < minimum):
                raise ValueError(f"`{name}` must be an integer >= {minimum}; got {value!r}.")
        self._check_support(batch)
        differenced = self._model_data(batch)  # the latents were learnt on the data the module sees
        values, mask = self._as_tensor(differenced.values), differenced.mask.to(self._device())
        kept = values.shape[1] * max(n_particles, n_trajectories or 0) * module.latent_dim
        chunk = max(1, KEPT_PARTICLE_VALUES // kept)  # series filtered at once, bounding the particles kept
        means, bands = [], []
        with torch.no_grad(), seeded_from(make_generator(self.random_state), self._device()):
            for start in range(0, values.shape[0], chunk):
                rows = slice(start, start + chunk)
                context = module.prepare(values[rows], mask[rows])
                out = particle_filter(module, values[rows], mask[rows], n_particles=n_particles,
                                      proposal="guided" if proposal is None else proposal, keep="particles",
                                      context=context)
                if n_trajectories is None:
                    mean, band = filtering_summary(out.z, out.log_weights_history, levels)
                else:
                    paths = ffbsi(module, out, values[rows], mask[rows], context, n_trajectories)
                    mean, band = smoothing_summary(paths, levels)
                means.append(mean)
                bands.append(band)
        bands = {q: torch.cat([b[q] for b in bands]).double() for q in bands[0]}
        frames = latent_frames(batch, torch.cat(means).double(), bands, latent_names(None, module.latent_dim))
        return unwrap(batch, frames)

    # ------------------------------------------------------------ forecasts
    def _sample(self, horizon, n_samples, history, covariates, generator):
        values, mask, lengths, _, _ = self._context(history, covariates, horizon)
        module = self.module_
        draws = []
        with torch.no_grad(), seeded_from(generator, self._device()):
            # series whose filter keeps its states at every step (ragged histories) are filtered a few at a time
            kept = values.shape[1] * FORECAST_PARTICLES * _state_size(module, values, mask)
            chunk = max(1, KEPT_PARTICLE_VALUES // kept)
            for start in range(0, values.shape[0], chunk):
                rows = slice(start, start + chunk)
                state, last = condition(module, values[rows], mask[rows], lengths[rows], n_samples,
                                        FORECAST_PARTICLES)
                # the state holds n_samples filtering draws per series, each with its own scale: one path each
                draws.append(ancestral_sample(module, state, Context(), 0, horizon, last))
        return torch.cat(draws, dim=1).transpose(0, 1).double().cpu()

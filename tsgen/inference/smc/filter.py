r"""Particle filters over the model protocol (:mod:`tsgen.protocol`).

One loop serves every :class:`~tsgen.protocol.SequentialModel`: particles
are the leading dimension of the state, ``(N, B, ...)``, so all series of a
batch are filtered at once, on whatever device the model and data live.
Step ``t`` (after resampling, see below)::

    state, f_t = transition(state, x_{t-1}, context_t)
    z_t ~ q_t                       # f_t (bootstrap) or model.proposal(...) (guided)
    state = commit(state, z_t, context_t)
    w_t = W_{t-1} g(x_t | state) f_t(z_t) / q_t(z_t)
    log p_hat(x_t | x_{<t}) = log sum_n w_t^n,   W_t = w_t / sum_n w_t^n

so that ``exp(sum_t log p_hat(x_t | x_<t))`` is an unbiased estimate of
``p(x_{1:T})`` (the log of it is biased low, by Jensen). Resampling is
adaptive: before step ``t > 0`` of a series whose effective sample size
fell below ``ess_threshold * N``. The auxiliary filter (Pitt & Shephard
1999) resamples on the look-ahead weights ``W_{t-1} g(x_t | mean of f_t)``
and divides them out afterwards, which keeps the estimate unbiased; its
second-stage weights ``g(x_t | z_t) / g(x_t | mean of f_t)`` are heavy-tailed
when the observation noise is small against the transition noise, where
the bootstrap or a guided filter is the better choice.

A step where nothing of a series is observed is pure propagation: its
particles move by the transition, their weights stay, and its one-step
log-likelihood is exactly 0. A partially observed vector is weighted by the
emission's marginal over its observed components
(:func:`tsgen.protocol.observed_log_prob`).

With ``reparameterized=True`` latents are drawn by ``rsample`` and the
graph is kept, so ``log_evidence`` is the FIVO bound (Maddison et al.
2017) and its gradient flows through the weights and the draws; resampling
indices carry none (the paper drops that score-function term). Otherwise
the filter runs without autograd.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real

import torch
from torch import Tensor

from tsgen._validation import is_int
from tsgen.exceptions import NumericalError
from tsgen.inference.smc.resampling import WEIGHT_RESAMPLERS, resampler
from tsgen.protocol import Context, SequentialModel, index_state, map_state, observed_log_prob

__all__ = ["FilterOutput", "PROPOSALS", "KEEP", "particle_filter"]

PROPOSALS = ("bootstrap", "guided", "auxiliary")
# devices where reading a flag back to Python is cheap enough to skip resampling work per step
_HOST_SYNC_DEVICES = ("cpu",)
KEEP = ("none", "particles", "states")


@dataclass
class FilterOutput:
    """What :func:`particle_filter` returns (``N`` particles, ``B`` series, ``T`` steps, ``Z`` latent size)."""

    log_evidence: Tensor  # (B,) log of the unbiased estimate of p(x_{1:T})
    step_log_likelihood: Tensor  # (B, T) log p_hat(x_t | x_<t); exactly 0 where nothing was observed at t
    ess: Tensor  # (B, T) effective sample size after weighting at t
    log_weights: Tensor  # (N, B) normalised log weights at the last step
    state: object  # committed state at the last step, (N, B, ...)
    z: Tensor | None  # (T, N, B, Z) latent particles at every step (keep != "none"; None without a latent)
    ancestors: Tensor | None  # (T, N, B) int64: index at t-1 of particle n at t (t = 0: arange)
    log_weights_history: Tensor | None  # (T, N, B) normalised log weights at every step (keep != "none")
    resampled: Tensor  # (B, T) bool: whether resampling happened before step t
    states: list | None = None  # committed state after every step (keep == "states")


def _check_arguments(model, values, mask, n_particles, proposal, resampling, ess_threshold, keep, context):
    if not isinstance(model, SequentialModel):
        raise TypeError(f"`model` must be a tsgen.protocol.SequentialModel; got {type(model).__name__}.")
    if not is_int(n_particles) or n_particles < 2:
        raise ValueError(f"`n_particles` must be an integer >= 2; got {n_particles!r}.")
    if proposal not in PROPOSALS:
        raise ValueError(f"`proposal` must be one of {list(PROPOSALS)}; got {proposal!r}.")
    if proposal == "guided" and type(model).proposal is SequentialModel.proposal:
        raise ValueError(
            f"`proposal`='guided' needs a model with a proposal; {type(model).__name__}.proposal returns None "
            "(use proposal='bootstrap' or 'auxiliary')."
        )
    resampler(resampling)  # the error names `resampling`
    draw = WEIGHT_RESAMPLERS[resampling]
    if isinstance(ess_threshold, bool) or not isinstance(ess_threshold, Real) or not 0 <= ess_threshold <= 1:
        raise ValueError(f"`ess_threshold` must be a number in [0, 1]; got {ess_threshold!r}.")
    if keep not in KEEP:
        raise ValueError(f"`keep` must be one of {list(KEEP)}; got {keep!r}.")
    if not isinstance(values, Tensor) or values.dim() != 3 or not values.is_floating_point() or 0 in values.shape:
        shape = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
        raise ValueError(f"`values` must be a floating-point tensor of shape (B, T, D), none of them 0; got {shape}.")
    if mask is None:
        mask = ~torch.isnan(values)
    elif not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"`mask` must be a bool tensor shaped like `values` (True = observed); got {mask!r:.80}.")
    elif mask.shape != values.shape:
        raise ValueError(f"`mask` must have the shape of `values` {tuple(values.shape)}; got {tuple(mask.shape)}.")
    if context is not None and not isinstance(context, Context):
        raise TypeError(f"`context` must be a tsgen.protocol.Context from model.prepare(...); got {type(context).__name__}.")
    if bool((mask & torch.isnan(values)).any()):
        raise ValueError("`values` has NaN where `mask` says observed; mark missing entries False in `mask`.")
    return mask, draw


def particle_filter(
    model: SequentialModel,
    values: Tensor,
    mask: Tensor | None,
    covariates: Tensor | None = None,
    *,
    n_particles: int = 1000,
    proposal: str = "bootstrap",
    resampling: str = "systematic",
    ess_threshold: float = 0.5,
    keep: str = "none",
    context: Context | None = None,
    reparameterized: bool = False,
) -> FilterOutput:
    """Run a particle filter of ``model`` over ``values``.

    Parameters
    ----------
    model : SequentialModel
    values : Tensor (B, T, D)
        Observations; entries where ``mask`` is False are ignored (NaN is fine).
    mask : Tensor (B, T, D) bool or None
        True where observed (None: ``~isnan(values)``).
    covariates : Tensor (B, T, K), optional
        Passed to ``model.prepare`` when ``context`` is None.
    n_particles : int >= 2
    proposal : {"bootstrap", "guided", "auxiliary"}
        Propose from the transition, from ``model.proposal``, or from the
        transition after resampling on look-ahead weights.
    resampling : {"systematic", "stratified", "residual", "multinomial"}
    ess_threshold : float in [0, 1]
        Resample a series before step ``t`` when its ESS is below
        ``ess_threshold * n_particles`` (1: always; 0: never).
    keep : {"none", "particles", "states"}
        Also return latent particles, ancestors and weights at every step
        ("particles"), and the committed states ("states").
    context : Context, optional
        A precomputed ``model.prepare(values, mask, covariates, 0)``.
    reparameterized : bool
        Keep the autograd graph and draw with ``rsample`` (FIVO).

    Returns
    -------
    FilterOutput

    Raises
    ------
    NumericalError
        When every particle of a series gets weight zero (or a weight turns
        NaN) at some step; the message names the step (1-based) and series.
    """
    mask, draw = _check_arguments(model, values, mask, n_particles, proposal, resampling, ess_threshold, keep, context)
    if context is None:
        context = model.prepare(values, mask, covariates, 0)
    with torch.set_grad_enabled(reparameterized and torch.is_grad_enabled()):
        return _run(model, values, mask, context, n_particles, proposal, draw, float(ess_threshold), keep,
                    reparameterized)


def _run(model, values, mask, context, n_particles, proposal, draw, ess_threshold, keep, reparameterized):
    B, T, D = values.shape
    device = values.device
    latent = model.latent_dim > 0
    # without a latent every particle is the same deterministic path: one suffices and the result is exact
    N = n_particles if latent else 1
    keep_particles = keep != "none"
    # once-off host reads of the mask, so that the loop branches on Python bools without device syncs
    observed = mask.any(-1)  # (B, T)
    all_step = mask.all(-1).all(0).tolist()
    any_step = observed.any(0).tolist()
    x_missing = torch.where(mask, values, torch.full((), math.nan, dtype=values.dtype, device=device))
    log_n = math.log(N)
    dtype = values.dtype
    arange = torch.arange(N, device=device).unsqueeze(1)
    no_resample = torch.zeros(B, dtype=torch.bool, device=device)
    yes = torch.ones(B, dtype=torch.bool, device=device)
    uniform = torch.full((N, B), -log_n, dtype=dtype, device=device)
    ones = torch.ones((N, B), dtype=dtype, device=device)
    full_ess = torch.full((B,), float(N), dtype=dtype, device=device)
    always = ess_threshold >= 1.0
    # on the CPU a host read is cheap and lets the loop skip resampling; elsewhere resample every series
    # and keep the old particles where the ESS was high, which needs no sync
    host_sync = device.type in _HOST_SYNC_DEVICES

    state = model.init_state(context, (N,))
    # `uniform` is never written to, so `log_w is uniform` says the weights are equal (start, after resampling)
    log_w = uniform
    weights, ess_t = ones, full_ess
    step_ll, ess_hist, resampled_hist = [], [], []
    z_hist, anc_hist, lw_hist, states = [], [], [], []
    sample = (lambda d: d.rsample() if d.has_rsample else d.sample()) if reparameterized else (lambda d: d.sample())

    # per-step views made once (unbind is one call), so the loop indexes Python lists; x_nan_steps[t] is
    # x_t with NaN where unobserved, at the particles' shape (N, B, D)
    x_nan_steps = x_missing.unsqueeze(0).expand(N, B, T, D).unbind(2)
    x_steps = values.unbind(1)
    contexts = context.sequence(T)
    for t in range(T):
        context_t = contexts[t]
        x_prev = None if t == 0 else x_nan_steps[t - 1]
        ancestors = None
        need = no_resample
        step_seen = any_step[t]

        if t > 0 and latent and not (proposal == "auxiliary" and step_seen):
            need, every = _need(always, ess_t, ess_threshold * N, host_sync, B, yes, no_resample)
            if every is not None:
                ancestors = draw(weights.T).T
                # weights and ESS matter again only if step t observes nothing (then they carry over)
                if every:
                    log_w, weights, ess_t = uniform, ones, full_ess
                else:
                    ancestors = torch.where(need, ancestors, arange)
                    log_w = torch.where(need, -log_n, log_w)
                    ess_t = torch.where(need, full_ess, ess_t)
                    if not step_seen:  # (an observed step reweighs: a pass over N x B saved)
                        weights = torch.where(need, 1.0, weights)
                state = index_state(state, ancestors)

        before = state
        state, f = model.transition(state, x_prev, context_t)
        if latent and f is None:
            raise ValueError(f"`model` has latent_dim={model.latent_dim} but its transition returned no distribution.")

        if not step_seen:
            # nothing observed at t: pure propagation, weights and evidence untouched
            z = None
            if f is not None:
                z = sample(f)
                state = model.commit(state, z, context_t)
            step_ll.append(torch.zeros(B, dtype=dtype, device=device))
        else:
            full = all_step[t]
            x_t = x_steps[t] if full else x_nan_steps[t]
            mask_t = None if full else mask[:, t].expand(N, B, D)
            seen_t = None if full else observed[:, t]
            log_pre = None  # auxiliary filter: log of the first-stage normaliser
            if f is None:
                z = None
                log_inc = _log_lik(model, state, context_t, x_t, mask_t)
            elif proposal == "bootstrap" or (proposal == "auxiliary" and t == 0):
                z = sample(f)
                state = model.commit(state, z, context_t)
                log_inc = _log_lik(model, state, context_t, x_t, mask_t)
            elif proposal == "guided":
                q = model.proposal(state, x_nan_steps[t], mask[:, t].expand(N, B, D), context_t)
                if q is None:
                    raise ValueError(
                        f"`proposal`='guided' needs a model with a proposal; {type(model).__name__}.proposal "
                        f"returned None at step {t + 1}."
                    )
                z = sample(q)
                log_q = f.log_prob(z) - q.log_prob(z)
                if seen_t is not None:
                    # series with nothing observed propagate by the transition (exact 0 evidence, no f/q factor)
                    z = torch.where(seen_t.unsqueeze(-1), z, sample(f))
                    log_q = torch.where(seen_t, log_q, torch.zeros((), dtype=log_q.dtype, device=device))
                state = model.commit(state, z, context_t)
                log_inc = _log_lik(model, state, context_t, x_t, mask_t) + log_q
            else:  # auxiliary, t > 0
                mean_state = model.commit(state, f.mean, context_t)
                look = _log_lik(model, mean_state, context_t, x_t, mask_t)  # (N, B)
                first, first_weights, log_pre, ess_aux = _weigh(log_w + look)
                log_w = first
                need, every = _need(always, ess_aux, ess_threshold * N, host_sync, B, yes, no_resample)
                if every is not None:
                    ancestors = draw(first_weights.T).T
                    if every:
                        log_w = uniform
                    else:
                        ancestors = torch.where(need, ancestors, arange)
                        log_w = torch.where(need, -log_n, first)
                    look = torch.gather(look, 0, ancestors)
                    # the deterministic part of the transition is cheap to redo on the chosen particles
                    state, f = model.transition(index_state(before, ancestors), x_prev, context_t)
                z = sample(f)
                state = model.commit(state, z, context_t)
                log_inc = _log_lik(model, state, context_t, x_t, mask_t) - look

            if log_w is uniform and log_inc.shape == log_w.shape:
                # equal prior weights: normalising log_inc alone gives the same weights and saves a pass
                log_w, weights, lse, ess_t = _weigh(log_inc, owned=False)
                lse = lse - log_n
            else:
                log_w, weights, lse, ess_t = _weigh(log_w + log_inc)
            if log_pre is not None:
                lse = lse + log_pre
            if seen_t is not None:
                # a series with nothing observed has evidence exactly 1 (its weights only renormalise)
                lse = torch.where(seen_t, lse, torch.zeros((), dtype=lse.dtype, device=device))
            step_ll.append(lse)

        ess_hist.append(ess_t)
        resampled_hist.append(need)
        if keep_particles:
            if z is not None:
                z_hist.append(z)
            anc_hist.append(arange.expand(N, B) if ancestors is None else ancestors)
            lw_hist.append(log_w)
            if keep == "states":
                states.append(state)

    step_ll = torch.stack(step_ll, -1)
    _raise_if_collapsed(step_ll)
    out = FilterOutput(
        log_evidence=step_ll.sum(-1),
        step_log_likelihood=step_ll,
        ess=torch.stack(ess_hist, -1),
        log_weights=log_w,
        state=state,
        z=torch.stack(z_hist) if z_hist else None,
        ancestors=torch.stack(anc_hist) if keep_particles else None,
        log_weights_history=torch.stack(lw_hist) if keep_particles else None,
        resampled=torch.stack(resampled_hist, -1),
        states=states if keep == "states" else None,
    )
    return out if latent else _widen(out, n_particles)


def _need(always: bool, ess: Tensor, threshold: float, host_sync: bool, n_series: int, yes: Tensor, no: Tensor):
    """Which series resample ``(B,)`` and whether all do (True), some (False) or none (None: skip)."""
    if always:
        return yes, True
    if n_series == 1 and host_sync:
        return (yes, True) if float(ess) < threshold else (no, None)
    need = ess < threshold
    if not host_sync:
        # no device sync: resample every series and keep the old particles where the ESS was high
        return need, False
    count = int(need.sum())
    if count == 0:
        return no, None
    return need, count == n_series


def _weigh(log_w: Tensor, owned: bool = True) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Normalise ``(N, B)`` log-weights: ``(normalised log-weights, weights up to a factor per series,
    log normaliser, ESS)``; the resamplers take unnormalised weights, which saves a pass. ``owned``:
    ``log_w`` is the caller's temporary and may be overwritten."""
    # the shift only guards exp() against overflow, so it needs no gradient; a series whose weights are
    # all -inf gets the normaliser -inf (not NaN), which the caller reports
    grad = torch.is_grad_enabled() and log_w.requires_grad
    top = (log_w.detach() if grad else log_w).amax(0).nan_to_num_(0.0, 0.0, 0.0)
    w = torch.sub(log_w, top).exp_()
    total = w.sum(0)
    log_norm = total.log().add_(top)
    # sum w^2 as a norm: one pass (vecdot multiplies into a temporary, then sums)
    if grad:
        # the ESS only decides when to resample, which carries no gradient (FIVO drops that term)
        ess = (total.detach() / torch.linalg.vector_norm(w.detach(), dim=0)).square_()
        return log_w - log_norm, w, log_norm, ess
    # no graph: reuse the temporaries in place
    ess = total.div_(torch.linalg.vector_norm(w, dim=0)).square_()
    return (log_w.sub_(log_norm) if owned else log_w - log_norm), w, log_norm, ess


def _log_lik(model, state, context_t, x_t, mask_t) -> Tensor:
    emission = model.emission(state, context_t)
    if mask_t is None:
        return emission.log_prob(x_t)
    return observed_log_prob(emission, x_t, mask_t)


def _raise_if_collapsed(step_ll: Tensor) -> None:
    bad = ~torch.isfinite(step_ll)
    if bool(bad.any()):
        # the first step (then series) where it happened; later steps only inherit it
        t = int(bad.any(0).nonzero()[0])
        series = bad[:, t].nonzero().flatten().tolist()
        what = "NaN" if bool(torch.isnan(step_ll[series[0], t])) else "zero (all log-weights -inf)"
        raise NumericalError(
            f"particle filter: the total particle weight became {what} at step t={t + 1} of series "
            f"{series[:10]}{' ...' if len(series) > 10 else ''}; the observation there is impossible under "
            "every particle (check the model's emission scale or use more particles / a guided proposal)."
        )


def _widen(out: FilterOutput, n: int) -> FilterOutput:
    """A no-latent run (one particle) reported with ``n`` identical, equally weighted particles."""
    B = out.log_weights.shape[1]
    out.log_weights = torch.full((n, B), -math.log(n), dtype=out.log_weights.dtype, device=out.log_weights.device)
    out.ess = torch.full_like(out.ess, float(n))
    out.state = map_state(out.state, lambda t: t.expand(n, *t.shape[1:]))
    if out.ancestors is not None:
        T = out.ancestors.shape[0]
        out.ancestors = torch.arange(n, device=out.ancestors.device).view(1, n, 1).expand(T, n, B)
        out.log_weights_history = out.log_weights.unsqueeze(0).expand(T, n, B)
    if out.states is not None:
        out.states = [map_state(s, lambda t: t.expand(n, *t.shape[1:])) for s in out.states]
    return out

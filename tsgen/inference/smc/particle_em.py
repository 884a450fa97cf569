r"""Particle expectation-maximisation (Kantas, Doucet, Singh, Maciejowski & Chopin 2015, section 5).

EM maximises ``log p_theta(y)`` by iterating

    Q(theta | theta_k) = E_{theta_k}[ log p_theta(y_{1:T}, z_{1:T}) | y_{1:T} ],   theta_{k+1} = argmax Q.

Particle EM replaces the smoothing expectation by an average over
smoother trajectories ``z^{(m)}_{1:T}`` drawn under ``theta_k``:

- E-step: a particle filter (kept particles), then forward-filtering
  backward-simulation (FFBSi, :func:`tsgen.inference.smc.smoothing.ffbsi`)
  for models whose latent is Markov, else the filter's genealogy with its
  final weights;
- M-step: for any model whose parameters are torch parameters, L-BFGS on
  the Monte Carlo ``Q`` (the complete-data log-likelihood of the
  trajectories, differentiable in theta); or a closed form where the model
  is exponential-family, e.g. :func:`linear_gaussian_m_step` for the
  linear-Gaussian model (the Shumway-Stoffer M-step on sufficient statistics
  of the trajectories).

The complete-data log-likelihood walks the model protocol once with the
latents fixed; a model may offer a faster
``complete_log_likelihood(z, values, mask, context)`` (e.g. one vectorised
over time), which is used instead. Latent steps after a series' last
observation are left out of ``Q``: they integrate to one exactly, and their
Monte Carlo terms would only add noise (as :mod:`tsgen.inference.em` leaves
out the padding of ragged sequences).

Randomness comes from torch's global generator (callers fork it with
:func:`tsgen.training.seeded_from`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from tsgen._validation import is_int
from tsgen.exceptions import NumericalError
from tsgen.protocol import observed_log_prob

__all__ = [
    "ParticleEMResult",
    "complete_data_log_likelihood",
    "gradient_m_step",
    "linear_gaussian_m_step",
    "particle_em",
    "transition_mask",
]

SMOOTHERS = ("auto", "ffbsi", "genealogy")


@dataclass
class ParticleEMResult:
    """What :func:`particle_em` returns.

    Attributes
    ----------
    model : SequentialModel
        The fitted model (the one passed in, updated in place by the gradient
        M-step, or the last one a closed-form M-step returned).
    log_evidences : list of float
        The filter's ``log p_hat(y)`` (summed over series) at each E-step,
        i.e. under the parameters before that iteration's M-step.
    n_iter : int
    """

    model: object
    log_evidences: list = field(default_factory=list)
    n_iter: int = 0


def transition_mask(mask: Tensor) -> Tensor:
    """``(B, T)`` bool: whether step ``t``'s latent term counts in a complete-data likelihood,
    i.e. ``t`` is at or before the series' last observed step (later latents integrate out)."""
    observed = mask.any(-1)
    steps = torch.arange(observed.shape[1], device=mask.device)
    last = torch.where(observed, steps, -1).amax(-1, keepdim=True)
    return steps <= last


def complete_data_log_likelihood(model, z: Tensor, values: Tensor, mask: Tensor, context) -> Tensor:
    r"""``log p(y_{1:T}, z_{1:T})`` of latent trajectories under ``model``.

    Parameters
    ----------
    model : SequentialModel
    z : Tensor (M, B, T, Z)
        Trajectories (``M`` per series).
    values, mask : Tensor (B, T, D)
    context : Context
        ``model.prepare(values, mask, covariates)``.

    Returns
    -------
    Tensor (M, B)
        Differentiable in the model's parameters; latent terms after a series'
        last observed step are left out.
    """
    fast = getattr(model, "complete_log_likelihood", None)
    if fast is not None:
        value = fast(z, values, mask, context)
        if value is not None:
            return value
    M, B, T = z.shape[:3]
    counted = transition_mask(mask).to(z.dtype)  # (B, T)
    state = model.init_state(context, (M,))
    x_prev = None
    total = z.new_zeros(M, B)
    for t in range(T):
        context_t = context.at(t)
        state, latent = model.transition(state, x_prev, context_t)
        if latent is not None:
            total = total + latent.log_prob(z[:, :, t]) * counted[:, t]
            state = model.commit(state, z[:, :, t], context_t)
        x_t = values[:, t]
        total = total + observed_log_prob(model.emission(state, context_t), x_t, mask[:, t])
        x_prev = x_t.expand(M, *x_t.shape)
    return total


def gradient_m_step(model, trajectories: Tensor, log_weights: Tensor, values: Tensor, mask: Tensor,
                    covariates: Tensor | None = None, *, max_iter: int = 20):
    r"""Maximise the Monte Carlo ``Q`` over ``model``'s torch parameters by L-BFGS (in place).

    ``Q = sum_{m,b} W_{mb} log p(y_b, z^{(m)}_b)`` with ``W`` the normalised
    ``log_weights`` ``(M, B)`` (over ``m`` for each series), divided by the
    number of observed steps so that the step sizes do not depend on the
    data's length. The context is recomputed inside the objective, so
    parameters it depends on are learned too.

    Returns
    -------
    model
    """
    parameters = [p for p in model.parameters() if p.requires_grad]
    if not parameters:
        return model
    weights = torch.softmax(log_weights.detach(), 0)
    trajectories = trajectories.detach()
    scale = max(1, int(mask.any(-1).sum()))
    before = [p.detach().clone() for p in parameters]
    optimizer = torch.optim.LBFGS(parameters, lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad(set_to_none=True)
        context = model.prepare(values, mask, covariates)
        value = complete_data_log_likelihood(model, trajectories, values, mask, context)
        loss = -(weights * value).sum() / scale
        if not bool(torch.isfinite(loss)):
            # the line search tried a point outside the model's valid region: reject it by an infinite loss
            return loss.detach().new_tensor(math.inf)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    if not all(bool(torch.isfinite(p).all()) for p in parameters):
        with torch.no_grad():
            for p, old in zip(parameters, before):
                p.copy_(old)
        raise NumericalError("the particle-EM M-step made a parameter NaN or infinite; the previous values are kept.")
    return model


def linear_gaussian_m_step(params, trajectories: Tensor, log_weights: Tensor, values: Tensor, mask: Tensor,
                           learn="all"):
    r"""The closed-form (Shumway-Stoffer) M-step of the linear-Gaussian model on trajectories.

    The sufficient statistics of :mod:`tsgen.inference.em` (``E[x_t x_t']``,
    ``E[x_{t+1} x_t']``, ... given the data) are estimated by weighted
    averages over ``trajectories`` ``(M, B, T, S)`` with normalised
    ``log_weights`` ``(M, B)``; the M-step itself is :mod:`tsgen.inference.em`'s.

    Parameters
    ----------
    params : KalmanParams
        Current parameters (time-invariant, no batch dimension).
    learn : "all" or iterable of str
        pykalman names of the parameters to update (as ``em_vars``).

    Returns
    -------
    KalmanParams
    """
    from tsgen.inference.em import m_step_from_moments

    w = torch.softmax(log_weights.detach(), 0).to(trajectories.dtype)  # (M, B)
    z = trajectories.detach()
    m = torch.einsum("mb,mbti->bti", w, z)
    Exx = torch.einsum("mb,mbti,mbtj->btij", w, z, z)
    Ex1x0 = torch.einsum("mb,mbti,mbtj->btij", w, z[:, :, 1:], z[:, :, :-1])
    y = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device)).to(z.dtype)
    first_covariances = Exx[:, 0] - torch.einsum("bi,bj->bij", m[:, 0], m[:, 0])
    return m_step_from_moments(y, mask, params, m, Exx, Ex1x0, first_covariances, learn)


def _check_int(name: str, value, minimum: int) -> int:
    if not is_int(value) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}; got {value!r}.")
    return int(value)


def particle_em(
    model,
    values: Tensor,
    mask: Tensor,
    covariates: Tensor | None = None,
    *,
    n_iter: int = 20,
    n_particles: int = 500,
    n_trajectories: int = 100,
    smoother: str = "auto",
    m_step: str | Callable = "gradient",
    m_step_iter: int = 20,
    proposal: str = "bootstrap",
    resampling: str = "systematic",
    callback: Callable[[int, object, float], bool | None] | None = None,
) -> ParticleEMResult:
    r"""Fit a model by particle EM (see the module docstring).

    Parameters
    ----------
    model : SequentialModel
    values, mask : Tensor (B, T, D)
        Sequences sharing the parameters; ``values`` may be NaN where ``mask`` is False.
    covariates : Tensor (B, T, K) or None
    n_iter : int
        EM iterations (Monte Carlo EM has no reliable stopping rule on a noisy
        likelihood, so the number is fixed).
    n_particles : int
        Particles of the E-step's filter.
    n_trajectories : int
        FFBSi trajectories per series (the genealogy uses all particles).
    smoother : {"auto", "ffbsi", "genealogy"}
        "auto": FFBSi when ``model.markov_latent``, else the genealogy.
    m_step : "gradient" or callable
        "gradient": :func:`gradient_m_step` with ``m_step_iter`` L-BFGS
        iterations. A callable ``m_step(model, trajectories, log_weights,
        values, mask, covariates) -> model`` is a closed form; the model it
        returns is used in the next E-step.
    proposal, resampling : passed to the particle filter.
    callback : callable or None
        ``callback(iteration, model, log_evidence)`` after each M-step;
        returning True stops.

    Returns
    -------
    ParticleEMResult
    """
    from tsgen.inference.smc.filter import particle_filter

    n_iter = _check_int("n_iter", n_iter, 0)
    n_trajectories = _check_int("n_trajectories", n_trajectories, 1)
    m_step_iter = _check_int("m_step_iter", m_step_iter, 1)
    if not isinstance(smoother, str) or smoother not in SMOOTHERS:
        raise ValueError(f"`smoother` must be one of {list(SMOOTHERS)}; got {smoother!r}.")
    if not (m_step == "gradient" or callable(m_step)):
        raise ValueError(f"`m_step` must be 'gradient' or a callable; got {m_step!r}.")
    result = ParticleEMResult(model)
    for iteration in range(n_iter):
        model = result.model
        with torch.no_grad():
            context = model.prepare(values, mask, covariates)
            use_ffbsi = smoother == "ffbsi" or (smoother == "auto" and model.markov_latent)
            output = particle_filter(model, values, mask, covariates, n_particles=n_particles, proposal=proposal,
                                     resampling=resampling, keep="particles", context=context)
            trajectories, log_weights = _smoother_draws(model, output, values, mask, context, n_trajectories,
                                                        use_ffbsi)
        log_evidence = float(output.log_evidence.sum())
        if m_step == "gradient":
            model = gradient_m_step(model, trajectories, log_weights, values, mask, covariates, max_iter=m_step_iter)
        else:
            model = m_step(model, trajectories, log_weights, values, mask, covariates)
        result.model = model
        result.log_evidences.append(log_evidence)
        result.n_iter = iteration + 1
        if callback is not None and callback(iteration, model, log_evidence):
            break
    return result


def _smoother_draws(model, output, values, mask, context, n_trajectories: int, use_ffbsi: bool):
    """Trajectories ``(M, B, T, Z)`` and their log-weights ``(M, B)``."""
    from tsgen.inference.smc import smoothing

    if use_ffbsi:
        paths = smoothing.ffbsi(model, output, values, mask, context, n_trajectories)
        return paths, paths.new_zeros(paths.shape[:2])
    return smoothing.genealogy(output), output.log_weights

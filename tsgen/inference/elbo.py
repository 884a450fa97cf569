r"""Variational bounds on tensors: masked ELBO with analytic KL, IWAE, logmeanexp.

Pure functions: they take distributions and tensors, never a model, so every
latent sequence model (DMM, and later STORN/VRNN/SRNN) scores itself with the
same code.

For a state-space model with guide ``q`` the ELBO of one sequence is

.. math::

    \mathcal L = \sum_{t=1}^{T} \mathbb E_q\big[\log g(x_t | z_t)\big]
               - \mathbb E_q\big[\mathrm{KL}(q(z_t | \cdot) \,\|\, f(z_t | z_{t-1}))\big]

with the KL in closed form given the sampled ``z_{t-1}``. The importance
weighted bound (Burda et al., 2016) with ``K`` guide draws is

.. math::

    \mathcal L_K = \log \frac1K \sum_{k=1}^K
        \frac{p(x_{1:T}, z^{(k)}_{1:T})}{q(z^{(k)}_{1:T} | x)},
    \qquad \mathcal L \le \mathcal L_K \le \log p(x_{1:T}) \text{ in expectation.}

Masks: ``mask`` ``(..., T, D)`` marks observed values; a time step counts
(its KL and its latent) while it is at or before the last observed step of
its sequence. Trailing unobserved steps, padding included, integrate out of
``p(x)`` exactly, so they contribute exactly zero here. The emission term is
masked per value by :func:`tsgen.components.heads.masked_log_prob`.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import Normal

__all__ = [
    "gaussian_kl",
    "iwae_bound",
    "logmeanexp",
    "per_step_iwae",
    "prefix_increments",
    "sequence_elbo",
    "valid_steps",
]


def logmeanexp(x: Tensor, dim: int = 0) -> Tensor:
    """``log(mean(exp(x), dim))`` computed stably."""
    return torch.logsumexp(x, dim=dim) - math.log(x.shape[dim])


def valid_steps(mask: Tensor) -> Tensor:
    """Steps at or before each sequence's last observed value.

    ``mask`` ``(..., T, D)`` bool -> ``(..., T)`` bool (a prefix of True).
    """
    if mask.dtype != torch.bool:
        raise TypeError(f"`mask` must be a bool tensor; got dtype {mask.dtype}.")
    seen_later = mask.any(-1).flip(-1).to(torch.uint8).cummax(-1).values.flip(-1)
    return seen_later.bool()


def gaussian_kl(q_loc: Tensor, q_scale: Tensor, p_loc: Tensor, p_scale: Tensor) -> Tensor:
    r"""``KL(N(q_loc, q_scale^2) || N(p_loc, p_scale^2))`` summed over the last dim.

    .. math:: \sum_d \log\frac{\sigma_p}{\sigma_q} + \frac{\sigma_q^2 + (\mu_q - \mu_p)^2}{2\sigma_p^2} - \frac12
    """
    return torch.distributions.kl_divergence(Normal(q_loc, q_scale), Normal(p_loc, p_scale)).sum(-1)


def sequence_elbo(log_lik: Tensor, kl: Tensor, step_mask: Tensor, kl_weight: float = 1.0) -> Tensor:
    """Per-sequence ELBO ``sum_t step_mask * (log_lik - kl_weight * kl)``.

    ``log_lik``/``kl``/``step_mask`` ``(..., T)`` -> ``(...)``. ``kl`` may be the
    analytic KL or a one-sample ``log q - log p``. ``kl_weight`` < 1 is the
    annealed objective used early in training (not a bound).
    """
    zero = torch.zeros((), dtype=log_lik.dtype, device=log_lik.device)
    return torch.where(step_mask, log_lik - kl_weight * kl, zero).sum(-1)


def iwae_bound(log_weights: Tensor, dim: int = 0) -> Tensor:
    """``log (1/K) sum_k exp(log_weights_k)`` over the sample dimension ``dim``.

    ``log_weights = log p(x, z_k) - log q(z_k | x)`` for ``K`` guide draws.
    """
    return logmeanexp(log_weights, dim=dim)


def per_step_iwae(step_log_weights: Tensor, observed: Tensor | None = None) -> Tensor:
    r"""Per-step decomposition of the IWAE estimate, summing to :func:`iwae_bound`.

    ``step_log_weights`` ``(K, ..., T)`` holds each step's share
    ``log g(x_t|z_t) + log f(z_t|z_{t-1}) - log q(z_t|\cdot)`` of the K draws.
    The value at an observed step t is

    .. math:: \hat\ell_t = \log \tfrac1K \sum_k e^{w^k_{1:t}} - \log \tfrac1K \sum_k e^{w^k_{1:t'}},
        \qquad w^k_{1:t} = \sum_{s \le t} w^k_s,

    with ``t'`` the previous observed step: the increment of the prefix
    estimates. Each prefix is itself an importance-sampling estimate of
    ``p(x_{1:t})`` (the guide's marginal over ``z_{1:t}`` is a proper
    proposal), so ``\hat\ell_t`` estimates ``log p(x_t | x_{<t})`` and the sum
    telescopes to the full IWAE value. Steps where ``observed`` ``(..., T)``
    is False (nothing seen: their exact value is ``log 1 = 0``) get exactly
    zero; their latent moves are carried into the next observed step.
    """
    return prefix_increments(logmeanexp(step_log_weights.cumsum(-1), dim=0), observed)


def rerun_earlier_prefixes(totals: Tensor, mask: Tensor, max_rows: int, score) -> Tensor:
    """Overwrite ``totals`` ``(S, B, T)`` at every observed step ``t`` before each sequence's last
    observed step with the bound of the prefix ``x_{1:t}`` computed from that prefix alone.

    For guides that read ahead, this keeps each prefix bound causal. Prefixes run in groups of at
    most ``max_rows`` latent rows, each group padded to its longest prefix (shorter ones masked):
    ``score(rows, length, prefix_mask)`` returns the ``(S, len(rows))`` totals of the sequences
    ``rows`` cut to ``length`` steps with ``prefix_mask`` ``(len(rows), length, D)``. The last
    observed step keeps the whole-sequence value, so totals do not depend on this pass.
    """
    observed = mask.any(-1)
    steps = torch.arange(mask.shape[1], device=mask.device)
    last = torch.where(observed, steps, torch.full_like(steps, -1)).max(-1).values
    rows, ends = (observed & (steps < last[:, None])).nonzero(as_tuple=True)
    group = max(1, max_rows // max(1, totals.shape[0] * mask.shape[1]))
    for start in range(0, len(rows), group):
        b, t = rows[start:start + group], ends[start:start + group]
        length = int(t.max()) + 1
        prefix_mask = mask[b, :length] & (steps[:length] <= t[:, None])[..., None]
        totals[:, b, t] = score(b, length, prefix_mask)
    return totals


def prefix_increments(prefix: Tensor, observed: Tensor | None = None) -> Tensor:
    r"""Per-step values ``L_t - L_{t'}`` from prefix estimates ``L_t`` of ``log p(x_{1:t})`` ``(..., T)``.

    ``t'`` is the previous step where ``observed`` ``(..., T)`` is True
    (``L = 0`` before the first): unobserved steps read exactly 0 and their
    entries of ``prefix`` are never used, and the values sum to ``L`` at
    the last observed step. Without ``observed`` every step counts.
    """
    if observed is not None:
        steps = torch.arange(prefix.shape[-1], device=prefix.device)
        last_seen = torch.where(observed, steps, torch.full_like(steps, -1)).cummax(-1).values
        zero = torch.zeros((), dtype=prefix.dtype, device=prefix.device)
        prefix = torch.where(last_seen >= 0, prefix.gather(-1, last_seen.clamp_min(0)), zero)
    return torch.diff(prefix, dim=-1, prepend=torch.zeros_like(prefix[..., :1]))

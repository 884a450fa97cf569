r"""ABC-SMC: approximate Bayesian computation by sequential Monte Carlo over a few static parameters.

The adaptive sampler of Del Moral, Doucet & Jasra (2012) with the
Gaussian perturbation kernel of Toni et al. (2009) / Beaumont et al.
(2009). Its target at tolerance ``eps`` is the ABC posterior::

    pi_eps(theta) ∝ p(theta) P(d(x_sim, x_obs) <= eps | theta)

estimated with ``M`` simulations per particle by the fraction
``A_i(eps) / M`` of them within ``eps``. One generation:

1. **tolerance**: ``eps_g`` is the ``quantile`` of the distances of the
   living particles' simulations, so the tolerances decrease;
2. **importance weights**: ``W_i ∝ W_i A_i(eps_g) / A_i(eps_{g-1})``;
3. **resampling** (systematic) when the effective sample size falls below
   ``ess_threshold * N``;
4. **move**: each living particle proposes ``u' = u + N(0, kernel_scale *
   Cov_W(u))`` on the unconstrained scale ``u`` (``theta = T(u)``,
   ``T = biject_to(prior.support)``; twice the weighted covariance is
   Beaumont's choice), simulates ``M`` times and accepts with probability
   ``min(1, A'(eps_g) p(u') / (A(eps_g) p(u)))``, a Metropolis-Hastings step
   that leaves ``pi_eps_g`` invariant.

It stops after ``n_generations``, when ``eps`` reaches ``min_tolerance``,
or when the move's acceptance rate falls below ``min_acceptance`` (smaller
tolerances would cost more simulations than they are worth). Everything is
vectorised over particles: the simulator receives all proposals at once.

When it is valid: the result approximates ``p(theta | x_obs)`` only as
``eps -> 0`` and when the distance works on sufficient statistics (or
distributions, as the MMD between window samples does); otherwise it is
the posterior given the summaries, wider than the exact one. Keep it to a
few parameters: the acceptance rate at a given accuracy falls quickly with
their number.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Distribution, biject_to

from tsgen._validation import is_int
from tsgen.inference.smc.resampling import ess as _ess
from tsgen.inference.smc.resampling import normalise, resampler

__all__ = ["ABCResult", "abc_smc"]


@dataclass
class ABCResult:
    """Weighted draws of an ABC-SMC run at its final tolerance."""

    samples: Tensor  # (N, P) parameters on their own (constrained) scale
    log_weights: Tensor  # (N,) normalised; -inf for particles outside the final tolerance
    names: list[str]
    tolerances: list[float]  # eps per generation (the first is +inf: the prior)
    ess: list[float]  # effective sample size after each generation's reweighting
    acceptance_rates: list[float]  # of each generation's move
    n_simulations: int  # simulator calls (rows) in all

    @property
    def weights(self) -> Tensor:
        return self.log_weights.exp()

    def mean(self) -> Tensor:
        """Posterior mean ``(P,)``."""
        return (self.weights.unsqueeze(-1) * self.samples).sum(0)

    def std(self) -> Tensor:
        """Posterior standard deviation ``(P,)``."""
        centred = self.samples - self.mean()
        return (self.weights.unsqueeze(-1) * centred.square()).sum(0).sqrt()

    def resample(self, n: int | None = None) -> Tensor:
        """``n`` (default N) equally weighted draws ``(n, P)`` (systematic resampling for N, else multinomial)."""
        if n is None or n == self.samples.shape[0]:
            return self.samples[resampler("systematic")(self.log_weights.unsqueeze(1)).squeeze(1)]
        return self.samples[torch.multinomial(self.weights, n, replacement=True)]


class _Priors:
    """Vectorised coordinates: ``theta = T(u)`` per parameter and the log prior density of ``u``."""

    def __init__(self, priors):
        if not isinstance(priors, Mapping) or not priors:
            raise TypeError(f"`priors` must be a non-empty mapping name -> univariate Distribution; got {priors!r:.80}.")
        self.names = [str(name) for name in priors]
        self.dists = list(priors.values())
        for name, prior in zip(self.names, self.dists):
            if not isinstance(prior, Distribution):
                raise TypeError(f"`priors` must hold torch/Pyro distributions; {name} is a {type(prior).__name__}.")
            if prior.batch_shape != () or prior.event_shape != ():
                raise ValueError(f"`priors` must hold univariate distributions; {name} has batch shape "
                                 f"{tuple(prior.batch_shape)} and event shape {tuple(prior.event_shape)}.")
        self.transforms = [biject_to(prior.support) for prior in self.dists]

    def sample(self, n: int, dtype: torch.dtype) -> Tensor:
        """Prior draws of ``u`` ``(n, P)``."""
        theta = torch.stack([prior.sample((n,)).to(dtype) for prior in self.dists], -1)
        return torch.stack([t.inv(theta[:, i]) for i, t in enumerate(self.transforms)], -1)

    def __call__(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """``(theta (n, P), log density of u (n,))``; -inf where rounding leaves the support."""
        theta = torch.stack([t(u[:, i]) for i, t in enumerate(self.transforms)], -1)
        total = torch.zeros(u.shape[0], dtype=u.dtype, device=u.device)
        for i, (prior, transform) in enumerate(zip(self.dists, self.transforms)):
            inside = prior.support.check(theta[:, i])
            # validated distributions refuse values outside the support: score a point inside instead
            safe = torch.where(inside, theta[:, i], transform(torch.zeros_like(u[:, i])))
            density = prior.log_prob(safe).to(u.dtype) + transform.log_abs_det_jacobian(u[:, i], theta[:, i])
            total = total + torch.where(inside, density, torch.full_like(density, -math.inf))
        return theta, total


def _count(name: str, value, minimum: int) -> int:
    if not is_int(value) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}; got {value!r}.")
    return int(value)


def _fraction(name: str, value, low: float, high: float, closed_high: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and low < value and (
        value <= high if closed_high else value < high)
    if not ok:
        raise ValueError(f"`{name}` must be a number in ({low}, {high}{']' if closed_high else ')'}; got {value!r}.")
    return float(value)


def abc_smc(
    simulate: Callable[[Tensor], object],
    distance: Callable[[object], Tensor],
    priors: Mapping[str, Distribution],
    *,
    n_particles: int = 500,
    n_simulations: int = 1,
    quantile: float = 0.5,
    n_generations: int = 15,
    min_tolerance: float = 0.0,
    min_acceptance: float = 0.02,
    ess_threshold: float = 0.5,
    kernel_scale: float = 2.0,
    n_moves: int = 1,
    dtype: torch.dtype = torch.float64,
) -> ABCResult:
    """ABC-SMC over static parameters (module docstring).

    Parameters
    ----------
    simulate : callable
        ``theta`` ``(K, P)`` (constrained, columns in the order of ``priors``)
        -> one simulated data set per row, in any form ``distance`` reads.
    distance : callable
        Simulated data of ``K`` rows -> distances ``(K,)`` to the observed data
        (NaN counts as infinitely far).
    priors : mapping name -> Distribution
        One univariate torch/Pyro prior per parameter.
    n_particles : int >= 2
    n_simulations : int >= 1
        Simulations per particle (``M``); more smooth the ABC likelihood
        estimate and raise the acceptance at small tolerances.
    quantile : float in (0, 1)
        Share of the living simulations kept by each new tolerance.
    n_generations : int >= 1
    min_tolerance : float >= 0
    min_acceptance : float in [0, 1)
    ess_threshold : float in (0, 1]
    kernel_scale : float > 0
        Multiplier of the weighted covariance in the move's Gaussian kernel.
    n_moves : int >= 1
        Move steps per generation (more keep resampled duplicates apart when
        the acceptance rate is low, at ``N M`` simulations each).
    dtype : torch.dtype

    Returns
    -------
    ABCResult
    """
    if not callable(simulate) or not callable(distance):
        raise TypeError("`simulate` and `distance` must be callables (theta (K, P) -> data; data -> (K,)).")
    coordinates = _Priors(priors)
    N = _count("n_particles", n_particles, 2)
    M = _count("n_simulations", n_simulations, 1)
    n_generations = _count("n_generations", n_generations, 1)
    n_moves = _count("n_moves", n_moves, 1)
    quantile = _fraction("quantile", quantile, 0.0, 1.0)
    ess_threshold = _fraction("ess_threshold", ess_threshold, 0.0, 1.0, closed_high=True)
    kernel_scale = _fraction("kernel_scale", kernel_scale, 0.0, math.inf)
    if isinstance(min_tolerance, bool) or not isinstance(min_tolerance, (int, float)) or not min_tolerance >= 0:
        raise ValueError(f"`min_tolerance` must be a number >= 0; got {min_tolerance!r}.")
    if isinstance(min_acceptance, bool) or not isinstance(min_acceptance, (int, float)) or not 0 <= min_acceptance < 1:
        raise ValueError(f"`min_acceptance` must be a number in [0, 1); got {min_acceptance!r}.")
    P = len(coordinates.names)
    calls = 0

    def distances(theta: Tensor) -> Tensor:
        nonlocal calls
        rows = theta.repeat_interleave(M, 0)
        found = distance(simulate(rows))
        if not isinstance(found, Tensor) or found.shape != (rows.shape[0],):
            raise ValueError(f"`distance` must return a tensor ({rows.shape[0]},) for {rows.shape[0]} simulations; "
                             f"got {tuple(found.shape) if isinstance(found, Tensor) else type(found).__name__}.")
        calls += rows.shape[0]
        found = found.detach().to(dtype).nan_to_num(nan=math.inf)
        return found.reshape(-1, M)

    with torch.no_grad():
        u = coordinates.sample(N, dtype)
        theta, log_prior = coordinates(u)
        d = distances(theta)  # (N, M)
        log_w = torch.full((N,), -math.log(N), dtype=dtype)
        eps = math.inf
        tolerances, ess_history, acceptance = [eps], [float(N)], []
        for _ in range(n_generations):
            alive = torch.isfinite(log_w)
            new_eps = float(torch.quantile(d[alive].flatten().clamp_max(torch.finfo(dtype).max), quantile))
            new_eps = max(new_eps, float(min_tolerance))
            if not new_eps < eps:
                break  # the distances stopped falling: no smaller tolerance is reachable
            inside_old = (d <= eps).sum(-1).to(dtype)
            inside_new = (d <= new_eps).sum(-1).to(dtype)
            log_w = log_w + torch.where(inside_new > 0, (inside_new / inside_old.clamp_min(1)).log(),
                                        torch.full_like(inside_new, -math.inf))
            log_w, _ = normalise(log_w)
            eps = new_eps
            tolerances.append(eps)
            current_ess = float(_ess(log_w.unsqueeze(1)))
            ess_history.append(current_ess)
            if current_ess < ess_threshold * N:
                index = resampler("systematic")(log_w.unsqueeze(1)).squeeze(1)
                u, theta, log_prior, d = u[index], theta[index], log_prior[index], d[index]
                log_w = torch.full((N,), -math.log(N), dtype=dtype)
            # the move: a Gaussian random walk whose covariance is the population's, scaled
            alive = torch.isfinite(log_w)
            weights = log_w.exp()
            mean = (weights.unsqueeze(-1) * u).sum(0)
            centred = u - mean
            covariance = (weights.unsqueeze(-1) * centred).T @ centred
            covariance = kernel_scale * covariance + 1e-10 * torch.eye(P, dtype=dtype)
            chol = torch.linalg.cholesky(covariance)
            moved = 0
            for _ in range(n_moves):
                u, theta, log_prior, d, accepted = _move(u, theta, log_prior, d, alive, chol, eps, coordinates, distances)
                moved += accepted
            rate = moved / (n_moves * max(1, int(alive.sum())))
            acceptance.append(rate)
            if eps <= min_tolerance or rate < min_acceptance:
                break
    return ABCResult(samples=theta, log_weights=log_w, names=coordinates.names, tolerances=tolerances,
                     ess=ess_history, acceptance_rates=acceptance, n_simulations=calls)


def _move(u, theta, log_prior, d, alive, chol, eps, coordinates, distances):
    """One Metropolis-Hastings step of every living particle under the ABC posterior at ``eps``."""
    N, P = u.shape
    step = torch.randn(N, P, dtype=u.dtype) @ chol.T
    u_new = u + step
    theta_new, log_prior_new = coordinates(u_new)
    d_new = torch.full_like(d, math.inf)
    possible = alive & torch.isfinite(log_prior_new)
    if bool(possible.any()):
        d_new[possible] = distances(theta_new[possible])
    inside = (d <= eps).sum(-1).to(u.dtype)
    inside_new = (d_new <= eps).sum(-1).to(u.dtype)
    log_ratio = inside_new.log() - inside.log() + log_prior_new - log_prior
    accept = possible & (torch.rand(N, dtype=u.dtype).log() < log_ratio)
    u = torch.where(accept.unsqueeze(-1), u_new, u)
    theta = torch.where(accept.unsqueeze(-1), theta_new, theta)
    log_prior = torch.where(accept, log_prior_new, log_prior)
    d = torch.where(accept.unsqueeze(-1), d_new, d)
    return u, theta, log_prior, d, int(accept.sum())

r"""Particle Markov chain Monte Carlo (Andrieu, Doucet & Holenstein 2010).

- :func:`pmmh`: particle marginal Metropolis-Hastings for a handful of
  static parameters ``theta`` with torch (or Pyro) priors. The particle
  filter's unbiased estimate ``p_hat(x | theta)`` replaces the likelihood in
  a Metropolis-Hastings ratio, which leaves ``p(theta | x)`` invariant
  exactly; the chain moves by a Gaussian random walk on ``u``, with
  ``theta_i = T_i(u_i)`` and ``T_i = biject_to(prior_i.support)``, so the
  target in ``u`` carries the Jacobian ``log |T_i'(u_i)|``. With
  ``adapt=True`` the walk's covariance is learned during warm-up
  (``2.38^2 / P`` times the warm-up draws' covariance, Haario, Saksman &
  Tamminen 2001) and frozen afterwards, so the kept draws come from one
  fixed Markov kernel.
- :func:`pgas`: particle Gibbs with ancestor sampling (Lindsten, Jordan &
  Schon 2014). A conditional SMC sweep keeps the previous draw (the
  reference) as particle ``N`` and redraws its ancestor at every step from
  ``w_{t-1}^i f(z*_t | z_{t-1}^i)``, which breaks the reference's path
  into pieces and lets the sampler mix with few particles; the new draw is
  one final particle's genealogy. Needs a Markov latent.
- :class:`PathStore`: each sequence's last draw kept between visits, so
  particle Gibbs inside stochastic gradient training runs one persistent
  chain per sequence (Zheng et al. 2017, Algorithm 1) instead of restarting
  from a filter's draw at every minibatch.

Randomness comes from torch's global generator (callers fork it with
:func:`tsgen.training.seeded_from`).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Distribution, biject_to

from tsgen.exceptions import NumericalError
from tsgen.inference.smc.filter import particle_filter
from tsgen.inference.smc.resampling import normalise, resampler
from tsgen.inference.smc.smoothing import (
    _check_count,
    _check_observations,
    _require_markov,
    _sample_index,
    trace_genealogy,
)
from tsgen.protocol import Context, SequentialModel, index_state, observed_log_prob

__all__ = ["PGASResult", "PMMHResult", "PathStore", "pgas", "pmmh"]


# ------------------------------------------------------------------ PMMH
@dataclass
class PMMHResult:
    """Draws of a particle marginal Metropolis-Hastings chain (warm-up dropped)."""

    samples: Tensor  # (S, P) parameter draws on their own (constrained) scale
    log_likelihood: Tensor  # (S,) the estimate log p_hat(x | theta) each draw carries
    acceptance_rate: float  # over the kept iterations
    names: list[str]  # one per parameter
    proposal_covariance: Tensor  # (P, P) of the random walk on the unconstrained scale, after warm-up


class _Parameterisation:
    """The chain's coordinates: ``u`` unconstrained, ``theta = constrain(u)`` handed to the model, and
    ``log_density(u)`` the prior density of ``u`` (the prior of ``theta`` times the Jacobian)."""

    def __init__(self, priors, initial, dtype: torch.dtype):
        self.dtype = dtype
        if callable(priors) and not isinstance(priors, Distribution):
            # a prior density over raw (already unconstrained) coordinates, its Jacobian included by the caller
            if initial is None:
                raise ValueError("`initial` must be given when `priors` is a log-density callable; got None.")
            self.prior_fn, self.dists, self.transforms = priors, None, None
            start = torch.as_tensor(initial, dtype=dtype).detach().clone()
            if start.dim() != 1 or start.numel() == 0:
                raise ValueError(f"`initial` must be a non-empty vector (P,); got shape {tuple(start.shape)}.")
            self.names = [f"theta[{i}]" for i in range(start.numel())]
            self.start = start
            return
        if isinstance(priors, Mapping):
            names, dists = [str(name) for name in priors], list(priors.values())
        elif isinstance(priors, Sequence) and not isinstance(priors, str):
            dists = list(priors)
            names = [f"theta[{i}]" for i in range(len(dists))]
        else:
            raise TypeError(
                f"`priors` must be a mapping or a sequence of distributions, or a log-density callable; "
                f"got {type(priors).__name__}."
            )
        if not dists:
            raise ValueError("`priors` must name at least one parameter; got none.")
        for name, prior in zip(names, dists):
            if not isinstance(prior, Distribution):
                raise TypeError(f"`priors` must hold torch distributions; {name} is a {type(prior).__name__}.")
            if prior.batch_shape != () or prior.event_shape != ():
                raise ValueError(
                    f"`priors` must hold one univariate distribution per parameter; {name} has batch shape "
                    f"{tuple(prior.batch_shape)} and event shape {tuple(prior.event_shape)}."
                )
        self.prior_fn, self.names, self.dists = None, names, dists
        self.transforms = [biject_to(prior.support) for prior in dists]
        if initial is None:
            theta0 = torch.stack([self._default(prior, transform) for prior, transform in zip(dists, self.transforms)])
        else:
            theta0 = torch.as_tensor(initial, dtype=dtype)
            if theta0.shape != (len(dists),):
                raise ValueError(f"`initial` must be a tensor ({len(dists)},); got shape {tuple(theta0.shape)}.")
            for name, prior, value in zip(names, dists, theta0):
                if not bool(prior.support.check(value)):
                    raise ValueError(f"`initial` must lie in the priors' supports; {name} = {float(value)} does not.")
        self.start = torch.stack([transform.inv(theta0[i]) for i, transform in enumerate(self.transforms)])

    def _default(self, prior: Distribution, transform) -> Tensor:
        """The prior mean where it is finite and inside the support, else the image of 0."""
        try:
            mean = prior.mean.to(self.dtype)
            if bool(torch.isfinite(mean)) and bool(prior.support.check(mean)):
                return mean
        except NotImplementedError:
            pass
        return transform(torch.zeros((), dtype=self.dtype))

    @property
    def size(self) -> int:
        return self.start.numel()

    def __call__(self, u: Tensor) -> tuple[Tensor, float]:
        """``(theta, log prior density of u)``; -inf outside the support."""
        if self.prior_fn is not None:
            return u, float(self.prior_fn(u.clone()))
        theta = torch.stack([transform(u[i]) for i, transform in enumerate(self.transforms)])
        total = 0.0
        for i, (prior, transform) in enumerate(zip(self.dists, self.transforms)):
            if not bool(prior.support.check(theta[i])):  # rounding at the edge of the support
                return theta, -math.inf
            total += float(prior.log_prob(theta[i])) + float(transform.log_abs_det_jacobian(u[i], theta[i]))
        return theta, total


def _proposal_covariance(scale, size: int, dtype: torch.dtype) -> Tensor:
    scale = torch.as_tensor(scale, dtype=dtype)
    if scale.dim() == 0:
        scale = scale.expand(size)
    if scale.dim() == 1 and scale.shape[0] == size and bool((scale > 0).all()):
        return torch.diag(scale**2)
    if scale.shape == (size, size) and bool(torch.linalg.eigvalsh(scale).min() > 0):
        return scale.clone()
    raise ValueError(
        f"`proposal_scale` must be a positive float, {size} positive standard deviations or a positive "
        f"definite ({size}, {size}) covariance; got shape {tuple(scale.shape)}."
    )


def pmmh(
    build_model: Callable[[Tensor], SequentialModel],
    priors: Mapping[str, Distribution] | Sequence[Distribution] | Callable[[Tensor], Tensor],
    values: Tensor,
    mask: Tensor | None,
    covariates: Tensor | None = None,
    *,
    n_samples: int = 1000,
    n_warmup: int = 0,
    n_particles: int = 100,
    proposal_scale: float | Tensor = 0.1,
    adapt: bool = False,
    initial: Tensor | None = None,
    filter_options: Mapping | None = None,
) -> PMMHResult:
    """Particle marginal Metropolis-Hastings over static parameters.

    Parameters
    ----------
    build_model : callable
        ``theta`` ``(P,)`` (constrained, in the order of ``priors``) -> a
        :class:`~tsgen.protocol.SequentialModel`. It may write ``theta``
        into a model it owns and return it (runs are sequential).
    priors : mapping name -> Distribution, a sequence of them, or a callable
        One univariate torch/Pyro distribution per parameter; its support
        gives the transform to the unconstrained scale. Or a callable
        ``theta (P,) -> log prior density`` over coordinates that are
        already unconstrained (any Jacobian included), with ``initial``.
    values, mask : Tensor ``(B, T, D)``
        Observations (mask bool, None: ``~isnan(values)``); the series share
        ``theta`` and their log-evidences add up.
    covariates : Tensor ``(B, T, K)``, optional
    n_samples, n_warmup : int
        Kept iterations and warm-up iterations before them.
    n_particles : int
        Particles of each filter run (the log-evidence estimate's standard
        deviation near 1 to 1.5 is the usual target, Doucet et al. 2015).
    proposal_scale : float, Tensor ``(P,)`` or ``(P, P)``
        Standard deviations (or covariance) of the random walk on the
        unconstrained scale.
    adapt : bool
        Learn the walk's covariance from the warm-up draws (needs ``n_warmup``).
    initial : Tensor ``(P,)``, optional
        Starting ``theta``; by default each prior's mean where it is finite
        and inside the support, else the transform of 0.
    filter_options : mapping, optional
        Passed to :func:`~tsgen.inference.smc.filter.particle_filter`
        (``proposal``, ``resampling``, ``ess_threshold``).

    Returns
    -------
    PMMHResult
    """
    dtype = values.dtype if isinstance(values, Tensor) and values.is_floating_point() else torch.get_default_dtype()
    coordinates = _Parameterisation(priors, initial, dtype)
    size = coordinates.size
    n_samples = _check_count(n_samples, "n_samples")
    n_warmup = _check_count(n_warmup, "n_warmup", minimum=0)
    if adapt and n_warmup < 2 * size + 2:
        raise ValueError(f"`adapt=True` needs `n_warmup` >= {2 * size + 2} draws to learn from; got {n_warmup}.")
    options = dict(filter_options or {})
    reserved = {"n_particles", "keep", "reparameterized"} & set(options)
    if reserved:
        raise ValueError(f"`filter_options` must not set {sorted(reserved)}; pmmh sets them.")
    covariance = _proposal_covariance(proposal_scale, size, dtype)

    def log_likelihood(theta: Tensor) -> float:
        model = build_model(theta.clone())
        try:
            out = particle_filter(model, values, mask, covariates, n_particles=n_particles, **options)
        except NumericalError:  # every particle impossible: the estimate is 0
            return -math.inf
        found = float(out.log_evidence.sum())
        return found if math.isfinite(found) else -math.inf

    with torch.no_grad():
        u = coordinates.start
        theta, prior_u = coordinates(u)
        loglik = log_likelihood(theta) if math.isfinite(prior_u) else -math.inf
        if not math.isfinite(prior_u + loglik):
            raise ValueError(
                f"`initial` must have a finite prior density and likelihood estimate; got log prior {prior_u} "
                f"and log-likelihood {loglik} at theta = {theta.tolist()}."
            )
        chol = torch.linalg.cholesky(covariance)
        warmup_u, kept, logliks, accepted = [], [], [], 0
        for step in range(n_warmup + n_samples):
            proposed = u + chol @ torch.randn(size, dtype=dtype)
            theta_new, prior_new = coordinates(proposed)
            loglik_new = log_likelihood(theta_new) if math.isfinite(prior_new) else -math.inf
            log_ratio = prior_new + loglik_new - prior_u - loglik
            move = math.isfinite(log_ratio) and math.log(float(torch.rand(()))) < log_ratio
            if move:
                u, theta, prior_u, loglik = proposed, theta_new, prior_new, loglik_new
            if step < n_warmup:
                warmup_u.append(u)
                if adapt and len(warmup_u) >= 2 * size + 2 and (len(warmup_u) % 20 == 0 or step == n_warmup - 1):
                    learned = torch.cov(torch.stack(warmup_u).T).reshape(size, size)
                    # a small ridge keeps the walk moving while the warm-up draws are still few or stuck
                    candidate = 2.38**2 / size * (learned + 1e-8 * torch.eye(size, dtype=dtype))
                    if bool(torch.linalg.eigvalsh(candidate).min() > 0):
                        chol = torch.linalg.cholesky(candidate)
            else:
                accepted += int(move)
                kept.append(theta)
                logliks.append(loglik)
    return PMMHResult(
        samples=torch.stack(kept),
        log_likelihood=torch.tensor(logliks, dtype=dtype),
        acceptance_rate=accepted / n_samples,
        names=coordinates.names,
        proposal_covariance=chol @ chol.T,
    )


# ------------------------------------------------------------------ PGAS
@dataclass
class PGASResult:
    """Latent-path draws of a particle Gibbs sampler with ancestor sampling (warm-up dropped)."""

    trajectories: Tensor  # (S, B, T, Z)
    update_rate: Tensor  # (B, T): share of sweeps in which z_t changed (near 0 at some t: more particles)


def _conditional_sweep(model, x: Tensor, mask: Tensor, context: Context, reference: Tensor, n_particles: int,
                       guided: bool, draw) -> Tensor:
    """One conditional SMC sweep with ancestor sampling; returns the new reference ``(T, B, Z)``.

    The reference occupies the last particle slot throughout.
    """
    steps, n_series = reference.shape[:2]
    last = n_particles - 1
    # observations at the particles' full shape, as transitions, proposals and observed_log_prob expect them
    shape = (n_particles, n_series, x.shape[-1])
    state = model.init_state(context, (n_particles,))
    zs, ancestors, log_weights = [], [], None
    for t in range(steps):
        context_t = context.at(t)
        x_prev = None if t == 0 else x[:, t - 1].expand(shape)
        x_t, mask_t = x[:, t].expand(shape), mask[:, t].expand(shape)
        if t == 0:
            ancestors.append(torch.arange(n_particles, device=x.device).unsqueeze(1).expand(n_particles, n_series))
        else:
            # the reference's ancestor, from w_{t-1}^i f(z*_t | z_{t-1}^i) over all particles
            _, from_all = model.transition(state, x_prev, context_t)
            reference_ancestor = _sample_index(log_weights + from_all.log_prob(reference[t]), dim=0)  # (B,)
            index = draw(log_weights).clone()
            index[last] = reference_ancestor
            ancestors.append(index)
            state = index_state(state, index)
        state, prior = model.transition(state, x_prev, context_t)
        proposal = model.proposal(state, x_t, mask_t, context_t) if guided else None
        if guided and proposal is None:
            raise ValueError(f"`proposal='guided'` needs a model proposal; {type(model).__name__}.proposal returned None.")
        z = (proposal if guided else prior).sample()
        z = torch.cat([z[:last], reference[t].unsqueeze(0)])
        state = model.commit(state, z, context_t)
        log_weights = observed_log_prob(model.emission(state, context_t), x_t, mask_t)
        if guided:
            log_weights = log_weights + prior.log_prob(z) - proposal.log_prob(z)
        dead = ~torch.isfinite(log_weights.amax(0))
        if bool(dead.any()):
            raise NumericalError(
                f"conditional SMC lost every particle at step {t + 1} of series {int(dead.nonzero()[0, 0])} "
                f"(all log-weights -inf or NaN)."
            )
        log_weights, _ = normalise(log_weights)
        zs.append(z)
    final = _sample_index(log_weights, dim=0).unsqueeze(0)  # (1, B)
    return trace_genealogy(torch.stack(zs), torch.stack(ancestors), final)[0].transpose(0, 1)


def pgas(
    model: SequentialModel,
    values: Tensor,
    mask: Tensor | None,
    covariates: Tensor | None = None,
    *,
    n_samples: int = 100,
    n_warmup: int = 10,
    n_particles: int = 50,
    proposal: str = "bootstrap",
    context: Context | None = None,
    initial: Tensor | None = None,
) -> PGASResult:
    """Particle Gibbs with ancestor sampling: draws of ``z_{1:T} | x_{1:T}`` for fixed parameters.

    Parameters
    ----------
    model : SequentialModel
        With a Markov latent (``markov_latent = True``); others are refused.
    values, mask : Tensor ``(B, T, D)``
        Observations (mask bool, None: ``~isnan(values)``); each series runs its own chain.
    covariates : Tensor ``(B, T, K)``, optional
    n_samples, n_warmup : int
        Kept sweeps and warm-up sweeps before them.
    n_particles : int >= 2
        Particles per sweep, the reference included.
    proposal : {"bootstrap", "guided"}
        Propose from the transition or from ``model.proposal``.
    context : Context, optional
        A precomputed ``model.prepare(values, mask, covariates)``.
    initial : Tensor ``(B, T, Z)``, optional
        The first reference; by default one path of a particle filter's genealogy.

    Returns
    -------
    PGASResult
        ``trajectories`` ``(S, B, T, Z)`` and the per-step update rates.

    Notes
    -----
    Resampling is multinomial: the conditional sweep is invariant only if
    the other ``N - 1`` ancestors are drawn independently of the reference's.
    """
    _require_markov(model, "pgas")
    n_samples = _check_count(n_samples, "n_samples")
    n_warmup = _check_count(n_warmup, "n_warmup", minimum=0)
    n_particles = _check_count(n_particles, "n_particles", minimum=2)
    if proposal not in ("bootstrap", "guided"):
        raise ValueError(f"`proposal` must be one of ['bootstrap', 'guided']; got {proposal!r}.")
    x, mask = _check_observations(values, mask)
    n_series, steps = x.shape[:2]
    if context is None:
        context = model.prepare(values, mask, covariates)
    draw = resampler("multinomial")
    with torch.no_grad():
        if initial is None:
            out = particle_filter(model, values, mask, covariates, n_particles=n_particles, proposal=proposal,
                                  keep="particles", context=context)
            final = _sample_index(out.log_weights, dim=0).unsqueeze(0)
            reference = trace_genealogy(out.z, out.ancestors, final)[0].transpose(0, 1)
        else:
            expected = (n_series, steps, int(model.latent_dim))
            if not isinstance(initial, Tensor) or tuple(initial.shape) != expected:
                raise ValueError(f"`initial` must be a tensor {expected}; got {tuple(getattr(initial, 'shape', ()))}.")
            reference = initial.to(x.dtype).transpose(0, 1)
        kept, changes = [], torch.zeros(steps, n_series, dtype=x.dtype, device=x.device)
        for sweep in range(n_warmup + n_samples):
            new = _conditional_sweep(model, x, mask, context, reference, n_particles, proposal == "guided", draw)
            if sweep >= n_warmup:
                changes += (new != reference).any(-1).to(x.dtype)
                kept.append(new.transpose(0, 1))
            reference = new
    return PGASResult(trajectories=torch.stack(kept), update_rate=(changes / n_samples).T)


# ------------------------------------------------------------------ persistent chains
class PathStore:
    """The latest latent path of each sequence, kept between visits: one particle Gibbs chain per sequence.

    Keyed by the sequence's identity (``SequenceBatch.index``: its row in the data the training loop was
    given), and checked against a fingerprint of its observations (:meth:`fingerprint`), so a path is only
    ever handed back to the sequence it was drawn for: any other row sharing the identity (another fit's
    data, a caller's own numbering) starts a new chain. Paths may be stored at one length and recalled at
    another (minibatches are cut to their longest member): :meth:`recall` says how many of the requested
    steps it holds. Nothing here is saved with a model: the chains are training state.
    """

    def __init__(self):
        self.clear()

    def clear(self) -> None:
        """Forget every chain (at the end of a fit: the paths are large and belong to its data)."""
        self._paths = self._steps = self._prints = None

    def __len__(self) -> int:
        return 0 if self._steps is None else int((self._steps > 0).sum())

    @staticmethod
    def fingerprint(values: Tensor, mask: Tensor) -> Tensor:
        """``(B, 3)`` float64: observed count, sum and step-weighted sum of each sequence ``(B, T, D)``;
        padding adds nothing, so the same sequence cut to another length prints the same."""
        observed = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device)).double()
        steps = torch.arange(1, values.shape[1] + 1, dtype=torch.float64, device=values.device)[:, None]
        return torch.stack([mask.sum((1, 2)).double(), observed.sum((1, 2)), (observed * steps).sum((1, 2))], -1)

    def recall(self, index: Tensor, prints: Tensor, steps: int, latent_dim: int,
               dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
        """Stored paths of sequences ``index`` ``(B,)`` (fingerprints ``prints``) cut or zero-padded to ``steps``:
        ``(B, steps, Z)``, and how many of those steps each holds ``(B,)`` (0: no chain for this sequence yet)."""
        n = index.shape[0]
        paths = prints.new_zeros(n, steps, latent_dim, dtype=dtype)
        held = torch.zeros(n, dtype=torch.long, device=index.device)
        if self._steps is None:
            return paths, held
        inside = index < self._steps.shape[0]
        rows = torch.where(inside, index, torch.zeros_like(index))
        same = torch.isclose(self._prints[rows], prints, rtol=1e-9, atol=1e-9).all(-1)
        held = torch.where(inside & same, self._steps[rows].clamp(max=steps), held)
        width = min(steps, self._paths.shape[1])
        paths = self._paths[rows, :steps].to(paths.dtype)
        if width < steps:
            paths = torch.cat([paths, paths.new_zeros(n, steps - width, latent_dim)], 1)
        return torch.where(held[:, None, None] > 0, paths, torch.zeros_like(paths)), held

    def keep(self, index: Tensor, paths: Tensor, prints: Tensor) -> None:
        """Store ``paths`` ``(B, T, Z)`` as the chains of sequences ``index`` ``(B,)`` (replacing theirs)."""
        n, steps, latent_dim = paths.shape
        if len(torch.unique(index)) != n:
            raise ValueError("`index` must name each sequence once per batch; got repeated identities.")
        size = int(index.max()) + 1
        if self._steps is None:
            self._paths = paths.new_zeros(size, steps, latent_dim)
            self._steps = torch.zeros(size, dtype=torch.long, device=paths.device)
            self._prints = prints.new_zeros(size, prints.shape[-1])
        if size > self._steps.shape[0]:
            grow = size - self._steps.shape[0]
            self._paths = torch.cat([self._paths, self._paths.new_zeros(grow, *self._paths.shape[1:])])
            self._steps = torch.cat([self._steps, self._steps.new_zeros(grow)])
            self._prints = torch.cat([self._prints, self._prints.new_zeros(grow, self._prints.shape[-1])])
        if steps > self._paths.shape[1]:
            self._paths = torch.cat([self._paths, self._paths.new_zeros(self._paths.shape[0],
                                                                         steps - self._paths.shape[1], latent_dim)], 1)
        self._paths[index] = 0.0
        self._paths[index, :steps] = paths.detach().to(self._paths.dtype)
        self._steps[index] = steps
        self._prints[index] = prints

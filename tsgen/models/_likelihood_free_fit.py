r"""Likelihood-free fits of a state-space model: ``method="mmd" | "energy" | "gan" | "abc"``.

The state-space estimators (:class:`tsgen.StateSpaceForecaster` and the
shipped models built on it) inherit these ``_fit_<method>`` methods. Each
compares **windows**: the observed series cut into every complete window of
``window_length`` steps, and windows simulated by the model (``initial``,
then ``transition``, then ``emission``, all drawn by ``rsample``, so a
model whose transition or emission is an
:class:`~tsgen.components.implicit.ImplicitDistribution` is fitted like
any other). The numerical work is :mod:`tsgen.inference.likelihood_free`.

How the estimator's arguments are read:

- ``max_iter``: gradient steps (mmd, energy, gan) or ABC generations;
- ``n_particles``: simulated windows per step (mmd, energy, gan) or ABC
  particles;
- ``learning_rate``: the Adam step on the model's (unconstrained) parameters;
- ``window_length``: the window (default ``min(50, T)``).

The estimators' defaults (``max_iter=20``, ``learning_rate=0.01``) suit
particle EM; a gradient fit wants a few hundred steps at ``learning_rate``
0.03-0.1 (SV, T = 1500: 300 steps at 0.08 with 128 windows of 10 steps), ABC
10-20 generations of 500-1000 particles.

Each simulated window starts from the model's ``initial`` distribution at
the window's first time step (with that step's context), so the fit is
exact for a model whose ``initial`` is its stationary law (the stochastic
volatility model's is) and approximate otherwise (then make ``initial`` the
stationary law, or use long windows). Windows with a missing value are left
out.

A model may define ``window_features(windows)`` (``(n, L, D)`` -> ``(n, L', D')``,
differentiable): every method then compares transformed windows, e.g.
``log(y^2 + c)`` for a volatility model, whose raw returns are uncorrelated
and hide the dynamics from a kernel on raw windows; for mmd and energy,
:func:`~tsgen.inference.likelihood_free.with_autocovariances` of those and
windows of a few persistence time scales narrow the spread of the
persistence/innovation-scale estimates (SV: RMSE of sigma 0.16 -> 0.11). ABC's distance is
:func:`~tsgen.inference.likelihood_free.moment_distance` between the
(transformed) windows' means and covariances (``200`` simulated windows per
particle against all observed ones): low-noise summaries that carry the
autocovariances up to lag ``L - 1``; the MMD of small window samples proved
too noisy to rank particles.

Quality is measured on windows the fit did not use, stored after ``fit``:
``likelihood_free_`` holds the method's trace and ``heldout_mmd_`` the
MMD^2 (multi-bandwidth Gaussian kernel, median heuristic) between
simulated windows and the windows in the last quarter of each series (the
fit uses the windows that end before it); the GAN also reports the discriminative scores before and after
(``|accuracy - 1/2|`` of a fresh classifier on held-out windows). ``save`` and
:func:`tsgen.load` keep both; a refit by another method drops them.
"""
from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from tsgen.protocol import ancestral_sample

__all__ = ["LIKELIHOOD_FREE_METHODS", "LikelihoodFreeFits", "observed_windows", "scalar_priors"]

#: the methods this mixin adds
LIKELIHOOD_FREE_METHODS = ("mmd", "energy", "gan", "abc")
_DEFAULT_WINDOW = 50
#: simulated windows per ABC particle
_ABC_WINDOWS = 200


def observed_windows(values: Tensor, mask: Tensor, length: int) -> tuple[Tensor, Tensor, Tensor]:
    """Every complete window of ``length`` steps: ``(windows (n, L, D), series (n,), start (n,))``, 0-based starts."""
    B, T, D = values.shape
    if length > T:
        raise ValueError(f"`window_length` must be at most the longest series ({T} steps); got {length}.")
    complete = mask.all(-1).unfold(1, length, 1).all(-1)  # (B, T - L + 1)
    series, start = complete.nonzero(as_tuple=True)
    if series.numel() < 8:
        raise ValueError(
            f"a likelihood-free fit needs at least 8 complete windows of `window_length`={length} steps; the data "
            f"have {series.numel()}. Use a shorter window_length or more (or less gappy) data."
        )
    steps = start.unsqueeze(1) + torch.arange(length, device=values.device)
    return values[series.unsqueeze(1), steps], series, start


def scalar_priors(module, method: str) -> tuple[dict, dict]:
    """``(priors, current values)`` of a model's parameters that have a prior, for the samplers (PMMH,
    ABC), which draw scalar parameters only; a ValueError naming ``method`` otherwise."""
    priors = module.priors()
    if not priors:
        raise ValueError(
            f"method={method!r} samples the parameters that have a prior, and {type(module).__name__} gives none: "
            "register them with `register_constrained(..., prior=...)`."
        )
    current = module.constrained_parameters()
    for name in priors:
        if current[name].numel() != 1:
            raise ValueError(f"method={method!r} samples scalar parameters; `{name}` has shape {tuple(current[name].shape)}.")
    return priors, current


def _features(module):
    """The model's ``window_features`` (windows ``(n, L, D)`` -> ``(n, ...)``), or None: raw windows."""
    features = getattr(module, "window_features", None)
    if features is not None and not callable(features):
        raise TypeError(f"{type(module).__name__}.window_features must be a method windows -> features; got {features!r}.")
    return features


@contextlib.contextmanager
def _batched(module, names: list[str], values: Tensor, event_dims: int):
    """Parameters ``names`` replaced by one value per particle, ``values`` ``(P, K)`` constrained, shaped
    ``(P, 1, ...)`` to broadcast over the particles' windows; restored afterwards."""
    constrained = module.__dict__["_constrained"]
    saved = {}
    try:
        for k, name in enumerate(names):
            key = f"{name}_unconstrained"
            saved[key] = module._parameters[key]
            transform = constrained[name][2]
            raw = transform.inv(values[:, k]).reshape(-1, *([1] * (1 + event_dims)))
            module._parameters[key] = raw
        yield
    finally:
        module._parameters.update(saved)


class LikelihoodFreeFits:
    """Mixin of ``_fit_mmd``, ``_fit_energy``, ``_fit_gan`` and ``_fit_abc`` (module docstring)."""

    # -------------------------------------------------------------- windows
    def _window_length(self, values: Tensor) -> int:
        from tsgen._validation import is_int

        length = getattr(self, "window_length", None)
        if length is None:
            return max(2, min(_DEFAULT_WINDOW, values.shape[1]))
        if not is_int(length) or length < 2:
            raise ValueError(f"`window_length` must be an integer >= 2 or None; got {length!r}.")
        return int(length)

    def _split_windows(self, values, mask):
        """Observed windows split in time: those in the last quarter of each series are held out, those
        ending before it fit (windows across the cut are dropped, so no held-out step is ever fitted)."""
        length = self._window_length_
        windows, series, start = observed_windows(values, mask, length)
        end = torch.zeros(values.shape[0], dtype=start.dtype, device=start.device)
        end = end.scatter_reduce(0, series, start + length, "amax")  # one past each series' last complete step
        cut = (end * 3 // 4)[series]
        test, train = start >= cut, start + length <= cut
        if int(test.sum()) < 2 or int(train.sum()) < 8:
            raise ValueError(
                f"a likelihood-free fit holds out the last quarter of each series and needs 2 held-out and 8 fitting "
                f"windows of `window_length`={length} steps; the data give {int(test.sum())} and {int(train.sum())}. "
                "Use a shorter window_length or longer series."
            )
        return (windows[train], series[train], start[train]), windows[test]

    def _simulator(self, adapter, values, covariates, series: Tensor, start: Tensor):
        """``simulate(n)``: ``n`` windows at random observed positions, drawn by ``rsample``."""
        length = self._window_length_
        offsets = torch.arange(1, length + 1, dtype=values.dtype, device=values.device)

        def simulate(n: int) -> Tensor:
            pick = torch.randint(series.shape[0], (n,), device=values.device)
            return self._simulate_at(adapter, values, covariates, series[pick], start[pick], offsets, ())

        return simulate

    def _simulate_at(self, adapter, values, covariates, series, start, offsets, sample_shape):
        """Windows ``(*sample_shape, n, L, D)`` from the initial law at the windows' first steps."""
        t = start.to(values.dtype).unsqueeze(1) + offsets  # (n, L), 1-based steps
        rows = None
        if covariates is not None:
            steps = (start.unsqueeze(1) + torch.arange(offsets.shape[0], device=values.device))
            rows = covariates[series.unsqueeze(1), steps.clamp_max(covariates.shape[1] - 1)]
        context = adapter.context_from(t, rows, values.shape[-1])
        state = adapter.init_state(context, sample_shape)
        return ancestral_sample(adapter, state, context, 0, offsets.shape[0], reparameterized=True)

    def _heldout_mmd(self, simulate, test: Tensor, features) -> float:
        from tsgen.inference.likelihood_free import mmd

        with torch.no_grad():
            simulated = simulate(max(2 * test.shape[0], 64))
            if features is not None:
                simulated, test = features(simulated), features(test)
            return float(mmd(simulated.flatten(1), test.flatten(1)))

    def _prepare_likelihood_free(self, adapter, values, mask):
        self._window_length_ = self._window_length(values)
        # prepare() reads the latent's and the data's sizes off the model: needed before any step
        adapter.prepare(values[:, : self._window_length_], mask[:, : self._window_length_])
        return self._split_windows(values, mask)

    def _raw_parameters(self, module) -> list[Tensor]:
        parameters = [p for p in module.parameters() if p.requires_grad]
        if not parameters:
            raise ValueError(f"method={self.method!r} fits torch parameters, and {type(module).__name__} has none.")
        return parameters

    def _record(self, trace: list[float], heldout: float) -> None:
        self.log_evidences_ = []  # no likelihood is computed by these methods
        self.likelihood_free_ = {"trace": [float(v) for v in trace]}
        self.heldout_mmd_ = heldout

    # ------------------------------------------------------------ save/load
    def _forget_likelihood_free(self) -> None:
        """Drop a previous fit's summaries: a refit by another method must not carry them."""
        for name in ("likelihood_free_", "heldout_mmd_"):
            self.__dict__.pop(name, None)

    def _likelihood_free_summary(self) -> dict | None:
        """The fit's summaries as JSON (None after a fit by another method), for ``save``."""
        if not hasattr(self, "likelihood_free_"):
            return None
        return {"info": self.likelihood_free_, "heldout_mmd": self.heldout_mmd_}

    def _restore_likelihood_free(self, summary) -> None:
        """Set ``likelihood_free_`` and ``heldout_mmd_`` from :meth:`_likelihood_free_summary`'s output."""
        self._forget_likelihood_free()
        if summary is None:
            return

        def number(value) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool)

        # every entry is a number, a list of numbers (traces) or None (ABC's acceptance without a move)
        if not (isinstance(summary, dict) and set(summary) == {"info", "heldout_mmd"}
                and number(summary["heldout_mmd"]) and isinstance(summary["info"], dict)
                and all(isinstance(k, str) and (v is None or number(v)
                                                or isinstance(v, list) and all(map(number, v)))
                        for k, v in summary["info"].items())):
            raise ValueError("the stored likelihood-free fit summary is malformed")
        self.likelihood_free_ = {k: list(v) if isinstance(v, list) else v for k, v in summary["info"].items()}
        self.heldout_mmd_ = float(summary["heldout_mmd"])

    # ----------------------------------------------------------- MMD/energy
    def _fit_discrepancy(self, adapter, values, mask, covariates, discrepancy: str):
        from tsgen.inference.likelihood_free import fit_discrepancy

        (train, series, start), test = self._prepare_likelihood_free(adapter, values, mask)
        simulate = self._simulator(adapter, values, covariates, series, start)
        with torch.enable_grad():
            result = fit_discrepancy(
                simulate, train, self._raw_parameters(adapter.model), discrepancy=discrepancy, n_iter=self.max_iter,
                n_simulations=self.n_particles, learning_rate=self.learning_rate, features=_features(adapter.model),
            )
        self._record(result.history, self._heldout_mmd(simulate, test, _features(adapter.model)))
        self.n_iter_ = result.n_iter

    def _fit_mmd(self, adapter, values, mask, covariates, generator):
        self._fit_discrepancy(adapter, values, mask, covariates, "mmd")

    def _fit_energy(self, adapter, values, mask, covariates, generator):
        self._fit_discrepancy(adapter, values, mask, covariates, "energy")

    # ------------------------------------------------------------------ GAN
    def _fit_gan(self, adapter, values, mask, covariates, generator):
        from tsgen.inference.likelihood_free import fit_adversarial

        (train, series, start), test = self._prepare_likelihood_free(adapter, values, mask)
        simulate = self._simulator(adapter, values, covariates, series, start)
        with torch.enable_grad():
            # fit_adversarial keeps a quarter of `train` for its discriminative scores; `test` stays unseen
            result = fit_adversarial(
                simulate, train, self._raw_parameters(adapter.model), n_iter=self.max_iter,
                n_simulations=self.n_particles, learning_rate=self.learning_rate, features=_features(adapter.model),
            )
        self._record(result.generator_loss, self._heldout_mmd(simulate, test, _features(adapter.model)))
        self.likelihood_free_.update(discriminator_loss=result.discriminator_loss,
                                     score_before=result.score_before, score_after=result.score_after)
        self.n_iter_ = result.n_iter

    # ------------------------------------------------------------------ ABC
    def _fit_abc(self, adapter, values, mask, covariates, generator):
        from tsgen.inference.likelihood_free import abc_smc, moment_distance, window_moments

        module = adapter.model
        priors, current = scalar_priors(module, "abc")
        names = list(priors)
        (train, series, start), test = self._prepare_likelihood_free(adapter, values, mask)
        features = _features(module)
        observed_mean, observed_cov = window_moments(train if features is None else features(train))
        # distances in units of the observed windows' typical variance, so that no component dominates by its unit
        unit = observed_cov.diagonal().mean().clamp_min(torch.finfo(values.dtype).tiny)
        # every particle simulates at the same window positions: common random positions make distances comparable
        pick = torch.randint(series.shape[0], (_ABC_WINDOWS,), device=values.device)
        offsets = torch.arange(1, self._window_length_ + 1, dtype=values.dtype, device=values.device)
        event_dims = 0 if adapter._scalar_latent else 1

        def simulate(theta: Tensor) -> Tensor:
            theta = theta.to(values)
            with _batched(module, names, theta, event_dims):
                return self._simulate_at(adapter, values, covariates, series[pick], start[pick], offsets,
                                         (theta.shape[0],))

        def distance(windows: Tensor) -> Tensor:
            if features is not None:
                windows = features(windows.flatten(0, 1)).unflatten(0, windows.shape[:2])
            mean, cov = window_moments(windows)
            return moment_distance(mean, cov, observed_mean, observed_cov, unit)

        with torch.no_grad():
            # three moves a generation: with one, the late generations (acceptance near 5%) left the
            # population as a few resampled duplicates (SV: posterior means of phi 0.70 and 0.82 across two
            # seeds, against 0.84 and 0.83 with three)
            result = abc_smc(simulate, distance, priors, n_particles=self.n_particles, n_generations=self.max_iter,
                             n_moves=3, dtype=values.dtype)
        draws = result.resample().detach().cpu()
        self.posterior_samples_ = {name: draws[:, k].numpy().copy() for k, name in enumerate(names)}
        mean = result.mean()
        for k, name in enumerate(names):
            module.set_constrained(name, mean[k].reshape(current[name].shape))
        self.acceptance_rate_ = float(result.acceptance_rates[-1]) if result.acceptance_rates else None
        simulate_fitted = self._simulator(adapter, values, covariates, series, start)
        self._record(result.tolerances[1:], self._heldout_mmd(simulate_fitted, test, features))
        self.likelihood_free_.update(ess=result.ess, acceptance_rates=result.acceptance_rates,
                                     n_simulations=result.n_simulations)
        self.n_iter_ = len(result.tolerances) - 1

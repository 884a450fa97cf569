r"""Fitting a reparameterised simulator by gradient descent on a sample discrepancy (MMD or energy).

The model is known only as a simulator ``x = G_theta(eps)`` of windows
``(n, L, D)`` whose draws are differentiable in ``theta`` (``rsample``
throughout). Each step draws ``n_simulations`` windows, compares them with
a minibatch of observed windows by :func:`~.discrepancy.mmd` or
:func:`~.discrepancy.energy_distance` (unbiased forms: the stochastic
gradient is then unbiased for the population discrepancy's) and takes an
Adam step on ``theta``. The estimate is the average of the iterates over
the last ``average_fraction`` of the steps (Polyak-Ruppert), which removes
most of the noise of the stochastic gradient.

When it is valid: the minimiser of a population MMD (characteristic
kernel) or energy distance is the true parameter when the model is
identifiable from the law of a window (the minimum distance estimator is
then consistent, Briol et al. 2019); windows must be long enough to show
the dynamics that tell parameters apart (a persistence parameter needs
windows spanning a few of its time scales). On a noisy persistent series
a kernel on raw windows mostly sees the marginal noise, and the estimate
spreads along the persistence/innovation ridge (stochastic volatility,
``log y^2``, T = 1500, 10-step windows: RMSE 0.16 on sigma and 0.06 on phi
over 7 data seeds, phi's and sigma's errors of opposite signs; no sign of a bias:
at T = 20000 both are within 0.04 of the truth): append the windows' autocovariances
(:func:`~.discrepancy.with_autocovariances`) and use longer windows (30
steps: RMSE 0.11 and 0.04). The median-heuristic
bandwidth is fixed once from the observed windows, so the objective does
not move while the parameters do.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from tsgen._validation import is_int
from tsgen.inference.likelihood_free.discrepancy import BANDWIDTH_FACTORS, energy_distance, median_bandwidth, mmd

__all__ = ["DISCREPANCIES", "DiscrepancyFit", "check_windows", "fit_discrepancy", "minibatch"]

DISCREPANCIES = ("mmd", "energy")


@dataclass
class DiscrepancyFit:
    """What :func:`fit_discrepancy` returns."""

    history: list[float]  # the minibatch discrepancy at every step
    bandwidths: Tensor | None  # (K,) the MMD kernel's bandwidths (None for the energy distance)
    n_iter: int


def check_windows(name: str, windows, length: int | None = None) -> Tensor:
    """``windows`` as a floating tensor ``(n, L, D)`` with n >= 2 and no NaN, else a ValueError naming ``name``."""
    if not isinstance(windows, Tensor) or not windows.is_floating_point() or windows.dim() != 3 or windows.shape[0] < 2:
        shape = tuple(windows.shape) if isinstance(windows, Tensor) else type(windows).__name__
        raise ValueError(f"`{name}` must be a floating-point tensor (n, L, D) with n >= 2 windows; got {shape}.")
    if length is not None and windows.shape[1] != length:
        raise ValueError(f"`{name}` must hold windows of length {length}; got {windows.shape[1]}.")
    if bool(torch.isnan(windows).any()):
        raise ValueError(f"`{name}` has NaN: pass complete windows only.")
    return windows


def minibatch(windows: Tensor, size: int) -> Tensor:
    """``size`` rows of ``windows`` drawn without replacement (all of them when there are not more)."""
    n = windows.shape[0]
    if size >= n:
        return windows
    return windows[torch.randperm(n, device=windows.device)[:size]]


def _check_positive_int(name: str, value, minimum: int = 1) -> int:
    if not is_int(value) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}; got {value!r}.")
    return value


def _check_rate(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"`{name}` must be a positive number; got {value!r}.")
    return float(value)


def _check_parameters(parameters) -> list[Tensor]:
    parameters = list(parameters)
    if not parameters or not all(isinstance(p, Tensor) and p.requires_grad for p in parameters):
        raise ValueError("`parameters` must be a non-empty iterable of tensors that require grad (the simulator's).")
    return parameters


class _TailAverage:
    """Running mean of the parameters over the last steps, written back at the end."""

    def __init__(self, parameters: list[Tensor], n_iter: int, fraction: float):
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
            raise ValueError(f"`average_fraction` must be a number in [0, 1); got {fraction!r}.")
        self.parameters = parameters
        self.start = n_iter - max(1, int(round(fraction * n_iter)))
        self.sums = [torch.zeros_like(p) for p in parameters]
        self.count = 0

    def update(self, step: int) -> None:
        if step >= self.start:
            with torch.no_grad():
                for total, p in zip(self.sums, self.parameters):
                    total.add_(p)
            self.count += 1

    def finish(self) -> None:
        with torch.no_grad():
            for total, p in zip(self.sums, self.parameters):
                p.copy_(total / self.count)


def _flat(windows: Tensor, features: Callable | None) -> Tensor:
    if features is not None:
        windows = features(windows)
    return windows.reshape(windows.shape[0], -1)


def fit_discrepancy(
    simulate: Callable[[int], Tensor],
    observed: Tensor,
    parameters: Iterable[Tensor],
    *,
    discrepancy: str = "mmd",
    n_iter: int = 300,
    n_simulations: int = 64,
    batch_size: int = 256,
    learning_rate: float = 0.02,
    bandwidths=None,
    features: Callable[[Tensor], Tensor] | None = None,
    average_fraction: float = 0.25,
    callback: Callable[[int, float], None] | None = None,
) -> DiscrepancyFit:
    """Fit ``parameters`` so that simulated windows match ``observed`` in MMD or energy distance.

    Parameters
    ----------
    simulate : callable
        ``simulate(n)`` -> ``(n, L, D)`` windows drawn by ``rsample`` (the
        graph reaches ``parameters``).
    observed : Tensor (n_obs, L, D)
        Observed windows, complete (no NaN).
    parameters : iterable of Tensor
        What Adam updates (e.g. a module's unconstrained parameters); on
        return they hold the tail average of the iterates.
    discrepancy : {"mmd", "energy"}
    n_iter : int
        Adam steps.
    n_simulations : int >= 2
        Simulated windows per step.
    batch_size : int >= 2
        Observed windows per step (drawn without replacement).
    learning_rate : float
    bandwidths : None, float, sequence or Tensor
        MMD bandwidths; None: the median distance between observed windows
        times ``BANDWIDTH_FACTORS``.
    features : callable, optional
        Applied to both samples' windows before comparing, ``(n, L, D)`` ->
        ``(n, ...)`` (e.g. ``log(x^2 + c)`` to compare volatilities).
    average_fraction : float in [0, 1)
        Share of the last steps whose iterates are averaged into the estimate
        (0: the last iterate).
    callback : callable, optional
        ``callback(step, value)`` after every step.

    Returns
    -------
    DiscrepancyFit
    """
    if discrepancy not in DISCREPANCIES:
        raise ValueError(f"`discrepancy` must be one of {list(DISCREPANCIES)}; got {discrepancy!r}.")
    if not callable(simulate):
        raise TypeError(f"`simulate` must be a callable n -> windows (n, L, D); got {type(simulate).__name__}.")
    observed = check_windows("observed", observed)
    n_iter = _check_positive_int("n_iter", n_iter)
    n_simulations = _check_positive_int("n_simulations", n_simulations, 2)
    batch_size = _check_positive_int("batch_size", batch_size, 2)
    learning_rate = _check_rate("learning_rate", learning_rate)
    parameters = _check_parameters(parameters)
    average = _TailAverage(parameters, n_iter, average_fraction)
    with torch.no_grad():
        target = _flat(observed, features)
    kernel = None
    if discrepancy == "mmd":
        if bandwidths is None:
            bandwidths = median_bandwidth(minibatch(target, 1000)) * torch.tensor(BANDWIDTH_FACTORS, dtype=target.dtype,
                                                                                  device=target.device)
        else:
            bandwidths = torch.as_tensor(bandwidths, dtype=target.dtype, device=target.device).reshape(-1)
        kernel = bandwidths

    optimiser = torch.optim.Adam(parameters, lr=learning_rate)
    history = []
    for step in range(n_iter):
        optimiser.zero_grad(set_to_none=True)
        simulated = simulate(n_simulations)
        check_windows("simulate(n)", simulated, observed.shape[1])
        x = _flat(simulated, features)
        y = minibatch(target, batch_size)
        loss = mmd(x, y, kernel) if kernel is not None else energy_distance(x, y)
        if not bool(torch.isfinite(loss)):
            raise FloatingPointError(
                f"the {discrepancy} discrepancy became {float(loss)} at step {step + 1}: the simulator produced "
                "non-finite windows; lower `learning_rate` or bound the parameters."
            )
        loss.backward()
        optimiser.step()
        average.update(step)
        history.append(float(loss.detach()))
        if callback is not None:
            callback(step, history[-1])
    average.finish()
    return DiscrepancyFit(history=history, bandwidths=kernel.detach() if kernel is not None else None, n_iter=n_iter)

r"""Adversarial fitting of a reparameterised simulator (a GAN over windows), and the discriminative score.

A discriminator ``D`` (logits) over windows ``(n, L, D)`` is trained to tell
observed windows from simulated ones, in alternation with the simulator's
parameters (the generator), Goodfellow et al. (2014) with the
non-saturating generator loss::

    discriminator:  min  softplus(-D(x_obs)) + softplus(D(x_sim))      (binary cross-entropy)
    generator:      min  softplus(-D(x_sim))                           (= -log sigmoid D(x_sim))

When it is valid: no likelihood is needed, but the game need not converge
(oscillation, mode collapse) and its loss says little about sample quality,
so the fit is judged by held-out measures: the **discriminative score**
(Yoon et al. 2019), ``|accuracy - 1/2|`` of a fresh classifier trained on
observed against simulated windows and tested on windows neither the GAN
nor the classifier saw (0: indistinguishable, 1/2: always told apart), and
the MMD on held-out windows (:func:`~.discrepancy.mmd`). Prefer the MMD or
energy fit (:mod:`.gradient`) for a few interpretable parameters; use the
GAN's score and the held-out MMD to check it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tsgen.inference.likelihood_free.gradient import (
    _check_parameters, _check_positive_int, _check_rate, _TailAverage, check_windows, minibatch,
)

__all__ = ["AdversarialFit", "WindowDiscriminator", "discriminative_score", "fit_adversarial"]


class WindowDiscriminator(nn.Module):
    """Logit of "observed" for windows ``(n, L, D)``: two temporal convolutions, then an average over time.

    The convolutions see local dynamics (a volatility burst, a turning
    point) wherever they sit in the window; averaging over time suits
    stationary windows. ``features`` (optional) maps windows to
    ``(n, L', D')`` before the network.
    """

    def __init__(self, n_dims: int, hidden: int = 32, kernel_size: int = 5,
                 features: Callable[[Tensor], Tensor] | None = None):
        super().__init__()
        for name, value in (("n_dims", n_dims), ("hidden", hidden), ("kernel_size", kernel_size)):
            _check_positive_int(name, value)
        self.features = features
        pad = kernel_size // 2
        self.net = nn.Sequential(
            nn.Conv1d(n_dims, hidden, kernel_size, padding=pad), nn.LeakyReLU(0.2),
            nn.Conv1d(hidden, hidden, kernel_size, padding=pad), nn.LeakyReLU(0.2),
        )
        self.out = nn.Linear(hidden, 1)

    def forward(self, windows: Tensor) -> Tensor:
        if self.features is not None:
            windows = self.features(windows)
        hidden = self.net(windows.transpose(1, 2))  # (n, hidden, L)
        return self.out(hidden.mean(-1)).squeeze(-1)


def _classifier_loss(discriminator: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
    return F.softplus(-discriminator(real)).mean() + F.softplus(discriminator(fake)).mean()


def discriminative_score(
    real_train: Tensor,
    fake_train: Tensor,
    real_test: Tensor,
    fake_test: Tensor,
    *,
    n_iter: int = 200,
    learning_rate: float = 2e-3,
    hidden: int = 32,
    features: Callable[[Tensor], Tensor] | None = None,
) -> float:
    """``|accuracy - 1/2|`` on held-out windows of a fresh :class:`WindowDiscriminator`.

    The classifier is trained (full batch, Adam, ``n_iter`` steps) on
    ``real_train`` against ``fake_train`` and tested on ``real_test`` and
    ``fake_test`` (accuracy averaged over the two classes, so unequal sizes
    do not bias it). Its Monte Carlo standard error is about
    ``0.5 / sqrt(n_test)``. All inputs are ``(n, L, D)`` and carry no graph.
    """
    real_train, fake_train, real_test, fake_test = (
        check_windows(name, value.detach()) for name, value in
        (("real_train", real_train), ("fake_train", fake_train), ("real_test", real_test), ("fake_test", fake_test))
    )
    n_iter = _check_positive_int("n_iter", n_iter)
    classifier = WindowDiscriminator(real_train.shape[-1], hidden, features=features).to(real_train)
    optimiser = torch.optim.Adam(classifier.parameters(), lr=_check_rate("learning_rate", learning_rate))
    with torch.enable_grad():
        for _ in range(n_iter):
            optimiser.zero_grad(set_to_none=True)
            _classifier_loss(classifier, real_train, fake_train).backward()
            optimiser.step()
    with torch.no_grad():
        hits = float((classifier(real_test) > 0).double().mean()) + float((classifier(fake_test) <= 0).double().mean())
    accuracy = hits / 2
    return abs(accuracy - 0.5)


@dataclass
class AdversarialFit:
    """What :func:`fit_adversarial` returns."""

    generator_loss: list[float]  # per step
    discriminator_loss: list[float]  # per step (the last of its inner steps)
    score_before: float  # discriminative score of the starting simulator on held-out windows
    score_after: float  # ... of the fitted one (same classifier budget, fresh simulations)
    discriminator: nn.Module  # the trained adversary
    n_iter: int


def fit_adversarial(
    simulate: Callable[[int], Tensor],
    observed: Tensor,
    parameters: Iterable[Tensor],
    *,
    discriminator: nn.Module | None = None,
    n_iter: int = 300,
    n_simulations: int = 64,
    learning_rate: float = 0.02,
    discriminator_learning_rate: float = 2e-3,
    discriminator_steps: int = 2,
    held_out: float = 0.25,
    features: Callable[[Tensor], Tensor] | None = None,
    average_fraction: float = 0.25,
    score_iter: int = 200,
    callback: Callable[[int, float, float], None] | None = None,
) -> AdversarialFit:
    """Fit ``parameters`` adversarially (module docstring) and report held-out discriminative scores.

    Parameters
    ----------
    simulate, observed, parameters, n_iter, n_simulations, learning_rate, features, average_fraction
        As in :func:`~.gradient.fit_discrepancy` (``learning_rate`` is the
        generator's Adam step).
    discriminator : nn.Module, optional
        Windows ``(n, L, D)`` -> logits ``(n,)``; default a
        :class:`WindowDiscriminator` (with ``features``).
    discriminator_learning_rate : float
    discriminator_steps : int
        Discriminator updates per generator update.
    held_out : float in (0, 1)
        Share of the observed windows kept out of training, on which the
        discriminative scores are measured.
    score_iter : int
        Training steps of the fresh classifier behind each score.
    callback : callable, optional
        ``callback(step, generator_loss, discriminator_loss)``.

    Returns
    -------
    AdversarialFit
    """
    if not callable(simulate):
        raise TypeError(f"`simulate` must be a callable n -> windows (n, L, D); got {type(simulate).__name__}.")
    observed = check_windows("observed", observed)
    n_iter = _check_positive_int("n_iter", n_iter)
    n_simulations = _check_positive_int("n_simulations", n_simulations, 2)
    steps = _check_positive_int("discriminator_steps", discriminator_steps)
    score_iter = _check_positive_int("score_iter", score_iter)
    if isinstance(held_out, bool) or not isinstance(held_out, (int, float)) or not 0 < held_out < 1:
        raise ValueError(f"`held_out` must be a fraction in (0, 1); got {held_out!r}.")
    n_test = int(round(held_out * observed.shape[0]))
    if n_test < 2 or observed.shape[0] - n_test < 4:
        raise ValueError(
            f"`observed` must hold enough windows for a held-out split of {held_out}: got {observed.shape[0]} "
            "(at least 2 held out and 4 for training); use shorter windows or more data."
        )
    parameters = _check_parameters(parameters)
    if discriminator is None:
        discriminator = WindowDiscriminator(observed.shape[-1], features=features).to(observed)
    elif not isinstance(discriminator, nn.Module):
        raise TypeError(f"`discriminator` must be an nn.Module (windows -> logits); got {type(discriminator).__name__}.")
    order = torch.randperm(observed.shape[0], device=observed.device)
    test, train = observed[order[:n_test]], observed[order[n_test:]]
    # the classifier behind a score trains on as many observed windows as it is tested on, at most
    score_train = minibatch(train, max(n_test, 2))

    def score() -> float:
        with torch.no_grad():
            fake_train, fake_test = simulate(score_train.shape[0]), simulate(n_test)
        return discriminative_score(score_train, fake_train, test, fake_test, n_iter=score_iter, features=features)

    before = score()
    gen_opt = torch.optim.Adam(parameters, lr=_check_rate("learning_rate", learning_rate), betas=(0.5, 0.999))
    disc_opt = torch.optim.Adam(discriminator.parameters(), lr=_check_rate("discriminator_learning_rate",
                                                                          discriminator_learning_rate),
                                betas=(0.5, 0.999))
    average = _TailAverage(parameters, n_iter, average_fraction)
    generator_loss, discriminator_loss = [], []
    for step in range(n_iter):
        for _ in range(steps):
            with torch.no_grad():
                fake = simulate(n_simulations)
            disc_opt.zero_grad(set_to_none=True)
            d_loss = _classifier_loss(discriminator, minibatch(train, n_simulations), fake)
            d_loss.backward()
            disc_opt.step()
        gen_opt.zero_grad(set_to_none=True)
        fake = simulate(n_simulations)
        check_windows("simulate(n)", fake.detach(), observed.shape[1])
        g_loss = F.softplus(-discriminator(fake)).mean()
        g_loss.backward()
        gen_opt.step()
        average.update(step)
        generator_loss.append(float(g_loss.detach()))
        discriminator_loss.append(float(d_loss.detach()))
        if callback is not None:
            callback(step, generator_loss[-1], discriminator_loss[-1])
    average.finish()
    # the discriminator's parameters got gradients from the generator step too: leave them clean
    discriminator.zero_grad(set_to_none=True)
    return AdversarialFit(generator_loss, discriminator_loss, before, score(), discriminator, n_iter)

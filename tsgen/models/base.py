"""The model protocol (DESIGN §2) and the generic code written once against it.

A sequential model says how one step is generated:

- ``init_state(batch_shape, covariates=None)`` -> the recurrent state before
  the first step (a small dataclass of tensors, or a tensor);
- ``transition(state, x_prev, covariates=None)`` -> the next state, or a
  ``torch.distributions.Distribution`` whose sample *is* the next state;
  ``x_prev`` is the previous observation ``(*batch, D)`` (NaN where missing)
  or None before the first step;
- ``emission(state, covariates=None)`` -> the distribution of ``x_t``;
- optionally ``proposal(state, x_t, ...)`` -> a learned ``q(z_t | ...)``.

Convention: every tensor in a state has the batch dimensions in front,
``(*batch, ...)``, so :func:`expand_state` can add a sample dimension without
knowing the model.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.distributions import Distribution

from tsgen.training.randomness import seeded_from


class SequentialModel(nn.Module):
    """Base of the generative modules: ``p(x_1:T) = prod_t g(x_t | s_t)``, ``s_t ~ f(s_t | s_{t-1}, x_{t-1})``."""

    def init_state(self, batch_shape, covariates=None):
        raise NotImplementedError

    def transition(self, state, x_prev, covariates=None):
        raise NotImplementedError

    def emission(self, state, covariates=None) -> Distribution:
        raise NotImplementedError

    def proposal(self, state, x_t, *args, **kwargs) -> Distribution:
        raise NotImplementedError(f"{type(self).__name__} has no learned proposal.")


def map_state(state, fn):
    """Apply ``fn`` to every tensor of ``state`` (a tensor, a dataclass of tensors, or a tuple of them)."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return fn(state)
    if dataclasses.is_dataclass(state):
        return dataclasses.replace(
            state, **{f.name: map_state(getattr(state, f.name), fn) for f in dataclasses.fields(state)}
        )
    if isinstance(state, (tuple, list)):
        return type(state)(map_state(s, fn) for s in state)
    return state


def expand_state(state, n_samples: int):
    """Add a leading sample dimension: every tensor ``(*batch, ...)`` -> ``(n_samples, *batch, ...)``."""
    return map_state(state, lambda t: t.unsqueeze(0).expand(n_samples, *t.shape).contiguous())


def ancestral_sample(
    model: SequentialModel,
    state,
    horizon: int,
    n_samples: int,
    generator: torch.Generator,
    covariates: torch.Tensor | None = None,
    x_prev: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sample paths forward from ``state``: for ``k = 1..horizon``,
    ``s_k ~ f(. | s_{k-1}, x_{k-1})``, ``x_k ~ g(. | s_k)``.

    Parameters
    ----------
    state
        Summary of the history with batch shape ``(*batch)`` (for latent
        models, a draw from the filtering posterior).
    covariates : Tensor (*batch, horizon, K) or None
        Future covariates, row ``k`` for step ``k``.
    x_prev : Tensor (*batch, D) or None
        The last observation, fed to the first transition.

    Returns
    -------
    Tensor (n_samples, *batch, horizon, D)
    """
    with torch.no_grad(), seeded_from(generator, _device_of(state)):
        state = expand_state(state, n_samples)
        if x_prev is not None:
            x_prev = x_prev.unsqueeze(0).expand(n_samples, *x_prev.shape)
        if covariates is not None:
            covariates = covariates.unsqueeze(0).expand(n_samples, *covariates.shape)
        draws = []
        for k in range(horizon):
            step_covariates = None if covariates is None else covariates[..., k, :]
            state = model.transition(state, x_prev, step_covariates)
            if isinstance(state, Distribution):
                state = state.sample()
            x_prev = model.emission(state, step_covariates).sample()
            draws.append(x_prev)
        return torch.stack(draws, dim=-2)


def _device_of(state) -> torch.device:
    found = []
    map_state(state, lambda t: found.append(t.device) or t)
    return found[0] if found else torch.device("cpu")

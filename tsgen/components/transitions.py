"""Latent transitions ``f(z_t | z_{t-1})`` of the Deep Markov Model.

A transition is an ``nn.Module`` mapping ``z_{t-1}`` of shape ``(..., Z)`` to
the ``(loc, scale)`` of a diagonal Gaussian over ``z_t``. Returning tensors
rather than a distribution lets the DMM evaluate all time steps in one
batched call (the speed of training depends on it) and build the
distribution only where one is needed.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from tsgen._validation import is_int
from tsgen.components.positive import positive

__all__ = ["GatedTransition"]


class GatedTransition(nn.Module):
    r"""The DMM's gated transition (Krishnan, Shalit & Sontag, 2017, eq. 5).

    .. math::

        g_t &= \sigma(W_2\,\mathrm{ReLU}(W_1 z_{t-1} + b_1) + b_2)
            \quad\text{(gate)}\\
        h_t &= W_4\,\mathrm{ReLU}(W_3 z_{t-1} + b_3) + b_4
            \quad\text{(proposed mean)}\\
        \mu_t &= (1 - g_t) \odot (W_5 z_{t-1} + b_5) + g_t \odot h_t\\
        \sigma_t &= \mathrm{softplus}(W_6\,\mathrm{ReLU}(h_t) + b_6) + \text{floor}

    so that ``z_t ~ N(mu_t, diag(sigma_t^2))``. ``W_5`` starts as the identity
    and ``b_5`` at zero: an untrained transition is a random walk, which
    keeps early training stable (as in Pyro's DMM example).

    Parameters
    ----------
    latent_dim : int
        ``Z``, the size of ``z_t``.
    hidden_dim : int
        Width of the gate and proposed-mean hidden layers.
    """

    def __init__(self, latent_dim: int, hidden_dim: int):
        super().__init__()
        for name, value in (("latent_dim", latent_dim), ("hidden_dim", hidden_dim)):
            if not is_int(value) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer; got {value!r}.")
        self.latent_dim = latent_dim
        self.gate_hidden = nn.Linear(latent_dim, hidden_dim)
        self.gate_out = nn.Linear(hidden_dim, latent_dim)
        self.proposed_hidden = nn.Linear(latent_dim, hidden_dim)
        self.proposed_out = nn.Linear(hidden_dim, latent_dim)
        self.linear_loc = nn.Linear(latent_dim, latent_dim)
        self.scale_out = nn.Linear(latent_dim, latent_dim)
        with torch.no_grad():
            self.linear_loc.weight.copy_(torch.eye(latent_dim))
            self.linear_loc.bias.zero_()

    def forward(self, z_prev: Tensor) -> tuple[Tensor, Tensor]:
        """``(loc, scale)`` of ``z_t`` given ``z_prev`` ``(..., Z)``; both ``(..., Z)``."""
        gate = torch.sigmoid(self.gate_out(F.relu(self.gate_hidden(z_prev))))
        proposed = self.proposed_out(F.relu(self.proposed_hidden(z_prev)))
        loc = torch.lerp(self.linear_loc(z_prev), proposed, gate)
        scale = positive(self.scale_out(F.relu(proposed)))
        return loc, scale

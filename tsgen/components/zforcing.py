r"""Z-forcing (Goyal, Sordoni, Côté, Ke & Bengio, NeurIPS 2017): an auxiliary cost making latents carry the future.

A backward GRU summarises the (scaled) data from each step to the end,
``b_t = GRU_back(b_{t+1}, u_t)`` with ``u_t = [x_t / s_t, 1\{x_t \text{ observed}\}]``,
and each latent must predict that summary::

    aux_t = -log N(sg(b_t); mu(z_t), I)      (mu a one-hidden-layer MLP, z_t drawn from the guide)

The target is not differentiated (``sg``: a target free to move towards
``z`` would shrink to a constant and the cost to minus infinity); the
backward GRU learns instead by predicting the data in reverse,
``-log N(x_t / s_t; W b_{t+1} + c, diag sigma_b^2)`` at the observed values
(``b_{T+1} = 0``). The variance of ``aux_t`` is fixed: a learned one
shrinks on the components of ``b`` that barely move and then sends large
gradients into the guide (seen to ruin forecasts at weight 0.5). Both costs
enter the training loss only, weighted by the model's ``z_forcing`` (per
step, summed over the ``hidden_dim`` components of ``b``: weights around
0.01-0.1 leave the likelihood of a small model nearly unchanged); bounds and
likelihoods never see them.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.distributions import Normal
from torch.nn import functional as F

from tsgen.components.mlp import MLP
from tsgen.components.positive import positive

__all__ = ["ZForcing", "check_z_forcing"]


class ZForcing(nn.Module):
    """The auxiliary cost of Z-forcing (module docstring) for data of ``data_dim`` and latents of ``latent_dim``.

    Parameters
    ----------
    data_dim, latent_dim : int
    hidden_dim : int
        Size of the backward state ``b_t`` and width of the predictor's hidden layer.
    """

    def __init__(self, data_dim: int, latent_dim: int, hidden_dim: int):
        super().__init__()
        self.backward_rnn = nn.GRU(2 * data_dim, hidden_dim, batch_first=True)
        self.predictor = MLP(latent_dim, [hidden_dim], hidden_dim)
        self.reverse = nn.Linear(hidden_dim, data_dim)
        self.reverse_raw_scale = nn.Parameter(torch.zeros(data_dim))

    def cost(self, z: Tensor, values: Tensor, mask: Tensor, scale: Tensor | None, where: Tensor) -> Tensor:
        """Auxiliary negative log-likelihoods summed over steps ``(B,)``, averaged over the draws.

        ``z`` ``(S, B, T, Z)`` guide draws, ``values``/``mask``/``scale`` ``(B, T, D)`` (``scale`` None:
        unscaled), ``where`` ``(B, T)`` the steps whose latent counts (drawn from the guide).
        """
        zero = torch.zeros((), dtype=values.dtype, device=values.device)
        scaled = torch.where(mask, values if scale is None else values / scale, zero)
        b = self.backward_rnn(torch.cat([scaled, mask.to(values.dtype)], -1).flip(1))[0].flip(1)
        aux = Normal(self.predictor(z), 1.0).log_prob(b.detach()).sum(-1)  # (S, B, T)
        aux = torch.where(where, aux, zero).sum(-1).mean(0)
        ahead = F.pad(b, (0, 0, 0, 1))[:, 1:]  # b_{t+1}: the summary of x_{t+1:T}
        reverse = Normal(self.reverse(ahead), positive(self.reverse_raw_scale)).log_prob(scaled)
        reverse = torch.where(mask, reverse, zero).sum((-1, -2))
        return -(aux + reverse)


def check_z_forcing(value) -> None:
    """Refuses a ``z_forcing`` weight that is not a finite number >= 0, naming the argument."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
        raise ValueError(f"`z_forcing` must be a finite number >= 0; got {value!r}.")

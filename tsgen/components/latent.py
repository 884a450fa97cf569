"""Building blocks of the stochastic recurrent models (VRNN, and STORN/SRNN after it).

- :class:`DiagonalGaussian`: features ``u`` to ``N(mu(u), diag sigma^2(u))``,
  the learned priors and filtering posteriors of these models;
- :class:`RecurrentCell`: one GRU or LSTM step over inputs with any leading
  dimensions, so particles, samples and series share one call.
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn
from torch.distributions import Independent, Normal

from tsgen._validation import is_int
from tsgen.components.mlp import MLP
from tsgen.components.positive import positive

__all__ = ["CELLS", "DiagonalGaussian", "RecurrentCell"]

#: recurrent cells by name
CELLS = {"gru": nn.GRUCell, "lstm": nn.LSTMCell}


class DiagonalGaussian(nn.Module):
    """``N(mu(u), diag sigma^2(u))`` with event shape ``(Z,)``: an MLP (ReLU hidden layers) of the
    features ``u`` ``(..., in_features)`` to ``mu`` and, through :func:`positive`, ``sigma``."""

    def __init__(self, in_features: int, hidden_sizes: Sequence[int], latent_dim: int):
        super().__init__()
        self.net = MLP(in_features, hidden_sizes, 2 * latent_dim)

    def forward(self, features: Tensor) -> Independent:
        loc, raw = self.net(features).chunk(2, dim=-1)
        return Independent(Normal(loc, positive(raw), validate_args=False), 1)


class RecurrentCell(nn.Module):
    """One step of a GRU or LSTM: ``(h, c) <- cell(inputs, (h, c))`` for inputs ``(..., in)``.

    ``h`` and ``c`` are ``(..., H)``; ``c`` is None for a GRU.
    """

    def __init__(self, cell: str, input_size: int, hidden_size: int):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"`cell` must be one of {sorted(CELLS)}; got {cell!r}.")
        if not is_int(hidden_size) or hidden_size < 1:
            raise ValueError(f"`hidden_size` must be a positive integer; got {hidden_size!r}.")
        self.lstm = cell == "lstm"
        self.hidden_size = int(hidden_size)
        self.cell = CELLS[cell](int(input_size), self.hidden_size)

    def initial(self, batch_shape, like: Tensor) -> tuple[Tensor, Tensor | None]:
        """Zero ``(h, c)`` with batch shape ``batch_shape``."""
        h = like.new_zeros(*batch_shape, self.hidden_size)
        return h, (h.clone() if self.lstm else None)

    def forward(self, inputs: Tensor, h: Tensor, c: Tensor | None) -> tuple[Tensor, Tensor | None]:
        shape = inputs.shape[:-1]
        flat_in, flat_h = inputs.reshape(-1, inputs.shape[-1]), h.reshape(-1, self.hidden_size)
        if self.lstm:
            h, c = self.cell(flat_in, (flat_h, c.reshape(-1, self.hidden_size)))
            return h.reshape(*shape, -1), c.reshape(*shape, -1)
        return self.cell(flat_in, flat_h).reshape(*shape, -1), None

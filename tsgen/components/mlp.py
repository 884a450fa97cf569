"""A plain multilayer perceptron, the building block of emissions, transitions and combiners."""
from __future__ import annotations

from typing import Sequence

from torch import nn

from tsgen._validation import is_int


class MLP(nn.Module):
    """``h_0 = x``, ``h_k = act(W_k h_{k-1} + b_k)``, output ``final(W_out h_K + b_out)``.

    Parameters
    ----------
    in_features, out_features : int
        Input and output widths.
    hidden_sizes : sequence of int
        Widths of the hidden layers (empty: a single linear map).
    activation : type of nn.Module
        Hidden nonlinearity, instantiated once per layer.
    final_activation : type of nn.Module or None
        Applied to the output (None: identity).
    """

    def __init__(
        self,
        in_features: int,
        hidden_sizes: Sequence[int],
        out_features: int,
        activation: type[nn.Module] = nn.ReLU,
        final_activation: type[nn.Module] | None = None,
    ):
        super().__init__()
        sizes = [in_features, *hidden_sizes, out_features]
        for k, size in enumerate(sizes):
            if not is_int(size) or size < 1:
                raise ValueError(
                    f"`in_features`, `hidden_sizes` and `out_features` must be positive integers; got {sizes!r}."
                )
        layers: list[nn.Module] = []
        for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(n_in, n_out))
            last = k == len(sizes) - 2
            if not last:
                layers.append(activation())
            elif final_activation is not None:
                layers.append(final_activation())
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)

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


class ConditionalMLP(nn.Module):
    """An :class:`MLP` of ``cat(x, c)`` whose context ``c`` is shared by many ``x`` (samples, grid points).

    The first layer is linear in the concatenation, ``W [x; c] = W_x x + W_c c``,
    so ``condition(c)`` computes the context's part once and ``forward``
    broadcasts it over any leading sample dimensions of ``x``: the cost of
    ``K`` draws per context is ``K`` times the network on ``x`` alone, not on
    ``x`` and the (usually much wider) context.

    Parameters
    ----------
    in_features, context_features : int
        Widths of ``x`` and ``c``.
    hidden_sizes : sequence of int
        At least one hidden layer (the first is where ``x`` and ``c`` meet).
    out_features : int
    activation : type of nn.Module
    final_activation : type of nn.Module or None
    """

    def __init__(self, in_features: int, context_features: int, hidden_sizes: Sequence[int], out_features: int,
                 activation: type[nn.Module] = nn.ReLU, final_activation: type[nn.Module] | None = None):
        super().__init__()
        hidden_sizes = list(hidden_sizes)
        if not hidden_sizes:
            raise ValueError("`hidden_sizes` must name at least one hidden layer; got [].")
        for arg, value in (("in_features", in_features), ("context_features", context_features),
                           ("hidden_sizes[0]", hidden_sizes[0])):
            if not is_int(value) or value < 1:
                raise ValueError(f"`{arg}` must be a positive integer; got {value!r}.")
        self.input_layer = nn.Linear(in_features, hidden_sizes[0])
        self.context_layer = nn.Linear(context_features, hidden_sizes[0], bias=False)
        self.activation = activation()
        self.rest = MLP(hidden_sizes[0], hidden_sizes[1:], out_features, activation, final_activation)

    def condition(self, context):
        """The context's part of the first layer, ``(..., hidden_sizes[0])``."""
        return self.context_layer(context)

    def forward(self, x, conditioned):
        """``x`` ``(*sample, ..., in_features)`` with ``conditioned = condition(c)`` broadcastable to
        ``(*sample, ..., hidden_sizes[0])`` -> ``(*sample, ..., out_features)``."""
        return self.rest(self.activation(self.input_layer(x) + conditioned))

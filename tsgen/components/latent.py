"""Building blocks of the stochastic recurrent models (VRNN, and STORN/SRNN after it).

- :class:`DiagonalGaussian`: features ``u`` to ``N(mu(u), diag sigma^2(u))``,
  the learned priors and filtering posteriors of these models;
- :class:`RecurrentCell`: one GRU or LSTM step over inputs with any leading
  dimensions, so particles, samples and series share one call;
- :class:`GaussianPair`: a prior and a guide evaluated together in a training
  pass's loop over time (the fused form of the two networks' steps).

Training passes (``rollout``) loop over time in Python with a batch of a few
dozen rows, so their cost is the number of operations per step, not the
arithmetic: whatever does not depend on the sampled latents (the data's part
of a first layer or of a recurrence's input) is computed for every step in
one call before the loop, the rows of all draws and series are one flat
batch inside it, and the loop keeps only the operations that read the latent.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Independent, Normal, kl_divergence
from torch.nn import functional as F

from tsgen._validation import is_int
from tsgen.components.mlp import MLP
from tsgen.components.positive import positive

__all__ = ["CELLS", "DiagonalGaussian", "GaussianPair", "RecurrentCell", "batch_major", "diagonal_normal", "time_major"]

#: recurrent cells by name
CELLS = {"gru": nn.GRUCell, "lstm": nn.LSTMCell}


def diagonal_normal(loc: Tensor, scale: Tensor) -> Independent:
    """``N(loc, diag scale^2)`` with event shape ``(Z,)`` (arguments unchecked: the networks make them valid)."""
    return Independent(Normal(loc, scale, validate_args=False), 1)


class DiagonalGaussian(nn.Module):
    """``N(mu(u), diag sigma^2(u))`` with event shape ``(Z,)``: an MLP (ReLU hidden layers) of the
    features ``u`` ``(..., in_features)`` to ``mu`` and, through :func:`positive`, ``sigma``."""

    def __init__(self, in_features: int, hidden_sizes: Sequence[int], latent_dim: int):
        super().__init__()
        self.net = MLP(in_features, hidden_sizes, 2 * latent_dim)

    def forward(self, features: Tensor) -> Independent:
        loc, raw = self.net(features).chunk(2, dim=-1)
        return diagonal_normal(loc, positive(raw))

    def layers(self) -> tuple[nn.Linear, nn.Linear]:
        """The first and last linear maps (refuses other than one hidden layer: what :class:`GaussianPair` fuses)."""
        linears = [m for m in self.net.net if isinstance(m, nn.Linear)]
        if len(linears) != 2:
            raise ValueError(f"GaussianPair needs one hidden layer; this network has {len(linears) - 1}.")
        return linears[0], linears[1]


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

    def project(self, known: Tensor) -> Tensor:
        """``W_ih[:, :k] known + b_ih`` for inputs whose first ``k`` columns ``known`` ``(..., k)`` are known before
        a loop (every step in one call); :meth:`step` adds the rest."""
        return F.linear(known, self.cell.weight_ih[:, : known.shape[-1]], self.cell.bias_ih)

    def step(self, rest: Tensor, projected: Tensor, h: Tensor, c: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """One step on flat ``(N, .)`` rows: the input's last columns ``rest`` and :meth:`project`'s output for
        its first ones (the same ``(h, c)`` as :meth:`forward` on the whole input)."""
        # the cell kernels add their input bias by broadcasting, so the projected part rides in as that bias
        w_rest = self.cell.weight_ih[:, self.cell.input_size - rest.shape[-1]:]
        if self.lstm:
            return torch.lstm_cell(rest, (h, c), w_rest, self.cell.weight_hh, projected, self.cell.bias_hh)
        return torch.gru_cell(rest, h, w_rest, self.cell.weight_hh, projected, self.cell.bias_hh), None

    def scan(self, inputs: Tensor, h: Tensor, c: Tensor | None) -> Tensor:
        """``h_{1:T}`` ``(..., T, H)`` over inputs ``(..., T, in)`` known for every step, from ``(h, c)``
        ``(..., H)``."""
        shape = inputs.shape[:-2]
        projected = self.project(inputs).reshape(-1, *inputs.shape[-2:-1], self.cell.weight_ih.shape[0]).unbind(1)
        h = h.reshape(-1, self.hidden_size)
        c = None if c is None else c.reshape(-1, self.hidden_size)
        nothing = h.new_zeros(h.shape[0], 0)  # every input column is in the projection
        hs = []
        for gates in projected:
            h, c = self.step(nothing, gates, h, c)
            hs.append(h)
        return torch.stack(hs, -2).reshape(*shape, len(hs), self.hidden_size)


def time_major(steps: Tensor, n_samples: int) -> Tensor:
    """Step tensors ``(B, T, k)`` repeated for ``n_samples`` draws as ``(T, n_samples * B, k)``: the flat rows
    (draw-major, as ``(S, B)`` flattens) of each step of a loop over time."""
    B, T = steps.shape[:2]
    return steps.expand(n_samples, *steps.shape).permute(2, 0, 1, 3).reshape(T, n_samples * B, -1)


def batch_major(steps: Tensor, n_samples: int) -> Tensor:
    """The inverse of :func:`time_major`: ``(T, S * B, k)`` to ``(S, B, T, k)``."""
    T, N = steps.shape[:2]
    return steps.reshape(T, n_samples, N // n_samples, -1).permute(1, 2, 0, 3)


class GaussianPair:
    """A step's prior and guide (:class:`DiagonalGaussian` s with one hidden layer) as one network, for a loop.

    Both read a value ``v`` the loop computes (a latent or a recurrent state)
    beside step inputs known before the loop, ``(B, T, k)``: the prior
    ``[v, prior_known_t]`` and the guide ``[v, guide_known_t]`` when
    ``v_first``, else ``[prior_known_t, v]`` and ``[guide_known_t, v]``
    (None: the network reads ``v`` alone). The known parts of both first
    layers are projected for every step at once; per step, ``v`` meets one
    matrix holding both first layers and the hidden units one block-diagonal
    matrix holding both last layers, so the two networks cost two matrix
    products. The weights are the networks' own (gradients reach them); build
    one per pass. With ``residual`` the guide's mean is the prior's plus the
    guide network's output (SRNN's "Resq").

    Rows are flat, ``N = n_samples * B`` (:func:`time_major`); ``observed``
    ``(B, T)`` marks the steps whose latent the guide draws (elsewhere the prior).
    """

    def __init__(self, prior: DiagonalGaussian, guide: DiagonalGaussian, prior_known: Tensor | None,
                 guide_known: Tensor | None, observed: Tensor, n_samples: int, v_first: bool, residual: bool = False):
        (p1, p2), (q1, q2) = prior.layers(), guide.layers()
        v_size = p1.in_features - (0 if prior_known is None else prior_known.shape[-1])
        known = []
        for layer, steps in ((p1, prior_known), (q1, guide_known)):
            if steps is None:
                known.append(layer.bias)
                continue
            w = layer.weight[:, v_size:] if v_first else layer.weight[:, : steps.shape[-1]]
            known.append(time_major(F.linear(steps, w, layer.bias), n_samples))
        if known[0].dim() == 1 and known[1].dim() == 1:
            raise ValueError("GaussianPair needs known step inputs for the prior or the guide.")
        T, N = next(k.shape[:2] for k in known if k.dim() == 3)
        self.known = torch.cat([k.expand(T, N, -1) for k in known], -1).unbind(0)
        self.first = torch.cat([(w.weight[:, :v_size] if v_first else w.weight[:, w.in_features - v_size:])
                                for w in (p1, q1)]).t()
        self.last = torch.block_diag(p2.weight, q2.weight).t()
        self.last_bias = torch.cat([p2.bias, q2.bias])
        self.latent_dim, self.n_samples = p2.out_features // 2, n_samples
        self.residual, self.observed = residual, observed
        self.seen = time_major(observed[..., None], n_samples).unbind(0)
        self.noise = torch.randn(T, N, self.latent_dim, dtype=self.last.dtype, device=self.last.device).unbind(0)

    def __call__(self, v: Tensor, t: int) -> Tensor:
        """The networks' outputs at step ``t``: ``(N, 4Z)`` rows ``[prior loc, prior raw scale, guide loc (or
        correction), guide raw scale]`` (scales through :func:`positive`)."""
        hidden = torch.relu(torch.addmm(self.known[t], v, self.first))
        return torch.addmm(self.last_bias, hidden, self.last)

    def draw(self, out: Tensor, t: int) -> Tensor:
        """``z_t`` ``(N, Z)`` (``rsample``) from the guide where step ``t`` is observed, else from the prior:
        one standard normal serves either."""
        Z, seen = self.latent_dim, self.seen[t]
        if self.residual:
            loc = torch.where(seen, out[:, :Z] + out[:, 2 * Z: 3 * Z], out[:, :Z])
            raw = torch.where(seen, out[:, 3 * Z:], out[:, Z: 2 * Z])
        else:
            loc, raw = torch.where(seen, out[:, 2 * Z:], out[:, : 2 * Z]).chunk(2, -1)
        return torch.addcmul(loc, positive(raw), self.noise[t])

    def terms(self, outs: list[Tensor], z: Tensor) -> tuple[Tensor, Tensor]:
        """``log p(z_t) - log q(z_t)`` and ``KL(q_t || p_t)`` ``(S, B, T)`` for the draws ``z`` ``(S, B, T, Z)``
        from every step's outputs ``outs`` at once (0 where not observed)."""
        prior_loc, prior_raw, q_loc, q_raw = batch_major(torch.stack(outs), self.n_samples).chunk(4, -1)
        prior = diagonal_normal(prior_loc, positive(prior_raw))
        q = diagonal_normal(prior_loc + q_loc if self.residual else q_loc, positive(q_raw))
        zero = torch.zeros((), dtype=z.dtype, device=z.device)
        return (torch.where(self.observed, prior.log_prob(z) - q.log_prob(z), zero),
                torch.where(self.observed, kl_divergence(q, prior), zero))

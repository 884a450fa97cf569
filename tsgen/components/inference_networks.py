r"""Inference networks ``q(z_{1:T} | x_{1:T})`` of the Deep Markov Model.

Krishnan, Shalit & Sontag (2017), "Structured Inference Networks for
Nonlinear State Space Models", section 4. An RNN summarises the
observations into ``h_t``; a combiner turns ``(z_{t-1}, h_t)`` into a
diagonal Gaussian over ``z_t``:

- ``"dks"`` (the paper's ST-R, Pyro's DMM guide): backward RNN over
  ``x_{t:T}``, ``q(z_t | z_{t-1}, x_{t:T})`` (the structure of the true
  posterior);
- ``"st-l"``: forward RNN over ``x_{1:t}``, ``q(z_t | z_{t-1}, x_{1:t})``, a
  filtering posterior;
- ``"st-lr"``: forward and backward RNNs, ``q(z_t | z_{t-1}, x_{1:T})``;
- ``"mf-lr"``: forward and backward RNNs, mean field
  ``q(z_t | x_{1:T})`` (no dependence on ``z_{t-1}``).

Combiner (eq. 8 of the paper, with ``n`` RNN directions)::

    h_comb = (tanh(W z_{t-1} + b) + sum_directions h_t) / (n + 1)
    loc    = A h_comb + a,      scale = softplus(C h_comb + c) + floor   (tsgen.components.positive)

Mean field uses ``h_comb = sum_directions h_t / n``.

Speed: the ReLU RNN and the structured guide's sequential draw run as
hand-differentiated scans (:class:`_ReluRNNScan`, :class:`_CombinerScan`):
the forward loop pays two small matmuls per step, the backward loop carries
only the state gradient, and weight gradients are single matmuls over all
steps instead of per-step accumulations; rows whose sequence has ended are
skipped, as in a packed sequence. Both are checked against finite
differences (``torch.autograd.gradcheck``) in the tests. With flows the
draw goes through plain autograd.

Width and step size: Adam moves every entry of a matrix by about the
learning rate per step, whatever the gradient's scale. The ReLU RNN's
states are non-negative, so a step that raises whole rows of the recurrent
matrix ``W_hh`` (the sign pattern of a gradient ``sum_t delta_t h_{t-1}^T``
with ``h >= 0``) raises the recurrence's gain by up to
``learning_rate * rnn_dim``: 0.6 per step at the paper's ``rnn_dim = 600``
and Adam's usual 1e-3. After a few such steps the gain passes 1 and the
summaries grow geometrically along a sequence (on JSB Chorales, |h| reached
1.8e5 at the fifth minibatch and the gradient's norm overflowed float32).
:meth:`StructuredInferenceNetwork.learning_rate_scales` therefore asks the
training loop for ``learning_rate * min(1, 64 / rnn_dim)`` on the ReLU RNN's
recurrent matrices: the gain then moves per step no more than at the
default width of 64, where nothing changes (Adam's 1/fan-in rule for hidden
matrices, Yang et al. 2022, "Tensor Programs V"). Gated cells (GRU, LSTM)
bound their states and keep the full rate.

Sequences are ragged: ``step_mask`` ``(B, T)`` marks the valid prefix of each
sequence (True then False). The backward RNN reverses every sequence within
its own length, so padding never leaks into a summary and no packing is
needed. Missing values enter the RNN as zeros; with ``observe_mask=True`` the
observation mask is appended to the RNN input so it can tell a zero from a
gap.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from tsgen._validation import is_int
from tsgen.components.positive import positive, positive_derivative

__all__ = [
    "INFERENCE_NETWORKS",
    "Combiner",
    "GuideSample",
    "StructuredInferenceNetwork",
    "reverse_within_lengths",
]

#: inference name -> (RNN directions, whether q(z_t) depends on z_{t-1})
#: "left" is a forward RNN over x_{1:t}, "right" a backward RNN over x_{t:T} (the paper's names)
INFERENCE_NETWORKS: dict[str, tuple[tuple[str, ...], bool]] = {
    "dks": (("right",), True),
    "st-l": (("left",), True),
    "st-lr": (("left", "right"), True),
    "mf-lr": (("left", "right"), False),
}
_RNN_TYPES = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
#: widest ReLU RNN whose recurrent matrices learn at the full learning rate (module docstring)
RECURRENT_REFERENCE_WIDTH = 64


def reverse_within_lengths(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse ``x`` ``(B, T, ...)`` along time within each sequence's length.

    Steps at or beyond ``lengths[b]`` stay where they are, so a padded batch
    stays padded at the end. The map is its own inverse.
    """
    steps = torch.arange(x.shape[1], device=x.device)
    lengths = lengths.to(x.device)
    index = torch.where(steps < lengths[:, None], lengths[:, None] - 1 - steps, steps)
    index = index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return torch.gather(x, 1, index)


def _longest_first(lengths: Tensor, steps: int) -> tuple[Tensor, list[int]]:
    """Row order by decreasing length and the number of rows still running at each step."""
    lengths = lengths.clamp(0, steps)
    order = torch.argsort(lengths, descending=True, stable=True)
    finished_by = torch.bincount(lengths.cpu(), minlength=steps + 1).cumsum(0)
    active = (len(lengths) - finished_by[:steps]).tolist()
    return order, active[: int(lengths.max()) if len(lengths) else 0]


def _active_positions(active: list[int], rows: int, steps: int, device) -> Tensor:
    """``(rows, steps)`` bool: the (row, step) positions a scan computed."""
    counts = torch.zeros(steps, dtype=torch.long)
    counts[: len(active)] = torch.tensor(active, dtype=torch.long)
    return (torch.arange(rows)[:, None] < counts[None, :]).to(device)


class _ReluRNNScan(torch.autograd.Function):
    r"""``h_t = relu(a_t + h_{t-1} W^T)`` over ``t`` with a hand-written backward.

    ``a`` ``(B, T, H)`` holds the input projections of all steps (computed
    outside in one matmul). Rows are sorted by length, longest first, and
    ``active[t]`` rows are still running at step ``t`` (as in a packed
    sequence): finished rows cost nothing and output 0. Autograd through a Python loop would form and
    accumulate ``dL/dW`` at every step; here the backward loop carries only
    ``dL/da_t`` and the weight gradient is one matmul at the end:
    ``dL/dW = sum_t (dL/da_t)^T h_{t-1}``.
    """

    @staticmethod
    def forward(ctx, projected, h0, weight, active):
        hs = torch.zeros_like(projected)
        h = h0.clone()
        weight_t = weight.t()
        for t, n in enumerate(active):
            h[:n] = torch.relu(torch.addmm(projected[:n, t], h[:n], weight_t))
            hs[:n, t] = h[:n]
        ctx.save_for_backward(h0, weight, hs)
        ctx.active = active
        return hs

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_hs):
        h0, weight, hs = ctx.saved_tensors
        grad_pre = torch.zeros_like(hs)
        carried = torch.zeros_like(h0)
        for t in range(len(ctx.active) - 1, -1, -1):
            n = ctx.active[t]
            step = (grad_hs[:n, t] + carried[:n]) * (hs[:n, t] > 0)
            grad_pre[:n, t] = step
            carried[:n] = step @ weight
        # weight gradient over the computed positions only (padding would add zeros)
        computed = _active_positions(ctx.active, hs.shape[0], hs.shape[1], hs.device)
        previous = torch.cat([h0.unsqueeze(1), hs[:, :-1]], dim=1)
        grad_weight = grad_pre[computed].t() @ previous[computed]
        return grad_pre, carried, grad_weight, None


class _CombinerScan(torch.autograd.Function):
    r"""The structured guide's draw ``z_{1:T}`` with a hand-written backward.

    Per step: ``u_t = tanh(z_{t-1} W^T + b)``, ``[loc_t, r_t] = c_t + u_t V``,
    ``scale_t = positive(r_t)`` (softplus plus the floor), ``z_t = loc_t + scale_t eps_t``. The backward
    loop carries ``dL/dz_t`` and stores the per-step pre-activation gradients;
    the gradients of ``W``, ``b`` and ``V`` are then single matmuls over all
    steps instead of per-step accumulations.

    Inputs: ``terms`` ``c`` ``(R, T, 2Z)``, ``noise`` ``(R, T, Z)``, ``z0``
    ``(R, Z)``, ``W`` ``(H, Z)``, ``b`` ``(H,)``, ``V`` ``(H, 2Z)`` and
    ``active`` (rows still running at each step; rows sorted longest first).
    Returns ``z``, ``loc``, ``scale``, each ``(R, T, Z)``; finished rows read
    ``z = loc = 0``, ``scale = 1``.
    """

    @staticmethod
    def forward(ctx, terms, noise, z0, weight, bias, out_weight, active):
        rows, steps, latent = noise.shape
        zs, locs, scales = torch.zeros_like(noise), torch.zeros_like(noise), torch.ones_like(noise)
        hidden = terms.new_zeros(rows, steps, weight.shape[0])
        z = z0
        weight_t = weight.t()
        for t, n in enumerate(active):
            u = torch.tanh(torch.addmm(bias, z[:n], weight_t))
            loc, pre_scale = torch.addmm(terms[:n, t], u, out_weight).split(latent, dim=-1)
            scale = positive(pre_scale)
            hidden[:n, t], zs[:n, t], locs[:n, t], scales[:n, t] = u, torch.addcmul(loc, scale, noise[:n, t]), loc, scale
            z = zs[:, t]
        ctx.save_for_backward(noise, z0, weight, out_weight, hidden, zs, scales)
        ctx.active = active
        return zs, locs, scales

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_z, grad_loc, grad_scale):
        noise, z0, weight, out_weight, hidden, zs, scales = ctx.saved_tensors
        rows, steps, latent = noise.shape
        zero = torch.zeros((), dtype=noise.dtype, device=noise.device)
        grad_z = zero.expand_as(noise) if grad_z is None else grad_z
        grad_loc = zero.expand_as(noise) if grad_loc is None else grad_loc
        grad_scale = zero.expand_as(noise) if grad_scale is None else grad_scale
        grad_params = noise.new_zeros(rows, steps, 2 * latent)
        grad_pre_tanh = torch.zeros_like(hidden)
        dscale = positive_derivative(scales)
        out_weight_t = out_weight.t()
        carried = torch.zeros_like(z0)
        # only the steps some row computed: when every sequence of the batch ends
        # early (trailing missing values) the later steps were never run
        for t in range(len(ctx.active) - 1, -1, -1):
            n = ctx.active[t]
            through_z = grad_z[:n, t] + carried[:n]
            grad_params[:n, t, :latent] = grad_loc[:n, t] + through_z
            grad_params[:n, t, latent:] = (grad_scale[:n, t] + through_z * noise[:n, t]) * dscale[:n, t]
            u = hidden[:n, t]
            step = (grad_params[:n, t] @ out_weight_t) * (1 - u * u)
            grad_pre_tanh[:n, t] = step
            carried[:n] = step @ weight
        computed = _active_positions(ctx.active, rows, steps, noise.device)
        previous = torch.cat([z0.unsqueeze(1), zs[:, :-1]], dim=1)
        flat_pre = grad_pre_tanh[computed]
        grad_weight = flat_pre.t() @ previous[computed]
        grad_bias = flat_pre.sum(0)
        grad_out = hidden[computed].t() @ grad_params[computed]
        return grad_params, None, carried, grad_weight, grad_bias, grad_out, None


class GuideSample(NamedTuple):
    """Draws from the guide, each with leading sample dims ``(S, B, T)``.

    ``z``: the latent path ``(S, B, T, Z)``; ``loc``/``scale``: the Gaussian
    of each step before any flow; ``base``: the Gaussian draw (equal to ``z``
    without flows); ``log_det``: ``log |dz/dbase|`` per step ``(S, B, T)`` or
    ``None`` without flows.
    """

    z: Tensor
    loc: Tensor
    scale: Tensor
    base: Tensor
    log_det: Tensor | None

    def log_q(self) -> Tensor:
        """``log q(z_t | ...)`` per step ``(S, B, T)``."""
        log_q = torch.distributions.Normal(self.loc, self.scale).log_prob(self.base).sum(-1)
        return log_q if self.log_det is None else log_q - self.log_det


class Combiner(nn.Module):
    """``(z_{t-1}, h_t) -> (loc, scale)`` of ``q(z_t | z_{t-1}, h_t)`` (see module docstring).

    The output layer is linear in ``h_comb``, so the RNN's share of it is
    computed for all steps at once by :meth:`summary_term`; the sequential
    loop only pays for the ``z_{t-1}`` share (:meth:`step`).
    """

    def __init__(self, latent_dim: int, rnn_dim: int, n_directions: int = 1, uses_previous: bool = True):
        super().__init__()
        self.latent_dim = latent_dim
        self.uses_previous = uses_previous
        self.weight = 1.0 / (n_directions + (1 if uses_previous else 0))
        self.z_to_hidden = nn.Linear(latent_dim, rnn_dim) if uses_previous else None
        self.hidden_to_params = nn.Linear(rnn_dim, 2 * latent_dim)

    def summary_term(self, summary: Tensor) -> Tensor:
        """The RNN's share of the pre-activation ``(..., 2Z)``, bias included."""
        return self.hidden_to_params(self.weight * summary)

    def step(self, z_prev: Tensor | None, summary_term: Tensor) -> tuple[Tensor, Tensor]:
        """``(loc, scale)`` from ``z_prev`` ``(..., Z)`` and a precomputed summary term."""
        params = summary_term
        if self.uses_previous:
            hidden = torch.tanh(self.z_to_hidden(z_prev))
            params = params + F.linear(self.weight * hidden, self.hidden_to_params.weight)
        loc, pre_scale = params.split(self.latent_dim, dim=-1)
        return loc, positive(pre_scale)

    def recurrent_weights(self) -> tuple[Tensor, Tensor, Tensor] | None:
        """``(W, b, V)`` with ``params_t = term_t + tanh(z_{t-1} W^T + b) V`` (``V`` already
        carries the averaging weight), so a loop pays two matmuls per step; None for mean field."""
        if not self.uses_previous:
            return None
        return self.z_to_hidden.weight, self.z_to_hidden.bias, (self.weight * self.hidden_to_params.weight).t()

    def forward(self, z_prev: Tensor | None, summary: Tensor) -> tuple[Tensor, Tensor]:
        return self.step(z_prev, self.summary_term(summary))


class StructuredInferenceNetwork(nn.Module):
    """RNN summaries plus a combiner: the guide ``q(z_{1:T} | x_{1:T})``.

    Parameters
    ----------
    data_dim : int
        ``D``, the size of ``x_t``.
    latent_dim : int
        ``Z``.
    rnn_dim : int
        Hidden size of each RNN direction.
    inference : {"dks", "st-l", "st-lr", "mf-lr"}
        Which structure (module docstring).
    rnn_type : {"rnn", "gru", "lstm"}
        ``"rnn"`` is the ReLU RNN of Pyro's DMM example.
    num_layers, dropout : RNN depth and dropout between layers.
    observe_mask : bool
        Append the observation mask to the RNN input.
    iafs, iaf_dim : int
        Number of inverse autoregressive flows applied to each ``z_t`` draw
        (``pyro.distributions.transforms.affine_autoregressive``) and their
        hidden width; 0 flows gives the plain Gaussian guide.
    """

    def __init__(
        self,
        data_dim: int,
        latent_dim: int,
        rnn_dim: int,
        inference: str = "dks",
        rnn_type: str = "rnn",
        num_layers: int = 1,
        dropout: float = 0.0,
        observe_mask: bool = False,
        iafs: int = 0,
        iaf_dim: int = 100,
    ):
        super().__init__()
        if inference not in INFERENCE_NETWORKS:
            raise ValueError(f"`inference` must be one of {sorted(INFERENCE_NETWORKS)}; got {inference!r}.")
        if rnn_type not in _RNN_TYPES:
            raise ValueError(f"`rnn_type` must be one of {sorted(_RNN_TYPES)}; got {rnn_type!r}.")
        if not is_int(iafs) or iafs < 0:
            raise ValueError(f"`iafs` must be a non-negative integer; got {iafs!r}.")
        self.inference = inference
        self.latent_dim = latent_dim
        self.observe_mask = observe_mask
        self.directions, uses_previous = INFERENCE_NETWORKS[inference]
        input_size = data_dim * (2 if observe_mask else 1)
        # torch's recurrent layers take Python numbers only; the estimator may hold numpy ones
        rnn_kwargs = dict(input_size=int(input_size), hidden_size=int(rnn_dim), num_layers=int(num_layers),
                          batch_first=True, dropout=float(dropout) if num_layers > 1 else 0.0)
        if rnn_type == "rnn":
            rnn_kwargs["nonlinearity"] = "relu"
        self.rnns = nn.ModuleDict({d: _RNN_TYPES[rnn_type](**rnn_kwargs) for d in self.directions})
        # learned initial RNN states and the guide's z_0, as in Pyro's DMM example
        n_states = 2 if rnn_type == "lstm" else 1
        self.h0 = nn.ParameterDict({
            d: nn.Parameter(torch.zeros(n_states, num_layers, 1, rnn_dim)) for d in self.directions
        })
        self.z_q_0 = nn.Parameter(torch.zeros(latent_dim)) if uses_previous else None
        self.combiner = Combiner(latent_dim, rnn_dim, len(self.directions), uses_previous)
        if iafs:
            from pyro.distributions.transforms import affine_autoregressive

            self.iafs = nn.ModuleList([affine_autoregressive(latent_dim, hidden_dims=[iaf_dim]) for _ in range(iafs)])
        else:
            self.iafs = nn.ModuleList()

    def learning_rate_scales(self) -> dict[nn.Parameter, float]:
        """Factors on the optimiser's learning rate for some parameters (the rest take 1).

        ``min(1, 64 / rnn_dim)`` for every recurrent matrix ``weight_hh_l*``
        of a ReLU RNN, so that one Adam step changes the recurrence's gain
        no more than at the default width (module docstring); gated cells
        and every other parameter keep the full rate.
        """
        scales = {}
        for rnn in self.rnns.values():
            if isinstance(rnn, nn.RNN) and rnn.hidden_size > RECURRENT_REFERENCE_WIDTH:
                for layer in range(rnn.num_layers):
                    scales[getattr(rnn, f"weight_hh_l{layer}")] = RECURRENT_REFERENCE_WIDTH / rnn.hidden_size
        return scales

    @property
    def causal(self) -> bool:
        """Whether ``q(z_t | ...)`` reads only ``x_{1:t}`` (the forward ``"st-l"`` guide)."""
        return self.directions == ("left",)

    # ------------------------------------------------------------ summaries
    def summarise(self, values: Tensor, mask: Tensor, step_mask: Tensor) -> Tensor:
        """Sum of the RNN directions' outputs ``(B, T, rnn_dim)``.

        ``values``/``mask`` ``(B, T, D)``; NaN or padded entries are read as 0.
        """
        inputs = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))
        if self.observe_mask:
            inputs = torch.cat([inputs, mask.to(inputs.dtype)], dim=-1)
        lengths = step_mask.sum(1)
        # gated cells go through torch's packed RNN (padding skipped, as in Pyro's example);
        # the ReLU RNN through the hand-differentiated scan. The backward direction
        # reverses each sequence within its own length first.
        packed_lengths = lengths.clamp_min(1).cpu() if bool((lengths < inputs.shape[1]).any()) else None
        total = None
        for direction in self.directions:
            rnn = self.rnns[direction]
            seq = reverse_within_lengths(inputs, lengths) if direction == "right" else inputs
            if isinstance(rnn, nn.RNN):
                out = self._relu_rnn(rnn, seq, self.h0[direction][0], lengths)
            else:
                h0 = self.h0[direction].expand(-1, -1, inputs.shape[0], -1).contiguous()
                hx = (h0[0], h0[1]) if isinstance(rnn, nn.LSTM) else h0[0]
                if packed_lengths is None:
                    out, _ = rnn(seq, hx)
                else:
                    packed = nn.utils.rnn.pack_padded_sequence(
                        seq, packed_lengths, batch_first=True, enforce_sorted=False
                    )
                    out, _ = rnn(packed, hx)
                    out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=inputs.shape[1])
            if direction == "right":
                out = reverse_within_lengths(out, lengths)
            total = out if total is None else total + out
        return total

    def _relu_rnn(self, rnn: nn.RNN, inputs: Tensor, h0: Tensor, lengths: Tensor) -> Tensor:
        """``nn.RNN(nonlinearity="relu")`` with its own parameters, run by :class:`_ReluRNNScan`.

        Outputs after a sequence's end are 0, as with a packed sequence.
        """
        order, active = _longest_first(lengths, inputs.shape[1])
        out = inputs[order]
        for layer in range(rnn.num_layers):
            if layer and rnn.dropout and self.training:
                out = F.dropout(out, rnn.dropout)
            bias = getattr(rnn, f"bias_ih_l{layer}") + getattr(rnn, f"bias_hh_l{layer}")
            projected = F.linear(out, getattr(rnn, f"weight_ih_l{layer}"), bias)
            start = h0[layer].expand(inputs.shape[0], -1)
            out = _ReluRNNScan.apply(projected, start, getattr(rnn, f"weight_hh_l{layer}"), active)
        return out[torch.argsort(order)]

    # -------------------------------------------------------------- sample
    def sample(self, summary: Tensor, noise: Tensor, lengths: Tensor | None = None) -> GuideSample:
        """Draw ``z_{1:T}`` given the summaries and standard-normal ``noise``.

        ``summary`` ``(B, T, H)``; ``noise`` ``(S, B, T, Z)`` (pass it in so the
        caller owns the randomness); ``lengths`` ``(B,)`` lets the loop skip
        steps after each sequence's end (where draws are then ``z = loc = 0``,
        ``scale = 1``, to be masked by the caller). Mean field draws all steps
        at once; structured guides loop over time, paying only for the
        ``z_{t-1}`` share of the combiner per step.
        """
        terms = self.combiner.summary_term(summary)  # (B, T, 2Z)
        if not self.combiner.uses_previous and not self.iafs:
            loc, pre_scale = terms.split(self.latent_dim, dim=-1)
            loc = loc.expand(noise.shape)
            scale = positive(pre_scale).expand(noise.shape)
            z = loc + scale * noise
            return GuideSample(z, loc, scale, z, None)
        sample_shape, n_steps, latent = noise.shape[:-3], noise.shape[-2], self.latent_dim
        rows = noise[..., 0, 0].numel()  # S * B draws advance together as one flat batch
        term_rows = terms.expand(*sample_shape, *terms.shape).reshape(rows, n_steps, -1)
        noise_rows = noise.reshape(rows, n_steps, latent)
        weights = self.combiner.recurrent_weights()
        z_prev = None if self.z_q_0 is None else self.z_q_0.expand(rows, latent)
        if weights is not None and not self.iafs:
            row_lengths = torch.full((rows,), n_steps) if lengths is None else lengths.cpu().repeat(rows // len(lengths))
            order, active = _longest_first(row_lengths, n_steps)
            order = order.to(noise.device)
            z, loc, scale = _CombinerScan.apply(term_rows[order], noise_rows[order], z_prev, *weights, active)
            inverse = torch.argsort(order)
            z, loc, scale = (t[inverse].reshape(noise.shape) for t in (z, loc, scale))
            return GuideSample(z, loc, scale, z, None)
        # with flows: autograd through a plain loop. Unbind once: indexing [:, t] inside the
        # loop would make autograd build and fill a full-size zero gradient for every step
        term_steps, noise_steps = term_rows.unbind(1), noise_rows.unbind(1)
        zs, locs, scales, bases, log_dets = [], [], [], [], []
        for term, eps in zip(term_steps, noise_steps):
            params = term
            if weights is not None:
                weight, bias, out_weight = weights
                params = torch.addmm(term, torch.tanh(F.linear(z_prev, weight, bias)), out_weight)
            loc, pre_scale = params.split(latent, dim=-1)
            scale = positive(pre_scale)
            base = torch.addcmul(loc, scale, eps)
            z = base
            if self.iafs:
                log_det = 0.0
                for flow in self.iafs:
                    z_next = flow(z)
                    log_det = log_det + flow.log_abs_det_jacobian(z, z_next)
                    z = z_next
                log_dets.append(log_det)
            zs.append(z)
            locs.append(loc)
            scales.append(scale)
            bases.append(base)
            z_prev = z

        def stack(items, event=(latent,)):
            return torch.stack(items, dim=1).reshape(*noise.shape[:-1], *event)

        z, loc, scale = stack(zs), stack(locs), stack(scales)
        if self.iafs:
            return GuideSample(z, loc, scale, stack(bases), stack(log_dets, ()))
        return GuideSample(z, loc, scale, z, None)

    def forward(self, values: Tensor, mask: Tensor, step_mask: Tensor, noise: Tensor) -> GuideSample:
        return self.sample(self.summarise(values, mask, step_mask), noise, step_mask.sum(-1))

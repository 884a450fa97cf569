"""Solvers of the affine recurrence ``x_{k+1} = L_k x_k + u_k`` over time.

Used for the predicted means of the Kalman filter once the gains are known.
The chunked scan cuts the N steps into K chunks of length C ~ sqrt(N):
(1) every chunk runs from a zero state, all chunks at once (C batched
steps); (2) the chunk start states are chained (K steps); (3) each state is
its chunk-local state plus its start state carried by the product of the
chunk's L's (one batched product). About 2 sqrt(N) Python-level steps
instead of N, and O(N S^2) work (a Hillis-Steele scan would need
O(N S^3 log N)). Vectors are handled as rows (``x^T L^T``) so that the
batched steps are plain ``addmm``/``baddbmm`` calls.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# Above this many input entries the chunk-local states are projected step by
# step instead of being stored (memory traffic beats op count there).
PROJECT_EACH_STEP_ABOVE = 1 << 16


def _chunking(num_steps: int, recursive_chain: bool = False) -> tuple[int, int, int]:
    """Chunk length C, number of chunks K and padding. When the chain of chunk
    starts is itself solved by the chunked scan (``recursive_chain``), shorter
    chunks balance the work: C ~ N^(1/3) for long series."""
    if recursive_chain and num_steps > 1024:
        chunk = math.ceil(num_steps ** (1 / 3))
    else:
        chunk = max(1, math.ceil(math.sqrt(num_steps)))
    num_chunks = math.ceil(num_steps / chunk)
    return chunk, num_chunks, num_chunks * chunk - num_steps


def _chain_starts(chunk_map: Tensor, ends: Tensor, x0: Tensor) -> Tensor:
    """Start states of all chunks ``(B, K, S)`` from ``s_0 = x0`` and the row-form
    recurrence ``s_{k+1} = s_k M + e_k``; ``M`` ``(S, S)`` or ``(B, S, S)``,
    ``ends`` ``(K, B, S)``. Long chains are themselves solved by the chunked scan."""
    num_chunks = ends.shape[0]
    shared = chunk_map.dim() == 2
    if num_chunks > 32:
        rest = affine_recurrence_constant(chunk_map.transpose(-1, -2), ends[:-1].transpose(0, 1), x0)
        return torch.cat([x0.unsqueeze(1), rest], 1)
    start = x0 if shared else x0.unsqueeze(1)
    starts = [start]
    for k in range(num_chunks - 1):
        if shared:
            start = torch.addmm(ends[k], start, chunk_map)
        else:
            start = torch.baddbmm(ends[k].unsqueeze(1), start, chunk_map)
        starts.append(start)
    return torch.stack(starts, 1).reshape(x0.shape[0], num_chunks, x0.shape[-1])


def _to_chunk_major(u: Tensor, num_chunks: int, chunk: int, pad: int) -> Tensor:
    """``(B, N, S)`` -> ``(C, B, K, S)`` contiguous, zero-padded to ``K*C`` steps."""
    if pad:
        u = torch.cat([u, u.new_zeros(u.shape[0], pad, u.shape[-1])], 1)
    return u.reshape(u.shape[0], num_chunks, chunk, u.shape[-1]).permute(2, 0, 1, 3).contiguous()


def _from_chunk_major(states: Tensor, num_steps: int) -> Tensor:
    """``(C, B, K, S)`` -> ``(B, N, S)``."""
    chunk, batch, num_chunks, state_dim = states.shape
    return states.permute(1, 2, 0, 3).reshape(batch, num_chunks * chunk, state_dim)[:, :num_steps]


def affine_recurrence_constant(L: Tensor, u: Tensor, x0: Tensor) -> Tensor:
    """Solve ``x_{k+1} = L x_k + u_k``, ``k = 0..N-1``; returns ``x_1..x_N``.

    ``L`` ``(B, S, S)`` or ``(S, S)`` (shared), ``u`` ``(B, N, S)``, ``x0`` ``(B, S)``.
    """
    batch, num_steps, state_dim = u.shape
    chunk, num_chunks, pad = _chunking(num_steps, recursive_chain=True)
    u_c = _to_chunk_major(u, num_chunks, chunk, pad)  # (C, B, K, S)
    shared = L.dim() == 2
    Lt = L.transpose(-1, -2)
    # Row-form powers (L^T)^1..(L^T)^C by doubling.
    powers = Lt.unsqueeze(-3)
    while powers.shape[-3] < chunk:
        powers = torch.cat([powers, powers @ powers[..., -1:, :, :]], -3)
    powers = powers[..., :chunk, :, :]
    locals_ = [u_c[0]]
    if shared:
        flat = u_c.reshape(chunk, batch * num_chunks, state_dim)
        local = flat[0]
        for j in range(1, chunk):
            local = torch.addmm(flat[j], local, Lt)
            locals_.append(local.view(batch, num_chunks, state_dim))
    else:
        local = u_c[0]
        for j in range(1, chunk):
            local = torch.baddbmm(u_c[j], local, Lt)
            locals_.append(local)
    local_all = torch.stack(locals_)  # (C, B, K, S)
    ends = local_all[-1].transpose(0, 1).contiguous()  # (K, B, S)
    starts_all = _chain_starts(powers[..., -1, :, :], ends, x0)  # (B, K, S)
    # x[j] = start (L^T)^{j+1} + local[j]: one product against all powers side by side.
    side_by_side = powers.transpose(-3, -2).reshape(*powers.shape[:-3], state_dim, chunk * state_dim)
    carried = (starts_all @ side_by_side).reshape(batch, num_chunks, chunk, state_dim)
    return _from_chunk_major(carried.permute(2, 0, 1, 3) + local_all, num_steps)


def affine_recurrence_varying_shared(L: Tensor, u: Tensor, x0: Tensor) -> Tensor:
    """Solve ``x_{k+1} = L_k x_k + u_k`` with ``L`` ``(N, S, S)`` shared by the batch.

    ``u`` ``(B, N, S)``, ``x0`` ``(B, S)``; returns ``x_1..x_N`` ``(B, N, S)``.
    """
    batch, num_steps, state_dim = u.shape
    chunk, num_chunks, pad = _chunking(num_steps)
    Lt = L.transpose(-1, -2)
    if pad:
        Lt = torch.cat([Lt, torch.eye(state_dim, dtype=L.dtype).expand(pad, state_dim, state_dim)], 0)
    Lt = Lt.reshape(num_chunks, chunk, state_dim, state_dim).transpose(0, 1)  # (C, K, S, S)
    u_c = _to_chunk_major(u, num_chunks, chunk, pad).transpose(1, 2)  # (C, K, B, S)
    local = u_c[0]
    transport = Lt[0]  # row form: start @ transport_j gives the start's share of x_{j+1}
    locals_, transports = [local], [transport]
    for j in range(1, chunk):
        local = torch.baddbmm(u_c[j], local, Lt[j])
        transport = transport @ Lt[j]
        locals_.append(local)
        transports.append(transport)
    local_all = torch.stack(locals_)  # (C, K, B, S)
    transport_all = torch.stack(transports, 1)  # (K, C, S, S)
    start = x0
    starts = [start]
    for k in range(num_chunks - 1):
        start = torch.addmm(local_all[-1, k], start, transport_all[k, -1])
        starts.append(start)
    starts_all = torch.stack(starts)  # (K, B, S)
    side_by_side = transport_all.transpose(1, 2).reshape(num_chunks, state_dim, chunk * state_dim)
    carried = (starts_all @ side_by_side).reshape(num_chunks, batch, chunk, state_dim)
    states = carried.permute(2, 1, 0, 3) + local_all.transpose(1, 2)  # (C, B, K, S)
    return _from_chunk_major(states, num_steps)


def affine_recurrence_sequential(L: Tensor, u: Tensor, x0: Tensor) -> Tensor:
    """Solve ``x_{k+1} = L_k x_k + u_k`` step by step; ``L`` ``(B, N, S, S)``.

    Batch-last layout: with many different ``L`` a broadcast multiply-sum over
    ``(S, S, B)`` is much faster than a batched matmul of tiny matrices.
    """
    L_bl = L.permute(1, 2, 3, 0)  # (N, S, S, B)
    u_bl = u.permute(1, 2, 0)  # (N, S, B)
    x = x0.transpose(0, 1)  # (S, B)
    states = []
    for k in range(u.shape[1]):
        x = (L_bl[k] * x.unsqueeze(0)).sum(1) + u_bl[k]
        states.append(x)
    return torch.stack(states).permute(2, 0, 1)


def projected_affine_recurrence_constant(
    L: Tensor, G: Tensor, c: Tensor | None, z: Tensor, x0: Tensor, H: Tensor
) -> Tensor:
    """``H x_1..H x_N`` for ``x_{k+1} = L x_k + G z_k + c`` (constant ``L, G, c``).

    The steady-state Kalman filter only needs the predicted observations
    ``H a_t``, so the states are projected inside the chunked scan and never
    stored: with ``D < S`` this moves S/D times less memory than solving for
    the states first. ``L`` ``(S, S)`` or ``(B, S, S)``; ``G`` ``(S, D)`` or
    ``(B, S, D)``; ``c`` ``(S,)``/``(B, S)`` or None; ``z`` ``(B, N, D)``;
    ``x0`` ``(B, S)``; ``H`` ``(D_out, S)`` or ``(B, D_out, S)``. Returns
    ``(B, N, D_out)``.
    """
    batch, num_steps, _ = z.shape
    state_dim = L.shape[-1]
    chunk, num_chunks, pad = _chunking(num_steps, recursive_chain=True)
    shared = L.dim() == 2
    Lt, Gt, Ht = L.transpose(-1, -2), G.transpose(-1, -2), H.transpose(-1, -2)
    out_dim = Ht.shape[-1]
    z_c = _to_chunk_major(z, num_chunks, chunk, pad)  # (C, B, K, D)
    if shared:
        flat = z_c.reshape(chunk * batch * num_chunks, -1)
        u_c = (flat @ Gt if c is None else torch.addmm(c, flat, Gt)).view(chunk, batch * num_chunks, state_dim)
    else:
        u_c = z_c.reshape(chunk, batch, -1, z_c.shape[-1]).transpose(0, 1).reshape(batch, -1, z_c.shape[-1]) @ Gt
        if c is not None:
            u_c = u_c + c.unsqueeze(1)
        u_c = u_c.view(batch, chunk, num_chunks, state_dim).transpose(0, 1)  # (C, B, K, S)
    powers = Lt.unsqueeze(-3)
    while powers.shape[-3] < chunk:
        powers = torch.cat([powers, powers @ powers[..., -1:, :, :]], -3)
    powers = powers[..., :chunk, :, :]
    # Small problems: keep the local states and project once (fewer ops); large
    # ones: project each step so that the states are never stored.
    project_each_step = u_c.numel() > PROJECT_EACH_STEP_ABOVE
    local = u_c[0]
    kept = [local @ Ht if project_each_step else local]
    for j in range(1, chunk):
        local = torch.addmm(u_c[j], local, Lt) if shared else torch.baddbmm(u_c[j], local, Lt)
        kept.append(local @ Ht if project_each_step else local)
    ends = local.reshape(batch, num_chunks, state_dim).transpose(0, 1).contiguous()  # (K, B, S)
    starts_all = _chain_starts(powers[..., -1, :, :], ends, x0)  # (B, K, S)
    # start (L^T)^{j+1} H^T for all j side by side: (S, C * D_out).
    carry = (powers @ Ht.unsqueeze(-3)).transpose(-3, -2).reshape(*powers.shape[:-3], state_dim, chunk * out_dim)
    carried = (starts_all @ carry).view(batch, num_chunks, chunk, out_dim)
    kept_all = torch.stack(kept)
    projections = kept_all if project_each_step else kept_all @ Ht
    local_part = projections.reshape(chunk, batch, num_chunks, out_dim).permute(1, 2, 0, 3)
    total = (carried + local_part).reshape(batch, num_chunks * chunk, out_dim)
    return total[:, :num_steps]

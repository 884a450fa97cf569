"""Steady-state log-likelihood in float64 numpy, for calls that need no gradient.

At state dim ~4 a torch op costs 5-10 us of dispatch for a few flops, and the
filter is dominated by that overhead; a numpy op costs ~1 us. When nothing
requires a gradient (evaluation, the benchmark, model selection), the
time-invariant, fully observed, scalar-observation case runs here; the
torch path in ``_kalman_steady`` stays the differentiable one.

Schedule, for one parameter set shared by ``B`` series:

1. Transient (``t < n``): the Riccati recursion (data independent) runs
   step by step until the predicted covariance converges (relative change
   <= 1e-11, as statsmodels does); with ``D = 1`` the innovation variance
   ``s_t = h^T P_t h + r`` is a scalar, so the gain is a division. The means
   ``a_{t+1} = L_t a_t + F K_t z_t + c`` (``L_t = F (I - K_t h^T)``,
   ``z_t = y_t - d``) run alongside, batched over the series.
2. Steady part (``t >= n-1``, constant ``L, K``): the predicted observation
   is an LTI filter of ``z``::

       h^T a_{n-1+m} = r_m a_{n-1} + sum_{i<m} g_{m-1-i} z_{n-1+i} + sum_{i<m} r_i c,
       r_m = h^T L^m,   g_k = r_k F K.

   Time is cut in blocks of C steps: inside a block the sum is a product
   with a C x C Toeplitz matrix of the ``g_k`` (one matrix product for all
   blocks of all series), and only the block start states are chained step
   by step (``s_{k+1} = L^C s_k + ...``), T / C small steps. The same
   recursion, reassociated, so exact to rounding for any ``L``.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import math

import numpy as np
import torch
from torch import Tensor

from tsgen.inference._kalman_params import PreparedParams
from tsgen.inference._kalman_step import LOG_2PI, RICCATI_TOLERANCE

# Steps per block of the steady part: the in-block work is a (C x C) matrix
# product per block (flops ~ B T C), the chain of block starts K = T / C small
# steps (overhead ~ T / C). Few series: long blocks; many: short ones
# (measured: 1 x 5000 fastest at 64, 1000 x 500 at 16).
BLOCK = 64
BLOCK_MANY_SERIES = 16
MANY_SERIES = 32
# With one system per series the Toeplitz matrices are per series too: shorter
# blocks keep them (G x C x C) small.
BLOCK_SETS = 16
# Steps between convergence checks of the many-set Riccati loop (a set stays
# up to 7 steps past convergence, on the exact recursion; measured 8 fastest).
_CHECK_EVERY = 8
# Sets per group in the innovations of the many-set steady part.
_SETS_PER_GROUP = 128


@functools.cache
def _blas_controller():
    try:
        from threadpoolctl import ThreadpoolController  # installed with scikit-learn
    except ImportError:  # pragma: no cover
        return None
    return ThreadpoolController()


def _single_threaded_blas():
    """The products here take well under a millisecond on one core; waking
    BLAS worker threads costs more than it saves, and on a busy machine a
    worker that is descheduled stalls the whole call for a time slice."""
    controller = _blas_controller()
    if controller is None:  # pragma: no cover
        return contextlib.nullcontext()
    return controller.limit(limits=1, user_api="blas")


def applies(y: Tensor, p: PreparedParams) -> bool:
    """True when the numpy path may run: no gradient needed, float64 CPU
    tensors, scalar observations, one parameter set."""
    fields = [x for x in (y, p.F, p.H, p.Q, p.R, p.m1, p.P1, p.c, p.d) if x is not None]
    if torch.is_grad_enabled() and any(x.requires_grad for x in fields):
        return False
    return (
        p.obs_dim == 1
        and p.batch_shape.numel() == 1
        and all(x.dtype == torch.float64 and x.device.type == "cpu" for x in fields)
    )


def _as_numpy(x: Tensor, shape: tuple[int, ...]) -> np.ndarray:
    return x.detach().reshape(shape).numpy()


def _transient(F, h, Q, r, P1, num_times):
    """Riccati recursion until convergence. Returns the innovation variances
    ``s_0..s_{n-1}``, gains ``K_0..K_{n-1}`` (rows) and predicted covariances
    ``P_0..P_{n-1}``; step ``n-1`` is steady (or ``n = T``). None when an
    innovation variance is not positive.

    The recursion depends on the parameters only, so a fitted model scoring
    many calls runs it once: results are kept (read-only) for the last few
    parameter sets, keyed by their bytes. A result that converged serves any
    length; one cut at ``T`` serves lengths up to ``T``."""
    key = (F.tobytes(), h.tobytes(), Q.tobytes(), float(r), P1.tobytes())
    cached = _TRANSIENTS.get(key)
    if cached is not None:
        found, converged = cached
        if converged or found[0].shape[0] >= num_times:
            _TRANSIENTS.move_to_end(key)
            return tuple(x[:num_times] for x in found)
    found = _transient_sequential(F, h, Q, r, P1, num_times)
    if found is not None:
        for x in found:
            x.setflags(write=False)
        _TRANSIENTS[key] = (found, found[0].shape[0] < num_times)
        while len(_TRANSIENTS) > _TRANSIENTS_KEPT:
            _TRANSIENTS.popitem(last=False)
    return found


# Riccati transients of the most recently used parameter sets (a few KB each).
_TRANSIENTS_KEPT = 16
_TRANSIENTS: collections.OrderedDict = collections.OrderedDict()


def _transient_sequential(F, h, Q, r, P1, num_times):
    """The recursion of ``_transient``, step by step until it converges."""
    Ft = F.T
    P = P1
    variances, gains, covariances = [], [], []
    for t in range(num_times):
        ph = P @ h
        s = float(ph @ h) + r
        if not s > 0.0 or not math.isfinite(s):
            return None
        gain = ph / s
        variances.append(s)
        gains.append(gain)
        covariances.append(P)
        if t + 1 == num_times:
            break
        P_next = F @ (P - np.multiply.outer(gain, ph)) @ Ft + Q
        P_next = 0.5 * (P_next + P_next.T)
        change = np.abs(P_next - P).max()
        P = P_next
        if change <= RICCATI_TOLERANCE * np.abs(P_next).max():
            # P_{t+1} is the steady covariance: one more step gives its gain.
            ph = P @ h
            s = float(ph @ h) + r
            if not s > 0.0 or not math.isfinite(s):
                return None
            variances.append(s)
            gains.append(ph / s)
            covariances.append(P)
            break
    return np.array(variances), np.stack(gains), np.stack(covariances)


def _powers(L: np.ndarray, count: int) -> np.ndarray:
    """``L^0..L^{count-1}`` ``(count, S, S)`` by doubling."""
    powers = np.eye(L.shape[0])[None]
    power = L
    while powers.shape[0] < count:
        powers = np.concatenate([powers, powers @ power])
        power = power @ power
    return powers[:count]


def _steady_squared_innovations(L, FK, c, h, z, start, per_step=False):
    """``sum_m (z_m - h^T a_m)^2`` per series ``(B,)`` over ``m = 0..M`` (each
    term ``(B, M+1)`` when ``per_step``) for
    ``a_{m+1} = L a_m + FK z_m + c``, ``a_0 = start`` ``(B, S)``, ``z`` ``(B, M+1)``,
    in blocks of ``C`` steps::

        h^T a_{kC+j} = r_j s_k + sum_{i<j} g_{j-1-i} z_{kC+i} + sum_{i<j} r_i c,
        s_{k+1} = L^C s_k + sum_{i<C} L^{C-1-i} (FK z_{kC+i} + c),

    with ``r_j = h^T L^j``, ``g_j = r_j FK`` and ``s_k = a_{kC}``. Each row of
    the work matrix holds one block's ``z`` values, its start state and a 1;
    one product with ``[I - Toeplitz(g); -r^T; -offsets]`` gives all the
    innovations, and only the K = (M+1)/C block starts are chained step by step.
    """
    batch, count = z.shape
    S = L.shape[0]
    chunk = min(BLOCK_MANY_SERIES if batch >= MANY_SERIES else BLOCK, count)
    num_blocks = -(-count // chunk)
    full, rest = divmod(count, chunk)
    powers = _powers(L, chunk + 1)  # L^0..L^C
    rows = np.einsum("s,jst->jt", h, powers[:chunk])  # r_j = h^T L^j, (C, S)
    g = rows @ FK
    lag = np.arange(chunk)[None, :] - 1 - np.arange(chunk)[:, None]  # j-1-i
    weights = np.empty((chunk + S + 1, chunk))
    weights[:chunk] = np.eye(chunk) - np.where(lag >= 0, g[np.clip(lag, 0, None)], 0.0)
    weights[chunk : chunk + S] = -rows.T
    offsets = np.zeros(chunk)
    if c is not None:
        offsets[1:] = np.cumsum(rows[:-1] @ c)
    weights[-1] = -offsets

    # Block starts for all series (B, K, S), chained block by block; the work
    # matrix is then built per group of series in one reused buffer, so the
    # call's transient memory stays a fraction of z's. A work matrix for all
    # series (~1.3x z) pushed the heap past glibc's trim threshold, which hands
    # the memory back to the OS to be page-faulted in again by the next call
    # (1000 x 500 through the estimator: ~2000 faults, a third of its time).
    blocks = z[:, : full * chunk].reshape(batch, full, chunk)
    carry = powers[chunk - 1 :: -1] @ FK  # row i: L^{C-1-i} FK, (C, S)
    starts = np.empty((batch, num_blocks, S))
    np.matmul(blocks, carry, out=starts[:, :full])  # each block's end, before its start is known
    if rest:
        starts[:, full] = z[:, full * chunk :] @ carry[:rest]
    if c is not None:
        starts += powers[:chunk].sum(0) @ c
    step = powers[chunk].T
    state = start
    for k in range(num_blocks):
        end = starts[:, k].copy()
        starts[:, k] = state
        if k + 1 < num_blocks:
            state = state @ step + end
    total = np.empty((batch, count) if per_step else batch)
    # Groups of series small enough that each group's work and innovations
    # stay in cache; both buffers are reused from group to group.
    group = min(batch, _SETS_PER_GROUP)
    work_buffer = np.empty((group, num_blocks, chunk + S + 1))
    work_buffer[:, :, -1] = 1.0
    if rest:
        work_buffer[:, full, rest:chunk] = 0.0
    innovations_buffer = np.empty((group * num_blocks, chunk))
    for lo in range(0, batch, group):
        part = slice(lo, lo + group)
        work = work_buffer[: min(batch - lo, group)]
        work[:, :full, :chunk] = blocks[part]
        if rest:
            work[:, full, :rest] = z[part, full * chunk :]
        work[:, :, chunk : chunk + S] = starts[part]
        innovations = np.matmul(
            work.reshape(-1, work.shape[-1]), weights, out=innovations_buffer[: work.shape[0] * num_blocks]
        ).reshape(-1, num_blocks * chunk)
        if per_step:
            np.square(innovations[:, :count], out=total[part])
            continue
        total[part] = np.einsum("bm,bm->b", innovations, innovations)
        if rest:  # padded positions of the last block are not observations
            pad = innovations[:, count:]
            total[part] -= np.einsum("bm,bm->b", pad, pad)
    return total


def steady_state_log_likelihood_numpy(
    y: Tensor, p: PreparedParams, batch_shape: torch.Size, per_step: bool = False
) -> Tensor | None:
    """Total log-likelihood ``(*b,)`` (per step ``(*b, T)`` when ``per_step``),
    or None when this path declines (a non-positive innovation variance,
    whose error message the torch path gives)."""
    num_times, S = y.shape[-2], p.state_dim
    batch = batch_shape.numel()
    F, Q, P1 = (_as_numpy(x, (S, S)) for x in (p.F, p.Q, p.P1))
    h = _as_numpy(p.H, (S,))
    r = float(p.R.reshape(()))
    m1 = _as_numpy(p.m1, (S,))
    c = None if p.c is None else _as_numpy(p.c, (S,))
    z = y if p.d is None else y - p.d.reshape(1, 1)
    z = z.detach().expand(*batch_shape, num_times, 1).reshape(batch, num_times).numpy()

    with _single_threaded_blas():
        total = _log_likelihood(F, h, Q, r, P1, m1, c, z, per_step)
    if total is None:
        return None
    return torch.from_numpy(total).reshape(tuple(batch_shape) + total.shape[1:])


def _log_likelihood(F, h, Q, r, P1, m1, c, z, per_step=False):
    batch, num_times = z.shape
    S = F.shape[0]
    found = _transient(F, h, Q, r, P1, num_times)
    if found is None:
        return None
    variances, gains, _ = found
    n = variances.shape[0]
    FK = gains @ F.T  # (n, S): rows F K_t
    L_t = F[None] - FK[:, :, None] * h[None, None, :]  # (n, S, S)
    # Transient means a_0..a_{n-1}, batch-last (columns are series).
    head_z = z[:, : n - 1].T.copy()  # (n-1, B); a copy: z may share the caller's memory
    a = np.broadcast_to(m1[:, None], (S, batch))
    FK_cols = FK[:, :, None]
    for t in range(n - 1):
        predicted = h @ a
        a = L_t[t] @ a + FK_cols[t] * head_z[t]
        if c is not None:
            a = a + c[:, None]
        head_z[t] -= predicted  # innovations in place (no second (n-1, B) array)
    steady_var = variances[-1]
    # Steady part: innovations at t = n-1..T-1.
    squares = _steady_squared_innovations(L_t[-1], FK[-1], c, h, z[:, n - 1 :], a.T, per_step)
    if per_step:
        terms = np.empty((batch, num_times))
        terms[:, : n - 1] = (np.log(variances[:-1])[:, None] + head_z * head_z / variances[:-1, None]).T
        terms[:, n - 1 :] = math.log(steady_var) + squares / steady_var
        return -0.5 * (LOG_2PI + terms)
    head = np.log(variances[:-1]).sum() + np.einsum("tb,tb,t->b", head_z, head_z, 1.0 / variances[:-1])
    tail = (num_times - n + 1) * math.log(steady_var) + squares / steady_var
    return -0.5 * (num_times * LOG_2PI + head + tail)


# ----------------------------------------------------------------------------- many parameter sets


def applies_many(y: Tensor, p: PreparedParams, batch_shape: torch.Size) -> bool:
    """True for the numpy path with one parameter set per series (no gradient,
    float64 CPU, scalar observations)."""
    fields = [x for x in (y, p.F, p.H, p.Q, p.R, p.m1, p.P1, p.c, p.d) if x is not None]
    if torch.is_grad_enabled() and any(x.requires_grad for x in fields):
        return False
    return (
        p.obs_dim == 1
        and p.batch_shape == batch_shape
        and batch_shape.numel() > 1
        and all(x.dtype == torch.float64 and x.device.type == "cpu" for x in fields)
    )


def _sequences_sets(L, FK, h, c, count):
    """Per set g: rows ``h^T L^j`` and columns ``L^j FK`` (and ``L^j c``) for
    ``j < count`` ``(G, count, S)``, and ``L^count`` ``(G, S, S)``. By doubling
    on the vectors (a few stacked products), not on the S x S powers."""
    rows = h[:, None, :]
    cols = FK[:, None, :] if c is None else np.stack([FK, c], 1)
    power = L  # L^m, m = number of terms so far
    while rows.shape[1] < count:
        rows = np.concatenate([rows, rows @ power], 1)
        # columns kept as rows: (L^m x)^T = x^T (L^m)^T
        cols = np.concatenate([cols, cols @ power.transpose(0, 2, 1)], 1)
        power = power @ power
    if rows.shape[1] > count:
        power = None
    width = 1 if c is None else 2
    kept = cols.reshape(cols.shape[0], -1, width, cols.shape[-1])[:, :count]
    return rows[:, :count], kept[:, :, 0], (None if c is None else kept[:, :, 1]), power


def _matrix_power_sets(L, count):
    """``L_g^count`` by squaring."""
    result = None
    power = L
    while count:
        if count & 1:
            result = power if result is None else result @ power
        count >>= 1
        if count:
            power = power @ power
    return result


def _steady_squared_innovations_sets(L, FK, c, h, z, start, counts, per_step=False):
    """Like ``_steady_squared_innovations`` with one ``(L, FK, c, h)`` per series
    (leading dim G) and ``counts[g]`` steps for series g (``z`` left-aligned,
    anything beyond ``counts`` is ignored; 0 there in the ``per_step`` result
    ``(G, width)``)."""
    G, width = z.shape
    S = L.shape[-1]
    chunk = min(BLOCK_SETS, width)
    num_blocks = -(-width // chunk)
    rows, gains, drifts, power = _sequences_sets(L, FK, h, c, chunk)  # (G, C, S) each
    step = _matrix_power_sets(L, chunk) if power is None else power  # L^C
    g = np.einsum("gjs,gs->gj", rows, FK)
    # Toeplitz block T[i, j] = e[C + j - i] with e = (0 x C, 1, -g_0, .., -g_{C-2}):
    # its rows are windows of e, no index arrays.
    e = np.zeros((G, 2 * chunk))
    e[:, chunk] = 1.0
    e[:, chunk + 1 :] = -g[:, :-1]
    toeplitz = np.lib.stride_tricks.sliding_window_view(e, chunk, axis=1)[:, chunk:0:-1]
    if width % chunk:
        padded = np.zeros((G, num_blocks * chunk))
        padded[:, :width] = z
        z = padded
    blocks = z.reshape(G, num_blocks, chunk)  # a view when z is contiguous
    carry = gains[:, ::-1]  # row i: L^{C-1-i} FK, (G, C, S)
    ends = blocks @ carry  # (G, K, S)
    if c is not None:
        ends += drifts.sum(1)[:, None]
    step_t = step.transpose(0, 2, 1)
    states = np.empty((G, num_blocks, S))
    state = start
    for k in range(num_blocks):
        states[:, k] = state
        if k + 1 < num_blocks:
            state = np.einsum("gs,gst->gt", state, step_t) + ends[:, k]
    rows_t = np.ascontiguousarray(rows.transpose(0, 2, 1))
    offsets = None
    if c is not None:
        offsets = np.zeros((G, 1, chunk))
        offsets[:, 0, 1:] = np.cumsum(np.einsum("gjs,gs->gj", rows[:, :-1], c), 1)
    positions = np.arange(num_blocks * chunk)[None, :]
    totals = np.empty((G, width) if per_step else G)
    # Groups of sets small enough that each group's innovations stay in cache.
    for lo in range(0, G, _SETS_PER_GROUP):
        part = slice(lo, lo + _SETS_PER_GROUP)
        innovations = blocks[part] @ toeplitz[part]
        innovations -= states[part] @ rows_t[part]
        if offsets is not None:
            innovations -= offsets[part]
        innovations = innovations.reshape(-1, num_blocks * chunk)
        innovations = np.where(positions < counts[part, None], innovations, 0.0)
        if per_step:
            np.square(innovations[:, :width], out=totals[part])
            continue
        totals[part] = np.einsum("gm,gm->g", innovations, innovations)
    return totals


def steady_state_log_likelihood_numpy_many(
    y: Tensor, p: PreparedParams, batch_shape: torch.Size, per_step: bool = False
) -> Tensor | None:
    """Total log-likelihood ``(*b,)`` (per step ``(*b, T)`` when ``per_step``)
    with one parameter set per series; None
    when an innovation variance is not positive (the torch path names the step).

    The Riccati and mean recursions run batched over the sets whose covariance
    has not converged; a set that has converged leaves the loop with its
    predicted mean, and the rest of its series is done by the blocked steady
    scheme, all such sets at once (their remaining lengths differ: left-aligned).
    """
    num_times, S = y.shape[-2], p.state_dim
    batch = batch_shape.numel()

    def flat(x: Tensor, event: tuple[int, ...]) -> np.ndarray:
        return x.detach().expand(*batch_shape, *event).reshape(batch, *event).numpy()

    F, Q, P1 = (flat(x, (S, S)) for x in (p.F, p.Q, p.P1))
    h = flat(p.H, (1, S))[:, 0]
    r = flat(p.R, (1, 1))[:, 0, 0]
    m1 = flat(p.m1, (S,))
    c = None if p.c is None else flat(p.c, (S,))
    z = y if p.d is None else y - p.d.unsqueeze(-2)
    z = z.detach().expand(*batch_shape, num_times, 1).reshape(batch, num_times).numpy()
    with _single_threaded_blas():
        total = _log_likelihood_many(F, h, Q, r, P1, m1, c, z, per_step)
    if total is None:
        return None
    return torch.from_numpy(total).reshape(tuple(batch_shape) + total.shape[1:])


def _packed_riccati_operators(F, h):
    """The covariance as its ``S(S+1)/2`` upper-triangle entries ``u`` (pairs
    ``k <= l``): ``vec_u(F M F^T) = A u_M`` and ``P h = u^T Hh`` with per-set
    ``A`` ``(G, n, n)`` and ``Hh`` ``(G, n, S)``. One small product per step
    instead of two stacked S x S matmuls (numpy's stacked matmul pays ~30 ns
    per 4 x 4 matrix), and the result is symmetric by construction."""
    G, S, _ = F.shape
    upper_i, upper_j = np.triu_indices(S)
    n = upper_i.size
    # (F M F^T)_{ij} = sum_{k<=l} u_kl (F_ik F_jl + [k != l] F_il F_jk)
    products = np.einsum("bik,bjl->bijkl", F, F).reshape(G, S**4)  # F_ik F_jl
    row = (upper_i * S + upper_j)[:, None] * S * S  # pair p = (i, j)
    off = (upper_i != upper_j)[None, None, :]
    A = np.take(products, row + upper_i * S + upper_j, axis=1)  # F_ik F_jl at q = (k, l)
    A += np.where(off, np.take(products, row + upper_j * S + upper_i, axis=1), 0.0)  # F_il F_jk
    # (P h)_i = sum_q u_q ([k_q = i] h_{l_q} + [l_q = i, k_q != l_q] h_{k_q})
    eye = np.eye(S)
    Hh = eye[upper_i][None] * h[:, upper_j, None] + np.where(
        off[0, 0, :, None], eye[upper_j][None] * h[:, upper_i, None], 0.0
    )
    full = np.empty((S, S), dtype=np.intp)
    full[upper_i, upper_j] = np.arange(n)
    full[upper_j, upper_i] = np.arange(n)
    return A, Hh, upper_i, upper_j, full.ravel()


def _log_likelihood_many(F, h, Q, r, P1, m1, c, z, per_step=False):
    batch, num_times = z.shape
    # per step: log s_t + v_t^2 / s_t, filled as the sets leave the loop
    terms = np.empty((batch, num_times)) if per_step else None
    S = F.shape[-1]
    originals = (F, h, r, c)
    active = np.arange(batch)
    z_t = z.T.copy()  # (T, B): one row per step
    A, Hh, upper_i, upper_j, full = _packed_riccati_operators(F, h)
    A_t = np.ascontiguousarray(A.transpose(0, 2, 1))
    F_t = np.ascontiguousarray(F.transpose(0, 2, 1))
    P1_sym = 0.5 * (P1 + P1.transpose(0, 2, 1))
    u = P1_sym[:, upper_i, upper_j]  # (B, n)
    q = Q[:, upper_i, upper_j]
    a = m1
    sums = np.zeros(batch)  # sum_t log s_t + v_t^2 / s_t, of the sets that left the loop
    running = np.zeros(batch)  # the same for the sets still in the loop
    steady = []  # (indices, step, P, a) of the sets whose covariance converged
    # s_t and v_t of the steps since the last check, summed into `running` at
    # the check: a handful of ops per _CHECK_EVERY steps instead of per step.
    s_buf = np.empty((_CHECK_EVERY, batch))
    v_buf = np.empty((_CHECK_EVERY, batch))
    t = 0
    filled = 0
    # A non-positive or non-finite s_t makes its term non-finite: checked on
    # the sums at each check instead of on every step.
    with np.errstate(all="ignore"):
        while active.size:
            # row vector times matrix: numpy's fastest form for these batched products
            ph = (u[:, None, :] @ Hh)[:, 0]  # P h, (Ba, S)
            s = np.einsum("bi,bi->b", ph, h, out=s_buf[filled])
            s += r
            v = np.subtract(z_t[t, active], np.einsum("bi,bi->b", a, h), out=v_buf[filled])
            filled += 1
            last = t + 1 == num_times
            t += 1
            if not last:
                gain = ph / s[:, None]
                a = ((a + gain * v[:, None])[:, None, :] @ F_t)[:, 0]
                if c is not None:
                    a += c
                reduced = u - gain[:, upper_i] * ph[:, upper_j]  # P - K h^T P
                u_next = (reduced[:, None, :] @ A_t)[:, 0]
                u_next += q
                if t % _CHECK_EVERY:
                    u = u_next
                    continue
            sb, vb = s_buf[:filled], v_buf[:filled]
            window = np.log(sb) + vb * vb / sb
            running += window.sum(0)
            if per_step:
                terms[active, t - filled : t] = window.T
            filled = 0
            if not np.all(np.isfinite(running)):
                return None
            if last:
                break
            # max |P_next - P| and max |P_next| over the unique entries are
            # those over the full matrices
            change = np.abs(u_next - u).max(1)
            done = change <= RICCATI_TOLERANCE * np.abs(u_next).max(1)
            u = u_next
            if done.any():
                P_done = u[done][:, full].reshape(-1, S, S)
                steady.append((active[done], np.full(int(done.sum()), t), P_done, a[done]))
                sums[active[done]] = running[done]
                keep = ~done
                active = active[keep]
                F_t, A_t, Hh, q, u, a, h, r, running = (
                    x[keep] for x in (F_t, A_t, Hh, q, u, a, h, r, running)
                )
                c = None if c is None else c[keep]
                s_buf = np.empty((_CHECK_EVERY, active.size))
                v_buf = np.empty((_CHECK_EVERY, active.size))
    sums[active] = running
    if steady:
        parts = [np.concatenate(x) for x in zip(*steady)]
        steady_sums = _steady_sums_many(*parts, originals, z, terms)
        if steady_sums is None:
            return None
        sums[parts[0]] += steady_sums
    if per_step:
        return -0.5 * (LOG_2PI + terms)
    return -0.5 * (num_times * LOG_2PI + sums)


def _steady_sums_many(idx, first, P, a, originals, z, terms=None):
    """``sum_t log s + v_t^2 / s`` over ``t >= first`` for the converged sets
    ``idx`` (steady predicted covariance ``P`` and mean ``a`` at step ``first``);
    each term is also written to ``terms[idx, t]`` when ``terms`` is given."""
    F, h, r, c = (None if x is None else x[idx] for x in originals)
    num_times = z.shape[1]
    ph = np.einsum("bij,bj->bi", P, h)
    s = np.einsum("bi,bi->b", ph, h) + r
    if not np.all(s > 0.0) or not np.all(np.isfinite(s)):
        return None
    FK = np.einsum("bij,bj->bi", F, ph / s[:, None])
    L = F - FK[:, :, None] * h[:, None, :]
    counts = num_times - first
    flat = None
    squares = np.empty(idx.size)
    # Groups of sets with similar remaining lengths (sorted): each group's
    # arrays stay in cache and are only as wide as its longest remainder.
    order = np.argsort(-counts, kind="stable")
    for lo in range(0, idx.size, _SETS_PER_GROUP):
        part = order[lo : lo + _SETS_PER_GROUP]
        # rounded up to whole blocks, so the blocks are a view of z_left
        width = -(-int(counts[part].max()) // BLOCK_SETS) * BLOCK_SETS
        if flat is None:  # the first group is the widest
            # Each set's z from its own first step, left-aligned: windows over
            # the flattened z (row-major, zero tail), one contiguous row copy
            # per set. A window that runs past its series reads the next one:
            # beyond counts, ignored.
            flat = np.concatenate([z.ravel(), np.zeros(width)])
        windows = np.lib.stride_tricks.sliding_window_view(flat, width)
        z_left = windows[idx[part] * num_times + first[part]]
        found = _steady_squared_innovations_sets(
            L[part], FK[part], None if c is None else c[part], h[part], z_left, a[part], counts[part],
            per_step=terms is not None,
        )
        if terms is None:
            squares[part] = found
            continue
        squares[part] = found.sum(1)
        steps = first[part, None] + np.arange(found.shape[1])[None, :]
        inside = steps < num_times
        rows = np.broadcast_to(idx[part, None], steps.shape)
        terms[rows[inside], steps[inside]] = (np.log(s[part, None]) + found / s[part, None])[inside]
    return counts * np.log(s) + squares / s


# ----------------------------------------------------------------------------- end state and forecasts


def filtered_last_numpy(y: Tensor, p: PreparedParams, last: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Filtered moments ``(B, S)``, ``(B, S, S)`` of each series at its step
    ``last[b]``, for one parameter set with scalar observations; ``y``
    ``(B, T, 1)`` must be observed up to ``last`` (anything after it is not read
    into the result). The covariance recursion runs once (until it converges);
    only the means run per series, and nothing is kept per step. None when an
    innovation variance is not positive (the torch path names the step)."""
    S = p.state_dim
    F, Q, P1 = (_as_numpy(x, (S, S)) for x in (p.F, p.Q, p.P1))
    h = _as_numpy(p.H, (S,))
    r = float(p.R.reshape(()))
    m1 = _as_numpy(p.m1, (S,))
    c = None if p.c is None else _as_numpy(p.c, (S,))
    steps = int(last.max()) + 1
    z = y[:, :steps, 0] if p.d is None else y[:, :steps, 0] - p.d.reshape(())
    z_t = z.detach().numpy().T.copy()  # (steps, B): one row per step
    with _single_threaded_blas():
        found = _transient(F, h, Q, r, P1, steps)
        if found is None:
            return None
        _, gains, predicted = found
        n = gains.shape[0]
        ph = predicted @ h  # (n, S)
        filtered = predicted - gains[:, :, None] * ph[:, None, :]  # P - K h^T P
        filtered = 0.5 * (filtered + filtered.transpose(0, 2, 1))
        FK = gains @ F.T
        L_t = (F[None] - FK[:, :, None] * h[None, None, :]).transpose(0, 2, 1)  # L_t^T
        order = np.argsort(last, kind="stable")
        bounds = np.searchsorted(last[order], np.arange(steps + 1))
        a = np.repeat(m1[None], z_t.shape[1], 0)
        means = np.empty_like(a)
        for t in range(steps):
            k = min(t, n - 1)
            lo, hi = bounds[t], bounds[t + 1]
            if hi > lo:  # series whose last step is t
                idx = order[lo:hi]
                v = z_t[t, idx] - a[idx] @ h
                means[idx] = a[idx] + v[:, None] * gains[k]
            a = a @ L_t[k] + np.multiply.outer(z_t[t], FK[k])
            if c is not None:
                a += c
    return means, filtered[np.minimum(last, n - 1)]


def _power_table(F: np.ndarray, count: int) -> np.ndarray:
    """``F^0..F^{count-1}`` ``(G, count, S, S)`` for ``F`` ``(G, S, S)``, by doubling."""
    powers = np.broadcast_to(np.eye(F.shape[-1]), (F.shape[0], 1, *F.shape[1:]))
    power = F[:, None]
    while powers.shape[1] < count:
        powers = np.concatenate([powers, powers @ power], 1)
        power = power @ power
    return powers[:, :count]


# Steps per block of a forecast: powers F^1..F^C are built once, then each
# block of C steps is a few batched products and only block starts are chained.
FORECAST_BLOCK = 256


def forecast_marginals_numpy(mean, cov, F, H, Q, R, c, d, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Predictive means and variances of ``y_{T+1..T+h}`` ``(B, h, D)`` each,
    from the filtered moments ``mean`` ``(B, S)``, ``cov`` ``(B, S, S)`` of
    ``x_T`` and one or ``B`` time-invariant parameter sets (leading dim ``G``).

    With ``s_k = E[x_{T+k}]`` and ``V_k = Cov[x_{T+k}]``, in blocks of C steps::

        s_{kC+j} = F^j s_{kC} + sum_{i<j} F^i c,
        V_{kC+j} = F^j V_{kC} F^jT + sum_{i<j} F^i Q F^iT,

    so memory is the output plus O(C) matrices, whatever the horizon."""
    B, S = mean.shape
    D = H.shape[-2]
    chunk = min(horizon, FORECAST_BLOCK)
    powers = _power_table(F, chunk + 1)
    ahead = powers[:, 1:]  # F^1..F^C
    HF = H[:, None] @ ahead  # (G, C, D, S)
    lower = powers[:, :chunk]
    noise = np.cumsum(lower @ Q[:, None] @ lower.transpose(0, 1, 3, 2), 1)  # sum_{i<j} F^i Q F^iT
    noise_obs = np.einsum("gds,gcst,gdt->gcd", H, noise, H) + np.diagonal(R, axis1=-2, axis2=-1)[:, None]
    drift = 0.0 if c is None else np.cumsum((lower @ c[:, None, :, None])[..., 0], 1)  # (G, C, S)
    means = np.empty((B, horizon, D))
    variances = np.empty((B, horizon, D))
    state, state_cov = mean, cov
    with _single_threaded_blas():
        for start in range(0, horizon, chunk):
            m = min(chunk, horizon - start)
            block = (ahead[:, :m] @ state[:, None, :, None])[..., 0]
            if c is not None:
                block += drift[:, :m]
            obs = (H[:, None] @ block[..., None])[..., 0]
            means[:, start : start + m] = obs if d is None else obs + d[:, None]
            spread = HF[:, :m] @ state_cov[:, None]  # (B, m, D, S)
            variances[:, start : start + m] = (spread * HF[:, :m]).sum(-1) + noise_obs[:, :m]
            if start + chunk < horizon:
                state = block[:, -1]
                step = ahead[:, -1]
                state_cov = step @ state_cov @ step.transpose(0, 2, 1) + noise[:, -1]
                state_cov = 0.5 * (state_cov + state_cov.transpose(0, 2, 1))
    return means, variances

r"""The linear-Gaussian state-space model on the model protocol (:mod:`tsgen.protocol`).

The same model as :mod:`tsgen.models.lds` and :mod:`tsgen.inference.kalman`
(pykalman / statsmodels convention), written as one protocol step so the
particle filters and smoothers of :mod:`tsgen.inference.smc` run on it and
can be checked against the Kalman filter::

    z_1     ~ N(m_1, P_1)                         (transition with x_prev None)
    z_t     ~ N(F_{t-1} z_{t-1} + c_{t-1}, Q_{t-1})   t > 1
    x_t     ~ N(H_t z_t + d_t, R_t)

The state is ``z_t`` itself, ``(..., S)``; the model is Markov in its
latent. :meth:`LinearGaussianModule.proposal` is the locally optimal
proposal ``p(z_t | z_{t-1}, x_t)`` in closed form, conditioning on the
observed components of ``x_t`` only, with which the incremental weight is
the exact ``p(x_t | z_{t-1})``.

Parameters may carry one leading series dimension (of size ``B`` or 1) and,
for the fields named in ``time_varying``, a time axis covering at least
``T + horizon`` steps (index ``t`` 0-based, as in
:func:`tsgen.inference.kalman.kalman_filter`).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, MultivariateNormal, Normal

from tsgen.inference._kalman_params import KalmanParams, prepare_params
from tsgen.inference.kalman import _psd_sqrt
from tsgen.protocol import Context, SequentialModel

__all__ = ["LinearGaussianModule"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)

# context names of the fields and their event dimensions
_EVENT = {"F": 2, "c": 1, "Q": 2, "H": 2, "d": 1, "R": 2}
# transition fields: step t (t >= 1) moves z_{t-1} to z_t with the parameters of time t-1
_SHIFTED = ("F", "c", "Q")
# the field a precomputed scale belongs to
_BASE = {f"{k}_{part}": v for k, v in (("q", "Q"), ("r", "R"), ("p1", "P1"))
         for part in ("scale", "inverse", "log_norm")}


def _is_diagonal(matrix: Tensor) -> bool:
    return bool((matrix - torch.diag_embed(torch.diagonal(matrix, dim1=-2, dim2=-1)) == 0).all())


def _scale(cov: Tensor, diagonal: bool) -> Tensor:
    """Standard deviations ``(..., S)`` of a diagonal covariance, else a factor ``(..., S, S)``."""
    if diagonal:
        return torch.diagonal(cov, dim1=-2, dim2=-1).clamp_min(0).sqrt()
    return _psd_sqrt(cov)


def _standard_normal(shape: torch.Size, like: Tensor) -> Tensor:
    """Standard normals to combine with ``like``; float32 ones for float64 on the CPU.

    torch fills float64 normals one by one on the CPU but float32 ones vectorised (about 5x faster);
    float32 resolution (and a tail cut near 5.7 sd) is far below any Monte Carlo error, and the
    arithmetic that scales them promotes to float64.
    """
    if like.device.type == "cpu" and like.dtype == torch.float64:
        return torch.randn(shape, dtype=torch.float32)
    return torch.randn(shape, dtype=like.dtype, device=like.device)


class _Normal(Normal):
    """A normal whose ``loc`` already has the full batch shape and whose ``scale`` broadcasts against it
    without being expanded, so ``log(scale)`` is taken on ``(B, S)`` numbers, not on every particle."""

    def __init__(self, loc: Tensor, scale: Tensor, inverse: Tensor | None = None, log_norm: Tensor | None = None):
        self.loc, self.scale = loc, scale
        # 1 / scale and -log(scale sqrt(2 pi)), precomputed per series by the module when it can
        self._inverse, self._log_norm = inverse, log_norm
        Distribution.__init__(self, loc.shape, validate_args=False)

    @property
    def stddev(self) -> Tensor:
        return self.scale.expand(self.batch_shape)

    def rsample(self, sample_shape=torch.Size()) -> Tensor:
        return torch.addcmul(self.loc, self.scale, _standard_normal(self._extended_shape(sample_shape), self.loc))

    def sample(self, sample_shape=torch.Size()) -> Tensor:
        if not torch.is_grad_enabled():  # a filter step: skip the context manager's cost
            return self.rsample(sample_shape)
        with torch.no_grad():
            return self.rsample(sample_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        # (value - loc) / scale as one pass over the particles (value and scale are per series)
        inverse = self.scale.reciprocal() if self._inverse is None else self._inverse
        log_norm = -(self.scale.log() + _HALF_LOG_2PI) if self._log_norm is None else self._log_norm
        standardised = torch.addcmul(value * inverse, self.loc, inverse, value=-1)
        return torch.addcmul(log_norm, standardised, standardised, value=-0.5)


class _DiagonalNormal(Independent):
    """``Independent(Normal(loc, scale), 1)`` built without the generic checks (it is built every step)."""

    def __init__(self, loc: Tensor, scale: Tensor, inverse: Tensor | None = None, log_norm: Tensor | None = None):
        self.base_dist = _Normal(loc, scale, inverse, log_norm)
        self.reinterpreted_batch_ndims = 1
        Distribution.__init__(self, loc.shape[:-1], loc.shape[-1:], validate_args=False)

    def log_prob(self, value: Tensor) -> Tensor:
        per_component = self.base_dist.log_prob(value)
        return per_component[..., 0] if per_component.shape[-1] == 1 else per_component.sum(-1)


class _MultivariateNormal(MultivariateNormal):
    """Draws with the fast CPU noise of :func:`_standard_normal` and one product per series."""

    def rsample(self, sample_shape=torch.Size()) -> Tensor:
        noise = _standard_normal(self._extended_shape(sample_shape), self.loc).to(self.loc.dtype)
        return self.loc + _mat_vec(self._unbroadcasted_scale_tril, noise)


def _gaussian(loc: Tensor, scale: Tensor, diagonal: bool, context_t: dict | None = None,
              name: str = "") -> Distribution:
    if diagonal:
        if context_t is not None:
            return _DiagonalNormal(loc, scale, context_t[f"{name}_inverse"], context_t[f"{name}_log_norm"])
        return _DiagonalNormal(loc, scale)
    return _MultivariateNormal(loc, scale_tril=scale, validate_args=False)


def _mat_vec(matrix: Tensor, vector: Tensor) -> Tensor:
    """``matrix @ vector`` for ``matrix (B, P, S)`` and ``vector (..., B, S)`` -> ``(..., B, P)``."""
    if matrix.shape[-1] == 1:
        return vector * matrix[..., 0]
    n_series, rows, cols = matrix.shape[-3:] if matrix.dim() == 3 else (None, *matrix.shape[-2:])
    if matrix.dim() == 3 and vector.dim() >= 2 and n_series == vector.shape[-2]:
        # one (M, S) @ (S, P) product per series over all particles, not M B tiny products
        lead = vector.shape[:-2]
        stacked = vector.reshape(-1, n_series, cols).transpose(0, 1)
        product = torch.bmm(stacked, matrix.transpose(1, 2))
        return product.transpose(0, 1).reshape(*lead, n_series, rows)
    return torch.matmul(matrix, vector.unsqueeze(-1)).squeeze(-1)


def _affine(matrix: Tensor, vector: Tensor, offset: Tensor) -> Tensor:
    """``matrix @ vector + offset``, one fused op in the scalar-state case."""
    if matrix.shape[-1] == 1:
        return torch.addcmul(offset, vector, matrix[..., 0])
    return _mat_vec(matrix, vector) + offset


class LinearGaussianModule(SequentialModel):
    """A linear-Gaussian state-space model as a protocol module (see the module docstring).

    Parameters
    ----------
    params : KalmanParams
        ``F, H, Q, R, m_1, P_1, c, d`` as in :mod:`tsgen.inference.kalman`,
        each with an optional leading series dimension.
    dtype : torch.dtype, optional
        Cast every field to it (default: the fields' common dtype).
    """

    markov_latent = True

    def __init__(self, params: KalmanParams, dtype: torch.dtype | None = None):
        super().__init__()
        p = prepare_params(params, dtype)
        if len(p.batch_shape) > 1:
            raise ValueError(
                f"`params` may have at most one leading (series) dimension; got batch shape {tuple(p.batch_shape)}."
            )
        self.latent_dim = p.state_dim
        self.obs_dim = p.obs_dim
        self.time_varying = p.time_varying
        self.num_times = p.num_times
        zeros = p.F.new_zeros
        fields = {
            "F": p.F, "Q": p.Q, "H": p.H, "R": p.R,
            "c": p.c if p.c is not None else zeros(p.state_dim),
            "d": p.d if p.d is not None else zeros(p.obs_dim),
            "m1": p.m1, "P1": p.P1,
        }
        for name, value in fields.items():
            self.register_buffer(name, value.detach().clone())
        self.diagonal_q = _is_diagonal(p.Q)
        self.diagonal_p1 = _is_diagonal(p.P1)
        self.diagonal_r = _is_diagonal(p.R)
        self.register_buffer("q_scale", _scale(self.Q, self.diagonal_q))
        self.register_buffer("p1_scale", _scale(self.P1, self.diagonal_p1))
        self.register_buffer("r_scale", _scale(self.R, self.diagonal_r))
        for name, diagonal in (("q", self.diagonal_q), ("p1", self.diagonal_p1), ("r", self.diagonal_r)):
            if diagonal:
                scale = getattr(self, f"{name}_scale")
                self.register_buffer(f"{name}_inverse", scale.reciprocal())
                self.register_buffer(f"{name}_log_norm", -(scale.log() + _HALF_LOG_2PI))

    def _event_dims(self, name: str) -> int:
        diagonal = {"q": self.diagonal_q, "p1": self.diagonal_p1, "r": self.diagonal_r}
        if name in _BASE:
            return 1 if diagonal[name.split("_")[0]] else 2
        return {"m1": 1, "P1": 2, **_EVENT}[name]

    # ------------------------------------------------------------ protocol
    def prepare(self, values: Tensor, mask: Tensor, covariates: Tensor | None = None, horizon: int = 0) -> Context:
        """Every parameter per series, ``(B, ...)``, time-varying ones per step ``(B, T + horizon, ...)``."""
        if covariates is not None:
            raise ValueError("`covariates` are not supported by the linear-Gaussian model; pass None.")
        B, T = values.shape[0], values.shape[1]
        length = T + horizon
        if self.num_times is not None and self.num_times < length:
            raise ValueError(
                f"time-varying `params` cover {self.num_times} steps but {length} are needed (T={T}, horizon={horizon})."
            )
        static, steps = {}, {}
        for name, value in self.named_buffers():
            base = _BASE.get(name, name)
            event = self._event_dims(name)
            varying = base in self.time_varying
            lead = value.shape[: value.dim() - event - varying]
            if lead and lead[0] not in (1, B):
                raise ValueError(f"`params` have {lead[0]} series but `values` has B={B}.")
            if not lead:
                value = value.unsqueeze(0)
            if varying:
                value = value.narrow(1, 0, length)
                if base in _SHIFTED:
                    # step t uses the parameters of time t - 1; step 0 (the initial law) never reads them
                    value = torch.cat([value.narrow(1, 0, 1), value.narrow(1, 0, length - 1)], 1)
                steps[name] = value.expand(B, *value.shape[1:])
            else:
                static[name] = value.expand(B, *value.shape[1:])
        first = torch.zeros(B, length, dtype=torch.bool, device=self.F.device)
        first[:, 0] = True
        steps["first"] = first
        return Context(steps, static)

    def init_state(self, context: Context, sample_shape=()):
        B = context.static["m1"].shape[0]
        return self.m1.new_zeros(*sample_shape, B, self.latent_dim)

    def transition(self, state, x_prev, context_t):
        if x_prev is None:
            loc = context_t["m1"].expand(state.shape)
            return state, _gaussian(loc, context_t["p1_scale"], self.diagonal_p1, context_t, "p1")
        loc = _affine(context_t["F"], state, context_t["c"])
        return state, _gaussian(loc, context_t["q_scale"], self.diagonal_q, context_t, "q")

    def commit(self, state, z, context_t):
        return z

    def emission(self, state, context_t):
        loc = _affine(context_t["H"], state, context_t["d"])
        return _gaussian(loc, context_t["r_scale"], self.diagonal_r, context_t, "r")

    def state_from_latent(self, z, context_t):
        return z

    def proposal(self, state, x, mask, context_t):
        """``p(z_t | z_{t-1}, x_t^{obs})``: the Kalman update of the transition law on the observed components."""
        first = context_t["first"]
        prior_mean = torch.where(first.unsqueeze(-1), context_t["m1"], _mat_vec(context_t["F"], state) + context_t["c"])
        prior_cov = torch.where(first[:, None, None], context_t["P1"], context_t["Q"])  # (B, S, S)
        mask = _shared_rows(mask)
        m = mask.to(prior_cov.dtype)
        H = context_t["H"] * m.unsqueeze(-1)  # unobserved rows removed
        # unobserved components decoupled with unit variance, so they drop out of the gain
        R = context_t["R"] * (m.unsqueeze(-1) * m.unsqueeze(-2)) + torch.diag_embed(1 - m)
        cross = prior_cov @ H.transpose(-1, -2)  # (.., S, D)
        innovation_cov = H @ cross + R
        chol = torch.linalg.cholesky(innovation_cov)
        gain = torch.cholesky_solve(cross.transpose(-1, -2), chol).transpose(-1, -2)  # (.., S, D)
        cov = prior_cov - gain @ cross.transpose(-1, -2)
        cov = 0.5 * (cov + cov.transpose(-1, -2))
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        residual = torch.where(mask, x - context_t["d"], zero) - _mat_vec(H, prior_mean)
        loc = prior_mean + _mat_vec(gain, residual)
        if self.latent_dim == 1:
            return _gaussian(loc, cov[..., 0].clamp_min(0).sqrt(), True)
        return _gaussian(loc, _psd_sqrt(cov), False)


def _shared_rows(mask: Tensor) -> Tensor:
    """``mask`` without leading dimensions that only repeat it (particles share the series' mask)."""
    while mask.dim() > 2 and mask.stride(0) == 0:
        mask = mask[0]
    return mask

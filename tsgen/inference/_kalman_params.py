"""Parameters of the linear-Gaussian state-space model and their validation.

Model (statsmodels / pykalman convention; the first observation uses the
initial state directly)::

    x_1     ~ N(initial_state_mean, initial_state_covariance)
    y_t     = H_t x_t + d_t + v_t,        v_t ~ N(0, R_t)
    x_{t+1} = F_t x_t + c_t + w_t,        w_t ~ N(0, Q_t)

Every field may carry leading batch dimensions that broadcast against the
batch dimensions of the observations; a field named in ``time_varying``
carries a time axis just before its event dimensions.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["KalmanParams", "PreparedParams", "event_shapes", "prepare_params", "prepare_observations"]


class KalmanParams(NamedTuple):
    """Matrices of a linear-Gaussian state-space model (pykalman names).

    Shapes, with ``S`` states and ``D`` observed dimensions:
    ``transition_matrices`` F ``(*batch, S, S)``, ``observation_matrices``
    H ``(*batch, D, S)``, ``transition_covariance`` Q ``(*batch, S, S)``,
    ``observation_covariance`` R ``(*batch, D, D)``,
    ``initial_state_mean`` ``(*batch, S)``, ``initial_state_covariance``
    ``(*batch, S, S)``, ``transition_offsets`` c ``(*batch, S)`` and
    ``observation_offsets`` d ``(*batch, D)`` (``None`` means zero).
    Fields named in ``time_varying`` get a time axis before the event
    dimensions, e.g. F ``(*batch, T, S, S)``.
    """

    transition_matrices: Tensor
    observation_matrices: Tensor
    transition_covariance: Tensor
    observation_covariance: Tensor
    initial_state_mean: Tensor
    initial_state_covariance: Tensor
    transition_offsets: Tensor | None = None
    observation_offsets: Tensor | None = None
    time_varying: frozenset[str] = frozenset()


def event_shapes(state_dim: int, obs_dim: int) -> dict[str, tuple[int, ...]]:
    """The event shape of every :class:`KalmanParams` field for ``S`` states and ``D`` observed dims."""
    S, D = state_dim, obs_dim
    return {
        "transition_matrices": (S, S),
        "observation_matrices": (D, S),
        "transition_covariance": (S, S),
        "observation_covariance": (D, D),
        "initial_state_mean": (S,),
        "initial_state_covariance": (S, S),
        "transition_offsets": (S,),
        "observation_offsets": (D,),
    }


# Number of event dimensions of each field (the time axis, if any, sits just before them).
_EVENT_DIMS = {
    "transition_matrices": 2,
    "observation_matrices": 2,
    "transition_covariance": 2,
    "observation_covariance": 2,
    "initial_state_mean": 1,
    "initial_state_covariance": 2,
    "transition_offsets": 1,
    "observation_offsets": 1,
}
_MAY_VARY = frozenset(_EVENT_DIMS) - {"initial_state_mean", "initial_state_covariance"}


class PreparedParams(NamedTuple):
    """Validated parameters, all of one floating dtype.

    ``batch_shape`` is the broadcast of the parameters' own batch dims only
    (not the observations'), so that work that depends on the parameters
    alone (e.g. the Riccati recursion) runs once per distinct parameter set.
    """

    F: Tensor
    H: Tensor
    Q: Tensor
    R: Tensor
    m1: Tensor
    P1: Tensor
    c: Tensor | None
    d: Tensor | None
    time_varying: frozenset[str]
    batch_shape: torch.Size
    num_times: int | None  # length of the time axis of time-varying fields
    state_dim: int
    obs_dim: int

    def is_time_varying(self, name: str) -> bool:
        return name in self.time_varying

    def at(self, name: str, t: int) -> Tensor | None:
        """Field ``name`` at time index ``t`` (0-based), without its time axis."""
        value = getattr(self, name)
        if value is None or name not in self.time_varying:
            return value
        return value.select(value.dim() - _EVENT_DIMS_SHORT[name] - 1, t)


_SHORT = {
    "transition_matrices": "F",
    "observation_matrices": "H",
    "transition_covariance": "Q",
    "observation_covariance": "R",
    "initial_state_mean": "m1",
    "initial_state_covariance": "P1",
    "transition_offsets": "c",
    "observation_offsets": "d",
}
_EVENT_DIMS_SHORT = {_SHORT[k]: v for k, v in _EVENT_DIMS.items()}


def prepare_params(params: KalmanParams, dtype: torch.dtype | None = None) -> PreparedParams:
    """Check shapes and types of ``params`` and cast them to one float dtype.

    Raises ``TypeError``/``ValueError`` naming the offending field.
    """
    if not isinstance(params, KalmanParams):
        raise TypeError(f"`params` must be a KalmanParams; got {type(params).__name__}.")
    time_varying = frozenset(params.time_varying)
    unknown = time_varying - _MAY_VARY
    if unknown:
        raise ValueError(
            f"`params.time_varying` may only name {sorted(_MAY_VARY)}; got {sorted(unknown)}."
        )
    tensors = {}
    for name in _EVENT_DIMS:
        value = getattr(params, name)
        if value is None:
            if name in ("transition_offsets", "observation_offsets"):
                if name in time_varying:
                    raise ValueError(f"`params.{name}` is None but listed in `time_varying`.")
                tensors[name] = None
                continue
            raise TypeError(f"`params.{name}` must be a torch.Tensor; got None.")
        if not isinstance(value, Tensor):
            raise TypeError(f"`params.{name}` must be a torch.Tensor; got {type(value).__name__}.")
        if not (value.is_floating_point()):
            raise TypeError(f"`params.{name}` must be a floating-point tensor; got dtype {value.dtype}.")
        needed = _EVENT_DIMS[name] + (1 if name in time_varying else 0)
        if value.dim() < needed:
            raise ValueError(
                f"`params.{name}` must have at least {needed} dimensions; got shape {tuple(value.shape)}."
            )
        tensors[name] = value
    if dtype is None:
        # One common dtype; float32 only when every field is float32 (deep models), else float64.
        dtype = torch.float32
        for value in tensors.values():
            if value is not None:
                dtype = torch.promote_types(dtype, value.dtype)
    tensors = {k: (None if v is None else v.to(dtype)) for k, v in tensors.items()}

    state_dim = tensors["initial_state_mean"].shape[-1]
    obs_dim = tensors["observation_matrices"].shape[-2]
    expected = event_shapes(state_dim, obs_dim)
    batch_shapes = []
    num_times = None
    for name, value in tensors.items():
        if value is None:
            continue
        event = tuple(value.shape[value.dim() - _EVENT_DIMS[name]:])
        if event != expected[name]:
            raise ValueError(
                f"`params.{name}` must end in shape {expected[name]} (S={state_dim} states, "
                f"D={obs_dim} observed dims); got shape {tuple(value.shape)}."
            )
        lead = value.shape[: value.dim() - _EVENT_DIMS[name]]
        if name in time_varying:
            if num_times is not None and lead[-1] != num_times:
                raise ValueError(
                    f"time-varying fields must share one time length; `params.{name}` has "
                    f"{lead[-1]}, another field has {num_times}."
                )
            num_times = lead[-1]
            lead = lead[:-1]
        batch_shapes.append(lead)
    try:
        batch_shape = torch.broadcast_shapes(*batch_shapes)
    except RuntimeError as err:
        raise ValueError(f"the batch dimensions of `params` do not broadcast: {err}") from None
    short = {_SHORT[k]: v for k, v in tensors.items()}
    return PreparedParams(
        **short,
        time_varying=frozenset(_SHORT[k] for k in time_varying),
        batch_shape=batch_shape,
        num_times=num_times,
        state_dim=state_dim,
        obs_dim=obs_dim,
    )


def prepare_observations(
    y: Tensor, mask: Tensor | None, params: PreparedParams
) -> tuple[Tensor, Tensor, torch.Size]:
    """Validate ``y`` ``(*b, T, D)`` and ``mask``; return ``(y, mask, batch_shape)``.

    ``y`` is cast to the parameters' dtype; ``mask`` defaults to ``~isnan(y)``.
    The returned batch shape broadcasts the observations' and the parameters'.
    """
    if not isinstance(y, Tensor):
        raise TypeError(f"`y` must be a torch.Tensor of shape (*batch, T, D); got {type(y).__name__}.")
    if y.dim() < 2:
        raise ValueError(f"`y` must have shape (*batch, T, D); got shape {tuple(y.shape)}.")
    if y.shape[-1] != params.obs_dim:
        raise ValueError(
            f"`y` must have D={params.obs_dim} columns (rows of the observation matrix); "
            f"got shape {tuple(y.shape)}."
        )
    y = y.to(params.F.dtype)
    if mask is None:
        mask = ~torch.isnan(y)
    else:
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            raise TypeError(
                f"`mask` must be a bool tensor shaped like `y` (True = observed) or None; got "
                f"{type(mask).__name__ if not isinstance(mask, Tensor) else mask.dtype}."
            )
        if mask.shape != y.shape:
            try:
                mask = mask.expand(y.shape)
            except RuntimeError:
                raise ValueError(
                    f"`mask` must have the shape of `y` {tuple(y.shape)}; got {tuple(mask.shape)}."
                ) from None
    num_times = y.shape[-2]
    if params.num_times is not None and params.num_times < num_times:
        raise ValueError(
            f"time-varying params cover {params.num_times} steps but `y` has T={num_times}."
        )
    try:
        batch_shape = torch.broadcast_shapes(y.shape[:-2], params.batch_shape)
    except RuntimeError:
        raise ValueError(
            f"the batch dimensions of `y` {tuple(y.shape[:-2])} and of `params` "
            f"{tuple(params.batch_shape)} do not broadcast."
        ) from None
    return y, mask, batch_shape

r"""Causal data scaling for the deep models: the scale of step ``t`` reads only the values before ``t``.

DeepAR divides a series by its mean absolute value so one network serves
series of any magnitude. Taking that mean over the whole sequence makes
the density of ``x_t`` depend on later values (a spike at the end moves
every per-step score), so here the scale of step ``t`` (0-based) is

.. math::

    s_t = \frac{c\, s_0 + \sum_{u = t-W}^{t-1} |x_u|\, 1\{x_u \text{ observed}\}}
               {c + \sum_{u = t-W}^{t-1} 1\{x_u \text{ observed}\}}

per variable: the mean absolute value of the last ``W`` steps, shrunk
towards ``s_0`` with the weight of ``c = PRIOR_WEIGHT`` observations.
``s_0`` is the mean absolute value of all the training data, stored on the
model (a buffer, saved with it); ``W`` is the model's window length. So
``s_t`` is a function of ``x_{<t}`` only, the same function in training,
scoring and forecasting (sampled values enter the window as the forecast
advances), never 0 (the prior is in it), and a constant factor on the data
multiplies every ``s_t`` by that factor: results do not depend on units.

Three modes (:func:`scale_mode`):

- ``"prefix"``: the scale above (DeepAR scaling, causal);
- ``"fixed"``: ``s_t = s_0`` for every step: the data's units, divided out
  (location-scale likelihoods without DeepAR scaling);
- ``"none"``: no scale (count and binary likelihoods without scaling: their
  support is the units).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tsgen._validation import is_int

__all__ = [
    "PRIOR_WEIGHT", "BoxCox", "CausalScale", "LagDifference", "ScaleWindow", "choose_difference_lag",
    "fitted_scale", "guerrero_lambda", "lag_differences", "scale_mode",
]

#: weight of the fitted scale ``s_0`` in every step's scale, in observations
PRIOR_WEIGHT = 1.0
_MODES = ("prefix", "fixed", "none")


def fitted_scale(values: Tensor, mask: Tensor) -> Tensor:
    """``s_0`` ``(D,)``: mean ``|x|`` over every observed value of ``values`` ``(..., D)``, in float64.

    A variable never observed, or observed only as 0, gets 1 (any positive
    number is a valid unit there).
    """
    values = values.double()
    magnitude = torch.where(mask, values.abs(), torch.zeros((), dtype=values.dtype, device=values.device))
    dims = tuple(range(values.dim() - 1))
    scale = magnitude.sum(dims) / mask.sum(dims).clamp(min=1)
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def scale_mode(scaling, head) -> str:
    """The mode for a model's ``scaling`` argument (True, False or "auto") and its likelihood head.

    ``"auto"`` scales when the head supports it (not Bernoulli); without
    DeepAR scaling a location-scale head still has the data's units divided out.
    """
    if scaling == "auto":
        scaling = getattr(head, "scalable", True)
    if scaling:
        return "prefix"
    return "fixed" if getattr(head, "location_scale", False) else "none"


@dataclass
class ScaleWindow:
    """What the scale of the current step reads: ``|x|`` of the last ``W`` steps before it
    (most recent first; 0 where missing) and 1.0 where observed, both ``(*batch, W, D)``."""

    magnitude: Tensor
    observed: Tensor


class CausalScale(nn.Module):
    """The per-step data scale of a deep model (module docstring).

    Parameters
    ----------
    n_dims : int
        ``D``.
    window : int
        ``W``, the steps the scale looks back over.
    mode : {"prefix", "fixed", "none"}
    """

    def __init__(self, n_dims: int, window: int, mode: str = "prefix"):
        super().__init__()
        if mode not in _MODES:
            raise ValueError(f"`mode` must be one of {_MODES}; got {mode!r}.")
        if not is_int(window) or window < 1:
            raise ValueError(f"`window` must be a positive integer; got {window!r}.")
        self.mode, self.window = mode, window
        self.register_buffer("prior", torch.ones(n_dims))

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, window={self.window}"

    @torch.no_grad()
    def fit_prior(self, values: Tensor, mask: Tensor) -> None:
        """Set ``s_0`` from training data ``(..., D)``."""
        self.prior.copy_(fitted_scale(values, mask).to(self.prior))

    # ------------------------------------------------------------ whole sequences
    def sequence(self, values: Tensor, mask: Tensor) -> Tensor | None:
        """``s_t`` of every step of sequences ``(B, T, D)`` -> ``(B, T, D)`` (None in mode "none")."""
        if self.mode == "none":
            return None
        prior = self.prior.to(values.dtype)
        if self.mode == "fixed":
            return prior.expand(values.shape)
        # windowed sums from cumulative sums, in float64 so long series lose no precision
        magnitude = torch.where(mask, values.double().abs(), torch.zeros((), dtype=torch.float64,
                                                                           device=values.device))
        totals = torch.nn.functional.pad(magnitude.cumsum(-2), (0, 0, 1, 0))  # totals[t] = sum_{u<t}
        counts = torch.nn.functional.pad(mask.double().cumsum(-2), (0, 0, 1, 0))
        steps = values.shape[-2]
        ends = torch.arange(steps, device=values.device)
        starts = (ends - self.window).clamp(min=0)
        window_sum = totals[..., ends, :] - totals[..., starts, :]
        window_count = counts[..., ends, :] - counts[..., starts, :]
        scale = (PRIOR_WEIGHT * self.prior.double() + window_sum) / (PRIOR_WEIGHT + window_count)
        return scale.to(values.dtype)

    def log_ratio(self, scale: Tensor | None, like: Tensor) -> Tensor:
        """``log(s_t / s_0)`` (a units-free network input); zeros shaped like ``like`` without a scale."""
        if scale is None:
            return torch.zeros_like(like)
        return (scale / self.prior.to(scale.dtype)).log()

    # ------------------------------------------------------------- step by step
    def start(self, batch_shape, like: Tensor) -> tuple[ScaleWindow | None, Tensor | None]:
        """``(window, scale)`` of the first step (nothing seen before it)."""
        batch_shape = tuple(batch_shape)
        if self.mode == "none":
            return None, None
        prior = self.prior.to(like.dtype).expand(*batch_shape, len(self.prior))
        if self.mode == "fixed":
            return None, prior
        zeros = like.new_zeros(*batch_shape, self.window, len(self.prior))
        return ScaleWindow(zeros, zeros.clone()), prior

    def at(self, values: Tensor, mask: Tensor, steps: Tensor) -> tuple[ScaleWindow | None, Tensor | None]:
        """``(window, scale)`` of step ``steps[b]`` (0-based) of each sequence ``(B, T, D)``.

        The window holds ``x_{steps-1}, ..., x_{steps-W}`` (most recent first),
        so pushing ``x_{steps}`` next gives the following step's scale.
        """
        if self.mode != "prefix":
            return self.start((values.shape[0],), values)
        rows = torch.arange(values.shape[0], device=values.device)[:, None]
        positions = steps.to(values.device)[:, None] - 1 - torch.arange(self.window, device=values.device)
        inside = (positions >= 0)[..., None]
        positions = positions.clamp(min=0)
        observed = mask[rows, positions] & inside
        zero = torch.zeros((), dtype=values.dtype, device=values.device)
        window = ScaleWindow(torch.where(observed, values[rows, positions].abs(), zero), observed.to(values.dtype))
        return window, self.current(window)

    def current(self, window: ScaleWindow) -> Tensor:
        """``s_t`` ``(*batch, D)`` from the window of step ``t``."""
        prior = self.prior.to(window.magnitude.dtype)
        return (PRIOR_WEIGHT * prior + window.magnitude.sum(-2)) / (PRIOR_WEIGHT + window.observed.sum(-2))

    def advance(
        self, window: ScaleWindow | None, scale: Tensor | None, x_prev: Tensor | None
    ) -> tuple[ScaleWindow | None, Tensor | None]:
        """``(window, scale)`` of the next step after the current step's value ``x_prev``
        ``(*batch, D)`` (NaN where missing; None: nothing observed)."""
        if window is None:  # modes "fixed" and "none": the scale never moves
            return None, scale
        if x_prev is None:
            seen = torch.zeros_like(window.magnitude[..., 0, :])
            magnitude = seen
        else:
            observed = ~torch.isnan(x_prev)
            seen = observed.to(window.magnitude.dtype)
            magnitude = torch.where(observed, x_prev.abs(), torch.zeros((), dtype=x_prev.dtype,
                                                                        device=x_prev.device))
        window = ScaleWindow(
            torch.cat([magnitude.unsqueeze(-2), window.magnitude[..., :-1, :]], dim=-2),
            torch.cat([seen.unsqueeze(-2), window.observed[..., :-1, :]], dim=-2),
        )
        return window, self.current(window)


# ------------------------------------------------------------------ differencing


def _masked_std(values: Tensor, mask: Tensor) -> Tensor:
    """Standard deviation over time of each series and variable, ``(B, T, D)`` -> ``(B, D)`` (NaN when < 2 values)."""
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    count = mask.sum(1)
    # squared deviations overflow float64 past about 1e154 (zero-mean data of size 1e160 gave inf / inf to the
    # lag choice): the spread is taken of the values in units of their largest magnitude
    size = torch.where(mask, values.abs(), zero).amax(1)
    size = torch.where(size > 0, size, torch.ones_like(size))
    unit = torch.where(mask, values / size[:, None], zero)
    mean = unit.sum(1) / count.clamp(min=1)
    spread = torch.where(mask, (unit - mean[:, None]) ** 2, zero).sum(1) / (count - 1).clamp(min=1)
    return torch.where(count >= 2, spread.sqrt() * size, torch.full((), float("nan"), dtype=values.dtype))


def _lagged(tensor: Tensor, lag: int) -> Tensor:
    """``tensor[:, t - lag]`` at every ``t`` of ``(B, T, D)``, 0 (False) before the start."""
    return torch.nn.functional.pad(tensor, (0, 0, lag, 0))[:, : tensor.shape[1]]


def lag_differences(values: Tensor, mask: Tensor, lag: int) -> tuple[Tensor, Tensor]:
    """``x_t - x_{t-lag}`` ``(B, T, D)`` and where both ends are observed (False for ``t < lag``)."""
    return values - _lagged(values, lag), mask & _lagged(mask, lag)


def choose_difference_lag(values: Tensor, mask: Tensor, period: int) -> int | None:
    """The differencing lag that makes ``values`` ``(B, T, D)`` most predictable, or None.

    Candidates are 1 and the seasonal ``period`` (when the shortest series
    holds three periods): the one whose differences have the smallest
    spread (standard deviation, averaged over series and variables,
    relative to the undifferenced series') wins, as long as it is below the
    series' own spread. A white-noise series (differences spread ``sqrt 2``
    wider) stays undifferenced, a random walk takes lag 1, a seasonal series
    such as monthly CO2 or airline passengers the seasonal lag.
    """
    values = values.double()
    level = _masked_std(values, mask)
    observed = mask.sum(1).min()
    candidates = [1] + ([period] if period > 1 and int(observed) >= 3 * period else [])
    best, best_ratio = None, 1.0
    for lag in candidates:
        differences, valid = lag_differences(values, mask, lag)
        ratio = _masked_std(differences, valid) / level
        ratio = ratio[torch.isfinite(ratio)]
        if ratio.numel() and float(ratio.mean()) < best_ratio:
            best, best_ratio = lag, float(ratio.mean())
    return best


class LagDifference:
    r"""Seasonal (or first) differences, the location half of the data normalisation.

    Mean scaling alone leaves a series' level in the network's inputs: on monthly
    CO2 (about 330 ppm) the seasonal cycle is 1% of the scale and the trend walks
    the inputs out of the range seen in training. The deep estimators therefore
    model, for location-scale likelihoods, the causal residual

    .. math::

        z_t = (x_t - m_t) / c, \qquad m_t = x_{t-p}

    of a seasonal naive forecast (``p`` the seasonal period; ``p = 1``: the last
    value), with ``c`` the training data's mean ``|x_t - x_{t-p}|``. Where
    ``x_{t-p}`` is missing or before the series' start, ``m_t`` is the last value
    observed before ``t`` (the training data's mean before any). ``m_t`` reads
    only ``x_{<t}``, so ``log p(x_t | x_{<t}) = log p(z_t | z_{<t}) - log c``: the
    density stays exact and causal, in the data's units, and the same map serves
    training, scoring and forecasting (forecasts invert it step by step on each
    sample path).

    Parameters
    ----------
    lag : int
        ``p``.
    location : Tensor (D,)
        ``m_t`` before any observed value (the training data's mean).
    scale : Tensor (D,)
        ``c``.
    """

    def __init__(self, lag: int, location: Tensor, scale: Tensor):
        if not is_int(lag) or lag < 1:
            raise ValueError(f"`lag` must be a positive integer; got {lag!r}.")
        self.lag = int(lag)
        self.location = location.double()
        self.scale = scale.double()

    @classmethod
    def fit(cls, values: Tensor, mask: Tensor, lag: int) -> LagDifference:
        """``location`` and ``scale`` from training data ``(B, T, D)``."""
        values = values.double()
        zero = torch.zeros((), dtype=values.dtype)
        location = torch.where(mask, values, zero).sum((0, 1)) / mask.sum((0, 1)).clamp(min=1)
        differences, valid = lag_differences(values, mask, lag)
        return cls(lag, location, fitted_scale(differences, valid))

    def to_meta(self) -> dict:
        return {"lag": self.lag, "location": self.location.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_meta(cls, meta: dict) -> LagDifference:
        return cls(meta["lag"], torch.tensor(meta["location"], dtype=torch.float64),
                   torch.tensor(meta["scale"], dtype=torch.float64))

    def locations(self, values: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """``m_t`` ``(B, T, D)`` and whether it is ``x_{t-p}`` itself (False where it fell back)."""
        steps = values.shape[1]
        positions = torch.arange(steps, device=values.device)[None, :, None].expand(values.shape)
        last_seen = torch.where(mask, positions, torch.full((), -1, device=values.device)).cummax(1).values
        before = torch.nn.functional.pad(last_seen, (0, 0, 1, 0), value=-1)[:, :steps]  # last observed index < t
        previous = values.gather(1, before.clamp(min=0))
        previous = torch.where(before >= 0, previous, self.location.to(values))
        has_lag = _lagged(mask, self.lag)
        return torch.where(has_lag, _lagged(values, self.lag), previous), has_lag

    def forward(self, values: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """``z`` (NaN where ``x`` is missing) and where ``m_t`` is the lagged value itself."""
        location, has_lag = self.locations(values, mask)
        z = (values - location) / self.scale.to(values)
        return torch.where(mask, z, torch.full((), float("nan"), dtype=values.dtype)), has_lag

    def log_det(self, mask: Tensor) -> Tensor:
        """``log |dz_t / dx_t|`` summed over each step's observed variables: ``(B, T)``."""
        return -(mask.to(self.scale.dtype) * self.scale.log()).sum(-1)

    def invert(self, draws: Tensor, values: Tensor, mask: Tensor, lengths: Tensor) -> Tensor:
        """Paths of ``x`` from paths of ``z`` ``(B, S, H, D)`` that continue each series ``(B, T, D)``."""
        p = self.lag
        rows = torch.arange(values.shape[0])[:, None]
        positions = lengths[:, None] - p + torch.arange(p)  # x_{n-p} .. x_{n-1}
        inside = positions >= 0
        lagged = values[rows, positions.clamp(min=0)].to(draws)
        lagged_mask = (mask[rows, positions.clamp(min=0)] & inside[..., None]).to(draws.device)
        # x_n's fallback location is the last value observed before n: the same recursion one step on
        ends = torch.nn.functional.pad(values, (0, 0, 0, 1))
        ends_mask = torch.nn.functional.pad(mask, (0, 0, 0, 1))
        fallback, _ = self.locations(ends, ends_mask)
        previous = fallback[torch.arange(values.shape[0]), lengths].to(draws)[:, None].expand(
            draws.shape[0], draws.shape[1], draws.shape[-1])
        scale = self.scale.to(draws)
        path = []
        for h in range(draws.shape[2]):
            if h < p:
                m = torch.where(lagged_mask[:, None, h], lagged[:, None, h], previous)
            else:
                m = path[h - p]
            previous = m + scale * draws[:, :, h]
            path.append(previous)
        return torch.stack(path, dim=2)


# ------------------------------------------------------- variance stabilising


def _block_ratios(values: Tensor, mask: Tensor, period: int) -> tuple[Tensor, Tensor, Tensor]:
    """Guerrero's blocks: ``period`` consecutive steps aligned to each series' last step.

    ``values``, ``mask`` ``(B, T, D)`` -> block means, standard deviations and
    whether each block has two observed values and a positive mean, all ``(B, N, D)``.
    """
    steps = values.shape[1]
    n_blocks = steps // period
    # right-align every series: padding past a series' end is unobserved, so rolling it to the front leaves the
    # last observed step in the last column and the blocks end there
    last = torch.where(mask.any(-1), torch.arange(steps), torch.full((), -1)).amax(1)  # (B,)
    shift = (steps - 1 - last).clamp(min=0)
    index = (torch.arange(steps)[None, :] - shift[:, None]) % steps
    values = values.gather(1, index[..., None].expand(values.shape))
    mask = mask.gather(1, index[..., None].expand(mask.shape))
    cut = steps - n_blocks * period
    shape = (values.shape[0], n_blocks, period, values.shape[2])
    blocks, seen = values[:, cut:].reshape(shape), mask[:, cut:].reshape(shape)
    zero = torch.zeros((), dtype=values.dtype)
    count = seen.sum(2)
    mean = torch.where(seen, blocks, zero).sum(2) / count.clamp(min=1)
    spread = (torch.where(seen, (blocks - mean[:, :, None]) ** 2, zero).sum(2) / (count - 1).clamp(min=1)).sqrt()
    return mean, spread, (count >= 2) & (mean > 0)


def guerrero_lambda(values: Tensor, mask: Tensor, period: int, lower: float = 0.0, upper: float = 1.0
                    ) -> Tensor | None:
    r"""Guerrero's (1993) Box-Cox parameter per variable, or None when the series are too short.

    The series ``(B, T, D)`` are cut into blocks of ``max(period, 2)`` steps
    (aligned to each series' end, as R's ``forecast::BoxCox.lambda`` and
    coreforecast's ``boxcox_lambda(method="guerrero")`` do); ``lambda``
    minimises the coefficient of variation of ``sd_b / mean_b^(1 - lambda)``
    over the blocks ``b``: the power under which a block's spread no longer
    grows with its level. With several series the coefficient is taken
    within each series and averaged, so series of different sizes do not
    read as a level effect. The minimum is searched on a grid of step 0.01
    over ``[lower, upper]``, refined to 1e-4 around the best point.
    Variables whose series have fewer than two usable blocks get NaN;
    None when no variable has them.
    """
    period = max(int(period), 2)
    values = values.double()
    mean, spread, usable = _block_ratios(values, mask, period)  # (B, N, D)
    usable = usable & (usable.sum(1, keepdim=True) >= 2)
    if not bool(usable.any()):
        return None
    log_mean = torch.where(usable, mean, torch.ones((), dtype=values.dtype)).log()

    def criterion(lambdas: Tensor) -> Tensor:  # (G,) -> (G, D)
        ratio = spread[None] * torch.exp(-(1 - lambdas[:, None, None, None]) * log_mean[None])  # (G, B, N, D)
        ratio = torch.where(usable[None], ratio, torch.zeros((), dtype=values.dtype))
        count = usable.sum(1).double()  # (B, D)
        centre = ratio.sum(2) / count.clamp(min=1)
        deviation = torch.where(usable[None], ratio - centre[:, :, None], torch.zeros((), dtype=values.dtype))
        cv = (deviation.square().sum(2) / (count - 1).clamp(min=1)).sqrt() / centre.clamp(min=1e-300)
        has = count >= 2  # (B, D)
        return torch.where(has, cv, torch.zeros((), dtype=values.dtype)).sum(1) / has.sum(0).clamp(min=1)

    grid = torch.linspace(lower, upper, int(round((upper - lower) / 0.01)) + 1, dtype=torch.float64)
    best = grid[criterion(grid).argmin(0)]  # (D,)
    fine = (best[None] + torch.linspace(-0.01, 0.01, 201, dtype=torch.float64)[:, None]).clamp(lower, upper)
    scores = torch.stack([criterion(fine[:, d])[:, d] for d in range(fine.shape[1])], -1)
    chosen = fine.gather(0, scores.argmin(0)[None])[0]
    return torch.where(usable.any((0, 1)), chosen, torch.full((), float("nan"), dtype=torch.float64))


class BoxCox:
    r"""A Box-Cox transform per variable, the variance-stabilising half of the data normalisation.

    .. math::

        w_t = (x_t^\lambda - 1) / \lambda \quad (\lambda > 0), \qquad w_t = \log x_t \quad (\lambda = 0),

    applied to positive series before :class:`LagDifference`, so a seasonal swing
    that grows with the level (airline passengers) becomes one of constant size.
    ``lambda = 1`` leaves a variable as it is. The map is fixed (no data enters it
    after fitting), so ``log p(x_t | x_{<t}) = log p(w_t | w_{<t}) + (lambda - 1) log x_t``
    stays exact, causal and in the data's units; forecasts draw paths of ``w`` and
    map each one back, so quantiles are the back-transformed quantiles and the mean
    is the mean of the back-transformed paths (not the back-transformed mean, which
    for the log is the median).

    ``lambda`` is restricted to ``[0, 1]``, between the log and no transform: then
    every draw maps back (the log's inverse is onto the positive reals; for
    ``0 < lambda < 1`` only draws below ``-1 / lambda``, i.e. below ``x = 0``, fall
    outside, and are clamped to 0), whereas below 0 the inverse is bounded and a
    forecast path that strays past ``-1 / lambda`` has no value.

    Parameters
    ----------
    lambdas : Tensor (D,)
        ``lambda`` of each variable, in ``[0, 1]``.
    """

    def __init__(self, lambdas: Tensor):
        lambdas = torch.as_tensor(lambdas, dtype=torch.float64).reshape(-1)
        if not bool(((lambdas >= 0) & (lambdas <= 1)).all()):
            raise ValueError(f"Box-Cox `lambdas` must lie in [0, 1]; got {lambdas.tolist()}.")
        self.lambdas = lambdas

    @property
    def active(self) -> Tensor:
        """``(D,)``: which variables are transformed (``lambda < 1``)."""
        return self.lambdas < 1

    def to_meta(self) -> dict:
        return {"lambdas": self.lambdas.tolist()}

    @classmethod
    def from_meta(cls, meta: dict) -> BoxCox:
        return cls(torch.tensor(meta["lambdas"], dtype=torch.float64))

    def describe(self) -> str:
        return ", ".join("log" if lam == 0 else "none" if lam == 1 else f"Box-Cox {lam:.4g}"
                         for lam in self.lambdas.tolist())

    def check(self, values: Tensor, mask: Tensor, name: str = "y") -> None:
        """A ``ValueError`` naming ``name`` when a transformed variable has a value <= 0."""
        bad = mask & (values <= 0) & self.active.to(values.device)
        if bool(bad.any()):
            raise ValueError(f"`{name}` has values <= 0, but the model was fitted with target_transform "
                             f"({self.describe()}), which is defined for positive values only; refit with "
                             "target_transform=None to model such a series.")

    def forward(self, values: Tensor, mask: Tensor) -> Tensor:
        """``w`` ``(..., D)`` of ``x`` (NaN where ``x`` is missing)."""
        self.check(values, mask)
        lam = self.lambdas.to(values)
        safe = torch.where(mask & self.active.to(values.device), values, torch.ones((), dtype=values.dtype))
        powered = torch.where(lam > 0, (safe.pow(lam) - 1) / torch.where(lam > 0, lam, 1.0), safe.log())
        w = torch.where(self.active.to(values.device), powered, values)
        return torch.where(mask, w, torch.full((), float("nan"), dtype=values.dtype))

    def log_det(self, values: Tensor, mask: Tensor) -> Tensor:
        """``log |dw_t / dx_t|`` summed over each step's observed variables: ``(..., T)``."""
        lam = self.lambdas.to(values)
        safe = torch.where(mask & self.active.to(values.device), values, torch.ones((), dtype=values.dtype))
        return ((lam - 1) * safe.log()).sum(-1)

    def invert(self, draws: Tensor) -> Tensor:
        """``x`` of draws of ``w`` ``(..., D)``; below ``x = 0`` (``lambda > 0``) a draw is clamped to 0."""
        lam = self.lambdas.to(draws)
        base = (lam * draws + 1).clamp(min=0)
        powered = torch.where(lam > 0, base.pow(1 / torch.where(lam > 0, lam, 1.0)), draws.exp())
        return torch.where(self.active.to(draws.device), powered, draws)

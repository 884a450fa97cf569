"""Forecast metrics: point errors, proper scores for probabilistic forecasts.

Every metric takes array-likes (numpy arrays, lists, pandas Series or
DataFrames, compared by position) and returns a float, or an array when
``axis`` keeps some axes. All of them are negatively oriented (lower is
better) except ``interval_coverage``, which is a frequency to compare with
the nominal level.

Conventions shared by every metric
----------------------------------
* ``y_true`` has any shape ``S`` (e.g. ``(H,)``, ``(H, D)`` or a leading
  batch of origins ``(B, H, D)``). NaN in ``y_true`` marks a missing value:
  it is skipped, and every score averages over the observed entries only.
  Predictions must be finite wherever ``y_true`` is observed.
* Forecast arguments of the same shape as ``y_true`` (``y_pred``, ``mean``,
  ``std``, ``lower``, ``upper``) must broadcast to ``S`` without changing
  it, so a scalar ``std`` works but a ``(H, 1)`` prediction against a
  ``(H,)`` target is an error, not a silent ``(H, H)`` outer product.
* Samples hold the draws on axis 0, then ``S`` (``model.sample``'s
  ``(n_samples, H, D)`` against ``(H, D)``); against a univariate target
  of shape ``(H,)`` (a test Series), ``model.sample``'s one-variable
  ``(n_samples, H, 1)`` is taken as ``(n_samples, H)``.
* ``axis`` names the axes of ``y_true`` to average over: ``None`` (default)
  averages everything into a float; an int or tuple keeps the other axes,
  e.g. ``axis=(1, 2)`` gives one score per origin of a ``(B, H, D)``
  batch; ``axis=()`` returns the per-element scores (NaN where missing).
  A slice without any observed value scores NaN.
* When both ``y_true`` and a forecast are pandas objects their indexes
  must be equal: the metrics compare by position and refuse to compare
  misaligned timestamps.

Metrics
-------
mae
    ``mean |y - yhat|``.
rmse
    ``sqrt(mean (y - yhat)^2)``.
mase
    ``mean |y - yhat| / s`` with the seasonal naive in-sample scale
    ``s = mean_{t>m} |y_t - y_{t-m}|`` of the training series (Hyndman &
    Koehler 2006), one scale per series.
smape
    M4-competition convention, in percent on 0..200:
    ``mean 200 |y - yhat| / (|y| + |yhat|)``, with 0/0 := 0 (an exact zero
    forecast of a zero is a perfect forecast).
crps_sample
    CRPS of the empirical distribution of samples, shape
    ``(n_samples, *S)``; exact O(n log n) sorted form. ``fair=True`` gives
    the unbiased ("fair") ensemble estimator instead.
crps_gaussian
    closed form for N(mean, std^2) (Gneiting & Raftery 2007).
crps_normal_mixture
    closed form for ``sum_k w_k N(mean_k, std_k^2)`` (Grimit et al. 2006),
    e.g. an ensemble of Gaussian forecasters.
pinball_loss
    quantile loss rho_q(u) = max(q u, (q - 1) u), u = y - yhat_q, per
    quantile level (no factor 2: at q = 0.5 it is MAE / 2).
interval_coverage
    fraction of observed y with lower <= y <= upper.
mape
    ``mean 100 |y - yhat| / |y|``, in percent (undefined where y = 0).
wape
    ``sum |y - yhat| / sum |y|`` (weighted absolute percentage error, as a
    fraction): MAE relative to the mean absolute level.
msis
    M4's mean scaled interval score of a (1 - alpha) interval, scaled by
    the in-sample seasonal naive MAE like ``mase``.
owa
    M4's overall weighted average: the mean of sMAPE and MASE, each
    relative to the Naive2 forecast's (1 = as good as Naive2).
energy_score
    multivariate CRPS of joint sample paths (Gneiting & Raftery 2007):
    ``E||X - y|| - 1/2 E||X - X'||``; ``axis`` names the axes forming the
    vector.
variogram_score
    Scheuerer & Hamill (2015) variogram score of order p of joint sample
    paths: ``sum_ij w_ij (|y_i - y_j|^p - E|X_i - X_j|^p)^2``.
log_score
    negative mean log density, from log densities such as
    ``model.log_likelihood(y, per_step=True)``.
gaussian_log_score
    negative mean log N(y | mean, std^2).

Helpers for sample forecasts (as returned by ``model.sample``):

quantile_from_samples
    empirical quantiles, quantile axis last (the layout ``pinball_loss``
    takes).
sample_interval_coverage
    coverage of the central ``level`` interval of the samples.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any

import numpy as np
from scipy.special import ndtr

__all__ = [
    "mae",
    "rmse",
    "mase",
    "smape",
    "mape",
    "wape",
    "msis",
    "owa",
    "crps_sample",
    "crps_gaussian",
    "crps_normal_mixture",
    "pinball_loss",
    "interval_coverage",
    "log_score",
    "gaussian_log_score",
    "energy_score",
    "variogram_score",
    "quantile_from_samples",
    "sample_interval_coverage",
]

Axis = int | tuple[int, ...] | None

_LOG_2PI = float(np.log(2.0 * np.pi))


# ---------------------------------------------------------------- validation


def _as_float_array(x: Any, name: str) -> np.ndarray:
    """float64 array from an array-like; pandas NA becomes NaN. Never writes into ``x``."""
    if hasattr(x, "to_numpy") and hasattr(x, "index"):
        # pandas: to_numpy handles nullable dtypes (pd.NA) that np.asarray rejects.
        try:
            return x.to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError) as err:
            raise TypeError(f"`{name}` must hold numbers; got a {type(x).__name__} that does not ({err}).") from None
    arr = np.asarray(x)
    if arr.dtype.kind in "biuf":
        return arr.astype(np.float64, copy=False)
    if arr.dtype.kind == "O":
        try:
            return arr.astype(np.float64)
        except (TypeError, ValueError):
            pass
    raise TypeError(f"`{name}` must be a real-valued array-like; got dtype {arr.dtype} from {type(x).__name__}.")


def _check_aligned(y_true: Any, other: Any, name: str) -> None:
    """Refuse two pandas objects whose indexes differ: we compare by position."""
    if not (hasattr(y_true, "index") and hasattr(other, "index")):
        return
    if hasattr(y_true.index, "equals") and len(y_true.index) == len(other.index):
        if not y_true.index.equals(other.index):
            raise ValueError(
                f"`{name}` has a different index from `y_true`; metrics compare values by position, "
                f"so align them first (e.g. `{name}.reindex(y_true.index)`)."
            )


def _target(y_true: Any) -> tuple[np.ndarray, np.ndarray]:
    """(y with missing entries set to 0, observed mask)."""
    y = _as_float_array(y_true, "y_true")
    observed = ~np.isnan(y)
    if np.isinf(y[observed]).any():
        raise ValueError("`y_true` must be finite, with NaN marking missing values; got +-inf.")
    return np.where(observed, y, 0.0), observed


def _forecast(
    x: Any, name: str, y_true: Any, shape: tuple[int, ...], observed: np.ndarray, trailing: tuple[int, ...] = ()
) -> np.ndarray:
    """Forecast array broadcast to ``shape + trailing``, finite wherever y is observed."""
    _check_aligned(y_true, x, name)
    arr = _as_float_array(x, name)
    full = shape + trailing
    try:
        ok = np.broadcast_shapes(arr.shape, full) == full
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"`{name}` must have shape {full} (or broadcast to it); got {arr.shape}.")
    arr = np.broadcast_to(arr, full)
    mask = observed.reshape(shape + (1,) * len(trailing))
    if (~np.isfinite(arr) & mask).any():
        raise ValueError(f"`{name}` must be finite wherever `y_true` is observed; got NaN or inf.")
    return arr


def _samples(samples: Any, shape: tuple[int, ...], observed: np.ndarray) -> np.ndarray:
    """Samples broadcast to ``(n_samples, *shape)``, finite wherever y is observed."""
    arr = _as_float_array(samples, "samples")
    if arr.ndim == 0 or arr.shape[0] == 0:
        raise ValueError(f"`samples` must have shape (n_samples, *y_true.shape) with n_samples >= 1; got {arr.shape}.")
    if arr.ndim == len(shape) + 2 and arr.shape[-1] == 1:
        arr = arr[..., 0]  # model.sample's one-variable axis, against a univariate y_true (a test Series)
    full = (arr.shape[0],) + shape
    try:
        ok = np.broadcast_shapes(arr.shape, full) == full
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            f"`samples` must have shape (n_samples, *y_true.shape) = {full} (samples on axis 0); got {arr.shape}."
        )
    arr = np.broadcast_to(arr, full)
    if (~np.isfinite(arr) & observed).any():
        raise ValueError("`samples` must be finite wherever `y_true` is observed; got NaN or inf.")
    return arr


def _nonnegative(arr: np.ndarray, name: str, observed: np.ndarray, strict: bool) -> None:
    bad = (arr <= 0) if strict else (arr < 0)
    if (bad & observed).any():
        expected = "> 0" if strict else ">= 0"
        raise ValueError(f"`{name}` must be {expected}; got min {arr[observed].min()}.")


def _levels(levels: Any, name: str, open_interval: bool = False) -> np.ndarray:
    arr = _as_float_array(levels, name)
    if arr.ndim > 1:
        raise ValueError(f"`{name}` must be a scalar or 1-D sequence of levels; got shape {arr.shape}.")
    if arr.ndim == 1 and arr.size == 0:
        raise ValueError(f"`{name}` must hold at least one level; got an empty sequence.")
    inside = (arr > 0) & (arr < 1) if open_interval else (arr >= 0) & (arr <= 1)
    if not inside.all():
        interval = "(0, 1)" if open_interval else "[0, 1]"
        raise ValueError(f"`{name}` must lie in {interval}; got {arr.tolist()}.")
    return arr


def _single_level(value: Any, name: str) -> float:
    """One level in the open interval (0, 1), e.g. a coverage or MSIS's alpha."""
    arr = _levels(value, name, open_interval=True)
    if arr.ndim != 0:
        raise ValueError(f"`{name}` must be a single float in (0, 1); got {arr.tolist()}.")
    return float(arr)


def _interval(
    lower: Any, upper: Any, y_true: Any, shape: tuple[int, ...], observed: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Interval bounds broadcast to ``shape``, with ``lower <= upper`` wherever y is observed."""
    lo = _forecast(lower, "lower", y_true, shape, observed)
    hi = _forecast(upper, "upper", y_true, shape, observed)
    if ((lo > hi) & observed).any():
        raise ValueError("`lower` must be <= `upper` everywhere `y_true` is observed; got lower > upper.")
    return lo, hi


def _normalize_axis(axis: Axis, ndim: int) -> tuple[int, ...]:
    """Axis of ``y_true`` as a tuple of non-negative ints (None -> all axes)."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, Integral) and not isinstance(axis, bool) else axis
    try:
        axes = tuple(axes)
    except TypeError:
        raise TypeError(f"`axis` must be None, an int or a tuple of ints; got {axis!r}.") from None
    out = []
    for a in axes:
        if not isinstance(a, Integral) or isinstance(a, bool):
            raise TypeError(f"`axis` must be None, an int or a tuple of ints; got {axis!r}.")
        if not -ndim <= a < ndim:
            raise ValueError(f"`axis` must index the {ndim} axes of `y_true`; got {axis!r}.")
        out.append(int(a) % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"`axis` must not repeat an axis; got {axis!r}.")
    return tuple(out)


def _mean_observed(values: np.ndarray, observed: np.ndarray, axis: Axis) -> float | np.ndarray:
    """Mean of ``values`` over the observed entries along ``axis`` of y_true.

    ``values`` has y_true's shape, possibly with extra trailing axes (e.g. one
    per quantile level) which are kept.
    """
    axes = _normalize_axis(axis, observed.ndim)
    trailing = values.ndim - observed.ndim
    mask = observed.reshape(observed.shape + (1,) * trailing)
    total = np.sum(np.where(mask, values, 0.0), axis=axes)
    count = np.sum(mask, axis=axes)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return float(mean) if mean.ndim == 0 else mean


# ------------------------------------------------------------- point metrics


def mae(y_true: Any, y_pred: Any, axis: Axis = None) -> float | np.ndarray:
    """Mean absolute error, ``mean |y - yhat|`` over observed ``y``.

    Parameters
    ----------
    y_true : array-like, shape S
        Targets; NaN marks missing values, which are skipped.
    y_pred : array-like, broadcastable to S
        Point forecasts.
    axis : None, int or tuple of int
        Axes of ``y_true`` to average over (see the module docstring).
    """
    y, observed = _target(y_true)
    pred = _forecast(y_pred, "y_pred", y_true, y.shape, observed)
    return _mean_observed(np.abs(y - pred), observed, axis)


def rmse(y_true: Any, y_pred: Any, axis: Axis = None) -> float | np.ndarray:
    """Root mean squared error, ``sqrt(mean (y - yhat)^2)`` over observed ``y``.

    Parameters are those of :func:`mae`; the square root is taken after the
    mean along ``axis``.
    """
    y, observed = _target(y_true)
    pred = _forecast(y_pred, "y_pred", y_true, y.shape, observed)
    mse = _mean_observed((y - pred) ** 2, observed, axis)
    return float(np.sqrt(mse)) if np.ndim(mse) == 0 else np.sqrt(mse)


def _seasonal_naive_scale(y_train: Any, y: np.ndarray, m: int, time_axis: int, metric: str) -> np.ndarray:
    """In-sample seasonal naive MAE of ``y_train`` per series, broadcastable to ``y.shape`` (MASE's and MSIS's scale)."""
    if not isinstance(m, Integral) or isinstance(m, bool):
        raise TypeError(f"`m` must be a positive int (the seasonal period); got {m!r}.")
    if m < 1:
        raise ValueError(f"`m` must be a positive int (the seasonal period); got {m}.")
    if y.ndim == 0:
        raise ValueError(f"`y_true` must have a time axis for {metric}; got a scalar.")
    train = _as_float_array(y_train, "y_train")
    if train.ndim != y.ndim:
        raise ValueError(
            f"`y_train` must be laid out like `y_true` ({y.ndim} axes, time on axis {time_axis}); "
            f"got shape {train.shape}."
        )
    if np.isinf(train).any():
        raise ValueError("`y_train` must be finite, with NaN marking missing values; got +-inf.")
    if not isinstance(time_axis, Integral) or isinstance(time_axis, bool):
        raise TypeError(f"`time_axis` must be an int; got {time_axis!r}.")
    if not -train.ndim <= time_axis < train.ndim:
        raise ValueError(f"`time_axis` must index the {train.ndim} axes of `y_train`; got {time_axis}.")
    t_ax = int(time_axis) % train.ndim
    n_time = train.shape[t_ax]
    if n_time <= m:
        raise ValueError(
            f"`y_train` must have more than m={m} time steps to compute the seasonal naive scale; got {n_time}."
        )
    lagged = np.abs(np.take(train, np.arange(m, n_time), axis=t_ax) - np.take(train, np.arange(n_time - m), axis=t_ax))
    valid = ~np.isnan(lagged)
    count = valid.sum(axis=t_ax, keepdims=True)
    if (count == 0).any():
        raise ValueError(
            f"`y_train` must have at least one pair of observed values m={m} steps apart in every series; "
            f"{int((count == 0).sum())} series have none (too short or too many NaN)."
        )
    scale = np.where(valid, lagged, 0.0).sum(axis=t_ax, keepdims=True) / count
    if (scale == 0).any():
        raise ValueError(
            f"`y_train` has a seasonal naive scale of 0 at m={m} in {int((scale == 0).sum())} series "
            f"(the series repeats exactly with period m), where {metric} is undefined; use another metric or another m."
        )
    try:
        ok = np.broadcast_shapes(scale.shape, y.shape) == y.shape
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            f"`y_train` must match `y_true` {y.shape} on every axis but time_axis={time_axis}; got {train.shape}."
        )
    return scale


def mase(
    y_true: Any, y_pred: Any, y_train: Any, m: int = 1, axis: Axis = None, time_axis: int = 0
) -> float | np.ndarray:
    """Mean absolute scaled error (Hyndman & Koehler 2006).

    ``mean_t |y_t - yhat_t| / s`` with the in-sample seasonal naive scale::

        s = 1/(T - m) * sum_{t=m+1}^{T} |y_train_t - y_train_{t-m}|,

    one ``s`` per series (pairs with a missing value are skipped). MASE < 1
    beats the in-sample seasonal naive forecast.

    Parameters
    ----------
    y_true, y_pred : array-like
        As in :func:`mae`.
    y_train : array-like
        The history the forecast was made from, laid out like ``y_true``
        with time on ``time_axis`` (e.g. ``(T,)`` for ``(H,)``, ``(T, D)``
        for ``(H, D)``, ``(B, T, D)`` for ``(B, H, D)`` with
        ``time_axis=1``).
    m : int
        Seasonal period of the naive scale (1 = random walk).
    axis : None, int or tuple of int
        Axes of ``y_true`` to average the scaled errors over.
    time_axis : int
        Time axis of ``y_train`` (and of ``y_true``).

    Raises
    ------
    ValueError
        If ``y_train`` has no pair of observed values ``m`` steps apart (too
        short), or if a series' scale is 0 (constant at lag ``m``), where
        MASE is undefined.
    """
    y, observed = _target(y_true)
    pred = _forecast(y_pred, "y_pred", y_true, y.shape, observed)
    scale = _seasonal_naive_scale(y_train, y, m, time_axis, "MASE")
    return _mean_observed(np.abs(y - pred) / scale, observed, axis)


def smape(y_true: Any, y_pred: Any, axis: Axis = None) -> float | np.ndarray:
    """Symmetric MAPE in the M4-competition convention, in percent on 0..200.

    ::

        sMAPE = mean 200 |y - yhat| / (|y| + |yhat|)

    Terms with ``y = yhat = 0`` count as 0 (a perfect forecast). The value is
    200 whenever forecast and target have opposite signs or one is 0.
    Parameters are those of :func:`mae`.
    """
    y, observed = _target(y_true)
    pred = _forecast(y_pred, "y_pred", y_true, y.shape, observed)
    denominator = np.abs(y) + np.abs(pred)
    with np.errstate(invalid="ignore", divide="ignore"):
        terms = np.where(denominator > 0, 200.0 * np.abs(y - pred) / denominator, 0.0)
    return _mean_observed(terms, observed, axis)


def mape(y_true: Any, y_pred: Any, axis: Axis = None) -> float | np.ndarray:
    """Mean absolute percentage error, in percent: ``mean 100 |y - yhat| / |y|``.

    Undefined where an observed ``y`` is 0 (use :func:`wape` or
    :func:`smape` for series that touch zero). Parameters are those of
    :func:`mae`.

    Raises
    ------
    ValueError
        If an observed ``y_true`` is 0.
    """
    y, observed = _target(y_true)
    pred = _forecast(y_pred, "y_pred", y_true, y.shape, observed)
    zero = (y == 0) & observed
    if zero.any():
        raise ValueError(
            f"`y_true` has {int(zero.sum())} observed zero(s), where MAPE is undefined; use wape or smape."
        )
    return _mean_observed(100.0 * np.abs(y - pred) / np.where(observed, np.abs(y), 1.0), observed, axis)


def wape(y_true: Any, y_pred: Any, axis: Axis = None) -> float | np.ndarray:
    """Weighted absolute percentage error, ``sum |y - yhat| / sum |y|`` (a fraction, not percent).

    The ratio of sums over the observed entries along ``axis``, i.e. MAE
    relative to the mean absolute level, so zeros in ``y`` are harmless
    unless a whole slice is 0. Parameters are those of :func:`mae`.

    Raises
    ------
    ValueError
        If a slice has observed values but ``sum |y| = 0``, where WAPE is
        undefined.
    """
    y, observed = _target(y_true)
    pred = _forecast(y_pred, "y_pred", y_true, y.shape, observed)
    # the ratio of the two means equals the ratio of sums over the same observed entries
    error = np.asarray(_mean_observed(np.abs(y - pred), observed, axis))
    level = np.asarray(_mean_observed(np.abs(y), observed, axis))
    if (level == 0).any():
        raise ValueError("`y_true` is 0 at every observed entry of a slice, where WAPE is undefined; use mae.")
    with np.errstate(invalid="ignore"):
        ratio = error / level
    return float(ratio) if ratio.ndim == 0 else ratio


def msis(
    y_true: Any,
    lower: Any,
    upper: Any,
    y_train: Any,
    m: int = 1,
    alpha: float = 0.05,
    axis: Axis = None,
    time_axis: int = 0,
) -> float | np.ndarray:
    """Mean scaled interval score of a ``(1 - alpha)`` interval (M4 competition).

        MSIS = mean_t [ (U_t - L_t) + 2/alpha (L_t - y_t) 1{y_t < L_t}
                                    + 2/alpha (y_t - U_t) 1{y_t > U_t} ] / s

    with ``s`` the in-sample seasonal naive MAE of :func:`mase` (one per
    series). The interval score is proper for the ``alpha/2`` and ``1 -
    alpha/2`` quantiles (Gneiting & Raftery 2007); M4 used ``alpha = 0.05``.

    Parameters
    ----------
    y_true : array-like, shape S
        Targets; NaN marks missing values.
    lower, upper : array-like, broadcastable to S
        The interval, ``lower <= upper`` (e.g. the ``q0.025``/``q0.975``
        columns of ``model.predict``).
    y_train, m, time_axis : as in :func:`mase`
    alpha : float in (0, 1)
        One minus the nominal coverage of the interval.
    axis : None, int or tuple of int
        Axes of ``y_true`` to average over.
    """
    a = _single_level(alpha, "alpha")
    y, observed = _target(y_true)
    lo, hi = _interval(lower, upper, y_true, y.shape, observed)
    scale = _seasonal_naive_scale(y_train, y, m, time_axis, "MSIS")
    penalty = 2.0 / a * (np.maximum(lo - y, 0.0) + np.maximum(y - hi, 0.0))
    return _mean_observed((hi - lo + penalty) / scale, observed, axis)


def owa(
    y_true: Any,
    y_pred: Any,
    y_naive2: Any,
    y_train: Any,
    m: int = 1,
    axis: Axis = None,
    time_axis: int = 0,
) -> float | np.ndarray:
    """Overall weighted average relative to Naive2, as in the M4 competition.

        OWA = 1/2 (sMAPE / sMAPE_Naive2 + MASE / MASE_Naive2)

    where each of the four is first averaged over ``axis`` (M4 averages
    over every horizon step and series, then takes the ratios), so OWA < 1
    beats Naive2 and Naive2 itself scores exactly 1.

    Parameters
    ----------
    y_true, y_train, m, time_axis : as in :func:`mase`
    y_pred : array-like, broadcastable to S
        The forecasts to rate.
    y_naive2 : array-like, broadcastable to S
        Naive2's forecasts of the same targets (M4's benchmark: the last
        value of the series after classical multiplicative seasonal
        adjustment, where a 90% autocorrelation test finds a season, carried
        forward and reseasonalised).
    axis : None, int or tuple of int
        Axes of ``y_true`` to average over before the ratios.

    Raises
    ------
    ValueError
        Where Naive2 is perfect (its sMAPE or MASE is 0), so the ratios are
        undefined.
    """
    ratios = []
    for name, metric, extra in (("sMAPE", smape, {}), ("MASE", mase, {"y_train": y_train, "m": m, "time_axis": time_axis})):
        own = np.asarray(metric(y_true, y_pred, axis=axis, **extra))
        try:
            reference = np.asarray(metric(y_true, y_naive2, axis=axis, **extra))
        except ValueError as err:
            raise ValueError(str(err).replace("`y_pred`", "`y_naive2`")) from None
        if (reference == 0).any():
            raise ValueError(f"`y_naive2` has a {name} of 0 (a perfect forecast), where OWA is undefined.")
        with np.errstate(invalid="ignore"):
            ratios.append(own / reference)
    result = 0.5 * (ratios[0] + ratios[1])
    return float(result) if result.ndim == 0 else result


# ------------------------------------------------------------ proper scores


def crps_sample(y_true: Any, samples: Any, axis: Axis = None, fair: bool = False) -> float | np.ndarray:
    """Continuous ranked probability score of a sample (ensemble) forecast.

    For the empirical distribution F_n of samples x_1..x_n::

        CRPS(F_n, y) = int (F_n(z) - 1{z >= y})^2 dz
                     = E|X - y| - 1/2 E|X - X'|
                     = 2/n^2 sum_i (x_(i) - y) (n 1{y < x_(i)} - i + 1/2),

    with x_(1) <= ... <= x_(n) the sorted samples (Jordan, Krueger & Lerch
    2019). The sorted form costs O(n log n) and is a sum of non-negative
    terms, so it is never negative. ``fair=True`` gives the unbiased
    ensemble estimator ``E|X - y| - 1/(2 n (n-1)) sum_{i,j} |x_i - x_j|``
    (Ferro 2014), an unbiased estimate of the CRPS of the distribution the
    samples come from; it needs n >= 2 and can be slightly negative.

    Parameters
    ----------
    y_true : array-like, shape S
        Targets; NaN marks missing values.
    samples : array-like, shape ``(n_samples, *S)``
        Samples on axis 0, the layout of ``model.sample`` (``(n_samples,
        horizon, n_dims)`` against ``y_true`` of shape ``(horizon,
        n_dims)``). ``samples.shape[1:]`` may broadcast to S.
    axis : None, int or tuple of int
        Axes of ``y_true`` to average over.
    fair : bool
        Use the unbiased ensemble estimator instead of the CRPS of F_n.
    """
    y, observed = _target(y_true)
    x = np.sort(_samples(samples, y.shape, observed), axis=0)
    n = x.shape[0]
    if fair and n < 2:
        raise ValueError(f"`samples` must hold at least 2 samples for fair=True; got {n}.")
    rank = np.arange(1, n + 1, dtype=np.float64).reshape((n,) + (1,) * y.ndim)
    weight = n * (y < x) - rank + 0.5
    crps = 2.0 / n**2 * np.sum((x - y) * weight, axis=0)
    if fair:
        # sum_{i,j} |x_i - x_j| = 2 sum_i (2i - n - 1) x_(i); fair spreads it over n(n-1) pairs, not n^2.
        pair_sum = 2.0 * np.sum((2.0 * rank - n - 1.0) * x, axis=0)
        crps = crps - pair_sum / (2.0 * n**2 * (n - 1))
    return _mean_observed(crps, observed, axis)


def crps_gaussian(y_true: Any, mean: Any, std: Any, axis: Axis = None) -> float | np.ndarray:
    """CRPS of N(mean, std^2) in closed form (Gneiting & Raftery 2007).

        CRPS = std [ z (2 Phi(z) - 1) + 2 phi(z) - 1/sqrt(pi) ],  z = (y - mean)/std

    ``std = 0`` is the point-mass limit ``|y - mean|``.

    Parameters
    ----------
    y_true : array-like, shape S
        Targets; NaN marks missing values.
    mean, std : array-like, broadcastable to S
        Forecast mean and standard deviation (std >= 0).
    axis : None, int or tuple of int
        Axes of ``y_true`` to average over.
    """
    y, observed = _target(y_true)
    mu = _forecast(mean, "mean", y_true, y.shape, observed)
    sigma = _forecast(std, "std", y_true, y.shape, observed)
    _nonnegative(sigma, "std", observed, strict=False)
    positive = sigma > 0
    safe_sigma = np.where(positive, sigma, 1.0)
    z = (y - mu) / safe_sigma
    pdf = np.exp(-0.5 * z**2) / np.sqrt(2.0 * np.pi)
    crps = safe_sigma * (z * (2.0 * ndtr(z) - 1.0) + 2.0 * pdf - 1.0 / np.sqrt(np.pi))
    return _mean_observed(np.where(positive, crps, np.abs(y - mu)), observed, axis)


def _abs_normal_mean(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``E|Z|`` for ``Z ~ N(mean, std^2)`` (the folded normal's mean; ``|mean|`` at ``std = 0``)."""
    safe = np.where(std > 0, std, 1.0)
    z = mean / safe
    folded = mean * (2.0 * ndtr(z) - 1.0) + 2.0 * safe * np.exp(-0.5 * z**2) / np.sqrt(2.0 * np.pi)
    return np.where(std > 0, folded, np.abs(mean))


def crps_normal_mixture(y_true: Any, weights: Any, means: Any, stds: Any, axis: Axis = None) -> float | np.ndarray:
    """CRPS of the mixture ``sum_k w_k N(mean_k, std_k^2)`` in closed form (Grimit et al. 2006).

        CRPS = E|X - y| - E|X - X'| / 2,

    ``X``, ``X'`` independent draws of the mixture; each term is a weighted sum
    of folded-normal means (``X_k - X_l ~ N(mean_k - mean_l, std_k^2 + std_l^2)``).
    One component is :func:`crps_gaussian`.

    Parameters
    ----------
    y_true : array-like, shape S
        Targets; NaN marks missing values.
    weights : array-like, shape (K,)
        Component weights, non-negative and summing to 1.
    means, stds : array-like, shape ``(K, *S)`` (or broadcastable to it)
        Component means and standard deviations (std >= 0).
    axis : None, int or tuple of int
        Axes of ``y_true`` to average over.
    """
    y, observed = _target(y_true)
    w = _as_float_array(weights, "weights")
    if w.ndim != 1 or not len(w) or not np.isfinite(w).all() or (w < 0).any() or not np.isclose(w.sum(), 1.0):
        raise ValueError(f"`weights` must be a 1-d array of non-negative numbers summing to 1; got {w!r}.")
    full = (len(w),) + y.shape
    components = []
    for name, value in (("means", means), ("stds", stds)):
        arr = _as_float_array(value, name)
        try:
            ok = np.broadcast_shapes(arr.shape, full) == full
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"`{name}` must have shape {full} (one row per weight, then y_true's shape); "
                             f"got {arr.shape}.")
        arr = np.broadcast_to(arr, full)
        if not np.isfinite(arr[:, observed]).all():
            raise ValueError(f"`{name}` must be finite wherever `y_true` is observed.")
        components.append(arr)
    mu, sigma = components
    if (sigma[:, observed] < 0).any():
        raise ValueError("`stds` must be >= 0.")
    w = w.reshape((-1,) + (1,) * y.ndim)
    to_y = (w * _abs_normal_mean(y[None] - mu, sigma)).sum(0)
    spread = _abs_normal_mean(mu[:, None] - mu[None], np.sqrt(sigma[:, None] ** 2 + sigma[None] ** 2))
    pairs = (w[:, None] * w[None] * spread).sum((0, 1))
    return _mean_observed(to_y - 0.5 * pairs, observed, axis)


def pinball_loss(
    y_true: Any, quantile_preds: Any, quantiles: Any, axis: Axis = None, average: bool = False
) -> float | np.ndarray:
    """Pinball (quantile) loss per quantile level.

        rho_q(u) = max(q u, (q - 1) u),  u = y - yhat_q

    averaged over observed ``y``. At q = 0.5 it is MAE / 2, and
    ``2 * int_0^1 rho_q dq`` is the CRPS, so the mean over a fine grid of
    levels, times 2, approximates it.

    Parameters
    ----------
    y_true : array-like, shape S
        Targets; NaN marks missing values.
    quantile_preds : array-like, shape ``(*S, Q)``
        Predicted quantiles, quantile levels on the last axis (the column
        layout of ``model.predict`` and of :func:`quantile_from_samples`).
        With a scalar ``quantiles`` it has shape S.
    quantiles : float or sequence of Q floats in [0, 1]
        The quantile levels.
    axis : None, int or tuple of int
        Axes of ``y_true`` to average over; the quantile axis is kept last.
    average : bool
        Also average over the quantile levels.

    Returns
    -------
    float or ndarray
        Shape (Q,) with ``axis=None`` (one loss per level), a float when
        ``average`` is true or ``quantiles`` is a scalar.
    """
    q = _levels(quantiles, "quantiles")
    y, observed = _target(y_true)
    trailing = () if q.ndim == 0 else q.shape
    preds = _forecast(quantile_preds, "quantile_preds", y_true, y.shape, observed, trailing)
    u = (y if q.ndim == 0 else y[..., None]) - preds
    loss = np.maximum(q * u, (q - 1.0) * u)
    per_level = _mean_observed(loss, observed, axis)
    if average and q.ndim == 1:
        mean = np.mean(per_level, axis=-1)
        return float(mean) if np.ndim(mean) == 0 else mean
    return per_level


def interval_coverage(y_true: Any, lower: Any, upper: Any, axis: Axis = None) -> float | np.ndarray:
    """Fraction of observed ``y`` inside the closed interval [lower, upper].

    Compare it with the nominal level of the interval (0.9 for the 5%-95%
    quantiles); it is not a proper score on its own.

    Parameters
    ----------
    y_true : array-like, shape S
        Targets; NaN marks missing values.
    lower, upper : array-like, broadcastable to S
        Interval bounds, ``lower <= upper``.
    axis : None, int or tuple of int
        Axes of ``y_true`` to average over.
    """
    y, observed = _target(y_true)
    lo, hi = _interval(lower, upper, y_true, y.shape, observed)
    inside = (lo <= y) & (y <= hi)
    return _mean_observed(inside.astype(np.float64), observed, axis)


def log_score(log_densities: Any, axis: Axis = None) -> float | np.ndarray:
    """Logarithmic score: the negative mean log predictive density.

        LogS = -mean_t log p(y_t | y_<t)

    Takes the log densities directly (e.g.
    ``model.log_likelihood(y, per_step=True)``); NaN marks a missing step
    and is skipped, ``-inf`` (an impossible observation) gives ``inf``.

    Parameters
    ----------
    log_densities : array-like, any shape
        Log predictive densities of the observed values.
    axis : None, int or tuple of int
        Axes to average over.
    """
    values = _as_float_array(log_densities, "log_densities")
    observed = ~np.isnan(values)
    if (values == np.inf).any():
        raise ValueError("`log_densities` must be < +inf; got +inf (a degenerate density).")
    return _mean_observed(-values, observed, axis)


def gaussian_log_score(y_true: Any, mean: Any, std: Any, axis: Axis = None) -> float | np.ndarray:
    """Logarithmic score of N(mean, std^2): negative mean Gaussian log density.

        -log N(y | mu, s^2) = 1/2 log(2 pi s^2) + (y - mu)^2 / (2 s^2)

    Parameters
    ----------
    y_true : array-like, shape S
        Targets; NaN marks missing values.
    mean, std : array-like, broadcastable to S
        Forecast mean and standard deviation (std > 0).
    axis : None, int or tuple of int
        Axes of ``y_true`` to average over.
    """
    y, observed = _target(y_true)
    mu = _forecast(mean, "mean", y_true, y.shape, observed)
    sigma = _forecast(std, "std", y_true, y.shape, observed)
    _nonnegative(sigma, "std", observed, strict=True)
    safe_sigma = np.where(sigma > 0, sigma, 1.0)
    nll = 0.5 * _LOG_2PI + np.log(safe_sigma) + 0.5 * ((y - mu) / safe_sigma) ** 2
    return _mean_observed(nll, observed, axis)


# ------------------------------------------------- multivariate (joint) scores

# pairwise terms are summed in chunks of samples so that memory stays near this many float64 values
_CHUNK_VALUES = 1 << 22


def _joint(y_true: Any, samples: Any, axis: Axis) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, ...]]:
    """``y (K, d)``, observed ``(K, d)``, samples ``(n, K, d)`` and the kept shape:
    the ``axis`` axes of y_true flattened into the vector ``d``, the others into ``K``."""
    y, observed = _target(y_true)
    x = _samples(samples, y.shape, observed)
    event = _normalize_axis(axis, y.ndim)
    kept = tuple(a for a in range(y.ndim) if a not in event)
    order = kept + event
    kept_shape = tuple(y.shape[a] for a in kept)
    k = int(np.prod(kept_shape, dtype=np.int64))
    d = int(np.prod([y.shape[a] for a in event], dtype=np.int64))
    y = np.transpose(y, order).reshape(k, d)
    observed = np.transpose(observed, order).reshape(k, d)
    x = np.transpose(x, (0,) + tuple(a + 1 for a in order)).reshape(x.shape[0], k, d)
    # missing components drop out of every norm and difference (the score of the observed margin)
    return y, observed, np.where(observed, x, 0.0), kept_shape


def _per_vector(score: np.ndarray, observed: np.ndarray, kept_shape: tuple[int, ...]) -> float | np.ndarray:
    """Scores ``(K,)`` back to the kept axes; NaN for a vector with nothing observed."""
    score = np.where(observed.any(axis=1), score, np.nan).reshape(kept_shape)
    return float(score) if score.ndim == 0 else score


def energy_score(y_true: Any, samples: Any, axis: Axis = None, fair: bool = False) -> float | np.ndarray:
    """Energy score of joint sample paths: the multivariate CRPS (Gneiting & Raftery 2007).

        ES(F, y) = E||X - y|| - 1/2 E||X - X'||,   X, X' ~ F independent,

    with ``||.||`` the Euclidean norm of the vector made of the ``axis``
    axes of ``y_true`` (by default all of them: one path, horizon x
    variables, is one vector). It rewards getting the dependence between
    steps and variables right, which per-step CRPS cannot see. With one
    component it is :func:`crps_sample`; with one sample, the Euclidean
    error. F is the samples' empirical distribution (n^2 pairs);
    ``fair=True`` averages E||X - X'|| over the n(n-1) distinct pairs
    instead, an unbiased estimate of the score of the distribution the
    samples come from. Missing components (NaN in ``y_true``) are left out
    of every norm, which scores the forecast's marginal over the observed
    components.

    Parameters
    ----------
    y_true : array-like, shape S
        Targets; NaN marks missing values.
    samples : array-like, shape ``(n_samples, *S)``
        Joint samples on axis 0 (the layout of ``model.sample``).
    axis : None, int or tuple of int
        Axes of ``y_true`` forming the vector; the other axes are kept,
        e.g. ``axis=(1, 2)`` gives one score per origin of a ``(B, H, D)``
        batch. Unlike the univariate metrics, nothing is averaged over the
        kept axes.
    fair : bool
        Use the unbiased ensemble estimator (needs n_samples >= 2).
    """
    y, observed, x, kept_shape = _joint(y_true, samples, axis)
    n, k, d = x.shape
    if fair and n < 2:
        raise ValueError(f"`samples` must hold at least 2 samples for fair=True; got {n}.")
    to_target = np.sqrt(((x - y) ** 2).sum(-1)).mean(0)
    spread = np.zeros(k)
    chunk = max(1, _CHUNK_VALUES // max(1, n * k * d))
    for i in range(0, n, chunk):
        diff = x[i : i + chunk, None] - x[None]
        spread += np.sqrt((diff**2).sum(-1)).sum(axis=(0, 1))
    pairs = n * (n - 1) if fair else n * n
    return _per_vector(to_target - 0.5 * spread / pairs, observed, kept_shape)


def variogram_score(
    y_true: Any, samples: Any, p: float = 0.5, weights: Any = None, axis: Axis = None
) -> float | np.ndarray:
    """Variogram score of order ``p`` of joint sample paths (Scheuerer & Hamill 2015).

    ::

        VS_p(F, y) = sum_{i,j} w_ij ( |y_i - y_j|^p - E_F |X_i - X_j|^p )^2

    over all ordered pairs of components i, j = 1..d of the vector made of
    the ``axis`` axes of ``y_true`` (the paper's double sum, so each
    unordered pair counts twice; the diagonal is 0). It is proper and,
    unlike the energy score, sensitive to misspecified correlations. Pairs
    with a missing component are left out.

    Parameters
    ----------
    y_true : array-like, shape S
        Targets; NaN marks missing values.
    samples : array-like, shape ``(n_samples, *S)``
        Joint samples on axis 0 (the layout of ``model.sample``).
    p : float > 0
        Order of the variogram; 0.5 is the paper's recommendation.
    weights : None or array-like (d, d)
        Non-negative pair weights ``w_ij`` over the flattened components
        (C order of the ``axis`` axes); None weighs every pair 1.
    axis : None, int or tuple of int
        Axes of ``y_true`` forming the vector; the other axes are kept.
    """
    if isinstance(p, bool) or not isinstance(p, (Integral, float, np.floating)) or not np.isfinite(p) or p <= 0:
        raise ValueError(f"`p` must be a positive finite number (the variogram order); got {p!r}.")
    y, observed, x, kept_shape = _joint(y_true, samples, axis)
    n, k, d = x.shape
    if weights is None:
        w = np.ones((d, d))
    else:
        w = _as_float_array(weights, "weights")
        if w.shape != (d, d):
            raise ValueError(f"`weights` must have shape (d, d) = {(d, d)} for the {d} components; got {w.shape}.")
        if not np.isfinite(w).all() or (w < 0).any():
            raise ValueError("`weights` must be finite and >= 0.")
    expected = np.zeros((k, d, d))
    chunk = max(1, _CHUNK_VALUES // max(1, k * d * d))
    for i in range(0, n, chunk):
        part = x[i : i + chunk]
        expected += (np.abs(part[..., :, None] - part[..., None, :]) ** p).sum(0)
    expected /= n
    observed_pair = observed[:, :, None] & observed[:, None, :]
    terms = w * (np.abs(y[:, :, None] - y[:, None, :]) ** p - expected) ** 2
    return _per_vector(np.where(observed_pair, terms, 0.0).sum(axis=(1, 2)), observed, kept_shape)


# ------------------------------------------------------ sample-based helpers


def quantile_from_samples(samples: Any, quantiles: Any, method: str = "linear") -> np.ndarray:
    """Empirical quantiles of sample paths, quantile levels on the last axis.

    Parameters
    ----------
    samples : array-like, shape ``(n_samples, *S)``
        Samples on axis 0 (the layout of ``model.sample``); must be finite.
    quantiles : float or sequence of Q floats in [0, 1]
        Quantile levels.
    method : str
        Interpolation method of :func:`numpy.quantile`.

    Returns
    -------
    ndarray
        Shape ``(*S, Q)``, ready for :func:`pinball_loss`; shape S for a scalar
        ``quantiles``.
    """
    q = _levels(quantiles, "quantiles")
    x = _as_float_array(samples, "samples")
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"`samples` must have shape (n_samples, ...) with n_samples >= 1; got {x.shape}.")
    if not np.isfinite(x).all():
        raise ValueError("`samples` must be finite; got NaN or inf.")
    out = np.quantile(x, q, axis=0, method=method)
    return out if q.ndim == 0 else np.moveaxis(out, 0, -1)


def sample_interval_coverage(y_true: Any, samples: Any, level: float = 0.9, axis: Axis = None) -> float | np.ndarray:
    """Coverage of the central ``level`` interval of a sample forecast.

    The interval runs between the empirical ``(1 - level)/2`` and
    ``(1 + level)/2`` quantiles of the samples (linear interpolation), and
    the result is :func:`interval_coverage` of it.

    Parameters
    ----------
    y_true : array-like, shape S
        Targets; NaN marks missing values.
    samples : array-like, shape ``(n_samples, *S)``
        Samples on axis 0.
    level : float in (0, 1)
        Nominal coverage of the central interval.
    axis : None, int or tuple of int
        Axes of ``y_true`` to average over.
    """
    lvl = _single_level(level, "level")
    y, observed = _target(y_true)
    x = _samples(samples, y.shape, observed)
    # Quantiles only where y is observed matter; fill the rest so np.quantile never sees NaN.
    x = np.where(observed, x, 0.0)
    lower, upper = np.quantile(x, [(1.0 - lvl) / 2.0, (1.0 + lvl) / 2.0], axis=0)
    return interval_coverage(y_true, lower, upper, axis=axis)

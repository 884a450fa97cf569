"""Rolling-origin windows: where each forecast starts, what it trains on, when to refit.

A backtest of a series of length ``T`` issues forecasts at origins
``t_k = start + k * step`` (``t`` = number of observations before the
forecast) for every ``k`` with ``t_k + horizon <= T``, so every window is
scored on ``horizon`` real observations. The training window of origin
``t`` is ``y[0:t]`` (expanding) or ``y[t - window_length:t]`` (sliding).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tsgen._validation import is_int
from tsgen.training.randomness import check_random_state

WINDOWS = ("expanding", "sliding")


@dataclass(frozen=True)
class Origin:
    """One forecast origin: train on ``[train_start, stop)``, score ``[stop, stop + horizon)``."""

    position: int  # index of the origin among the series' origins
    train_start: int
    stop: int
    seed: int  # sampling seed of this forecast


@dataclass(frozen=True)
class FitGroup:
    """Origins that share one fitted model: fitted at ``origins[0]``, conditioned on later histories."""

    series: int
    fit_seed: int
    origins: tuple[Origin, ...]


def _last_position(location) -> int:
    """The last position of ``index.get_loc``'s answer.

    A DatetimeIndex answers a coarser string ("1995-12" on month-end or
    daily dates) with the slice or mask of the timestamps inside that period,
    as a PeriodIndex answers with one position: the cutoff is the last of them.
    """
    if isinstance(location, slice):
        positions = np.arange(location.start or 0, location.stop, location.step or 1)
    elif isinstance(location, np.ndarray):
        positions = np.flatnonzero(location) if location.dtype == bool else location
    else:
        return int(location)
    if len(positions) == 0:
        raise KeyError("no timestamp of the series falls in `start`")
    return int(positions[-1])


def resolve_start(start, length: int, horizon: int, index) -> int:
    """Training length at the first origin: an int (negative counts from the end), a timestamp, or None (half).

    A timestamp is the first cutoff (the last training step); a string naming
    a period ("1995-12") means its last step in the series, on a DatetimeIndex
    as on a PeriodIndex.
    """
    if start is None:
        first = length // 2
    elif is_int(start):
        first = int(start) if start >= 0 else length + int(start)
    else:
        try:
            first = _last_position(index.get_loc(start)) + 1
        except (KeyError, TypeError, ValueError):
            raise ValueError(
                f"`start` must be a number of training steps or a timestamp of the series; got {start!r}."
            ) from None
    if not 1 <= first <= length - horizon:
        raise ValueError(
            f"`start` leaves no complete window: the series has {length} steps, the first origin is after "
            f"{first} and `horizon` is {horizon}; expected 1 <= start <= {length - horizon}."
        )
    return first


def check_refit(refit) -> int:
    """Refit period in origins: 1 = every origin, 0 = never (condition the first fit on each history)."""
    if refit is True:
        return 1
    if refit is False:
        return 0
    if is_int(refit) and refit >= 1:
        return int(refit)
    raise ValueError(f"`refit` must be True, False or a positive int (refit every k-th origin); got {refit!r}.")


def origin_stops(length: int, horizon: int, start: int, step: int) -> np.ndarray:
    if not is_int(step) or step < 1:
        raise ValueError(f"`step` must be a positive int; got {step!r}.")
    return np.arange(start, length - horizon + 1, step)


def train_starts(stops: np.ndarray, window: str, window_length) -> np.ndarray:
    if window not in WINDOWS:
        raise ValueError(f"`window` must be one of {WINDOWS}; got {window!r}.")
    if window == "expanding":
        if window_length is not None:
            raise ValueError("`window_length` is only used with window='sliding'.")
        return np.zeros_like(stops)
    length = int(stops[0]) if window_length is None else window_length
    if not is_int(length) or length < 1:
        raise ValueError(f"`window_length` must be a positive int; got {window_length!r}.")
    if length > stops[0]:
        raise ValueError(
            f"`window_length` ({length}) is longer than the history at the first origin ({int(stops[0])}); "
            "lower it or move `start` later."
        )
    return stops - int(length)


def series_seeds(random_state, n_series: int, n_origins: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per-series (fit seeds, sample seeds), one per origin, derived from ``random_state`` alone.

    Seeds depend on (series, origin) only, never on how origins are split
    into tasks, so any ``n_jobs`` or backend reproduces the serial run.
    """
    root = np.random.SeedSequence(check_random_state(random_state))
    out = []
    for i in range(n_series):
        fit = np.random.SeedSequence(root.entropy, spawn_key=(i, 0)).generate_state(n_origins[i])
        draw = np.random.SeedSequence(root.entropy, spawn_key=(i, 1)).generate_state(n_origins[i])
        # torch.manual_seed and most estimators take non-negative ints below 2**31
        out.append(((fit >> 1).astype(np.int64), (draw >> 1).astype(np.int64)))
    return out


def fit_groups(series: int, stops, starts, fit_seeds, draw_seeds, refit_every: int) -> list[FitGroup]:
    """Split one series' origins into groups that share a fit (a single group when never refitting)."""
    origins = [
        Origin(k, int(starts[k]), int(stops[k]), int(draw_seeds[k])) for k in range(len(stops))
    ]
    period = len(origins) if refit_every == 0 else refit_every
    return [
        FitGroup(series, int(fit_seeds[k]), tuple(origins[k : k + period]))
        for k in range(0, len(origins), period)
    ]

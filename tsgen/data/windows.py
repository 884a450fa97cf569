"""Training windows cut from long series, and forecasting contexts taken from their ends.

All functions work on padded tensors ``(B, T, ...)`` with per-series
``lengths`` (the :class:`tsgen.data.SeriesBatch` layout) and return the same
layout: windows shorter than asked for (series shorter than the window)
are padded at the end, with ``mask`` False and NaN values there.
"""
from __future__ import annotations

import torch


def take_steps(tensor: torch.Tensor, starts: torch.Tensor, length: int) -> torch.Tensor:
    """Rows ``starts[i] .. starts[i] + length - 1`` of each series: ``(B, T, ...)`` -> ``(B, length, ...)``.

    Positions past the end of ``tensor`` repeat its last row; callers mask them.
    """
    positions = (starts[:, None] + torch.arange(length, device=starts.device)).clamp(max=tensor.shape[1] - 1)
    rows = torch.arange(tensor.shape[0], device=starts.device)[:, None]
    return tensor[rows, positions.to(tensor.device)]


def _inside(starts: torch.Tensor, lengths: torch.Tensor, length: int) -> torch.Tensor:
    """``(B, length)``: whether each taken position lies before the series' end."""
    return starts[:, None] + torch.arange(length) < lengths[:, None]


def window_starts(lengths: torch.Tensor, window_length: int, stride: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Series index and start of every window, ``(W,)`` each.

    Windows are aligned to each series' end (the most recent data is always
    in a window) and step back by ``stride``; a series shorter than
    ``window_length`` gives one (padded) window.
    """
    if window_length < 1 or stride < 1:
        raise ValueError(f"`window_length` and `stride` must be positive; got {window_length} and {stride}.")
    series, starts = [], []
    for i, n in enumerate(lengths.tolist()):
        last = max(n - window_length, 0)
        s = torch.arange(last, -1, -stride).flip(0)
        series.append(torch.full_like(s, i))
        starts.append(s)
    return torch.cat(series), torch.cat(starts)


def tail_starts(lengths: torch.Tensor, window_length: int, tail: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Series index and start of the windows that cover each series' last ``tail[i]`` steps, ``(W,)`` each.

    Windows are aligned to the series' end and do not overlap (a stride of
    ``window_length``); the earliest one starts at 0 when the tail reaches back that far.
    """
    series, starts = [], []
    for i, (n, k) in enumerate(zip(lengths.tolist(), tail.tolist())):
        count = max(1, -(-k // window_length))
        s = torch.tensor(sorted({max(n - window_length * j, 0) for j in range(1, count + 1)}))
        series.append(torch.full_like(s, i))
        starts.append(s)
    return torch.cat(series), torch.cat(starts)


def cut_windows(
    values: torch.Tensor,
    mask: torch.Tensor,
    lengths: torch.Tensor,
    window_length: int,
    stride: int = 1,
    covariates: torch.Tensor | None = None,
    positions: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """All windows of ``window_length`` steps: ``values``/``mask`` ``(W, L, D)``, ``lengths`` ``(W,)``,
    ``covariates`` ``(W, L, K)`` (rows aligned with the values) or None.

    ``positions``: the windows' series indices and starts (default: every
    ``stride``-th window, :func:`window_starts`)."""
    series, starts = window_starts(lengths, window_length, stride) if positions is None else positions
    length = min(window_length, int(lengths.max()))
    inside = _inside(starts, lengths[series], length)[..., None]
    window_mask = take_steps(mask[series], starts, length) & inside
    window_values = take_steps(values[series], starts, length)
    window_values = torch.where(window_mask, window_values, torch.full((), float("nan"), dtype=values.dtype))
    window_lengths = (lengths[series] - starts).clamp(max=length)
    window_covariates = None if covariates is None else take_steps(covariates[series], starts, length)
    return window_values, window_mask, window_lengths, window_covariates


def context_starts(lengths: torch.Tensor, context_length: int | None) -> torch.Tensor:
    """Start of the last ``context_length`` steps of each series (0 for the whole series)."""
    if context_length is None:
        return torch.zeros_like(lengths)
    return (lengths - context_length).clamp(min=0)


def last_steps(
    values: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor, context_length: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The context a forecast conditions on: the last ``context_length`` steps of each series
    (all of them when None), padded at the end.

    Returns ``values``, ``mask`` ``(B, L, D)``, ``lengths`` ``(B,)`` and ``starts`` ``(B,)``.
    """
    starts = context_starts(lengths, context_length)
    context_lengths = lengths - starts
    length = int(context_lengths.max())
    inside = _inside(starts, lengths, length)[..., None]
    context_mask = take_steps(mask, starts, length) & inside
    context_values = torch.where(
        context_mask, take_steps(values, starts, length), torch.full((), float("nan"), dtype=values.dtype)
    )
    return context_values, context_mask, context_lengths, starts

"""Minibatches of sequences as the training loop sees them."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch


@dataclass
class SequenceBatch:
    """Sequences ``(B, T, D)`` padded at the end, with their masks.

    Attributes
    ----------
    values : Tensor (B, T, D)
        Float values; NaN or garbage wherever ``mask`` is False.
    mask : Tensor (B, T, D)
        True where a value was observed.
    covariates : Tensor (B, T, K) or None
        Inputs known at every step (never missing).
    lengths : Tensor (B,) or None
        Steps of each sequence before its padding. When given, minibatches
        are trimmed to their longest member; when None every step counts as
        part of the sequence (padding is then only told apart by ``mask``).
    index : Tensor (B,) or None
        Each row's position in the data :func:`tsgen.training.train` was
        given (it numbers the rows when None), carried through ``select``: a
        window's identity across reshuffled epochs, for a loss that keeps
        per-sequence state between visits (the LSTM-SSM's persistent PGAS chains).
    """

    values: torch.Tensor
    mask: torch.Tensor
    covariates: torch.Tensor | None = None
    lengths: torch.Tensor | None = None
    index: torch.Tensor | None = None

    def __post_init__(self):
        if self.values.ndim != 3:
            raise ValueError(f"`values` must have shape (B, T, D); got shape {tuple(self.values.shape)}.")
        if self.mask.shape != self.values.shape or self.mask.dtype != torch.bool:
            raise ValueError(
                f"`mask` must be a bool tensor of shape {tuple(self.values.shape)}; "
                f"got {self.mask.dtype} of shape {tuple(self.mask.shape)}."
            )
        if self.covariates is not None and self.covariates.shape[:2] != self.values.shape[:2]:
            raise ValueError(
                f"`covariates` must have shape {tuple(self.values.shape[:2])} + (K,); "
                f"got {tuple(self.covariates.shape)}."
            )
        if self.lengths is not None and self.lengths.shape != self.values.shape[:1]:
            raise ValueError(f"`lengths` must have shape ({self.values.shape[0]},); got {tuple(self.lengths.shape)}.")
        if self.index is not None and self.index.shape != self.values.shape[:1]:
            raise ValueError(f"`index` must have shape ({self.values.shape[0]},); got {tuple(self.index.shape)}.")

    def __len__(self) -> int:
        return self.values.shape[0]

    @property
    def n_observed(self) -> int:
        return int(self.mask.sum())

    def _map(self, fn) -> "SequenceBatch":
        return replace(self, **{f.name: None if getattr(self, f.name) is None else fn(f.name, getattr(self, f.name))
                                for f in fields(self)})

    def select(self, rows: torch.Tensor) -> "SequenceBatch":
        """Rows ``rows`` (an index tensor), trimmed to the longest selected sequence."""
        picked = self._map(lambda name, t: t[rows.to(t.device)])
        return picked.trimmed()

    def trimmed(self) -> "SequenceBatch":
        """Drop trailing steps that are padding for every sequence (needs ``lengths``)."""
        if self.lengths is None or len(self) == 0:
            return self
        steps = int(self.lengths.max())
        if steps >= self.values.shape[1]:
            return self
        return self._map(lambda name, t: t if name in ("lengths", "index") else t[:, :steps])

    def to(self, device=None, dtype: torch.dtype | None = None) -> "SequenceBatch":
        """Move to ``device``; cast ``values``/``covariates`` to ``dtype`` when given."""
        def move(name, t):
            if dtype is not None and name in ("values", "covariates"):
                return t.to(device=device, dtype=dtype)
            return t.to(device=device)
        return self._map(move)

    def mean_abs_scale(self, minimum: float = 1e-8) -> torch.Tensor:
        """DeepAR's per-sequence scale ``s_bd = mean_t |x_btd|`` over observed steps: ``(B, D)``.

        Sequences (or variables) with nothing observed, or all zeros, get ``s = 1``.
        """
        return mean_abs_scale(self.values, self.mask, minimum)


def mean_abs_scale(values: torch.Tensor, mask: torch.Tensor, minimum: float = 1e-8) -> torch.Tensor:
    """``s = mean |x|`` over the observed steps (dim -2), 1 where that is below ``minimum``."""
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    total = torch.where(mask, values.abs(), zero).sum(-2)
    count = mask.sum(-2)
    scale = total / count.clamp(min=1)
    return torch.where(scale > minimum, scale, torch.ones_like(scale))

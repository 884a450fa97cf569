"""What the speed benchmarks against Pyro share: JSB Chorales as a list of piano rolls, padded minibatches.

Imported by ``dmm_speed.py`` and ``latent_speed.py`` (run as scripts from the
repository root, so this directory is on ``sys.path``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
#: the copy of JSB Chorales shipped in the repository
JSB = ROOT / "datasets" / "jsb_chorales.npz"


def load_split(path: Path, split: str) -> list[np.ndarray]:
    """The ``(T_i, 88)`` float32 piano rolls of one split (``"train"``, ``"valid"``, ``"test"``)."""
    data = np.load(path)
    rolls, lengths = data[f"{split}_rolls"], data[f"{split}_lengths"]
    return [s.astype(np.float32) for s in np.split(rolls, np.cumsum(lengths)[:-1])]


def pad(seqs: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences padded with zeros at the end to the longest, ``(B, T, D)``, and their lengths ``(B,)``."""
    lengths = torch.tensor([len(s) for s in seqs])
    out = torch.zeros(len(seqs), int(lengths.max()), seqs[0].shape[1])
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.from_numpy(s)
    return out, lengths


def padded_batches(seqs: list[np.ndarray], batch_size: int, rng: np.random.Generator | None):
    """Minibatches ``(values, lengths, mask)`` in the order ``rng`` shuffles (None: as given); each padded
    to its own longest sequence, as tsgen's training loop trims its minibatches; ``mask`` ``(B, T)``."""
    order = rng.permutation(len(seqs)) if rng is not None else np.arange(len(seqs))
    for start in range(0, len(seqs), batch_size):
        values, lengths = pad([seqs[i] for i in order[start : start + batch_size]])
        yield values, lengths, torch.arange(values.shape[1])[None, :] < lengths[:, None]

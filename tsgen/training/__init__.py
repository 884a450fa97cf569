"""The one training loop shared by every deep model, and what it consumes.

Names are imported on first use: every estimator takes its random-state
helpers from ``tsgen.training.randomness``, and ARIMA need not import the
training loop for them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from tsgen._lazy import attach

__all__ = [
    "SequenceBatch",
    "TrainingConfig",
    "evaluate",
    "mean_abs_scale",
    "resolve_device",
    "seeded_from",
    "split_validation",
    "train",
]

__getattr__, __dir__ = attach(
    __name__,
    {
        "SequenceBatch": "tsgen.training.batch",
        "TrainingConfig": "tsgen.training.config",
        "evaluate": "tsgen.training.loop",
        "mean_abs_scale": "tsgen.training.batch",
        "resolve_device": "tsgen.training.device",
        "seeded_from": "tsgen.training.randomness",
        "split_validation": "tsgen.training.loop",
        "train": "tsgen.training.loop",
    },
    submodules=["batch", "config", "device", "loop", "randomness"],
)

if TYPE_CHECKING:
    from tsgen.training.batch import SequenceBatch, mean_abs_scale
    from tsgen.training.config import TrainingConfig
    from tsgen.training.device import resolve_device
    from tsgen.training.loop import evaluate, split_validation, train
    from tsgen.training.randomness import seeded_from

"""The one training loop shared by every deep model, and what it consumes."""
from tsgen.training.batch import SequenceBatch, mean_abs_scale
from tsgen.training.config import TrainingConfig
from tsgen.training.device import resolve_device
from tsgen.training.loop import evaluate, split_validation, train
from tsgen.training.randomness import seeded_from

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

"""Training potentials: ``train(config, run_dir)`` and its building blocks."""

from mlip.errors import BatchTooLargeError, TrainingDivergedError
from mlip.train.api import train
from mlip.train.config import DEFAULTS, TrainingConfig, shipped_config
from mlip.train.evaluate import evaluate

__all__ = [
    "train",
    "DEFAULTS",
    "TrainingConfig",
    "shipped_config",
    "evaluate",
    "TrainingDivergedError",
    "BatchTooLargeError",
]

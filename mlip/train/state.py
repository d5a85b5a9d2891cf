"""Training checkpoints (``last.ckpt``): everything needed to resume a run bit for bit.

The file holds the model payload (registry name, hparams, weights), the optimiser, schedule
and EMA states, the position in the data (epoch, next batch), the running metric sums, the
RNG states (torch, CUDA, numpy, Python), the data statistics and the resolved config. It is
written atomically (temporary file + rename), so a crash never leaves a half-written file.
"""

from __future__ import annotations

import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mlip import __version__
from mlip.errors import CheckpointMismatchError
from mlip.files import atomic_torch_save, load_payload

__all__ = [
    "Progress",
    "rng_state",
    "set_rng_state",
    "save_training_state",
    "load_training_state",
    "CHECKPOINT_NAME",
]

CHECKPOINT_NAME = "last.ckpt"
_FORMAT = "mlip-training-state"


@dataclass
class Progress:
    """Where a run is.

    Attributes:
        epoch: current epoch (0-based). batch: next batch of that epoch to run.
        step: optimiser steps taken. elapsed_s: training wall time so far, s.
        best_valid_loss: best validation loss seen. best_step: step at which it was seen.
        train_sums: running metric sums of the current epoch (see MetricAccumulator.state).
        stage_two_step: the step at which stage two began (None: still in stage one).
    """

    epoch: int = 0
    batch: int = 0
    step: int = 0
    elapsed_s: float = 0.0
    best_valid_loss: float = float("inf")
    best_step: int = -1
    train_sums: list = field(default_factory=list)
    stage_two_step: int | None = None


def rng_state() -> dict[str, Any]:
    """The torch, CUDA, numpy and Python RNG states (plain types and tensors)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
        "python": _to_lists(random.getstate()),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _to_lists(value: Any) -> Any:
    return [_to_lists(v) for v in value] if isinstance(value, (tuple, list)) else value


def save_training_state(path: str | os.PathLike, **parts: Any) -> None:
    """Write the resumable state atomically; ``parts`` are the named components."""
    payload = {"format": _FORMAT, "mlip_version": __version__, "rng": rng_state(), **parts}
    if isinstance(payload.get("progress"), Progress):
        payload["progress"] = asdict(payload["progress"])
    atomic_torch_save(payload, path)


def load_training_state(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Read ``RUN_DIR/last.ckpt``.

    Raises:
        CheckpointMismatchError: no checkpoint, an unreadable file, or not a training state.
    """
    path = Path(run_dir) / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointMismatchError(
            f"cannot resume: {path} does not exist (no checkpoint was written "
            "in this run directory)"
        )
    payload = load_payload(path, _FORMAT, "training checkpoint")
    payload["progress"] = Progress(**payload["progress"])
    return payload

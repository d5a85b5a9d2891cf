"""Stage 3, train: Facet students on the selected teacher frames, with the shipped trainer.

The training set of a round is written as two snapshot stores (``train.h5``, ``valid.h5``: every
:data:`VALID_EVERY`-th frame of each addition validates, so the validation set grows with the
training set); each member of the committee is an ordinary ``mlip train`` run (its own folder,
seed ``--seed + member``, E0 = the teacher's lone-atom energies) with the model section of the
shipped ``facet`` config (the small ``facet-s`` preset) at ``--cutoff``, a cosine schedule over
``--epochs`` and the loss E/F/S = 1/100/1. Later rounds fine-tune the previous round's
students (``finetune.from``) or train new ones (``--retrain scratch``). ``--set KEY=VALUE``
overrides any key of that config (``model.*`` keys only where a student is built, not where it
is fine-tuned).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import yaml

from mlip.data.frames import FrameBatch
from mlip.data.writer import StoreWriter
from mlip.distill.config import DistillConfig
from mlip.train import shipped_config, train

__all__ = ["write_training_set", "training_config", "train_committee", "VALID_EVERY"]

log = logging.getLogger("mlip.distill")

#: Every this many frames of an addition to the training set, one goes to validation.
VALID_EVERY = 10


def write_training_set(out_dir: Path, batches: Sequence[FrameBatch]) -> tuple[Path, Path, int]:
    """Write ``batches`` (each an addition, in order) into ``out_dir/train.h5`` and
    ``valid.h5``; returns both paths and the number of training frames."""
    train_writer = StoreWriter(out_dir / "train.h5", metadata={"provenance": "mlip distill"})
    valid_writer = StoreWriter(out_dir / "valid.h5", metadata={"provenance": "mlip distill"})
    n_train = 0
    try:
        for batch in batches:
            ids = np.arange(len(batch))
            is_valid = (ids % VALID_EVERY) == VALID_EVERY // 2
            if len(batch) >= 2 and not is_valid.any():
                is_valid[-1] = True
            if is_valid.any():
                valid_writer.append(batch.select(ids[is_valid]))
            train_writer.append(batch.select(ids[~is_valid]))
            n_train += int((~is_valid).sum())
        train_writer.commit()
        valid_writer.commit()
    finally:
        train_writer.close()
        valid_writer.close()
    return out_dir / "train.h5", out_dir / "valid.h5", n_train


def training_config(config: DistillConfig, train_store: Path, valid_store: Path, n_train: int,
                    seed: int, start_from: Path | None, e0: dict[str, float]) -> dict:
    """The training config of one committee member (before ``--set`` overrides); a fine-tuned
    one takes its architecture from ``start_from``."""
    model = yaml.safe_load(shipped_config("facet").read_text())["model"]
    if start_from is not None:
        model = {"name": model["name"]}
    return {
        "seed": seed,
        "device": config.device,
        "dtype": "float32",
        "data": {"train": str(train_store), "valid": str(valid_store), "valid_fraction": 0.0,
                 "cutoff": config.cutoff, "batch_size": config.batch_size, "e0": dict(e0)},
        "model": model,
        "loss": {"energy_weight": 1.0, "forces_weight": 100.0, "stress_weight": 1.0},
        "optimizer": {"name": "adam", "lr": 0.01, "amsgrad": True},
        "schedule": {"name": "cosine", "min_lr_ratio": 0.01,
                     "fit_to_time": config.train_time is not None},
        "ema": {"decay": 0.99},
        "train": {"max_epochs": config.epochs_for(n_train), "max_time_s": config.train_time,
                  "checkpoint_every_steps": 200},
        "finetune": {"from": None if start_from is None else str(start_from)},
    }


def train_committee(config: DistillConfig, out_dir: Path, train_store: Path, valid_store: Path,
                    n_train: int, e0: dict[str, float],
                    start_from: Sequence[Path] | None = None) -> list[Path]:
    """Train ``--committee`` students into ``out_dir/student{k}`` with reference energies
    ``e0`` (eV by symbol: the teacher's lone atoms); their ``best.pt`` paths."""
    best = []
    for k in range(config.committee):
        origin = start_from[k] if start_from else None
        cfg = training_config(config, train_store, valid_store, n_train, config.seed + k, origin,
                              e0)
        log.info("train: student %d/%d on %d frames, %d epochs%s", k + 1, config.committee,
                 n_train, cfg["train"]["max_epochs"],
                 f", fine-tuned from {origin}" if origin else "")
        overrides = [o for o in config.set if not (origin and o.startswith("model."))]
        best.append(train(cfg, out_dir / f"student{k}", overrides=overrides))
    return best

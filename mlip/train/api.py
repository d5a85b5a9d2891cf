"""The front door: :func:`train` runs (or resumes) a training run and returns the best potential."""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.distributed as dist
import yaml

from mlip.data.stats import ModelStatistics
from mlip.determinism import deterministic_mode
from mlip.errors import ConfigError
from mlip.models import load_model
from mlip.train.config import TrainingConfig, apply_overrides, load_config
from mlip.train.distributed import DistributedContext, init_distributed
from mlip.train.evaluate import evaluate
from mlip.train.loop import Trainer, model_from_payload
from mlip.train.metrics import format_table
from mlip.train.setup import Splits, check_labels, prepare_data, prepare_model
from mlip.train.state import CHECKPOINT_NAME, load_training_state

__all__ = ["train"]

log = logging.getLogger("mlip.train")

CONFIG_NAME = "config.yaml"


def train(
    config: str | os.PathLike | Mapping[str, Any] | None,
    run_dir: str | os.PathLike,
    overrides: list[str] | Mapping[str, Any] | None = None,
    resume: bool = False,
) -> Path:
    """Train a potential; return the path of the best one (``RUN_DIR/best.pt``).

    Args:
        config: a YAML path or a dict (ignored when resuming: the run's own config is used).
        run_dir: output directory (config.yaml, last.ckpt, best.pt, final.pt, metrics.*, steps.csv).
        overrides: ``["section.key=value", ...]`` or ``{"section.key": value}`` applied on top.
        resume: continue the run in ``run_dir`` from its ``last.ckpt``.

    Raises:
        ConfigError: bad configuration, a fresh run in a directory that already has a checkpoint,
            or a resume of a run that already reached its epoch, step or time limit (naming it).
    """
    run_dir = Path(run_dir)
    state = None
    if resume:
        state = load_training_state(run_dir)
        raw = state["config"]
    else:
        if (run_dir / CHECKPOINT_NAME).is_file():
            raise ConfigError(
                f"{run_dir} already holds a training run ({CHECKPOINT_NAME}); resume it with "
                f"`mlip train --resume {run_dir}` or choose another directory"
            )
        raw = load_config(config)
    resolved = TrainingConfig.load(apply_overrides(raw, overrides))
    ctx = init_distributed(resolved.device)
    try:
        with deterministic_mode(resolved.deterministic):
            return _run(resolved, run_dir, state, ctx)
    finally:
        if ctx.enabled and dist.is_initialized():
            dist.destroy_process_group()


def _seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _run(
    config: TrainingConfig, run_dir: Path, state: dict | None, ctx: DistributedContext
) -> Path:
    _seed(int(config.seed))
    splits = prepare_data(config.data, int(config.seed))
    check_labels(splits, config.loss)
    if state is None:
        model, stats = prepare_model(config, splits)
    else:
        model, stats = model_from_payload(state["model"]), ModelStatistics.from_dict(state["stats"])
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / CONFIG_NAME).write_text(yaml.safe_dump(config.as_dict(), sort_keys=False))
        log.info(
            "training %s (%d parameters) on %d frames, validating on %d; E0 by %s, scale %.4g eV, "
            "shift %.4g eV/atom, %.2f neighbours/atom",
            model.registry_name,
            sum(p.numel() for p in model.parameters()),
            len(splits.train),
            len(splits.valid),
            stats.e0_method,
            stats.scale,
            stats.shift,
            stats.avg_num_neighbors,
        )
    trainer = Trainer(config, run_dir, splits, model, stats, ctx)
    if state is not None:
        trainer.load_state(state)
        spent = trainer.spent_limits()
        if spent:
            raise ConfigError(
                f"nothing to resume in {run_dir}: the run already reached "
                f"{' and '.join(spent)}; raise the limit to train on"
            )
    best = trainer.fit()
    if ctx.is_main:
        _final_report(best, splits, config, ctx)
    return best


def _final_report(
    best: Path, splits: Splits, config: TrainingConfig, ctx: DistributedContext
) -> None:
    """Print the MACE-style table of the best model on the validation and test splits (rank 0 only).

    Training-split metrics (running, per epoch) are in ``metrics.jsonl``; re-evaluating the whole
    training set here would cost as much as an epoch.
    """
    if not best.is_file():
        return
    model = load_model(best, device=ctx.device)
    loss_config = config.loss
    rows = {}
    for name, frames in (("valid", splits.valid), ("test", splits.test)):
        if len(frames):
            stress = frames.has_label("stress")
            rows[name] = evaluate(model, frames, loss_config, compute_stress=stress).summary()
    log.info("best model %s:\n%s", best, format_table(rows))

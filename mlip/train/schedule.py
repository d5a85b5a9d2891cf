"""Optimiser and learning-rate schedules (warm-up, cosine decay, reduce-on-plateau)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from mlip.train.config import OptimizerConfig, ScheduleConfig

__all__ = ["build_optimizer", "LRSchedule"]


def build_optimizer(model: nn.Module, config: OptimizerConfig) -> torch.optim.Optimizer:
    """Adam or AdamW (``optimizer`` config section) with weight decay on weights only.

    Biases, normalisation parameters and other 0-/1-D parameters get no weight decay.
    """
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": float(config.weight_decay)},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    cls = torch.optim.AdamW if config.name == "adamw" else torch.optim.Adam
    return cls(
        groups,
        lr=float(config.lr),
        betas=tuple(config.betas),
        amsgrad=bool(config.amsgrad),
    )


class LRSchedule:
    """Learning rate as a function of the step, plus an optional plateau factor.

    lr(t) = lr₀ · w(t) · c(t) · p, with w(t) = min(1, (t + 1)/warmup_steps) a linear warm-up,
    c(t) = r + (1 − r)(1 + cos(π t / T))/2 the cosine decay to ratio r over T = ``total_steps``
    (``name: cosine``; 1 otherwise), and p the product of plateau factors (``name: plateau``:
    multiplied by ``plateau_factor`` after ``plateau_patience`` evaluations without a new best).

    From :meth:`start_stage_two` on (step s₂, planned end e₂) the rate is lr₂, constant or
    lr₂ · c₂(t) with c₂ the same cosine over [s₂, e₂]; warm-up and plateau no longer apply.

    Args:
        optimizer: its parameter groups' lr are set by :meth:`step`.
        config: the ``schedule`` section.
        base_lr: lr₀.
        total_steps: T, the planned number of optimiser steps.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        config: ScheduleConfig,
        base_lr: float,
        total_steps: int,
    ) -> None:
        self.optimizer = optimizer
        self.name = config.name
        self.warmup = int(config.warmup_steps)
        self.min_ratio = float(config.min_lr_ratio)
        self.factor = float(config.plateau_factor)
        self.patience = int(config.plateau_patience)
        self.base_lr = float(base_lr)
        self.total_steps = max(1, int(total_steps))
        self.planned_steps = self.total_steps  # the max_epochs/max_steps plan: fits never exceed it
        self.fitted = False  # fit_to_time: whether total_steps was sized to the time budget
        self.plateau = 1.0
        self.best = math.inf
        self.bad_evals = 0
        self.stage_two: dict[str, Any] | None = None  # {start, end, lr, name} once started
        self.set_step(0)

    def lr_at(self, step: int) -> float:
        """The learning rate used for optimiser step ``step`` (0-based)."""
        two = self.stage_two
        if two is not None and step >= two["start"]:
            if two["name"] != "cosine":
                return two["lr"]
            return two["lr"] * self._cosine(step - two["start"], two["end"] - two["start"])
        lr = self.base_lr * self.plateau
        if self.warmup > 0:
            lr *= min(1.0, (step + 1) / self.warmup)
        if self.name == "cosine":
            lr *= self._cosine(step, self.total_steps)
        return lr

    def _cosine(self, step: int, length: int) -> float:
        """r + (1 − r)(1 + cos(π min(1, step/length)))/2."""
        progress = min(1.0, step / max(1, length))
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def start_stage_two(self, step: int, end_step: int, lr: float, name: str) -> None:
        """From optimiser step ``step`` on, use ``lr`` (``name``: constant, or cosine down to
        ``lr · min_lr_ratio`` at ``end_step``, the planned last step)."""
        self.stage_two = {"start": int(step), "end": max(int(step) + 1, int(end_step)),
                          "lr": float(lr), "name": name}

    def set_step(self, step: int) -> float:
        """Set the optimiser's lr for step ``step``; return it."""
        lr = self.lr_at(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def observe(self, metric: float) -> None:
        """Record a validation loss (only ``plateau`` reacts, and only in stage one)."""
        if self.name != "plateau" or self.stage_two is not None or not math.isfinite(metric):
            return
        if metric < self.best:
            self.best, self.bad_evals = metric, 0
            return
        self.bad_evals += 1
        if self.bad_evals > self.patience:
            self.plateau *= self.factor
            self.bad_evals = 0

    def fit_to_time(self, step: int, elapsed_s: float, budget_s: float) -> None:
        """Size the cosine to the steps that fit in ``budget_s`` at the mean rate so far
        (``step`` steps in ``elapsed_s`` seconds, validation included), never beyond the
        max_epochs/max_steps plan. Called again as the run goes (every epoch), so the decay
        follows the budget when the machine's speed changes: right after a fit, step/total_steps
        equals elapsed_s/budget_s."""
        if step > 0 and elapsed_s > 0:
            fitting = int(step * budget_s / elapsed_s)
            self.total_steps = max(step + 1, min(self.planned_steps, fitting))
        self.fitted = True

    def state_dict(self) -> dict:
        """Checkpointable state."""
        return {"plateau": self.plateau, "best": self.best, "bad_evals": self.bad_evals,
                "total_steps": self.total_steps, "fitted": self.fitted,
                "stage_two": dict(self.stage_two) if self.stage_two else None}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        self.plateau = float(state["plateau"])
        self.best = float(state["best"])
        self.bad_evals = int(state["bad_evals"])
        self.total_steps = int(state.get("total_steps", self.total_steps))
        self.fitted = bool(state.get("fitted", False))
        two = state.get("stage_two")
        self.stage_two = dict(two) if two else None

"""The training loop: steps, evaluation, checkpoints, best-model export and the NaN/OOM guards."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from mlip.data.stats import ModelStatistics
from mlip.errors import BatchTooLargeError, TrainingDivergedError
from mlip.graph import AtomicGraph
from mlip.models import Potential, build, save_model
from mlip.models.checkpoint import model_payload
from mlip.nn.precision import flush_tiny_
from mlip.targets import LabelledBatch
from mlip.train.config import TrainingConfig
from mlip.train.distributed import DistributedContext
from mlip.train.ema import ExponentialMovingAverage
from mlip.train.evaluate import evaluate
from mlip.train.loss import LossConfig, combine_terms, loss_terms
from mlip.train.metrics import MetricAccumulator
from mlip.train.records import MetricsLog
from mlip.train.schedule import LRSchedule, build_optimizer
from mlip.train.setup import Splits
from mlip.train.state import CHECKPOINT_NAME, Progress, save_training_state, set_rng_state

__all__ = ["Trainer", "BEST_NAME", "BEST_STAGE_ONE_NAME", "FINAL_NAME", "STEPS_NAME"]

log = logging.getLogger("mlip.train")

#: schedule.fit_to_time measures the step rate at the end of the first epoch or after this
#: many optimiser steps, whichever comes first.
_FIT_PROBE_STEPS = 200

BEST_NAME = "best.pt"
#: best.pt of stage one, kept when stage two starts (best.pt then restarts from the stage-two loss).
BEST_STAGE_ONE_NAME = "best_stage_one.pt"
FINAL_NAME = "final.pt"
STEPS_NAME = "steps.csv"

#: torch.OutOfMemoryError (torch >= 2.5) or its CUDA-only predecessor.
_OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


class Trainer:
    """Trains ``model`` on ``splits`` as the resolved ``config`` says; only rank 0 writes files.

    Args:
        config: resolved configuration (see :mod:`mlip.train.config`).
        run_dir: output directory.
        splits: training/validation/test frames.
        model: the (unwrapped) potential, on CPU.
        stats: the training-split statistics stored with exported models.
        ctx: the distributed context.
    """

    def __init__(
        self,
        config: TrainingConfig,
        run_dir: Path,
        splits: Splits,
        model: Potential,
        stats: ModelStatistics,
        ctx: DistributedContext,
    ) -> None:
        self.config, self.run_dir, self.splits = config, run_dir, splits
        self.stats, self.ctx = stats, ctx
        self.dtype = getattr(torch, config.dtype)
        self.model = model.to(device=ctx.device, dtype=self.dtype)
        self.loss_config = config.loss
        self.stage_two_loss = _stage_two_loss(config)
        stress_weights = [c.stress_weight for c in (self.loss_config, self.stage_two_loss) if c]
        self.compute_forces = splits.train.has_label("forces") or splits.valid.has_label("forces")
        self.compute_stress = (
            splits.train.has_label("stress") and max(stress_weights) > 0
        ) or splits.valid.has_label("stress")
        train = config.train
        self.train_batches = splits.train
        per_epoch = self.train_batches.n_batches(0, ctx.rank, ctx.world_size)
        total = train.max_steps or int(train.max_epochs) * per_epoch
        self.optimizer = build_optimizer(self.model, config.optimizer)
        self.schedule = LRSchedule(
            self.optimizer, config.schedule, config.optimizer.lr, total
        )
        decay = config.ema.decay
        self.ema = ExponentialMovingAverage(self.model, decay) if decay else None
        self.net = self.model
        if ctx.enabled:
            self.net = DistributedDataParallel(
                self.model,
                device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
                find_unused_parameters=bool(train.find_unused_parameters),
            )
        self.progress = Progress()
        self.records = MetricsLog(run_dir)

    # ------------------------------------------------------------------ resume
    def load_state(self, state: Mapping[str, Any]) -> None:
        """Continue from a :func:`mlip.train.state.load_training_state` payload."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if self.ema is not None and state.get("ema"):
            self.ema.load_state_dict(state["ema"])
        self.progress = state["progress"]
        if self.progress.stage_two_step is not None and self.stage_two_loss is not None:
            self.loss_config = self.stage_two_loss
        set_rng_state(state["rng"])
        if self.ctx.is_main:
            self.records.truncate_after(self.progress.step)
            _truncate_steps(self.run_dir / STEPS_NAME, self.progress.step)

    def save_state(self) -> None:
        """Write ``last.ckpt`` (rank 0)."""
        if not self.ctx.is_main:
            return
        self._check_finite("last.ckpt")
        save_training_state(
            self.run_dir / CHECKPOINT_NAME,
            config=self.config.as_dict(),
            model=model_payload(self.model),
            optimizer=self.optimizer.state_dict(),
            schedule=self.schedule.state_dict(),
            ema=self.ema.state_dict() if self.ema else None,
            progress=self.progress,
            stats=self.stats.as_dict(),
        )

    # ------------------------------------------------------------------ loop
    def fit(self) -> Path:
        """Train until a limit is reached; return the path of the best potential."""
        self._clock = time.perf_counter() - self.progress.elapsed_s
        while not self._limit_reached():
            self._run_epoch()
        self.save_state()
        self._export(self.run_dir / FINAL_NAME)
        if self.ctx.is_main and not (self.run_dir / BEST_NAME).is_file():
            log.warning("no finite validation loss was seen; %s holds the final weights", BEST_NAME)
            self._export(self.run_dir / BEST_NAME)
        self.ctx.barrier()
        return self.run_dir / BEST_NAME

    def _limit_reached(self) -> bool:
        train, p = self.config.train, self.progress
        done = p.epoch >= int(train.max_epochs) or (
            train.max_steps is not None and p.step >= int(train.max_steps)
        )
        if train.max_time_s is not None:
            late = torch.tensor(
                [float(p.elapsed_s >= float(train.max_time_s))], dtype=torch.float64
            )
            done = done or float(self.ctx.all_reduce(late)) > 0
        return done

    def spent_limits(self) -> list[str]:
        """The limits of ``train`` that the progress has reached, each with a ``--set`` that
        raises it (empty while training can go on)."""
        train, p = self.config.train, self.progress
        spent = []
        if p.epoch >= int(train.max_epochs):
            spent.append(f"train.max_epochs = {train.max_epochs} (epoch {p.epoch}; e.g. "
                         f"--set train.max_epochs={2 * int(train.max_epochs)})")
        if train.max_steps is not None and p.step >= int(train.max_steps):
            spent.append(f"train.max_steps = {train.max_steps} (step {p.step}; e.g. "
                         f"--set train.max_steps={2 * int(train.max_steps)})")
        if train.max_time_s is not None and p.elapsed_s >= float(train.max_time_s):
            spent.append(f"train.max_time_s = {train.max_time_s} ({p.elapsed_s:.0f} s trained;"
                         f" e.g. --set train.max_time_s={2 * float(train.max_time_s):g})")
        return spent

    def _run_epoch(self) -> None:
        p = self.progress
        n_batches = self.train_batches.n_batches(p.epoch, self.ctx.rank, self.ctx.world_size)
        accumulator = MetricAccumulator(self.loss_config)
        if p.train_sums:
            accumulator.load_state(p.train_sums)
        bar = tqdm(
            total=n_batches,
            initial=p.batch,
            desc=f"epoch {p.epoch}",
            leave=False,
            unit="batch",
            disable=not self._show_progress(),
        )
        for number, names, batch in self.train_batches.batches(
            p.epoch, self.ctx.rank, self.ctx.world_size, p.batch
        ):
            self._maybe_start_stage_two(accumulator, n_batches)
            batch = batch.to(self.ctx.device, self.dtype)
            loss, lr = self._train_step(batch, names, number, accumulator)
            p.batch, p.step = number + 1, p.step + 1
            p.elapsed_s = time.perf_counter() - self._clock
            self._log_step(loss, lr)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4g}", lr=f"{lr:.2e}")
            if p.step == _FIT_PROBE_STEPS and not self.schedule.fitted:  # every rank at once
                self._fit_schedule_to_time()
            if p.step % int(self.config.train.checkpoint_every_steps) == 0:
                p.train_sums = accumulator.state()
                self.save_state()
            if self._limit_reached():
                break
        bar.close()
        epoch_done = p.batch >= n_batches
        if epoch_done:
            p.epoch, p.batch = p.epoch + 1, 0
        if (
            not epoch_done
            or p.epoch % int(self.config.train.eval_every_epochs) == 0
            or self._limit_reached()
        ):
            self._evaluate(accumulator, epoch_done)
        p.train_sums = [] if epoch_done else accumulator.state()
        self._fit_schedule_to_time()

    def _show_progress(self) -> bool:
        """The bar is drawn by rank 0, with ``train.progress``, on a terminal only (never into
        redirected output or logs)."""
        stream = sys.stderr
        return bool(
            self.ctx.is_main
            and self.config.train.progress
            and stream is not None
            and hasattr(stream, "isatty")
            and stream.isatty()
        )

    def _fit_schedule_to_time(self) -> None:
        """``schedule.fit_to_time``: size the cosine to the time budget from the mean step rate
        so far over the ranks (the same number everywhere); at the probe step and after every
        epoch, so a machine that slows down or speeds up still ends the decay at the budget."""
        if not self.config.schedule.fit_to_time:
            return
        p = self.progress
        elapsed = self.ctx.all_reduce(torch.tensor([p.elapsed_s], dtype=torch.float64))
        before, first = self.schedule.total_steps, not self.schedule.fitted
        self.schedule.fit_to_time(
            p.step, float(elapsed) / self.ctx.world_size, float(self.config.train.max_time_s)
        )
        if first or abs(self.schedule.total_steps - before) > 0.05 * before:
            log.info("cosine schedule sized to %d steps for the %s s budget",
                     self.schedule.total_steps, self.config.train.max_time_s)

    # ------------------------------------------------------------------ stage two
    def _budget_fraction(self, n_batches: int) -> float:
        """How much of the budget that ends the run first is spent, in [0, 1]: the largest of
        elapsed/max_time_s, step/max_steps and epochs/max_epochs (the same on every rank)."""
        train, p = self.config.train, self.progress
        fractions = [(p.epoch + p.batch / max(1, n_batches)) / int(train.max_epochs)]
        if train.max_steps is not None:
            fractions.append(p.step / int(train.max_steps))
        if train.max_time_s is not None:
            elapsed = self.ctx.all_reduce(torch.tensor([p.elapsed_s], dtype=torch.float64))
            fractions.append(float(elapsed) / self.ctx.world_size / float(train.max_time_s))
        return max(fractions)

    def _maybe_start_stage_two(self, accumulator: MetricAccumulator, n_batches: int) -> None:
        """Switch to stage two before the next step once ``stage_two.start_fraction`` of the
        budget is spent: its loss weights, its lr (schedule), and a fresh best-model selection.

        The validation loss after the switch is the stage-two loss (other weights), so it is not
        compared with stage-one values: the best stage-one model is kept as
        :data:`BEST_STAGE_ONE_NAME` and ``best.pt`` becomes the best model by the stage-two
        validation loss (as MACE selects on each stage's own loss). EMA averaging goes on.
        """
        two, p = self.config.stage_two, self.progress
        if two.start_fraction is None or p.stage_two_step is not None:
            return
        fraction = self._budget_fraction(n_batches)
        if fraction < float(two.start_fraction):
            return
        end = max(p.step + 1, round(p.step / fraction)) if fraction > 0 else p.step + 1
        self.schedule.start_stage_two(p.step, end, float(two.lr), two.schedule)
        self.loss_config = accumulator.loss_config = self.stage_two_loss
        p.stage_two_step, p.best_valid_loss, p.best_step = p.step, math.inf, -1
        if self.ctx.is_main and (self.run_dir / BEST_NAME).is_file():
            (self.run_dir / BEST_NAME).replace(self.run_dir / BEST_STAGE_ONE_NAME)
        log.info("stage two from step %d (%.0f %% of the budget, planned end step %d): lr %.3g "
                 "(%s), loss weights E %g F %g S %g; best.pt now selects on this loss", p.step,
                 100 * fraction, end, float(two.lr), two.schedule,
                 self.loss_config.energy_weight, self.loss_config.forces_weight,
                 self.loss_config.stress_weight)

    # ------------------------------------------------------------------ one step
    def _train_step(
        self, batch: LabelledBatch, names: list[str], number: int,
        accumulator: MetricAccumulator,
    ) -> tuple[float, float]:
        """Forward, loss (global sums / global counts), guarded backward and update."""
        graph = batch.graph
        self.net.train()
        lr = self.schedule.set_step(self.progress.step)
        try:
            prediction = self.net(
                graph, compute_forces=self.compute_forces, compute_stress=self.compute_stress
            )
            terms = loss_terms(prediction, batch, self.loss_config)
            counts = self.ctx.all_reduce(torch.stack([c for _, c in terms.values()]))
            part = combine_terms(
                {t: s for t, (s, _) in terms.items()}, dict(zip(terms, counts)), self.loss_config
            )
            check = self.ctx.all_reduce(
                torch.stack([part.detach(), (~torch.isfinite(part.detach())).to(part.dtype)])
            )
            if float(check[1]) > 0 or not math.isfinite(float(check[0])):
                self._diverged(float(check[0]), names, number, graph, "loss")
            self.optimizer.zero_grad(set_to_none=True)
            (part * self.ctx.world_size).backward()
        except (_OUT_OF_MEMORY, RuntimeError) as exc:
            if not isinstance(exc, _OUT_OF_MEMORY) and "out of memory" not in str(exc):
                raise
            raise BatchTooLargeError(_oom_message(graph, self.config)) from None
        clip = self.config.optimizer.clip_grad_norm
        norm = torch.nn.utils.clip_grad_norm_(
            self.model.parameters(), float(clip) if clip else math.inf
        )
        if not math.isfinite(float(norm)):
            self._diverged(float(norm), names, number, graph, "gradient norm")
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        # weights that get no gradient decay geometrically under weight decay: zero them before
        # they turn subnormal and slow every matrix product they enter (mlip.nn.precision)
        flush_tiny_([*self.model.parameters(), *(self.ema.shadow if self.ema else [])],
                    count=False)
        accumulator.update(prediction, batch)
        return float(check[0]), lr

    def _diverged(
        self, value: float, frames: list[str], number: int, graph: AtomicGraph, what: str
    ) -> None:
        lr = self.optimizer.param_groups[0]["lr"]
        last = self.run_dir / CHECKPOINT_NAME
        kept = (
            f"the last good checkpoint {last} is kept"
            if last.is_file()
            else "no checkpoint had been written yet"
        )
        raise TrainingDivergedError(
            f"the {what} became {value} at epoch {self.progress.epoch}, "
            f"step {self.progress.step}, batch "
            f"{number} (frames {frames[:8]}{' ...' if len(frames) > 8 else ''}; "
            f"{graph.positions.shape[0]} atoms, {graph.n_edges} edges); "
            "training stopped before updating "
            f"the weights, {kept}. Lower the learning rate (optimizer.lr is {lr:.3g}; try "
            f"--set optimizer.lr={lr / 10:.3g}) or check these frames' labels"
        )

    # ------------------------------------------------------------------ evaluation and export
    def _evaluate(self, train_metrics: MetricAccumulator, epoch_done: bool) -> None:
        """Validate (EMA weights), record metrics, feed the plateau schedule, export the best."""
        reduced = MetricAccumulator(self.loss_config)
        reduced.load_state(train_metrics.state())
        reduced.all_reduce(self.ctx.all_reduce)
        with self._averaged():
            valid = evaluate(
                self.model,
                self.splits.valid,
                self.loss_config,
                batch_size=int(self.config.data.batch_size),
                compute_stress=self.compute_stress,
                ctx=self.ctx,
            )
        p = self.progress
        row = {
            "epoch": p.epoch,
            "step": p.step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "time_s": round(p.elapsed_s, 3),
            "stage": 1 if p.stage_two_step is None else 2,
            **reduced.summary("train_"),
            **valid.summary("valid_"),
        }
        valid_loss = row["valid_loss"]
        if epoch_done:
            self.schedule.observe(valid_loss)
        if self.ctx.is_main:
            self.records.append(row)
            log.info(_row_line(row))
            if valid_loss < p.best_valid_loss:
                self._export(self.run_dir / BEST_NAME, valid=row)
        if valid_loss < p.best_valid_loss:
            p.best_valid_loss, p.best_step = valid_loss, p.step

    def _averaged(self) -> contextlib.AbstractContextManager:
        return (
            self.ema.applied(self.model)
            if self.ema is not None
            else contextlib.nullcontext(self.model)
        )

    def _export(self, path: Path, **extra: Any) -> None:
        """Save the (EMA-averaged) weights as a ready-to-use potential file (rank 0)."""
        if not self.ctx.is_main:
            return
        with self._averaged():
            self._check_finite(path.name)
            save_model(
                self.model,
                path,
                statistics=self.stats.as_dict(),
                step=self.progress.step,
                epoch=self.progress.epoch,
                **extra,
            )

    def _check_finite(self, what: str) -> None:
        """Refuse to write non-finite weights (the previous file is kept)."""
        bad = [n for n, p in self.model.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:
            raise TrainingDivergedError(
                f"non-finite weights ({', '.join(bad[:5])}) at step {self.progress.step}; "
                f"{what} was not written. Lower optimizer.lr (now "
                f"{self.optimizer.param_groups[0]['lr']:.3g})")

    def _log_step(self, loss: float, lr: float) -> None:
        if not self.ctx.is_main:
            return
        path = self.run_dir / STEPS_NAME
        new = not path.is_file()
        with open(path, "a") as handle:
            if new:
                handle.write("step,epoch,batch,loss,lr\n")
            p = self.progress
            handle.write(f"{p.step},{p.epoch},{p.batch - 1},{loss!r},{lr!r}\n")


def _stage_two_loss(config: TrainingConfig) -> LossConfig | None:
    """The stage-two loss: ``loss`` with the weights ``stage_two`` sets (None: no stage two)."""
    two = config.stage_two
    if two.start_fraction is None:
        return None
    weights = {f"{t}_weight": getattr(two, f"{t}_weight") for t in ("energy", "forces", "stress")}
    return dataclasses.replace(config.loss, **{k: v for k, v in weights.items() if v is not None})


def model_from_payload(payload: Mapping[str, Any]) -> Potential:
    """Rebuild the model stored in a training checkpoint (weights included)."""
    model = build(payload["model"], **payload["hparams"])
    state = payload["state_dict"]
    model = model.to(dtype=next(iter(state.values())).dtype)
    model.load_state_dict(state)
    return model


def _truncate_steps(path: Path, step: int) -> None:
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:1] + [ln for ln in lines[1:] if int(ln.split(",")[0]) <= step]))


def _oom_message(graph: AtomicGraph, config: TrainingConfig) -> str:
    data = config.data
    return (
        f"out of memory on a batch of {graph.n_graphs} frames, "
        f"{graph.positions.shape[0]} atoms and "
        f"{graph.n_edges} edges (data.batch_size = {data.batch_size}, "
        f"data.max_atoms_per_batch = {data.max_atoms_per_batch}); lower data.batch_size or set "
        f"data.max_atoms_per_batch below {graph.positions.shape[0]}"
    )


def _row_line(row: Mapping[str, Any]) -> str:
    def f(key: str) -> str:
        value = row.get(key, math.nan)
        return (
            "-"
            if value is None or (isinstance(value, float) and math.isnan(value))
            else f"{value:.2f}"
        )

    return (
        f"epoch {row['epoch']} step {row['step']} lr {row['lr']:.2e} | "
        f"loss train {row['train_loss']:.4g} "
        f"valid {row['valid_loss']:.4g} | valid RMSE E {f('valid_energy_rmse')} meV/atom "
        f"({row.get('valid_energy_frames', 0)} frames), F {f('valid_forces_rmse')} meV/Å "
        f"({row.get('valid_forces_frames', 0)}), S {f('valid_stress_rmse')} meV/Å³ "
        f"({row.get('valid_stress_frames', 0)}) | {row['time_s']:.0f} s"
    )

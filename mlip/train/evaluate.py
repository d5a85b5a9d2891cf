"""Evaluate a potential on frames: metrics (all-reduced across ranks) and parity data/plots."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from mlip.data.importers.atoms import LabelKeys
from mlip.models import Potential
from mlip.train.distributed import DistributedContext
from mlip.train.loss import LossConfig
from mlip.train.metrics import MetricAccumulator
from mlip.train.split import StoreSplit

__all__ = ["evaluate", "evaluate_potential", "predict", "parity_plots"]


def evaluate(
    model: Potential,
    frames: StoreSplit,
    loss_config: LossConfig,
    *,
    batch_size: int = 16,
    compute_stress: bool = False,
    ctx: DistributedContext | None = None,
    dtype: torch.dtype | None = None,
) -> MetricAccumulator:
    """Metrics of ``model`` (in eval mode) on ``frames``; every rank gets the global result.

    Args:
        model: the potential (not the DDP wrapper).
        frames: a store split (anything with ``eval_graphs``);
            each rank evaluates its share.
        loss_config: to report the loss with the training weights.
        batch_size: frames per forward pass.
        compute_stress: predict stress (for frames with stress labels).
        ctx: the distributed context (None: a single process).
        dtype: floating dtype of the model (default: its parameters').
    """
    ctx = ctx or DistributedContext()
    device = next(model.parameters()).device
    dtype = dtype or next(model.parameters()).dtype
    was_training = model.training
    model.eval()
    accumulator = MetricAccumulator(loss_config)
    for batch in frames.eval_graphs(batch_size, ctx.rank, ctx.world_size):
        batch = batch.to(device, dtype)
        prediction = model(batch.graph, compute_forces=True, compute_stress=compute_stress)
        accumulator.update(prediction, batch)
    accumulator.all_reduce(ctx.all_reduce)
    model.train(was_training)
    return accumulator


def predict(model: Potential, frames: StoreSplit, batch_size: int = 16) -> dict[str, np.ndarray]:
    """Reference and predicted labels for parity plots.

    Returns:
        ``energy_ref``/``energy_pred`` (n_frames,) eV/atom and ``forces_ref``/``forces_pred``
        (n_components,) eV/Å, for the frames and atoms that have labels.
    """
    model.eval()
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    out: dict[str, list[np.ndarray]] = {
        k: [] for k in ("energy_ref", "energy_pred", "forces_ref", "forces_pred")
    }
    for batch in frames.eval_graphs(batch_size):
        graph, targets = batch.to(device, dtype)
        prediction = model(graph, compute_forces=True)
        n = graph.n_atoms.to(dtype)
        out["energy_ref"].append((targets.energy / n).detach().cpu().numpy())
        out["energy_pred"].append((prediction.energy / n).detach().cpu().numpy())
        out["forces_ref"].append(targets.forces.detach().cpu().numpy().ravel())
        out["forces_pred"].append(prediction.forces.detach().cpu().numpy().ravel())
    arrays = {k: np.concatenate(v) for k, v in out.items()}
    for name in ("energy", "forces"):
        keep = np.isfinite(arrays[f"{name}_ref"])
        arrays[f"{name}_ref"], arrays[f"{name}_pred"] = (
            arrays[f"{name}_ref"][keep],
            arrays[f"{name}_pred"][keep],
        )
    return arrays


def parity_plots(
    data: dict[str, np.ndarray], out_dir: str | os.PathLike, title: str = ""
) -> list[Path]:
    """Write ``parity_energy.png`` and ``parity_forces.png``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, unit in (("energy", "eV/atom"), ("forces", "eV/Å")):
        ref, pred = data[f"{name}_ref"], data[f"{name}_pred"]
        if ref.size == 0:
            continue
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        ax.scatter(ref, pred, s=4, alpha=0.5)
        low, high = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
        ax.plot([low, high], [low, high], "k--", lw=0.8)
        rmse = 1000.0 * float(np.sqrt(np.mean((pred - ref) ** 2)))
        ax.set_xlabel(f"reference {name} ({unit})")
        ax.set_ylabel(f"predicted {name} ({unit})")
        ax.set_title(f"{title} {name}: RMSE {rmse:.1f} m{unit}".strip())
        fig.tight_layout()
        path = out_dir / f"parity_{name}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written


def evaluate_potential(
    model_path: str | os.PathLike,
    data: str | os.PathLike | list,
    out_dir: str | os.PathLike,
    *,
    batch_size: int = 16,
    device: str = "auto",
    max_frames: int | None = None,
    split: str | None = None,
    keys: LabelKeys | None = None,
) -> tuple[str, list[Path]]:
    """Load a potential, evaluate it on data files, write parity plots.

    Args:
        split: ``train``, ``val`` or ``test``: only that split of each (split) store.
        keys: label names in the files (None: auto-detect ``energy``/``REF_energy``/...,
            as training does).

    Returns:
        the metrics table (text) and the paths of the plots written.

    Raises:
        ConfigError: ``split`` given for a file that is not a split store.
    """
    from mlip.models import load_model
    from mlip.train.data import source_split
    from mlip.train.distributed import resolve_device
    from mlip.train.metrics import format_table

    model = load_model(model_path, device=resolve_device(device))
    frames = source_split(data, model.cutoff, split=split, keys=keys or LabelKeys(),
                          max_frames=max_frames, batch_size=batch_size)
    metrics = evaluate(
        model,
        frames,
        LossConfig(),
        batch_size=batch_size,
        compute_stress=frames.has_label("stress"),
    )
    paths = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    table = format_table({",".join(Path(str(p)).name for p in paths): metrics.summary()})
    plots = parity_plots(
        predict(model, frames, batch_size), out_dir, title=Path(str(model_path)).stem
    )
    return f"{len(frames)} frames\n{table}", plots


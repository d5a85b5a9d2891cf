"""PNG figures of a run: learning curves from ``metrics.jsonl`` and generic CSV column plots."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

from mlip.errors import ConfigError
from mlip.train.metrics import UNITS
from mlip.train.records import read_metrics

__all__ = ["plot_learning_curves", "plot_csv"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curves(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Loss and RMSE of energy, forces and stress (train and valid) against epoch, log scale.

    Args:
        run_dir: a training run directory (with ``metrics.jsonl``).
        out: PNG path (default ``RUN_DIR/learning_curves.png``).

    Raises:
        ConfigError: the directory has no metrics yet.
    """
    rows = read_metrics(run_dir)
    if not rows:
        raise ConfigError(
            f"{run_dir} has no metrics.jsonl rows to plot (is it a training run directory?)"
        )
    panels = [("loss", "loss")] + [
        (f"{t}_rmse", f"{t} RMSE ({u})")
        for t, u in UNITS.items()
        if any(_finite(r.get(f"valid_{t}_rmse")) or _finite(r.get(f"train_{t}_rmse")) for r in rows)
    ]
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    x = [r["epoch"] for r in rows]
    for ax, (key, label) in zip(axes[0], panels):
        for split, style in (("train", "-"), ("valid", "--")):
            y = [r.get(f"{split}_{key}", math.nan) for r in rows]
            if any(_finite(v) for v in y):
                ax.plot(x, y, style, marker=".", label=split)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out) if out else Path(run_dir) / "learning_curves.png"
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def plot_csv(path: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """One panel per numeric column of a CSV file against its first column.

    Raises:
        ConfigError: an empty file or one without numeric columns.
    """
    path = Path(path)
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ConfigError(f"{path} has no data rows to plot")
    columns = list(rows[0])
    numeric = [c for c in columns if all(_is_number(r[c]) for r in rows)]
    if len(numeric) < 2:
        raise ConfigError(f"{path} needs at least two numeric columns to plot, has {numeric}")
    x_name, y_names = numeric[0], numeric[1:]
    x = [float(r[x_name]) for r in rows]
    plt = _pyplot()
    fig, axes = plt.subplots(
        len(y_names), 1, figsize=(6.4, 2.0 * len(y_names)), sharex=True, squeeze=False
    )
    for ax, name in zip(axes[:, 0], y_names):
        ax.plot(x, [float(r[name]) for r in rows], lw=1.0)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel(x_name)
    fig.tight_layout()
    out = Path(out) if out else path.with_suffix(".png")
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True

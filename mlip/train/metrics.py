"""Error metrics: streaming RMSE and MAE of energy per atom, forces and stress.

Sums are accumulated in float64 per batch and all-reduced across ranks before reporting, so
a data-parallel evaluation gives the same numbers as a single process. Reported units:
energy meV/atom, forces meV/Å, stress meV/Å³.

Each term is averaged over the frames that carry its label only (energy per frame, forces per
Cartesian component of every atom, stress over all 9 components of the 3x3 tensor of every frame
with stress), and ``{term}_frames`` says how many frames that was.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import torch

from mlip.models.output import PotentialOutput
from mlip.targets import LabelledBatch
from mlip.train.loss import TERMS, LossConfig, combine_terms, energy_errors, loss_terms

__all__ = ["MetricAccumulator", "UNITS", "format_table"]

#: Reported unit of each quantity (values are multiplied by 1000 from eV-based units).
UNITS = {"energy": "meV/atom", "forces": "meV/Å", "stress": "meV/Å³"}

#: Accumulated columns per term: squared and absolute error sums, error count, loss (sum, count),
#: and the number of frames with the label.
_COLUMNS = ("sq", "abs", "n", "loss_sum", "loss_count", "frames")


class MetricAccumulator:
    """Accumulates squared and absolute errors, and loss sums, over batches.

    Args:
        loss_config: used to accumulate the loss terms as global (sum, count) pairs.
    """

    def __init__(self, loss_config: LossConfig) -> None:
        self.loss_config = loss_config
        self.values = torch.zeros(len(TERMS), len(_COLUMNS), dtype=torch.float64)

    def update(self, prediction: PotentialOutput, batch: LabelledBatch) -> None:
        """Add the errors of one batch (predictions are detached here)."""
        detached = prediction.detach()
        all_errors = energy_errors(detached, batch)
        for row, term in enumerate(TERMS):
            errors = all_errors.get(term)
            if errors is None:
                continue
            e = errors[0].to(torch.float64).cpu()
            self.values[row, 0] += e.pow(2).sum()
            self.values[row, 1] += e.abs().sum()
            self.values[row, 2] += e.numel()
            self.values[row, 5] += errors[1].unique().numel()
        for term, (total, count) in loss_terms(detached, batch, self.loss_config).items():
            row = TERMS.index(term)
            self.values[row, 3] += float(total)
            self.values[row, 4] += float(count)

    def all_reduce(self, reduce: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Sum the accumulators across ranks with ``reduce`` (e.g. a DDP all-reduce)."""
        self.values = reduce(self.values)

    def loss(self) -> float:
        """The loss over everything accumulated (global sums over global counts)."""
        sums = {t: self.values[k, 3] for k, t in enumerate(TERMS) if self.values[k, 4] > 0}
        counts = {t: self.values[k, 4] for k, t in enumerate(TERMS) if self.values[k, 4] > 0}
        return float(combine_terms(sums, counts, self.loss_config)) if sums else math.nan

    def summary(self, prefix: str = "") -> dict[str, float]:
        """``{prefix}{term}_rmse`` and ``_mae`` in meV units (NaN when there were no labels) and
        ``{prefix}{term}_frames``, the number of frames they cover."""
        out = {f"{prefix}loss": self.loss()}
        for row, term in enumerate(TERMS):
            sq, ab, n = self.values[row, :3].tolist()
            out[f"{prefix}{term}_rmse"] = 1000.0 * math.sqrt(sq / n) if n else math.nan
            out[f"{prefix}{term}_mae"] = 1000.0 * ab / n if n else math.nan
            out[f"{prefix}{term}_frames"] = int(self.values[row, 5])
        return out

    def state(self) -> list[list[float]]:
        """Plain-Python state (for checkpoints)."""
        return self.values.tolist()

    def load_state(self, state: list[list[float]]) -> None:
        """Restore :meth:`state` (a checkpoint without frame counts resumes with them at 0)."""
        values = torch.tensor(state, dtype=torch.float64)
        self.values.zero_()
        self.values[:, : values.shape[1]] = values


def format_table(rows: Mapping[str, Mapping[str, float]]) -> str:
    """A MACE-style table: one row per split with RMSE/MAE of E, F and stress (stress over its 9
    components) and the number of frames each covers (``frames E/F/S``)."""
    header = ["split"] + [f"{t} {m} ({UNITS[t]})" for t in TERMS for m in ("RMSE", "MAE")]
    header.append("frames E/F/S")
    lines = [header]
    for name, summary in rows.items():
        prefix = next((k[: -len("energy_rmse")] for k in summary if k.endswith("energy_rmse")), "")
        lines.append(
            [name]
            + [
                _fmt(summary.get(f"{prefix}{t}_{m}", math.nan))
                for t in TERMS
                for m in ("rmse", "mae")
            ]
            + ["/".join(str(summary.get(f"{prefix}{t}_frames", 0)) for t in TERMS)]
        )
    widths = [max(len(row[c]) for row in lines) for c in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in lines)


def _fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"

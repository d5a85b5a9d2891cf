"""Per-evaluation metric records of a run: ``metrics.jsonl`` and ``metrics.csv`` in its directory.

Each row holds ``epoch``, ``step``, ``lr``, ``time_s`` and, for ``train_`` and ``valid_``,
``loss`` and the RMSE/MAE of energy (meV/atom), forces (meV/Å) and stress (meV/Å³); NaN
where a split has no such label.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

__all__ = ["MetricsLog", "read_metrics"]

JSONL_NAME = "metrics.jsonl"
CSV_NAME = "metrics.csv"


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of ``RUN_DIR/metrics.jsonl`` (NaN restored from null)."""
    path = Path(run_dir) / JSONL_NAME
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            rows.append({k: math.nan if v is None else v for k, v in json.loads(line).items()})
    return rows


class MetricsLog:
    """Appends metric rows to the JSONL file and rewrites the CSV from it.

    Args:
        run_dir: the run directory.
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)

    def truncate_after(self, step: int) -> None:
        """Drop rows written after ``step`` (used when resuming from an older checkpoint)."""
        rows = [r for r in read_metrics(self.run_dir) if r["step"] <= step]
        self._write(rows)

    def append(self, row: Mapping[str, Any]) -> None:
        """Add one row."""
        self._write(read_metrics(self.run_dir) + [dict(row)])

    def _write(self, rows: list[dict[str, Any]]) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        clean = [
            {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in r.items()}
            for r in rows
        ]
        (self.run_dir / JSONL_NAME).write_text("".join(json.dumps(r) + "\n" for r in clean))
        fields: list[str] = []
        for row in rows:
            fields.extend(k for k in row if k not in fields)
        with open(self.run_dir / CSV_NAME, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)

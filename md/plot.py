"""Plot a thermo log written by :func:`mlip.md.run_md` (used by ``mlip plot thermo.csv``)."""

from __future__ import annotations

import csv
import json
import math
import os
from collections import defaultdict
from pathlib import Path

from mlip.errors import ConfigError

__all__ = ["plot_thermo", "read_thermo"]

_PANELS = (("Etot_eV", "Epot_eV", "E / N (eV/atom)"), ("T_K", None, "T (K)"),
           ("P_GPa", None, "P (GPa)"), ("V_A3", None, "V / N (Å³/atom)"))


def read_thermo(path: str | os.PathLike) -> dict[int, dict[str, list[float]]]:
    """Columns of a ``.csv`` or ``.jsonl`` thermo log, grouped by system.

    Raises:
        ConfigError: the file lacks the ``system``/``time_ps`` columns of an mlip thermo log.
    """
    path = Path(path)
    with open(path, newline="") as handle:
        if path.suffix.lower() == ".jsonl":
            rows = [json.loads(line) for line in handle if line.strip()]
        else:
            rows = list(csv.DictReader(handle))
    if rows and not {"system", "time_ps", "n_atoms"} <= set(rows[0]):
        raise ConfigError(f"{path}: not an mlip thermo log (needs columns system, time_ps, "
                          f"n_atoms; found {sorted(rows[0])})")
    systems: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        table = systems[int(row["system"])]
        for key, value in row.items():
            table[key].append(float(value) if value not in ("", None) else math.nan)
    return {g: dict(columns) for g, columns in sorted(systems.items())}


def plot_thermo(path: str | os.PathLike, out_png: str | os.PathLike | None = None) -> Path:
    """Draw energy per atom, temperature, pressure and volume per atom versus time.

    One line per system; the potential energy is dashed. Panels whose column is all NaN
    (e.g. pressure and volume of molecules) are left out.

    Args:
        path: thermo log (``.csv`` or ``.jsonl``).
        out_png: image path (default: the log's path with ``.png``).

    Returns:
        The path of the written image.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = read_thermo(path)
    out = Path(out_png) if out_png is not None else Path(path).with_suffix(".png")
    panels = [panel for panel in _PANELS
              if any(not math.isnan(v) for table in systems.values() for v in table[panel[0]])]
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 2.25 * len(panels)), sharex=True,
                             squeeze=False)
    axes = axes[:, 0]
    for ax, (key, dashed, label) in zip(axes, panels):
        per_atom = key in ("Etot_eV", "V_A3")
        for g, table in systems.items():
            scale = [1.0 / n for n in table["n_atoms"]] if per_atom else [1.0] * len(table[key])
            values = [v * s for v, s in zip(table[key], scale)]
            if all(math.isnan(v) for v in values):
                continue
            line, = ax.plot(table["time_ps"], values, label=f"system {g}")
            if dashed is not None:
                ax.plot(table["time_ps"], [v * s for v, s in zip(table[dashed], scale)],
                        ls="--", color=line.get_color())
        ax.set_ylabel(label)
    axes[-1].set_xlabel("time (ps)")
    if 1 < len(systems) <= 10:
        axes[0].legend(fontsize="small")
    axes[0].set_title("solid: E_tot, dashed: E_pot")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out

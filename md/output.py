"""MD outputs: per-system trajectories (extxyz, ASE .traj, mlip HDF5 store) and the thermo log."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from ase import Atoms

from mlip.errors import ConfigError
from mlip.io import FrameWriter, output_format
from mlip.md.state import MDState, instantaneous_pressure, kinetic_energy, temperature_K, volume
from mlip.units import GPa

__all__ = ["TrajectoryWriter", "ThermoLog", "THERMO_COLUMNS", "thermo_rows", "system_paths"]

THERMO_COLUMNS = ("step", "time_ps", "system", "n_atoms", "T_K", "Epot_eV", "Ekin_eV", "Etot_eV",
                  "Econs_eV", "P_GPa", "V_A3", "nl_builds")


def system_paths(path: str | Path, n_graphs: int) -> list[Path]:
    """``out.xyz`` for one system; ``out.0.xyz``, ``out.1.xyz``, ... for several."""
    path = Path(path)
    if n_graphs == 1:
        return [path]
    return [path.with_name(f"{path.stem}.{g}{path.suffix}") for g in range(n_graphs)]


class TrajectoryWriter:
    """Append frames of selected systems to one file per system (or one HDF5 store).

    The format follows the suffix, as for every output of mlip (:mod:`mlip.io`):
    ``.xyz``/``.extxyz`` (extended XYZ), ``.traj`` (ASE) or ``.h5`` (an mlip snapshot store
    holding every system, frames tagged with ``system`` and ``step``; committed at :meth:`flush`).

    Args:
        path: output path. n_graphs: systems in the batch.
        append: keep existing files (restart) instead of overwriting them.

    Raises:
        ConfigError: unknown suffix, naming the supported ones.
    """

    def __init__(self, path: str | Path, n_graphs: int, append: bool = False) -> None:
        path = Path(path)
        self.format = output_format(path, what="trajectory")
        self.path = path
        self.paths = system_paths(path, n_graphs)
        self._writers: dict[int, FrameWriter] = {}
        self._store = None
        if self.format == "h5":
            self._store = FrameWriter(path, append=append,
                                      metadata={"provenance": "mlip md trajectory"})
        elif not append:
            for p in self.paths:
                p.unlink(missing_ok=True)

    def write(self, atoms: Sequence[Atoms], systems: Sequence[int], step: int) -> None:
        """Append ``atoms[k]`` as the next frame of system ``systems[k]`` at ``step``."""
        if self._store is not None:
            self._store.write(atoms, [{"system": g, "step": step} for g in systems])
            return
        for frame, g in zip(atoms, systems):
            if g not in self._writers:
                self._writers[g] = FrameWriter(self.paths[g], append=True)
            self._writers[g].write([frame], [{"step": step}])

    def flush(self) -> None:
        """Make everything written so far durable (commits the HDF5 store)."""
        if self._store is not None:
            self._store.flush()

    def close(self) -> None:
        """Flush and close all files."""
        if self._store is not None:
            self._store.close()
            self._store = None
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


def thermo_rows(state: MDState, conserved: torch.Tensor, time_ps: float, nl_builds: int,
                systems: Sequence[int]) -> list[dict]:
    """One log row per listed system (a single device→host copy).

    Args:
        state: current state. conserved: (n_graphs,) eV reference energy.
        time_ps: simulated time. nl_builds: neighbour-list builds so far.
        systems: indices of the systems to log.
    """
    kin = kinetic_energy(state.momenta, state.masses, state.batch, state.n_graphs)
    pressure = torch.diagonal(instantaneous_pressure(state), dim1=1, dim2=2).mean(dim=1) / GPa
    vol = torch.where(state.pbc.all(dim=1), volume(state.cell), torch.full_like(kin, math.nan))
    table = torch.stack([temperature_K(state), state.energy, kin, state.energy + kin, conserved,
                         pressure, vol, state.n_atoms.to(kin.dtype)], dim=1).cpu().numpy()
    rows = []
    for g in systems:
        t, epot, ekin, etot, econs, p, v, n = table[g]
        rows.append({"step": state.step, "time_ps": time_ps, "system": g, "n_atoms": int(n),
                     "T_K": t, "Epot_eV": epot, "Ekin_eV": ekin, "Etot_eV": etot,
                     "Econs_eV": econs, "P_GPa": p, "V_A3": v, "nl_builds": nl_builds})
    return rows


class ThermoLog:
    """Thermo log as CSV (``.csv``) or JSON lines (``.jsonl``), columns :data:`THERMO_COLUMNS`.

    Args:
        path: file. append: continue an existing log (restart).

    Raises:
        ConfigError: any other suffix (the format follows the extension, as for every output).
    """

    def __init__(self, path: str | Path, append: bool = False) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in (".csv", ".jsonl"):
            raise ConfigError(f"thermo log {self.path}: unknown suffix {self.path.suffix!r}; "
                              "use .csv or .jsonl")
        self.jsonl = self.path.suffix.lower() == ".jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not append or not self.path.exists()
        self._file = open(self.path, "w" if fresh else "a", newline="")
        self._csv = None if self.jsonl else csv.DictWriter(self._file, fieldnames=THERMO_COLUMNS)
        if fresh and self._csv is not None:
            self._csv.writeheader()

    def write(self, rows: Sequence[dict]) -> None:
        """Append rows and flush."""
        for row in rows:
            if self._csv is None:
                self._file.write(json.dumps({k: _plain(v) for k, v in row.items()}) + "\n")
            else:
                self._csv.writerow({k: _plain(v) for k, v in row.items()})
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _plain(value: object) -> object:
    """Numbers as plain Python (NaN kept as float)."""
    if isinstance(value, (np.floating, float)):
        return float(f"{float(value):.12g}")
    if isinstance(value, np.integer):
        return int(value)
    return value

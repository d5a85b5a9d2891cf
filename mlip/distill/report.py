"""Stage 5, report: the student against the teacher.

* **Errors** on the held-out teacher frames (the last ``--holdout`` of every teacher MD
  trajectory, never trained on), per temperature: RMSE and MAE of the energy per atom (meV/atom),
  of the force components (meV/Å) and of the 9 stress components of periodic frames (meV/Å³).
* **Speed**: the same MD (all seeds in one batch, periodic ones repeated to at least
  ``--speed-atoms`` atoms, NVT Langevin at the first temperature, ``--speed-steps`` steps after
  a short warm-up run) with the teacher and with the student on the same device; atom-steps/s
  of each and their ratio.
* **Structure**: the student runs the teacher's MD ladder (same seeds, temperatures, steps,
  time step and noise seeds); the radial distribution function g(r) of each seed at each
  temperature (frames of the second half of the run) is compared with the teacher's by
  ∫|g_student − g_teacher| dr / ∫ g_teacher dr (0 = identical). Non-periodic seeds use the
  pair-distance distribution normalised to unit area instead of g(r).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list

from mlip.data.manifest import atomic_write_bytes
from mlip.distill.config import DistillConfig
from mlip.distill.generate import FRICTION_PER_FS, Seed, run_ladder
from mlip.distill.labels import predict
from mlip.md import make_integrator, run_md
from mlip.models import Potential
from mlip.structures import voigt_to_full

__all__ = ["label_errors", "pair_distribution", "rdf_distance", "md_speed", "repeated",
           "speed_structures", "compare_rdfs",
           "write_report", "RDF_MAX", "RDF_BINS"]

log = logging.getLogger("mlip.distill")

RDF_MAX = 6.0  # Å
RDF_BINS = 120
WARMUP_STEPS = 5


def _stats(values: np.ndarray) -> tuple[float, float]:
    if values.size == 0:
        return math.nan, math.nan
    return float(np.sqrt(np.mean(values ** 2))), float(np.mean(np.abs(values)))


def label_errors(model: Potential, frames: Sequence[Atoms]) -> dict:
    """Errors of ``model`` against the labels attached to ``frames`` (their calculators):
    ``energy_rmse``/``_mae`` meV/atom, ``forces_rmse``/``_mae`` meV/Å (components),
    ``stress_rmse``/``_mae`` meV/Å³ (9 components, frames with a stress label), ``frames``."""
    pred = predict(model, frames)
    de, df, ds = [], [], []
    for k, atoms in enumerate(frames):
        ref = atoms.calc.results
        de.append((pred.energy[k] - ref["energy"]) / len(atoms))
        df.append((pred.forces[k] - ref["forces"]).ravel())
        if "stress" in ref and np.all(np.isfinite(pred.stress[k])):
            ds.append((pred.stress[k] - voigt_to_full(np.asarray(ref["stress"]))).ravel())
    e_rmse, e_mae = _stats(1000 * np.asarray(de))
    f_rmse, f_mae = _stats(1000 * np.concatenate(df)) if df else (math.nan, math.nan)
    s_rmse, s_mae = _stats(1000 * np.concatenate(ds)) if ds else (math.nan, math.nan)
    return {"frames": len(frames), "energy_rmse": e_rmse, "energy_mae": e_mae,
            "forces_rmse": f_rmse, "forces_mae": f_mae, "stress_rmse": s_rmse,
            "stress_mae": s_mae, "stress_frames": len(ds)}


def pair_distribution(frames: Sequence[Atoms], r_max: float = RDF_MAX,
                      bins: int = RDF_BINS) -> tuple[np.ndarray, np.ndarray]:
    """(bin centres Å, g(r)) averaged over ``frames`` (all atom pairs, every element).

    Periodic frames: g(r) = n(r) / (N·ρ·4πr²·dr), ρ = N/V, so g → 1 at large r in a liquid.
    Non-periodic frames: the distribution of pair distances, normalised to unit area (1/Å).
    """
    edges = np.linspace(0.0, r_max, bins + 1)
    centres = 0.5 * (edges[1:] + edges[:-1])
    total = np.zeros(bins)
    for atoms in frames:
        d = neighbor_list("d", atoms, r_max)
        counts = np.histogram(d, edges)[0].astype(float)
        if np.all(atoms.pbc):
            rho = len(atoms) / atoms.get_volume()
            shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
            total += counts / (len(atoms) * rho * shell)
        else:
            total += counts / max(1.0, counts.sum() * (edges[1] - edges[0]))
    return centres, total / max(1, len(frames))


def rdf_distance(g_model: np.ndarray, g_reference: np.ndarray) -> float:
    """∫|g − g_ref| dr / ∫ g_ref dr (same bins)."""
    norm = float(np.sum(np.abs(g_reference)))
    return float(np.sum(np.abs(g_model - g_reference)) / norm) if norm > 0 else math.nan


def repeated(atoms: Atoms, min_atoms: int) -> Atoms:
    """``atoms`` repeated along its periodic axes (the shortest one each time) until it holds
    at least ``min_atoms`` atoms; a structure without a periodic axis as it is."""
    reps = [1, 1, 1]
    lengths = atoms.cell.lengths()
    periodic = [k for k in range(3) if atoms.pbc[k]]
    while periodic and len(atoms) * np.prod(reps) < min_atoms:
        k = min(periodic, key=lambda axis: lengths[axis] * reps[axis])
        reps[k] += 1
    return atoms.repeat(reps)


def speed_structures(seeds: Sequence[Seed], config: DistillConfig) -> list[Atoms]:
    """The structures of the speed measurement: the seeds, periodic ones repeated to at least
    ``--speed-atoms`` atoms."""
    return [repeated(s.atoms, config.speed_atoms) for s in seeds]


def md_speed(model: Potential, atoms: Sequence[Atoms], config: DistillConfig, device) -> float:
    """Atom-steps/s of NVT Langevin MD of ``atoms`` (one batch) with ``model``, after a short
    warm-up run."""
    integrator = make_integrator("nvt_langevin", timestep_fs=config.timestep,
                                 temperature_K=config.temperatures[0],
                                 friction_per_fs=FRICTION_PER_FS, seed=config.seed)
    run_md(model, atoms, integrator, steps=WARMUP_STEPS,
           initial_temperature_K=config.temperatures[0], device=device)
    result = run_md(model, atoms, integrator, steps=config.speed_steps,
                    initial_temperature_K=config.temperatures[0], device=device, progress=True)
    return float(result.atom_steps_per_s)


def _late_frames(frames: Sequence[Atoms], systems: Sequence[str], steps: Sequence[int],
                 system: str) -> list[Atoms]:
    mine = [(s, f) for f, name, s in zip(frames, systems, steps) if name == system]
    if not mine:
        return []
    last = max(s for s, _ in mine)
    return [f for s, f in mine if s >= last / 2]


def compare_rdfs(student: Potential, seeds: Sequence[Seed], config: DistillConfig,
                 teacher_md: tuple[list[Atoms], list[str], list[int]], out_dir: Path,
                 device) -> list[dict]:
    """Run the student's MD ladder into ``out_dir`` and compare its g(r) with the teacher's
    (``teacher_md``: frames, systems ``NAME@300K``, steps of the teacher's ladder)."""
    frames, systems, _, steps, blown = run_ladder(student, seeds, config, out_dir,
                                                  config.md_steps, "student", device)
    failed = {(b["structure"], b["temperature_K"]) for b in blown}
    rows = []
    for seed in seeds:
        for temperature in config.temperatures:
            system = f"{seed.name}@{temperature:g}K"
            reference = _late_frames(*teacher_md, system)
            mine = _late_frames(frames, systems, steps, system)
            row = {"structure": seed.name, "temperature_K": temperature,
                   "periodic": bool(np.all(seed.atoms.pbc)),
                   "student_blew_up": (seed.name, temperature) in failed}
            if reference and mine:
                r, g_t = pair_distribution(reference)
                _, g_s = pair_distribution(mine)
                row.update({"rdf_distance": rdf_distance(g_s, g_t), "r_A": r.tolist(),
                            "g_teacher": g_t.tolist(), "g_student": g_s.tolist()})
            else:
                row["rdf_distance"] = math.nan
            rows.append(row)
    return rows


def _fmt(value: float, digits: int = 1) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def write_report(run_dir: Path, report: dict) -> None:
    """``report.json`` (everything) and ``report.md`` (the tables), both written atomically."""
    atomic_write_bytes(run_dir / "report.json",
                       json.dumps(report, indent=1, allow_nan=True).encode())
    lines = [f"# Distillation of {report['teacher']}", "",
             f"Student: `{report['student']}` ({report['student_parameters']} parameters), "
             f"trained on {report['training_frames']} teacher frames "
             f"(budget {report['budget']}).", "",
             "## Held-out teacher frames (last part of each teacher MD trajectory)", "",
             "| temperature | frames | E RMSE meV/atom | F RMSE meV/Å | F MAE meV/Å | "
             "S RMSE meV/Å³ |", "|---|---|---|---|---|---|"]
    for t, e in report["heldout"].items():
        lines.append(f"| {t} | {e['frames']} | {_fmt(e['energy_rmse'], 2)} | "
                     f"{_fmt(e['forces_rmse'])} | {_fmt(e['forces_mae'])} | "
                     f"{_fmt(e['stress_rmse'], 2)} |")
    speed = report["speed"]
    lines += ["", "## MD speed (same system and device)", "",
              f"Teacher {speed['teacher_atom_steps_per_s']:.4g} atom-steps/s, student "
              f"{speed['student_atom_steps_per_s']:.4g} atom-steps/s: **{speed['speedup']:.1f}×** "
              f"({speed['device']}, {speed['atoms']} atoms, {speed['steps']} steps).", "",
              "## Radial distribution function, student vs teacher MD", "",
              "Distance = ∫ abs(g_student − g_teacher) dr / ∫ g_teacher dr over the second half "
              "of each run (0: identical).", "",
              "| structure | temperature | RDF distance | student blew up |",
              "|---|---|---|---|"]
    for row in report["rdf"]:
        blew = "yes" if row["student_blew_up"] else "no"
        lines.append(f"| {row['structure']} | {row['temperature_K']:g} K | "
                     f"{_fmt(row['rdf_distance'], 3)} | {blew} |")
    blown = report["stages"].get("generate", {}).get("blown_up", [])
    if blown:
        lines += ["", "Teacher trajectories that blew up (their frames were dropped): " + ", ".join(
            f"{b['structure']} at {b['temperature_K']:g} K ({b['reason']})" for b in blown) + "."]
    lines += ["", "## Stages", ""]
    for name, summary in report["stages"].items():
        brief = {k: f"{v:.4g}" if isinstance(v, float) else v for k, v in summary.items()
                 if not isinstance(v, (list, dict))}
        lines.append(f"- {name}: " + ", ".join(f"{k} {v}" for k, v in brief.items()))
    atomic_write_bytes(run_dir / "report.md", ("\n".join(lines) + "\n").encode())

"""Stage 1, generate: teacher MD at a ladder of temperatures, rattles and strains, all labelled
by the teacher into one snapshot store.

Every seed structure (plus, with ``--vacancies``, copies of the fully periodic seeds with one
atom removed) runs NVT Langevin MD with the teacher (mlip's batched driver, all seeds in one
batch) at each temperature; a frame is saved every ``--md-interval`` steps (step 0 included).
A trajectory stopped by the blow-up guard is reported and all its frames are dropped. Rattled
copies (Gaussian displacements, amplitudes log-spaced from 0.02 Å to ``--rattle-max``) and, for
periodic seeds, strained copies (random symmetric strain, components uniform in
±``--max-strain``, plus a 0.02 Å rattle) add off-equilibrium and stress information. Every frame
is then evaluated by the teacher (energy, forces, and stress for fully periodic frames) and
written to ``generate/labels.h5`` with its trajectory id (``system``), ``config_type``
(``md_300K``, ``rattle``, ``strain``) and MD ``step``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from ase import Atoms

from mlip.distill.config import DistillConfig
from mlip.distill.labels import predict, read_frames, write_labelled
from mlip.md import MDOutputs, make_integrator, run_md
from mlip.models import Potential

__all__ = ["Seed", "make_seeds", "pool_size", "holdout_count", "md_frames_per_run",
           "generate", "run_ladder", "isolated_energies", "md_config_type", "FRICTION_PER_FS",
           "LABEL_STORE"]

log = logging.getLogger("mlip.distill")

#: Langevin friction of every distillation MD run, 1/fs.
FRICTION_PER_FS = 0.01
SMALLEST_RATTLE = 0.02  # Å
STRAIN_RATTLE = 0.02  # Å
LABEL_STORE = "labels.h5"


@dataclass(frozen=True)
class Seed:
    """A structure that the MD ladder starts from, and its name in ids and reports."""

    name: str
    atoms: Atoms


def _plain(atoms: Atoms) -> Atoms:
    """The structure alone (numbers, positions, cell, pbc, constraints), no calculator."""
    copy = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell,
                 pbc=atoms.pbc)
    copy.set_constraint([c.copy() for c in atoms.constraints])
    return copy


def make_seeds(structures: Sequence[Atoms], vacancies: int, seed: int) -> list[Seed]:
    """Seeds named ``K:FORMULA`` (and ``K:FORMULA-vacJ`` for one-atom vacancies of the fully
    periodic ones, the atom drawn with ``seed``)."""
    rng = np.random.default_rng([seed, 1])
    seeds = []
    for k, atoms in enumerate(structures):
        name = f"{k}:{atoms.get_chemical_formula()}"
        seeds.append(Seed(name, _plain(atoms)))
        if np.all(atoms.pbc) and len(atoms) > 1:
            for j in range(vacancies):
                copy = _plain(atoms)
                copy.set_constraint()
                del copy[int(rng.integers(len(copy)))]
                seeds.append(Seed(f"{name}-vac{j}", copy))
    return seeds


def md_frames_per_run(config: DistillConfig, steps: int | None = None) -> int:
    """Frames one MD trajectory saves (steps 0, interval, 2·interval, ...)."""
    return (config.md_steps if steps is None else steps) // config.md_interval + 1


def holdout_count(n_frames: int, fraction: float) -> int:
    """Frames held out at the end of a trajectory of ``n_frames`` (at least one when the
    fraction is positive, never all of them)."""
    if fraction <= 0 or n_frames < 2:
        return 0
    return min(n_frames - 1, max(1, round(fraction * n_frames)))


def pool_size(config: DistillConfig, seeds: Sequence[Seed]) -> int:
    """Candidate frames the generation gives when no trajectory blows up (held-out excluded)."""
    per_md = md_frames_per_run(config)
    per_md -= holdout_count(per_md, config.holdout)
    total = 0
    for s in seeds:
        total += per_md * len(config.temperatures) + config.rattles
        total += config.strains if np.all(s.atoms.pbc) else 0
    return total


def md_config_type(temperature: float) -> str:
    """The ``config_type`` of teacher MD frames at ``temperature`` K (``md_300K``)."""
    return f"md_{temperature:g}K"


def _perturbed(seeds: Sequence[Seed], config: DistillConfig
               ) -> tuple[list[Atoms], list[str], list[str]]:
    """Rattled and strained copies: (frames, systems, config_types)."""
    rng = np.random.default_rng([config.seed, 2])
    frames, systems, kinds = [], [], []
    amplitudes = (np.geomspace(min(SMALLEST_RATTLE, config.rattle_max), config.rattle_max,
                               config.rattles) if config.rattles else [])
    for s in seeds:
        for j, sigma in enumerate(amplitudes):
            atoms = _plain(s.atoms)
            atoms.positions += rng.normal(0.0, sigma, atoms.positions.shape)
            frames.append(atoms)
            systems.append(f"{s.name}:rattle{j}")
            kinds.append("rattle")
        if not np.all(s.atoms.pbc):
            continue
        for j in range(config.strains):
            eps = rng.uniform(-config.max_strain, config.max_strain, (3, 3))
            eps = 0.5 * (eps + eps.T)
            atoms = _plain(s.atoms)
            atoms.set_cell(np.asarray(atoms.cell[:]) @ (np.eye(3) + eps), scale_atoms=True)
            atoms.positions += rng.normal(0.0, STRAIN_RATTLE, atoms.positions.shape)
            frames.append(atoms)
            systems.append(f"{s.name}:strain{j}")
            kinds.append("strain")
    return frames, systems, kinds


def run_ladder(model: Potential, seeds: Sequence[Seed], config: DistillConfig, out_dir: Path,
               steps: int, who: str, device, keep_failed: bool = False
               ) -> tuple[list[Atoms], list[str], list[str], list[int], list[dict]]:
    """NVT Langevin MD of all seeds with ``model`` at every temperature, frames kept every
    ``--md-interval`` steps; trajectories stopped by the blow-up guard are reported, and their
    frames dropped unless ``keep_failed`` (those before the failure are kept then).

    Returns:
        (frames, systems ``NAME@300K``, config_types ``md_300K``, steps, blown-up records
        ``{"structure", "temperature_K", "reason"}``).
    """
    frames, systems, kinds, steps_out, blown = [], [], [], [], []
    start = time.monotonic()
    for t_index, temperature in enumerate(config.temperatures):
        trajectory = out_dir / f"{who}_md_{temperature:g}K.h5"
        integrator = make_integrator("nvt_langevin", timestep_fs=config.timestep,
                                     temperature_K=temperature, friction_per_fs=FRICTION_PER_FS,
                                     seed=config.seed + 1000 * t_index)
        result = run_md(model, [s.atoms for s in seeds], integrator, steps=steps,
                        initial_temperature_K=temperature, seed=config.seed + 1000 * t_index,
                        device=device, progress=True,
                        outputs=MDOutputs(trajectory=trajectory,
                                          trajectory_interval=config.md_interval,
                                          log=out_dir / f"{who}_md_{temperature:g}K.csv",
                                          log_interval=config.md_interval))
        for g, reason in sorted(result.failures.items()):
            log.warning("%s MD of %s at %g K blew up (%s)%s", who, seeds[g].name,
                        temperature, reason, "" if keep_failed else ": its frames are dropped")
            blown.append({"structure": seeds[g].name, "temperature_K": temperature,
                          "reason": reason})
        md_atoms, batch = read_frames(trajectory)
        for atoms, g, step in zip(md_atoms, batch.frames["system"], batch.frames["step"]):
            if int(g) in result.failures and not keep_failed:
                continue
            frames.append(_plain(atoms))
            systems.append(f"{seeds[int(g)].name}@{temperature:g}K")
            kinds.append(md_config_type(temperature))
            steps_out.append(int(step))
        elapsed = time.monotonic() - start
        left = elapsed / (t_index + 1) * (len(config.temperatures) - t_index - 1)
        log.info("%s MD at %g K done (%d/%d temperatures, %.3g atom-steps/s); %.0f s elapsed, "
                 "ETA %.0f s", who, temperature, t_index + 1, len(config.temperatures),
                 result.atom_steps_per_s, elapsed, left)
    return frames, systems, kinds, steps_out, blown


def isolated_energies(teacher: Potential, elements: Sequence[int]) -> dict[str, float]:
    """The teacher's energy of each element's lone atom (no neighbours), eV, by symbol: the
    students' E0, so that they learn the teacher's energy relative to its own free atoms (a
    least-squares E0 cannot separate the elements of a fixed composition such as HfO2)."""
    from ase.data import chemical_symbols

    atoms = [Atoms(numbers=[z], positions=[[0.0, 0.0, 0.0]]) for z in elements]
    energies = predict(teacher, atoms).energy
    return {chemical_symbols[z]: float(e) for z, e in zip(elements, energies)}


def generate(teacher: Potential, seeds: Sequence[Seed], config: DistillConfig, out_dir: Path,
             device) -> dict:
    """Run stage 1 into ``out_dir``; return its summary (frame counts, blown-up trajectories,
    the teacher's MD throughput)."""
    frames, systems, kinds, steps, blown = run_ladder(teacher, seeds, config, out_dir,
                                                      config.md_steps, "teacher", device)
    extra, extra_systems, extra_kinds = _perturbed(seeds, config)
    frames += extra
    systems += extra_systems
    kinds += extra_kinds
    steps += [0] * len(extra)
    log.info("generate: labelling %d frames with the teacher", len(frames))
    start = time.monotonic()
    labels = predict(teacher, frames)
    write_labelled(out_dir / LABEL_STORE, frames, labels, systems, kinds, steps,
                   metadata={"provenance": "mlip distill: teacher labels"})
    counts = {kind: kinds.count(kind) for kind in dict.fromkeys(kinds)}
    log.info("generate: %d frames labelled in %.1f s (%s)", len(frames),
             time.monotonic() - start, ", ".join(f"{k} {n}" for k, n in counts.items()))
    elements = sorted({int(z) for s in seeds for z in s.atoms.numbers})
    return {"frames": len(frames), "by_kind": counts, "blown_up": blown,
            "teacher_e0_eV": isolated_energies(teacher, elements),
            "seeds": [s.name for s in seeds],
            "md_frames_per_trajectory": md_frames_per_run(config),
            "max_abs_force_eV_A": float(max((np.abs(f).max() for f in labels.forces
                                              if len(f)), default=math.nan))}

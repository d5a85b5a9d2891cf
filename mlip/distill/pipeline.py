"""``distill(teacher, structures, run_dir, **settings)``: the whole pipeline, stage by stage.

Stages and their outputs in ``RUN_DIR`` (each recorded in ``distill.json`` when complete and
skipped on a rerun; see :mod:`mlip.distill.runstate`):

``generate/``     teacher MD trajectories and logs, ``labels.h5`` (every generated frame, labelled)
``select/``       ``selection.json``: held-out and selected frames of ``labels.h5``
``train/``        ``train.h5``, ``valid.h5``, ``student{k}/`` (mlip train runs)
``iterate_{r}/``  student MD, ``added.h5`` (frames added in round r), the retrained students
``student.pt``    the final student (member 0); ``report.json``, ``report.md``
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from ase import Atoms

from mlip.data.frames import FrameBatch
from mlip.data.manifest import atomic_write_bytes
from mlip.distill.active import ADDED_STORE, active_round
from mlip.distill.config import BudgetPlan, DistillConfig
from mlip.distill.generate import LABEL_STORE, Seed, generate, make_seeds, md_config_type, pool_size
from mlip.distill.labels import read_frames
from mlip.distill.report import (
    compare_rdfs,
    label_errors,
    md_speed,
    speed_structures,
    write_report,
)
from mlip.distill.runstate import RunState
from mlip.distill.select import farthest_point_sampling, holdout_split, structure_descriptors
from mlip.distill.student import train_committee, write_training_set
from mlip.errors import ConfigError
from mlip.models import Potential, load_model
from mlip.models.loading import resolve_model
from mlip.settings import resolve_device

__all__ = ["distill", "read_structures", "load_teacher"]

log = logging.getLogger("mlip.distill")

DESCRIPTOR = ("per-structure mean and spread over atoms of radial symmetry functions per "
              "element pair, volume per atom (mlip.distill.select)")


def read_structures(structures: str | os.PathLike | Sequence[Atoms]) -> list[Atoms]:
    """The seed structures of a file (every frame; any ASE-readable format) or a list.

    Raises:
        ConfigError: a missing or unreadable file, or no structure in it.
    """
    if not isinstance(structures, (str, os.PathLike)):
        frames = list(structures)
        where = "the structures given"
    else:
        import ase.io

        path = Path(structures)
        where = str(path)
        if not path.is_file():
            raise ConfigError(f"structures file {path} does not exist")
        try:
            frames = ase.io.read(path, index=":") if path.stat().st_size else []
        except Exception as exc:  # ASE's readers raise anything from ValueError to StopIteration
            reason = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise ConfigError(f"cannot read structures file {path} ({type(exc).__name__}: "
                              f"{reason}); give an ASE-readable file (extxyz, cif, POSCAR, "
                              "traj, ...)") from None
    if not frames:
        raise ConfigError(f"{where} holds no structures: give at least one seed structure")
    return frames


def load_teacher(name: str | os.PathLike | Potential, device) -> Potential:
    """The teacher: a potential, a potential file or a pretrained model name
    (``sevennet:7net-0``).

    Raises:
        ConfigError: neither an existing file nor a pretrained model name (naming it).
    """
    from mlip.models.foundation import FOUNDATION_MODELS, is_foundation_name

    if isinstance(name, Potential):
        return resolve_model(name, device=device)
    if not is_foundation_name(name) and not Path(name).is_file():
        families = ", ".join(sorted(FOUNDATION_MODELS))
        raise ConfigError(f"unknown teacher {str(name)!r}: give a potential file (written by "
                          f"mlip train / save_model) or a pretrained model name "
                          f"(FAMILY:MODEL, families: {families})")
    return load_model(name, device=device)


def _structures_hash(frames: Sequence[Atoms]) -> str:
    digest = hashlib.sha256()
    for atoms in frames:
        for array in (atoms.numbers, atoms.positions, np.asarray(atoms.cell[:]), atoms.pbc):
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def _rel(run_dir: Path, paths: Sequence[Path]) -> list[str]:
    return [str(Path(p).relative_to(run_dir)) for p in paths]


def _parameters(path: Path) -> int:
    return sum(p.numel() for p in load_model(path).parameters())


class _Stages:
    """Runs the stages in order with progress lines (stage k/N, elapsed, ETA from the stages
    run so far)."""

    def __init__(self, state: RunState, total: int) -> None:
        self.state, self.total, self.index = state, total, 0
        self.start, self.ran = time.monotonic(), 0

    def run(self, name: str, outputs: Sequence[str], work) -> dict:
        self.index += 1
        paths = [self.state.run_dir / p for p in outputs]
        summary = self.state.done(name, paths)
        if summary is not None:
            return summary
        log.info("stage %d/%d: %s", self.index, self.total, name)
        began = time.monotonic()
        summary = work()
        self.ran += 1
        elapsed = time.monotonic() - self.start
        left = elapsed / self.ran * (self.total - self.index)
        log.info("stage %s done in %.0f s; %.0f s elapsed, ETA of the rest ~%.0f s", name,
                 time.monotonic() - began, elapsed, left)
        return self.state.complete(name, {**summary, "wall_s": round(time.monotonic() - began, 1)})


def distill(teacher: str | os.PathLike | Potential,
            structures: str | os.PathLike | Sequence[Atoms],
            run_dir: str | os.PathLike, **settings: Any) -> dict:
    """Distil ``teacher`` into a small Facet student for the chemistry of ``structures``.

    Args:
        teacher: a pretrained model name (``sevennet:7net-0``), a potential file or object.
        structures: seed structures (an ASE-readable file, or a list of ``ase.Atoms``).
        run_dir: the run directory; rerunning with the same arguments resumes it.
        settings: the settings of ``mlip distill`` by name (``budget=200``,
            ``temperatures=[300, 900]``, ``rounds=1``, ...; :data:`mlip.distill.SETTINGS`).

    Returns:
        The report (also ``RUN_DIR/report.json``).

    Raises:
        ConfigError: an unknown teacher, an empty or unreadable structures file, a setting out
            of range, a budget the settings cannot honour, or a run directory holding a run
            with other settings; all before any work is done.
    """
    run_dir = Path(run_dir)
    config = DistillConfig.from_options({**settings, "output": str(run_dir)})
    frames = read_structures(structures)
    device = resolve_device(config.device, setting="--device")
    teacher_model = load_teacher(teacher, device)
    teacher_model.check_elements({int(z) for atoms in frames for z in atoms.numbers})
    seeds = make_seeds(frames, config.vacancies, config.seed)
    plan = BudgetPlan.of(config, pool_size(config, seeds))
    teacher_name = teacher.registry_name if isinstance(teacher, Potential) else str(teacher)
    state = RunState(run_dir, config.fingerprint(),
                     {"teacher": teacher_name, "structures": _structures_hash(frames)})
    stages = _Stages(state, 4 + config.rounds)
    labels = run_dir / "generate" / LABEL_STORE

    gen = stages.run("generate", ["generate/labels.h5/manifest.json"], lambda: generate(
        teacher_model, seeds, config, state.fresh_dir("generate"), device))
    e0 = gen["teacher_e0_eV"]
    sel = stages.run("select", ["select/selection.json"],
                     lambda: _select(labels, config, plan, state.fresh_dir("select")))
    batches = [read_frames(labels, sel["selected"])[1]]
    summary = stages.run("train", [f"train/student{k}/best.pt" for k in range(config.committee)],
                         lambda: _train(config, state.fresh_dir("train"), batches, e0, None,
                                        run_dir))
    for r in range(1, config.rounds + 1):
        previous = [run_dir / p for p in summary["students"]]
        folder = f"iterate_{r}"
        summary = stages.run(
            folder, [f"{folder}/{ADDED_STORE}/manifest.json",
                     *(f"{folder}/student{k}/best.pt" for k in range(config.committee))],
            lambda: _iterate(r, previous, teacher_model, seeds, config, state.fresh_dir(folder),
                             device, plan, batches, e0, run_dir))
        added = read_frames(run_dir / folder / ADDED_STORE)[1]
        if len(added):
            batches.append(added)
    final = run_dir / summary["students"][0]
    stages.run("report", ["report.json", "report.md", "student.pt"], lambda: _report(
        teacher_model, teacher_name, final, seeds, config, plan, labels, sel, device,
        state, run_dir))
    return json.loads((run_dir / "report.json").read_text())


def _select(labels: Path, config: DistillConfig, plan: BudgetPlan, out_dir: Path) -> dict:
    frames, batch = read_frames(labels)
    pool, held = holdout_split(batch.frames["system"], batch.frames["config_type"],
                               batch.frames["step"], config.holdout)
    if len(pool) < plan.initial:
        raise ConfigError(f"--budget = {config.budget}: the first selection needs "
                          f"{plan.initial} frames but only {len(pool)} were generated (teacher "
                          "trajectories blew up?); lower --budget or raise --md-steps")
    features = structure_descriptors([frames[k] for k in pool], config.cutoff)
    picked = [pool[k] for k in farthest_point_sampling(features, plan.initial)]
    kinds = [str(batch.frames["config_type"][k]) for k in picked]
    result = {"selected": picked, "heldout": held, "pool": len(pool), "descriptor": DESCRIPTOR,
              "selected_by_kind": {k: kinds.count(k) for k in dict.fromkeys(kinds)}}
    atomic_write_bytes(out_dir / "selection.json", json.dumps(result, indent=1).encode())
    log.info("select: %d of %d pool frames by farthest-point sampling (%s); %d held out", len(
        picked), len(pool), ", ".join(f"{k} {n}" for k, n in result["selected_by_kind"].items()),
        len(held))
    return result


def _train(config: DistillConfig, out_dir: Path, batches: Sequence[FrameBatch],
           e0: dict[str, float], start_from: Sequence[Path] | None, run_dir: Path) -> dict:
    train_store, valid_store, n_train = write_training_set(out_dir, batches)
    students = train_committee(config, out_dir, train_store, valid_store, n_train, e0,
                               start_from)
    return {"training_frames": int(sum(len(b) for b in batches)), "train_frames": n_train,
            "students": _rel(run_dir, students)}


def _iterate(r: int, previous: Sequence[Path], teacher: Potential, seeds: Sequence[Seed],
             config: DistillConfig, out_dir: Path, device, plan: BudgetPlan,
             batches: Sequence[FrameBatch], e0: dict[str, float], run_dir: Path) -> dict:
    summary = active_round(r, previous, teacher, seeds, config, out_dir, device, plan.per_round)
    added = read_frames(out_dir / ADDED_STORE)[1] if summary["added"] else None
    everything = [*batches, added] if added is not None else list(batches)
    start = previous if config.retrain == "finetune" else None
    return {**summary, **_train(config, out_dir, everything, e0, start, run_dir)}


def _report(teacher: Potential, teacher_name: str, final: Path, seeds: Sequence[Seed],
            config: DistillConfig, plan: BudgetPlan, labels: Path, sel: dict, device,
            state: RunState, run_dir: Path) -> dict:
    """Write report.json, report.md and student.pt; return a short summary for the state."""
    student = resolve_model(final, device=device)
    all_frames, batch = read_frames(labels)
    kinds = [str(c) for c in batch.frames["config_type"]]
    held_frames = [all_frames[k] for k in sel["heldout"]]
    held_kinds = [kinds[k] for k in sel["heldout"]]
    heldout = {}
    for temperature in config.temperatures:
        kind = md_config_type(temperature)
        mine = [f for f, k in zip(held_frames, held_kinds) if k == kind]
        if mine:
            heldout[f"{temperature:g} K"] = label_errors(student, mine)
    log.info("report: MD speed of teacher and student (%d steps each)", config.speed_steps)
    timed = speed_structures(seeds, config)
    teacher_speed = md_speed(teacher, timed, config, device)
    student_speed = md_speed(student, timed, config, device)
    md = [k for k, c in enumerate(kinds) if c.startswith("md_")]
    rdf = compare_rdfs(student, seeds, config,
                       ([all_frames[k] for k in md], [str(batch.frames["system"][k]) for k in md],
                        [int(batch.frames["step"][k]) for k in md]),
                       state.fresh_dir("report"), device)
    shutil.copyfile(final, run_dir / "student.pt")
    stages = {k: v for k, v in state.data["stages"].items()}
    report = {
        "teacher": teacher_name, "student": "student.pt",
        "student_parameters": _parameters(final),
        "budget": config.budget, "budget_plan": {"initial": plan.initial,
                                                 "per_round": plan.per_round,
                                                 "rounds": plan.rounds},
        "training_frames": stages[list(stages)[-1]]["training_frames"],
        "heldout": heldout,
        "speed": {"teacher_atom_steps_per_s": teacher_speed,
                  "student_atom_steps_per_s": student_speed,
                  "speedup": student_speed / teacher_speed, "device": str(device),
                  "atoms": int(sum(len(a) for a in timed)), "steps": config.speed_steps},
        "rdf": rdf, "rdf_max_distance": max((r["rdf_distance"] for r in rdf
                                                    if math.isfinite(r["rdf_distance"])),
                                                   default=None),
        "settings": config.fingerprint(), "stages": stages,
    }
    write_report(run_dir, report)
    f = [e["forces_rmse"] for e in heldout.values()]
    log.info("report: held-out force RMSE %s meV/Å; MD speed-up %.1fx; %s",
             " / ".join(f"{v:.1f}" for v in f), report["speed"]["speedup"], run_dir / "report.md")
    return {"forces_rmse_meV_A": f, "speedup": report["speed"]["speedup"],
            "rdf_max_distance": report["rdf_max_distance"]}

"""Stage 4, iterate: one active-learning round.

The first student runs the same MD ladder as the teacher did (from the seeds, every
temperature, ``--al-steps`` steps); its saved frames, including those of a trajectory that blew
up before the failure, are the candidates. With a committee of two or more students a frame's
score is the largest, over its atoms, committee spread of the force
(√(mean_k |F_k − F̄|²), eV/Å, as DP-GEN's max deviation); with a single student the candidates
are labelled by the teacher and scored by the student's largest atomic force error against it.
The ``per_round`` best-scored frames are labelled by the teacher and added to the training set.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from mlip.distill.config import DistillConfig
from mlip.distill.generate import Seed, run_ladder
from mlip.distill.labels import Predictions, predict, write_labelled
from mlip.models import Potential
from mlip.models.loading import resolve_model

__all__ = ["force_disagreement", "force_error", "active_round", "ADDED_STORE"]

log = logging.getLogger("mlip.distill")

ADDED_STORE = "added.h5"


def force_disagreement(members: Sequence[Predictions]) -> np.ndarray:
    """(n_frames,) largest atomic committee spread of the force, eV/Å."""
    out = np.zeros(len(members[0].forces))
    for k in range(len(out)):
        stack = np.stack([m.forces[k] for m in members])  # (members, atoms, 3)
        spread = np.sqrt(((stack - stack.mean(0)) ** 2).sum(-1).mean(0))
        out[k] = spread.max() if spread.size else 0.0
    return out


def force_error(model: Predictions, reference: Predictions) -> np.ndarray:
    """(n_frames,) largest atomic force error |F − F_ref|, eV/Å."""
    return np.array([np.linalg.norm(f - g, axis=1).max() if len(f) else 0.0
                     for f, g in zip(model.forces, reference.forces)])


def active_round(round_index: int, students: Sequence[Path], teacher: Potential,
                 seeds: Sequence[Seed], config: DistillConfig, out_dir: Path, device,
                 per_round: int) -> dict:
    """Run one round into ``out_dir`` (student MD, scores, ``added.h5``); return its summary."""
    first = resolve_model(students[0], device=device)
    frames, systems, kinds, steps, blown = run_ladder(
        first, seeds, config, out_dir, config.student_md_steps, "student", device,
        keep_failed=True)
    if not frames:
        write_labelled(out_dir / ADDED_STORE, [], Predictions(np.zeros(0), [], np.zeros((0, 3, 3))),
                       [], [])
        return {"candidates": 0, "added": 0, "student_blown_up": blown}
    if len(students) >= 2:
        members = [predict(first, frames)] + [
            predict(resolve_model(p, device=device), frames) for p in students[1:]]
        scores, how = force_disagreement(members), "committee force spread"
        teacher_labels = None
    else:
        teacher_labels = predict(teacher, frames)
        scores, how = force_error(predict(first, frames), teacher_labels), "force error"
    order = np.argsort(-scores, kind="stable")[:per_round]
    picked = [frames[k] for k in order]
    labels = predict(teacher, picked) if teacher_labels is None else Predictions(
        teacher_labels.energy[order], [teacher_labels.forces[k] for k in order],
        teacher_labels.stress[order])
    student_on_picked = predict(first, picked)
    errors = np.concatenate([(f - g).ravel() for f, g in
                             zip(student_on_picked.forces, labels.forces)])
    write_labelled(out_dir / ADDED_STORE, picked, labels,
                   [f"{systems[k]}:active{round_index}" for k in order],
                   [f"active_{round_index}"] * len(picked), [steps[k] for k in order],
                   metadata={"provenance": "mlip distill: teacher labels"})
    log.info("iterate %d: %d candidates (%s mean %.3g, max %.3g eV/Å); added the %d worst "
             "(student force RMSE on them %.1f meV/Å)", round_index, len(frames), how,
             scores.mean(), scores.max(), len(picked), 1000 * np.sqrt(np.mean(errors ** 2)))
    return {"candidates": len(frames), "added": len(picked), "score": how,
            "score_mean_eV_A": float(scores.mean()), "score_max_eV_A": float(scores.max()),
            "score_of_added_min_eV_A": float(scores[order].min()),
            "student_force_rmse_on_added_meV_A": float(1000 * np.sqrt(np.mean(errors ** 2))),
            "added_by_kind": {k: int(sum(kinds[i] == k for i in order))
                              for k in dict.fromkeys(kinds[i] for i in order)},
            "student_blown_up": blown}

"""The settings of ``mlip distill``, declared once, and the label budget they imply.

:data:`SETTINGS` gives the CLI options, the checks and docs/settings.md; :class:`DistillConfig`
holds the checked values; :class:`BudgetPlan` splits ``--budget`` over the stages and refuses a
budget the generation settings cannot honour before any work is done.

``--budget N`` is the number of teacher-labelled frames the student is trained on, in total:
``N − rounds·per_round`` frames picked by farthest-point sampling from the generated pool, then
``per_round`` frames added by each active-learning round (``per_round`` ≈ 40 % of ``N`` shared
over the rounds, less where the first selection would fall below :data:`MIN_TRAIN_FRAMES`).
Labelling the generated pool and the held-out frames is not counted (the teacher MD that
produces them computes those forces anyway).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from mlip.errors import ConfigError
from mlip.settings import (
    AT_LEAST_ONE,
    DEVICE_PATTERN,
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    Group,
    Range,
    Setting,
)

__all__ = ["SETTINGS", "DistillConfig", "BudgetPlan", "MIN_TRAIN_FRAMES", "AL_FRACTION"]

#: Fewest frames the first student is trained on (a training and a validation set).
MIN_TRAIN_FRAMES = 8
#: Share of the budget that active learning adds (when ``--rounds`` > 0).
AL_FRACTION = 0.4
#: Gradient steps an automatic ``--epochs`` aims at (capped to [20, 2000] epochs).
AUTO_STEPS = 3000

SETTINGS = Group("mlip distill TEACHER STRUCTURES", (
    Setting("--output", (str,), None, "run directory (every stage's outputs, report.json, "
            "report.md, student.pt); rerun the same command to resume", required=True,
            flags=("-o",), metavar="RUN_DIR"),
    Setting("--budget", (int,), 400, "teacher-labelled frames the student is trained on, in "
            "total: farthest-point selection plus the frames active learning adds",
            range=AT_LEAST_ONE, metavar="N"),
    Setting("--temperatures", (list,), [300.0, 600.0, 1200.0], "teacher MD temperatures "
            "(NVT Langevin); held-out errors are reported per temperature", unit="K",
            item=float, range=POSITIVE, length=(1, 16)),
    Setting("--md-steps", (int,), 2000, "teacher MD steps per temperature", range=AT_LEAST_ONE),
    Setting("--md-interval", (int,), 20, "MD steps between saved frames", range=AT_LEAST_ONE),
    Setting("--timestep", (float,), 1.0, "MD time step", unit="fs", range=POSITIVE),
    Setting("--rattles", (int,), 8, "rattled copies per seed structure (amplitudes 0.02 Å to "
            "--rattle-max)", range=NON_NEGATIVE),
    Setting("--rattle-max", (float,), 0.15, "largest rattle amplitude", unit="Å",
            range=POSITIVE),
    Setting("--strains", (int,), 8, "randomly strained (and slightly rattled) copies per "
            "periodic seed, for stress", range=NON_NEGATIVE),
    Setting("--max-strain", (float,), 0.04, "largest strain component", range=Range(0, 0.3,
            low_open=True)),
    Setting("--vacancies", (int,), 0, "copies of each fully periodic seed with one atom "
            "removed, run through the MD ladder like the seeds", range=NON_NEGATIVE),
    Setting("--holdout", (float,), 0.2, "last fraction of every teacher MD trajectory held "
            "out for the report (never trained on)", range=FRACTION),
    Setting("--rounds", (int,), 2, "active-learning rounds (student MD, committee "
            "disagreement, teacher labels, retraining)", range=NON_NEGATIVE),
    Setting("--committee", (int,), 2, "students trained with different seeds; 2 or more "
            "rank frames by their force disagreement, 1 by the student's error against the "
            "teacher", range=Range(1, 5)),
    Setting("--al-steps", (int,), None, "student MD steps per temperature in a round",
            nullable=True, default_text="--md-steps", range=AT_LEAST_ONE),
    Setting("--retrain", (str,), "finetune", "each round fine-tunes the previous students or "
            "trains new ones from scratch", choices=("finetune", "scratch")),
    Setting("--epochs", (int,), None, "epochs of each training", nullable=True,
            default_text=f"~{AUTO_STEPS} steps' worth, in [20, 2000]", range=AT_LEAST_ONE),
    Setting("--train-time", (float,), None, "wall-clock cap of each training", unit="s",
            nullable=True, range=POSITIVE),
    Setting("--batch-size", (int,), 4, "frames per training batch", range=AT_LEAST_ONE),
    Setting("--cutoff", (float,), 5.0, "student cutoff", unit="Å", range=POSITIVE),
    Setting("--set", (list,), [], "override a key of the student's training config "
            "(repeatable; YAML values, e.g. --set model.num_layers=3)", item=str,
            metavar="KEY=VALUE", repeat=True),
    Setting("--speed-steps", (int,), 100, "MD steps timed for the speed-up (teacher and "
            "student, same system and device)", range=AT_LEAST_ONE),
    Setting("--speed-atoms", (int,), 1000, "periodic seeds are repeated along their periodic "
            "axes to at least this many atoms for the speed measurement (0: as given)",
            range=NON_NEGATIVE),
    Setting("--seed", (int,), 0, "seed of perturbations, MD noise, selection and training",
            range=NON_NEGATIVE),
    Setting("--device", (str,), "auto", "torch device of MD and training (auto: a GPU if torch "
            "sees one)", pattern=DEVICE_PATTERN),
))


@dataclass(frozen=True)
class DistillConfig:
    """The checked settings (names as the options', without dashes; see :data:`SETTINGS`)."""

    output: str
    budget: int
    temperatures: tuple[float, ...]
    md_steps: int
    md_interval: int
    timestep: float
    rattles: int
    rattle_max: float
    strains: int
    max_strain: float
    vacancies: int
    holdout: float
    rounds: int
    committee: int
    al_steps: int | None
    retrain: str
    epochs: int | None
    train_time: float | None
    batch_size: int
    cutoff: float
    set: tuple[str, ...]
    speed_steps: int
    speed_atoms: int
    seed: int
    device: str

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> DistillConfig:
        """Check ``options`` (keys as the options, ``budget`` or ``--budget``) against
        :data:`SETTINGS`; :class:`ConfigError` naming an unknown key or a refused value."""
        given = {}
        for key, value in options.items():
            name = key if key.startswith("-") else "--" + key.replace("_", "-")
            if name not in SETTINGS.names():
                raise ConfigError(f"unknown distill setting {key!r}; allowed: "
                                  f"{', '.join(n.lstrip('-') for n in SETTINGS.names())}")
            given[name] = value
        values = SETTINGS.check(given)
        plain = {SETTINGS[name].dest: value for name, value in values.items()}
        plain["temperatures"] = tuple(plain["temperatures"])
        plain["set"] = tuple(plain["set"])
        return cls(**plain)

    def fingerprint(self) -> dict[str, Any]:
        """What a resumed run must share with the first one (everything but the run dir and
        the device)."""
        values = asdict(self)
        for key in ("output", "device"):
            values.pop(key)
        values["temperatures"] = list(values["temperatures"])
        values["set"] = list(values["set"])
        return values

    @property
    def student_md_steps(self) -> int:
        return self.md_steps if self.al_steps is None else self.al_steps

    def epochs_for(self, n_frames: int) -> int:
        """``--epochs``, or the epochs of about :data:`AUTO_STEPS` steps on ``n_frames``."""
        if self.epochs is not None:
            return self.epochs
        steps_per_epoch = max(1, math.ceil(n_frames / self.batch_size))
        return int(min(2000, max(20, math.ceil(AUTO_STEPS / steps_per_epoch))))


@dataclass(frozen=True)
class BudgetPlan:
    """How ``--budget`` is spent: ``initial`` frames by selection, ``per_round`` per round."""

    initial: int
    per_round: int
    rounds: int

    @classmethod
    def of(cls, config: DistillConfig, pool_size: int) -> BudgetPlan:
        """The plan of ``config`` for a pool of ``pool_size`` candidate frames.

        Raises:
            ConfigError: a budget too small for a first student (:data:`MIN_TRAIN_FRAMES`
                frames, and at least one frame per round) or larger than the pool.
        """
        per_round = 0
        if config.rounds:
            share = round(config.budget * AL_FRACTION / config.rounds)
            per_round = max(1, min(share, (config.budget - MIN_TRAIN_FRAMES) // config.rounds))
        initial = config.budget - per_round * config.rounds
        if initial < MIN_TRAIN_FRAMES:
            need = MIN_TRAIN_FRAMES + config.rounds
            raise ConfigError(
                f"--budget = {config.budget}: too small; the first student needs "
                f"{MIN_TRAIN_FRAMES} frames and each of the {config.rounds} round(s) at least one "
                f"(allowed >= {need}, or fewer --rounds)")
        if initial > pool_size:
            raise ConfigError(
                f"--budget = {config.budget}: the first selection needs {initial} frames but the "
                f"generation settings give a pool of {pool_size} (after the --holdout); raise "
                "--md-steps, lower --md-interval, add --rattles/--strains or lower --budget")
        return cls(initial=initial, per_round=per_round, rounds=config.rounds)

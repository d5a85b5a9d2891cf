"""Training configuration: the declared settings, YAML loading, ``--set`` overrides, checking.

A configuration is read as a nested dict of plain values (YAML, ``--set`` overrides, the
``config.yaml`` of a run directory, the config saved in ``last.ckpt``), checked and filled
with defaults once by :func:`resolve_config`, and handed to the trainer as a
:class:`TrainingConfig`: frozen dataclasses, one per section, whose fields are exactly the
declared keys (they carry no defaults of their own). Every section and key is declared once in
:data:`CONFIG` (type, range, choices, default, help; docs/settings.md is generated from it);
:data:`DEFAULTS` is its defaults nested by section. Unknown keys are a :class:`ConfigError` with
a spelling hint, and so is every value outside what is declared, except in the
``model`` section, whose keys besides ``name`` are the model constructor's keyword arguments and
are checked against its signature by :func:`mlip.models.registry.check_hparams`.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

from mlip.errors import ConfigError
from mlip.settings import (
    AT_LEAST_ONE,
    DEVICE_PATTERN,
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    UNIT_INTERVAL,
    Group,
    OnlyWith,
    Range,
    Setting,
    Sum,
    resolve_device,
)

__all__ = [
    "CONFIG", "DEFAULTS", "load_config", "apply_overrides", "resolve_config", "shipped_config",
    "TrainingConfig", "DataConfig", "ModelConfig", "LossConfig", "OptimizerConfig",
    "ScheduleConfig", "EmaConfig", "StageTwoConfig", "RunLimits", "FinetuneConfig",
]

#: Every training option, declared once: type, range, choices, default, unit and help. The
#: ``model`` section is open: its keys besides ``name`` are the model's hyperparameters.
CONFIG = Group("training config (mlip train CONFIG.yaml, --set KEY=VALUE)", (
    Setting("seed", (int,), 0, "seed of the weights, the batch order and the noise",
            range=NON_NEGATIVE),
    Setting("device", (str,), "auto", "torch device of the training (auto: a GPU if any)",
            pattern=DEVICE_PATTERN),
    Setting("dtype", (str,), "float64", "floating-point precision of the model",
            choices=("float32", "float64")),
    Setting("deterministic", (bool,), False, "deterministic torch kernels: a float32 run "
            "repeats bit for bit on the same machine and thread count (docs/training.md)"),
    Setting("data.train", (str, list), None, "training data: a path or a list of paths (ASE-"
            "readable files or mlip stores .h5; bundled:NAME for the bundled sets)",
            item=str, required=True),
    Setting("data.valid", (str, list), None, "separate validation data (else valid_fraction of "
            "train)", item=str, nullable=True),
    Setting("data.test", (str, list), None, "separate test data (else test_fraction of train)",
            item=str, nullable=True),
    Setting("data.valid_fraction", (float,), 0.1, "fraction of train held out for validation "
            "when data.valid is not given", range=FRACTION),
    Setting("data.test_fraction", (float,), 0.0, "fraction of train held out for testing when "
            "data.test is not given", range=FRACTION),
    Setting("data.split_seed", (int,), 0, "seed of the train/valid/test split",
            range=NON_NEGATIVE),
    Setting("data.split_key", (str,), None, "info key whose value keeps frames together in the "
            "valid/test fractions (null: the importer's trajectory keys, else each frame alone)",
            nullable=True),
    Setting("data.max_frames", (int,), None, "use only the first N frames of train (quick runs)",
            range=AT_LEAST_ONE, nullable=True),
    Setting("data.cutoff", (float,), 5.0, "neighbour cutoff, also the model's", unit="Å",
            range=POSITIVE),
    Setting("data.batch_size", (int,), 10, "frames per global batch", range=AT_LEAST_ONE),
    Setting("data.max_atoms_per_batch", (int,), None, "fill batches up to this many atoms "
            "instead of batch_size frames", range=AT_LEAST_ONE, nullable=True),
    Setting("data.isolated_atoms", (str,), None, "file of one-atom frames whose energies are "
            "E0", nullable=True),
    Setting("data.e0", (str, dict), "auto", "reference energies E0: auto (isolated_atoms if "
            "given, else least squares), least_squares, isolated, or {symbol: eV}",
            choices=("auto", "least_squares", "isolated"), item=float),
    Setting("data.energy_key", (str,), None, "info key of the total energy (null: the first "
            "of energy, REF_energy, dft_energy, DFT_energy, total_energy)", nullable=True),
    Setting("data.forces_key", (str,), None, "arrays key of the forces (null: the first of "
            "forces, REF_forces, dft_forces, DFT_forces)", nullable=True),
    Setting("data.stress_key", (str,), None, "info key of the stress, ASE sign, 3x3 or Voigt "
            "(null: the first of stress, REF_stress, dft_stress, DFT_stress, or -virial/V)",
            nullable=True),
    Setting("data.config_type_weights", (dict,), {}, "loss weight per config_type of the "
            "frames' info", item=float, range=NON_NEGATIVE),
    Setting("data.streaming", (bool,), False, "train on a split store's own split as it is "
            "(no valid/test/max_frames), 4096 atoms per batch if unset, whole batches per rank"),
    Setting("data.num_workers", (int,), 0, "DataLoader workers reading batches",
            range=NON_NEGATIVE),
    Setting("model.name", (str,), "facet", "model family (mlip.models registry name)"),
    Setting("loss.energy_weight", (float,), 1.0, "weight of the energy term, on (E - Ê)/N",
            unit="1/(eV/atom)²", range=NON_NEGATIVE),
    Setting("loss.forces_weight", (float,), 100.0, "weight of the force components term",
            unit="1/(eV/Å)²", range=NON_NEGATIVE),
    Setting("loss.stress_weight", (float,), 1.0, "weight of the stress components term",
            unit="1/(eV/Å³)²", range=NON_NEGATIVE),
    Setting("loss.kind", (str,), "mse", "loss function", choices=("mse", "huber")),
    Setting("loss.huber_delta", (float,), 0.01, "Huber loss threshold", range=POSITIVE),
    Setting("optimizer.name", (str,), "adam", "optimizer", choices=("adam", "adamw")),
    Setting("optimizer.lr", (float,), 0.01, "learning rate", range=POSITIVE),
    Setting("optimizer.weight_decay", (float,), 5.0e-7, "weight decay", range=NON_NEGATIVE),
    Setting("optimizer.amsgrad", (bool,), True, "AMSGrad variant of Adam"),
    Setting("optimizer.betas", (list,), [0.9, 0.999], "Adam betas", item=float, length=(2, 2),
            range=FRACTION),
    Setting("optimizer.clip_grad_norm", (float,), 10.0, "gradient norm clipping (null: off)",
            range=POSITIVE, nullable=True),
    Setting("schedule.name", (str,), "plateau", "learning-rate schedule",
            choices=("constant", "cosine", "plateau")),
    Setting("schedule.warmup_steps", (int,), 0, "linear warm-up steps", range=NON_NEGATIVE),
    Setting("schedule.min_lr_ratio", (float,), 0.01, "cosine: final lr = lr * min_lr_ratio",
            range=UNIT_INTERVAL),
    Setting("schedule.fit_to_time", (bool,), False, "cosine + train.max_time_s: size the decay "
            "to the steps that fit in the time budget (step rate measured again every epoch)"),
    Setting("schedule.plateau_factor", (float,), 0.8, "plateau: lr factor on a plateau",
            range=Range(0, 1, low_open=True, high_open=True)),
    Setting("schedule.plateau_patience", (int,), 50, "plateau: evaluations without improvement "
            "before the lr drops", range=NON_NEGATIVE),
    Setting("ema.decay", (float,), 0.99, "exponential moving average of the weights (null: off)",
            range=FRACTION, nullable=True),
    Setting("stage_two.start_fraction", (float,), None, "start the second stage (MACE's "
            "stage two / SWA) at this fraction of the budget that ends the run first (train."
            "max_time_s, max_steps or max_epochs); null: one stage (docs/training.md)",
            range=Range(0, 1, low_open=True, high_open=True), nullable=True),
    Setting("stage_two.energy_weight", (float,), 1000.0, "stage two: weight of the energy term "
            "(null: loss.energy_weight)", unit="1/(eV/atom)²", range=NON_NEGATIVE,
            nullable=True),
    Setting("stage_two.forces_weight", (float,), None, "stage two: weight of the force term "
            "(null: loss.forces_weight)", unit="1/(eV/Å)²", range=NON_NEGATIVE, nullable=True),
    Setting("stage_two.stress_weight", (float,), None, "stage two: weight of the stress term "
            "(null: loss.stress_weight)", unit="1/(eV/Å³)²", range=NON_NEGATIVE, nullable=True),
    Setting("stage_two.lr", (float,), 1.0e-3, "stage two: learning rate from the switch on "
            "(replaces the stage-one schedule, warm-up and plateau factor)", range=POSITIVE),
    Setting("stage_two.schedule", (str,), "constant", "stage two: constant lr, or cosine from "
            "stage_two.lr to stage_two.lr * schedule.min_lr_ratio at the end of the budget",
            choices=("constant", "cosine")),
    Setting("train.max_epochs", (int,), 100, "stop after this many epochs", range=AT_LEAST_ONE),
    Setting("train.max_steps", (int,), None, "stop after this many steps", range=AT_LEAST_ONE,
            nullable=True),
    Setting("train.max_time_s", (float,), None, "wall-clock budget", unit="s", range=POSITIVE,
            nullable=True),
    Setting("train.eval_every_epochs", (int,), 1, "validate every N epochs",
            range=AT_LEAST_ONE),
    Setting("train.checkpoint_every_steps", (int,), 100, "write last.ckpt every N steps",
            range=AT_LEAST_ONE),
    Setting("train.progress", (bool,), True, "tqdm progress bar"),
    Setting("train.find_unused_parameters", (bool,), False, "DDP option for models with "
            "conditional branches"),
    Setting("finetune.from", (str,), None, "a trained potential file to start from",
            nullable=True),
    Setting("finetune.refit_e0", (bool,), True, "refit E0 on the new data from the model's "
            "residuals"),
), rules=(
    Sum(("data.valid_fraction", "data.test_fraction"), Range(high=1, high_open=True)),
    OnlyWith("data.e0", "data.isolated_atoms", values=("isolated",)),
    OnlyWith("schedule.fit_to_time", "schedule.name", ("cosine",), values=(True,)),
    OnlyWith("schedule.fit_to_time", "train.max_time_s", values=(True,)),
))

#: Sections whose keys are not declared here (checked elsewhere).
OPEN_SECTIONS = ("model",)

GROUPS = (CONFIG,)


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a.b": v}`` → ``{"a": {"b": v}}``."""
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        *parents, leaf = dotted.split(".")
        node = nested
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return nested


#: Every training option with its default (nested by section), from :data:`CONFIG`.
DEFAULTS: dict[str, Any] = _nest(CONFIG.defaults())


def shipped_config(name: str) -> Path:
    """Path of a config shipped in ``mlip/configs`` (e.g. ``"facet"``)."""
    return Path(str(resources.files("mlip").joinpath("configs", f"{name}.yaml")))


def load_config(source: str | os.PathLike | Mapping[str, Any] | None) -> dict[str, Any]:
    """Read a YAML file (or take a dict) without applying defaults.

    Raises:
        ConfigError: unreadable YAML or a top level that is not a mapping.
    """
    if source is None:
        return {}
    if isinstance(source, Mapping):
        return copy.deepcopy(dict(source))
    path = Path(source)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML{_where(exc)}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not a YAML config (not UTF-8 text: byte {exc.start} is "
            f"{exc.object[exc.start:exc.start + 1]!r})"
        ) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of sections, got {type(loaded).__name__}"
        )
    return loaded


def _where(error: yaml.YAMLError) -> str:
    """Where and what of a YAML error, on one line (PyYAML's own text spans several)."""
    mark = getattr(error, "problem_mark", None)
    place = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    what = " ".join(str(text) for text in (getattr(error, "context", None),
                                           getattr(error, "problem", None)) if text)
    return place + (f": {what}" if what else "")


def apply_overrides(
    config: dict[str, Any], overrides: list[str] | Mapping[str, Any] | None
) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a copy of ``config``.

    Raises:
        ConfigError: an override without ``=``.
    """
    config = copy.deepcopy(config)
    if not overrides:
        return config
    items = overrides.items() if isinstance(overrides, Mapping) else [_split(o) for o in overrides]
    for dotted, value in items:
        node = config
        *parents, leaf = str(dotted).split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {dotted!r}: {key!r} is not a section")
        node[leaf] = value
    return config


def _split(override: str) -> tuple[str, Any]:
    if "=" not in override:
        raise ConfigError(f"override {override!r} must look like key.sub=value")
    key, text = override.split("=", 1)
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    return key.strip(), value


def resolve_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Fill defaults and check every key and value against :data:`CONFIG`.

    Text is read as a number where a number is declared (YAML 1.1 reads ``1e-3`` as text);
    the ``model`` section's keys besides ``name`` are checked later against the model.

    Raises:
        ConfigError: an unknown section or key (naming it, with a close match), a section that
            is not a mapping, a value or combination that is not allowed, or a device this
            torch cannot use (one line naming the key, the value and what is allowed).
    """
    names = CONFIG.names()
    top = [name for name in names if "." not in name]
    sections = sorted({name.split(".")[0] for name in names if "." in name})
    given: dict[str, Any] = {}
    extra: dict[str, dict[str, Any]] = {}
    for section, value in config.items():
        _check_key(str(section), top + sections, "")
        if section in top:
            given[section] = value
            continue
        if not isinstance(value, Mapping):
            raise ConfigError(f"config section {section!r} must be a mapping, got {value!r}")
        keys = [name.split(".", 1)[1] for name in names if name.startswith(f"{section}.")]
        for key, sub in value.items():
            if section in OPEN_SECTIONS and key not in keys:
                extra.setdefault(section, {})[key] = copy.deepcopy(sub)
                continue
            _check_key(str(key), keys, f"{section}.")
            given[f"{section}.{key}"] = sub
    resolved = _nest(CONFIG.check(given))
    for section, keys in extra.items():
        resolved[section].update(keys)
    resolve_device(resolved["device"], setting="device")
    return resolved


def _check_key(key: str, allowed: list[str], prefix: str) -> None:
    if key in allowed:
        return
    close = difflib.get_close_matches(key, list(allowed), n=1)
    hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
    raise ConfigError(f"unknown config key '{prefix}{key}'{hint}; valid keys: {sorted(allowed)}")


# ------------------------------------------------------------------------------ typed sections
# Field names are the declared keys (``key`` metadata where a key is not a Python name); the
# values come from resolve_config, so the defaults live in CONFIG only.


@dataclass(frozen=True)
class DataConfig:
    """The ``data`` section (see :data:`CONFIG` for each key's meaning and unit)."""

    train: str | list[str]
    valid: str | list[str] | None
    test: str | list[str] | None
    valid_fraction: float
    test_fraction: float
    split_seed: int
    split_key: str | None
    max_frames: int | None
    cutoff: float
    batch_size: int
    max_atoms_per_batch: int | None
    isolated_atoms: str | None
    e0: str | dict[str, float]
    energy_key: str | None
    forces_key: str | None
    stress_key: str | None
    config_type_weights: dict[str, float]
    streaming: bool
    num_workers: int


@dataclass(frozen=True)
class ModelConfig:
    """The ``model`` section: the registry ``name`` and the constructor's keyword arguments."""

    name: str
    hparams: dict[str, Any]

    @classmethod
    def from_dict(cls, section: Mapping[str, Any]) -> ModelConfig:
        return cls(section["name"], {k: v for k, v in section.items() if k != "name"})

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, **copy.deepcopy(self.hparams)}


def _default(dotted: str) -> Any:
    section, key = dotted.split(".")
    return DEFAULTS[section][key]


@dataclass(frozen=True)
class LossConfig:
    """Loss weights and kind (the ``loss`` section; defaults are those of :data:`CONFIG`)."""

    energy_weight: float = _default("loss.energy_weight")
    forces_weight: float = _default("loss.forces_weight")
    stress_weight: float = _default("loss.stress_weight")
    kind: str = _default("loss.kind")
    huber_delta: float = _default("loss.huber_delta")

    def weight(self, term: str) -> float:
        """The weight of ``term`` (``energy``, ``forces`` or ``stress``)."""
        return float(getattr(self, f"{term}_weight"))


@dataclass(frozen=True)
class OptimizerConfig:
    """The ``optimizer`` section."""

    name: str
    lr: float
    weight_decay: float
    amsgrad: bool
    betas: list[float]
    clip_grad_norm: float | None


@dataclass(frozen=True)
class ScheduleConfig:
    """The ``schedule`` section."""

    name: str
    warmup_steps: int
    min_lr_ratio: float
    fit_to_time: bool
    plateau_factor: float
    plateau_patience: int


@dataclass(frozen=True)
class EmaConfig:
    """The ``ema`` section."""

    decay: float | None


@dataclass(frozen=True)
class StageTwoConfig:
    """The ``stage_two`` section."""

    start_fraction: float | None
    energy_weight: float | None
    forces_weight: float | None
    stress_weight: float | None
    lr: float
    schedule: str


@dataclass(frozen=True)
class RunLimits:
    """The ``train`` section: budgets, evaluation and checkpoint cadence, progress bar."""

    max_epochs: int
    max_steps: int | None
    max_time_s: float | None
    eval_every_epochs: int
    checkpoint_every_steps: int
    progress: bool
    find_unused_parameters: bool


@dataclass(frozen=True)
class FinetuneConfig:
    """The ``finetune`` section (``source`` is the key ``from``)."""

    source: str | None = field(metadata={"key": "from"})
    refit_e0: bool


#: Section name -> its dataclass (the ``model`` section is open: :class:`ModelConfig`).
SECTIONS: dict[str, type] = {
    "data": DataConfig, "loss": LossConfig, "optimizer": OptimizerConfig,
    "schedule": ScheduleConfig, "ema": EmaConfig, "stage_two": StageTwoConfig,
    "train": RunLimits, "finetune": FinetuneConfig,
}


def _key(f: dataclasses.Field) -> str:
    return f.metadata.get("key", f.name)


def _section(cls: type, values: Mapping[str, Any]) -> Any:
    return cls(**{f.name: copy.deepcopy(values[_key(f)]) for f in dataclasses.fields(cls)})


def _section_dict(value: Any) -> dict[str, Any]:
    return {_key(f): copy.deepcopy(getattr(value, f.name)) for f in dataclasses.fields(value)}


@dataclass(frozen=True)
class TrainingConfig:
    """A checked training configuration (build it with :meth:`load`).

    Attributes:
        seed, device, dtype, deterministic: the top-level settings.
        data, model, loss, optimizer, schedule, ema, stage_two, train, finetune: the sections.
    """

    seed: int
    device: str
    dtype: str
    deterministic: bool
    data: DataConfig
    model: ModelConfig
    loss: LossConfig
    optimizer: OptimizerConfig
    schedule: ScheduleConfig
    ema: EmaConfig
    stage_two: StageTwoConfig
    train: RunLimits
    finetune: FinetuneConfig

    @classmethod
    def load(cls, config: Mapping[str, Any]) -> TrainingConfig:
        """Check ``config`` (a nested dict as written in YAML, saved in a run directory or a
        checkpoint) once with :func:`resolve_config` and type it.

        Raises:
            ConfigError: as :func:`resolve_config`.
        """
        resolved = resolve_config(config)
        return cls(
            seed=resolved["seed"], device=resolved["device"], dtype=resolved["dtype"],
            deterministic=resolved["deterministic"],
            model=ModelConfig.from_dict(resolved["model"]),
            **{name: _section(kind, resolved[name]) for name, kind in SECTIONS.items()},
        )

    def as_dict(self) -> dict[str, Any]:
        """The resolved nested dict (what ``config.yaml`` and checkpoints hold; :meth:`load`
        reads it back to an equal config)."""
        out: dict[str, Any] = {
            "seed": self.seed, "device": self.device, "dtype": self.dtype,
            "deterministic": self.deterministic,
        }
        for name in CONFIG_ORDER:
            value = getattr(self, name)
            out[name] = value.as_dict() if name == "model" else _section_dict(value)
        return out


#: Sections in the order of :data:`DEFAULTS` (the order ``config.yaml`` is written in).
CONFIG_ORDER = tuple(name for name in DEFAULTS if isinstance(DEFAULTS[name], dict))

"""Training configuration: defaults, YAML loading, ``--set`` overrides and key checking.

A configuration is a nested dict of plain values. Every section and key must appear in
:data:`DEFAULTS` (unknown keys are a :class:`ConfigError` with a spelling hint), except the
``model`` section, whose keys besides ``name`` are the model constructor's keyword arguments and
are checked against its signature by :func:`mlip.models.registry.check_hparams`.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

from mlip.errors import ConfigError

__all__ = ["DEFAULTS", "load_config", "apply_overrides", "resolve_config", "shipped_config"]

#: Every training option with its default. Units are in the key names where not base units.
DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "device": "auto",  # auto | cpu | cuda | cuda:N
    "dtype": "float64",  # float32 | float64
    "data": {
        "train": None,  # path or list of paths: ASE-readable files or mlip stores (.h5)
        "valid": None,  # optional separate validation path(s)
        "test": None,  # optional separate test path(s)
        "valid_fraction": 0.1,  # used when `valid` is not given
        "test_fraction": 0.0,  # used when `test` is not given
        "split_seed": 0,
        "max_frames": None,  # use only the first N frames of `train` (quick runs)
        "cutoff": 5.0,  # Å, also the model cutoff
        "batch_size": 10,  # frames per global batch
        "max_atoms_per_batch": None,  # if set, batches are filled up to this many atoms instead
        "isolated_atoms": None,  # file with one-atom frames: their energies are E0
        "e0": "auto",  # auto | least_squares | isolated | {symbol: eV}
        "config_type_weights": {},  # {config_type: loss weight} from the frames' info
        "streaming": False,      # stream a split store batch by batch instead of loading it
        "num_workers": 0,        # DataLoader workers when streaming
    },
    "model": {"name": "facet"},
    "loss": {
        "energy_weight": 1.0,  # on (E - Ê)/N, eV/atom
        "forces_weight": 100.0,  # on force components, eV/Å
        "stress_weight": 1.0,  # on stress components, eV/Å³
        "kind": "mse",  # mse | huber
        "huber_delta": 0.01,
    },
    "optimizer": {
        "name": "adam",  # adam | adamw
        "lr": 0.01,
        "weight_decay": 5.0e-7,
        "amsgrad": True,
        "betas": [0.9, 0.999],
        "clip_grad_norm": 10.0,  # null disables clipping
    },
    "schedule": {
        "name": "plateau",  # constant | cosine | plateau
        "warmup_steps": 0,
        "min_lr_ratio": 0.01,  # cosine: final lr = lr * min_lr_ratio
        # cosine + train.max_time_s: size the decay to the steps that fit in the time budget,
        # measured once (end of the first epoch or step 200) and kept on resume
        "fit_to_time": False,
        "plateau_factor": 0.8,
        "plateau_patience": 50,  # evaluations without improvement
    },
    "ema": {"decay": 0.99},  # null disables the exponential moving average
    "train": {
        "max_epochs": 100,
        "max_steps": None,
        "max_time_s": None,  # wall-clock budget, seconds
        "eval_every_epochs": 1,
        "checkpoint_every_steps": 100,
        "progress": True,  # tqdm progress bar
        "find_unused_parameters": False,  # DDP option for models with conditional branches
    },
    "finetune": {
        "from": None,  # a trained potential file to start from
        "refit_e0": True,  # refit E0 on the new data from the model's residuals
    },
}

_CHOICES = {
    ("dtype",): ("float32", "float64"),
    ("loss", "kind"): ("mse", "huber"),
    ("optimizer", "name"): ("adam", "adamw"),
    ("schedule", "name"): ("constant", "cosine", "plateau"),
}


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
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of sections, got {type(loaded).__name__}"
        )
    return loaded


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


_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def _numbers(value: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` as a string; turn such strings into floats (recursively)."""
    if isinstance(value, str) and _FLOAT.match(value.strip()):
        return float(value)
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return value


def resolve_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Fill defaults and check every key and choice (the model section is checked later).

    Raises:
        ConfigError: an unknown section or key (naming it, with a close match), or a bad choice.
    """
    config = _numbers(dict(config))
    resolved = copy.deepcopy(DEFAULTS)
    for section, value in config.items():
        _check_key(section, DEFAULTS, "")
        if isinstance(DEFAULTS[section], dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"config section {section!r} must be a mapping, got {value!r}")
            if section == "model":
                resolved["model"] = {"name": DEFAULTS["model"]["name"], **dict(value)}
                continue
            for key, sub in value.items():
                _check_key(key, DEFAULTS[section], f"{section}.")
                resolved[section][key] = sub
        else:
            resolved[section] = value
    for path, choices in _CHOICES.items():
        value = resolved
        for key in path:
            value = value[key]
        if value not in choices:
            raise ConfigError(f"{'.'.join(path)} = {value!r} is not one of {list(choices)}")
    if not resolved["data"]["train"]:
        raise ConfigError("data.train is required: a path (or list of paths) to training data")
    if resolved["schedule"]["fit_to_time"] and (
        resolved["schedule"]["name"] != "cosine" or resolved["train"]["max_time_s"] is None
    ):
        raise ConfigError(
            "schedule.fit_to_time needs schedule.name = cosine and a train.max_time_s budget"
        )
    return resolved


def _check_key(key: str, allowed: Mapping[str, Any], prefix: str) -> None:
    if key in allowed:
        return
    close = difflib.get_close_matches(key, list(allowed), n=1)
    hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
    raise ConfigError(f"unknown config key '{prefix}{key}'{hint}; valid keys: {sorted(allowed)}")

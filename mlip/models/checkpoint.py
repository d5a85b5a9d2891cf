"""One checkpoint format for every model: save, load, and clear errors for foreign files.

The file is written and its header checked by the shared :mod:`mlip.files`.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from mlip import __version__
from mlip.errors import CheckpointMismatchError
from mlip.files import atomic_torch_save, load_payload
from mlip.models.base import Potential
from mlip.models.registry import MODELS, build

__all__ = ["save_model", "load_model", "FORMAT", "FORMAT_VERSION"]

FORMAT = "mlip-potential"
FORMAT_VERSION = 1
UNITS = {"energy": "eV", "length": "Angstrom", "forces": "eV/Angstrom", "stress": "eV/Angstrom^3"}


def model_payload(model: Potential, **extra: Any) -> dict[str, Any]:
    """The checkpoint dictionary of ``model`` (weights moved to CPU)."""
    if not model.registry_name:
        raise CheckpointMismatchError(f"{type(model).__name__} is not a registered model")
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mlip_version": __version__,
        "model": model.registry_name,
        "hparams": model.hparams,
        "species": list(model.species),
        "cutoff": model.cutoff,
        "units": UNITS,
        "dtype": str(_model_dtype(model)).replace("torch.", ""),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra,
    }


def _model_dtype(model: Potential) -> torch.dtype:
    """The floating dtype of the model's parameters (float64 for a model without parameters)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float64)


def save_model(model: Potential, path: str | os.PathLike, **extra: Any) -> None:
    """Write ``model`` atomically as a ready-to-use potential file.

    Args:
        model: the model.
        path: destination file.
        extra: plain-Python metadata stored with it (e.g. training statistics).
    """
    atomic_torch_save(model_payload(model, **extra), path)


def read_payload(path: str | os.PathLike) -> dict[str, Any]:
    """Load and check a potential file's dictionary (see :func:`mlip.files.load_payload`).

    Raises:
        CheckpointMismatchError: as :func:`mlip.files.load_payload`, or the model is not registered.
    """
    payload = load_payload(path, FORMAT, "potential file", FORMAT_VERSION)
    if payload.get("model") not in MODELS:
        raise CheckpointMismatchError(
            f"{path}: model {payload.get('model')!r} is not registered "
            f"in this mlip (known: {sorted(MODELS)})"
        )
    return payload


def load_model(
    path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> Potential:
    """Load a potential saved with :func:`save_model`, or a pretrained model by name, in eval mode.

    Args:
        path: checkpoint file, or ``"<family>:<model>"`` for a pretrained foundation model of
            another package (``"sevennet:7net-0"``; :mod:`mlip.models.foundation`).
        device: where to put the model.
        dtype: floating dtype (default: the dtype it was saved in, or the package's own).
    """
    from mlip.models.foundation import is_foundation_name, load_foundation

    if is_foundation_name(path):
        return load_foundation(str(path), device=device, dtype=dtype)
    payload = read_payload(path)
    model = build(payload["model"], **payload["hparams"]).double()
    saved_dtype = getattr(torch, str(payload.get("dtype", "float64")), torch.float64)
    try:  # load into a float64 model (load_state_dict casts exactly), then cast once
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise CheckpointMismatchError(
            f"{path}: weights do not fit model {payload['model']!r}: {str(exc).splitlines()[0]}"
        ) from None
    return model.to(device=device, dtype=saved_dtype if dtype is None else dtype).eval()

"""One checkpoint format for every model: save, load, and clear errors for foreign files.

:func:`atomic_torch_save` and :func:`load_payload` also write and check the MD restart and
training-state files.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from mlip import __version__
from mlip.errors import CheckpointMismatchError
from mlip.models.base import Potential
from mlip.models.registry import MODELS, build

__all__ = [
    "save_model",
    "load_model",
    "FORMAT",
    "FORMAT_VERSION",
    "atomic_torch_save",
    "load_payload",
]

FORMAT = "mlip-potential"
FORMAT_VERSION = 1
UNITS = {"energy": "eV", "length": "Angstrom", "forces": "eV/Angstrom", "stress": "eV/Angstrom^3"}


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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


def load_payload(
    path: str | os.PathLike, fmt: str, kind: str, version: int | None = None
) -> dict[str, Any]:
    """Load a dictionary written with :func:`atomic_torch_save` and check its header.

    Args:
        path: the file.
        fmt: the expected ``payload["format"]``.
        kind: what the file should be, for messages (e.g. ``"MD checkpoint"``).
        version: the expected ``payload["format_version"]``; None skips the check.

    Raises:
        CheckpointMismatchError: missing, unreadable (corrupt, truncated) or foreign file, or
            an unsupported format version; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointMismatchError(f"{path}: no such {kind}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for garbage input
        raise CheckpointMismatchError(
            f"{path}: not a readable mlip {kind} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        raise CheckpointMismatchError(f"{path}: not an mlip {kind} (no '{fmt}' header)")
    if version is not None and payload.get("format_version") != version:
        raise CheckpointMismatchError(
            f"{path}: {kind} format version {payload.get('format_version')} is not supported "
            f"by mlip {__version__} (expects {version})"
        )
    return payload


def read_payload(path: str | os.PathLike) -> dict[str, Any]:
    """Load and check a potential file's dictionary (see :func:`load_payload`).

    Raises:
        CheckpointMismatchError: as :func:`load_payload`, or the model is not registered.
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
    """Load a potential saved with :func:`save_model`, in eval mode.

    Args:
        path: checkpoint file.
        device: where to put the model.
        dtype: floating dtype (default: the dtype it was saved in).
    """
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

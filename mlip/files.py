"""Crash-safe file I/O shared by every file mlip writes with torch (lowest layer).

:func:`atomic_torch_save` writes potential files, MD restarts and training states;
:func:`load_payload` reads any of them back and checks its ``format`` header and version, so a
foreign, truncated or newer file is refused with a message naming it. The formats themselves
live with their owners (:mod:`mlip.models.checkpoint`, :mod:`mlip.md.restart`,
:mod:`mlip.train.state`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from mlip import __version__
from mlip.errors import CheckpointMismatchError

__all__ = ["atomic_torch_save", "load_payload"]


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

"""The store directory's ``manifest.json``: atomic replacement, validation and the writer lock.

The manifest is the single source of truth: a shard exists for readers only once the manifest
lists it. It is always replaced atomically (write ``manifest.json.tmp``, fsync, ``os.replace``,
fsync the directory), so a crash leaves either the old or the new manifest.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
from pathlib import Path

from mlip.data.schema import FORMAT, FORMAT_VERSION, STRESS_CONVENTION, UNITS
from mlip.errors import CorruptStoreError

__all__ = [
    "MANIFEST",
    "new_manifest",
    "read_manifest",
    "write_manifest",
    "WriterLock",
    "atomic_write_bytes",
    "fsync_dir",
]

MANIFEST = "manifest.json"


def new_manifest(metadata: dict | None = None, compression: str = "zstd") -> dict:
    """An empty manifest; ``metadata`` adds level of theory, reference energies, licence, ..."""
    from mlip import __version__

    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    meta = {
        "units": dict(UNITS),
        "stress_convention": STRESS_CONVENTION,
        "energy_referencing": "total",
        "level_of_theory": None,
        "reference_energies": {},
        "license": None,
        "provenance": [],
    }
    meta.update(metadata or {})
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "writer_version": __version__,
        "created": now,
        "modified": now,
        "compression": compression,
        "metadata": meta,
        "n_frames": 0,
        "n_atoms": 0,
        "shards": [],
        "imports": {},
        "skipped": [],
        "n_skipped": 0,
        "split": None,
    }


def read_manifest(root: Path) -> dict:
    """Load and check the manifest of the store at ``root``.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        CorruptStoreError: not a store, unreadable JSON, foreign format or unknown version.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"no snapshot store at {root}")
    if root.is_file():
        kind = "an HDF5 file" if _is_hdf5(root) else "a file"
        raise CorruptStoreError(
            f"{root} is {kind}, not an mlip store (a store is a directory "
            f"with {MANIFEST} and shard-*.h5 files)"
        )
    path = root / MANIFEST
    if not path.exists():
        raise CorruptStoreError(f"{root} is not an mlip store: {MANIFEST} is missing")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptStoreError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CorruptStoreError(
            f"{path}: format is {_get(manifest, 'format')!r}, expected {FORMAT!r}"
        )
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CorruptStoreError(
            f"{path}: format_version {manifest.get('format_version')} is not "
            f"supported (this mlip reads version {FORMAT_VERSION})"
        )
    return manifest


def _get(manifest: object, key: str) -> object:
    return manifest.get(key) if isinstance(manifest, dict) else None


def write_manifest(root: Path, manifest: dict) -> None:
    """Atomically replace ``root/manifest.json`` (stamps ``modified``)."""
    manifest["modified"] = datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"
    )
    atomic_write_bytes(Path(root) / MANIFEST, json.dumps(manifest, indent=1).encode())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a fsynced temporary file and ``os.replace``."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make renames inside ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_hdf5(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(8) == b"\x89HDF\r\n\x1a\n"


class WriterLock:
    """An exclusive ``flock`` on ``root/.lock``: one writer per store (released if killed)."""

    def __init__(self, root: Path):
        self._fh = open(Path(root) / ".lock", "a")
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.close()
            raise CorruptStoreError(f"store {root} is being written by another process") from None

    def release(self) -> None:
        """Drop the lock."""
        if not self._fh.closed:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()

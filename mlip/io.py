"""Write structures to a file whose format follows its extension (one function for every verb).

``mlip relax -o``, ``mlip md -o`` and ``mlip data export -o`` all write through
:class:`FrameWriter`: ``.xyz``/``.extxyz`` → extended XYZ (labels from the attached calculator,
ids in the comment line), ``.traj`` → ASE binary trajectory, ``.h5`` → an mlip snapshot store
(labels, ``system``/``step`` ids, tags and fixed flags). Any other extension is refused with an
error naming the supported ones, so a file never holds a format its name does not promise.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Sequence

import ase.io
from ase import Atoms
from ase.io.trajectory import Trajectory

from mlip.errors import ConfigError

__all__ = ["OUTPUT_FORMATS", "output_format", "check_output", "FrameWriter", "write_frames"]

#: file extension → output format.
OUTPUT_FORMATS = {".xyz": "extxyz", ".extxyz": "extxyz", ".traj": "traj", ".h5": "h5"}


def output_format(path: str | os.PathLike, fmt: str | None = None, what: str = "output") -> str:
    """The format of an output path: ``fmt`` when given, else the one its extension names.

    ``what`` names the file in the error message ("output", "trajectory", ...).

    Raises:
        ConfigError: unknown extension (or ``fmt``), naming the supported ones.
    """
    formats = sorted(set(OUTPUT_FORMATS.values()))
    if fmt is not None:
        if fmt not in formats:
            raise ConfigError(f"{what} {path}: unknown format {fmt!r}; choose one of {formats}")
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise ConfigError(
            f"{what} {path}: unknown suffix {suffix!r}; the format follows the extension, "
            f"use one of {', '.join(OUTPUT_FORMATS)}"
        )
    return OUTPUT_FORMATS[suffix]


def check_output(path: str | os.PathLike, fmt: str | None = None, append: bool = False) -> str:
    """Refuse an output before any work is done: unknown format, or an existing ``.h5`` store
    that only a restart (``append``) may extend. Returns the format.

    Raises:
        ConfigError: naming the path and what is wrong.
    """
    path = Path(path)
    fmt = output_format(path, fmt)
    if fmt == "h5" and path.exists() and not append:
        raise ConfigError(
            f"store {path} already exists; remove it first (only a restart appends to a store)"
        )
    return fmt


class FrameWriter:
    """Append ``ase.Atoms`` frames to one output file, format by extension.

    Args:
        path: output file (``.xyz``, ``.extxyz``, ``.traj``) or store directory (``.h5``).
        append: keep what the file already holds (a restart) instead of replacing it; an
            existing ``.h5`` store is only ever appended to, never replaced.
        fmt: format name overriding the extension (``extxyz``, ``traj`` or ``h5``).
        metadata: store metadata of a new ``.h5`` store (``provenance``, ...).

    Raises:
        ConfigError: unknown extension; an existing ``.h5`` store without ``append``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        append: bool = False,
        fmt: str | None = None,
        metadata: dict | None = None,
    ) -> None:
        self.path = Path(path)
        self.format = check_output(self.path, fmt, append)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._traj: Trajectory | None = None
        self._store = None
        if self.format == "h5":
            from mlip.data.writer import StoreWriter

            self._store = StoreWriter(self.path, metadata=metadata)
        elif not append:
            self.path.unlink(missing_ok=True)

    def write(self, frames: Sequence[Atoms], ids: Sequence[dict] | None = None) -> None:
        """Append frames; ``ids[k]`` (``system``, ``step``) go to the store columns or ``info``."""
        if ids is not None:
            for atoms, extra in zip(frames, ids):
                atoms.info.update(extra)
        if not frames:
            return
        if self._store is not None:
            self._write_store(frames, ids)
        elif self.format == "extxyz":
            text = io.StringIO()
            ase.io.write(text, list(frames), format="extxyz")
            _append_whole(self.path, text.getvalue())
        else:
            if self._traj is None:
                self._traj = Trajectory(str(self.path), "a")
            for atoms in frames:
                self._traj.write(atoms)

    def _write_store(self, frames: Sequence[Atoms], ids: Sequence[dict] | None) -> None:
        from mlip.data.frames import FrameBuilder
        from mlip.data.importers.atoms import LabelKeys, atoms_to_record

        builder = FrameBuilder()
        for k, atoms in enumerate(frames):
            extra = dict(ids[k]) if ids is not None else {}
            where = f"{self.path} frame {k}"
            builder.add(**atoms_to_record(atoms, LabelKeys(), where, **extra))
        self._store.append(builder.build())

    def flush(self) -> None:
        """Make everything written so far durable (commits a store; text files are closed)."""
        if self._store is not None:
            self._store.commit()

    def close(self) -> None:
        """Flush and close the file."""
        if self._store is not None:
            self._store.close()
            self._store = None
        if self._traj is not None:
            self._traj.close()
            self._traj = None

    def __enter__(self) -> FrameWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()


def _append_whole(path: Path, text: str) -> None:
    """Append ``text`` in one write; on any error the file is cut back to its old length, so a
    reader never sees a partial frame."""
    data = text.encode("utf-8")
    with open(path, "ab") as handle:
        start = handle.tell()
        try:
            handle.write(data)
            handle.flush()
        except BaseException:
            handle.truncate(start)
            raise


def write_frames(
    path: str | os.PathLike,
    frames: Sequence[Atoms],
    fmt: str | None = None,
    metadata: dict | None = None,
) -> None:
    """Write frames to a new file (replacing a text/``.traj`` file), format by extension.

    Raises:
        ConfigError: unknown extension, or ``path`` is an existing ``.h5`` store.
    """
    with FrameWriter(path, fmt=fmt, metadata=metadata) as writer:
        writer.write(frames)

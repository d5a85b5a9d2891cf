"""Crash-safe appends to a snapshot store: :class:`StoreWriter`.

Frames go into ``shard-NNNNNN.h5.tmp`` as they arrive (memory stays bounded by one batch).
When the shard is full, or on :meth:`StoreWriter.commit`, the shard's string tables and
``n_frames`` are written, the file is closed, fsynced, hashed and renamed, its offsets sidecar
is written, and only then is the manifest replaced. A writer killed at any moment therefore
leaves a store whose manifest lists exactly the committed shards; the next writer deletes the
leftover ``.tmp`` files and unlisted shards, and importers resume from the per-source progress
that the manifest records with each commit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import h5py
import numpy as np

from mlip.data.frames import FrameBatch
from mlip.data.manifest import (
    WriterLock,
    atomic_write_bytes,
    fsync_dir,
    new_manifest,
    read_manifest,
    write_manifest,
)
from mlip.data.schema import (
    ATOM_COLUMNS,
    DEFAULT_COMPRESSION,
    FORMAT,
    FORMAT_VERSION,
    FRAME_COLUMNS,
    LABEL_BITS,
    TABLES,
    compression_options,
)
from mlip.errors import ConfigError

__all__ = ["StoreWriter", "shard_name", "offsets_name"]

log = logging.getLogger(__name__)

#: Metadata keys that must agree when appending to an existing store.
_MUST_MATCH = ("units", "stress_convention", "energy_referencing")
ATOM_CHUNK = 1 << 13  # 8 Ki atoms (192 KiB of float64 xyz): fast random and block reads
FRAME_CHUNK = 1 << 11
MAX_SKIP_LOG = 1000


def shard_name(number: int) -> str:
    return f"shard-{number:06d}.h5"


def offsets_name(number: int) -> str:
    return f"shard-{number:06d}.offsets.npy"


class StoreWriter:
    """Append frames to a store directory, creating it if needed.

    Args:
        path: store directory (conventionally named ``*.h5``).
        metadata: store metadata (``level_of_theory``, ``reference_energies`` {symbol: eV},
            ``energy_referencing``, ``license``, ``provenance``, ...). When appending, ``units``,
            ``stress_convention`` and ``energy_referencing`` must match the store's.
        compression: filter of new shards (see :data:`mlip.data.schema.COMPRESSIONS`).
        shard_frames: frames per shard before it is committed and a new one started.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        metadata: dict | None = None,
        compression: str = DEFAULT_COMPRESSION,
        shard_frames: int = 1 << 20,
    ):
        self.root = Path(path)
        if shard_frames < 1:
            raise ConfigError(f"shard_frames must be positive, got {shard_frames}")
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = WriterLock(self.root)
        self.manifest = self._open_manifest(metadata, compression)
        self._filters = compression_options(self.manifest["compression"])
        self.shard_frames = shard_frames
        self._remove_leftovers()
        self._file: h5py.File | None = None
        self._tables: dict[str, dict[str, int]] = {}
        self._pending_progress: dict[str, dict] = {}
        self._pending_skips: list[dict] = []
        self._writing = False

    # ------------------------------------------------------------------------------ setup
    def _open_manifest(self, metadata: dict | None, compression: str) -> dict:
        if not (self.root / "manifest.json").exists():
            manifest = new_manifest(metadata, compression)
            write_manifest(self.root, manifest)
            return manifest
        manifest = read_manifest(self.root)
        for key, value in (metadata or {}).items():
            old = manifest["metadata"].get(key)
            if key in _MUST_MATCH and value != old:
                raise ConfigError(
                    f"cannot append to {self.root}: metadata {key!r} is {value!r} "
                    f"but the store has {old!r}"
                )
            if key not in _MUST_MATCH and old in (None, {}, []):
                manifest["metadata"][key] = value
        return manifest

    def _remove_leftovers(self) -> None:
        """Delete temporary files and shards that a killed writer left unlisted."""
        listed = {s["file"] for s in self.manifest["shards"]}
        listed |= {s["file"].replace(".h5", ".offsets.npy") for s in self.manifest["shards"]}
        for p in self.root.iterdir():
            stale_shard = p.name.startswith("shard-") and p.name not in listed
            if p.name.endswith(".tmp") or stale_shard:
                log.info("removing leftover %s from an interrupted write", p)
                p.unlink()

    # ------------------------------------------------------------------------------ writing
    def append(self, batch: FrameBatch, progress: dict[str, dict] | None = None) -> None:
        """Write ``batch``; record ``progress`` (per source key) with the next commit.

        Args:
            batch: frames to write (already validated).
            progress: ``{source_key: {"frames_read": int, "complete": bool, ...}}`` describing
                how far each source has been consumed once ``batch`` is stored.
        """
        start = 0
        while start < len(batch):
            if self._file is None:
                self._start_shard()
            room = self.shard_frames - int(self._file.attrs["n_frames"])
            piece = (
                batch
                if start == 0 and room >= len(batch)
                else batch.select(np.arange(start, min(len(batch), start + room)))
            )
            self._write(piece)
            start += len(piece)
            if int(self._file.attrs["n_frames"]) >= self.shard_frames and start < len(batch):
                self.commit()
        self._pending_progress.update(progress or {})
        if self._file is not None and int(self._file.attrs["n_frames"]) >= self.shard_frames:
            self.commit()

    def record_skip(self, source: str, frame: int, reason: str) -> None:
        """Log a rejected input frame; it is listed in the manifest with the next commit."""
        self._pending_skips.append({"source": source, "frame": frame, "reason": reason})

    def set_progress(self, progress: dict[str, dict]) -> None:
        """Progress to record with the next commit (e.g. a source finished with no new frame)."""
        self._pending_progress.update(progress)

    def _start_shard(self) -> None:
        number = max([int(s["file"][6:12]) for s in self.manifest["shards"]], default=-1) + 1
        self._number = number
        f = h5py.File(self.root / (shard_name(number) + ".tmp"), "w", libver="latest")
        f.attrs.update(
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "n_frames": 0,
                "n_atoms": 0,
                "complete": False,
            }
        )
        f.attrs["metadata"] = json.dumps(self.manifest["metadata"])
        f.create_dataset(
            "frames/atom_offset",
            data=np.zeros(1, np.int64),
            maxshape=(None,),
            chunks=(FRAME_CHUNK,),
            **self._filters,
        )
        self._file, self._tables = f, {name: {} for name in TABLES}
        self._elements, self._labels = np.zeros(256, dtype=np.int64), {}

    def _dataset(self, group: str, name: str, length: int) -> h5py.Dataset:
        """The shard's dataset ``group/name``, created (filled as absent) when first needed."""
        f = self._file
        key = f"{group}/{name}"
        if key not in f:
            spec = (ATOM_COLUMNS if group == "atoms" else FRAME_COLUMNS)[name]
            chunk = ATOM_CHUNK if group == "atoms" else FRAME_CHUNK
            f.create_dataset(
                key,
                shape=(length, *spec.shape),
                maxshape=(None, *spec.shape),
                dtype=spec.dtype,
                chunks=(chunk, *spec.shape),
                fillvalue=spec.fill,
                **self._filters,
            )
        return f[key]

    def _write(self, batch: FrameBatch) -> None:
        f = self._file
        self._writing = True
        n_frames, n_atoms = int(f.attrs["n_frames"]), int(f.attrs["n_atoms"])
        add_atoms = int(batch.n_atoms.sum())
        columns = [("atoms", k, v, n_atoms) for k, v in batch.atoms.items()]
        columns += [("frames", k, self._encode(k, v), n_frames) for k, v in batch.frames.items()]
        required = [("atoms", k, n_atoms) for k, c in ATOM_COLUMNS.items() if not c.optional]
        required += [("frames", k, n_frames) for k, c in FRAME_COLUMNS.items() if not c.optional]
        for group, name, length in required:
            self._dataset(group, name, length)
        for group, name, values, at in columns:
            ds = self._dataset(group, name, at)
            ds.resize(at + len(values), axis=0)
            ds[at:] = values
        for name in set(f["atoms"]) - set(batch.atoms):
            f["atoms"][name].resize(n_atoms + add_atoms, axis=0)
        for name in set(f["frames"]) - set(batch.frames) - {"atom_offset"}:
            f["frames"][name].resize(n_frames + len(batch), axis=0)
        offsets = f["frames/atom_offset"]
        offsets.resize(n_frames + len(batch) + 1, axis=0)
        offsets[n_frames + 1 :] = n_atoms + np.cumsum(batch.n_atoms)
        f.attrs["n_frames"], f.attrs["n_atoms"] = n_frames + len(batch), n_atoms + add_atoms
        self._count(batch)
        self._writing = False

    def _count(self, batch: FrameBatch) -> None:
        """Accumulate the shard's element and label counts (listed in the manifest)."""
        self._elements += np.bincount(batch.atoms["numbers"], minlength=len(self._elements))
        mask = batch.frames["label_mask"]
        for name, bit in LABEL_BITS.items():
            self._labels[name] = self._labels.get(name, 0) + int(((mask & bit) > 0).sum())

    def _encode(self, name: str, values: np.ndarray) -> np.ndarray:
        """Map a string column to indices into the shard's table; other columns unchanged."""
        if name not in self._tables:
            return values
        table = self._tables[name]
        uniques, inverse = np.unique(values.astype(str), return_inverse=True)
        codes = np.array([table.setdefault(u, len(table)) for u in uniques.tolist()], np.int64)
        return codes[inverse.reshape(-1)]

    # ------------------------------------------------------------------------------ commit
    def commit(self) -> None:
        """Finalise the open shard (if any) and publish it and the pending progress atomically."""
        if self._file is not None:
            self._finish_shard()
        if self._pending_progress or self._pending_skips:
            self._publish(None)

    def _finish_shard(self) -> None:
        f, number = self._file, self._number
        for name, table in self._tables.items():
            names = sorted(table, key=table.get)
            f.create_dataset(
                f"tables/{name}", data=np.array(names, dtype=object), dtype=h5py.string_dtype()
            )
        f.attrs["complete"] = True
        n_frames, n_atoms = int(f.attrs["n_frames"]), int(f.attrs["n_atoms"])
        offsets = f["frames/atom_offset"][:]
        raw_bytes = sum(
            ds.size * ds.dtype.itemsize for g in ("atoms", "frames") for ds in f[g].values()
        )
        f.flush()
        f.close()
        self._file = None
        tmp = self.root / (shard_name(number) + ".tmp")
        digest = _sha256(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, self.root / shard_name(number))
        fsync_dir(self.root)
        buf = _npy_bytes(offsets)
        atomic_write_bytes(self.root / offsets_name(number), buf)
        entry = {
            "file": shard_name(number),
            "n_frames": n_frames,
            "n_atoms": n_atoms,
            "bytes": (self.root / shard_name(number)).stat().st_size,
            "sha256": digest,
            "raw_bytes": raw_bytes,
            "labels": self._labels,
            "elements": {str(z): int(c) for z, c in enumerate(self._elements) if c},
        }
        self._publish(entry)

    def _publish(self, shard: dict | None) -> None:
        m = self.manifest
        if shard is not None:
            m["shards"].append(shard)
            m["n_frames"] += shard["n_frames"]
            m["n_atoms"] += shard["n_atoms"]
            m["split"] = None  # a split no longer covers every frame
        for key, value in self._pending_progress.items():
            m["imports"].setdefault(key, {}).update(value)
        m["n_skipped"] += len(self._pending_skips)
        m["skipped"] = (m["skipped"] + self._pending_skips)[:MAX_SKIP_LOG]
        write_manifest(self.root, m)
        self._pending_progress, self._pending_skips = {}, []

    def close(self) -> None:
        """Commit what is pending and release the writer lock."""
        try:
            self.commit()
        finally:
            self._lock.release()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif self._writing:  # died inside a write: drop the partial shard, keep committed ones
            self._file.close()
            self._lock.release()
        else:  # e.g. a bad input frame with on_error="raise": keep every frame appended so far
            self.close()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()

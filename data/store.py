"""Read a snapshot store: :class:`SnapshotStore` (random access, chunked iteration, export).

Readers see the shards listed in the manifest when they opened it (call :meth:`refresh` to see
shards committed later); shards are immutable, so any number of readers may run while one writer
appends. HDF5 handles are opened lazily and dropped when the object is pickled, so a store can be
handed to DataLoader workers, each of which opens its own handles.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterator, Sequence

import h5py
import hdf5plugin  # noqa: F401  (registers the Blosc filters used by default)
import numpy as np
from ase import Atoms

from mlip.data.frames import FrameBatch
from mlip.data.manifest import read_manifest
from mlip.data.schema import SPLIT_CODES, TABLES
from mlip.data.writer import offsets_name
from mlip.errors import ConfigError, CorruptStoreError

__all__ = ["SnapshotStore"]

CHUNK_CACHE_BYTES = 16 << 20  # per open dataset; bounds reader memory


class SnapshotStore:
    """A read-only view of an ``mlip-store`` directory.

    Args:
        path: the store directory.

    Raises:
        CorruptStoreError: not a store, a missing or truncated shard, an unsupported version.
    """

    def __init__(self, path: str | os.PathLike):
        self.root = Path(path)
        self._handles: dict[int, h5py.File] = {}
        self._offsets: dict[int, np.ndarray] = {}
        self._tables: dict[int, dict[str, np.ndarray]] = {}
        self._open_datasets: dict[int, dict] = {}
        self.refresh()

    def refresh(self) -> None:
        """Re-read the manifest (sees shards committed since opening)."""
        self.manifest = read_manifest(self.root)
        for k, shard in enumerate(self.manifest["shards"]):
            path = self.root / shard["file"]
            if not path.exists():
                raise CorruptStoreError(
                    f"{self.root}: shard {shard['file']} listed in the manifest is missing"
                )
            size = path.stat().st_size
            if size != shard["bytes"]:
                raise CorruptStoreError(
                    f"{path} is truncated or modified: {size} bytes, the manifest "
                    f"says {shard['bytes']}"
                )
        counts = [s["n_frames"] for s in self.manifest["shards"]]
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    # ------------------------------------------------------------------------------ sizes
    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def n_atoms(self) -> int:
        """Total atoms over all frames."""
        return int(self.manifest["n_atoms"])

    @property
    def metadata(self) -> dict:
        """Units, level of theory, reference energies, provenance, ... (plain JSON types)."""
        return self.manifest["metadata"]

    @property
    def n_shards(self) -> int:
        return len(self.manifest["shards"])

    def shard_range(self, shard: int) -> tuple[int, int]:
        """Global ``[start, stop)`` frame range of a shard."""
        return int(self._starts[shard]), int(self._starts[shard + 1])

    # ------------------------------------------------------------------------------ handles
    def _file(self, shard: int) -> h5py.File:
        f = self._handles.get(shard)
        if f is None:
            path = self.root / self.manifest["shards"][shard]["file"]
            try:
                f = h5py.File(path, "r", rdcc_nbytes=CHUNK_CACHE_BYTES)
            except OSError as exc:
                raise CorruptStoreError(f"cannot open shard {path}: {exc}") from None
            if int(f.attrs.get("n_frames", -1)) != self.manifest["shards"][shard]["n_frames"]:
                raise CorruptStoreError(
                    f"{path}: n_frames {f.attrs.get('n_frames')} does not match "
                    f"the manifest ({self.manifest['shards'][shard]['n_frames']})"
                )
            self._handles[shard] = f
        return f

    def offsets(self, shard: int) -> np.ndarray:
        """(n_frames_in_shard + 1,) int64 atom offsets of a shard (memory-mapped sidecar)."""
        off = self._offsets.get(shard)
        if off is None:
            number = int(self.manifest["shards"][shard]["file"][6:12])
            try:
                off = np.load(self.root / offsets_name(number), mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise CorruptStoreError(f"{self.root / offsets_name(number)}: {exc}") from None
            self._offsets[shard] = off
        return off

    def _datasets(self, shard: int) -> dict[str, dict[str, h5py.Dataset]]:
        """Open datasets of a shard, kept so that their chunk caches survive between reads."""
        cached = self._open_datasets.get(shard)
        if cached is None:
            f = self._file(shard)
            cached = {
                "atoms": dict(f["atoms"].items()),
                "frames": {k: v for k, v in f["frames"].items() if k != "atom_offset"},
            }
            self._open_datasets[shard] = cached
        return cached

    def _table(self, shard: int, name: str) -> np.ndarray:
        tables = self._tables.setdefault(shard, {})
        if name not in tables:
            raw = self._file(shard)[f"tables/{name}"][()]
            tables[name] = np.array([s.decode() for s in raw] + [""], dtype=object)
        return tables[name]

    def close(self) -> None:
        """Close every open HDF5 handle (they reopen on demand)."""
        for f in self._handles.values():
            f.close()
        self._handles, self._offsets, self._tables, self._open_datasets = {}, {}, {}, {}

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.update(_handles={}, _offsets={}, _tables={}, _open_datasets={})
        return state

    # ------------------------------------------------------------------------------ reading
    def locate(self, index: int) -> tuple[int, int]:
        """(shard, local frame) of a global frame index (negative indices count from the end)."""
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"frame {index} out of range for a store of {n} frames")
        index %= n
        shard = int(np.searchsorted(self._starts, index, side="right") - 1)
        return shard, index - int(self._starts[shard])

    def read_range(self, start: int, stop: int) -> FrameBatch:
        """Frames ``[start, stop)`` (global indices) as one batch."""
        parts = []
        while start < stop:
            shard, local = self.locate(start)
            take = min(stop - start, int(self._starts[shard + 1]) - start)
            parts.append(self._read_shard(shard, local, local + take))
            start += take
        if not parts:
            raise IndexError("empty frame range")
        return parts[0] if len(parts) == 1 else FrameBatch.concat(parts)

    def _read_shard(
        self, shard: int, a: int, b: int, columns: Sequence[str] | None = None
    ) -> FrameBatch:
        """Frames ``[a, b)`` of one shard (``columns`` limits what is read)."""
        datasets = self._datasets(shard)
        off = self.offsets(shard)
        lo, hi = int(off[a]), int(off[b])
        keep = (lambda n: True) if columns is None else (lambda n: n in columns)
        atoms = {k: ds[lo:hi] for k, ds in datasets["atoms"].items() if keep(k)}
        frames = {k: ds[a:b] for k, ds in datasets["frames"].items() if keep(k)}
        for name in TABLES:
            if name in frames:
                frames[name] = self._table(shard, name)[frames[name]]
        return FrameBatch(
            n_atoms=np.diff(off[a : b + 1]).astype(np.int64), atoms=atoms, frames=frames
        )

    def read(
        self, indices: Sequence[int] | np.ndarray, columns: Sequence[str] | None = None
    ) -> FrameBatch:
        """Frames at arbitrary global ``indices`` (order kept, repeats allowed).

        Contiguous runs are read with one slice per column, so sorted or blocked indices are fast.
        """
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(indices) == 0:
            raise IndexError("no frame indices given")
        if len(indices) == 1:
            shard, local = self.locate(int(indices[0]))
            return self._read_shard(shard, local, local + 1, columns)
        n = len(self)
        if indices.min() < -n or indices.max() >= n:
            raise IndexError(f"frame indices out of range for a store of {n} frames")
        indices = indices % n
        order = np.unique(indices)
        shard_of = np.searchsorted(self._starts, order, side="right")
        breaks = np.nonzero((np.diff(order) != 1) | (np.diff(shard_of) != 0))[0] + 1
        parts = []
        for run in np.split(order, breaks):
            shard, local = self.locate(int(run[0]))
            parts.append(self._read_shard(shard, local, local + len(run), columns))
        batch = parts[0] if len(parts) == 1 else FrameBatch.concat(parts)
        if len(order) == len(indices) and (order == indices).all():
            return batch
        return batch.select(np.searchsorted(order, indices))

    def __getitem__(self, index: int) -> Atoms:
        """Frame ``index`` as ``ase.Atoms`` with a single-point calculator holding its labels."""
        shard, local = self.locate(int(index))
        return self._read_shard(shard, local, local + 1).to_ase()[0]

    def iter_batches(
        self,
        batch_frames: int = 65536,
        indices: np.ndarray | None = None,
        columns: Sequence[str] | None = None,
    ) -> Iterator[FrameBatch]:
        """Stream the store (or the sorted ``indices``) in batches that never cross a shard."""
        if indices is None:
            for shard in range(self.n_shards):
                n = self.manifest["shards"][shard]["n_frames"]
                for a in range(0, n, batch_frames):
                    yield self._read_shard(shard, a, min(n, a + batch_frames), columns)
            return
        for a in range(0, len(indices), batch_frames):
            yield self.read(indices[a : a + batch_frames], columns)

    def to_ase(self, indices: Sequence[int] | None = None) -> list[Atoms]:
        """Frames as ``ase.Atoms`` (all frames when ``indices`` is None; mind the memory)."""
        if indices is None:
            return [a for b in self.iter_batches() for a in b.to_ase()]
        return self.read(indices).to_ase()

    # ------------------------------------------------------------------------------ columns
    def frame_column(self, name: str, shard: int) -> np.ndarray:
        """A whole per-frame column of one shard (string columns decoded)."""
        f = self._file(shard)
        if f"frames/{name}" not in f:
            return None
        values = f[f"frames/{name}"][()]
        return self._table(shard, name)[values] if name in TABLES else values

    def n_atoms_of(self, indices: np.ndarray) -> np.ndarray:
        """(len(indices),) int64 atom counts of global frames (from the offsets sidecars)."""
        indices = np.asarray(indices, dtype=np.int64)
        shards = np.searchsorted(self._starts, indices, side="right") - 1
        out = np.empty(len(indices), dtype=np.int64)
        for shard in np.unique(shards):
            sel = shards == shard
            local = indices[sel] - self._starts[shard]
            off = self.offsets(int(shard))
            out[sel] = off[local + 1] - off[local]
        return out

    def trajectory(self, system: str) -> np.ndarray:
        """Global indices of the frames of ``system`` (trajectory/molecule id), ordered by step."""
        found, steps = [], []
        for shard in range(self.n_shards):
            table = self._table(shard, "system")
            hits = np.nonzero(table[:-1] == system)[0]
            if len(hits) == 0:
                continue
            codes = self._file(shard)["frames/system"][()]
            local = np.nonzero(np.isin(codes, hits))[0]
            found.append(local + self._starts[shard])
            steps.append(self._file(shard)["frames/step"][()][local])
        if not found:
            raise KeyError(f"no frames of system {system!r} in {self.root}")
        found, steps = np.concatenate(found), np.concatenate(steps)
        return found[np.lexsort((found, steps))]

    # ------------------------------------------------------------------------------ splits
    def split_codes(self) -> np.ndarray | None:
        """(n_frames,) uint8 split code per frame (see ``SPLIT_CODES``), or None if unsplit."""
        split = self.manifest.get("split")
        if not split:
            return None
        codes = np.load(self.root / split["file"], mmap_mode="r")
        if len(codes) != len(self):
            raise CorruptStoreError(
                f"{self.root / split['file']} has {len(codes)} entries for "
                f"{len(self)} frames; re-run `mlip data split`"
            )
        return codes

    def split_indices(self, split: str | None) -> np.ndarray:
        """Sorted global indices of the frames in ``split`` (all frames when None)."""
        if split is None:
            return np.arange(len(self), dtype=np.int64)
        self._check_split(split)
        codes = self.split_codes()
        return np.nonzero(np.asarray(codes) == SPLIT_CODES[split])[0].astype(np.int64)

    def split_size(self, split: str | None) -> int:
        """Frames in ``split`` (all frames when None), from the manifest."""
        if split is None:
            return len(self)
        self._check_split(split)
        return int(self.manifest["split"]["counts"][split])

    def _check_split(self, split: str) -> None:
        if split not in SPLIT_CODES or split == "none":
            raise ConfigError(f"unknown split {split!r}; use one of train, val, test")
        if self.split_codes() is None:
            raise ConfigError(f"{self.root} has no split; run `mlip data split {self.root}` first")

    # ------------------------------------------------------------------------------ checks
    def verify(self) -> None:
        """Check every shard against its SHA-256 in the manifest (reads everything).

        Raises:
            CorruptStoreError: naming the first shard whose checksum differs.
        """
        for shard in self.manifest["shards"]:
            h = hashlib.sha256()
            with open(self.root / shard["file"], "rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    h.update(block)
            if h.hexdigest() != shard["sha256"]:
                raise CorruptStoreError(f"{self.root / shard['file']}: checksum mismatch")

    def __repr__(self) -> str:
        return f"SnapshotStore({str(self.root)!r}, frames={len(self)}, shards={self.n_shards})"

"""Train/val/test splits by group (trajectory, source file, config_type) or by frame, stored
beside the shards.

Consecutive frames of a relaxation or MD trajectory are near-duplicates, so the default split
assigns whole groups: the sorted unique group ids are permuted with ``seed`` and handed out in
that order until each split holds its fraction of the *frames*. What a group is (``by``):

* ``trajectory`` (alias ``system``): the frame's system id, from the importer (``.traj`` file,
  VASP run, OC20 system) or from ``atoms.info`` (``system_id``, ``system``, ``trajectory``, ...,
  or the key given to ``mlip data import --system-key``). An extxyz frame without one is its own
  group, so correlated frames of one MD run could land in different splits: a warning says how
  many frames carry no id.
* ``source``: the imported file (one MD run per file);
* ``config_type``: the frames' ``info["config_type"]`` (frames without one form one group);
* ``frame``: no grouping.

The result is ``split.npy`` (uint8 per frame, codes in :data:`mlip.data.schema.SPLIT_CODES`)
plus a manifest entry (``by``, ``n_groups``, ``frames_without_group_id``); a new import
invalidates it.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from mlip.data.manifest import WriterLock, atomic_write_bytes, read_manifest, write_manifest
from mlip.data.schema import SPLIT_CODES
from mlip.data.store import SnapshotStore
from mlip.errors import ConfigError, CorruptStoreError

__all__ = ["make_split", "write_split", "string_column", "frames_without_system_id",
           "check_split_leakage", "SPLIT_NAMES", "GROUPINGS"]

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")
SPLIT_FILE = "split.npy"

#: ``by`` value → the per-frame string column whose values are the groups (None: by frame).
GROUPINGS = {
    "trajectory": "system",
    "system": "system",
    "source": "source",
    "config_type": "config_type",
    "frame": None,
}


def make_split(
    path: str | os.PathLike,
    fractions: Sequence[float] = (0.9, 0.05, 0.05),
    by: str = "trajectory",
    seed: int = 0,
) -> dict[str, int]:
    """Assign every frame of the store to train/val/test and record it.

    Args:
        path: store directory.
        fractions: target fractions of frames for (train, val[, test]); must sum to 1.
        by: what a split keeps together, one of :data:`GROUPINGS`: ``"trajectory"`` (alias
            ``"system"``), ``"source"`` (input file), ``"config_type"`` or ``"frame"``.
        seed: permutation seed.

    Returns:
        Frames per split name.

    Raises:
        ConfigError: bad fractions or ``by``, or an empty store.
    """
    fractions = [float(f) for f in fractions]
    if not 2 <= len(fractions) <= 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ConfigError(
            f"fractions must be 2 or 3 non-negative numbers summing to 1, got {fractions}"
        )
    if by not in GROUPINGS:
        raise ConfigError(f"--by must be one of {', '.join(GROUPINGS)}, got {by!r}")
    store = SnapshotStore(path)
    if len(store) == 0:
        raise ConfigError(f"{store.root} is empty; nothing to split")
    rng = np.random.default_rng(seed)
    without_id = frames_without_system_id(store) if GROUPINGS[by] == "system" else 0
    if GROUPINGS[by] is None:
        keys = rng.permutation(len(store))
        sizes = np.ones(len(store), dtype=np.int64)
        codes = _assign(sizes, fractions)[np.argsort(keys)]
        n_groups = len(store)
    else:
        groups = _group_codes(store, GROUPINGS[by])
        counts = np.bincount(groups)
        order = rng.permutation(len(counts))
        per_group = np.empty(len(counts), dtype=np.uint8)
        per_group[order] = _assign(counts[order], fractions)
        codes = per_group[groups]
        n_groups = len(counts)
    if without_id:
        log.warning(
            "%d of %d frames of %s carry no trajectory id (each is its own group), so correlated "
            "frames of one MD run may land in different splits; re-import with --system-key KEY "
            "(the atoms.info key naming the run) or split --by source (one run per file)",
            without_id, len(store), store.root,
        )
    counts = {name: int((codes == SPLIT_CODES[name]).sum()) for name in SPLIT_NAMES}
    entry = {"by": by, "fractions": fractions, "seed": seed, "counts": counts,
             "n_frames": len(store), "n_groups": int(n_groups),
             "frames_without_group_id": int(without_id)}
    _save(Path(path), codes, entry)
    return counts


def string_column(store: SnapshotStore, name: str) -> np.ndarray:
    """(n_frames,) str array of a string column (e.g. ``system``) over every shard ("" where
    absent)."""
    parts = []
    for shard in range(store.n_shards):
        a, b = store.shard_range(shard)
        values = store.frame_column(name, shard)
        parts.append(np.full(b - a, "", dtype=object) if values is None else values)
    return np.concatenate(parts).astype(str) if parts else np.zeros(0, dtype=str)


def _group_codes(store: SnapshotStore, column: str) -> np.ndarray:
    """(n_frames,) int64 index of each frame's group among the sorted unique values of
    ``column``."""
    _, inverse = np.unique(string_column(store, column), return_inverse=True)
    return inverse.reshape(-1).astype(np.int64)


def frames_without_system_id(store: SnapshotStore, indices: np.ndarray | None = None) -> int:
    """Frames (all, or those at global ``indices``) whose system id is empty or the importer's
    ``<file name>:<frame>`` stand-in (no id of their own: each is its own group)."""
    systems, sources = string_column(store, "system"), string_column(store, "source")
    frames = np.concatenate(
        [store.frame_column("source_frame", shard) for shard in range(store.n_shards)]
    )
    standin = np.array(
        [f"{Path(src).name}:{k}" for src, k in zip(sources.tolist(), frames.tolist())]
    )
    alone = (systems == standin) | (systems == "")
    return int(alone.sum() if indices is None else alone[indices].sum())


def write_split(path: str | os.PathLike, codes: np.ndarray, by: str) -> dict[str, int]:
    """Record ``codes`` (one :data:`SPLIT_CODES` value per frame, computed by the caller) as the
    store's split; returns frames per split name."""
    codes = np.asarray(codes, dtype=np.uint8)
    counts = {name: int((codes == SPLIT_CODES[name]).sum()) for name in SPLIT_NAMES}
    entry = {"by": by, "counts": counts, "n_frames": len(codes)}
    _save(Path(path), codes, entry)
    return counts


def _assign(sizes: np.ndarray, fractions: list[float]) -> np.ndarray:
    """Split codes for items in order: each goes to the split its frame midpoint falls in."""
    total = float(sizes.sum())
    midpoint = (np.cumsum(sizes) - 0.5 * sizes) / total
    bounds = np.cumsum(fractions)[:-1]
    return (np.searchsorted(bounds, midpoint, side="right") + 1).astype(np.uint8)


def _save(root: Path, codes: np.ndarray, entry: dict) -> None:
    lock = WriterLock(root)
    try:
        manifest = read_manifest(root)
        if manifest["n_frames"] != entry["n_frames"]:
            raise CorruptStoreError(f"{root} changed while splitting; run the split again")
        buf = io.BytesIO()
        np.save(buf, codes.astype(np.uint8))
        atomic_write_bytes(root / SPLIT_FILE, buf.getvalue())
        manifest["split"] = {"file": SPLIT_FILE, **entry}
        write_manifest(root, manifest)
    finally:
        lock.release()


def check_split_leakage(store: SnapshotStore) -> None:
    """Raise if any system id has frames in two different splits.

    Raises:
        ConfigError: the store has no split.
        CorruptStoreError: naming the first leaking system.
    """
    codes = store.split_codes()
    if codes is None:
        raise ConfigError(f"{store.root} has no split")
    seen: dict[str, int] = {}
    for shard in range(store.n_shards):
        a, b = store.shard_range(shard)
        names = store.frame_column("system", shard)
        for name, code in set(zip(names.tolist(), np.asarray(codes[a:b]).tolist())):
            if seen.setdefault(name, code) != code:
                raise CorruptStoreError(f"system {name!r} has frames in more than one split")

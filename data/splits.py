"""Train/val/test splits by trajectory (system id) or by frame, stored beside the shards.

Consecutive frames of a relaxation or MD trajectory are near-duplicates, so the default split
assigns whole systems: the sorted unique system ids are permuted with ``seed`` and handed out in
that order until each split holds its fraction of the *frames*. The result is ``split.npy``
(uint8 per frame, codes in :data:`mlip.data.schema.SPLIT_CODES`) plus a manifest entry; a new
import invalidates it.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from mlip.data.manifest import WriterLock, atomic_write_bytes, read_manifest, write_manifest
from mlip.data.schema import SPLIT_CODES
from mlip.data.store import SnapshotStore
from mlip.errors import ConfigError, CorruptStoreError

__all__ = ["make_split", "check_split_leakage", "SPLIT_NAMES"]

SPLIT_NAMES = ("train", "val", "test")
SPLIT_FILE = "split.npy"


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
        by: ``"trajectory"`` (alias ``"system"``: whole systems, no leakage) or ``"frame"``.
        seed: permutation seed.

    Returns:
        Frames per split name.
    """
    fractions = [float(f) for f in fractions]
    if not 2 <= len(fractions) <= 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ConfigError(
            f"fractions must be 2 or 3 non-negative numbers summing to 1, got {fractions}"
        )
    if by not in ("trajectory", "system", "frame"):
        raise ConfigError(f"--by must be trajectory, system or frame, got {by!r}")
    store = SnapshotStore(path)
    rng = np.random.default_rng(seed)
    if by == "frame":
        keys = rng.permutation(len(store))
        sizes = np.ones(len(store), dtype=np.int64)
        codes = _assign(sizes, fractions)[np.argsort(keys)]
    else:
        systems = _system_codes(store)
        counts = np.bincount(systems)
        order = rng.permutation(len(counts))
        per_system = np.empty(len(counts), dtype=np.uint8)
        per_system[order] = _assign(counts[order], fractions)
        codes = per_system[systems]
    counts = {name: int((codes == SPLIT_CODES[name]).sum()) for name in SPLIT_NAMES}
    _save(
        Path(path),
        codes,
        {"by": by, "fractions": fractions, "seed": seed, "counts": counts, "n_frames": len(store)},
    )
    return counts


def _system_codes(store: SnapshotStore) -> np.ndarray:
    """(n_frames,) int64 index of each frame's system among the sorted unique system ids."""
    names = [store.frame_column("system", shard) for shard in range(store.n_shards)]
    if not names:
        raise ConfigError(f"{store.root} is empty; nothing to split")
    uniques, inverse = np.unique(np.concatenate(names).astype(str), return_inverse=True)
    return inverse.reshape(-1).astype(np.int64)


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

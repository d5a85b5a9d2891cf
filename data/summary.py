"""Describe and export a store: :func:`store_info` and :func:`export_frames`."""

from __future__ import annotations

import os
from pathlib import Path

from ase.data import chemical_symbols

from mlip.data.store import SnapshotStore
from mlip.errors import ConfigError

__all__ = ["store_info", "format_info", "export_frames"]


def store_info(store: SnapshotStore) -> dict:
    """Counts, elements, label coverage, size and compression ratio (from the manifest only)."""
    m = store.manifest
    elements: dict[str, int] = {}
    labels: dict[str, int] = {}
    for shard in m["shards"]:
        for z, count in shard.get("elements", {}).items():
            symbol = chemical_symbols[int(z)]
            elements[symbol] = elements.get(symbol, 0) + count
        for name, count in shard.get("labels", {}).items():
            labels[name] = labels.get(name, 0) + count
    size = sum(s["bytes"] for s in m["shards"])
    raw = sum(s.get("raw_bytes", 0) for s in m["shards"])
    n = max(len(store), 1)
    return {
        "path": str(store.root),
        "frames": len(store),
        "atoms": store.n_atoms,
        "shards": store.n_shards,
        "elements": dict(sorted(elements.items())),
        "coverage": {k: round(v / n, 6) for k, v in labels.items() if v},
        "bytes": size,
        "uncompressed_bytes": raw,
        "compression_ratio": round(raw / size, 3) if size else None,
        "compression": m["compression"],
        "skipped_frames": m["n_skipped"],
        "sources": len(m["imports"]),
        "split": m["split"],
        "metadata": m["metadata"],
    }


def format_info(info: dict) -> str:
    """Human-readable text of :func:`store_info`."""
    lines = [
        f"store        {info['path']}",
        f"frames       {info['frames']}  (atoms {info['atoms']}, shards {info['shards']})",
        "elements     " + ", ".join(f"{k}:{v}" for k, v in info["elements"].items()),
        "labels       " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in info["coverage"].items()),
        f"size         {info['bytes'] / 2**20:.2f} MiB ({info['compression']}, ratio "
        f"{info['compression_ratio']} vs uncompressed)",
        f"skipped      {info['skipped_frames']} input frames",
        f"split        {info['split']['counts'] if info['split'] else 'none'}",
        f"energy ref.  {info['metadata'].get('energy_referencing')}; level of theory: "
        f"{info['metadata'].get('level_of_theory')}",
    ]
    return "\n".join(lines)


def export_frames(
    store: SnapshotStore,
    out: str | os.PathLike,
    split: str | None = None,
    batch_frames: int = 4096,
    fmt: str | None = None,
) -> int:
    """Write frames (all, or a split) to a new file, streaming; returns the count.

    The format follows the extension (:mod:`mlip.io`): ``.xyz``/``.extxyz`` (every label kept,
    ids in ``info``), ``.traj`` or a ``.h5`` store (with this store's metadata); ``fmt``
    (``extxyz``, ``traj``, ``h5``) overrides it.

    Raises:
        ConfigError: ``out`` exists, or its extension / ``fmt`` is not a supported format.
    """
    from mlip.io import FrameWriter, output_format

    out = Path(out)
    output_format(out, fmt)
    if out.exists():
        raise ConfigError(f"{out} exists; refusing to overwrite it")
    indices = store.split_indices(split) if split else None
    count = 0
    with FrameWriter(out, fmt=fmt, metadata=store.manifest.get("metadata")) as writer:
        for batch in store.iter_batches(batch_frames, indices):
            frames = batch.to_ase()
            writer.write(frames)
            count += len(frames)
    return count

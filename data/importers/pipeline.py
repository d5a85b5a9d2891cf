"""The import loop: any source format → validated batches → :class:`StoreWriter`, resumable.

Per source file the manifest records ``frames_read`` (input frames consumed, stored or skipped)
with every committed shard; re-running the same import continues from there and a finished
source is not read again. Bad frames (NaN/inf, wrong shapes, unknown element) either stop the
import (``on_error="raise"``, every frame appended before is kept) or are skipped, counted and
listed in the manifest's ``skipped`` log (``on_error="skip"``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

from ase import Atoms

from mlip.data.frames import FrameBuilder
from mlip.data.importers.ase_formats import read_ase_db, read_ase_file, read_traj
from mlip.data.importers.aselmdb import read_aselmdb
from mlip.data.importers.atoms import FrameFields, LabelKeys, atoms_to_record, fields_to_record
from mlip.data.importers.extxyz import read_extxyz
from mlip.data.importers.lmdb import detect_lmdb_layout, is_lmdb
from mlip.data.importers.oc20 import oc20_metadata_path, read_oc20
from mlip.data.importers.oc20_lmdb import read_oc20_lmdb
from mlip.data.importers.vasp import read_vasp
from mlip.data.writer import StoreWriter
from mlip.errors import ConfigError, MLIPError

__all__ = ["FORMATS", "ImportReport", "detect_format", "import_files"]

log = logging.getLogger(__name__)


def _pubchemqcr(path: Path, start: int = 0, stages: Sequence[str] | None = None):
    from mlip.data.importers.pubchemqcr import read_pubchemqcr, resolve_stages

    return read_pubchemqcr(path, start, resolve_stages(stages))


#: format name → reader(path, start) yielding (frame_index, Atoms | FrameFields | record, ids).
FORMATS: dict[str, Callable[[Path, int], Iterator[tuple]]] = {
    "extxyz": read_extxyz,
    "traj": read_traj,
    "ase-db": read_ase_db,
    "oc20": read_oc20,
    "vasp": read_vasp,
    "pubchemqcr": _pubchemqcr,
    "oc20-lmdb": read_oc20_lmdb,
    "aselmdb": read_aselmdb,
    "ase": read_ase_file,
}


@dataclass
class ImportReport:
    """What an import did. ``skipped`` lists ``(source, frame, reason)`` of rejected frames."""

    frames_written: int = 0
    frames_skipped: int = 0
    sources_done: list[str] = field(default_factory=list)
    sources_resumed: list[str] = field(default_factory=list)
    skipped: list[tuple[str, int, str]] = field(default_factory=list)


def detect_format(path: Path) -> str:
    """The format of a source: an LMDB (file or folder) by its records, anything else by name.

    Raises:
        ConfigError: the name matches no known format, or an LMDB's records no known layout.
    """
    if is_lmdb(path):
        return detect_lmdb_layout(path)
    name = path.name.lower()
    if name.endswith((".extxyz", ".extxyz.xz")) and oc20_metadata_path(path) is not None:
        return "oc20"
    if name.endswith(
        (".xyz", ".extxyz", ".xyz.gz", ".xyz.bz2", ".xyz.xz", ".extxyz.xz", ".extxyz.gz")
    ):
        return "extxyz"
    if name.endswith(".traj"):
        return "traj"
    if name.endswith((".db", ".json")):
        return "ase-db"
    if name.startswith(("vasprun", "outcar")) or name.endswith(".xml"):
        return "vasp"
    raise ConfigError(f"cannot tell the format of {path}; pass --format ({', '.join(FORMATS)})")


def import_files(
    sources: Sequence[str | os.PathLike],
    store: str | os.PathLike,
    *,
    fmt: str | None = None,
    keys: LabelKeys = LabelKeys(),
    on_error: str = "raise",
    batch_frames: int = 4096,
    metadata: dict | None = None,
    compression: str = "zstd",
    shard_frames: int = 1 << 20,
    progress: bool = False,
    stages: Sequence[str] | None = None,
) -> ImportReport:
    """Import files into a store (created if missing), resuming a previous partial import.

    Args:
        sources: input files.
        store: store directory.
        fmt: format name from ``FORMATS``; None detects it per file (LMDBs from their
            records, other files from their names).
        keys: label key names (extxyz, ASE db).
        on_error: ``"raise"`` stops at the first bad frame, ``"skip"`` skips and logs it.
        batch_frames: frames buffered in memory between writes.
        metadata: store metadata (level of theory, reference energies, licence, ...).
        compression: filter of new shards. shard_frames: frames per shard.
        progress: show a tqdm bar with ETA.
        stages: PubChemQCR levels of theory to import (``pm3``, ``hf``, ``DFT_1st``,
            ``DFT_2nd``; ``dft`` = both DFT stages, ``all``); None = the DFT stages.
    """
    if on_error not in ("raise", "skip"):
        raise ConfigError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    paths = [Path(s) for s in sources]
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"no such input file: {p}")
    formats = [fmt or detect_format(p) for p in paths]
    if stages is not None and "pubchemqcr" not in formats:
        raise ConfigError("stages select PubChemQCR levels of theory, but no source is PubChemQCR")
    report = ImportReport()
    with StoreWriter(
        store, metadata=metadata, compression=compression, shard_frames=shard_frames
    ) as writer:
        for path, path_fmt in zip(paths, formats):
            _import_one(
                writer,
                path,
                path_fmt,
                stages if path_fmt == "pubchemqcr" else None,
                keys,
                on_error,
                batch_frames,
                progress,
                report,
            )
    return report


def _import_one(
    writer: StoreWriter,
    path: Path,
    fmt: str,
    stages: Sequence[str] | None,
    keys: LabelKeys,
    on_error: str,
    batch_frames: int,
    progress: bool,
    report: ImportReport,
) -> None:
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    key = str(path.resolve())
    done = writer.manifest["imports"].get(key, {})
    if done.get("complete"):
        log.info("%s was already imported completely; skipping it", path)
        return
    entry = {"format": fmt}
    if fmt == "pubchemqcr":
        from mlip.data.importers.pubchemqcr import resolve_stages

        entry["stages"] = list(resolve_stages(stages))
        before = done.get("stages", list(resolve_stages(None)))
        if done.get("frames_read") and before != entry["stages"]:
            raise ConfigError(
                f"{path} was partly imported with stages {before}; resume it with the same "
                f"stages, not {entry['stages']}"
            )
    start = int(done.get("frames_read", 0))
    if start:
        report.sources_resumed.append(key)
        log.info("resuming %s at frame %d", path, start)
    builder, read = FrameBuilder(), start
    frames = FORMATS[fmt](path, start, stages) if stages else FORMATS[fmt](path, start)
    for k, item, ids in _progress(frames, path, fmt, start) if progress else frames:
        try:
            record = _record(item, keys, f"{path} frame {k}", ids, key, k)
            builder.add(**record)
        except MLIPError as exc:
            if on_error == "raise":
                report.frames_written += _flush(
                    writer, builder, {key: {"frames_read": k, **entry}}
                )
                raise
            log.warning("skipping %s", exc)
            writer.record_skip(key, k, str(exc))
            report.skipped.append((key, k, str(exc)))
            report.frames_skipped += 1
        read = k + 1
        if len(builder) >= batch_frames:
            report.frames_written += _flush(
                writer, builder, {key: {"frames_read": read, **entry}}
            )
    done = {key: {"frames_read": read, **entry, "complete": True}}
    report.frames_written += _flush(writer, builder, done)
    report.sources_done.append(key)


def _flush(writer: StoreWriter, builder: FrameBuilder, progress: dict) -> int:
    """Append the buffered frames (if any) with the source progress; returns how many."""
    n = len(builder)
    if n:
        writer.append(builder.build(), progress)
    else:
        writer.set_progress(progress)
    return n


def _record(item, keys: LabelKeys, where: str, ids: dict, source: str, k: int) -> dict:
    """A FrameBuilder record from a reader item (``Atoms``, ``FrameFields`` or a ready record)."""
    info = item.info if isinstance(item, (Atoms, FrameFields)) else {}
    if keys.system is not None and keys.system in info:
        ids = {name: value for name, value in ids.items() if name != "system"}
    extra = {"source": source, "source_frame": k, **ids}
    if isinstance(item, Atoms):
        return atoms_to_record(item, keys, where, **extra)
    if isinstance(item, FrameFields):
        return fields_to_record(item, keys, where, **extra)
    return {**item, "where": where, **extra}


def _progress(iterator: Iterator, path: Path, fmt: str, start: int) -> Iterator:
    """Wrap ``iterator`` in a tqdm bar; the total (hence the ETA) is known for most formats."""
    from tqdm import tqdm

    total = _count_frames(path, fmt)
    return tqdm(iterator, desc=path.name, unit="frame", mininterval=1.0, initial=start, total=total)


def _count_frames(path: Path, fmt: str) -> int | None:
    """Number of frames in a file when it is cheap to know (one fast pass for plain extxyz)."""
    if fmt == "traj":
        from ase.io.trajectory import Trajectory

        with Trajectory(str(path)) as traj:
            return len(traj)
    if fmt == "ase-db":
        import ase.db

        return ase.db.connect(str(path)).count()
    if fmt == "oc20-lmdb":
        from mlip.data.importers.oc20_lmdb import count_frames

        return count_frames(path)
    if fmt == "aselmdb":
        from mlip.data.importers.aselmdb import count_rows

        return count_rows(path)
    if fmt in ("extxyz", "oc20") and path.suffix in (".xyz", ".extxyz"):
        n = 0
        with open(path, "rb") as fh:
            while line := fh.readline():
                if not line.strip():
                    break
                for _ in range(int(line) + 1):
                    fh.readline()
                n += 1
        return n
    return None

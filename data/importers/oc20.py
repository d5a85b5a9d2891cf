"""OC20 S2EF raw files: ``N.extxyz[.xz]`` + ``N.txt[.xz]`` (system id, frame id, reference energy).

Energies are stored raw (total VASP RPBE, eV); the per-frame reference energy goes to the
``reference_energy`` column so that the OC20 adsorption-type target is
``energy - reference_energy``. Tags (0 sub-surface, 1 surface, 2 adsorbate) and fixed flags are
kept. Per-adsorbate trajectory files with a ``system.txt`` (``system_id,reference_energy``) are
read the same way, the step being the frame index.
"""

from __future__ import annotations

import lzma
from pathlib import Path
from typing import Iterator

from mlip.data.importers.atoms import FrameFields
from mlip.data.importers.extxyz import iter_extxyz
from mlip.errors import InvalidStructureError

__all__ = ["read_oc20", "oc20_metadata_path"]


def oc20_metadata_path(path: Path) -> Path | None:
    """The ``.txt``/``.txt.xz`` metadata file matching an S2EF ``.extxyz[.xz]`` chunk, if any."""
    stem = path.name.removesuffix(".xz").removesuffix(".extxyz")
    for name in (f"{stem}.txt", f"{stem}.txt.xz"):
        if (path.parent / name).exists():
            return path.parent / name
    return None


def _open_text(path: Path):
    return lzma.open(path, "rt") if path.suffix == ".xz" else open(path)


def _parse_line(line: str, path: Path, k: int) -> dict:
    parts = line.strip().split(",")
    if len(parts) != 3:
        raise InvalidStructureError(
            f"{path} line {k + 1}: expected 'system_id,frame_id,reference_energy', "
            f"got {line.strip()!r}"
        )
    system, frame, ref = parts
    digits = frame.removeprefix("frame")
    try:
        return {
            "system": system,
            "step": int(digits) if digits.isdigit() else -1,
            "reference_energy": float(ref),
        }
    except ValueError:
        raise InvalidStructureError(
            f"{path} line {k + 1}: reference energy {ref!r} is not a number"
        ) from None


def read_oc20(path: Path, start: int = 0) -> Iterator[tuple[int, FrameFields, dict]]:
    """Frames of an S2EF chunk with the ids and reference energies of its metadata file.

    Raises:
        InvalidStructureError: no metadata file, or it has fewer lines than the chunk has frames.
    """
    meta = oc20_metadata_path(path)
    if meta is None:
        raise InvalidStructureError(
            f"{path}: no matching OC20 metadata file "
            f"({path.name.split('.')[0]}.txt or .txt.xz) next to it"
        )
    with _open_text(meta) as lines:
        for _ in range(start):
            lines.readline()
        for k, frame in iter_extxyz(path, start):
            line = lines.readline()
            if not line.strip():
                raise InvalidStructureError(f"{meta} has no line for frame {k} of {path}")
            yield k, frame, _parse_line(line, meta, k)

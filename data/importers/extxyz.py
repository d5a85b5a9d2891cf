"""Streaming extended-XYZ reader that yields :class:`FrameFields` instead of ``ase.Atoms``.

``ase.io.read`` scans the whole file before parsing and builds an ``Atoms`` plus a
``SinglePointCalculator`` (which copies the atoms) per frame; an import needs neither. This
reader streams the file once, parses each comment line with ASE's own ``key_val_str_to_dict``
and ``parse_properties``, converts the atom lines column by column (Python's ``float``/``int``
on each value, as ASE does), and sorts the columns and keys into ``results``/``info``/``arrays``
the way ASE's extxyz reader does. A frame outside that common path (``VEC`` cell lines,
per-axis ``move_mask``, initial charges, ragged or unparsable lines) is handed to
``ase.io.read`` as is, so every frame comes out as ASE reads it and ASE's errors are raised
unchanged.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import Iterator

import ase.io
import numpy as np
from ase.calculators.calculator import all_properties
from ase.io.extxyz import XYZError, key_val_str_to_dict, parse_properties, per_config_properties
from ase.io.formats import open_with_compression
from ase.symbols import symbols2numbers

from mlip.data.importers.atoms import SYSTEM_KEYS, FrameFields
from mlip.structures import full_to_voigt

__all__ = ["iter_extxyz", "read_extxyz"]

_DEFAULT_PROPERTIES = "species:S:1:pos:R:3"
_NEEDS_ASE = {"initial_charges"}  # a column ASE turns into an Atoms field
_PER_ATOM_RESULTS = set(all_properties)
_PER_FRAME_RESULTS = set(per_config_properties)


def read_extxyz(path: Path, start: int = 0) -> Iterator[tuple[int, FrameFields, dict]]:
    """Frames of an extended XYZ file (plain or ``.gz``/``.bz2``/``.xz``) from frame ``start``.

    A frame without a system id in its info (see ``SYSTEM_KEYS``) becomes its own system
    ``"<file name>:<frame>"``, so splits never separate what the file does not group.
    """
    for k, frame in iter_extxyz(path, start):
        ids = (
            {} if any(key in frame.info for key in SYSTEM_KEYS) else {"system": f"{path.name}:{k}"}
        )
        yield k, frame, ids


def iter_extxyz(path: Path, start: int = 0) -> Iterator[tuple[int, FrameFields]]:
    """``(frame index, fields)`` of every frame from ``start`` on; memory holds one frame.

    Raises:
        ase.io.extxyz.XYZError: a malformed header or frame (as ``ase.io.read`` would).
    """
    with open_with_compression(str(path), "r") as fh:
        header, k = fh.readline(), 0
        while header.strip():
            try:
                natoms = int(header)
            except ValueError as err:
                raise XYZError(f"ase.io.extxyz: Expected xyz header but got: {err}") from None
            lines = [fh.readline() for _ in range(natoms + 1)]
            following = fh.readline()
            while following.lstrip().startswith("VEC"):
                lines.append(following)
                following = fh.readline()
            if k >= start:
                yield k, _frame(header, lines, natoms)
            header, k = following, k + 1


def _frame(header: str, lines: list[str], natoms: int) -> FrameFields:
    """Parse one frame (``lines``: comment, atoms, VEC lines), through ASE when needed."""
    fields = None
    if len(lines) == natoms + 1:
        try:
            fields = _fast_frame(lines[0], lines[1:])
        except (ValueError, TypeError, KeyError, IndexError):
            fields = None
    if fields is None:
        atoms = ase.io.read(io.StringIO(header + "".join(lines)), format="extxyz")
        fields = FrameFields.from_atoms(atoms)
    return fields


@functools.lru_cache(maxsize=64)
def _columns(properties: str) -> tuple[tuple[str, str, int, np.dtype], ...]:
    """``(ase name, property name, columns, dtype)`` per property of a Properties string."""
    parsed, names, dtype, _ = parse_properties(properties)
    out = []
    for name in names:
        ase_name, cols = parsed[name]
        out.append((ase_name, name, cols, dtype[name if cols == 1 else name + "0"]))
    return tuple(out)


def _fast_frame(comment: str, block: list[str]) -> FrameFields | None:
    """The frame's fields, or None when it is outside the common path (ASE takes it)."""
    comment = comment.strip()
    info = key_val_str_to_dict(comment) if comment else {}
    pbc = info.pop("pbc") if "pbc" in info else ([True] * 3 if "Lattice" in info else False)
    cell = info.pop("Lattice").T if "Lattice" in info else np.zeros((3, 3))
    columns = _columns(info.pop("Properties", _DEFAULT_PROPERTIES))
    rows = [line.split() for line in block]
    width = sum(cols for _, _, cols, _ in columns)
    if np.shape(cell) != (3, 3) or any(len(r) != width for r in rows):
        return None
    arrays = _convert(np.array(rows, dtype=object).reshape(len(rows), width), columns)
    if arrays is None:
        return None
    move_mask = arrays.pop("move_mask", None)  # ASE: one column -> FixAtoms of the unmoved
    if move_mask is not None and move_mask.ndim != 1:
        return None  # three columns -> FixCartesian: left to ASE
    numbers = arrays.pop("numbers", None)
    symbols = arrays.pop("symbols", None)
    if numbers is None:
        unique, inverse = np.unique(symbols, return_inverse=True)
        numbers = np.array(symbols2numbers([s.capitalize() for s in unique]), dtype=int)
        numbers = numbers[inverse.reshape(-1)] if len(unique) else np.zeros(0, dtype=int)
    results = {k: arrays.pop(k) for k in list(arrays) if k in _PER_ATOM_RESULTS}
    results.update({k: info.pop(k) for k in list(info) if k in _PER_FRAME_RESULTS})
    if "stress" in results and np.shape(results["stress"]) == (3, 3):
        s = results["stress"]  # ASE keeps the Voigt form (upper triangle) of a 3x3 stress
        results["stress"] = full_to_voigt(np.asarray(s))
    flags = np.zeros(3, dtype=bool)
    flags[:] = pbc
    return FrameFields(
        numbers=np.asarray(numbers, dtype=int),
        positions=arrays.pop("positions"),
        cell=np.array(cell, dtype=np.float64),
        pbc=flags,
        results=results,
        info=info,
        arrays=arrays,
        fixed=None if move_mask is None else np.flatnonzero(~move_mask.astype(bool)),
    )


def _convert(
    table: np.ndarray, columns: tuple[tuple[str, str, int, np.dtype], ...]
) -> dict[str, np.ndarray] | None:
    """Typed per-atom arrays (ASE names) from the (n_atoms, width) object table of strings."""
    arrays, col = {}, 0
    for ase_name, _, cols, dtype in columns:
        if ase_name in _NEEDS_ASE:
            return None
        part = table[:, col : col + cols]
        col += cols
        if dtype.kind == "b":
            value = np.isin(part, ("T", "True"))
        elif dtype.kind == "O":
            value = part
        else:  # Python's float()/int() on each string, as ASE's converters
            value = part.astype(dtype)
        arrays[ase_name] = value[:, 0] if cols == 1 else value
    if "positions" not in arrays or ("numbers" not in arrays and "symbols" not in arrays):
        return None
    return arrays

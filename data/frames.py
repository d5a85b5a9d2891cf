"""In-memory columnar frames: :class:`FrameBatch`, its builder, validation and ASE conversion.

A :class:`FrameBatch` is what the store writes and reads: per-atom arrays concatenated over its
frames plus per-frame arrays, with the same column names as the shard datasets
(:mod:`mlip.data.schema`). String columns (``system``, ``source``, ``lot``, ``config_type``) hold
Python strings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import chemical_symbols

from mlip.data.schema import ATOM_COLUMNS, FRAME_COLUMNS, LABEL_BITS, TABLES, empty_column
from mlip.errors import InvalidStructureError, UnknownElementError
from mlip.structures import Layout, Structures, full_to_voigt

__all__ = ["FrameBatch", "FrameBuilder", "check_frame", "label_mask"]

_MAX_Z = len(chemical_symbols) - 1
_STRING_COLUMNS = set(TABLES)
_FRAME_KEYS = frozenset(FRAME_COLUMNS)


@dataclass
class FrameBatch:
    """Frames in columnar form.

    Attributes:
        n_atoms: (n_frames,) int64 atoms per frame.
        atoms: per-atom columns, each (n_atoms_total, ...): ``numbers``, ``positions`` Å,
            ``forces`` eV/Å (NaN = absent) and optional ``charges`` e, ``magmoms``, ``tags``,
            ``fixed`` (-1 = absent).
        frames: per-frame columns, each (n_frames, ...): ``energy`` eV, ``cell`` Å (rows),
            ``pbc``, ``stress`` eV/Å³ (NaN = absent), ``weight``, ``step``, ``label_mask``, the
            string columns ``system``/``source``/``lot`` (object arrays), ``source_frame`` and
            optional ``dipole``, ``charge``, ``spin``, ``reference_energy`` and the string
            column ``config_type``.
    """

    n_atoms: np.ndarray
    atoms: dict[str, np.ndarray] = field(default_factory=dict)
    frames: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.n_atoms.shape[0])

    @property
    def atom_offsets(self) -> np.ndarray:
        """(n_frames + 1,) int64 start of each frame's atoms."""
        return np.concatenate([[0], np.cumsum(self.n_atoms)]).astype(np.int64)

    def select(self, frame_ids: Sequence[int] | np.ndarray) -> FrameBatch:
        """The frames ``frame_ids`` (any order, repeats allowed) as a new batch."""
        frame_ids = np.asarray(frame_ids, dtype=np.int64)
        offsets = self.atom_offsets
        counts = self.n_atoms[frame_ids]
        starts = np.repeat(
            offsets[frame_ids] - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts
        )
        atom_ids = starts + np.arange(int(counts.sum()))
        return FrameBatch(
            n_atoms=counts.astype(np.int64),
            atoms={k: v[atom_ids] for k, v in self.atoms.items()},
            frames={k: v[frame_ids] for k, v in self.frames.items()},
        )

    @staticmethod
    def concat(batches: Sequence[FrameBatch]) -> FrameBatch:
        """Concatenate batches; optional columns missing from some batches are filled as absent."""
        atom_keys = sorted({k for b in batches for k in b.atoms})
        frame_keys = sorted({k for b in batches for k in b.frames})

        def column(b: FrameBatch, key: str, per_atom: bool) -> np.ndarray:
            store = b.atoms if per_atom else b.frames
            if key in store:
                return store[key]
            if not per_atom and key in _STRING_COLUMNS:
                return np.full(len(b), "", dtype=object)
            spec = (ATOM_COLUMNS if per_atom else FRAME_COLUMNS)[key]
            n = int(b.n_atoms.sum()) if per_atom else len(b)
            return empty_column(spec, n)

        return FrameBatch(
            n_atoms=np.concatenate([b.n_atoms for b in batches]).astype(np.int64),
            atoms={k: np.concatenate([column(b, k, True) for b in batches]) for k in atom_keys},
            frames={k: np.concatenate([column(b, k, False) for b in batches]) for k in frame_keys},
        )

    def to_structures(self, dtype: torch.dtype = torch.float64,
                      device: torch.device | str = "cpu") -> Structures:
        """The frames' structures (positions, numbers, cell, pbc and layout) as tensors."""
        numbers = self.atoms["numbers"].astype(np.int64)
        pbc = self.frames["pbc"].astype(bool).reshape(-1, 3)
        return Structures(
            positions=torch.tensor(self.atoms["positions"], dtype=dtype, device=device),
            atomic_numbers=torch.tensor(numbers, device=device),
            cell=torch.tensor(self.frames["cell"], dtype=dtype, device=device).reshape(-1, 3, 3),
            pbc=torch.tensor(pbc, device=device),
            layout=Layout.from_counts(self.n_atoms.tolist(), atomic_numbers=numbers, pbc=pbc,
                                      device=device),
        )

    def to_ase(self) -> list[Atoms]:
        """One ``ase.Atoms`` per frame (through :meth:`to_structures`); present labels go to a
        ``SinglePointCalculator``."""
        out = self.to_structures().to_ase()
        offsets = self.atom_offsets
        for k, atoms in enumerate(out):
            a, b = offsets[k], offsets[k + 1]
            _attach_optional(atoms, self, k, a, b)
            results = _labels(self, k, a, b)
            if results:
                atoms.calc = SinglePointCalculator(atoms, **results)
        return out


def _labels(batch: FrameBatch, k: int, a: int, b: int) -> dict:
    """Present labels of frame ``k`` as ASE calculator results (stress in Voigt order)."""
    mask = int(batch.frames["label_mask"][k])
    results = {}
    if mask & LABEL_BITS["energy"]:
        results["energy"] = float(batch.frames["energy"][k])
    if mask & LABEL_BITS["forces"]:
        results["forces"] = batch.atoms["forces"][a:b].copy()
    if mask & LABEL_BITS["stress"]:
        results["stress"] = full_to_voigt(batch.frames["stress"][k])
    if mask & LABEL_BITS["charges"]:
        results["charges"] = batch.atoms["charges"][a:b].copy()
    if mask & LABEL_BITS["magmoms"]:
        results["magmoms"] = batch.atoms["magmoms"][a:b].copy()
    if mask & LABEL_BITS["dipole"]:
        results["dipole"] = batch.frames["dipole"][k].copy()
    return results


def _attach_optional(atoms: Atoms, batch: FrameBatch, k: int, a: int, b: int) -> None:
    """Copy ids, tags, constraints and optional per-frame scalars onto ``atoms``."""
    from ase.constraints import FixAtoms

    f = batch.frames
    for key in TABLES:
        if key in f and f[key][k]:
            atoms.info[key] = str(f[key][k])
    for key in ("step", "source_frame"):
        if key in f and int(f[key][k]) >= 0:
            atoms.info[key] = int(f[key][k])
    for key in ("charge", "spin", "reference_energy"):
        if key in f and np.isfinite(f[key][k]):
            atoms.info[key] = float(f[key][k])
    if "weight" in f and f["weight"][k] != 1.0:
        atoms.info["weight"] = float(f["weight"][k])
    tags = batch.atoms.get("tags")
    if tags is not None and (tags[a:b] >= 0).all():
        atoms.set_tags(tags[a:b].astype(int))
    fixed = batch.atoms.get("fixed")
    if fixed is not None and (fixed[a:b] > 0).any():
        atoms.set_constraint(FixAtoms(indices=np.nonzero(fixed[a:b] > 0)[0]))


def label_mask(
    energy: float,
    forces: np.ndarray | None,
    stress: np.ndarray | None,
    extras: dict[str, np.ndarray],
) -> int:
    """The ``label_mask`` bits of one frame (a label counts as present when given)."""
    mask = 0
    if math.isfinite(energy):
        mask |= LABEL_BITS["energy"]
    if forces is not None:
        mask |= LABEL_BITS["forces"]
    if stress is not None:
        mask |= LABEL_BITS["stress"]
    for key in ("charges", "magmoms", "dipole"):
        if key in extras:
            mask |= LABEL_BITS[key]
    return mask


def _all_finite(values: np.ndarray) -> bool:
    """True when every value is finite (one reduction in the common case)."""
    return math.isfinite(values.sum()) or bool(np.isfinite(values).all())


def check_frame(
    numbers: np.ndarray,
    positions: np.ndarray,
    cell: np.ndarray,
    energy: float,
    forces: np.ndarray | None,
    stress: np.ndarray | None,
    where: str,
) -> None:
    """Reject a malformed frame, naming it by ``where`` (e.g. ``"a.xyz frame 12"``).

    Args:
        numbers: (n_atoms,) int atomic numbers. positions: (n_atoms, 3) Å. cell: (3, 3) Å.
        energy: eV (NaN = absent). forces: (n_atoms, 3) eV/Å or None. stress: (3, 3) eV/Å³ or None.
        where: human-readable location used in the message.

    Raises:
        UnknownElementError: an atomic number outside 1..118.
        InvalidStructureError: wrong shapes or non-finite values.
    """
    n = numbers.shape[0]
    if n == 0:
        raise InvalidStructureError(f"{where}: frame has no atoms")
    if numbers.min() < 1 or numbers.max() > _MAX_Z:
        k = int(np.nonzero((numbers < 1) | (numbers > _MAX_Z))[0][0])
        raise UnknownElementError(f"{where}: atom {k} has unknown element (Z={int(numbers[k])})")
    if positions.shape != (n, 3):
        raise InvalidStructureError(
            f"{where}: positions have shape {positions.shape}, expected ({n}, 3)"
        )
    if not _all_finite(positions):
        raise InvalidStructureError(f"{where}: non-finite positions")
    if cell.shape != (3, 3) or not _all_finite(cell):
        raise InvalidStructureError(f"{where}: cell must be a finite 3x3 matrix, got {cell.shape}")
    if math.isinf(energy):
        raise InvalidStructureError(f"{where}: non-finite energy {energy}")
    if forces is not None:
        if forces.shape != (n, 3):
            raise InvalidStructureError(
                f"{where}: forces have shape {forces.shape}, expected ({n}, 3)"
            )
        if not _all_finite(forces):
            raise InvalidStructureError(f"{where}: non-finite forces")
    if stress is not None and (stress.shape != (3, 3) or not _all_finite(stress)):
        raise InvalidStructureError(f"{where}: stress must be a finite 3x3 matrix")


class FrameBuilder:
    """Accumulates single frames (validated) and emits :class:`FrameBatch` objects."""

    def __init__(self) -> None:
        self._atoms: dict[str, list[np.ndarray]] = {}
        self._frames: dict[str, list] = {}
        self._n_atoms: list[int] = []

    def __len__(self) -> int:
        return len(self._n_atoms)

    def add(
        self,
        *,
        numbers: np.ndarray,
        positions: np.ndarray,
        cell: np.ndarray,
        pbc: np.ndarray,
        energy: float = float("nan"),
        forces: np.ndarray | None = None,
        stress: np.ndarray | None = None,
        where: str = "frame",
        atom_extras: dict[str, np.ndarray] | None = None,
        **frame_values,
    ) -> None:
        """Validate and append one frame.

        Args:
            numbers: (n_atoms,) int. positions: (n_atoms, 3) Å. cell: (3, 3) Å. pbc: (3,) bool.
            energy: eV, NaN when absent. forces: (n_atoms, 3) eV/Å or None. stress: (3, 3) eV/Å³
                or None. where: location used in error messages.
            atom_extras: optional per-atom columns (``charges``, ``magmoms``, ``tags``, ``fixed``).
            **frame_values: per-frame columns (``system``, ``step``, ``source``, ``source_frame``,
                ``lot``, ``weight``, ``dipole``, ``charge``, ``spin``, ``reference_energy``,
                ``config_type``).
        """
        numbers = np.asarray(numbers)
        positions = np.asarray(positions, dtype=np.float64)
        cell = np.asarray(cell, dtype=np.float64)
        energy = float("nan") if energy is None else float(energy)
        forces = None if forces is None else np.asarray(forces, dtype=np.float64)
        stress = None if stress is None else np.asarray(stress, dtype=np.float64)
        check_frame(numbers, positions, cell, energy, forces, stress, where)
        atom_extras = atom_extras or {}
        per_atom = {"numbers": numbers, "positions": positions, "forces": forces, **atom_extras}
        per_atom = _checked_atom_columns(per_atom, len(numbers), where)
        unknown = frame_values.keys() - _FRAME_KEYS
        if unknown:
            raise InvalidStructureError(f"{where}: unknown per-frame columns {sorted(unknown)}")
        row = {
            "energy": energy,
            "cell": cell,
            "pbc": np.asarray(pbc, dtype=bool),
            "stress": stress,
            "label_mask": label_mask(energy, forces, stress, {**atom_extras, **frame_values}),
            **frame_values,
        }
        self._append(per_atom, row)

    def _append(self, per_atom: dict[str, np.ndarray], row: dict) -> None:
        """Append one validated frame, padding columns that other frames have as absent."""
        n, k = len(per_atom["numbers"]), len(self._n_atoms)
        if per_atom.keys() == self._atoms.keys() and row.keys() == self._frames.keys():
            for key, value in per_atom.items():  # the common case: same columns as before
                self._atoms[key].append(value)
            for key, value in row.items():
                self._frames[key].append(value)
            self._n_atoms.append(n)
            return
        for key, value in per_atom.items():
            if key not in self._atoms:
                self._atoms[key] = [empty_column(ATOM_COLUMNS[key], m) for m in self._n_atoms]
            self._atoms[key].append(value)
        for key in set(self._atoms) - set(per_atom):
            self._atoms[key].append(empty_column(ATOM_COLUMNS[key], n))
        for key, value in row.items():
            if key not in self._frames:
                self._frames[key] = [None] * k
            self._frames[key].append(value)
        for key in set(self._frames) - set(row):
            self._frames[key].append(None)
        self._n_atoms.append(n)

    def build(self) -> FrameBatch:
        """The accumulated frames as one batch; the builder is emptied."""
        batch = FrameBatch(
            n_atoms=np.asarray(self._n_atoms, dtype=np.int64),
            atoms={k: np.concatenate(v) for k, v in self._atoms.items()},
            frames={k: _frame_column(k, v) for k, v in self._frames.items()},
        )
        self.__init__()
        return batch


def _checked_atom_columns(columns: dict, n: int, where: str) -> dict[str, np.ndarray]:
    """Per-atom columns cast to their dtype (None → absent), each checked to have ``n`` rows."""
    out = {}
    for key, value in columns.items():
        spec = ATOM_COLUMNS.get(key)
        if spec is None:
            raise InvalidStructureError(f"{where}: unknown per-atom column {key!r}")
        value = empty_column(spec, n) if value is None else np.asarray(value, dtype=spec.dtype)
        if value.shape != (n, *spec.shape):
            raise InvalidStructureError(
                f"{where}: {key} has shape {value.shape}, expected "
                f"({n}, {', '.join(map(str, spec.shape))})"
            )
        out[key] = value
    return out


def _frame_column(key: str, values: Iterable) -> np.ndarray:
    """Stack per-frame values, replacing None by the column's absent value."""
    if key in _STRING_COLUMNS:
        return np.array(["" if v is None else str(v) for v in values], dtype=object)
    spec = FRAME_COLUMNS[key]
    fill = empty_column(spec, 1)[0]
    return np.array([fill if v is None else v for v in values], dtype=spec.dtype)

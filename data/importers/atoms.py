"""Turn ``ase.Atoms`` (from any ASE reader) or :class:`FrameFields` (the extxyz reader) into store
records, finding labels by key name.

A *record* is the keyword arguments of :meth:`mlip.data.frames.FrameBuilder.add`. Labels are
looked up in the calculator ``results`` first (raw values: constraint-zeroed forces are never used),
then ``info`` (per-frame) or ``arrays`` (per-atom).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.constraints import FixAtoms

from mlip.errors import InvalidStructureError
from mlip.structures import voigt_to_full

__all__ = [
    "LabelKeys",
    "FrameFields",
    "atoms_to_record",
    "fields_to_record",
    "find_labels",
    "SYSTEM_KEYS",
]

ENERGY_KEYS = ("energy", "REF_energy", "dft_energy", "DFT_energy", "total_energy")
FORCES_KEYS = ("forces", "REF_forces", "dft_forces", "DFT_forces")
STRESS_KEYS = ("stress", "REF_stress", "dft_stress", "DFT_stress")
VIRIAL_KEYS = ("virial", "REF_virial", "virials", "dft_virial", "DFT_virial")
#: ``atoms.info`` keys that name the trajectory / system a frame belongs to (first found wins).
SYSTEM_KEYS = ("system_id", "system", "sid", "trajectory", "traj_id", "mol_id", "molecule_id")
STEP_KEYS = ("step", "frame_id", "fid", "md_step")
CHARGE_KEYS = ("charge", "total_charge")
SPIN_KEYS = ("spin", "spin_multiplicity", "multiplicity")


@dataclass(frozen=True)
class LabelKeys:
    """Names of the label fields; None means auto-detect from the common names.

    Attributes:
        energy: total energy key (eV). forces: per-atom forces key (eV/Å).
        stress: stress key (eV/Å³, ASE sign, 3x3 or Voigt 6). virial: virial key (eV), converted
            to stress = -virial / volume when no stress is present.
        system: ``atoms.info`` key holding the trajectory/system id.
    """

    energy: str | None = None
    forces: str | None = None
    stress: str | None = None
    virial: str | None = None
    system: str | None = None


@dataclass
class FrameFields:
    """One parsed frame in the shape ASE gives it, without building ``ase.Atoms``.

    Attributes:
        numbers: (n_atoms,) int. positions: (n_atoms, 3) Å. cell: (3, 3) Å rows. pbc: (3,) bool.
        results: calculator results (labels). info: per-frame key/values.
        arrays: other per-atom arrays. fixed: indices of atoms held by ``FixAtoms`` constraints.
    """

    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    results: dict
    info: dict
    arrays: dict
    fixed: np.ndarray | None = None

    @classmethod
    def from_atoms(cls, atoms: Atoms) -> FrameFields:
        """The fields of an ``ase.Atoms`` (labels from its calculator, when it has one)."""
        fixed = [c.index for c in atoms.constraints if isinstance(c, FixAtoms)]
        return cls(
            numbers=atoms.numbers,
            positions=atoms.positions,
            cell=atoms.cell.array,
            pbc=atoms.pbc,
            results=atoms.calc.results if atoms.calc is not None else {},
            info=atoms.info,
            arrays=atoms.arrays,
            fixed=np.concatenate(fixed) if fixed else None,
        )


def _lookup(frame: FrameFields, keys: tuple[str, ...], per_atom: bool):
    results = frame.results
    extra = frame.arrays if per_atom else frame.info
    for key in keys:
        if key in results and results[key] is not None:
            return results[key]
        if key in extra and extra[key] is not None:
            return extra[key]
    return None


def _stress(frame: FrameFields, keys: LabelKeys, where: str) -> np.ndarray | None:
    stress = _lookup(frame, (keys.stress,) if keys.stress else STRESS_KEYS, False)
    if stress is not None:
        return _as_3x3(stress, "stress", where)
    virial = _lookup(frame, (keys.virial,) if keys.virial else VIRIAL_KEYS, False)
    if virial is None:
        return None
    volume = abs(np.linalg.det(frame.cell))
    if volume == 0.0:
        raise InvalidStructureError(f"{where}: virial given but the cell has zero volume")
    return -_as_3x3(virial, "virial", where) / volume


def _as_3x3(value, name: str, where: str) -> np.ndarray:
    value = np.asarray(value, dtype=np.float64)
    if value.shape == (6,):
        return voigt_to_full(value)
    if value.size == 9:
        return value.reshape(3, 3)
    raise InvalidStructureError(
        f"{where}: {name} has shape {value.shape}, expected 3x3, 9 or 6 values"
    )


def atoms_to_record(atoms: Atoms, keys: LabelKeys, where: str, **ids) -> dict:
    """A ``FrameBuilder.add`` record for one ``Atoms`` (see :func:`fields_to_record`)."""
    return fields_to_record(FrameFields.from_atoms(atoms), keys, where, **ids)


def fields_to_record(frame: FrameFields, keys: LabelKeys, where: str, **ids) -> dict:
    """A ``FrameBuilder.add`` record for one frame.

    Args:
        frame: the frame; labels from its ``results``, ``info`` or ``arrays``.
        keys: label key names (None fields are auto-detected).
        where: "file frame k" for error messages.
        **ids: per-frame values overriding the detected ones (``system``, ``step``, ``source``,
            ``source_frame``, ``lot``, ``reference_energy``, ...).
    """
    energy, forces, stress = find_labels(frame, keys, where)
    record = {
        "numbers": frame.numbers,
        "positions": frame.positions,
        "cell": frame.cell,
        "pbc": frame.pbc,
        "energy": float("nan") if energy is None else energy,
        "forces": forces,
        "stress": stress,
        "where": where,
        "atom_extras": _atom_extras(frame),
    }
    record.update(_frame_extras(frame, keys))
    record.update(ids)
    return record


def find_labels(
    frame: FrameFields, keys: LabelKeys, where: str
) -> tuple[float | None, np.ndarray | None, np.ndarray | None]:
    """The energy (eV), forces ((n_atoms, 3) eV/Å) and stress ((3, 3) eV/Å³, ASE sign) of a
    frame, each None when absent: under the names in ``keys``, else the first common name found
    (``energy``, ``REF_energy`` (MACE), ``dft_energy``, ...; stress also from a virial).

    Raises:
        InvalidStructureError: a label of the wrong shape, naming ``where``.
    """
    energy = _lookup(frame, (keys.energy,) if keys.energy else ENERGY_KEYS, False)
    forces = _lookup(frame, (keys.forces,) if keys.forces else FORCES_KEYS, True)
    return (
        None if energy is None else _scalar(energy, where),
        None if forces is None else np.asarray(forces, dtype=np.float64),
        _stress(frame, keys, where),
    )


def _scalar(value, where: str) -> float:
    value = np.asarray(value, dtype=np.float64)
    if value.size != 1:
        raise InvalidStructureError(f"{where}: energy has shape {value.shape}, expected a scalar")
    return float(value.reshape(()))


def _atom_extras(frame: FrameFields) -> dict:
    extras = {}
    for key in ("charges", "magmoms"):
        if frame.results.get(key) is not None:
            extras[key] = np.asarray(frame.results[key], dtype=np.float64)
    if "tags" in frame.arrays:
        extras["tags"] = frame.arrays["tags"]
    if frame.fixed is not None:
        flags = np.zeros(len(frame.numbers), dtype=np.int8)
        flags[frame.fixed] = 1
        extras["fixed"] = flags
    return extras


def _frame_extras(frame: FrameFields, keys: LabelKeys) -> dict:
    out = {}
    info = frame.info
    system = next(
        (info[k] for k in ((keys.system,) if keys.system else SYSTEM_KEYS) if k in info), None
    )
    if system is not None:
        out["system"] = str(system)
    step = next((info[k] for k in STEP_KEYS if k in info), None)
    if isinstance(step, (int, np.integer)):
        out["step"] = int(step)
    for column, names in (("charge", CHARGE_KEYS), ("spin", SPIN_KEYS)):
        value = next((info[k] for k in names if k in info), None)
        if isinstance(value, (int, float, np.number)):
            out[column] = float(value)
    if frame.results.get("dipole") is not None:
        out["dipole"] = np.asarray(frame.results["dipole"], dtype=np.float64)
    if isinstance(info.get("weight"), (int, float, np.number)):
        out["weight"] = float(info["weight"])
    if info.get("config_type") is not None:
        out["config_type"] = str(info["config_type"])
    return out

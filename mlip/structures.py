"""The frozen structure base of every batch: :class:`Layout` and :class:`Structures`.

A batch holds ``n_graphs`` independent systems with their atoms concatenated. Every field of a
:class:`Structures` dataclass says its scope in its metadata: per atom (leading ``n_atoms``
dimension), per system (leading ``n_graphs`` dimension) or global (one value for the batch), so
that generic code (:func:`select_systems`, :meth:`Structures.to`) handles subclasses' fields
too. :class:`mlip.graph.AtomicGraph` adds the neighbour edges, :class:`mlip.md.state.MDState`
the momenta, masses and latest forces.

The :class:`Layout` (atoms per system, first atom, system index of each atom) is computed once
per batch together with the host-side facts later steps need (atom counts, elements present,
periodic axes), so that no later step reads the device to learn them.

Conventions (ASE units): positions Å, cell rows are lattice vectors (Å), stress eV/Å³ with
ASE's sign and Voigt order xx yy zz yz xz xy.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence, TypeVar

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from mlip.errors import InvalidStructureError

__all__ = ["Layout", "Structures", "atom_field", "system_field", "global_field",
           "select_systems", "full_to_voigt", "voigt_to_full", "finite_results",
           "attach_results"]

S = TypeVar("S", bound="Structures")
Array = TypeVar("Array", np.ndarray, torch.Tensor)

_VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))  # ASE order xx yy zz yz xz xy


def full_to_voigt(full: Array) -> Array:
    """(..., 3, 3) → (..., 6) in ASE's Voigt order xx yy zz yz xz xy (upper triangle).

    Works on numpy arrays and torch tensors alike (same type out).
    """
    rows, cols = zip(*_VOIGT)
    return full[..., list(rows), list(cols)]


def voigt_to_full(voigt: Array) -> Array:
    """(..., 6) in ASE's Voigt order → (..., 3, 3) symmetric (numpy or torch, same type out)."""
    xx, yy, zz, yz, xz, xy = (voigt[..., k] for k in range(6))
    rows = [[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]]
    if isinstance(voigt, torch.Tensor):
        return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)
    return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def atom_field(**kwargs: Any) -> dataclasses.Field:
    """A dataclass field whose tensor has a leading ``n_atoms`` dimension."""
    return field(metadata={"per": "atom"}, **kwargs)


def system_field(**kwargs: Any) -> dataclasses.Field:
    """A dataclass field whose tensor has a leading ``n_graphs`` dimension."""
    return field(metadata={"per": "system"}, **kwargs)


def global_field(**kwargs: Any) -> dataclasses.Field:
    """A dataclass field holding one value for the whole batch (taken as is when systems are
    selected)."""
    return field(metadata={"per": "global"}, **kwargs)


@dataclass(frozen=True, eq=False)
class Layout:
    """Which atoms belong to which system, computed once per batch.

    Build it with :meth:`from_counts` (host values) or :meth:`from_tensors`; never by hand.
    Two layouts are equal (and hash alike) when their host facts and device are: a layout can
    key a cache, and comparing two costs no device read.

    Attributes:
        batch: (n_atoms,) int64 sorted system index of each atom.
        n_atoms: (n_graphs,) int64 atoms per system.
        first_atom: (n_graphs,) int64 index of each system's first atom.
        n_graphs: number of systems.
        periodic: whether some system has a periodic axis.
        counts: atoms per system, on the host.
        elements: sorted distinct atomic numbers of the batch, on the host.
        system_elements: sorted distinct atomic numbers of each system, on the host.
        pbc: periodic axes of each system, on the host.
    """

    batch: torch.Tensor
    n_atoms: torch.Tensor
    first_atom: torch.Tensor
    n_graphs: int
    periodic: bool
    counts: tuple[int, ...]
    elements: tuple[int, ...]
    system_elements: tuple[tuple[int, ...], ...]
    pbc: tuple[tuple[bool, bool, bool], ...]

    @classmethod
    def from_counts(cls, counts: Iterable[int], *, atomic_numbers: Any, pbc: Any,
                    device: torch.device | str | None = None) -> Layout:
        """The layout of systems with ``counts`` atoms each.

        Args:
            counts: atoms per system. atomic_numbers: (n_atoms,) int, array-like on the host.
            pbc: (n_graphs, 3) bool, array-like on the host. device: of the tensors.
        """
        counts = tuple(int(n) for n in counts)
        numbers = np.asarray(atomic_numbers, dtype=np.int64).reshape(-1)
        if any(n < 0 for n in counts) or sum(counts) != numbers.shape[0]:
            raise InvalidStructureError(
                f"atom counts {counts} do not add up to the {numbers.shape[0]} atomic numbers")
        wrong = (numbers < 0) | (numbers >= 1024)
        if wrong.any():
            k = int(np.nonzero(wrong)[0][0])
            raise InvalidStructureError(f"atom {k} has invalid atomic number {numbers[k]}")
        # distinct (system, Z) pairs in one sort, then split by system
        pairs = np.unique(np.repeat(np.arange(len(counts)), counts) * 1024 + numbers)
        cuts = np.searchsorted(pairs // 1024, np.arange(len(counts) + 1))
        z = (pairs % 1024).tolist()
        system_elements = tuple(tuple(z[a:b]) for a, b in zip(cuts[:-1], cuts[1:]))
        return cls._make(counts, system_elements, pbc, device)

    @classmethod
    def from_tensors(cls, n_atoms: torch.Tensor, atomic_numbers: torch.Tensor,
                     pbc: torch.Tensor) -> Layout:
        """The layout of a batch given as tensors (reads them to the host once).

        Args:
            n_atoms: (n_graphs,) int atoms per system. atomic_numbers: (n_atoms,) int.
            pbc: (n_graphs, 3) bool.
        """
        return cls.from_counts(n_atoms.tolist(), atomic_numbers=atomic_numbers.cpu().numpy(),
                               pbc=pbc.cpu().numpy(), device=n_atoms.device)

    @classmethod
    def _make(cls, counts: tuple[int, ...], system_elements: tuple[tuple[int, ...], ...],
              pbc: Any, device: torch.device | str | None) -> Layout:
        """The layout from its host facts (checked to agree in length)."""
        pbc = tuple(tuple(bool(p) for p in row)
                    for row in np.asarray(pbc, dtype=bool).reshape(-1, 3))
        if len(pbc) != len(counts):
            raise InvalidStructureError(f"pbc has {len(pbc)} rows for {len(counts)} systems")
        n_atoms = torch.tensor(counts, dtype=torch.long, device=device)
        first_atom = torch.cumsum(n_atoms, 0) - n_atoms
        batch = torch.repeat_interleave(torch.arange(len(counts), device=device), n_atoms,
                                        output_size=sum(counts))
        elements = tuple(sorted({z for row in system_elements for z in row}))
        return cls(batch=batch, n_atoms=n_atoms, first_atom=first_atom, n_graphs=len(counts),
                   periodic=any(any(row) for row in pbc), counts=counts, elements=elements,
                   system_elements=system_elements, pbc=pbc)

    @staticmethod
    def concat(layouts: Sequence[Layout]) -> Layout:
        """The layout of the batches ``layouts`` concatenated in order."""
        return Layout._make(tuple(n for lay in layouts for n in lay.counts),
                            tuple(e for lay in layouts for e in lay.system_elements),
                            [p for lay in layouts for p in lay.pbc] or np.zeros((0, 3)),
                            layouts[0].batch.device)

    def systems(self, start: int, stop: int) -> Layout:
        """The layout of systems ``start:stop`` alone (no device read)."""
        return Layout._make(self.counts[start:stop], self.system_elements[start:stop],
                            self.pbc[start:stop] or np.zeros((0, 3)), self.batch.device)

    def to_dict(self) -> dict[str, list]:
        """The host facts as plain lists (for checkpoints; :meth:`from_dict` inverts it)."""
        return {"counts": list(self.counts),
                "system_elements": [list(e) for e in self.system_elements],
                "pbc": [list(p) for p in self.pbc]}

    @classmethod
    def from_dict(cls, facts: dict[str, list], device: torch.device | str | None = None
                  ) -> Layout:
        """The layout saved by :meth:`to_dict`, its tensors on ``device``."""
        return cls._make(tuple(int(n) for n in facts["counts"]),
                         tuple(tuple(int(z) for z in e) for e in facts["system_elements"]),
                         facts["pbc"] or np.zeros((0, 3)), device)

    @property
    def device(self) -> torch.device:
        return self.batch.device

    @property
    def key(self) -> tuple:
        """The host facts and device that define this layout (its equality)."""
        return self.counts, self.system_elements, self.pbc, str(self.batch.device)

    def __eq__(self, other: object) -> bool:
        return self is other or (isinstance(other, Layout) and self.key == other.key)

    def __hash__(self) -> int:
        return hash(self.key)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
           ) -> Layout:
        """The same layout with its tensors on ``device`` (``dtype`` is ignored: integers)."""
        if device is None or torch.device(device) == self.batch.device:
            return self
        return dataclasses.replace(self, batch=self.batch.to(device),
                                   n_atoms=self.n_atoms.to(device),
                                   first_atom=self.first_atom.to(device))


@dataclass(frozen=True, kw_only=True)
class Structures:
    """A batch of ``n_graphs`` atomic structures (one structure is a batch of one).

    Attributes:
        positions: (n_atoms, 3) Å.
        atomic_numbers: (n_atoms,) int64.
        cell: (n_graphs, 3, 3) Å, rows are lattice vectors (zeros allowed when not periodic).
        pbc: (n_graphs, 3) bool.
        layout: the batch layout; it must describe ``atomic_numbers`` and ``pbc`` (build a new
            one when the atoms or the periodic axes change).
    """

    positions: torch.Tensor = atom_field()
    atomic_numbers: torch.Tensor = atom_field()
    cell: torch.Tensor = system_field()
    pbc: torch.Tensor = system_field()
    layout: Layout = global_field()

    # ----------------------------------------------------------------------------- sizes
    @property
    def n_graphs(self) -> int:
        return int(self.cell.shape[0])

    @property
    def n_atoms(self) -> torch.Tensor:
        """(n_graphs,) int64 atoms per system."""
        return self.layout.n_atoms

    @property
    def batch(self) -> torch.Tensor:
        """(n_atoms,) int64 sorted system index of each atom."""
        return self.layout.batch

    @property
    def first_atom(self) -> torch.Tensor:
        """(n_graphs,) int64 index of each system's first atom."""
        return self.layout.first_atom

    @property
    def atom_offsets(self) -> torch.Tensor:
        """(n_graphs + 1,) int64 start of each system's atoms; the last entry is n_atoms."""
        zero = torch.zeros(1, dtype=torch.long, device=self.layout.n_atoms.device)
        return torch.cat([zero, torch.cumsum(self.layout.n_atoms, 0)])

    @property
    def periodic(self) -> bool:
        """Whether some system has a periodic axis (a host fact of the layout)."""
        return self.layout.periodic

    # ----------------------------------------------------------------------------- copies
    def replace(self: S, **changes: Any) -> S:
        """A copy with the fields named in ``changes`` set to their values.

        ``dataclasses.replace`` without running ``__init__`` again: a fifth of its cost, which
        counts twice per MD step of a small system. Structures have no ``__post_init__``; a
        subclass that adds one must be copied with ``dataclasses.replace`` instead.

        Raises:
            TypeError: a name that is not a field of this type.
        """
        unknown = changes.keys() - _field_names(type(self))
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field(s) {sorted(unknown)}")
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__)
        copy.__dict__.update(changes)
        return copy

    def to(self: S, device: torch.device | str | None = None, dtype: torch.dtype | None = None
           ) -> S:
        """Every tensor on ``device``, floating tensors cast to ``dtype`` (fields with their own
        ``to``, such as the layout, move themselves)."""
        changes = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                changes[f.name] = value.to(device=device,
                                           dtype=dtype if value.is_floating_point() else None)
            elif hasattr(value, "to"):
                changes[f.name] = value.to(device, dtype)
        return self.replace(**changes)

    # ----------------------------------------------------------------------------- ASE
    @classmethod
    def from_ase(cls: type[S], atoms: Atoms | Sequence[Atoms], dtype: torch.dtype = torch.float64,
                 device: torch.device | str = "cpu", **fields: Any) -> S:
        """A batch of one or several ``ase.Atoms``.

        Subclasses add their own arrays through :meth:`_fields_from_ase`; ``fields`` are set as
        given (e.g. the edges of a graph).

        Raises:
            InvalidStructureError: no structure given.
        """
        frames = [atoms] if isinstance(atoms, Atoms) else list(atoms)
        if not frames:
            raise InvalidStructureError("from_ase needs at least one structure")
        numbers = np.concatenate([a.numbers for a in frames]).astype(np.int64)
        pbc = np.stack([a.pbc for a in frames]).astype(bool)
        base = dict(
            positions=torch.tensor(np.concatenate([a.positions for a in frames]), dtype=dtype,
                                   device=device),
            atomic_numbers=torch.tensor(numbers, device=device),
            cell=torch.tensor(np.stack([np.asarray(a.cell) for a in frames]), dtype=dtype,
                              device=device),
            pbc=torch.tensor(pbc, device=device),
            layout=Layout.from_counts([len(a) for a in frames], atomic_numbers=numbers,
                                      pbc=pbc, device=device),
        )
        return cls(**base, **cls._fields_from_ase(frames, base, dtype), **fields)

    @classmethod
    def _fields_from_ase(cls, frames: list[Atoms], base: dict[str, Any], dtype: torch.dtype
                         ) -> dict[str, Any]:
        """The fields a subclass reads from ``frames`` beyond the base ones (``base``)."""
        return {}

    def to_ase(self) -> list[Atoms]:
        """One ``ase.Atoms`` per system (subclasses add arrays and results through
        :meth:`_host_arrays` and :meth:`_decorate_ase`)."""
        host = self._host_arrays()
        out, start = [], 0
        for g, n in enumerate(self.layout.counts):
            atoms = Atoms(numbers=host["atomic_numbers"][start:start + n],
                          positions=host["positions"][start:start + n],
                          cell=host["cell"][g], pbc=host["pbc"][g])
            self._decorate_ase(atoms, g, slice(start, start + n), host)
            out.append(atoms)
            start += n
        return out

    def _host_arrays(self) -> dict[str, np.ndarray]:
        """The numpy arrays :meth:`to_ase` reads (one device read per array)."""
        return {name: getattr(self, name).detach().cpu().numpy()
                for name in ("positions", "atomic_numbers", "cell", "pbc")}

    def _decorate_ase(self, atoms: Atoms, g: int, atom_slice: slice,
                      host: dict[str, np.ndarray]) -> None:
        """Add a subclass's data of system ``g`` (atoms ``atom_slice``) to ``atoms``."""


@functools.cache
def _field_names(structure_type: type) -> frozenset[str]:
    """The field names of a structures dataclass."""
    return frozenset(f.name for f in dataclasses.fields(structure_type))


def select_systems(take_new: torch.Tensor, new: S, old: S) -> S:
    """Merge two batches of the same layout: system g comes from ``new`` where ``take_new[g]``.

    Per-atom and per-system fields are merged by their scope metadata; global fields and fields
    without a scope (e.g. ``step``) come from ``new``.

    Args:
        take_new: (n_graphs,) bool.
        new, old: batches of the same type and layout.

    Raises:
        TypeError: a field of another scope (edges), which systems cannot be merged by.
    """
    changes = {}
    atom_mask = take_new[new.batch]
    for f in dataclasses.fields(new):
        per = f.metadata.get("per")
        if per not in ("atom", "system"):
            if per not in (None, "global"):
                raise TypeError(f"cannot select systems of {f.name!r} (per {per})")
            continue
        mask = atom_mask if per == "atom" else take_new
        a, b = getattr(new, f.name), getattr(old, f.name)
        if a is b:  # the same tensor on both sides: nothing to merge
            continue
        changes[f.name] = torch.where(mask.reshape(mask.shape + (1,) * (a.dim() - 1)), a, b)
    return new.replace(**changes)


def finite_results(energy: float, forces: np.ndarray, stress: np.ndarray) -> dict[str, Any]:
    """The finite ones of energy (eV), forces (n, 3) eV/Å and stress (3, 3) eV/Å³ as ASE
    calculator results (stress in Voigt order xx yy zz yz xz xy; forces only when all finite
    and n > 0)."""
    results: dict[str, Any] = {}
    if np.isfinite(energy):
        results["energy"] = float(energy)
    if forces.shape[0] > 0 and np.isfinite(forces).all():
        results["forces"] = forces
    if np.isfinite(stress).all():
        results["stress"] = full_to_voigt(stress)
    return results


def attach_results(atoms: Atoms, energy: float, forces: np.ndarray, stress: np.ndarray) -> None:
    """Attach :func:`finite_results` to ``atoms`` as a ``SinglePointCalculator`` (nothing when
    none is finite)."""
    results = finite_results(energy, forces, stress)
    if results:
        atoms.calc = SinglePointCalculator(atoms, **results)

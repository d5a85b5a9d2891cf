"""The batched MD state: many independent systems advanced by one set of tensor operations.

Units are ASE's (see :mod:`mlip.units`): positions Å, momenta amu·Å/t_ASE, masses amu, energies
eV, stress eV/Å³. Positions are kept *unwrapped* (never folded back into the cell) so that the
neighbour-list skin test sees true displacements. Cell rows are lattice vectors, as in ASE.

Every field carries metadata saying whether it is per atom or per system, so that
:func:`select_systems` can merge two states system by system (used to freeze a failed or a
converged system while the others carry on).
"""

from __future__ import annotations

import dataclasses
import functools
import weakref
from dataclasses import dataclass, field
from typing import Any, Sequence, TypeVar

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from mlip.errors import InvalidStructureError
from mlip.md.constraints import Constraints, constraints_from_atoms
from mlip.md.noise import atom_normals
from mlip.nn.scatter import scatter_sum
from mlip.units import kB

__all__ = ["MDState", "ForceOutput", "select_systems", "state_from_atoms", "state_to_atoms",
           "kinetic_energy", "temperature_K", "instantaneous_pressure", "volume",
           "maxwell_boltzmann_momenta", "atom_field", "system_field", "degrees_of_freedom",
           "constrain_momenta"]

S = TypeVar("S", bound="MDState")

#: Noise stream of the initial momenta (0 and 1 are the thermostat's and the barostat's).
_MOMENTA_STREAM = 2


def atom_field() -> dataclasses.Field:
    """A dataclass field whose tensor has a leading ``n_atoms`` dimension."""
    return field(metadata={"per": "atom"})


def system_field() -> dataclasses.Field:
    """A dataclass field whose tensor has a leading ``n_graphs`` dimension."""
    return field(metadata={"per": "system"})


@dataclass(frozen=True, kw_only=True)
class ForceOutput:
    """What a force function returns for a batch.

    Attributes:
        energy: (n_graphs,) eV. forces: (n_atoms, 3) eV/Å.
        stress: (n_graphs, 3, 3) eV/Å³, ASE sign; NaN where not computed or not periodic.
        min_distance: (n_graphs,) Å, shortest interatomic distance within the cutoff (inf if none).
    """

    energy: torch.Tensor
    forces: torch.Tensor
    stress: torch.Tensor
    min_distance: torch.Tensor


@dataclass(frozen=True, kw_only=True)
class MDState:
    """Positions, momenta and the latest forces of a batch of systems (float64).

    Attributes:
        positions: (n_atoms, 3) Å, unwrapped.
        momenta: (n_atoms, 3) amu·Å/t_ASE.
        masses: (n_atoms,) amu.
        atomic_numbers: (n_atoms,) int64.
        batch: (n_atoms,) int64 sorted system index of each atom.
        cell: (n_graphs, 3, 3) Å, rows are lattice vectors.
        pbc: (n_graphs, 3) bool.
        forces: (n_atoms, 3) eV/Å at ``positions``.
        energy: (n_graphs,) eV, potential energy at ``positions``.
        stress: (n_graphs, 3, 3) eV/Å³ (NaN when not computed).
        min_distance: (n_graphs,) Å, shortest neighbour distance at ``positions``.
        step: number of steps taken since the start of the run.
        constraints: fixed atoms and fixed centres of mass (:mod:`mlip.md.constraints`), or
            None when no system has any. They never change during a run, so they carry no
            per-atom/per-system metadata and :func:`select_systems` takes them from ``new``.
    """

    positions: torch.Tensor = atom_field()
    momenta: torch.Tensor = atom_field()
    masses: torch.Tensor = atom_field()
    atomic_numbers: torch.Tensor = atom_field()
    batch: torch.Tensor = atom_field()
    cell: torch.Tensor = system_field()
    pbc: torch.Tensor = system_field()
    forces: torch.Tensor = atom_field()
    energy: torch.Tensor = system_field()
    stress: torch.Tensor = system_field()
    min_distance: torch.Tensor = system_field()
    step: int = 0
    constraints: Constraints | None = None

    @property
    def n_graphs(self) -> int:
        return int(self.cell.shape[0])

    @property
    def n_atoms(self) -> torch.Tensor:
        """(n_graphs,) int64 number of atoms per system (computed once per ``batch`` tensor)."""
        return _layout(self.batch, self.n_graphs)[0]

    @property
    def first_atom(self) -> torch.Tensor:
        """(n_graphs,) int64 index of each system's first atom."""
        return _layout(self.batch, self.n_graphs)[1]

    def replace(self: S, **changes: Any) -> S:
        """A copy with the fields named in ``changes`` set to their values.

        ``dataclasses.replace`` without running ``__init__`` again: a fifth of its cost, which
        counts twice per MD step of a small system. States have no ``__post_init__``; a
        subclass that adds one must be copied with ``dataclasses.replace`` instead.

        Raises:
            TypeError: a name that is not a field of this state type.
        """
        unknown = changes.keys() - _field_names(type(self))
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field(s) {sorted(unknown)}")
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__)
        copy.__dict__.update(changes)
        return copy

    def with_forces(self: S, out: ForceOutput, **changes: Any) -> S:
        """A copy holding the energy, forces and stress of ``out`` (and ``changes``, fields by
        name, set in the same copy)."""
        return self.replace(forces=out.forces, energy=out.energy, stress=out.stress,
                            min_distance=out.min_distance, **changes)


@functools.cache
def _field_names(state_type: type) -> frozenset[str]:
    """The field names of a state dataclass."""
    return frozenset(f.name for f in dataclasses.fields(state_type))


_LAYOUTS: dict[int, tuple[weakref.ref, int, torch.Tensor, torch.Tensor]] = {}


def _layout(batch: torch.Tensor, n_graphs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Atoms per system and first atom of each system, (n_graphs,) int64 each.

    Every state of a run shares one ``batch`` tensor (``dataclasses.replace`` copies the
    reference), so the counts are memoised on its identity and version instead of being
    recounted several times per step.
    """
    entry = _LAYOUTS.get(id(batch))
    if (entry is not None and entry[0]() is batch and entry[1] == batch._version
            and entry[2].shape[0] == n_graphs):
        return entry[2], entry[3]
    counts = torch.bincount(batch, minlength=n_graphs)
    first = torch.cumsum(counts, 0) - counts
    key = id(batch)
    _LAYOUTS[key] = (weakref.ref(batch, lambda _, k=key: _LAYOUTS.pop(k, None)),
                     batch._version, counts, first)
    return counts, first


def select_systems(take_new: torch.Tensor, new: S, old: S) -> S:
    """Merge two states of the same batch: system g comes from ``new`` where ``take_new[g]``.

    Args:
        take_new: (n_graphs,) bool.
        new, old: states of the same type and batch layout.

    Returns:
        A state of the same type; non-tensor fields (``step``) come from ``new``.
    """
    changes = {}
    atom_mask = take_new[new.batch]
    for f in dataclasses.fields(new):
        per = f.metadata.get("per")
        if per is None:
            continue
        mask = atom_mask if per == "atom" else take_new
        a, b = getattr(new, f.name), getattr(old, f.name)
        if a is b:  # shared (cell in NVE, masses, batch, ...): keep the object, which the
            continue  # neighbour list and the models recognise by identity without a sync
        changes[f.name] = torch.where(mask.reshape(mask.shape + (1,) * (a.dim() - 1)), a, b)
    return new.replace(**changes)


def kinetic_energy(momenta: torch.Tensor, masses: torch.Tensor, batch: torch.Tensor,
                   n_graphs: int) -> torch.Tensor:
    """Kinetic energy Σ p²/2m per system, (n_graphs,) eV."""
    per_atom = 0.5 * (momenta * momenta).sum(dim=1) / masses
    return scatter_sum(per_atom, batch, n_graphs)


def degrees_of_freedom(state: MDState) -> torch.Tensor:
    """3N minus the degrees of freedom the constraints remove, per system (ASE's
    ``get_number_of_degrees_of_freedom``), (n_graphs,) float64."""
    n_dof = 3.0 * state.n_atoms.to(torch.float64)
    if state.constraints is None:
        return n_dof
    return n_dof - state.constraints.removed_dof


def temperature_K(state: MDState) -> torch.Tensor:
    """Instantaneous temperature 2K/(N_f k_B) per system, N_f from :func:`degrees_of_freedom`
    (ASE's ``get_temperature``; 0 K for a system without degrees of freedom), (n_graphs,) K."""
    kin = kinetic_energy(state.momenta, state.masses, state.batch, state.n_graphs)
    if state.constraints is None:
        return 2.0 * kin / (3.0 * state.n_atoms.to(kin.dtype) * kB)
    n_dof = degrees_of_freedom(state).to(kin.dtype)
    return torch.where(n_dof > 0, 2.0 * kin / (n_dof.clamp_min(1.0) * kB), torch.zeros_like(kin))


def constrain_momenta(state: MDState, momenta: torch.Tensor) -> torch.Tensor:
    """``momenta`` (or MD forces) projected onto the constraints of ``state`` (unchanged
    without constraints), (n_atoms, 3) in the units of ``momenta``."""
    if state.constraints is None:
        return momenta
    return state.constraints.project_momenta(momenta, state.masses, state.batch)


def volume(cell: torch.Tensor) -> torch.Tensor:
    """|det(cell)| per system, (n_graphs,) Å³."""
    return torch.linalg.det(cell).abs()


def instantaneous_pressure(state: MDState) -> torch.Tensor:
    """Pressure tensor P = (Σ p⊗p/m)/V − σ per system, (n_graphs, 3, 3) eV/Å³.

    σ is the configurational stress in ASE's sign (positive = tensile); the kinetic term
    is the ideal-gas part. Its trace over 3 is the scalar pressure.
    """
    kinetic = scatter_sum(torch.einsum("ni,nj->nij", state.momenta, state.momenta)
                          / state.masses[:, None, None], state.batch, state.n_graphs)
    return kinetic / volume(state.cell)[:, None, None] - state.stress


def maxwell_boltzmann_momenta(masses: torch.Tensor, batch: torch.Tensor, n_graphs: int,
                              temperature: float, seed: int,
                              constraints: Constraints | None = None) -> torch.Tensor:
    """Momenta drawn at ``temperature`` K with zero total momentum per system (if > 1 atom).

    The draw is rescaled so that each system's instantaneous temperature (3N convention) is
    exactly ``temperature``, like ASE's ``MaxwellBoltzmannDistribution(force_temp=True)``.
    System g draws from its own counter-based stream with seed ``seed + g``
    (:mod:`mlip.md.noise`, stream 2 of step 0), so its momenta do not depend on the other
    systems of the batch (alone with seed ``seed + g`` it gets the same) nor on the device.
    With ``constraints``, fixed atoms get zero momenta, ``FixCom`` systems zero total momentum,
    and the temperature counts the remaining degrees of freedom (ASE's ``get_temperature``).

    Returns:
        (n_atoms, 3) amu·Å/t_ASE.
    """
    counts = torch.bincount(batch, minlength=n_graphs)
    seeds = seed + torch.arange(n_graphs, device=batch.device)
    noise = atom_normals(seeds, 0, _MOMENTA_STREAM, batch, torch.cumsum(counts, 0) - counts,
                         masses.dtype)
    momenta = noise * torch.sqrt(masses * kB * temperature)[:, None]
    counts = counts.to(masses.dtype)
    total = scatter_sum(momenta, batch, n_graphs)
    mass_sum = scatter_sum(masses, batch, n_graphs)
    drift = torch.where((counts > 1)[:, None], total / mass_sum[:, None], torch.zeros_like(total))
    momenta = momenta - masses[:, None] * drift[batch]
    n_dof = 3.0 * counts
    if constraints is not None:
        momenta = constraints.project_momenta(momenta, masses, batch)
        n_dof = n_dof - constraints.removed_dof
    kin = kinetic_energy(momenta, masses, batch, n_graphs)
    target = 0.5 * n_dof * kB * temperature
    scale = torch.where(kin > 0, torch.sqrt(target / kin.clamp_min(1e-300)), torch.zeros_like(kin))
    return momenta * scale[batch, None]


def state_from_atoms(atoms: Sequence[Atoms], device: str | torch.device = "cpu") -> MDState:
    """A float64 state of one or several structures (momenta from ``atoms``, forces NaN).

    ASE ``FixAtoms`` and ``FixCom`` constraints become the state's ``constraints`` (the momenta
    are projected onto them); any other ASE constraint is refused.

    Raises:
        InvalidStructureError: for an empty list or an empty structure (names its index).
        ConfigError: an ASE constraint other than ``FixAtoms``/``FixCom`` (names its class
            and the structure index).
    """
    atoms = list(atoms)
    if not atoms:
        raise InvalidStructureError("no structures given")
    for k, a in enumerate(atoms):
        if len(a) == 0:
            raise InvalidStructureError(f"structure {k} has no atoms")
    f64 = dict(dtype=torch.float64, device=device)
    positions = torch.tensor(np.concatenate([a.positions for a in atoms]), **f64)
    n_graphs = len(atoms)
    nan = float("nan")
    batch = torch.repeat_interleave(torch.arange(n_graphs, device=device),
                                    torch.tensor([len(a) for a in atoms], device=device))
    masses = torch.tensor(np.concatenate([a.get_masses() for a in atoms]), **f64)
    momenta = torch.tensor(np.concatenate([a.get_momenta() for a in atoms]), **f64)
    constraints = constraints_from_atoms(atoms, batch)
    if constraints is not None:
        momenta = constraints.project_momenta(momenta, masses, batch)
    return MDState(
        positions=positions,
        momenta=momenta,
        masses=masses,
        atomic_numbers=torch.tensor(np.concatenate([a.numbers for a in atoms]), device=device),
        batch=batch,
        cell=torch.tensor(np.stack([np.asarray(a.cell) for a in atoms]), **f64),
        pbc=torch.tensor(np.stack([a.pbc for a in atoms]), device=device),
        forces=torch.full_like(positions, nan),
        energy=torch.full((n_graphs,), nan, **f64),
        stress=torch.full((n_graphs, 3, 3), nan, **f64),
        min_distance=torch.full((n_graphs,), float("inf"), **f64),
        constraints=constraints,
    )


def state_to_atoms(state: MDState) -> list[Atoms]:
    """One ``ase.Atoms`` per system with momenta, its ASE constraints (``FixAtoms``,
    ``FixCom``) and a calculator holding energy, raw forces and stress (``get_forces()``
    applies the constraints, as ASE does)."""
    counts = state.n_atoms.tolist()
    arrays = {name: getattr(state, name).detach().cpu().numpy()
              for name in ("positions", "momenta", "masses", "atomic_numbers", "forces")}
    cells, pbcs = state.cell.detach().cpu().numpy(), state.pbc.cpu().numpy()
    energies, stresses = state.energy.detach().cpu().numpy(), state.stress.detach().cpu().numpy()
    constraints = None if state.constraints is None else state.constraints.to_ase(counts)
    out, start = [], 0
    for g, n in enumerate(counts):
        sl = slice(start, start + n)
        start += n
        atoms = Atoms(numbers=arrays["atomic_numbers"][sl], positions=arrays["positions"][sl],
                      cell=cells[g], pbc=pbcs[g], masses=arrays["masses"][sl],
                      momenta=arrays["momenta"][sl])
        if constraints is not None:
            atoms.set_constraint(constraints[g])
        results = {}
        if np.isfinite(energies[g]):
            results["energy"] = float(energies[g])
        if np.isfinite(arrays["forces"][sl]).all():
            results["forces"] = arrays["forces"][sl]
        s = stresses[g]
        if np.isfinite(s).all():
            results["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
        if results:
            atoms.calc = SinglePointCalculator(atoms, **results)
        out.append(atoms)
    return out

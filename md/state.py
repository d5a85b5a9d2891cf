"""The batched MD state: many independent systems advanced by one set of tensor operations.

Units are ASE's (see :mod:`mlip.units`): positions Å, momenta amu·Å/t_ASE, masses amu, energies
eV, stress eV/Å³. Positions are kept *unwrapped* (never folded back into the cell) so that the
neighbour-list skin test sees true displacements. Cell rows are lattice vectors, as in ASE.

Every field carries metadata saying whether it is per atom, per system or global
(:mod:`mlip.structures`), so that :func:`select_systems` can merge two states system by system
(used to freeze a failed or a converged system while the others carry on).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence, TypeVar

import numpy as np
import torch
from ase import Atoms

from mlip.errors import InvalidStructureError
from mlip.md.constraints import Constraints, constraints_from_atoms
from mlip.md.noise import atom_normals
from mlip.nn.scatter import scatter_sum
from mlip.structures import (
    Structures,
    atom_field,
    attach_results,
    global_field,
    select_systems,
    system_field,
)
from mlip.units import kB

__all__ = ["MDState", "ForceOutput", "select_systems", "state_from_atoms", "state_to_atoms",
           "kinetic_energy", "temperature_K", "instantaneous_pressure", "volume",
           "maxwell_boltzmann_momenta", "atom_field", "system_field", "degrees_of_freedom",
           "constrain_momenta"]

S = TypeVar("S", bound="MDState")

#: Noise stream of the initial momenta (0 and 1 are the thermostat's and the barostat's).
_MOMENTA_STREAM = 2


@dataclass(frozen=True, kw_only=True)
class ForceOutput:
    """What a force function returns for a batch.

    Attributes:
        energy: (n_graphs,) eV. forces: (n_atoms, 3) eV/Å.
        stress: (n_graphs, 3, 3) eV/Å³, ASE sign; NaN where not computed or not periodic.
        min_distance: (n_graphs,) Å, shortest interatomic distance within the cutoff (inf if none).
        stress_computed: False when ``stress`` is a NaN placeholder (the stress was not asked
            for), which the blow-up checks then skip.
    """

    energy: torch.Tensor
    forces: torch.Tensor
    stress: torch.Tensor
    min_distance: torch.Tensor
    stress_computed: bool = True


@dataclass(frozen=True, kw_only=True)
class MDState(Structures):
    """Positions, momenta and the latest forces of a batch of systems (float64).

    The structure fields (positions, unwrapped; atomic_numbers; cell; pbc; layout) are those of
    :class:`mlip.structures.Structures`; ``batch``, ``n_atoms`` and ``first_atom`` come from the
    layout.

    Attributes:
        momenta: (n_atoms, 3) amu·Å/t_ASE.
        masses: (n_atoms,) amu.
        forces: (n_atoms, 3) eV/Å at ``positions``.
        energy: (n_graphs,) eV, potential energy at ``positions``.
        stress: (n_graphs, 3, 3) eV/Å³ (NaN when not computed).
        min_distance: (n_graphs,) Å, shortest neighbour distance at ``positions``.
        stress_computed: whether ``stress`` was computed by the force function (False: a NaN
            placeholder, not checked by :mod:`mlip.md.guard`).
        step: number of steps taken since the start of the run.
        constraints: fixed atoms and fixed centres of mass (:mod:`mlip.md.constraints`), or
            None when no system has any. They never change during a run, so they are global:
            :func:`select_systems` takes them from ``new``.
    """

    momenta: torch.Tensor = atom_field()
    masses: torch.Tensor = atom_field()
    forces: torch.Tensor = atom_field()
    energy: torch.Tensor = system_field()
    stress: torch.Tensor = system_field()
    min_distance: torch.Tensor = system_field()
    stress_computed: bool = global_field(default=False)
    step: int = 0
    constraints: Constraints | None = global_field(default=None)

    def with_forces(self: S, out: ForceOutput, **changes: Any) -> S:
        """A copy holding the energy, forces and stress of ``out`` (and ``changes``, fields by
        name, set in the same copy)."""
        return self.replace(forces=out.forces, energy=out.energy, stress=out.stress,
                            min_distance=out.min_distance, stress_computed=out.stress_computed,
                            **changes)

    @classmethod
    def _fields_from_ase(cls, frames: list[Atoms], base: dict[str, Any], dtype: torch.dtype
                         ) -> dict[str, Any]:
        """Masses, momenta (projected onto the constraints), constraints; NaN forces, energy
        and stress; infinite shortest distance."""
        positions, batch = base["positions"], base["layout"].batch
        f64 = dict(dtype=dtype, device=positions.device)
        n_graphs, nan = len(frames), float("nan")
        masses = torch.tensor(np.concatenate([a.get_masses() for a in frames]), **f64)
        momenta = torch.tensor(np.concatenate([a.get_momenta() for a in frames]), **f64)
        constraints = constraints_from_atoms(frames, batch)
        if constraints is not None:
            momenta = constraints.project_momenta(momenta, masses, batch)
        return dict(momenta=momenta, masses=masses, forces=torch.full_like(positions, nan),
                    energy=torch.full((n_graphs,), nan, **f64),
                    stress=torch.full((n_graphs, 3, 3), nan, **f64),
                    min_distance=torch.full((n_graphs,), float("inf"), **f64),
                    constraints=constraints)

    def _host_arrays(self) -> dict[str, np.ndarray]:
        host = super()._host_arrays()
        for name in ("momenta", "masses", "forces", "energy", "stress"):
            host[name] = getattr(self, name).detach().cpu().numpy()
        host["constraints"] = (None if self.constraints is None
                               else self.constraints.to_ase(list(self.layout.counts)))
        return host

    def _decorate_ase(self, atoms: Atoms, g: int, atom_slice: slice,
                      host: dict[str, np.ndarray]) -> None:
        """Masses, momenta, ASE constraints and a calculator with energy, raw forces, stress."""
        atoms.set_masses(host["masses"][atom_slice])
        atoms.set_momenta(host["momenta"][atom_slice], apply_constraint=False)
        if host["constraints"] is not None:
            atoms.set_constraint(host["constraints"][g])
        attach_results(atoms, host["energy"][g], host["forces"][atom_slice], host["stress"][g])


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
    return MDState.from_ase(atoms, torch.float64, device)


def state_to_atoms(state: MDState) -> list[Atoms]:
    """One ``ase.Atoms`` per system with momenta, its ASE constraints (``FixAtoms``,
    ``FixCom``) and a calculator holding energy, raw forces and stress (``get_forces()``
    applies the constraints, as ASE does)."""
    return state.to_ase()

"""ASE constraints on the batched state: fixed atoms (``FixAtoms``) and a fixed centre of mass
(``FixCom``).

:func:`constraints_from_atoms` reads ``atoms.constraints`` of every structure of a batch into
one :class:`Constraints`; any other ASE constraint class is refused with an error naming it and
the structure, never ignored. The integrators and FIRE project momenta and forces with it; the
potential's forces kept in the state stay raw (as in ASE, whose calculators return raw forces
and whose ``get_forces()`` applies the constraints).

Projections, per system (sums over the atoms that are not fixed):

* momenta and MD forces (the rates of the momenta): fixed atoms → 0; with ``FixCom``
  x_i ← x_i − m_i·Σx/Σm, which keeps the total momentum at zero and so Σ m_i r_i constant;
* relaxation forces: fixed atoms → 0; with ``FixCom`` ASE's projection
  F_i ← F_i − m_i·(Σ m F)/(Σ m²), which keeps Σ m_i Δr_i = 0 for displacements along F.

A cell change (NPT, cell relaxation) moves every atom affinely with the cell, fixed atoms
included (their fractional coordinates stay fixed), as ASE's cell filters do.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from ase import Atoms
from ase.constraints import FixAtoms, FixCom

from mlip.errors import ConfigError
from mlip.nn.scatter import scatter_sum

__all__ = ["Constraints", "constraints_from_atoms", "SUPPORTED_CONSTRAINTS"]

#: ASE constraint classes honoured by the batched MD and relaxation.
SUPPORTED_CONSTRAINTS = ("FixAtoms", "FixCom")


@dataclass(frozen=True, eq=False)
class Constraints:
    """The constraints of a batch (they do not change during a run).

    Attributes:
        fixed: (n_atoms,) bool, atoms held in place (``FixAtoms``).
        fix_com: (n_graphs,) bool, systems whose centre of mass is fixed (``FixCom``).
        removed_dof: (n_graphs,) float64, degrees of freedom removed: 3 per fixed atom, 3 for
            ``FixCom`` (ASE's ``get_removed_dof``).
        any_fix_com: whether any system has ``FixCom`` (host-side flag: without one the
            projections skip the centre-of-mass sums).
    """

    fixed: torch.Tensor
    fix_com: torch.Tensor
    removed_dof: torch.Tensor
    any_fix_com: bool

    @classmethod
    def build(cls, fixed: torch.Tensor, fix_com: torch.Tensor,
              batch: torch.Tensor) -> Constraints:
        """Constraints from the fixed-atom mask (n_atoms,) and FixCom flags (n_graphs,)."""
        n_graphs = fix_com.shape[0]
        removed = 3.0 * scatter_sum(fixed.to(torch.float64), batch, n_graphs)
        removed = removed + 3.0 * fix_com.to(torch.float64)
        return cls(fixed=fixed, fix_com=fix_com, removed_dof=removed,
                   any_fix_com=bool(fix_com.any()))

    @functools.cached_property
    def free(self) -> torch.Tensor:
        """(n_atoms, 1) float64, 0 for a fixed atom and 1 otherwise."""
        return (~self.fixed).to(torch.float64)[:, None]

    def project_momenta(self, momenta: torch.Tensor, masses: torch.Tensor,
                        batch: torch.Tensor) -> torch.Tensor:
        """Momenta (or MD forces) with fixed atoms zeroed and, for ``FixCom`` systems, the
        centre-of-mass velocity removed, (n_atoms, 3) in the units of ``momenta``."""
        free = self.free.to(momenta.dtype)
        momenta = momenta * free
        if not self.any_fix_com:
            return momenta
        n_graphs = self.fix_com.shape[0]
        total = scatter_sum(momenta, batch, n_graphs)  # (n_graphs, 3)
        mass = scatter_sum(masses * free[:, 0], batch, n_graphs).clamp_min(1e-300)
        drift = total / mass[:, None] * self.fix_com[:, None]  # velocity of the COM
        return momenta - (masses[:, None] * free) * drift[batch]

    def project_forces(self, forces: torch.Tensor, masses: torch.Tensor,
                       batch: torch.Tensor) -> torch.Tensor:
        """Relaxation forces: fixed atoms zeroed and, for ``FixCom`` systems, ASE's projection
        F − m·(Σ m F)/(Σ m²), (n_atoms, 3) eV/Å."""
        free = self.free.to(forces.dtype)
        forces = forces * free
        if not self.any_fix_com:
            return forces
        n_graphs = self.fix_com.shape[0]
        weights = masses[:, None] * free  # (n_atoms, 1)
        moment = scatter_sum(weights * forces, batch, n_graphs)  # (n_graphs, 3)
        norm = scatter_sum((weights * weights)[:, 0], batch, n_graphs).clamp_min(1e-300)
        lam = moment / norm[:, None] * self.fix_com[:, None]
        return forces - weights * lam[batch]

    def to_ase(self, counts: Sequence[int]) -> list[list]:
        """The ASE constraint objects of every system (atom indices within the system), one
        list per system; ``counts`` are the systems' numbers of atoms, in batch order."""
        fixed = self.fixed.cpu().numpy()
        starts = np.cumsum(counts) - np.asarray(counts)
        out = []
        for g, com in enumerate(self.fix_com.cpu().tolist()):
            system: list = []
            indices = np.nonzero(fixed[starts[g]:starts[g] + counts[g]])[0]
            if indices.size:
                system.append(FixAtoms(indices=indices))
            if com:
                system.append(FixCom())
            out.append(system)
        return out

    def to_dict(self) -> dict[str, torch.Tensor]:
        """The tensors on the CPU (what an MD checkpoint stores)."""
        return {"fixed": self.fixed.cpu(), "fix_com": self.fix_com.cpu(),
                "removed_dof": self.removed_dof.cpu()}

    @classmethod
    def from_dict(cls, stored: dict[str, torch.Tensor],
                  device: str | torch.device = "cpu") -> Constraints:
        """Inverse of :meth:`to_dict`, on ``device``."""
        fix_com = stored["fix_com"].to(device)
        return cls(fixed=stored["fixed"].to(device), fix_com=fix_com,
                   removed_dof=stored["removed_dof"].to(device),
                   any_fix_com=bool(stored["fix_com"].any()))


def _read(atoms: Atoms, index: int) -> tuple[np.ndarray, bool]:
    """Fixed-atom mask and FixCom flag of structure ``index``.

    Raises:
        ConfigError: a constraint other than ``FixAtoms``/``FixCom`` (named, with the index),
            or a ``FixCom`` restricted to some atoms.
    """
    fixed = np.zeros(len(atoms), dtype=bool)
    fix_com = False
    for c in atoms.constraints:
        if type(c) is FixAtoms:
            fixed[np.asarray(c.get_indices(), dtype=np.int64)] = True
        elif type(c) is FixCom and c.index == slice(None):
            fix_com = True
        else:
            name = type(c).__name__
            detail = " on a subset of the atoms" if type(c) is FixCom else ""
            raise ConfigError(
                f"structure {index}: ASE constraint {name}{detail} is not supported by the "
                f"batched MD and relaxation (supported: {', '.join(SUPPORTED_CONSTRAINTS)}); "
                "remove it, or run the structure through the ASE calculator "
                "(mlip.calculators.MLIPCalculator) with ase.md / ase.optimize")
    return fixed, fix_com


def constraints_from_atoms(atoms: Sequence[Atoms], batch: torch.Tensor) -> Constraints | None:
    """The constraints of a batch built from ``atoms`` (None when no structure has any).

    Args:
        atoms: the structures, in batch order. batch: (n_atoms,) system index of each atom
            (its device is used).

    Raises:
        ConfigError: an unsupported ASE constraint, naming its class and the structure index.
    """
    read = [_read(a, k) for k, a in enumerate(atoms)]
    if not any(fixed.any() or com for fixed, com in read):
        return None
    device = batch.device
    fixed = torch.tensor(np.concatenate([f for f, _ in read]), device=device)
    fix_com = torch.tensor([com for _, com in read], dtype=torch.bool, device=device)
    return Constraints.build(fixed, fix_com, batch)

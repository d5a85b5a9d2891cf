"""Reference labels beside the graph: :class:`Targets` and the training pair :class:`LabelledBatch`.

An :class:`~mlip.graph.AtomicGraph` describes structures only; the labels a training or
evaluation batch is compared with travel next to it as :class:`Targets`, the two together as a
:class:`LabelledBatch` ``(graph, targets)``. Labels that a frame lacks are NaN (masked in
losses), never zero. Reading labels from ``ase.Atoms`` (:meth:`Targets.from_ase`) and writing
them back (:meth:`Targets.to_ase_results`) go through this module only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from mlip.errors import InvalidStructureError
from mlip.graph import AtomicGraph
from mlip.structures import finite_results, voigt_to_full

__all__ = ["Targets", "LabelledBatch"]

_FIELDS = ("energy", "forces", "stress", "weight")


@dataclass(frozen=True, slots=True)
class Targets:
    """Reference labels of a batch. Absent labels are NaN.

    Attributes:
        energy: (n_graphs,) eV, total energy.
        forces: (n_atoms, 3) eV/Å.
        stress: (n_graphs, 3, 3) eV/Å³, ASE sign (positive = tensile).
        weight: (n_graphs,) dimensionless per-frame loss weight.
    """

    energy: torch.Tensor
    forces: torch.Tensor
    stress: torch.Tensor
    weight: torch.Tensor

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Targets:
        """Move to ``device`` and cast floating tensors to ``dtype``."""
        return Targets(*(getattr(self, f).to(device=device, dtype=dtype) for f in _FIELDS))

    @staticmethod
    def collate(items: Sequence[Targets]) -> Targets:
        """Concatenate the labels of several batches in order."""
        return Targets(*(torch.cat([getattr(t, f) for t in items]) for f in _FIELDS))

    @staticmethod
    def missing(n_atoms: int, n_graphs: int = 1, dtype: torch.dtype = torch.float64) -> Targets:
        """All-NaN labels (weight 1) for a batch without reference data."""
        nan = float("nan")
        return Targets(
            energy=torch.full((n_graphs,), nan, dtype=dtype),
            forces=torch.full((n_atoms, 3), nan, dtype=dtype),
            stress=torch.full((n_graphs, 3, 3), nan, dtype=dtype),
            weight=torch.ones(n_graphs, dtype=dtype),
        )

    def select(self, graph: int, atoms: slice) -> Targets:
        """The labels of graph ``graph`` whose atoms are ``atoms`` (a one-graph ``Targets``)."""
        g = slice(graph, graph + 1)
        return Targets(self.energy[g], self.forces[atoms], self.stress[g], self.weight[g])

    def with_weight(self, weight: torch.Tensor) -> Targets:
        """The same labels with per-frame loss weights ``weight`` (n_graphs,)."""
        return dataclasses.replace(self, weight=weight.to(self.weight.dtype))

    @classmethod
    def from_ase(cls, atoms: Atoms | Sequence[Atoms], dtype: torch.dtype = torch.float64
                 ) -> Targets:
        """Labels read from the calculator results of one or several structures (NaN where a
        property is not available; weight 1). Stress may be Voigt (6,) or (3, 3)."""
        frames = [atoms] if isinstance(atoms, Atoms) else list(atoms)
        return cls.collate([_from_one(a, dtype) for a in frames])

    def to_ase_results(self) -> dict:
        """Finite labels of a one-graph ``Targets`` as ASE calculator results (stress Voigt
        xx yy zz yz xz xy, eV/Å³)."""
        return finite_results(float(self.energy[0]), self.forces.detach().cpu().numpy(),
                              self.stress[0].detach().cpu().numpy())


def _from_one(atoms: Atoms, dtype: torch.dtype) -> Targets:
    """Labels of one structure from ``atoms.calc``."""
    t = Targets.missing(len(atoms), 1, dtype)
    results = getattr(atoms.calc, "results", {}) if atoms.calc is not None else {}
    energy, forces, stress = t.energy, t.forces, t.stress
    if "energy" in results:
        energy = torch.tensor([float(results["energy"])], dtype=dtype)
    if "forces" in results:
        forces = torch.tensor(np.asarray(results["forces"]), dtype=dtype)
    if "stress" in results:
        s = np.asarray(results["stress"], dtype=float)
        if s.shape == (6,):
            s = voigt_to_full(s)
        stress = torch.tensor(s, dtype=dtype).reshape(1, 3, 3)
    return Targets(energy, forces, stress, t.weight)


@dataclass(frozen=True, slots=True)
class LabelledBatch:
    """A training/evaluation batch: the structures' graph and their reference labels.

    Unpacks as ``graph, targets = batch``.

    Attributes:
        graph: the batch of ``n_graphs`` structures with its neighbour list.
        targets: labels of the same structures, in the same order.
    """

    graph: AtomicGraph
    targets: Targets

    def __iter__(self) -> Iterator:
        return iter((self.graph, self.targets))

    @property
    def n_graphs(self) -> int:
        return self.graph.n_graphs

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> LabelledBatch:
        """Move both to ``device``; cast floating tensors to ``dtype``."""
        return LabelledBatch(self.graph.to(device, dtype), self.targets.to(device, dtype))

    @staticmethod
    def collate(items: Sequence[LabelledBatch]) -> LabelledBatch:
        """Concatenate batches in order."""
        if not items:
            raise InvalidStructureError("collate needs at least one batch")
        return LabelledBatch(AtomicGraph.collate([b.graph for b in items]),
                             Targets.collate([b.targets for b in items]))

    def split(self) -> list[LabelledBatch]:
        """One batch of one structure per graph."""
        offsets = self.graph.atom_offsets.tolist()
        return [
            LabelledBatch(graph, self.targets.select(g, slice(offsets[g], offsets[g + 1])))
            for g, graph in enumerate(self.graph.split())
        ]

    @classmethod
    def from_ase(cls, atoms: Atoms | Sequence[Atoms], cutoff: float,
                 dtype: torch.dtype = torch.float64) -> LabelledBatch:
        """Batch structures (neighbour list at ``cutoff`` Å) with the labels of their
        calculators (see :meth:`Targets.from_ase`)."""
        return cls(AtomicGraph.from_ase(atoms, cutoff, dtype), Targets.from_ase(atoms, dtype))

    def to_ase(self) -> list[Atoms]:
        """The structures as ``ase.Atoms``; finite labels become a ``SinglePointCalculator``."""
        out = []
        for atoms, one in zip(self.graph.to_ase(), self.split()):
            results = one.targets.to_ase_results()
            if results:
                atoms.calc = SinglePointCalculator(atoms, **results)
            out.append(atoms)
        return out

"""The typed batch that flows through mlip: :class:`AtomicGraph` (labels: :mod:`mlip.targets`).

Conventions (ASE units, see ``docs/conventions.md``):

* cell rows are lattice vectors (Å), as in ASE; never the transpose;
* ``edge_index[0]`` is the centre atom *i* (receives messages), ``edge_index[1]`` the neighbour
  *j* (sends); the edge vector is ``r_ij = positions[j] - positions[i] + edge_shift @ cell``
  (the cell of the graph that holds *i*), recomputed inside models so that autograd through
  ``positions`` and a strain tensor yields forces and stress;
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from ase import Atoms
from ase.data import chemical_symbols

from mlip.errors import InvalidStructureError
from mlip.neighbors import neighbor_list
from mlip.neighbors._validate import check_cells

__all__ = ["AtomicGraph"]

_MAX_Z = len(chemical_symbols) - 1


@dataclass(frozen=True, slots=True)
class AtomicGraph:
    """A batch of ``n_graphs`` atomic structures with their neighbour graph.

    A single structure is a batch of one. See the module docstring for conventions.

    Attributes:
        positions: (n_atoms, 3) Å.
        atomic_numbers: (n_atoms,) int64.
        cell: (n_graphs, 3, 3) Å, rows are lattice vectors (zeros allowed when not periodic).
        pbc: (n_graphs, 3) bool.
        batch: (n_atoms,) int64, index of the graph each atom belongs to (sorted).
        n_atoms: (n_graphs,) int64 atoms per graph.
        edge_index: (2, n_edges) int64, row 0 centre i, row 1 neighbour j (global atom indices).
        edge_shift: (n_edges, 3) int64 integer cell images S.
        cutoff: Å, radius the edges were built with.
        periodic: False when no graph has a periodic axis (all shifts are zero, so the image
            term S·cell of the edge vectors is skipped); None: read from ``pbc`` where that is
            free (CPU), else assumed periodic. :meth:`to` records it before leaving the CPU.
    """

    positions: torch.Tensor
    atomic_numbers: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    batch: torch.Tensor
    n_atoms: torch.Tensor
    edge_index: torch.Tensor
    edge_shift: torch.Tensor
    cutoff: float
    periodic: bool | None = None

    # ----------------------------------------------------------------------------- sizes
    @property
    def n_graphs(self) -> int:
        return int(self.cell.shape[0])

    @property
    def n_edges(self) -> int:
        return int(self.edge_index.shape[1])

    @property
    def atom_offsets(self) -> torch.Tensor:
        """(n_graphs + 1,) int64 start of each graph's atoms; the last entry is n_atoms."""
        zero = torch.zeros(1, dtype=torch.long, device=self.n_atoms.device)
        return torch.cat([zero, torch.cumsum(self.n_atoms, 0)])

    # ----------------------------------------------------------------------------- geometry
    def edge_vectors(
        self, positions: torch.Tensor | None = None, cell: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Edge vectors r_ij = r_j - r_i + S @ cell, (n_edges, 3) Å.

        Args:
            positions: (n_atoms, 3) Å to use instead of ``self.positions`` (e.g. strained).
            cell: (n_graphs, 3, 3) Å to use instead of ``self.cell``.
        """
        positions = self.positions if positions is None else positions
        cell = self.cell if cell is None else cell
        i, j = self.edge_index
        # index_select: the same values as positions[j], a faster gather and backward
        difference = positions.index_select(0, j) - positions.index_select(0, i)
        if not self.is_periodic():
            return difference
        images = self.edge_shift.to(positions.dtype)  # (n_edges, 3)
        if cell.shape[0] == 1:  # one matmul instead of a gathered batch of 3x3 products
            shift = images @ cell[0]
        else:
            edge_cell = cell.index_select(0, self.batch.index_select(0, i))  # (n_edges, 3, 3)
            shift = (
                images[:, 0:1] * edge_cell[:, 0]
                + images[:, 1:2] * edge_cell[:, 1]
                + images[:, 2:3] * edge_cell[:, 2]
            )
        return difference + shift

    def is_periodic(self) -> bool:
        """Whether any graph has a periodic axis (True when unknown without a device sync)."""
        if self.periodic is not None:
            return self.periodic
        return self.pbc.device.type != "cpu" or bool(self.pbc.any())

    # ----------------------------------------------------------------------------- building
    @classmethod
    def build(
        cls,
        positions: torch.Tensor,
        atomic_numbers: torch.Tensor,
        cell: torch.Tensor,
        pbc: torch.Tensor,
        n_atoms: torch.Tensor,
        cutoff: float,
    ) -> AtomicGraph:
        """Build a batch (and its neighbour list) from concatenated arrays.

        Args:
            positions: (n_atoms, 3) Å. atomic_numbers: (n_atoms,) int.
            cell: (n_graphs, 3, 3) Å. pbc: (n_graphs, 3) bool. n_atoms: (n_graphs,) int.
            cutoff: Å.
        """
        n_atoms = n_atoms.to(torch.long)
        batch = torch.repeat_interleave(
            torch.arange(len(n_atoms), device=positions.device), n_atoms.to(positions.device)
        )
        i, j, S = neighbor_list(positions, cell, pbc, cutoff, batch)
        return cls(
            positions=positions,
            atomic_numbers=atomic_numbers.to(torch.long),
            cell=cell,
            pbc=pbc.to(torch.bool),
            batch=batch,
            n_atoms=n_atoms,
            edge_index=torch.stack([i, j]),
            edge_shift=S,
            cutoff=float(cutoff),
        )

    @classmethod
    def from_ase(
        cls,
        atoms: Atoms | Sequence[Atoms],
        cutoff: float,
        dtype: torch.dtype = torch.float64,
    ) -> AtomicGraph:
        """Batch one or several ``ase.Atoms`` (labels: :meth:`mlip.targets.LabelledBatch.from_ase`).

        Args:
            atoms: a structure or a list of structures.
            cutoff: neighbour cutoff, Å.
            dtype: floating dtype of positions and cell.
        """
        frames = [atoms] if isinstance(atoms, Atoms) else list(atoms)
        if not frames:
            raise InvalidStructureError("from_ase needs at least one structure")
        positions = torch.tensor(np.concatenate([a.positions for a in frames]), dtype=dtype)
        numbers = torch.tensor(np.concatenate([a.numbers for a in frames]), dtype=torch.long)
        cell = torch.tensor(np.stack([np.asarray(a.cell) for a in frames]), dtype=dtype)
        pbc = torch.tensor(np.stack([a.pbc for a in frames]), dtype=torch.bool)
        n_atoms = torch.tensor([len(a) for a in frames], dtype=torch.long)
        graph = cls.build(positions, numbers, cell, pbc, n_atoms, cutoff)
        graph.validate()
        return graph

    @staticmethod
    def collate(graphs: Sequence[AtomicGraph]) -> AtomicGraph:
        """Concatenate batches into one, offsetting atom indices of the edges."""
        if not graphs:
            raise InvalidStructureError("collate needs at least one graph")
        cutoffs = {g.cutoff for g in graphs}
        if len(cutoffs) != 1:
            raise InvalidStructureError(
                f"cannot collate graphs built with different cutoffs {sorted(cutoffs)}"
            )
        atom_shift = 0
        graph_shift = 0
        edges, batches = [], []
        for g in graphs:
            edges.append(g.edge_index + atom_shift)
            batches.append(g.batch + graph_shift)
            atom_shift += g.positions.shape[0]
            graph_shift += g.n_graphs
        return AtomicGraph(
            positions=torch.cat([g.positions for g in graphs]),
            atomic_numbers=torch.cat([g.atomic_numbers for g in graphs]),
            cell=torch.cat([g.cell for g in graphs]),
            pbc=torch.cat([g.pbc for g in graphs]),
            batch=torch.cat(batches),
            n_atoms=torch.cat([g.n_atoms for g in graphs]),
            edge_index=torch.cat(edges, dim=1),
            edge_shift=torch.cat([g.edge_shift for g in graphs]),
            cutoff=graphs[0].cutoff,
        )

    # ----------------------------------------------------------------------------- slicing
    def index_select(self, graph_ids: Sequence[int]) -> AtomicGraph:
        """The sub-batch of the given graphs, in the given order."""
        return AtomicGraph.collate([self._single(int(g)) for g in graph_ids])

    def split(self) -> list[AtomicGraph]:
        """One batch of one graph per structure."""
        return [self._single(g) for g in range(self.n_graphs)]

    def _single(self, g: int) -> AtomicGraph:
        offsets = self.atom_offsets.tolist()
        start, stop = offsets[g], offsets[g + 1]
        edge_mask = self.batch[self.edge_index[0]] == g
        return AtomicGraph(
            positions=self.positions[start:stop],
            atomic_numbers=self.atomic_numbers[start:stop],
            cell=self.cell[g : g + 1],
            pbc=self.pbc[g : g + 1],
            batch=torch.zeros(stop - start, dtype=torch.long, device=self.batch.device),
            n_atoms=self.n_atoms[g : g + 1],
            edge_index=self.edge_index[:, edge_mask] - start,
            edge_shift=self.edge_shift[edge_mask],
            cutoff=self.cutoff,
        )

    # ----------------------------------------------------------------------------- conversion
    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> AtomicGraph:
        """Move every tensor to ``device``; cast positions and cell to ``dtype``."""

        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device=device, dtype=dtype if t.is_floating_point() else None)

        changes = {
            f.name: move(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return dataclasses.replace(self, **changes, periodic=self.is_periodic())

    def to_ase(self) -> list[Atoms]:
        """Convert back to ``ase.Atoms`` (labels: :meth:`mlip.targets.LabelledBatch.to_ase`)."""
        out = []
        for g in self.split():
            atoms = Atoms(
                numbers=g.atomic_numbers.cpu().numpy(),
                positions=g.positions.detach().cpu().numpy(),
                cell=g.cell[0].detach().cpu().numpy(),
                pbc=g.pbc[0].cpu().numpy(),
            )
            out.append(atoms)
        return out

    # ----------------------------------------------------------------------------- checks
    def validate(self) -> None:
        """Check shapes and values; raise :class:`InvalidStructureError` naming the problem."""
        n = self.positions.shape[0]
        if self.atomic_numbers.shape != (n,) or self.batch.shape != (n,):
            raise InvalidStructureError(
                f"atomic_numbers {tuple(self.atomic_numbers.shape)} and "
                f"batch {tuple(self.batch.shape)} "
                f"must both have shape ({n},)"
            )
        if int(self.n_atoms.sum()) != n:
            raise InvalidStructureError(
                f"n_atoms sums to {int(self.n_atoms.sum())} but there are {n} atoms"
            )
        bad = ~torch.isfinite(self.positions).all(dim=1)
        if bool(bad.any()):
            raise InvalidStructureError(
                f"non-finite positions for atoms {torch.nonzero(bad).flatten().tolist()[:20]}"
            )
        z = self.atomic_numbers
        wrong = (z < 1) | (z > _MAX_Z)
        if bool(wrong.any()):
            k = int(torch.nonzero(wrong)[0])
            raise InvalidStructureError(f"atom {k} has invalid atomic number {int(z[k])}")
        check_cells(self.cell, self.pbc)


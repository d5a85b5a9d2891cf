"""The typed batch that flows through mlip: :class:`AtomicGraph` (labels: :mod:`mlip.targets`).

An :class:`AtomicGraph` is a :class:`mlip.structures.Structures` (positions, atomic numbers,
cell, pbc and the batch :class:`~mlip.structures.Layout`) plus its neighbour edges.
:func:`update_neighbors` and :func:`graph_from_neighbors` turn any structures (an MD state, the
calculator's atoms) and a :class:`mlip.neighbors.VerletList` into the model's graph.

Conventions (ASE units, see ``docs/conventions.md``):

* cell rows are lattice vectors (Å), as in ASE; never the transpose;
* ``edge_index[0]`` is the centre atom *i* (receives messages), ``edge_index[1]`` the neighbour
  *j* (sends); the edge vector is ``r_ij = positions[j] - positions[i] + edge_shift @ cell``
  (the cell of the graph that holds *i*), recomputed inside models so that autograd through
  ``positions`` and a strain tensor yields forces and stress;
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Sequence

import torch
from ase import Atoms
from ase.data import chemical_symbols

from mlip.errors import InvalidStructureError
from mlip.neighbors import Neighbors, VerletList, neighbor_list
from mlip.neighbors._validate import check_cells
from mlip.structures import Layout, Structures, global_field

__all__ = ["AtomicGraph", "graph_from_neighbors", "update_neighbors"]

_MAX_Z = len(chemical_symbols) - 1


@dataclass(frozen=True, kw_only=True)
class AtomicGraph(Structures):
    """A batch of ``n_graphs`` atomic structures with their neighbour graph.

    A single structure is a batch of one. See the module docstring for conventions; the
    structure fields (positions, atomic_numbers, cell, pbc, layout) are those of
    :class:`mlip.structures.Structures`.

    Attributes:
        edge_index: (2, n_edges) int64, row 0 centre i, row 1 neighbour j (global atom indices).
        edge_shift: (n_edges, 3) int64 integer cell images S.
        cutoff: Å, radius the edges were built with.
    """

    edge_index: torch.Tensor = field(metadata={"per": "edge"})
    edge_shift: torch.Tensor = field(metadata={"per": "edge"})
    cutoff: float = global_field()

    # ----------------------------------------------------------------------------- sizes
    @property
    def n_edges(self) -> int:
        return int(self.edge_index.shape[1])

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
        if not self.layout.periodic:  # all shifts are zero: skip the image term
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
        """Whether any graph has a periodic axis (the layout's host fact)."""
        return self.layout.periodic

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
        atomic_numbers, pbc = atomic_numbers.to(torch.long), pbc.to(torch.bool)
        layout = Layout.from_tensors(n_atoms.to(device=positions.device, dtype=torch.long),
                                     atomic_numbers, pbc)
        return cls.from_structures(
            Structures(positions=positions, atomic_numbers=atomic_numbers, cell=cell, pbc=pbc,
                       layout=layout),
            cutoff)

    @classmethod
    def from_structures(cls, structures: Structures, cutoff: float) -> AtomicGraph:
        """``structures`` with a fresh neighbour list within ``cutoff`` (Å)."""
        s = structures
        i, j, S = neighbor_list(s.positions, s.cell, s.pbc, cutoff, s.batch)
        return cls(positions=s.positions, atomic_numbers=s.atomic_numbers, cell=s.cell,
                   pbc=s.pbc, layout=s.layout, edge_index=torch.stack([i, j]), edge_shift=S,
                   cutoff=float(cutoff))

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
        structures = Structures.from_ase(atoms, dtype)
        graph = cls.from_structures(structures, cutoff)
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
        edges = []
        for g in graphs:
            edges.append(g.edge_index + atom_shift)
            atom_shift += g.positions.shape[0]
        return AtomicGraph(
            positions=torch.cat([g.positions for g in graphs]),
            atomic_numbers=torch.cat([g.atomic_numbers for g in graphs]),
            cell=torch.cat([g.cell for g in graphs]),
            pbc=torch.cat([g.pbc for g in graphs]),
            layout=Layout.concat([g.layout for g in graphs]),
            edge_index=torch.cat(edges, dim=1),
            edge_shift=torch.cat([g.edge_shift for g in graphs]),
            cutoff=graphs[0].cutoff,
        )

    # ----------------------------------------------------------------------------- slicing
    def index_select(self, graph_ids: Sequence[int]) -> AtomicGraph:
        """The sub-batch of the given graphs, in the given order."""
        starts = self._host_starts()
        return AtomicGraph.collate([self._single(int(g), starts[int(g)]) for g in graph_ids])

    def split(self) -> list[AtomicGraph]:
        """One batch of one graph per structure."""
        starts = self._host_starts()
        return [self._single(g, starts[g]) for g in range(self.n_graphs)]

    def _host_starts(self) -> list[int]:
        """First atom of each graph, from the layout's host counts (no device read)."""
        return list(itertools.accumulate(self.layout.counts[:-1], initial=0))

    def _single(self, g: int, start: int) -> AtomicGraph:
        stop = start + self.layout.counts[g]
        edge_mask = self.batch[self.edge_index[0]] == g
        return AtomicGraph(
            positions=self.positions[start:stop],
            atomic_numbers=self.atomic_numbers[start:stop],
            cell=self.cell[g : g + 1],
            pbc=self.pbc[g : g + 1],
            layout=self.layout.systems(g, g + 1),
            edge_index=self.edge_index[:, edge_mask] - start,
            edge_shift=self.edge_shift[edge_mask],
            cutoff=self.cutoff,
        )

    # ----------------------------------------------------------------------------- conversion
    # ``to`` (tensors and layout) and ``to_ase`` (no labels: see
    # :meth:`mlip.targets.LabelledBatch.to_ase`) come from Structures

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
        if sum(self.layout.counts) != n:
            raise InvalidStructureError(
                f"n_atoms sums to {sum(self.layout.counts)} but there are {n} atoms"
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


def graph_from_neighbors(structures: Structures, neighbors: Neighbors, cutoff: float,
                         dtype: torch.dtype | None = None,
                         group: tuple[int, int, int, int] | None = None,
                         group_layout: Layout | None = None,
                         edge_range: tuple[int, int] | None = None) -> AtomicGraph:
    """The model's batch: ``structures`` with the edges of ``neighbors`` (the pairs of these
    structures, e.g. from :func:`update_neighbors`).

    Args:
        structures: the batch (any :class:`Structures`, e.g. an MD state).
        neighbors: its pairs within ``cutoff``, sorted by centre atom.
        cutoff: Å, the model's cutoff.
        dtype: floating dtype of positions and cell (default: as they are).
        group: ``(g0, g1, a0, a1)``: only systems g0:g1, whose atoms are a0:a1.
        group_layout: the layout of that group, ``structures.layout.systems(g0, g1)`` (made
            here when not given).
        edge_range: ``(e0, e1)``, the edges of the group's atoms (found here, with a device
            read, when not given).
    """
    s = structures
    if group is None:
        return AtomicGraph(positions=s.positions.to(dtype), atomic_numbers=s.atomic_numbers,
                           cell=s.cell.to(dtype), pbc=s.pbc, layout=s.layout,
                           edge_index=neighbors.edge_index, edge_shift=neighbors.edge_shift,
                           cutoff=cutoff)
    g0, g1, a0, a1 = group
    if edge_range is None:
        bounds = torch.tensor([a0, a1], device=neighbors.edge_index.device)
        edge_range = tuple(torch.searchsorted(neighbors.edge_index[0], bounds).tolist())
    e0, e1 = edge_range
    return AtomicGraph(positions=s.positions[a0:a1].to(dtype),
                       atomic_numbers=s.atomic_numbers[a0:a1], cell=s.cell[g0:g1].to(dtype),
                       pbc=s.pbc[g0:g1],
                       layout=s.layout.systems(g0, g1) if group_layout is None else group_layout,
                       edge_index=neighbors.edge_index[:, e0:e1] - a0,
                       edge_shift=neighbors.edge_shift[e0:e1], cutoff=cutoff)


def update_neighbors(verlet: VerletList, structures: Structures) -> Neighbors:
    """The pairs of ``structures`` within the cutoff of ``verlet``, reusing its cached list.

    The layout of ``structures`` is stated to ``verlet`` when it differs from the one stated
    before (a comparison of host facts, no device read), which forgets the cached list.
    """
    if verlet.layout_key != structures.layout:
        verlet.set_layout(structures.pbc, structures.batch, key=structures.layout)
    return verlet.update(structures.positions, structures.cell)

"""Verlet-skin reuse of a neighbour list across MD or relaxation steps.

The candidate list is built with ``cutoff + skin`` and reused while it provably still contains
every pair closer than ``cutoff``; each call filters it with fresh distances, so the returned
pairs are always exactly those of a fresh ``neighbor_list(..., cutoff)``.

Rebuild rule (Verlet 1967; LAMMPS ``neigh_modify check yes``; vesin ``verlet.cpp``, with the
cell-change correction of LAMMPS ``Neighbor::check_distance``), per system ``g``:

* ``e_i = (r_i - r_i^0) - n_i @ (C - C^0)``: displacement since the build of atom ``i`` in the
  frame that moves with the cell (``n_i`` the cell images removed when wrapping at build time);
* ``c_g = sum_k s_k |C_k - C^0_k|``: the largest change of a wrapped image shift ``S_w @ C``,
  with ``s_k = ceil((cutoff + skin) / h_k)`` the widest shift along a periodic axis ``k``;
* the list is stale when ``c_g > skin`` or some ``|e_i| > (skin - c_g) / 2``.

A pair now closer than ``cutoff`` was then closer than ``cutoff + skin`` at build time, because
``D - D^0 = e_j - e_i + S_w @ (C - C^0)``. Positions must be passed *unwrapped* (as integrated);
wrapping an atom between rebuilds shows up as a lattice-vector jump and triggers a rebuild, so
wrapping is safe but wasteful. Only stale systems of a batch are rebuilt.

The per-step work of the reused list, the stale check and then the filter, is one compiled
numba call for CPU tensors (:mod:`mlip.neighbors.verlet_numba`) and the torch functions
:func:`_stale_torch` and :func:`_filter_torch` on other devices or with ``backend="torch"``
(the reference; both give identical results). On the torch path a step reads the device once:
the stale flags and the number of pairs within the cutoff come back together, and the pairs
are then gathered at that known size (``torch.nonzero_static``) without waiting again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable

import torch

from mlip.errors import ConfigError, InvalidStructureError
from mlip.neighbors._validate import normalize_inputs
from mlip.neighbors.grid import row_times_matrix, wrap
from mlip.neighbors.search import neighbor_list
from mlip.neighbors.value import Neighbors
from mlip.neighbors.verlet_numba import (
    BuildArrays,
    build_arrays,
    filter_candidates,
    stale_or_filter,
    stale_systems,
)


@dataclass
class _Cache:
    """State at the last build (float64, detached)."""

    positions: torch.Tensor  # (n_atoms, 3) Å
    cell: torch.Tensor  # (n_graphs, 3, 3) Å
    pbc: torch.Tensor  # (n_graphs, 3) bool
    batch: torch.Tensor  # (n_atoms,) int64
    images: torch.Tensor  # (n_atoms, 3) float64 integers
    widest_shift: torch.Tensor  # (n_graphs, 3) float64, s_k (0 on non-periodic axes)
    i: torch.Tensor  # (n_candidates,) int64
    j: torch.Tensor
    shift: torch.Tensor  # (n_candidates, 3) int64
    # derived from the above by _derive (read by every _filter call)
    pairs: torch.Tensor | None = None  # (2, n_candidates) int64, rows i and j
    shift64: torch.Tensor | None = None  # (n_candidates, 3) float64
    system: torch.Tensor | None = None  # (n_candidates,) int64, system of each candidate
    periodic: bool = True  # some system is periodic along some axis
    # numpy views of the above for the compiled CPU path (None on other devices and with
    # backend="torch"), set by VerletList._rebuild after every build
    host: BuildArrays | None = None


class VerletList:
    """A neighbour list with a skin, rebuilt only when atoms or the cell moved too far.

    Example (MD loop: the systems are stated once, then only positions and cell change)::

        nl = VerletList(cutoff=5.0, skin=1.0)
        nl.set_layout(pbc, batch)
        for step in range(n_steps):
            neighbors = nl.update(positions, cell)
            ...  # forces from mlip.graph.graph_from_neighbors(structures, neighbors, ...)
        print(nl.n_rebuilds, "rebuilds in", nl.n_updates, "steps")

    Args:
        cutoff: Å, > 0; the returned pairs all have |D| < cutoff.
        skin: Å, ≥ 0; 0 rebuilds whenever anything moved. Candidate pairs grow as
            (cutoff + skin)³, so 1 Å suits cutoffs of 4-6 Å.
        backend: "auto" (numba on CPU, torch elsewhere), "numba" (CPU only) or "torch": the
            backend of the rebuilds and of the per-step stale test and filter.
        max_neighbors: optional ceiling on the candidates (within ``cutoff + skin``) of any
            atom; exceeding it raises :class:`NeighborListOverflow`.

    Attributes:
        n_updates: calls to :meth:`update`. n_rebuilds: calls that rebuilt some system.
        n_system_rebuilds: systems rebuilt in total (a batch of B counts B at the first call).
        layout_key: the ``key`` given to :meth:`set_layout` (None when no layout is stated).
    """

    def __init__(self, cutoff: float, skin: float = 1.0, *, backend: str = "auto",
                 max_neighbors: int | None = None):
        if not 0.0 < cutoff < float("inf"):
            raise InvalidStructureError(f"cutoff must be a finite number > 0, got {cutoff!r}")
        if not 0.0 <= skin < float("inf"):
            raise ConfigError(f"skin must be a finite number >= 0 Å, got {skin!r}")
        self.cutoff = float(cutoff)
        self.skin = float(skin)
        self.options = {"backend": backend, "max_neighbors": max_neighbors}
        self.n_updates = 0
        self.n_rebuilds = 0
        self.n_system_rebuilds = 0
        self.layout_key: Hashable | None = None
        self._cache: _Cache | None = None
        self._stated: tuple[torch.Tensor, torch.Tensor | None] | None = None

    def reset(self) -> None:
        """Forget the cached list and the stated layout; the next :meth:`update` rebuilds
        everything."""
        self._cache = None
        self._stated = None
        self.layout_key = None

    def set_layout(self, pbc: torch.Tensor, batch: torch.Tensor | None,
                   key: Hashable | None = None) -> None:
        """State the systems of the coming ``update(positions, cell)`` calls, until the next
        :meth:`reset` or :meth:`set_layout` (which forget the cached list).

        The periodic axes and the atom-to-system index are then trusted not to change: a
        reused list is filtered without checking them again (validated at every rebuild).

        Args:
            pbc: (3,) or (n_graphs, 3) bool. batch: (n_atoms,) int64 sorted system index (None:
                one system). key: any hashable value the caller recognises its layout by (kept
                in :attr:`layout_key`).
        """
        self.reset()
        self._stated = (pbc, batch)
        self.layout_key = key

    def update(self, positions: torch.Tensor, cell: torch.Tensor,
               pbc: torch.Tensor | None = None, batch: torch.Tensor | None = None) -> Neighbors:
        """Pairs closer than ``cutoff`` now, rebuilding stale systems first.

        Args:
            positions: (n_atoms, 3) Å, unwrapped. cell: (3, 3) or (n_graphs, 3, 3) Å.
            pbc: (3,) or (n_graphs, 3) bool; None: the layout stated by :meth:`set_layout`.
            batch: (n_atoms,) int64 sorted system index (with ``pbc``; None: one system).
                Given ``pbc`` and ``batch`` are validated and compared with the cached build
                at every call (which reads the device); a stated layout is not.

        Returns:
            The pairs, their squared lengths and the shortest distance per system.
        """
        self.n_updates += 1
        c = self._cache
        if pbc is None:  # the stated layout: only positions and cell are new
            if self._stated is None:
                raise InvalidStructureError("update(positions, cell) without pbc needs a "
                                            "layout stated by set_layout(pbc, batch) first")
            pbc, batch = self._stated
            cell_b = cell if cell.ndim == 3 else cell.unsqueeze(0)
            same = (c is not None and positions.shape == c.positions.shape
                    and positions.device == c.positions.device
                    and positions.is_floating_point() and cell_b.shape == c.cell.shape)
            checked = (cell_b, c.pbc, c.batch) if same else None
        else:
            checked = normalize_inputs(positions, cell, pbc, self.cutoff, batch)[1:]
            same = c is not None and self._same_layout(positions, *checked)
        if same:
            if c.host is not None:  # CPU: the stale test and the filter in one compiled call
                stale, filtered = stale_or_filter(positions, checked[0], c.host, self.skin,
                                                  self.cutoff)
            else:  # the stale flags and the pair count in one read of the device
                stale, filtered = _stale_or_filter_torch(c, positions, checked[0], checked[2],
                                                         self.skin, self.cutoff)
            if filtered is not None:
                return self._value(filtered, stale, rebuilt=False)
        else:
            n_graphs = 1 if cell.ndim == 2 else cell.shape[0]
            stale = torch.ones(n_graphs, dtype=torch.bool, device=positions.device)
        positions, cell_n, pbc_n, batch_n = normalize_inputs(positions, cell, pbc,
                                                             self.cutoff, batch)
        self._rebuild(positions, cell_n, pbc_n, batch_n, stale)
        return self._value(self._filter(positions, cell_n), stale, rebuilt=True)

    def needs_rebuild(self, positions: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor,
                      batch: torch.Tensor) -> torch.Tensor:
        """Which systems the cached list no longer covers (all of them when nothing is cached).

        Args:
            positions: (n_atoms, 3) Å. cell: (n_graphs, 3, 3) Å. pbc: (n_graphs, 3) bool.
            batch: (n_atoms,) int64.

        Returns:
            (n_graphs,) bool.
        """
        c = self._cache
        n_graphs = cell.shape[0]
        if c is None or not self._same_layout(positions, cell, pbc, batch):
            return torch.ones(n_graphs, dtype=torch.bool, device=cell.device)
        if c.host is not None:  # CPU: one compiled call
            return stale_systems(positions, cell, c.host, self.skin)
        return _stale_torch(c, positions, cell, batch, self.skin)

    def _same_layout(self, positions: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor,
                     batch: torch.Tensor) -> bool:
        """Same atoms, systems, pbc and device as the cached build."""
        c = self._cache
        if c.positions.shape != positions.shape or c.cell.shape != cell.shape:
            return False
        if c.positions.device != positions.device:
            return False
        return torch.equal(c.pbc, pbc) and torch.equal(c.batch, batch)

    def _rebuild(self, positions: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor,
                 batch: torch.Tensor, stale: torch.Tensor) -> None:
        """Rebuild the candidate list of the stale systems and splice it into the cache."""
        self.n_rebuilds += 1
        self.n_system_rebuilds += int(stale.sum())
        pos64, cell64 = positions.detach().to(torch.float64), cell.detach().to(torch.float64)
        if self._cache is None or bool(stale.all()):
            images, widest = self._images_and_widest_shifts(pos64, cell64, pbc, batch)
            i, j, S = neighbor_list(positions, cell, pbc, self.cutoff + self.skin, batch,
                                    **self.options)
            self._cache = _derive(_Cache(pos64.clone(), cell64.clone(), pbc.clone(),
                                         batch.clone(), images, widest, i, j, S))
        else:
            self._splice(pos64, cell64, pbc, batch, stale)
        c = self._cache
        if c.positions.device.type == "cpu" and self.options["backend"] != "torch":
            c.host = build_arrays(c.positions, c.cell, c.images, c.widest_shift, c.batch,
                                  c.pairs, c.shift, c.shift64, c.system, c.periodic)

    def _images_and_widest_shifts(self, positions: torch.Tensor, cell: torch.Tensor,
                                  pbc: torch.Tensor, batch: torch.Tensor
                                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """The cell images removed when wrapping, (n_atoms, 3) float64 integers, and the widest
        image shift s_k per system and periodic axis, (n_graphs, 3) float64 (0 elsewhere).
        Molecules (no periodic axis) need no wrapping: both are zero."""
        if not bool(pbc.any()):
            return (torch.zeros_like(positions),
                    torch.zeros(cell.shape[0], 3, dtype=torch.float64, device=cell.device))
        _, images, heights = wrap(positions, cell, pbc, batch)
        return images, torch.where(pbc, torch.ceil((self.cutoff + self.skin) / heights), 0.0)

    def _splice(self, pos64: torch.Tensor, cell64: torch.Tensor, pbc: torch.Tensor,
                batch: torch.Tensor, stale: torch.Tensor) -> None:
        """Replace the candidates of the stale systems by a fresh search of those systems.

        Candidates are sorted by centre atom and the atoms of a system are contiguous, so each
        system owns one contiguous block of the list (old and new); the blocks of the stale
        systems are swapped with one concatenation per cached array.
        """
        index = torch.nonzero(stale[batch]).flatten()  # (n_stale_atoms,) global atom indices
        sub_batch = (torch.cumsum(stale.to(torch.long), 0) - 1)[batch[index]]
        sub_pos, sub_cell, sub_pbc = pos64.index_select(0, index), cell64[stale], pbc[stale]
        images, widest = self._images_and_widest_shifts(sub_pos, sub_cell, sub_pbc, sub_batch)
        i, j, S = neighbor_list(sub_pos, sub_cell, sub_pbc, self.cutoff + self.skin, sub_batch,
                                **self.options)
        new = _derive(_Cache(sub_pos, sub_cell, sub_pbc, batch, images, widest,
                             index.index_select(0, i), index.index_select(0, j), S))
        c = self._cache
        counts = torch.bincount(batch, minlength=stale.shape[0])
        first = (torch.cumsum(counts, 0) - counts)[stale]  # (n_stale,) first atom of each
        edges = torch.stack([first, first + counts[stale]]).flatten()  # atom block bounds
        old_bounds = torch.searchsorted(c.i, edges).view(2, -1).T.tolist()
        new_bounds = torch.searchsorted(new.i, edges).view(2, -1).T.tolist()
        for name, dim in (("pairs", 1), ("shift", 0), ("shift64", 0), ("system", 0)):
            old_array, new_array, pieces, done = getattr(c, name), getattr(new, name), [], 0
            for (old_lo, old_hi), (new_lo, new_hi) in zip(old_bounds, new_bounds):
                pieces += [old_array.narrow(dim, done, old_lo - done),
                           new_array.narrow(dim, new_lo, new_hi - new_lo)]
                done = old_hi
            pieces.append(old_array.narrow(dim, done, old_array.shape[dim] - done))
            setattr(c, name, torch.cat(pieces, dim))
        c.i, c.j = c.pairs[0], c.pairs[1]
        c.positions.index_copy_(0, index, sub_pos)
        c.images.index_copy_(0, index, images)
        c.cell[stale] = sub_cell
        c.widest_shift[stale] = widest

    def _filter(self, positions: torch.Tensor, cell: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The cached candidates closer than ``cutoff`` at the current positions."""
        c = self._cache
        if c.host is not None:  # CPU: one compiled call
            return filter_candidates(positions, cell, c.host, self.cutoff)
        return _filter_torch(c, positions, cell, self.cutoff)

    def _value(self, filtered: tuple[torch.Tensor, ...], stale: torch.Tensor,
               rebuilt: bool) -> Neighbors:
        """The :class:`Neighbors` of a filter's result."""
        edge_index, edge_shift, distance_sq, shortest = filtered
        return Neighbors(edge_index=edge_index, edge_shift=edge_shift, distance_sq=distance_sq,
                         shortest_distance=shortest, periodic=self._cache.periodic,
                         rebuilt=rebuilt, stale=stale)


def _derive(c: _Cache) -> _Cache:
    """Fill the fields of ``c`` that :meth:`VerletList._filter` reads (once per build)."""
    c.pairs = torch.stack([c.i, c.j])
    c.i, c.j = c.pairs[0], c.pairs[1]  # views: one array to splice
    c.shift64 = c.shift.to(torch.float64)
    c.system = c.batch[c.i]
    c.periodic = bool(c.pbc.any())
    return c


def _stale_torch(c: _Cache, positions: torch.Tensor, cell: torch.Tensor, batch: torch.Tensor,
                 skin: float) -> torch.Tensor:
    """Which systems the cached list no longer covers (the rule of the module docstring).

    The reference, and the path on non-CPU devices; on CPU
    :func:`mlip.neighbors.verlet_numba.stale_systems` computes the same flags.

    Args:
        c: the cache, with the same atoms and systems. positions: (n_atoms, 3) Å.
        cell: (n_graphs, 3, 3) Å. batch: (n_atoms,) int64. skin: Å.

    Returns:
        (n_graphs,) bool; NaN positions count as stale.
    """
    n_graphs = cell.shape[0]
    moved = positions.detach().to(torch.float64) - c.positions
    if c.periodic:
        cell_change = cell.detach().to(torch.float64) - c.cell  # (n_graphs, 3, 3)
        cell_term = (c.widest_shift * cell_change.norm(dim=2)).sum(dim=1)  # (n_graphs,)
        moved = moved - row_times_matrix(c.images, cell_change[batch])
    else:  # no periodic axis: the cell plays no role
        cell_term = torch.zeros(n_graphs, dtype=torch.float64, device=cell.device)
    if n_graphs == 1:
        largest = (moved * moved).sum(dim=1).max().sqrt().reshape(1)
    else:
        largest = torch.zeros(n_graphs, dtype=torch.float64, device=cell.device)
        largest = largest.scatter_reduce(0, batch, moved.norm(dim=1), "amax")
    # written so that NaN positions count as stale (the rebuild then names them)
    return (cell_term > skin) | ~(largest <= 0.5 * (skin - cell_term))


def _stale_or_filter_torch(c: _Cache, positions: torch.Tensor, cell: torch.Tensor,
                           batch: torch.Tensor, skin: float, cutoff: float
                           ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """:func:`_stale_torch`, then :func:`_filter_torch` when no system is stale, with one read
    of the device: the stale flags and the number of pairs come back together, and the pairs
    are gathered at that known size.

    Returns:
        stale: (n_graphs,) bool; the four tensors of :func:`_filter_torch`, or None when some
        system is stale.
    """
    stale = _stale_torch(c, positions, cell, batch, skin)
    distance_sq = _candidate_distance_sq(c, positions, cell)
    within = distance_sq < cutoff * cutoff
    any_stale, n_edges = torch.stack([stale.any().to(torch.long), within.sum()]).tolist()
    return stale, None if any_stale else _select(c, distance_sq, within, n_edges)


def _filter_torch(c: _Cache, positions: torch.Tensor, cell: torch.Tensor,
                  cutoff: float) -> tuple[torch.Tensor, ...]:
    """The cached candidates closer than ``cutoff`` at the current positions.

    The reference, and the path on non-CPU devices; on CPU
    :func:`mlip.neighbors.verlet_numba.filter_candidates` computes the same arrays.

    Args:
        c: the cache, with the same atoms and systems. positions: (n_atoms, 3) Å.
        cell: (n_graphs, 3, 3) Å. cutoff: Å.

    Returns:
        edge_index: (2, n_edges) int64, sorted by centre atom; edge_shift: (n_edges, 3) int64;
        distance_sq: (n_edges,) float64 Å², |D|²; shortest: (n_graphs,) float64 Å, the
        shortest |D| per system (inf for a system without pairs).
    """
    distance_sq = _candidate_distance_sq(c, positions, cell)
    return _select(c, distance_sq, distance_sq < cutoff * cutoff, None)


def _candidate_distance_sq(c: _Cache, positions: torch.Tensor, cell: torch.Tensor
                           ) -> torch.Tensor:
    """|D|² of every cached candidate at the current positions, (n_candidates,) float64 Å²."""
    pos = positions.detach().to(torch.float64)
    d = pos.index_select(0, c.j) - pos.index_select(0, c.i)  # (n_candidates, 3) Å
    if c.periodic:
        cell64 = cell.detach().to(torch.float64)
        if cell64.shape[0] == 1:
            d = d + c.shift64 @ cell64[0]
        else:
            d = d + row_times_matrix(c.shift64, cell64[c.system])
    x, y, z = d.unbind(1)
    return x * x + y * y + z * z  # 4x faster than a sum(dim=1)


def _select(c: _Cache, distance_sq: torch.Tensor, within: torch.Tensor,
            n_edges: int | None) -> tuple[torch.Tensor, ...]:
    """The candidates flagged ``within`` (n_candidates,) bool, as :func:`_filter_torch` returns
    them; ``n_edges``, their number if known, spares the device a wait."""
    if n_edges is None:
        keep = torch.nonzero(within).flatten()  # (n_edges,)
    else:
        keep = torch.nonzero_static(within, size=n_edges).flatten()
    kept_sq = distance_sq.index_select(0, keep)
    if c.cell.shape[0] == 1 and kept_sq.shape[0]:
        shortest_sq = kept_sq.amin().reshape(1)
    else:  # inf for a system without pairs
        shortest_sq = torch.full((c.cell.shape[0],), float("inf"), dtype=torch.float64,
                                 device=kept_sq.device)
        shortest_sq = shortest_sq.scatter_reduce(0, c.system.index_select(0, keep), kept_sq,
                                                 "amin")
    return (c.pairs.index_select(1, keep), c.shift.index_select(0, keep), kept_sq,
            shortest_sq.sqrt())

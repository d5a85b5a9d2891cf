"""VerletList: reuse gives exactly the pairs of a fresh build; rebuilds happen when they must."""

from __future__ import annotations

import dataclasses

import ase.build
import numpy as np
import pytest
import torch

from mlip.errors import ConfigError, InvalidStructureError
from mlip.neighbors import Neighbors, VerletList, neighbor_list


def _batch_of_three() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Periodic triclinic Cu (27 atoms), a free cluster (12) and a slab with pbc T,F,T (16)."""
    cu = ase.build.bulk("Cu", "fcc", a=3.6).repeat((3, 3, 3))
    cu.rattle(0.05, seed=1)
    cu.wrap(eps=0.0)
    rng = np.random.default_rng(2)
    cluster = rng.uniform(0, 6, (12, 3))
    slab_cell = np.array([[5.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 4.5]])
    slab = rng.uniform(0, 1, (16, 3)) * [5.0, 6.0, 4.5]
    positions = torch.tensor(np.concatenate([cu.positions, cluster, slab]))
    cell = torch.tensor(np.stack([cu.cell.array, np.zeros((3, 3)), slab_cell]))
    pbc = torch.tensor([[True] * 3, [False] * 3, [True, False, True]])
    batch = torch.repeat_interleave(torch.arange(3), torch.tensor([27, 12, 16]))
    return positions, cell, pbc, batch


def _strain(cell: torch.Tensor, rng: np.random.Generator, size: float) -> torch.Tensor:
    eps = torch.tensor(rng.normal(scale=size, size=(cell.shape[0], 3, 3)))
    return cell + cell @ (0.5 * (eps + eps.transpose(1, 2)))


def _pairs(neighbors: Neighbors) -> tuple[torch.Tensor, torch.Tensor]:
    return neighbors.edge_index, neighbors.edge_shift


def _edges(edge_index: torch.Tensor, edge_shift: torch.Tensor) -> set[tuple]:
    return set(zip(*edge_index.tolist(), *edge_shift.T.tolist()))


@pytest.mark.parametrize("stated", [False, True])  # layout given at every call / stated once
@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_reuse_along_a_random_walk_with_a_changing_cell_equals_fresh_builds(backend, stated):
    positions, cell, pbc, batch = _batch_of_three()
    rng = np.random.default_rng(0)
    nl = VerletList(cutoff=3.5, skin=0.6, backend=backend)
    if stated:
        nl.set_layout(pbc.clone(), batch.clone(), key="three systems")
        assert nl.layout_key == "three systems"
    for step in range(60):
        positions = positions + torch.tensor(rng.normal(scale=0.04, size=positions.shape))
        if step % 3 == 0:  # strain every cell; scale the Cu positions with it, as a barostat does
            new_cell = _strain(cell, rng, 0.004)
            positions[:27] = positions[:27] @ torch.linalg.solve(cell[0], new_cell[0])
            cell = new_cell
        neighbors = nl.update(positions, cell) if stated else nl.update(positions, cell, pbc,
                                                                         batch)
        assert neighbors.rebuilt is bool(neighbors.stale.any())
        edge_index, edge_shift = _pairs(neighbors)
        i, j, S = neighbor_list(positions, cell, pbc, 3.5, batch, backend=backend)
        assert _edges(edge_index, edge_shift) == _edges(torch.stack([i, j]), S), f"step {step}"
        assert torch.all(edge_index[0, 1:] >= edge_index[0, :-1])
    assert nl.n_updates == 60
    assert 2 <= nl.n_rebuilds < 40, nl.n_rebuilds
    assert nl.n_system_rebuilds < 3 * nl.n_rebuilds, "stale systems should be rebuilt alone"


def test_wrapping_between_steps_is_detected_and_stays_exact():
    positions, cell, pbc, batch = _batch_of_three()
    nl = VerletList(cutoff=3.5, skin=1.0)
    nl.update(positions, cell, pbc, batch)
    moved = positions.clone()
    moved[0] += cell[0, 0]  # atom 0 wrapped by one lattice vector
    edge_index, edge_shift = _pairs(nl.update(moved, cell, pbc, batch))
    assert nl.n_rebuilds == 2 and nl.n_system_rebuilds == 4  # 3 at first, then system 0 alone
    i, j, S = neighbor_list(moved, cell, pbc, 3.5, batch)
    assert _edges(edge_index, edge_shift) == _edges(torch.stack([i, j]), S)


def test_rebuild_thresholds_follow_half_the_skin_and_the_cell_change():
    positions, cell, pbc, batch = _batch_of_three()
    nl = VerletList(cutoff=3.5, skin=1.0)
    nl.update(positions, cell, pbc, batch)
    small, large = positions.clone(), positions.clone()
    small[30, 1] += 0.49  # cluster atom, below skin / 2
    large[30, 1] += 0.51
    assert nl.needs_rebuild(small, cell, pbc, batch).tolist() == [False, False, False]
    assert nl.needs_rebuild(large, cell, pbc, batch).tolist() == [False, True, False]
    strained = cell.clone()
    strained[0, 0, 0] += 0.6  # Cu: widest shift 1 (heights 6.2 Å > 4.5 Å): 0.6 Å < skin ...
    assert nl.needs_rebuild(positions, strained, pbc, batch).tolist() == [False, False, False]
    strained[0, 1, 1] += 0.6  # ... but 1.2 Å > skin
    stale = nl.needs_rebuild(positions, strained, pbc, batch)
    assert stale.tolist() == [True, False, False]
    strained[2, 1, 1] = 50.0  # a non-periodic row of the slab carries no shift
    assert nl.needs_rebuild(positions, strained, pbc, batch)[2].item() is False


def test_skin_zero_rebuilds_on_any_motion_and_layout_changes_rebuild_everything():
    positions, cell, pbc, batch = _batch_of_three()
    nl = VerletList(cutoff=3.0, skin=0.0)
    nl.update(positions, cell, pbc, batch)
    nl.update(positions, cell, pbc, batch)
    assert nl.n_rebuilds == 1  # nothing moved
    nl.update(positions + 1e-9, cell, pbc, batch)
    assert nl.n_rebuilds == 2
    edge_index = nl.update(positions[:39], cell[:2], pbc[:2], batch[:39]).edge_index
    assert nl.n_rebuilds == 3 and int(edge_index.max()) < 39
    nl.reset()
    nl.update(positions[:39], cell[:2], pbc[:2], batch[:39])
    assert nl.n_rebuilds == 4


def test_float32_positions_give_float64_exact_pairs():
    positions, cell, pbc, batch = _batch_of_three()
    nl = VerletList(cutoff=3.5, skin=0.5)
    edge_index, edge_shift = _pairs(nl.update(positions.float(), cell.float(), pbc, batch))
    i, j, S = neighbor_list(positions.float(), cell.float(), pbc, 3.5, batch)
    assert _edges(edge_index, edge_shift) == _edges(torch.stack([i, j]), S)


def test_bad_parameters_raise_named_errors():
    with pytest.raises(InvalidStructureError, match=r"cutoff must be a finite number > 0, got 0"):
        VerletList(cutoff=0, skin=1.0)
    with pytest.raises(ConfigError, match=r"skin must be a finite number >= 0 Å, got -0.5"):
        VerletList(cutoff=5.0, skin=-0.5)
    nl = VerletList(cutoff=5.0, skin=1.0, backend="fortran")
    positions, cell, pbc, batch = _batch_of_three()
    with pytest.raises(ConfigError, match=r"unknown neighbour-list backend 'fortran'"):
        nl.update(positions, cell, pbc, batch)
    bad = positions.clone()
    bad[3, 0] = float("nan")
    with pytest.raises(InvalidStructureError, match=r"positions for atoms \[3\]"):
        VerletList(cutoff=5.0).update(bad, cell, pbc, batch)


@pytest.mark.parametrize("backend", ["auto", "torch"])
@pytest.mark.parametrize("system", [0, 1, None])
def test_reused_input_tensors_take_the_fast_path_and_stay_exact(system, backend):
    """The same cell/pbc/batch objects on every call (as in MD): pairs stay exact, an in-place
    change of the cell is noticed, distances and the shortest one per system are reported
    and NaN positions still raise; with the compiled CPU steps and with the torch ones (the
    path on a GPU)."""
    positions, cell, pbc, batch = _batch_of_three()
    if system is not None:  # one system alone: periodic Cu or the free cluster
        mask = batch == system
        positions, cell, pbc = positions[mask], cell[system:system + 1], pbc[system:system + 1]
        batch = torch.zeros(positions.shape[0], dtype=torch.long)
    rng = np.random.default_rng(4)
    nl = VerletList(cutoff=3.5, skin=0.6, backend=backend)
    n_graphs = cell.shape[0]
    for step in range(30):
        positions = positions + torch.tensor(rng.normal(scale=0.04, size=positions.shape))
        if step == 15:
            cell.mul_(1.01)  # in place: same object, new version
        neighbors = nl.update(positions, cell, pbc, batch)
        edge_index, edge_shift = _pairs(neighbors)
        i, j, S = neighbor_list(positions, cell, pbc, 3.5, batch)
        assert _edges(edge_index, edge_shift) == _edges(torch.stack([i, j]), S), f"step {step}"
        d = positions[edge_index[1]] - positions[edge_index[0]] + torch.einsum(
            "ek,ekl->el", edge_shift.double(), cell[batch[edge_index[0]]])
        torch.testing.assert_close(neighbors.distance_sq, (d * d).sum(dim=1))
        shortest = torch.full((n_graphs,), float("inf"), dtype=torch.float64).scatter_reduce(
            0, batch[edge_index[0]], d.norm(dim=1), "amin")
        torch.testing.assert_close(neighbors.shortest_distance, shortest)
        assert neighbors.periodic is bool(pbc.any())
    assert (nl._cache.host is None) == (backend == "torch")
    assert nl.n_rebuilds < 25
    positions[3] = float("nan")
    with pytest.raises(InvalidStructureError, match=r"non-finite \(NaN/inf\) positions for "
                                                    r"atoms \[3\]"):
        nl.update(positions, cell, pbc, batch)


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_new_atoms_in_as_many_systems_rebuild(backend):
    """Other atoms in the same number of systems (another batch of the same size): the cached
    candidates index atoms that are gone, so the list is rebuilt, not reused."""
    positions, cell, pbc, batch = _batch_of_three()
    nl = VerletList(cutoff=3.5, skin=0.6, backend=backend)
    nl.update(positions, cell, pbc, batch)
    keep = torch.ones(positions.shape[0], dtype=torch.bool)
    keep[30:40] = False  # ten atoms of the cluster
    fewer = positions[keep]
    edge_index, edge_shift = _pairs(nl.update(fewer, cell, pbc, batch[keep]))
    i, j, S = neighbor_list(fewer, cell, pbc, 3.5, batch[keep])
    assert _edges(edge_index, edge_shift) == _edges(torch.stack([i, j]), S)
    assert nl.n_rebuilds == 2


def test_the_neighbors_value_matches_a_fresh_list_and_says_what_was_rebuilt():
    positions, cell, pbc, batch = _batch_of_three()
    nl = VerletList(cutoff=3.5, skin=1.0)
    first = nl.update(positions, cell, pbc, batch)
    assert first.rebuilt and first.stale.tolist() == [True, True, True] and first.periodic
    moved = positions.clone()
    moved[30] += 0.7  # past half the skin: the cluster alone is rebuilt
    second = nl.update(moved, cell, pbc, batch)
    assert second.rebuilt and second.stale.tolist() == [False, True, False]
    third = nl.update(moved + 0.01, cell, pbc, batch)
    assert not third.rebuilt and not third.stale.any()
    i, j, S = neighbor_list(moved + 0.01, cell, pbc, 3.5, batch)
    assert _edges(*_pairs(third)) == _edges(torch.stack([i, j]), S)  # the same pairs
    e_i, e_j = third.edge_index
    d = (moved + 0.01)[e_j] - (moved + 0.01)[e_i] + torch.einsum(
        "ek,ekl->el", third.edge_shift.double(), cell[batch[e_i]])
    torch.testing.assert_close(third.distance_sq, (d * d).sum(dim=1))
    assert third.n_edges == i.shape[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        third.rebuilt = True  # type: ignore[misc]


def test_a_stated_layout_is_required_and_reset_forgets_it():
    positions, cell, pbc, batch = _batch_of_three()
    nl = VerletList(cutoff=3.5, skin=1.0)
    with pytest.raises(InvalidStructureError, match="set_layout"):
        nl.update(positions, cell)
    nl.set_layout(pbc, batch, key=1)
    nl.update(positions, cell)
    nl.reset()
    assert nl.layout_key is None
    with pytest.raises(InvalidStructureError, match="set_layout"):
        nl.update(positions, cell)

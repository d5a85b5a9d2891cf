"""neighbor_list: exact agreement with ASE, matscipy, vesin and brute force; batching; errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import vesin
from ase import Atoms
from ase.neighborlist import neighbor_list as ase_neighbor_list
from matscipy.neighbours import neighbour_list as matscipy_neighbour_list

from mlip.errors import ConfigError, InvalidStructureError, NeighborListOverflow
from mlip.neighbors import neighbor_list
from mlip.neighbors.brute import brute_force_single
from mlip.neighbors.cell_list import search_pairs_torch
from mlip.neighbors.cell_list_numba import search_pairs_numba
from mlip.neighbors.grid import build_grid

BACKENDS = ["numba", "torch"]


def _vector_map(positions, cell, i, j, S) -> dict[tuple, np.ndarray]:
    D = positions[j] - positions[i] + S @ cell
    return {(a, b, *s): d for a, b, s, d in zip(i.tolist(), j.tolist(), S.tolist(), D)}


def test_random_systems_match_ase_matscipy_and_vesin(cases, ase_reference, pair_set):
    n_pairs = 0
    for k, (case, reference) in enumerate(zip(cases, ase_reference)):
        i, j, S = neighbor_list(*case.tensors(), case.cutoff)
        assert pair_set(i, j, S) == reference, f"case {k}"
        assert torch.all(i[1:] >= i[:-1]), "pairs must be sorted by centre atom"
        if not case.zero_free_rows:  # matscipy needs a non-singular cell
            ms = matscipy_neighbour_list("ijS", positions=case.positions, cell=case.cell,
                                         pbc=case.pbc, cutoff=case.cutoff)
            assert pair_set(*ms) == reference, f"case {k} vs matscipy"
        nl = vesin.NeighborList(cutoff=case.cutoff, full_list=True)
        ves = nl.compute(case.positions, case.cell, case.pbc, "ijS")
        assert pair_set(*ves) == reference, f"case {k} vs vesin"
        n_pairs += len(reference)
    assert n_pairs > 30_000  # the cases are not trivially small


def test_edge_vectors_agree_with_ase_to_1e_12(cases):
    for case in cases[:60]:
        i, j, S = neighbor_list(*case.tensors(), case.cutoff)
        ours = _vector_map(case.positions, case.cell, i.numpy(), j.numpy(), S.numpy())
        atoms = Atoms(positions=case.positions, cell=case.cell, pbc=case.pbc)
        ai, aj, aS, aD = ase_neighbor_list("ijSD", atoms, case.cutoff)
        for a, b, s, d in zip(ai.tolist(), aj.tolist(), aS.tolist(), aD):
            np.testing.assert_allclose(ours[(a, b, *s)], d, atol=1e-12, rtol=0)


def test_backends_return_identical_arrays_for_a_batch(batched_cases):
    positions, cell, pbc, batch, offsets = batched_cases
    reference = neighbor_list(positions, cell, pbc, 4.5, batch, backend="numba")
    result = neighbor_list(positions, cell, pbc, 4.5, batch, backend="torch")
    assert all(torch.equal(ours, ref) for ours, ref in zip(result, reference))
    n = offsets[30]  # the first 30 systems, in chunks of one atom and of a few hundred pairs
    reference = neighbor_list(positions[:n], cell[:30], pbc[:30], 4.5, batch[:n], backend="numba")
    for max_candidates in (300, 1):
        result = neighbor_list(positions[:n], cell[:30], pbc[:30], 4.5, batch[:n], backend="torch",
                               max_candidates=max_candidates)
        assert all(torch.equal(ours, ref) for ours, ref in zip(result, reference))


def test_batch_equals_per_system_results_with_offsets(batched_cases):
    positions, cell, pbc, batch, offsets = batched_cases
    i, j, S = neighbor_list(positions, cell, pbc, 4.5, batch)
    parts = [neighbor_list(positions[a:b], cell[g], pbc[g], 4.5)
             for g, (a, b) in enumerate(zip(offsets[:-1], offsets[1:]))]
    assert torch.equal(i, torch.cat([p[0] + a for p, a in zip(parts, offsets)]))
    assert torch.equal(j, torch.cat([p[1] + a for p, a in zip(parts, offsets)]))
    assert torch.equal(S, torch.cat([p[2] for p in parts]))
    assert torch.equal(batch[i], batch[j]), "a pair crosses systems"


def _random_box(rng: np.random.Generator, n_atoms: int, pbc: list[bool]) -> tuple:
    cell = np.diag([1.0, 1.0, 1.0]) + rng.uniform(-0.3, 0.3, (3, 3))
    cell *= (n_atoms / 0.08) ** (1 / 3) / abs(np.linalg.det(cell)) ** (1 / 3)  # ~0.08 atoms/Å³
    positions = rng.uniform(-0.2, 1.2, (n_atoms, 3)) @ cell
    return torch.tensor(positions), torch.tensor(cell), torch.tensor(pbc)


@pytest.mark.parametrize("n_atoms,pbc", [
    (3000, [False, False, False]), (700, [True, True, True]), (1500, [True, False, True]),
    pytest.param(2500, [True, True, True], marks=pytest.mark.slow)])
def test_cell_list_equals_brute_force_on_large_boxes(n_atoms, pbc, pair_set):
    rng = np.random.default_rng(n_atoms)
    positions, cell, pbc_t = _random_box(rng, n_atoms, pbc)
    reference = pair_set(*brute_force_single(positions, cell, pbc_t, 5.0))
    assert len(reference) > 10 * n_atoms
    for backend in BACKENDS:
        assert pair_set(*neighbor_list(positions, cell, pbc_t, 5.0, backend=backend)) == reference


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_atom_counts_its_periodic_images(backend):
    positions = torch.tensor([[0.3, 0.2, 0.1]], dtype=torch.float64)
    cell, pbc = 2.0 * torch.eye(3, dtype=torch.float64), torch.tensor([True, True, True])
    i, _, S = neighbor_list(positions, cell, pbc, 2.5, backend=backend)
    assert len(i) == 6 and set(map(tuple, S.abs().tolist())) == {(1, 0, 0), (0, 1, 0), (0, 0, 1)}
    i, _, S = neighbor_list(positions, cell, pbc, 4.1, backend=backend)
    assert len(i) == 32 and bool(((S * S).sum(dim=1) <= 4).all())
    assert not bool((S == 0).all(dim=1).any()), "zero-shift self pair listed"


@pytest.mark.parametrize("backend", BACKENDS)
def test_pairs_exactly_at_the_cutoff_are_excluded(backend):
    positions = torch.tensor([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0]], dtype=torch.float64)
    zero = torch.zeros(3, 3, dtype=torch.float64)
    free = torch.tensor([False, False, False])
    assert len(neighbor_list(positions, zero, free, 1.5, backend=backend)[0]) == 0
    assert len(neighbor_list(positions, zero, free, 1.5 + 1e-12, backend=backend)[0]) == 2
    one = positions[:1]
    cube, periodic = 2.0 * torch.eye(3, dtype=torch.float64), torch.tensor([True, True, True])
    assert len(neighbor_list(one, cube, periodic, 2.0, backend=backend)[0]) == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_unwrapped_positions_give_shifts_relative_to_the_input(backend, pair_set):
    rng = np.random.default_rng(3)
    cell = np.array([[4.0, 0.2, 0.0], [0.5, 3.5, 0.1], [0.3, -0.4, 3.8]])
    wrapped = rng.uniform(0, 1, (8, 3)) @ cell
    unwrapped = wrapped + np.array([4, -7, 0])[None] @ cell * (np.arange(8) % 2)[:, None]
    pbc = np.array([True, True, True])
    for positions in (wrapped, unwrapped):
        i, j, S = neighbor_list(torch.tensor(positions), torch.tensor(cell), torch.tensor(pbc), 4.0,
                                backend=backend)
        atoms = Atoms(positions=positions, cell=cell, pbc=pbc)
        assert pair_set(i, j, S) == pair_set(*ase_neighbor_list("ijS", atoms, 4.0))
        D = positions[j.numpy()] - positions[i.numpy()] + S.numpy() @ cell
        assert np.linalg.norm(D, axis=1).max() < 4.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_and_single_atom_systems_inside_a_batch(backend, pair_set):
    cell = torch.stack([3.0 * torch.eye(3, dtype=torch.float64)] * 4)
    pbc = torch.tensor([[True] * 3, [False] * 3, [True] * 3, [False] * 3])
    positions = torch.tensor([[0.1, 0.2, 0.3], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]],
                             dtype=torch.float64)
    batch = torch.tensor([1, 2, 2])  # system 0 and 3 are empty, system 1 is one isolated atom
    i, j, S = neighbor_list(positions, cell, pbc, 3.5, batch, backend=backend)
    expected = brute_force_single(positions[1:], cell[2], pbc[2], 3.5)
    assert pair_set(i, j, S) == pair_set(expected[0] + 1, expected[1] + 1, expected[2])
    empty = neighbor_list(positions[:0], cell[:1], pbc[:1], 3.0, torch.zeros(0, dtype=torch.long),
                          backend=backend)
    assert all(t.shape[0] == 0 for t in empty) and empty[2].shape == (0, 3)


def test_far_apart_atoms_and_float32_positions(pair_set):
    positions = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [5000.0, -300.0, 2.0],
                              [5000.5, -300.0, 2.0]], dtype=torch.float64)
    zero, free = torch.zeros(3, 3, dtype=torch.float64), torch.tensor([False] * 3)
    for backend in BACKENDS:
        ours = neighbor_list(positions, zero, free, 2.0, backend=backend)
        expected = {(0, 1, 0, 0, 0), (1, 0, 0, 0, 0), (2, 3, 0, 0, 0), (3, 2, 0, 0, 0)}
        assert pair_set(*ours) == expected
        single = neighbor_list(positions.float(), zero, free, 2.0, backend=backend)
        assert pair_set(*single) == pair_set(*ours)


def test_output_buffers_grow_instead_of_truncating(batched_cases):
    positions, cell, pbc, batch, _ = batched_cases
    counts = torch.bincount(batch, minlength=cell.shape[0])
    grid = build_grid(positions, cell, pbc, batch, counts, 4.5)
    reference = search_pairs_torch(grid, batch, 4.5)
    for capacity in (1, 17):
        grown = search_pairs_numba(grid, batch, 4.5, capacity)
        assert all(torch.equal(a, b) for a, b in zip(grown, reference))


def test_max_neighbors_ceiling_raises_overflow_naming_the_atom():
    positions = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [3.0, 3.0, 3.0],
                              [3.5, 3.0, 3.0]], dtype=torch.float64)
    cell, pbc = torch.zeros(2, 3, 3, dtype=torch.float64), torch.zeros(2, 3, dtype=torch.bool)
    batch = torch.tensor([0, 0, 0, 1, 1])
    assert len(neighbor_list(positions, cell, pbc, 1.2, batch, max_neighbors=2)[0]) == 6
    message = r"atom 0 of system 0 has 2 neighbours, more than max_neighbors=1"
    with pytest.raises(NeighborListOverflow, match=message):
        neighbor_list(positions, cell, pbc, 1.2, batch, max_neighbors=1)


def test_autograd_of_distances_matches_finite_differences():
    rng = np.random.default_rng(5)
    cell = torch.tensor([[3.2, 0.1, 0.0], [0.4, 3.0, 0.2], [0.0, -0.3, 3.4]], dtype=torch.float64)
    positions = torch.tensor(rng.uniform(0, 1, (6, 3)), dtype=torch.float64) @ cell
    pbc = torch.tensor([True, True, False])
    i, j, S = neighbor_list(positions, cell, pbc, 3.0)
    weights = torch.tensor(rng.normal(size=len(i)), dtype=torch.float64)

    def objective(pos: torch.Tensor) -> torch.Tensor:
        D = pos[j] - pos[i] + S.to(torch.float64) @ cell
        return (weights * D.norm(dim=1)).sum()

    x = positions.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(objective(x), x)
    h, numeric = 1e-6, torch.zeros_like(positions)
    for a in range(positions.shape[0]):
        for k in range(3):
            step = torch.zeros_like(positions)
            step[a, k] = h
            numeric[a, k] = (objective(positions + step) - objective(positions - step)) / (2 * h)
    torch.testing.assert_close(grad, numeric, atol=1e-8, rtol=0)


_POS = torch.zeros(2, 3, dtype=torch.float64)
_CELL = 3.0 * torch.eye(3, dtype=torch.float64)
_PBC = torch.tensor([True, True, True])


@pytest.mark.parametrize("args,kwargs,message", [
    ((torch.tensor([[0.0, 0, 0], [float("nan"), 0, 0], [0, float("inf"), 0]], dtype=torch.float64),
      _CELL, _PBC, 2.0), {}, r"non-finite \(NaN/inf\) positions for atoms \[1, 2\]"),
    ((_POS, torch.tensor([[3.0, 0, 0], [6.0, 0, 0], [0, 0, 3.0]], dtype=torch.float64), _PBC, 2.0),
     {}, r"system 0: cell is singular along its periodic directions"),
    ((_POS, _CELL, _PBC, 0.0), {}, r"cutoff must be a finite number > 0, got 0.0"),
    ((_POS, _CELL, _PBC, -1.0), {}, r"cutoff must be a finite number > 0, got -1.0"),
    ((_POS, _CELL, _PBC, float("nan")), {}, r"cutoff must be a finite number > 0, got nan"),
    ((_POS, _CELL, _PBC, float("inf")), {}, r"cutoff must be a finite number > 0, got inf"),
    ((_POS[:, :2], _CELL, _PBC, 2.0), {},
     r"positions must have shape \(n_atoms, 3\), got \(2, 2\)"),
    ((_POS.long(), _CELL, _PBC, 2.0), {},
     r"positions must be a floating-point tensor, got torch.int64"),
    ((_POS, _CELL[:2], _PBC, 2.0), {},
     r"cell must have shape \(3, 3\) or \(n_graphs, 3, 3\), got \(2, 3\)"),
    ((_POS, _CELL, _PBC[:2], 2.0), {}, r"pbc shape \(2,\) does not match cell shape \(3, 3\)"),
    ((_POS, torch.stack([_CELL, _CELL]), torch.stack([_PBC, _PBC]), 2.0), {},
     r"batch is required when cell holds several systems"),
    ((_POS, _CELL, _PBC, 2.0, torch.zeros(3, dtype=torch.long)), {},
     r"batch must have shape \(2,\), got \(3,\)"),
    ((_POS, _CELL, _PBC, 2.0, torch.zeros(2)), {},
     r"batch must be an integer tensor, got torch.float32"),
    ((_POS, _CELL, _PBC, 2.0, torch.tensor([0, 1])), {}, r"batch indices must lie in \[0, 1\)"),
    ((_POS, torch.stack([_CELL, _CELL]), torch.stack([_PBC, _PBC]), 2.0, torch.tensor([1, 0])), {},
     r"batch must be sorted \(atoms of one system contiguous\)"),
    ((_POS, _CELL.to("meta"), _PBC, 2.0), {}, r"cell is on meta but positions are on cpu"),
    ((_POS, _CELL, _PBC.to("meta"), 2.0), {}, r"pbc is on meta but positions are on cpu"),
    ((_POS, _CELL * float("nan"), _PBC, 2.0), {}, r"cell contains non-finite values"),
    ((_POS, _CELL, _PBC, 2.0), {"backend": "fortran"},
     r"unknown neighbour-list backend 'fortran'; choose one of \('auto', 'numba', 'torch'\)"),
    ((_POS.to("meta"), _CELL, _PBC, 2.0), {"backend": "numba"},
     r"backend 'numba' needs CPU tensors, got device meta"),
    ((_POS, _CELL, _PBC, 2.0), {"max_neighbors": 0}, r"max_neighbors must be None or >= 1, got 0"),
    ((_POS, _CELL, _PBC, 2.0), {"max_candidates": 0}, r"max_candidates must be >= 1, got 0"),
])
def test_bad_input_raises_a_named_error(args, kwargs, message):
    with pytest.raises((InvalidStructureError, ConfigError), match=message) as info:
        neighbor_list(*args, **kwargs)
    assert isinstance(info.value, ValueError)


@pytest.mark.gpu
def test_cuda_torch_backend_equals_cpu(batched_cases):
    positions, cell, pbc, batch, _ = batched_cases
    reference = neighbor_list(positions, cell, pbc, 4.5, batch)
    on_gpu = [t.cuda() for t in (positions, cell, pbc)]
    result = neighbor_list(*on_gpu, 4.5, batch.cuda())
    assert all(torch.equal(ours.cpu(), ref) for ours, ref in zip(result, reference))

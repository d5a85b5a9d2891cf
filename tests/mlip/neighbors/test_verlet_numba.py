"""The compiled CPU steps of VerletList give the stale flags, pairs and distances of the torch
reference (the path on other devices)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from mlip.neighbors import VerletList
from mlip.neighbors import verlet as verlet_module
from mlip.neighbors.verlet_numba import filter_candidates, stale_or_filter, stale_systems
from mlip.testing import assert_close_ulps


def _molecules(n_systems: int, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
    """Free clusters of 5-30 atoms in boxes of 4-9 Å (no periodic axis)."""
    counts = rng.integers(5, 31, n_systems)
    positions = torch.tensor(np.concatenate([rng.uniform(0, rng.uniform(4, 9), (n, 3))
                                             for n in counts]))
    cell = torch.zeros(n_systems, 3, 3, dtype=torch.float64)
    pbc = torch.zeros(n_systems, 3, dtype=torch.bool)
    return positions, cell, pbc, torch.repeat_interleave(torch.arange(n_systems),
                                                         torch.tensor(counts))


#: How far, in ulps of the largest term of ``D = r_j - r_i + S·cell``, two summation orders of
#: ``S @ cell`` may move a component of D: a BLAS that fuses multiply-adds rounds once where the
#: loop rounds five times. |D|² = Σ D_k² then moves by up to √3·2|D| times that.
DISTANCE_ULPS = 16


def _operand_scale(positions: torch.Tensor, cell: torch.Tensor, shifts: torch.Tensor
                   ) -> torch.Tensor:
    """A bound on the terms of every D = r_j - r_i + S·cell, Å (a 0-d float64 tensor)."""
    pos = positions.detach().to(torch.float64).nan_to_num(0.0).abs().flatten()
    reach = shifts.abs().to(torch.float64) @ cell.detach().to(torch.float64).abs().amax(0)
    zero = torch.zeros(1, dtype=torch.float64)
    return torch.cat([pos, zero]).amax() + torch.cat([reach.flatten(), zero]).amax()


def _assert_same_distances(got: tuple[torch.Tensor, ...], expected: tuple[torch.Tensor, ...],
                           positions: torch.Tensor, cell: torch.Tensor) -> None:
    """|D|² and the shortest |D| of two paths (``filter_candidates`` returns) agree to
    :data:`DISTANCE_ULPS` of the terms they were summed from: a pair 3 Å apart across a 100 Å
    shift inherits the rounding of the 100 Å terms, far above an ulp of its own |D|²."""
    scale = _operand_scale(positions, cell, expected[1])
    assert_close_ulps(got[2], expected[2], DISTANCE_ULPS, scale=2 * expected[2].sqrt() * scale,
                      name="|D|^2")
    assert_close_ulps(got[3], expected[3], DISTANCE_ULPS, scale=scale, name="shortest |D|")


def _compare(nl: VerletList, positions: torch.Tensor, cell: torch.Tensor,
             batch: torch.Tensor) -> torch.Tensor:
    """Assert both paths agree on the cached list of ``nl``; return the stale flags."""
    c = nl._cache
    assert c.host is not None
    stale = verlet_module._stale_torch(c, positions, cell, batch, nl.skin)
    assert torch.equal(stale_systems(positions, cell, c.host, nl.skin), stale)
    expected = verlet_module._filter_torch(c, positions, cell, nl.cutoff)
    got = filter_candidates(positions, cell, c.host, nl.cutoff)
    for a, b in zip(got, expected):
        assert a.dtype == b.dtype and a.shape == b.shape
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    if cell.shape[0] == 1 and c.periodic:  # torch: S @ cell by BLAS, which may fuse an FMA
        _assert_same_distances(got, expected, positions, cell)
    else:  # the same elementwise operations in the same order
        assert torch.equal(got[2], expected[2])
        # torch's vectorised square root (not correctly rounded) may differ in the last bit
        assert_close_ulps(got[3], expected[3], 2, name="shortest |D|")
    flags, filtered = stale_or_filter(positions, cell, c.host, nl.skin, nl.cutoff)  # both in one
    assert torch.equal(flags, stale) and (filtered is None) == bool(stale.any())
    for a, b in zip(filtered or got, got):
        assert torch.equal(a, b)
    return stale


def _walk(nl: VerletList, positions: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor,
          batch: torch.Tensor, rng: np.random.Generator) -> list[bool]:
    """Compare both paths after a build and after small, large, NaN and cell perturbations."""
    nl.update(positions, cell, pbc, batch)
    seen = []
    for scale in (0.0, 0.05, 0.2, 0.5):  # × skin: below and above the rebuild threshold
        step = torch.tensor(rng.normal(scale=scale * nl.skin, size=positions.shape))
        moved = positions + step.to(positions.dtype)
        seen += _compare(nl, moved, cell, batch).tolist()
        strained = cell + torch.tensor(rng.normal(scale=0.02 * scale, size=cell.shape),
                                       dtype=cell.dtype)
        seen += _compare(nl, moved, strained, batch).tolist()
    nan = positions.clone()
    nan[int(rng.integers(positions.shape[0])), 1] = float("nan")
    stale = _compare(nl, nan, cell, batch)
    assert stale[batch[torch.isnan(nan).any(dim=1)]].all()
    return seen


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_periodic_batch_steps_equal_the_torch_reference(batched_cases, dtype):
    positions, cell, pbc, batch, _ = batched_cases  # 300 skewed cells, mixed pbc, 1-12 atoms
    nl = VerletList(cutoff=4.5, skin=0.8)
    seen = _walk(nl, positions.to(dtype), cell.to(dtype), pbc, batch, np.random.default_rng(0))
    assert any(seen) and not all(seen)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_single_periodic_systems_equal_the_torch_reference(cases, dtype):
    """One system: torch adds ``S @ cell`` by a matmul; shifts reach ±5 in thin cells."""
    rng = np.random.default_rng(1)
    seen, widest = [], 0
    for case in cases[:60]:
        positions, cell, pbc = case.tensors()
        batch = torch.zeros(positions.shape[0], dtype=torch.long)
        nl = VerletList(cutoff=case.cutoff, skin=0.5)
        seen += _walk(nl, positions.to(dtype), cell.unsqueeze(0).to(dtype), pbc.unsqueeze(0),
                      batch, rng)
        widest = max(widest, int(nl._cache.shift.abs().numpy().max(initial=0)))
    assert any(seen) and not all(seen) and widest >= 3


@pytest.mark.parametrize("n_systems", [1, 7])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_molecule_steps_equal_the_torch_reference(n_systems, dtype):
    rng = np.random.default_rng(n_systems)
    positions, cell, pbc, batch = _molecules(n_systems, rng)
    nl = VerletList(cutoff=3.0, skin=1.0)
    seen = []
    for _ in range(5):
        seen += _walk(nl, positions.to(dtype), cell.to(dtype), pbc, batch, rng)
        assert nl._cache.periodic is False
    assert any(seen) and not all(seen)


def test_update_returns_fresh_tensors_on_every_call():
    rng = np.random.default_rng(3)
    positions, cell, pbc, batch = _molecules(2, rng)
    nl = VerletList(cutoff=3.0, skin=1.0)
    value = nl.update(positions, cell, pbc, batch)
    first = (value.edge_index, value.edge_shift, value.distance_sq, value.shortest_distance)
    kept = [t.clone() for t in first]
    nl.update(positions + 0.1, cell, pbc, batch)  # reused list, new distances
    nl.update(positions + torch.tensor(rng.normal(scale=0.05, size=positions.shape)), cell, pbc,
              batch)
    assert nl.n_rebuilds == 1
    for before, now in zip(kept, first):
        assert torch.equal(before, now)


def test_distances_of_a_blas_that_fuses_multiply_adds_pass_the_comparison():
    """Issue 15.7: on another x86 CPU the BLAS ``S @ cell`` of a single periodic system moved
    |D|² by a few ulps of its 100 Å terms, which ``rtol=1e-15`` on |D|² rejected. Here S @ cell
    rounded once (as a chain of fused multiply-adds) against the loop of ``filter_candidates``,
    for 3 Å pairs across shifts of up to ±40 cells: :func:`_assert_same_distances` accepts them,
    and they are far beyond the old relative tolerance."""
    rng = np.random.default_rng(15)
    cell = np.diag([7.3, 9.1, 11.7]) + rng.uniform(-1.5, 1.5, (3, 3))
    shifts = rng.integers(-40, 41, (400, 3))
    exact = np.array([[float(sum(Fraction(int(s[a])) * Fraction(cell[a, k]) for a in range(3)))
                       for k in range(3)] for s in shifts])  # S @ cell, rounded once
    looped = (shifts[:, 0:1] * cell[0] + shifts[:, 1:2] * cell[1]) + shifts[:, 2:3] * cell[2]
    r_i = rng.uniform(0.0, 10.0, (400, 3))
    r_j = r_i - looped + rng.normal(size=(400, 3)) * 1.7  # |D| ~ 3 Å across the shift
    steps = r_j - r_i

    def paths(image: np.ndarray) -> tuple[torch.Tensor, ...]:
        d = steps + image
        sq = (d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1]) + d[:, 2] * d[:, 2]
        return (None, torch.from_numpy(shifts), torch.from_numpy(sq),
                torch.from_numpy(np.sqrt(sq.min(keepdims=True))))

    fused, loop = paths(exact), paths(looped)
    positions = torch.from_numpy(np.concatenate([r_i, r_j]))
    assert not torch.equal(fused[2], loop[2])
    with pytest.raises(AssertionError):
        torch.testing.assert_close(fused[2], loop[2], rtol=1e-15, atol=0.0)
    _assert_same_distances(fused, loop, positions, torch.from_numpy(cell)[None])
    with pytest.raises(AssertionError, match="ulps apart"):  # a real error is still caught
        _assert_same_distances((*fused[:2], fused[2] * (1 + 1e-11), fused[3]), loop, positions,
                               torch.from_numpy(cell)[None])

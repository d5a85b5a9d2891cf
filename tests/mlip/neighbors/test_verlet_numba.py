"""The compiled CPU steps of VerletList give the stale flags, pairs and distances of the torch
reference (the path on other devices)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlip.neighbors import VerletList
from mlip.neighbors import verlet as verlet_module
from mlip.neighbors.verlet_numba import filter_candidates, stale_or_filter, stale_systems


def _molecules(n_systems: int, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
    """Free clusters of 5-30 atoms in boxes of 4-9 Å (no periodic axis)."""
    counts = rng.integers(5, 31, n_systems)
    positions = torch.tensor(np.concatenate([rng.uniform(0, rng.uniform(4, 9), (n, 3))
                                             for n in counts]))
    cell = torch.zeros(n_systems, 3, 3, dtype=torch.float64)
    pbc = torch.zeros(n_systems, 3, dtype=torch.bool)
    return positions, cell, pbc, torch.repeat_interleave(torch.arange(n_systems),
                                                         torch.tensor(counts))


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
        torch.testing.assert_close(got[2], expected[2], rtol=1e-15, atol=0.0)
    else:  # the same elementwise operations in the same order
        assert torch.equal(got[2], expected[2])
    # the shortest distance per system: torch's vectorised sqrt may differ in the last bit
    torch.testing.assert_close(got[3], expected[3], rtol=1e-15, atol=0.0)
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
    first = nl.update(positions, cell, pbc, batch) + (nl.edge_distance_sq,)
    kept = [t.clone() for t in first]
    nl.update(positions + 0.1, cell, pbc, batch)  # reused list, new distances
    nl.update(positions + torch.tensor(rng.normal(scale=0.05, size=positions.shape)), cell, pbc,
              batch)
    assert nl.n_rebuilds == 1
    for before, now in zip(kept, first):
        assert torch.equal(before, now)

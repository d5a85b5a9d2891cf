"""The compiled CPU bin layout and value checks agree exactly with their torch counterparts."""

from __future__ import annotations

import ase.build
import numpy as np
import pytest
import torch

from mlip.errors import InvalidStructureError
from mlip.neighbors._validate import _check_values_torch, check_cells, normalize_inputs
from mlip.neighbors.grid import build_grid
from mlip.neighbors.grid_numba import bin_systems


def _assert_same_layout(positions, cell, pbc, batch, cutoff):
    counts = torch.bincount(batch, minlength=cell.shape[0])
    ref = build_grid(positions, cell, pbc, batch, counts, cutoff)
    wrapped, images, bins, n_bins, reach, bin_offset, total, extent = bin_systems(
        positions.numpy(), cell.numpy(), pbc.numpy(), batch.numpy(), counts.numpy(), cutoff)
    np.testing.assert_array_equal(wrapped, ref.wrapped.numpy())  # bit for bit
    np.testing.assert_array_equal(images, ref.images.numpy())
    np.testing.assert_array_equal(bins[:, :3], ref.bins.numpy())
    np.testing.assert_array_equal(bins[:, 3], ref.atom_bin.numpy())
    np.testing.assert_array_equal(n_bins, ref.n_bins.numpy())
    np.testing.assert_array_equal(reach, ref.reach.numpy())
    np.testing.assert_array_equal(bin_offset, ref.bin_offset.numpy())
    assert total == ref.n_bins_total
    # heights use a square root, which torch's vectorised float64 kernel may round differently
    np.testing.assert_allclose(extent, ref.extent.numpy(), rtol=1e-14, atol=0)


@pytest.mark.parametrize("cutoff", [1.7, 4.5])
def test_layout_equals_torch_build_grid_for_a_batch(batched_cases, cutoff):
    positions, cell, pbc, batch, _ = batched_cases
    _assert_same_layout(positions, cell, pbc, batch, cutoff)


def test_layout_equals_torch_build_grid_for_single_systems(cases):
    for case in cases[:100]:
        positions, cell, pbc = case.tensors()
        batch = torch.zeros(len(positions), dtype=torch.long)
        _assert_same_layout(positions, cell[None], pbc[None], batch, case.cutoff)


@pytest.mark.parametrize("pbc", [[1, 1, 1], [1, 0, 0], [0, 1, 1], [0, 0, 0]])
def test_layout_equals_torch_for_crystals_with_atoms_on_bin_boundaries(pbc):
    for name, kind in (("Cu", "fcc"), ("Si", "diamond"), ("Mg", "hcp")):
        atoms = ase.build.bulk(name, kind, a=3.6 if kind != "hcp" else 3.2).repeat(3)
        for cutoff in (3.0, 5.0):
            _assert_same_layout(torch.tensor(atoms.positions), torch.tensor(atoms.cell.array)[None],
                                torch.tensor(pbc, dtype=torch.bool)[None],
                                torch.zeros(len(atoms), dtype=torch.long), cutoff)


_CELL = 3.0 * torch.eye(3, dtype=torch.float64)[None]
_PBC = torch.ones(1, 3, dtype=torch.bool)


@pytest.mark.parametrize("positions,cell,pbc,batch,message", [
    (torch.tensor([[0.0, 0, 0], [float("nan"), 0, 0]], dtype=torch.float64), _CELL, _PBC,
     torch.zeros(2, dtype=torch.long), r"non-finite \(NaN/inf\) positions for atoms \[1\]"),
    (torch.zeros(2, 3, dtype=torch.float64), _CELL, _PBC, torch.tensor([0, 1]),
     r"batch indices must lie in \[0, 1\)"),
    (torch.zeros(2, 3, dtype=torch.float64), _CELL.expand(2, 3, 3), _PBC.expand(2, 3),
     torch.tensor([1, 0]), "batch must be sorted"),
    (torch.zeros(2, 3, dtype=torch.float64), _CELL * float("inf"), _PBC,
     torch.zeros(2, dtype=torch.long), "cell contains non-finite values"),
    (torch.zeros(2, 3, dtype=torch.float64), torch.tensor([[[1.0, 0, 0], [2, 0, 0], [0, 0, 1]]],
     dtype=torch.float64), _PBC, torch.zeros(2, dtype=torch.long),
     r"system 0: cell is singular along its periodic directions \(pbc=\[True, True, True\]"),
])
def test_compiled_and_torch_value_checks_raise_the_same_message(positions, cell, pbc, batch,
                                                                 message):
    with pytest.raises(InvalidStructureError, match=message):
        normalize_inputs(positions, cell, pbc, 2.0, batch)  # CPU: the compiled scan
    with pytest.raises(InvalidStructureError, match=message):
        _check_values_torch(positions, cell, pbc, batch)  # the path of other devices


def test_check_cells_accepts_singular_rows_on_free_axes_only():
    flat = torch.tensor([[[3.0, 0, 0], [0, 3, 0], [0, 0, 0]]], dtype=torch.float64)
    check_cells(flat, torch.tensor([[True, True, False]]))
    with pytest.raises(InvalidStructureError, match=r"system 1: cell is singular"):
        check_cells(torch.cat([_CELL, flat]), torch.tensor([[True] * 3, [True, True, True]]))

"""Equivariant layer norm: O(3) equivariance, normalisation, zero-init residual start."""

from __future__ import annotations

import torch
from e3nn import o3

from mlip.nn.norm import EquivariantLayerNorm
from mlip.nn.precision import float64_construction
from mlip.testing import random_rotation

IRREPS = o3.Irreps("5x0e+3x1o+2x2e+2x0o")


def test_equivariant_under_rotations_and_reflections():
    torch.manual_seed(0)
    norm = EquivariantLayerNorm(IRREPS).double()
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(4, IRREPS.dim, dtype=torch.float64)
    for reflect in (False, True):
        with float64_construction():
            d = IRREPS.D_from_matrix(random_rotation(1, reflect))
        assert (norm(x @ d.T) - norm(x) @ d.T).abs().max() < 1e-13


def test_normalises_each_block():
    norm = EquivariantLayerNorm(IRREPS, eps=0.0).double()
    x = 7.0 * torch.randn(3, IRREPS.dim, dtype=torch.float64) + 2.0
    y = norm(x)
    for (mul, ir), section in zip(IRREPS, IRREPS.slices()):
        block = y[:, section].reshape(3, mul, ir.dim)
        assert torch.allclose(block.pow(2).mean(dim=(1, 2)), torch.ones(3, dtype=torch.float64))
        if ir.l == 0:
            assert block.mean(dim=1).abs().max() < 1e-13


def test_zero_scale_starts_as_zero():
    norm = EquivariantLayerNorm(IRREPS, scale_init=0.0)
    assert norm(torch.randn(2, IRREPS.dim)).abs().max() == 0

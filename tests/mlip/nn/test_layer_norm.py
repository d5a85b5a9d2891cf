"""Merged equivariant layer norm: the formula, and equivariance."""

from __future__ import annotations

import torch

from mlip.nn.layer_norm import EquivariantMergeLayerNorm
from mlip.nn.wigner import WignerD
from mlip.testing import random_rotation


def test_merged_norm_matches_the_formula_and_is_equivariant():
    torch.manual_seed(0)
    lmax, channels = 3, 5
    norm = EquivariantMergeLayerNorm(lmax, channels).double()
    with torch.no_grad():
        norm.weight.copy_(torch.rand(lmax + 1, channels) + 0.5)
        norm.bias.copy_(torch.randn(channels))
    x = torch.randn(4, (lmax + 1) ** 2, channels, dtype=torch.float64) * 3.0
    centred = x.clone()
    centred[:, 0] -= x[:, 0].mean(dim=1, keepdim=True)
    variance = sum(
        centred[:, ell * ell : (ell + 1) ** 2].pow(2).sum(1).mean(1) / (2 * ell + 1)
        for ell in range(lmax + 1)
    ) / (lmax + 1)
    expected = centred / torch.sqrt(variance + 1e-5)[:, None, None]
    for ell in range(lmax + 1):
        expected[:, ell * ell : (ell + 1) ** 2] *= norm.weight[ell].detach()
    expected[:, 0] += norm.bias.detach()
    assert torch.allclose(norm(x), expected, atol=1e-13)
    d = WignerD(lmax)(random_rotation(1)[None])[0]
    rotated = norm(torch.einsum("ij,njc->nic", d, x))
    assert torch.allclose(rotated, torch.einsum("ij,njc->nic", d, norm(x)), atol=1e-13)


def test_float32_input_keeps_its_dtype():
    norm = EquivariantMergeLayerNorm(2, 3)
    assert norm(torch.randn(2, 9, 3)).dtype == torch.float32

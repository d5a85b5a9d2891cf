"""eSCN SO(2) linear maps: layout, commutation with rolls about y, full SO(3) equivariance."""

from __future__ import annotations

import pytest
import torch
from e3nn import o3

from mlip.nn.so2 import SO2Linear, degrees_of_order, m_primary_order
from mlip.nn.wigner import WignerD, edge_rotation
from mlip.testing import random_rotation


@pytest.mark.parametrize("lmax,mmax", [(2, 1), (4, 2), (6, 2), (3, 3)])
def test_m_primary_layout(lmax, mmax):
    order = m_primary_order(lmax, mmax)
    assert len(order) == (lmax + 1) + 2 * sum(lmax + 1 - m for m in range(1, mmax + 1))
    expected = {
        ell * ell + ell + m
        for ell in range(lmax + 1)
        for m in range(-min(ell, mmax), min(ell, mmax) + 1)
    }
    assert len(set(order)) == len(order) and set(order) == expected
    assert [int(i**0.5) for i in order] == degrees_of_order(lmax, mmax)
    assert order[: lmax + 1] == [ell * ell + ell for ell in range(lmax + 1)]


def _roll(lmax: int, mmax: int, angle: float) -> torch.Tensor:
    """Wigner-D of a rotation about y, restricted to the m-primary rows and columns."""
    rows = torch.tensor(m_primary_order(lmax, mmax))
    rotation = o3.matrix_y(torch.tensor(angle, dtype=torch.float64))
    return WignerD(lmax)(rotation[None])[0][rows][:, rows]


def test_so2_linear_commutes_with_rolls_about_the_polar_axis():
    torch.manual_seed(0)
    lmax, mmax = 4, 2
    layer = SO2Linear(3, 5, lmax, mmax, n_extra=7).double()
    x = torch.randn(6, len(m_primary_order(lmax, mmax)), 3, dtype=torch.float64)
    roll = _roll(lmax, mmax, 0.7)
    y, extra = layer(x)
    y_rolled, extra_rolled = layer(torch.einsum("rs,esc->erc", roll, x))
    assert torch.allclose(y_rolled, torch.einsum("rs,esc->erc", roll, y), atol=1e-13)
    assert torch.allclose(extra_rolled, extra, atol=1e-13)
    assert not torch.allclose(
        y, torch.einsum("rs,esc->erc", roll, y), atol=1e-3
    )  # roll is non-trivial


def test_so2_convolution_is_so3_equivariant():
    """Dᵀ · SO2Linear · D on node features: rotating inputs and edges rotates the output."""
    torch.manual_seed(1)
    lmax, mmax = 3, 2
    rows = torch.tensor(m_primary_order(lmax, mmax))
    wigner = WignerD(lmax)
    layer = SO2Linear(2, 2, lmax, mmax).double()

    def convolve(x: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        to_edge = wigner(edge_rotation(vectors), rows)
        y, _ = layer(torch.einsum("eri,eic->erc", to_edge, x))
        return torch.einsum("eri,erc->eic", to_edge, y)

    vectors = torch.cat(
        [
            torch.randn(8, 3, dtype=torch.float64),
            torch.tensor([[0.0, 2.0, 0.0], [0.0, -1.0, 0.0]], dtype=torch.float64),
        ]
    )
    x = torch.randn(len(vectors), (lmax + 1) ** 2, 2, dtype=torch.float64)
    rotation = random_rotation(3)
    d = wigner(rotation[None])[0]
    rotated = convolve(torch.einsum("ij,ejc->eic", d, x), vectors @ rotation.T)
    assert torch.allclose(rotated, torch.einsum("ij,ejc->eic", d, convolve(x, vectors)), atol=1e-12)

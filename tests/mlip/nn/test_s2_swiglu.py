"""SwiGLU-S² and the grid FFN: exact equivariance at the product rule, failure one step below."""

from __future__ import annotations

import pytest
import torch
from e3nn import o3

from mlip.errors import ConfigError
from mlip.nn.feed_forward import GridFeedForward
from mlip.nn.s2_swiglu import SwiGLUS2, sphere_grid_matrices, truncated_product_resolution
from mlip.nn.so2 import m_primary_order
from mlip.nn.wigner import WignerD
from mlip.testing import random_rotation


def _rotate(d: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,njc->nic", d, x)


def _swiglu_error(lmax: int, resolution: tuple[int, int]) -> float:
    torch.manual_seed(0)
    act = SwiGLUS2(lmax, 4, resolution)
    h = torch.randn(5, (lmax + 1) ** 2, 8, dtype=torch.float64)
    z = torch.randn(5, 12, dtype=torch.float64)
    d = WignerD(lmax)(random_rotation(2)[None])[0]
    ref = _rotate(d, act(h, z))
    return float((act(_rotate(d, h), z) - ref).abs().max() / ref.abs().max())


def test_resolution_rule_values():
    assert truncated_product_resolution(4, 2) == (14, 8)
    assert truncated_product_resolution(6, 2) == (20, 8)
    assert truncated_product_resolution(2, 1) == (8, 4)
    assert truncated_product_resolution(4, 4) == (14, 14)


@pytest.mark.parametrize("lmax", [2, 3, 4])
def test_swiglu_s2_exact_at_rule_and_not_below(lmax):
    res = truncated_product_resolution(lmax, lmax)
    assert _swiglu_error(lmax, res) < 1e-12
    assert _swiglu_error(lmax, (res[0] - 2, res[1] - 2)) > 1e-6


def test_truncated_swiglu_commutes_with_rolls_only_at_enough_azimuthal_points():
    lmax, mmax = 4, 2
    rows = m_primary_order(lmax, mmax)
    roll = WignerD(lmax)(o3.matrix_y(torch.tensor(0.9, dtype=torch.float64))[None])[0][rows][
        :, rows
    ]
    h = torch.randn(3, len(rows), 6, dtype=torch.float64)
    z = torch.randn(3, 9, dtype=torch.float64)
    errors = []
    for res_alpha in (8, 6):
        act = SwiGLUS2(lmax, 3, (14, res_alpha), rows)
        ref = _rotate(roll, act(h, z))
        errors.append(float((act(_rotate(roll, h), z) - ref).abs().max() / ref.abs().max()))
    assert errors[0] < 1e-12 and errors[1] > 1e-6


def test_unusable_grid_is_a_config_error():
    with pytest.raises(
        ConfigError, match="res_beta must be even and >= 2\\(lmax\\+1\\) = 10, got 8"
    ):
        SwiGLUS2(4, 2, (8, 8))


def test_grid_round_trip_is_identity():
    to_grid, from_grid = sphere_grid_matrices(4, (14, 8), m_primary_order(4, 2))
    assert torch.allclose(
        from_grid @ to_grid, torch.eye(to_grid.shape[1], dtype=torch.float64), atol=1e-13
    )


@pytest.mark.parametrize("lmax", [2, 3])
def test_grid_feed_forward_is_exactly_equivariant(lmax):
    torch.manual_seed(1)
    x = torch.randn(4, (lmax + 1) ** 2, 6, dtype=torch.float64)
    d = WignerD(lmax)(random_rotation(5)[None])[0]
    res = truncated_product_resolution(lmax, lmax)
    errors = []
    for resolution in (res, (res[0] - 2, res[1] - 2)):
        ffn = GridFeedForward(lmax, 6, 10, resolution).double()
        with torch.no_grad():
            ref = _rotate(d, ffn(x))
            errors.append(float((ffn(_rotate(d, x)) - ref).abs().max() / ref.abs().max()))
    assert errors[0] < 1e-12 and errors[1] > 1e-6

"""S² grid transforms: lossless round trip, the exact-product resolution rule, pointwise ops."""

from __future__ import annotations

import pytest
import torch
from e3nn import o3

from mlip.errors import ConfigError
from mlip.nn.precision import float64_construction
from mlip.nn.s2_grid import GridBilinear, GridMLP, S2Grid, exact_product_resolution
from mlip.nn.s2_mixing import sh_parity_irreps
from mlip.testing import random_rotation


def _wigner(lmax: int, rotation: torch.Tensor) -> torch.Tensor:
    """Block-diagonal D(R) on component-major (l, m) coefficients with parity (−1)^l."""
    with float64_construction():  # e3nn's Wigner-D constants come in the default dtype
        return sh_parity_irreps(1, lmax).D_from_matrix(rotation)


def _product_error(lmax: int, res: tuple[int, int], reflect: bool = False) -> float:
    """Relative equivariance error of x, y ↦ from_grid(to_grid(x) · to_grid(y))."""
    grid = S2Grid(lmax, *res).double()
    gen = torch.Generator().manual_seed(lmax)
    x, y = (torch.randn(3, (lmax + 1) ** 2, 4, generator=gen, dtype=torch.float64)
            for _ in range(2))

    def product(a, b):
        return grid.from_grid(grid.to_grid(a) * grid.to_grid(b))

    d = _wigner(lmax, random_rotation(lmax, reflect))
    rotated = product(d @ x, d @ y)
    expected = d @ product(x, y)
    return float((rotated - expected).abs().max() / expected.abs().max())


@pytest.mark.parametrize("normalization", ["component", "integral"])
def test_round_trip_is_lossless(normalization):
    grid = S2Grid(3, 8, 7, normalization).double()
    x = torch.randn(5, 16, 6, dtype=torch.float64)
    assert (grid.from_grid(grid.to_grid(x)) - x).abs().max() < 1e-13


@pytest.mark.parametrize("lmax", [1, 2, 3])
def test_products_are_exact_at_the_resolution_rule_and_not_below(lmax):
    res_beta, res_alpha = exact_product_resolution(lmax)
    assert _product_error(lmax, (res_beta, res_alpha)) < 1e-12
    assert _product_error(lmax, (res_beta, res_alpha), reflect=True) < 1e-12
    assert _product_error(lmax, (res_beta, res_alpha - 1)) > 1e-6
    if res_beta - 2 >= 2 * (lmax + 1):
        assert _product_error(lmax, (res_beta - 2, res_alpha)) > 1e-6


def test_resolution_rule_matches_the_measured_table():
    assert [exact_product_resolution(lmax)[0] for lmax in (1, 2, 3, 4, 6)] == [4, 8, 10, 14, 20]


def test_buffers_follow_dtype():
    grid = S2Grid(2, 8, 8).float()
    assert grid.to_matrix.dtype == torch.float32 and grid.to_matrix.shape == (64, 9)
    assert grid.from_matrix.shape == (9, 64)


def test_grid_mlp_shares_weights_across_heads():
    mlp = GridMLP(8, [5], num_heads=2).double()
    values = torch.randn(3, 10, 8, dtype=torch.float64)
    swapped = torch.cat([values[..., 4:], values[..., :4]], dim=-1)
    out, out_swapped = mlp(values), mlp(swapped)
    assert torch.allclose(out_swapped, torch.cat([out[..., 4:], out[..., :4]], dim=-1), atol=1e-14)
    assert not torch.allclose(out[..., :4], out[..., 4:])


def test_grid_bilinear_is_a_product_of_two_linear_maps():
    bilinear = GridBilinear(3).double()
    v = torch.randn(4, 3, dtype=torch.float64)
    assert torch.allclose(bilinear(2 * v), 4 * bilinear(v), atol=1e-13)


def test_bad_grids_are_refused():
    with pytest.raises(ConfigError, match=r"res_beta must be even and >= 2\(lmax\+1\) = 6, got 7"):
        S2Grid(2, 7, 7)
    with pytest.raises(ConfigError, match="res_alpha must be >= 2 lmax \\+ 1 = 5, got 4"):
        S2Grid(2, 8, 4)
    with pytest.raises(ConfigError, match="must be 'component' or 'integral', got 'norm'"):
        S2Grid(2, 8, 8, "norm")
    with pytest.raises(ConfigError, match="3 heads do not divide 8 channels"):
        GridMLP(8, [4], num_heads=3)


def test_sh_parity_irreps():
    assert sh_parity_irreps(4, 3) == o3.Irreps("4x0e+4x1o+4x2e+4x3o")

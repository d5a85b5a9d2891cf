"""The S² grid mixing layer: exact O(3) equivariance in bilinear mode, approximate with an MLP."""

from __future__ import annotations

import pytest
import torch
from e3nn import o3

from mlip.errors import ConfigError
from mlip.nn.precision import float64_construction
from mlip.nn.s2_grid import GridBilinear, GridMLP, exact_product_resolution
from mlip.nn.s2_mixing import S2MixingLayer
from mlip.testing import random_rotation

IRREPS = o3.Irreps("6x0e+4x1o+3x2e")


def _layer(pointwise, res):
    with float64_construction():
        return S2MixingLayer(IRREPS, IRREPS, lmax=2, channels=4, pointwise=pointwise,
                             res_beta=res[0], res_alpha=res[1])


def _error(layer, reflect):
    torch.manual_seed(0)
    x = torch.randn(5, IRREPS.dim, dtype=torch.float64)
    with float64_construction():
        d = IRREPS.D_from_matrix(random_rotation(3, reflect))
    with torch.no_grad():
        expected = layer(x) @ d.T
        return float((layer(x @ d.T) - expected).abs().max() / expected.abs().max())


@pytest.mark.parametrize("reflect", [False, True])
def test_bilinear_mixer_is_exactly_equivariant_at_the_rule(reflect):
    with float64_construction():
        layer = _layer(GridBilinear(4), exact_product_resolution(2))
    assert _error(layer, reflect) < 1e-12


def test_bilinear_mixer_below_the_rule_is_not_equivariant():
    with float64_construction():
        layer = _layer(GridBilinear(4), (6, 7))
    assert _error(layer, False) > 1e-6


def test_mlp_mixer_error_falls_with_resolution():
    errors = []
    for res in [(8, 7), (14, 13), (36, 35)]:
        torch.manual_seed(1)
        with float64_construction():
            errors.append(_error(_layer(GridMLP(4, [8], num_heads=2), res), True))
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-8 and errors[0] > 1e-6


def test_pseudotensor_inputs_are_refused():
    with pytest.raises(ConfigError, match=r"parity \(-1\)\^l features; got \['1e'\]"):
        S2MixingLayer("4x0e+4x1e", "4x0e", lmax=1, channels=4, pointwise=GridBilinear(4),
                      res_beta=4, res_alpha=4)

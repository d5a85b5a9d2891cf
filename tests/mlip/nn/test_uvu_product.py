"""UVUTensorProduct: equal to e3nn's uvu TensorProduct, through its message layout and weights."""

from __future__ import annotations

import pytest
import torch
from e3nn import o3

from mlip.errors import ConfigError
from mlip.nn.irreps_linear import IrrepsLinear
from mlip.nn.precision import float64_construction
from mlip.nn.uvu_product import UVUTensorProduct

IRREPS_SH = o3.Irreps.spherical_harmonics(3)
ALLOWED = o3.Irreps("3x0e+2x1o+2x2e+1x3o")


def _reference(tp: UVUTensorProduct) -> o3.TensorProduct:
    """e3nn's TensorProduct with the same paths, output sorted as ``tp.irreps_out``."""
    mid = o3.Irreps([(tp.irreps_in[i].mul, ir) for i, _, ir in tp.instructions])
    _, permutation, _ = mid.sort()
    instructions = [(i, j, permutation[k], "uvu", True)
                    for k, (i, j, _) in enumerate(tp.instructions)]
    return o3.TensorProduct(tp.irreps_in, tp.irreps_sh, tp.irreps_out, instructions,
                            shared_weights=False, internal_weights=False)


@pytest.mark.parametrize("irreps_in", ["6x0e", "5x0e+3x1o+2x2e", "4x0e+2x1o+3x2e+2x3o+1x1e"])
def test_equals_e3nn_tensor_product(irreps_in):
    torch.manual_seed(0)
    with float64_construction():
        tp = UVUTensorProduct(irreps_in, IRREPS_SH, ALLOWED)
        ref = _reference(tp)
        n_edges = 7
        x = torch.randn(n_edges, tp.irreps_in.dim)
        sh = o3.spherical_harmonics(IRREPS_SH, torch.randn(n_edges, 3), normalize=True)
        weights = torch.randn(n_edges, tp.weight_numel)
    assert ref.weight_numel == tp.weight_numel
    expected = ref(x, sh, weights)
    out = tp(x, sh, weights[:, tp.weight_index])
    assert sorted(tp.columns) == list(range(expected.shape[1]))
    assert (out - expected[:, tp.columns]).abs().max() < 1e-14
    # a linear map reading the block layout directly equals one reading e3nn's layout
    with float64_construction():
        linear = IrrepsLinear(tp.irreps_out, ALLOWED, in_columns=tp.columns)
        linear_ref = o3.Linear(tp.irreps_out, ALLOWED)
    with torch.no_grad():
        linear_ref.weight.copy_(linear.weight)
    assert (linear(out) - linear_ref(expected)).abs().max() < 1e-13


def test_parity_forbidden_paths_are_dropped():
    tp = UVUTensorProduct("2x1o", "1x0e+1x1o", "2x0e+2x1o+2x1e")
    assert [str(ir) for _, _, ir in tp.instructions] == ["1o", "0e", "1e"]
    tp = UVUTensorProduct("2x1o", "1x0e+1x1o", "2x0e+2x1o")
    assert [str(ir) for _, _, ir in tp.instructions] == ["1o", "0e"]


def test_edge_irreps_with_multiplicity_are_refused():
    with pytest.raises(ConfigError, match="multiplicity-1 edge irreps, got 2x0e"):
        UVUTensorProduct("2x0e", "2x0e", "2x0e")

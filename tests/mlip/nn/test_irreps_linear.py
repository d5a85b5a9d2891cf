"""IrrepsLinear: the same map as e3nn's o3.Linear, with permuted or ignored columns."""

from __future__ import annotations

import torch
from e3nn import o3

from mlip.nn.irreps_linear import IrrepsLinear
from mlip.nn.precision import float64_construction

IRREPS_IN = o3.Irreps("5x0e+3x1o+2x2e+2x0e+1x1e")
IRREPS_OUT = o3.Irreps("4x0e+2x1o+3x2e+1x3o")


def _pair():
    torch.manual_seed(0)
    with float64_construction():
        ours = IrrepsLinear(IRREPS_IN, IRREPS_OUT)
        ref = o3.Linear(IRREPS_IN, IRREPS_OUT)
    assert ours.weight.shape == ref.weight.shape
    with torch.no_grad():
        ours.weight.normal_()
        ref.weight.copy_(ours.weight)
    return ours, ref


def test_equals_e3nn_linear():
    ours, ref = _pair()
    x = torch.randn(6, IRREPS_IN.dim, dtype=torch.float64)
    assert (ours(x) - ref(x)).abs().max() < 1e-14


def test_permuted_and_ignored_columns():
    torch.manual_seed(1)
    in_perm = torch.randperm(IRREPS_IN.dim)
    out_perm = torch.randperm(IRREPS_OUT.dim)
    with float64_construction():
        plain = IrrepsLinear(IRREPS_IN, IRREPS_OUT)
        # actual input: the permuted features followed by 3 columns the map must ignore
        permuted = IrrepsLinear(IRREPS_IN, IRREPS_OUT, in_columns=in_perm.tolist() + [-1] * 3,
                                out_columns=out_perm.tolist())
    with torch.no_grad():
        permuted.weight.copy_(plain.weight)
    x = torch.randn(4, IRREPS_IN.dim, dtype=torch.float64)
    extra = torch.randn(4, 3, dtype=torch.float64)
    out = permuted(torch.cat([x[:, in_perm], extra], dim=1))
    assert (out - plain(x)[:, out_perm]).abs().max() < 1e-14


def test_weight_gradients_match_e3nn():
    ours, ref = _pair()
    x = torch.randn(5, IRREPS_IN.dim, dtype=torch.float64)
    ours(x).pow(2).sum().backward()
    ref(x).pow(2).sum().backward()
    assert (ours.weight.grad - ref.weight.grad).abs().max() < 1e-12

"""CP tensor product: exact reference, rank-R reconstruction, the 2ε equivariance bound."""

from __future__ import annotations

import pytest
import torch
from e3nn import o3

from mlip.errors import ConfigError
from mlip.nn.cp_decomposition import cp_reconstruct, fit_cp_als
from mlip.nn.cp_tensor_product import (
    CGTensorProduct,
    CPTensorProduct,
    DenseCGTensorProduct,
    coupling_tensor,
    from_e3nn_layout,
    rank_schedule,
    tensor_product_paths,
    to_e3nn_layout,
)
from mlip.nn.precision import float64_construction
from mlip.testing import random_rotation


def _inputs(lmax: int, channels: int, weight_shape: tuple[int, ...], n: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    d = (lmax + 1) ** 2
    x = torch.randn(n, d, channels, generator=g, dtype=torch.float64)
    vectors = torch.randn(n, 3, generator=g, dtype=torch.float64)
    y = o3.spherical_harmonics(list(range(lmax + 1)), vectors, normalize=True,
                               normalization="component")
    w = torch.randn(n, *weight_shape, generator=g, dtype=torch.float64)
    return x, y, w


def _wigner(lmax: int, seed: int) -> torch.Tensor:
    """Block-diagonal D(R), (d, d), for the component-major layout."""
    return o3.Irreps.spherical_harmonics(lmax).D_from_matrix(random_rotation(seed))


def test_rank_schedules():
    assert [rank_schedule(2, s) for s in ("quadratic", "linear", "log", "full")] == [28, 14, 16, 81]
    assert rank_schedule(0) == 1
    with pytest.raises(ConfigError, match="unknown rank schedule 'cubic'"):
        rank_schedule(2, "cubic")


def test_layout_round_trip_and_e3nn_blocks():
    x = torch.randn(3, 9, 4, dtype=torch.float64)
    flat = to_e3nn_layout(x, 2)
    assert flat.shape == (3, 36)
    assert torch.equal(flat[:, 4:7], x[:, 1:4, 0])  # e3nn: 4x0e, then channel 0 of 4x1e, ...
    assert torch.equal(from_e3nn_layout(flat, 2, 4), x)


@pytest.mark.parametrize("share", [True, False])
def test_cg_module_matches_e3nn_tensor_product(share):
    """The exact modules are e3nn's uvu product with one weight per channel (or path, channel)."""
    with float64_construction():
        cg = CGTensorProduct(2, 3, share_path_weights=share)
    x, y, w = _inputs(2, 3, cg.weight_shape)
    out = cg(x, y, w)
    assert out.shape == (6, 9, 3)
    assert cg.irreps_in1 == o3.Irreps("3x0e+3x1e+3x2e") and cg.irreps_out == cg.irreps_in1
    # independent evaluation: Σ_p w_p T_p applied channel by channel
    tensors = coupling_tensor(2, share_path_weights=False)
    weights = w[:, None, :].expand(-1, len(cg.paths), -1) if share else w
    ref = torch.einsum("pijk,niu,nj,npu->nku", tensors, x, y, weights)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
    assert torch.allclose(tensors.sum(0), coupling_tensor(2), atol=1e-14)
    dense = DenseCGTensorProduct(2, 3, share_path_weights=share)
    assert dense.irreps_out == cg.irreps_out and dense.weight_shape == cg.weight_shape
    torch.testing.assert_close(dense(x, y, w), ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize("lmax", [1, 2])
def test_full_rank_cp_reproduces_the_cg_product(lmax):
    with float64_construction():
        cg = CGTensorProduct(lmax, 4)
    cp = CPTensorProduct(lmax, 4, schedule="full")
    assert cp.rank == (lmax + 1) ** 4 and cp.fit_error < 1e-8
    x, y, w = _inputs(lmax, 4, cp.weight_shape)
    scale = cg(x, y, w).abs().max()
    assert (cp(x, y, w) - cg(x, y, w)).abs().max() < 1e-6 * scale


def test_unshared_path_weights_full_rank_reproduces_cg():
    with float64_construction():
        cg = CGTensorProduct(1, 3, share_path_weights=False)
    cp = CPTensorProduct(1, 3, schedule="full", share_path_weights=False, als_restarts=3)
    assert cp.weight_shape == (len(tensor_product_paths(1)), 3) == (5, 3)
    x, y, w = _inputs(1, 3, cp.weight_shape)
    assert (cp(x, y, w) - cg(x, y, w)).abs().max() < 1e-6 * cg(x, y, w).abs().max()


def test_als_is_deterministic_and_reports_its_error():
    target = coupling_tensor(2)
    fit = fit_cp_als(target, 28, seed=3, n_restarts=1, max_iter=200)
    again = fit_cp_als(target.clone(), 28, seed=3, n_restarts=1, max_iter=200)
    assert all(torch.equal(a, b) for a, b in zip(fit.factors, again.factors))
    err = float((target - cp_reconstruct(fit.factors)).norm() / target.norm())
    assert abs(err - fit.relative_error) < 1e-12 and 0 < err < 0.2
    with pytest.raises(ConfigError, match="CP rank must be >= 1, got 0"):
        fit_cp_als(target, 0)


@pytest.mark.parametrize("share", [True, False])
def test_default_rank_equivariance_error_is_within_the_2_epsilon_bound(share):
    """‖f(Dx, Dy) − D f(x, y)‖ ≤ 2ε |w| ‖x‖ ‖y‖ per edge and channel (docs/tdn.md).

    Unshared: ε bounds the (path, i, j) → k map of the residual, so |w| becomes ‖w_{:, u}‖.
    """
    lmax, channels = 2, 5
    cp = CPTensorProduct(lmax, channels, share_path_weights=share)
    assert cp.rank == 28 and cp.operator_error > 1e-3  # a genuinely approximate product
    x, y, w = _inputs(lmax, channels, cp.weight_shape, n=50)
    worst = 0.0
    for seed in range(5):
        wigner = _wigner(lmax, seed)
        rotated_in = cp(torch.einsum("ij,njc->nic", wigner, x), y @ wigner.T, w)
        rotated_out = torch.einsum("ij,njc->nic", wigner, cp(x, y, w))
        error = (rotated_in - rotated_out).norm(dim=1)  # (n, C)
        w_norm = w.abs() if share else w.norm(dim=1)
        bound = 2 * cp.operator_error * w_norm * x.norm(dim=1) * y.norm(dim=1)[:, None]
        worst = max(worst, float((error / bound).max()))
        assert error.max() > 1e-8  # the check is not vacuous
    assert worst <= 1.0 + 1e-9


def test_cp_error_falls_with_rank():
    errors = [CPTensorProduct(2, 2, rank=r).operator_error for r in (7, 28, 81)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-8


def test_factors_are_buffers_that_follow_dtype_and_inputs_are_checked():
    cp = CPTensorProduct(1, 2)
    names = dict(cp.named_buffers())
    assert {"factor_in1", "factor_in2", "factor_out"} <= set(names) and not list(cp.parameters())
    assert names["factor_in1"].dtype == torch.float64
    x, y, w = _inputs(1, 2, cp.weight_shape)
    out32 = cp.float()(x.float(), y.float(), w.float())
    assert out32.dtype == torch.float32 and cp.factor_in1.dtype == torch.float32
    ref = cp.double()(x, y, w)
    assert (out32.double() - ref).abs().max() < 1e-4 * ref.abs().max()  # float32 round-off
    CPTensorProduct(1, 2).factor_in1.zero_()  # as load_state_dict does: in place
    assert CPTensorProduct(1, 2).factor_in1.abs().max() > 0.1  # the cached fit is not aliased
    with pytest.raises(ValueError, match=r"expected x \(n, 4, 2\), y \(n, 4\), weight \(n, 2\)"):
        cp(x[:, :3], y, w)


@pytest.mark.parametrize("channels", [2, 16])
def test_both_contraction_orders_compute_the_rank_r_sum(channels):
    """C = 16 > d takes the kernel-first order (C diag(b) Aᵀ per edge), C = 2 the factor order;
    both equal out[k, u] = w[u] Σ_r C[k, r] (Σ_i A[i, r] x[i, u]) (Σ_j B[j, r] y[j])."""
    with float64_construction():
        tp = CPTensorProduct(2, channels)
    x, y, w = _inputs(2, channels, (channels,), n=7)
    a, b, c = tp.factor_in1, tp.factor_in2, tp.factor_out
    reference = torch.einsum("kr,nru,nr,nu->nku", c, torch.einsum("ir,niu->nru", a, x), y @ b, w)
    torch.testing.assert_close(tp(x, y, w), reference, rtol=1e-12, atol=1e-12)

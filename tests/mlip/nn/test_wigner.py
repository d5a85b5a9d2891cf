"""Edge rotations and Wigner-D matrices: exactness, and smoothness for edges along ±y."""

from __future__ import annotations

import math

import pytest
import torch
from e3nn import o3

from mlip.nn.precision import float64_construction
from mlip.nn.wigner import WignerD, edge_rotation
from mlip.testing import random_rotation

LMAX = 6


def _directions() -> torch.Tensor:
    """Random directions plus the poles ±y, near-poles and the equator."""
    g = torch.Generator().manual_seed(0)
    special = torch.tensor(
        [
            [0.0, 1.0, 0.0],
            [0.0, -1.0, 0.0],
            [1e-9, 1.0, -2e-9],
            [3e-9, -1.0, 1e-9],
            [1.0, 0.0, 0.0],
            [0.0, 0.0, -1.0],
            [0.3, 1e-12, 0.2],
        ],
        dtype=torch.float64,
    )
    return torch.cat([special, torch.randn(20, 3, generator=g, dtype=torch.float64) * 2.5])


def test_wigner_blocks_match_e3nn_and_compose():
    wigner = WignerD(LMAX)
    rotations = torch.stack([random_rotation(seed) for seed in range(4)])
    blocks = wigner.blocks(rotations)
    for ell, block in enumerate(blocks):
        for k in range(4):
            with float64_construction():  # e3nn's Euler-angle path uses default-dtype tables
                reference = o3.Irrep(ell, 1).D_from_matrix(rotations[k])
            assert torch.allclose(block[k], reference, atol=1e-13), ell
    full = wigner(rotations)
    product = wigner(rotations[:1] @ rotations[1:2])
    assert torch.allclose(product[0], full[0] @ full[1], atol=1e-13)


def test_edge_rotation_maps_every_direction_onto_plus_y():
    vectors = _directions()
    rotation = edge_rotation(vectors)
    unit = vectors / vectors.norm(dim=1, keepdim=True)
    assert torch.isfinite(rotation).all()
    assert torch.allclose(
        torch.einsum("eij,ej->ei", rotation, unit),
        torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64).expand_as(unit),
        atol=1e-14,
    )
    eye = torch.eye(3, dtype=torch.float64).expand(len(vectors), 3, 3)
    assert torch.allclose(rotation @ rotation.transpose(1, 2), eye, atol=1e-14)
    assert torch.allclose(torch.linalg.det(rotation), torch.ones(len(vectors), dtype=torch.float64))


def test_polar_rows_are_spherical_harmonics_with_exact_gradients_at_the_poles():
    """Row m = 0 of D^l(R) is Y^l(r̂)/sqrt(2l+1), independent of the arbitrary roll, so values and
    Jacobians must equal e3nn's (polynomial) spherical harmonics everywhere, including r̂ = ±y."""
    wigner = WignerD(LMAX)
    rows = torch.tensor([ell * ell + ell for ell in range(LMAX + 1)])
    scale = torch.cat(
        [torch.full((2 * ell + 1,), 1 / math.sqrt(2 * ell + 1)) for ell in range(LMAX + 1)]
    )

    def ours(v: torch.Tensor) -> torch.Tensor:
        blocks = wigner(edge_rotation(v), rows)  # (n, L+1, n_sph), row l nonzero on block l only
        return blocks.sum(1)

    def reference(v: torch.Tensor) -> torch.Tensor:
        sph = o3.spherical_harmonics(
            list(range(LMAX + 1)), v, normalize=True, normalization="component"
        )
        return sph * scale.to(sph)

    vectors = _directions().requires_grad_(True)
    values_ours, values_ref = ours(vectors), reference(vectors)
    assert torch.allclose(values_ours, values_ref, atol=1e-13)
    g = torch.Generator().manual_seed(1)
    for _ in range(4):  # vector-Jacobian products with random cotangents, one per direction
        cotangent = torch.randn(values_ours.shape, generator=g, dtype=torch.float64)
        (grad_ours,) = torch.autograd.grad(values_ours, vectors, cotangent, retain_graph=True)
        (grad_ref,) = torch.autograd.grad(values_ref, vectors, cotangent, retain_graph=True)
        assert torch.isfinite(grad_ours).all()
        assert torch.allclose(grad_ours, grad_ref, atol=1e-11)


@pytest.mark.parametrize("pole", [1.0, -1.0])
def test_gradients_of_roll_invariant_quantities_are_finite_at_the_poles(pole):
    """D(R)ᵀ diag(y-roll invariant) D(R) depends only on r̂; its gradient at ±y must be finite
    and equal central differences."""
    wigner = WignerD(3)
    weights = torch.linspace(0.5, 2.0, 16, dtype=torch.float64)
    rows = torch.tensor([0, 2, 6, 12, 1, 3, 5, 7, 11, 13, 9, 15])
    diag = torch.tensor(
        [3.0, 3.0, 3.0, 3.0, 1.0, 1.0, 2.0, 2.0, 0.7, 0.7, 0.4, 0.4], dtype=torch.float64
    )

    def quantity(v: torch.Tensor) -> torch.Tensor:
        d = wigner(edge_rotation(v[None]), rows)[0]  # (12, 16)
        return (d.T @ (diag[:, None] * d) * torch.outer(weights, weights)).sum()

    point = torch.tensor([0.0, pole, 0.0], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(quantity(point), point)
    h = 1e-6
    fd = torch.stack(
        [
            (quantity(point.detach() + h * e) - quantity(point.detach() - h * e)) / (2 * h)
            for e in torch.eye(3, dtype=torch.float64)
        ]
    )
    assert torch.isfinite(grad).all()
    assert torch.allclose(grad, fd, atol=1e-8)

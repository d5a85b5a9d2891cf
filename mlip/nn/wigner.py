"""Edge-aligned rotations and their Wigner-D matrices, smooth for every edge direction.

eSCN/EquiformerV2/V3 rotate each edge onto the polar axis before their SO(2) convolutions. In
e3nn the polar axis is **y** (``beta = acos(y)``), so :func:`edge_rotation` returns R with
``R @ r̂ = e_y``. The roll of R about y is arbitrary: every SO(2) operation commutes with it, so
model outputs do not depend on it.

No continuous map S² → SO(3) with R r̂ = e_y exists, so two charts are used, each a rational
function of r̂ with a denominator ≥ 1 (no gimbal lock, finite gradients, also for r̂ = ±e_y):

* y ≥ 0: the minimal rotation r̂ → e_y (Rodrigues), ``R = I + K + K²/(1 + c)``, K = [r̂ × e_y]×,
  c = r̂·e_y;
* y < 0: the minimal rotation r̂ → −e_y followed by a half turn about x.

The switch between charts only changes the roll, to which the energy is invariant, so gradients
are continuous. Wigner-D blocks are built from R by the polynomial recursion
``D^l = (2l+1) · C_lᵀ (D^1 ⊗ D^{l-1}) C_l`` with C_l = e3nn ``wigner_3j(1, l-1, l)`` and
``D^1 = R`` (e3nn's l=1 basis is (x, y, z)); no Euler angles are involved.
"""

from __future__ import annotations

import torch
from e3nn import o3
from torch import nn

from mlip.nn.constants import ExactConstants

__all__ = ["edge_rotation", "WignerD"]


def _cross_matrix(v: torch.Tensor) -> torch.Tensor:
    """Skew matrices [v]× with [v]× u = v × u; (n, 3) -> (n, 3, 3)."""
    zero = torch.zeros_like(v[:, 0])
    x, y, z = v.unbind(1)
    return torch.stack([torch.stack([zero, -z, y], 1),
                        torch.stack([z, zero, -x], 1),
                        torch.stack([-y, x, zero], 1)], 1)


def edge_rotation(edge_vectors: torch.Tensor) -> torch.Tensor:
    """Rotations taking each edge direction onto +y, differentiable everywhere.

    Args:
        edge_vectors: (n_edges, 3) Å, non-zero.

    Returns:
        (n_edges, 3, 3) proper rotation matrices R with R @ r̂ = e_y.
    """
    unit = edge_vectors / edge_vectors.norm(dim=1, keepdim=True)
    upper = unit[:, 1] >= 0
    sign = torch.where(upper, 1.0, -1.0).to(unit)  # target ±e_y, chosen so that c = |y| ≥ 0
    target = torch.zeros_like(unit)
    target[:, 1] = sign
    k = _cross_matrix(torch.linalg.cross(unit, target))
    c = unit[:, 1] * sign
    eye = torch.eye(3, dtype=unit.dtype, device=unit.device)
    rot = eye + k + (k @ k) / (1.0 + c)[:, None, None]  # (n_edges, 3, 3)
    half_turn_x = torch.tensor([1.0, -1.0, -1.0], dtype=unit.dtype, device=unit.device)
    flipped = rot * half_turn_x[None, :, None]  # diag(1, -1, -1) @ R maps -e_y to +e_y
    return torch.where(upper[:, None, None], rot, flipped)


class WignerD(nn.Module):
    """Block-diagonal real Wigner-D matrices D(R) = ⊕_{l ≤ lmax} D^l(R) in e3nn's basis.

    Args:
        lmax: largest degree L.
    """

    def __init__(self, lmax: int) -> None:
        super().__init__()
        self.lmax = lmax
        self.n_sph = (lmax + 1) ** 2
        self.constants = ExactConstants()
        for ell in range(2, lmax + 1):
            cg = o3.wigner_3j(1, ell - 1, ell, dtype=torch.float64) * (2 * ell + 1) ** 0.5
            self.constants.add(f"cg{ell}", cg)

    def blocks(self, rotation: torch.Tensor) -> list[torch.Tensor]:
        """The blocks D^l(R), l = 0..lmax, each (n, 2l+1, 2l+1), for rotations (n, 3, 3)."""
        n = rotation.shape[0]
        out = [rotation.new_ones(n, 1, 1), rotation]
        for ell in range(2, self.lmax + 1):
            cg = self.constants.get(f"cg{ell}", rotation)  # (3, 2l-1, 2l+1)
            t = torch.einsum("abc,nby->nacy", cg, out[-1])
            t = torch.einsum("nacy,nax->ncxy", t, rotation)
            out.append(torch.einsum("ncxy,xyd->ncd", t, cg))
        return out[: self.lmax + 1]

    def forward(self, rotation: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Assemble D(R), optionally keeping only some rows.

        Args:
            rotation: (n, 3, 3) proper rotations.
            rows: optional (n_rows,) int64 component indices to keep (e.g. an m-truncated,
                m-primary order); all rows by default.

        Returns:
            (n, n_rows or n_sph, n_sph) dimensionless.
        """
        blocks = self.blocks(rotation)
        full = rotation.new_zeros(rotation.shape[0], self.n_sph, self.n_sph)
        for ell, block in enumerate(blocks):
            full[:, ell * ell:(ell + 1) ** 2, ell * ell:(ell + 1) ** 2] = block
        return full if rows is None else full[:, rows, :]

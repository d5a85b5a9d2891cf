"""EquiformerV3's feed-forward block: a gated SwiGLU product evaluated on a full S² grid."""

from __future__ import annotations

import math

import torch
from torch import nn

from mlip.nn.constants import ExactConstants
from mlip.nn.s2_swiglu import sphere_grid_matrices, truncated_product_resolution
from mlip.nn.so3_linear import SO3Linear

__all__ = ["GridFeedForward"]


class GridFeedForward(nn.Module):
    """Node-wise FFN of EquiformerV3 ("grid MLP", "gates2" SwiGLU)::

        g = sigmoid(W_g x₀)              s = SiLU(W_a x₀) · (W_b x₀)        (K invariants each)
        u = SO3Linear(x: C → K);   G = to_grid(u)                            (n, grid, K)
        G = ((G A) · g) ⊙ (G B);   u = from_grid(G W_c);   u[:, l=0] += s
        y = SO3Linear(u: K → C)    (its l = 0 weights × 1/√2: two scalar paths are merged)

    A, B, W_c are bias-free per-point linears. The grid product is a degree-2 polynomial, so at
    the exact-product resolution the block is exactly SO(3)-equivariant.

    Args:
        lmax: L. channels: C. hidden: K (512 in the paper).
        resolution: (res_beta, res_alpha); default the exact-product rule even_ceil(3L+1).
    """

    def __init__(self, lmax: int, channels: int, hidden: int,
                 resolution: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.hidden = hidden
        self.resolution = tuple(resolution or truncated_product_resolution(lmax, lmax))
        self.scalar_in = nn.Linear(channels, 3 * hidden)
        self.linear_in = SO3Linear(channels, hidden, lmax)
        bound = 1.0 / math.sqrt(hidden)
        self.grid_left = nn.Parameter(torch.empty(hidden, hidden).uniform_(-bound, bound))
        self.grid_right = nn.Parameter(torch.empty(hidden, hidden).uniform_(-bound, bound))
        self.grid_out = nn.Parameter(torch.empty(hidden, hidden).uniform_(-bound, bound))
        self.linear_out = SO3Linear(hidden, channels, lmax, scalar_weight_scale=1 / math.sqrt(2))
        self.constants = ExactConstants()
        to_grid, from_grid = sphere_grid_matrices(lmax, self.resolution)
        self.constants.add("to_grid", to_grid)
        self.constants.add("from_grid", from_grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (n, (L+1)², C) node features to (n, (L+1)², C)."""
        k = self.hidden
        scal = self.scalar_in(x[:, 0])  # (n, 3K)
        gates = torch.sigmoid(scal[:, :k])
        swiglu = nn.functional.silu(scal[:, k:2 * k]) * scal[:, 2 * k:]
        grid = torch.einsum("gi,nic->ngc", self.constants.get("to_grid", x), self.linear_in(x))
        grid = ((grid @ self.grid_left) * gates[:, None, :]) * (grid @ self.grid_right)
        u = torch.einsum("ig,ngc->nic", self.constants.get("from_grid", x), grid @ self.grid_out)
        u = torch.cat([u[:, :1] + swiglu[:, None, :], u[:, 1:]], dim=1)
        return self.linear_out(u)

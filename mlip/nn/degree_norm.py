"""Degree-wise equivariant layer norm for component-major features (Equiformer V1 / TDN)."""

from __future__ import annotations

import torch
from torch import nn

from mlip.nn.gate import degree_index

__all__ = ["DegreeLayerNorm"]


class DegreeLayerNorm(nn.Module):
    """Normalise each degree l separately (TDN / Equiformer-V1 "equivariant layer norm").

    For the block f = x[:, l², ..., :] of shape (n, 2l+1, C): scalars (l = 0) are centred over
    channels, then f ← γ_l ⊙ f / sqrt(mean_{m, c} f² + ε) (+ β on l = 0). The mean of squares
    over m is rotation invariant, so the layer is equivariant.

    Args:
        lmax: L. channels: C. eps: ε inside the square root.
    """

    def __init__(self, lmax: int, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.lmax, self.eps = lmax, eps
        self.weight = nn.Parameter(torch.ones(lmax + 1, channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        degree = degree_index(lmax)
        self.register_buffer("degree", degree, persistent=False)
        self.register_buffer("degree_size", (2 * degree + 1).to(torch.get_default_dtype()),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (n, d, C) features to (n, d, C)."""
        scalars = x[:, :1] - x[:, :1].mean(dim=2, keepdim=True)
        x = torch.cat([scalars, x[:, 1:]], dim=1)
        square = x.pow(2).mean(dim=2) / self.degree_size.to(x.dtype)  # (n, d)
        mean_square = square.new_zeros(x.shape[0], self.lmax + 1).index_add(1, self.degree, square)
        x = x * torch.rsqrt(mean_square + self.eps)[:, self.degree, None] * self.weight[self.degree]
        return torch.cat([x[:, :1] + self.bias, x[:, 1:]], dim=1)

"""Equivariant layer normalisation for e3nn-layout features (``(n_atoms, irreps.dim)``)."""

from __future__ import annotations

import torch
from e3nn import o3
from torch import nn

__all__ = ["EquivariantLayerNorm"]


class EquivariantLayerNorm(nn.Module):
    """Per-irrep-block RMS normalisation with a learned per-channel scale (bias on 0e only).

    For each block of ``mul`` copies of irrep l (features f (n, mul, 2l+1)):
    scalars are centred over channels, then f ← w · f / sqrt(mean_{channels, m}(f²) + ε)
    (+ b for 0e). Norms over m are rotation invariant, so the layer is O(3)-equivariant.
    With ``scale_init = 0`` the layer outputs zeros at initialisation: a residual branch
    ``h + norm(v)`` then starts as the identity (ReZero-style, Facet's ``resid_init = "zeros"``).

    Args:
        irreps: e3nn irreps of the features.
        scale_init: initial value of every scale w.
        eps: ε inside the square root (keeps gradients finite at f = 0).
    """

    def __init__(self, irreps: o3.Irreps | str, scale_init: float = 1.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.irreps = self.irreps_in = self.irreps_out = o3.Irreps(irreps)
        self.eps = eps
        self.weight = nn.Parameter(torch.full((self.irreps.num_irreps,), float(scale_init)))
        n_scalars = sum(mul for mul, ir in self.irreps if ir == o3.Irrep("0e"))
        self.bias = nn.Parameter(torch.zeros(n_scalars))
        # plain (start, mul, dim, l, is_0e) tuples: torch.compile cannot guard on e3nn Irrep objects
        self.blocks = [(s.start, mul, ir.dim, ir.l, ir == o3.Irrep("0e"))
                       for (mul, ir), s in zip(self.irreps, self.irreps.slices())]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: (n, irreps.dim). Returns: (n, irreps.dim)."""
        blocks, w_start, b_start = [], 0, 0
        for start, mul, dim, degree, is_0e in self.blocks:
            f = x[:, start:start + mul * dim].reshape(-1, mul, dim)  # (n, mul, 2l+1)
            if degree == 0:
                f = f - f.mean(dim=1, keepdim=True)
            f = f * torch.rsqrt(f.pow(2).mean(dim=(1, 2), keepdim=True) + self.eps)
            f = f * self.weight[w_start:w_start + mul, None]
            w_start += mul
            if is_0e:
                f = f + self.bias[b_start:b_start + mul, None]
                b_start += mul
            blocks.append(f.reshape(-1, mul * dim))
        return torch.cat(blocks, dim=1)

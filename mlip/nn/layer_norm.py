"""EquiformerV3's merged equivariant layer norm for component-major SO(3) features."""

from __future__ import annotations

import torch
from torch import nn

from mlip.nn.gate import degree_index

__all__ = ["EquivariantMergeLayerNorm"]


class EquivariantMergeLayerNorm(nn.Module):
    """One normaliser shared by all degrees (the "merged" layer norm of EquiformerV3).

    For features x (n, (L+1)², C)::

        x[:, 0] -= mean_c x[:, 0]                                  (centre the scalars only)
        σ² = 1/(L+1) Σ_l 1/(2l+1) Σ_m mean_c x[:, lm]²               (degree-balanced)
        y  = x / sqrt(σ² + eps) · γ[l, c];   y[:, 0] += β[c]

    σ² is rotation invariant, so y is equivariant. Computed in at least float32.
    (:class:`mlip.nn.norm.EquivariantLayerNorm` instead normalises each irrep block separately.)

    Args:
        lmax: L. channels: C. eps: added to σ². centre: subtract the scalar mean
            (``False`` gives the RMS-norm variant).
    """

    def __init__(self, lmax: int, channels: int, eps: float = 1e-5, centre: bool = True) -> None:
        super().__init__()
        self.lmax, self.eps, self.centre = lmax, eps, centre
        self.weight = nn.Parameter(torch.ones(lmax + 1, channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("degree", degree_index(lmax), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise (n, (L+1)², C) features; returns the same shape."""
        dtype = x.dtype
        x = x.to(torch.promote_types(dtype, torch.float32))
        if self.centre:
            x = torch.cat([x[:, :1] - x[:, :1].mean(dim=2, keepdim=True), x[:, 1:]], dim=1)
        power = x.pow(2).mean(dim=2)  # (n, n_sph)
        per_degree = power.new_zeros(x.shape[0], self.lmax + 1).index_add(1, self.degree, power)
        dims = 2 * torch.arange(self.lmax + 1, device=x.device, dtype=x.dtype) + 1
        variance = (per_degree / dims).mean(dim=1)  # (n,)
        y = x * torch.rsqrt(variance + self.eps)[:, None, None] * self.weight[self.degree]
        y = torch.cat([y[:, :1] + self.bias, y[:, 1:]], dim=1)
        return y.to(dtype)

"""Degree-wise equivariant linear map of component-major SO(3) features."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["SO3Linear"]


class SO3Linear(nn.Module):
    """``y[:, lm, :] = x[:, lm, :] @ W_l`` (+ bias on l = 0): one weight per degree, shared over m.

    Args:
        channels_in: C_in. channels_out: C_out. lmax: L.
        bias: add a bias to the l = 0 outputs (the only place a bias is equivariant).
        scalar_weight_scale: factor applied at init to W_0 (1/√2 when two scalar paths are
            merged into the input, as in EquiformerV3's "merge" activations).
    """

    def __init__(self, channels_in: int, channels_out: int, lmax: int, bias: bool = True,
                 scalar_weight_scale: float = 1.0) -> None:
        super().__init__()
        self.lmax = lmax
        bound = 1.0 / math.sqrt(channels_in)
        weight = torch.empty(lmax + 1, channels_in, channels_out).uniform_(-bound, bound)
        weight[0] *= scalar_weight_scale
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.zeros(channels_out)) if bias else None
        degree = torch.cat([torch.full((2 * ell + 1,), ell) for ell in range(lmax + 1)])
        self.register_buffer("degree", degree, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (n, (L+1)², C_in) features to (n, (L+1)², C_out)."""
        out = torch.einsum("nic,icd->nid", x, self.weight[self.degree])
        if self.bias is not None:
            out = torch.cat([out[:, :1] + self.bias, out[:, 1:]], dim=1)
        return out

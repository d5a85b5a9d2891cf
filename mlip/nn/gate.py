"""Gate activation and the gated feed-forward block of Equiformer (V1) / TDN.

Features are component-major, ``x[n, i, c]`` with component ``i = l² + l + m``.
"""

from __future__ import annotations

import torch
from torch import nn

from mlip.nn.so3_linear import SO3Linear

__all__ = ["degree_index", "Gate", "GatedFeedForward"]


def degree_index(lmax: int) -> torch.Tensor:
    """(d,) int64 degree l of each component ``l² + l + m``, d = (L+1)²."""
    return torch.cat([torch.full((2 * ell + 1,), ell, dtype=torch.long) for ell in range(lmax + 1)])


class Gate(nn.Module):
    """Scalars → SiLU; every degree-l > 0 block × sigmoid of its own per-channel gate scalar.

    y[:, 0, c] = SiLU(x[:, 0, c]),   y[:, lm, c] = x[:, lm, c] · σ(g[:, l−1, c])  (l ≥ 1).
    Gates are invariants, so the map is equivariant (Weiler et al. 2018, "gated nonlinearity").

    Args:
        lmax: L.
    """

    def __init__(self, lmax: int) -> None:
        super().__init__()
        self.lmax = lmax
        self.register_buffer("degree", degree_index(lmax), persistent=False)

    def forward(self, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """Args: x: (n, d, C). gates: (n, L, C) invariant gate logits. Returns: (n, d, C)."""
        if self.lmax == 0:
            return nn.functional.silu(x)
        scale = torch.sigmoid(gates)[:, self.degree[1:] - 1]  # (n, d − 1, C)
        return torch.cat([nn.functional.silu(x[:, :1]), x[:, 1:] * scale], dim=1)


class GatedFeedForward(nn.Module):
    """Equiformer-V1/TDN feed-forward: SO3Linear(C → H) → Gate → SO3Linear(H → C).

    The L·H gate logits come from a linear map of the input scalars x[:, 0].

    Args:
        lmax: L. channels: C. hidden: H.
    """

    def __init__(self, lmax: int, channels: int, hidden: int) -> None:
        super().__init__()
        self.lmax, self.hidden = lmax, hidden
        self.linear_in = SO3Linear(channels, hidden, lmax)
        self.gate_logits = nn.Linear(channels, lmax * hidden)
        self.gate = Gate(lmax)
        self.linear_out = SO3Linear(hidden, channels, lmax)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (n, d, C) features to (n, d, C)."""
        gates = self.gate_logits(x[:, 0]).reshape(x.shape[0], self.lmax, self.hidden)
        return self.linear_out(self.gate(self.linear_in(x), gates))

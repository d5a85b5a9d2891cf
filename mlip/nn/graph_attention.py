"""Equivariant graph attention with a smooth radius cutoff (EquiformerV3).

Messages are built in each edge's frame with eSCN SO(2) convolutions (:mod:`mlip.nn.so2`), so
the caller passes the rotation ``to_edge = D(R_ij)`` restricted to the m-truncated, m-primary
rows, (n_edges, n_rows, (L+1)²), and its transpose rotates messages back.

A plain softmax over neighbours jumps when a neighbour crosses r_c (it takes a finite share at
once). With the envelope f(r) (C² at r_c) inside and outside the normalisation,

    e_ij = exp(a_ij − max_k a_ik),   w_ij = f_ij · f_ij e_ij / (Σ_k f_ik e_ik + ε),

every edge's weight and its effect on the other weights vanish with C² smoothness at r_c.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mlip.nn.precision import tiny_threshold
from mlip.nn.s2_swiglu import SwiGLUS2
from mlip.nn.scatter import scatter_sum
from mlip.nn.so2 import SO2Linear, degrees_of_order, m_primary_order
from mlip.nn.so3_linear import SO3Linear

__all__ = ["smooth_softmax", "SmoothLeakyReLU", "EquivariantGraphAttention"]


def smooth_softmax(logits: torch.Tensor, envelope: torch.Tensor | None, receivers: torch.Tensor,
                   n_nodes: int, eps: float = 1e-16) -> torch.Tensor:
    """Softmax over the incoming edges of each node, optionally weighted by a cutoff envelope.

    Args:
        logits: (n_edges, n_heads) attention logits.
        envelope: (n_edges,) envelope f(r_ij) in [0, 1], or ``None`` for the plain softmax.
        receivers: (n_edges,) int64 node i receiving each edge.
        n_nodes: number of nodes.
        eps: added to the weighted normaliser (keeps a node whose neighbours all sit at r_c finite).

    Returns:
        (n_edges, n_heads) weights: f_ij² e_ij / (Σ_k f_ik e_ik + ε), or e_ij / Σ_k e_ik.
    """
    index = receivers[:, None].expand_as(logits)
    peak = logits.new_full((n_nodes, logits.shape[1]), -torch.inf)
    peak = peak.scatter_reduce(0, index, logits.detach(), reduce="amax", include_self=True)
    shifted = logits - peak[receivers]  # the shift cancels in the ratio
    # weights below √tiny of the peak's are exact zeros, never subnormal (mlip.nn.precision)
    underflow = shifted < math.log(tiny_threshold(logits.dtype))
    exp = torch.exp(shifted.masked_fill(underflow, -math.inf))
    if envelope is None:
        return exp / scatter_sum(exp, receivers, n_nodes)[receivers]
    weighted = exp * envelope[:, None]
    norm = scatter_sum(weighted, receivers, n_nodes)[receivers] + eps
    return envelope[:, None] * weighted / norm


class SmoothLeakyReLU(nn.Module):
    """x·((1+a)/2 + (1−a)/2·(2σ(x) − 1)): a smooth leaky ReLU with negative slope a."""

    def __init__(self, negative_slope: float = 0.2) -> None:
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.negative_slope
        return 0.5 * (1 + a) * x + 0.5 * (1 - a) * x * (2 * torch.sigmoid(x) - 1)


class EquivariantGraphAttention(nn.Module):
    """EquiformerV3 graph attention (eSCN SO(2) convolution + SwiGLU-S² + smooth softmax)::

        x̃   = D_ij ([x_j ‖ x_i] ⊙ rad(s_ij))                 (n_edges, n_rows, 2C)
        h,z = SO2Linear₁(x̃)                                   h: 2·hidden, z: H·α + 3·hidden
        a   = ⟨w_h, SmoothLeakyReLU(LayerNorm(z[:H·α] per head))⟩
        v   = SO2Linear₂(SwiGLU-S²(h, z[H·α:]))               (n_edges, n_rows, H·value)
        y_i = SO3Linear(Σ_j D_ijᵀ (w_ij,h v_ij,h))            (n_nodes, (L+1)², C_out)

    Args:
        channels: C. lmax: L. mmax: largest order kept in the edge frame.
        edge_features: size of the invariant edge features s_ij.
        num_heads: H. hidden: SwiGLU-S² width. alpha_channels: α per head.
        value_channels: value width per head. out_channels: C_out (default C).
        grid_resolution: attention grid (res_beta, res_alpha); default the exact rule.
        attn_eps: ε of the smooth softmax. attn_dropout: dropout on the weights (training only).
        smooth_cutoff: envelope in the softmax; ``False`` gives the plain (discontinuous) softmax.
    """

    def __init__(self, *, channels: int, lmax: int, mmax: int, edge_features: int,
                 num_heads: int, hidden: int, alpha_channels: int, value_channels: int,
                 out_channels: int | None = None,
                 grid_resolution: tuple[int, int] | None = None, attn_eps: float = 1e-16,
                 attn_dropout: float = 0.0, smooth_cutoff: bool = True) -> None:
        super().__init__()
        self.lmax, self.num_heads, self.alpha_channels = lmax, num_heads, alpha_channels
        self.value_channels, self.attn_eps = value_channels, attn_eps
        self.smooth_cutoff = smooth_cutoff
        self.radial = nn.Sequential(
            nn.Linear(edge_features, edge_features), nn.LayerNorm(edge_features), nn.SiLU(),
            nn.Linear(edge_features, (lmax + 1) * 2 * channels))
        row_degree = torch.tensor(degrees_of_order(lmax, mmax))
        self.register_buffer("row_degree", row_degree, persistent=False)
        self.so2_in = SO2Linear(2 * channels, 2 * hidden, lmax, mmax,
                                n_extra=num_heads * alpha_channels + 3 * hidden)
        self.alpha_norm = nn.LayerNorm(alpha_channels)
        self.alpha_act = SmoothLeakyReLU()
        alpha_dot = torch.randn(num_heads, alpha_channels) / math.sqrt(alpha_channels)
        self.alpha_dot = nn.Parameter(alpha_dot)
        self.activation = SwiGLUS2(lmax, hidden, grid_resolution, m_primary_order(lmax, mmax))
        self.so2_out = SO2Linear(hidden, num_heads * value_channels, lmax, mmax,
                                 scalar_input_scale=1 / math.sqrt(2))
        self.dropout = nn.Dropout(attn_dropout)
        self.linear_out = SO3Linear(num_heads * value_channels, out_channels or channels, lmax)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, to_edge: torch.Tensor,
                edge_features: torch.Tensor, envelope: torch.Tensor) -> torch.Tensor:
        """Attend over incoming edges.

        Args:
            x: (n_nodes, (L+1)², C) node features.
            edge_index: (2, n_edges) int64, row 0 receiver i, row 1 sender j.
            to_edge: (n_edges, n_rows, (L+1)²) m-truncated Wigner-D rows of R_ij (R_ij r̂_ij = e_y).
            edge_features: (n_edges, edge_features) invariants s_ij.
            envelope: (n_edges,) cutoff envelope f(r_ij).

        Returns:
            (n_nodes, (L+1)², C_out).
        """
        receivers, senders = edge_index
        n_nodes = x.shape[0]
        message = torch.cat([x[senders], x[receivers]], dim=2)  # (n_edges, n_sph, 2C)
        message = torch.einsum("eri,eic->erc", to_edge, message)  # (n_edges, n_rows, 2C)
        radial = self.radial(edge_features).unflatten(1, (self.lmax + 1, -1))
        message = message * radial[:, self.row_degree]
        h, z = self.so2_in(message)
        n_alpha = self.num_heads * self.alpha_channels
        alpha = self.alpha_act(self.alpha_norm(z[:, :n_alpha].unflatten(1, (self.num_heads, -1))))
        logits = (alpha * self.alpha_dot).sum(dim=2)  # (n_edges, n_heads)
        value, _ = self.so2_out(self.activation(h, z[:, n_alpha:]))
        weights = smooth_softmax(logits, envelope if self.smooth_cutoff else None, receivers,
                                 n_nodes, self.attn_eps)
        weights = self.dropout(weights)
        value = value.unflatten(2, (self.num_heads, self.value_channels))
        value = (value * weights[:, None, :, None]).flatten(2)
        value = torch.einsum("eri,erc->eic", to_edge, value)  # (n_edges, n_sph, H·value)
        return self.linear_out(scatter_sum(value, receivers, n_nodes))

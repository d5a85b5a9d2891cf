"""TDN's tensor-product blocks: radial MLP, edge-degree embedding and graph attention.

These are the Equiformer (V1) blocks that TDN (Chen et al., arXiv 2507.01131) builds on, with
every CG tensor product replaced by a pluggable ``uvu`` product with one shared weight per
channel (:class:`mlip.nn.cp_tensor_product.CPTensorProduct`, or the exact
:class:`~mlip.nn.cp_tensor_product.CGTensorProduct` for comparison). Features are
component-major ``x[n, i, c]``, i = l² + l + m.

**Smoothness (a deliberate deviation from the released TDN).** Every path by which an edge
reaches the energy vanishes C²-smoothly at r_c: the radial weights are multiplied by the
polynomial envelope f(r_ij), and attention uses the envelope-weighted softmax of
:func:`mlip.nn.graph_attention.smooth_softmax` (EquiformerV3 recipe, docs/equiformer_v3.md,
"Smooth cutoff") instead of the plain softmax, which jumps when a neighbour crosses the cutoff.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from mlip.nn.gate import Gate
from mlip.nn.graph_attention import SmoothLeakyReLU, smooth_softmax
from mlip.nn.scatter import scatter_sum
from mlip.nn.so3_linear import SO3Linear

__all__ = ["RadialMLP", "EdgeDegreeEmbedding", "CPGraphAttention"]

TensorProductFactory = Callable[[], nn.Module]

#: E[SiLU(z)²] for z ~ N(0, 1) (numerical integral, 0.3557)
SILU_SECOND_MOMENT = 0.3557


class RadialMLP(nn.Module):
    """Equiformer's radial function: Linear → LayerNorm → SiLU → Linear → LayerNorm → SiLU → Linear.

    The output is multiplied by the cutoff envelope, so each weight vanishes at r_c. The last
    layer starts with zero bias and weights N(0, 1/(0.356·hidden)), so the radial weights start
    with unit RMS (before the envelope).

    Args:
        num_basis: K radial basis functions in. hidden: width of the two hidden layers.
        out_shape: shape of the per-edge output (e.g. the tensor product's ``weight_shape``).
    """

    def __init__(self, num_basis: int, hidden: int, out_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.out_shape = tuple(out_shape)
        self.net = nn.Sequential(nn.Linear(num_basis, hidden), nn.LayerNorm(hidden), nn.SiLU(),
                                 nn.Linear(hidden, hidden), nn.LayerNorm(hidden), nn.SiLU(),
                                 nn.Linear(hidden, math.prod(self.out_shape)))
        # unit-RMS weights at init: the last hidden layer, SiLU(LayerNorm(.)), has per-unit second
        # moment E[SiLU(z)²] = 0.356 for z ~ N(0, 1). PyTorch's default init gave RMS ~0.3 here,
        # and the attention branch, whose value is weighted by it twice, started ~15x below the FFN.
        nn.init.normal_(self.net[-1].weight, std=1.0 / math.sqrt(SILU_SECOND_MOMENT * hidden))
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, basis: torch.Tensor, envelope: torch.Tensor) -> torch.Tensor:
        """Args: basis: (n_edges, K). envelope: (n_edges,) f(r_ij).

        Returns:
            (n_edges, *out_shape) radial weights, zero at r_c.
        """
        out = self.net(basis) * envelope[:, None]
        return out.reshape(basis.shape[0], *self.out_shape)


class EdgeDegreeEmbedding(nn.Module):
    """x_i += (1/√n̄) Σ_j SO3Linear( TP(1, Y(r̂_ij); w(r_ij)·f(r_ij)) ): initial l > 0 features.

    The constant scalar input 1 (every channel) is coupled to the edge spherical harmonics, so
    each atom starts with an equivariant summary of its environment (Equiformer's
    ``EdgeDegreeEmbeddingNetwork``). n̄ = ``avg_num_neighbors``, a fixed dataset constant.

    Args:
        lmax: L. channels: C. num_basis: K. radial_hidden: radial-MLP width.
        tensor_product: builds the tensor product (channels C, weight_shape attribute).
        avg_num_neighbors: n̄.
    """

    def __init__(self, *, lmax: int, channels: int, num_basis: int, radial_hidden: int,
                 tensor_product: TensorProductFactory, avg_num_neighbors: float) -> None:
        super().__init__()
        self.lmax, self.channels = lmax, channels
        self.tensor_product = tensor_product()
        self.radial = RadialMLP(num_basis, radial_hidden, self.tensor_product.weight_shape)
        self.linear = SO3Linear(channels, channels, lmax, bias=False)
        self.norm_factor = 1.0 / math.sqrt(avg_num_neighbors)

    def forward(self, edge_index: torch.Tensor, sh: torch.Tensor, basis: torch.Tensor,
                envelope: torch.Tensor, n_nodes: int) -> torch.Tensor:
        """Args: edge_index: (2, n_edges) int64 (row 0 receiver i). sh: (n_edges, d) Y(r̂_ij).
        basis: (n_edges, K). envelope: (n_edges,). n_nodes: number of atoms.

        Returns:
            (n_nodes, d, C) degree embedding.
        """
        ones = sh.new_zeros(sh.shape[0], sh.shape[1], self.channels)
        ones[:, 0] = 1.0
        message = self.tensor_product(ones, sh, self.radial(basis, envelope))  # (n_edges, d, C)
        return self.linear(scatter_sum(message, edge_index[0], n_nodes)) * self.norm_factor


class CPGraphAttention(nn.Module):
    """Equiformer-V1 graph attention with (CP) tensor products, per edge j → i::

        m_ij  = SO3Linear_src(x)_j + SO3Linear_dst(x)_i
        w_ij  = RadialMLP(φ(r_ij)) · f(r_ij)                           shared by both products
        m_ij  = TP₁(m_ij, Y(r̂_ij); w_ij)                              (n_edges, d, C)
        a_ijh = ⟨a_h, SmoothLeakyReLU(Linear(m_ij[0]))_h⟩              per head h
        v_ij  = TP₂(Gate(SO3Linear_v(m_ij)), Y(r̂_ij); w_ij)
        y_i   = SO3Linear_out( Σ_j α_ijh v_ijh ),  α = smooth_softmax(a; f)   heads concatenated

    Args:
        lmax: L. channels: C (divisible by ``num_heads``). num_heads: H.
        num_basis: K. radial_hidden: radial-MLP width.
        tensor_product: builds the tensor product (channels C, weight_shape attribute).
        attn_eps: ε of the smooth softmax.
    """

    def __init__(self, *, lmax: int, channels: int, num_heads: int, num_basis: int,
                 radial_hidden: int, tensor_product: TensorProductFactory,
                 attn_eps: float = 1e-16) -> None:
        super().__init__()
        self.lmax, self.channels, self.num_heads = lmax, channels, num_heads
        self.attn_eps = attn_eps
        self.linear_src = SO3Linear(channels, channels, lmax, bias=False)
        self.linear_dst = SO3Linear(channels, channels, lmax)
        self.tp_message = tensor_product()
        self.tp_value = tensor_product()
        self.radial = RadialMLP(num_basis, radial_hidden, self.tp_message.weight_shape)
        self.alpha_linear = nn.Linear(channels, channels)
        self.alpha_act = SmoothLeakyReLU(0.2)
        head = channels // num_heads
        self.alpha_dot = nn.Parameter(torch.randn(num_heads, head) / math.sqrt(head))
        self.linear_value = SO3Linear(channels, channels, lmax)
        self.gate_logits = nn.Linear(channels, max(lmax, 1) * channels)
        self.gate = Gate(lmax)
        self.linear_out = SO3Linear(channels, channels, lmax)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, sh: torch.Tensor,
                basis: torch.Tensor, envelope: torch.Tensor) -> torch.Tensor:
        """Args: x: (n_nodes, d, C). edge_index: (2, n_edges) int64, row 0 receiver i, row 1
        sender j. sh: (n_edges, d) Y(r̂_ij). basis: (n_edges, K). envelope: (n_edges,) f(r_ij).

        Returns:
            (n_nodes, d, C) attention output.
        """
        receivers, senders = edge_index
        n_nodes = x.shape[0]
        weight = self.radial(basis, envelope)
        message = self.linear_src(x)[senders] + self.linear_dst(x)[receivers]  # (n_edges, d, C)
        message = self.tp_message(message, sh, weight)
        alpha = self.alpha_act(self.alpha_linear(message[:, 0]))
        alpha = alpha.unflatten(1, (self.num_heads, -1))  # (n_edges, H, C/H)
        logits = (alpha * self.alpha_dot).sum(dim=2)  # (n_edges, H)
        gates = self.gate_logits(message[:, 0]).unflatten(1, (-1, self.channels))
        value = self.tp_value(self.gate(self.linear_value(message), gates), sh, weight)
        attention = smooth_softmax(logits, envelope, receivers, n_nodes, self.attn_eps)  # (E, H)
        value = value.unflatten(2, (self.num_heads, -1)) * attention[:, None, :, None]
        return self.linear_out(scatter_sum(value.flatten(2), receivers, n_nodes))

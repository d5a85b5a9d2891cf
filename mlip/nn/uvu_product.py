"""A per-edge "uvu" Clebsch–Gordan tensor product fused per input irrep block.

The convolution of NequIP-style models couples each channel u of a neighbour's features with
the edge spherical harmonics, m_{u,k} = w_{p,u} Σ_{i,j} C^p_{ijk} x_{u,i} Y_j, one path p per
allowed (l_in, l_sh → l_out), with per-edge weights w. ``o3.TensorProduct`` evaluates one einsum
per path; :class:`UVUTensorProduct` evaluates all paths that share an input block with one
batched matmul against stacked CG matrices, so the op count (which sets the CPU cost of a
force-trained step, every op being differentiated twice) no longer grows with the number of
paths. The harmonics are contracted with the CG tables first, (C·Y)_{e,ik}, so
the per-edge work is one batched (U × d_in)·(d_in × K) product per block. Values equal
e3nn's ``TensorProduct(..., "uvu", shared_weights=False)`` with its default
component/element normalisation.
"""

from __future__ import annotations

import math

import torch
from e3nn import o3
from torch import nn

from mlip.errors import ConfigError

__all__ = ["UVUTensorProduct"]


class UVUTensorProduct(nn.Module):
    """All parity-allowed uvu paths x ⊗ Y → l_out with l_out in ``irreps_allowed``.

    Messages use a block layout: for each input irrep block b (mul U_b, in ``irreps_in`` order)
    a (U_b, K_b) array, K_b the concatenated outputs of b's paths. ``irreps_out`` (sorted, one
    entry per path) and ``columns`` (the ``irreps_out`` column of each message column) let an
    :class:`mlip.nn.irreps_linear.IrrepsLinear` consume messages directly;
    ``weight_index`` (the e3nn flat weight of each message column) expands per-path weights.

    Args:
        irreps_in: node features (e3nn layout).
        irreps_sh: edge spherical harmonics, multiplicity 1 each (e.g. ``0e + 1o + 2e``).
        irreps_allowed: irreps a path may produce.
    """

    def __init__(self, irreps_in: o3.Irreps | str, irreps_sh: o3.Irreps | str,
                 irreps_allowed: o3.Irreps | str) -> None:
        super().__init__()
        self.irreps_in, self.irreps_sh = o3.Irreps(irreps_in), o3.Irreps(irreps_sh)
        if any(mul != 1 for mul, _ in self.irreps_sh):
            raise ConfigError(f"UVUTensorProduct needs multiplicity-1 edge irreps, got "
                              f"{self.irreps_sh}")
        allowed = {ir for _, ir in o3.Irreps(irreps_allowed)}
        self.instructions = [(i, j, ir_out) for i, (_, ir_in) in enumerate(self.irreps_in)
                             for j, (_, ir_sh) in enumerate(self.irreps_sh)
                             for ir_out in ir_in * ir_sh if ir_out in allowed]
        irreps_mid = o3.Irreps([(self.irreps_in[i].mul, ir) for i, _, ir in self.instructions])
        self.irreps_out, sort_permutation, _ = irreps_mid.sort()
        self.weight_numel = irreps_mid.num_irreps
        self.blocks: list[tuple[int, int, int, int]] = []  # (start, mul, dim_in, K_b) per block
        sorted_slices = self.irreps_out.slices()
        offsets = [0]
        for i, _, _ in self.instructions:
            offsets.append(offsets[-1] + self.irreps_in[i].mul)  # e3nn flat weights per path
        columns, weight_index, cgs = [], [], []
        for b, ((mul, ir_in), section) in enumerate(zip(self.irreps_in, self.irreps_in.slices())):
            paths = [k for k, (i, _, _) in enumerate(self.instructions) if i == b]
            if not paths:
                continue
            cgs.append(self._stacked_cg(paths))  # (n_sph, dim_in · K_b)
            self.blocks.append((section.start, mul, ir_in.dim, cgs[-1].shape[1] // ir_in.dim))
            for u in range(mul):
                for k in paths:
                    dim = self.instructions[k][2].dim
                    start = sorted_slices[sort_permutation[k]].start + u * dim
                    columns.extend(range(start, start + dim))
                    weight_index.extend([offsets[k] + u] * dim)
        self.columns = columns
        self.register_buffer("cg", torch.cat(cgs, dim=1), persistent=False)
        self.register_buffer("weight_index", torch.tensor(weight_index, dtype=torch.long),
                             persistent=False)

    def _stacked_cg(self, paths: list[int]) -> torch.Tensor:
        """(n_sph, (2 l_in + 1) · K_b): C[j, (i, k)] of ``paths`` side by side along k, each
        scaled by e3nn's path weight sqrt(2 l_out + 1) (one path per output, multiplicity-1 Y)."""
        i = self.instructions[paths[0]][0]
        dim_in, n_sph = self.irreps_in[i].ir.dim, self.irreps_sh.dim
        blocks = []
        for k in paths:
            _, j, ir_out = self.instructions[k]
            w3j = o3.wigner_3j(self.irreps_in[i].ir.l, self.irreps_sh[j].ir.l, ir_out.l,
                               dtype=torch.float64)  # (dim_in, dim_sh, dim_out)
            full = torch.zeros(n_sph, dim_in, ir_out.dim, dtype=torch.float64)
            full[self.irreps_sh.slices()[j]] = math.sqrt(ir_out.dim) * w3j.transpose(0, 1)
            blocks.append(full)
        return torch.cat(blocks, dim=2).reshape(n_sph, -1).to(torch.get_default_dtype())

    def forward(self, x: torch.Tensor, sh: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Args:
            x: (n_edges, irreps_in.dim) features of the neighbour of each edge.
            sh: (n_edges, irreps_sh.dim) spherical harmonics of each edge.
            weights: (n_edges, len(columns)) per-edge path weights, already expanded to the
                message layout (``w[:, weight_index]`` of e3nn's (n_edges, weight_numel)).

        Returns:
            (n_edges, len(columns)) messages in the block layout.
        """
        n_edges = sh.shape[0]
        coupling = sh @ self.cg  # (n_edges, Σ_b dim_in · K_b): Y contracted with every CG
        out, offset = [], 0
        for start, mul, dim, k_b in self.blocks:
            xb = x[:, start:start + mul * dim].reshape(n_edges, mul, dim)
            cb = coupling[:, offset:offset + dim * k_b].reshape(n_edges, dim, k_b)
            # Σ_i x_ui (C·Y)_ik; for scalar inputs a broadcast product beats a bmm of rank 1
            product = xb * cb if dim == 1 else torch.bmm(xb, cb)
            out.append(product.reshape(n_edges, mul * k_b))
            offset += dim * k_b
        return torch.cat(out, dim=1) * weights

"""A per-edge "uvu" Clebsch–Gordan tensor product fused per input irrep block.

The convolution of NequIP-style models couples each channel u of a neighbour's features with
the edge spherical harmonics, m_{u,k} = w_{p,u} Σ_{i,j} C^p_{ijk} x_{u,i} Y_j, one path p per
allowed (l_in, l_sh → l_out), with per-edge weights w. ``o3.TensorProduct`` evaluates one einsum
per path; :class:`UVUTensorProduct` evaluates all paths that share an input block with one
outer product and one matmul against a stacked CG matrix, so the op count (which sets the CPU
cost of a force-trained step, every op being differentiated twice) no longer grows with the
number of paths. Values equal e3nn's ``TensorProduct(..., "uvu", shared_weights=False)`` with
its default component/element normalisation.
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
        self.blocks: list[tuple[int, int, int]] = []  # (start, mul, dim) of each input block
        sorted_slices = self.irreps_out.slices()
        offsets = [0]
        for i, _, _ in self.instructions:
            offsets.append(offsets[-1] + self.irreps_in[i].mul)  # e3nn flat weights per path
        columns, weight_index = [], []
        for b, ((mul, ir_in), section) in enumerate(zip(self.irreps_in, self.irreps_in.slices())):
            paths = [k for k, (i, _, _) in enumerate(self.instructions) if i == b]
            if not paths:
                continue
            self.register_buffer(f"cg{len(self.blocks)}", self._stacked_cg(paths),
                                 persistent=False)
            self.blocks.append((section.start, mul, ir_in.dim))
            for u in range(mul):
                for k in paths:
                    dim = self.instructions[k][2].dim
                    start = sorted_slices[sort_permutation[k]].start + u * dim
                    columns.extend(range(start, start + dim))
                    weight_index.extend([offsets[k] + u] * dim)
        self.columns = columns
        self.register_buffer("weight_index", torch.tensor(weight_index, dtype=torch.long),
                             persistent=False)

    def _stacked_cg(self, paths: list[int]) -> torch.Tensor:
        """((2 l_in + 1) · n_sph, K_b): the CG matrices of ``paths`` side by side, each scaled
        by e3nn's path weight sqrt(2 l_out + 1) (one path per output, multiplicity-1 Y)."""
        i = self.instructions[paths[0]][0]
        dim_in, n_sph = self.irreps_in[i].ir.dim, self.irreps_sh.dim
        blocks = []
        for k in paths:
            _, j, ir_out = self.instructions[k]
            l_sh = self.irreps_sh[j].ir.l
            w3j = o3.wigner_3j(self.irreps_in[i].ir.l, l_sh, ir_out.l, dtype=torch.float64)
            full = torch.zeros(dim_in, n_sph, ir_out.dim, dtype=torch.float64)
            sh_slice = self.irreps_sh.slices()[j]
            full[:, sh_slice] = math.sqrt(ir_out.dim) * w3j
            blocks.append(full.reshape(dim_in * n_sph, ir_out.dim))
        return torch.cat(blocks, dim=1).to(torch.get_default_dtype())

    def forward(self, x: torch.Tensor, sh: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Args:
            x: (n_edges, irreps_in.dim) features of the neighbour of each edge.
            sh: (n_edges, irreps_sh.dim) spherical harmonics of each edge.
            weights: (n_edges, len(columns)) per-edge path weights, already expanded to the
                message layout (``w[:, weight_index]`` of e3nn's (n_edges, weight_numel)).

        Returns:
            (n_edges, len(columns)) messages in the block layout.
        """
        n_edges, n_sph = sh.shape
        out = []
        for b, (start, mul, dim) in enumerate(self.blocks):
            xb = x[:, start:start + mul * dim].reshape(n_edges, mul, dim, 1)
            outer = (xb * sh[:, None, None, :]).reshape(n_edges, mul, dim * n_sph)
            out.append((outer @ getattr(self, f"cg{b}")).reshape(n_edges, -1))
        return torch.cat(out, dim=1) * weights

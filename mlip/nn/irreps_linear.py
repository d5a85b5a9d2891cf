"""An equivariant linear map of e3nn-layout features as one dense matmul.

``o3.Linear`` evaluates one einsum per (input irrep, output irrep) path and concatenates the
results; with forces trained through ``create_graph`` every one of those small ops is
differentiated twice, and on a CPU the op count, not the arithmetic, sets the cost.
:class:`IrrepsLinear` computes the same map (same weights, same ``"element"`` path
normalisation, no biases) as ``x @ W``, where the dense (D_in, D_out) matrix W is gathered
from the flat weight vector with a precomputed index: two tiny ops on the weights and one
matmul on the features, whatever the number of irreps.
"""

from __future__ import annotations

from typing import Sequence

import torch
from e3nn import o3
from torch import nn

__all__ = ["IrrepsLinear", "linear_paths"]


def linear_paths(irreps_in: o3.Irreps, irreps_out: o3.Irreps) -> list[tuple[int, int, float]]:
    """e3nn's ``o3.Linear`` paths: (i_in, i_out, path weight) for every pair of equal irreps,
    in e3nn's order; the path weight is 1/sqrt(Σ mul_in of the paths into i_out)."""
    pairs = [(i, k) for i, (_, ir_in) in enumerate(irreps_in)
             for k, (_, ir_out) in enumerate(irreps_out) if ir_in == ir_out]
    fan_in = {k: sum(irreps_in[i].mul for i, kk in pairs if kk == k) for _, k in pairs}
    return [(i, k, fan_in[k] ** -0.5 if fan_in[k] else 1.0) for i, k in pairs]


class IrrepsLinear(nn.Module):
    """y = x @ W(weight): ``o3.Linear(irreps_in, irreps_out)`` (no biases) as a dense matmul.

    ``weight`` has e3nn's flat layout and N(0, 1) initialisation, so the module equals
    ``o3.Linear`` with the same weight vector. The columns of x and y may be permuted: column c
    of the actual input is e3nn input column ``in_columns[c]`` (−1: a column the map ignores),
    and column d of the output is e3nn output column ``out_columns[d]``.

    Args:
        irreps_in: e3nn irreps of the input. irreps_out: of the output.
        in_columns: (n_in,) e3nn input column of each actual input column; default identity.
        out_columns: (n_out,) e3nn output column of each actual output column; default identity.
    """

    def __init__(self, irreps_in: o3.Irreps | str, irreps_out: o3.Irreps | str, *,
                 in_columns: Sequence[int] | None = None,
                 out_columns: Sequence[int] | None = None) -> None:
        super().__init__()
        self.irreps_in, self.irreps_out = o3.Irreps(irreps_in), o3.Irreps(irreps_out)
        index, coef = self._dense_layout()  # (D_in, D_out) each, e3nn column order
        if in_columns is not None:
            rows = torch.as_tensor(list(in_columns), dtype=torch.long)
            index = torch.where(rows[:, None] >= 0, index[rows.clamp(min=0)], index.new_tensor(-1))
            coef = torch.where(rows[:, None] >= 0, coef[rows.clamp(min=0)], coef.new_zeros(()))
        if out_columns is not None:
            cols = torch.as_tensor(list(out_columns), dtype=torch.long)
            index, coef = index[:, cols], coef[:, cols]
        numel = sum(self.irreps_in[i].mul * self.irreps_out[k].mul
                    for i, k, _ in linear_paths(self.irreps_in, self.irreps_out))
        self.weight = nn.Parameter(torch.randn(numel))
        # structural zeros read the extra (always zero) slot appended to the weights
        self.register_buffer("index", torch.where(index < 0, numel, index), persistent=False)
        self.register_buffer("coef", coef, persistent=False)

    def _dense_layout(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight index (−1: structural zero) and path weight of every entry of W."""
        d_in, d_out = self.irreps_in.dim, self.irreps_out.dim
        index = torch.full((d_in, d_out), -1, dtype=torch.long)
        coef = torch.zeros(d_in, d_out, dtype=torch.get_default_dtype())
        slices_in, slices_out = self.irreps_in.slices(), self.irreps_out.slices()
        offset = 0
        for i, k, path_weight in linear_paths(self.irreps_in, self.irreps_out):
            mul_in, ir = self.irreps_in[i]
            mul_out = self.irreps_out[k].mul
            w = offset + torch.arange(mul_in * mul_out).reshape(mul_in, mul_out)
            rows = slices_in[i].start + torch.arange(mul_in * ir.dim).reshape(mul_in, ir.dim)
            cols = slices_out[k].start + torch.arange(mul_out * ir.dim).reshape(mul_out, ir.dim)
            # W[(u, m), (v, m)] = path_weight · weight[u, v]
            r = rows[:, None, :].expand(mul_in, mul_out, ir.dim)
            c = cols[None, :, :].expand(mul_in, mul_out, ir.dim)
            index[r, c] = w[:, :, None].expand(mul_in, mul_out, ir.dim)
            coef[r, c] = path_weight
            offset += mul_in * mul_out
        return index, coef

    def matrix(self) -> torch.Tensor:
        """The dense map W, (n_in, n_out) in the actual column orders."""
        padded = torch.cat([self.weight, self.weight.new_zeros(1)])
        return padded[self.index] * self.coef

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: (n, n_in). Returns: (n, n_out)."""
        return x @ self.matrix()

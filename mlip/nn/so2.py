"""eSCN SO(2) linear maps on edge-aligned, m-truncated features (Passaro & Zitnick 2023).

Once an edge is rotated onto the polar (y) axis, the only remaining symmetry is the roll about
y, under which the pair of components (l, +m), (l, −m) turns like the complex number
x₊ + i·x₋ multiplied by e^{imθ} (the same for every l). Any map that acts on each order m as a
complex-linear map ``y₊ + i y₋ = (W_r + i W_i)(x₊ + i x₋)`` (mixing degrees l ≥ m and
channels) therefore commutes with the roll, and rotating back with Dᵀ makes the whole
convolution SO(3)-equivariant at O(L³) instead of the O(L⁶) of a Clebsch-Gordan product.

Features in the edge frame use the **m-primary** layout of :func:`m_primary_order`: the m = 0
rows (l = 0..L), then for m = 1..m_max the +m rows (l = m..L) and the −m rows (l = m..L).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["m_primary_order", "degrees_of_order", "SO2Linear"]


def m_primary_order(lmax: int, mmax: int) -> list[int]:
    """Indices into e3nn's component layout (index l² + l + m) in m-primary order, |m| ≤ mmax.

    The result has ``(lmax + 1) + 2 Σ_{m=1}^{mmax} (lmax + 1 − m)`` entries.
    """
    order = [ell * ell + ell for ell in range(lmax + 1)]
    for m in range(1, mmax + 1):
        order += [ell * ell + ell + m for ell in range(m, lmax + 1)]
        order += [ell * ell + ell - m for ell in range(m, lmax + 1)]
    return order


def degrees_of_order(lmax: int, mmax: int) -> list[int]:
    """The degree l of each row of the m-primary layout (same length as :func:`m_primary_order`)."""
    degrees = list(range(lmax + 1))
    for m in range(1, mmax + 1):
        degrees += list(range(m, lmax + 1)) * 2
    return degrees


class SO2Linear(nn.Module):
    """SO(2)-equivariant linear map of m-primary edge-frame features.

    m = 0: ``Linear((L+1)·C_in → (L+1)·C_out + n_extra)`` with bias; the ``n_extra`` invariant
    outputs (attention logits, gates) come out of the same matmul.
    m > 0: ``y₊ = W_r x₊ − W_i x₋``, ``y₋ = W_r x₋ + W_i x₊`` with W of size
    (L+1−m)·C_in → (L+1−m)·C_out and no bias.

    Args:
        channels_in: C_in. channels_out: C_out. lmax: L. mmax: largest order kept.
        n_extra: number of extra invariant outputs of the m = 0 map.
        scalar_input_scale: factor applied at init to the weights reading the l = 0 input row
            (1/√2 when two scalar paths are merged upstream, as in EquiformerV3).
    """

    def __init__(self, channels_in: int, channels_out: int, lmax: int, mmax: int,
                 n_extra: int = 0, scalar_input_scale: float = 1.0) -> None:
        super().__init__()
        self.channels_in, self.channels_out = channels_in, channels_out
        self.lmax, self.mmax, self.n_extra = lmax, mmax, n_extra
        n0 = lmax + 1
        self.linear_m0 = nn.Linear(n0 * channels_in, n0 * channels_out + n_extra)
        with torch.no_grad():
            self.linear_m0.weight[:, :channels_in] *= scalar_input_scale
        self.linear_m = nn.ModuleList()
        for m in range(1, mmax + 1):
            n = lmax + 1 - m
            layer = nn.Linear(n * channels_in, 2 * n * channels_out, bias=False)
            with torch.no_grad():
                layer.weight /= math.sqrt(2.0)  # two complex products add per output
            self.linear_m.append(layer)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply the map.

        Args:
            x: (n_edges, n_rows, C_in) m-primary features.

        Returns:
            ``(y, extra)``: y (n_edges, n_rows, C_out) m-primary, extra (n_edges, n_extra).
        """
        n_edges = x.shape[0]
        n0 = self.lmax + 1
        out0 = self.linear_m0(x[:, :n0].flatten(1))
        pieces = [out0[:, : n0 * self.channels_out].reshape(n_edges, n0, self.channels_out)]
        start = n0
        for m, layer in enumerate(self.linear_m, start=1):
            n = self.lmax + 1 - m
            plus = layer(x[:, start:start + n].flatten(1))
            minus = layer(x[:, start + n:start + 2 * n].flatten(1))
            half = n * self.channels_out
            real_p, imag_p = plus[:, :half], plus[:, half:]
            real_m, imag_m = minus[:, :half], minus[:, half:]
            pieces.append((real_p - imag_m).reshape(n_edges, n, self.channels_out))
            pieces.append((real_m + imag_p).reshape(n_edges, n, self.channels_out))
            start += 2 * n
        return torch.cat(pieces, dim=1), out0[:, n0 * self.channels_out:]

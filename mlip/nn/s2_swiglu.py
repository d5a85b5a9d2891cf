"""SwiGLU-S²: a strictly equivariant gated activation through a product on a sphere grid.

EquiformerV3 ("sep-merge_gates2_swiglu") multiplies two band-limited functions on an S² grid:
a degree-2 polynomial, i.e. a Gaunt "self tensor product". Band-limited to L, the product is
band-limited to 2L, and projecting it back onto degrees ≤ L is exact (hence exactly
equivariant) on e3nn's Kostelec–Rockmore grid at :func:`mlip.nn.s2_grid.exact_product_resolution`.

On m-truncated edge-frame features (|m| ≤ m_max, see :mod:`mlip.nn.so2`) only the roll about
the polar axis has to be respected, which needs an α quadrature exact for orders up to 3·m_max:
``res_alpha ≥ 3·m_max + 1`` (:func:`truncated_product_resolution`; e.g. [14, 8] for L = 4,
m_max = 2). :class:`mlip.nn.s2_grid.S2Grid` refuses such α resolutions and full component sets
only, hence :func:`sphere_grid_matrices` here (on :func:`mlip.nn.s2_grid.grid_matrices`).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from mlip.nn.constants import ExactConstants
from mlip.nn.s2_grid import exact_product_resolution, grid_matrices

__all__ = ["truncated_product_resolution", "sphere_grid_matrices", "SwiGLUS2"]


def truncated_product_resolution(lmax: int, mmax: int) -> tuple[int, int]:
    """Smallest even (res_beta, res_alpha) for an exact product of features with |m| ≤ mmax.

    Args:
        lmax: L. mmax: largest order present (``mmax = lmax`` gives the full-feature rule).
    """
    res_beta = exact_product_resolution(lmax)[0]
    res_alpha = 3 * mmax + 1
    return res_beta, res_alpha + res_alpha % 2


def sphere_grid_matrices(
    lmax: int, resolution: tuple[int, int], components: Sequence[int] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense e3nn ``ToS2Grid``/``FromS2Grid`` matrices ("component" normalisation), float64.

    Args:
        lmax: L. resolution: (res_beta, res_alpha); res_beta even and ≥ 2(L+1).
        components: which e3nn components (index l² + l + m) to keep, in this order; all
            (L+1)² by default.

    Raises:
        ConfigError: for a res_beta e3nn cannot use.

    Returns:
        ``to_grid`` (n_grid, n_comp) and ``from_grid`` (n_comp, n_grid), with
        n_grid = res_beta·res_alpha.
    """
    to_grid, from_grid = grid_matrices(lmax, *resolution)
    if components is not None:
        index = torch.as_tensor(list(components), dtype=torch.long)
        to_grid, from_grid = to_grid[:, index], from_grid[index]
    return to_grid.contiguous(), from_grid.contiguous()


class SwiGLUS2(nn.Module):
    """Gated SwiGLU-S² activation (EquiformerV3 §"SwiGLU-S²")::

        s   = SiLU(z[:, :K]) · z[:, K:2K]                 (SwiGLU on invariants)
        g   = sigmoid(z[:, 2K:3K])                        (gates)
        v   = from_grid(to_grid(h[..., :K]) · to_grid(h[..., K:])) · g
        v[:, l=0] += s

    Args:
        lmax: L. channels: K (the output channels; ``h`` has 2K, ``z`` 3K).
        resolution: (res_beta, res_alpha); default :func:`truncated_product_resolution`.
        components: e3nn components of the rows of ``h``, in order (row 0 must be l = 0);
            default all (L+1)². For m-truncated edge features pass
            :func:`mlip.nn.so2.m_primary_order` and mmax-aware resolution.
    """

    def __init__(self, lmax: int, channels: int, resolution: tuple[int, int] | None = None,
                 components: Sequence[int] | None = None) -> None:
        super().__init__()
        components = list(range((lmax + 1) ** 2)) if components is None else list(components)
        if components[0] != 0:
            raise ValueError("the first row of SwiGLU-S² features must be the l = 0 component")
        mmax = max(abs(c - int(math.isqrt(c)) ** 2 - int(math.isqrt(c))) for c in components)
        self.resolution = tuple(resolution or truncated_product_resolution(lmax, mmax))
        self.channels = channels
        self.constants = ExactConstants()
        to_grid, from_grid = sphere_grid_matrices(lmax, self.resolution, components)
        self.constants.add("to_grid", to_grid)
        self.constants.add("from_grid", from_grid)

    def forward(self, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Apply the activation.

        Args:
            h: (n, n_rows, 2K) equivariant features.
            z: (n, 3K) invariants.

        Returns:
            (n, n_rows, K).
        """
        k = self.channels
        to_grid = self.constants.get("to_grid", h)
        from_grid = self.constants.get("from_grid", h)
        scalars = nn.functional.silu(z[:, :k]) * z[:, k:2 * k]
        gates = torch.sigmoid(z[:, 2 * k:3 * k])
        grid = torch.einsum("gr,nrc->ngc", to_grid, h)  # (n, n_grid, 2K)
        product = grid[..., :k] * grid[..., k:]
        v = torch.einsum("rg,ngc->nrc", from_grid, product) * gates[:, None, :]
        return torch.cat([v[:, :1] + scalars[:, None, :], v[:, 1:]], dim=1)

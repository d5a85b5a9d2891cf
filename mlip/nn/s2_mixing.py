"""Facet's spherical-grid mixing layer: features → S² grid → pointwise MLP → back to irreps."""

from __future__ import annotations

import torch
from e3nn import o3
from torch import nn

from mlip.errors import ConfigError
from mlip.nn.irreps_linear import IrrepsLinear
from mlip.nn.s2_grid import S2Grid

__all__ = ["S2MixingLayer", "sh_parity_irreps", "component_major_columns"]


def sh_parity_irreps(channels: int, lmax: int) -> o3.Irreps:
    """``channels`` copies of every degree 0..lmax with parity (−1)^l: 0e + 1o + 2e + …"""
    return o3.Irreps([(channels, (deg, (-1) ** deg)) for deg in range(lmax + 1)])


def component_major_columns(channels: int, lmax: int) -> list[int]:
    """The e3nn column of ``sh_parity_irreps(channels, lmax)`` behind each entry of its
    component-major layout (n_sph, channels), flattened: index (l² + l + m) · channels + u."""
    return [deg * deg * channels + u * (2 * deg + 1) + m
            for deg in range(lmax + 1) for m in range(2 * deg + 1) for u in range(channels)]


class S2MixingLayer(nn.Module):
    """Grid mixing (Facet, Miklaucic et al. 2025, arXiv 2509.08418): the node update.

    1. ``up``: equivariant linear map of the input to U × (0e + 1o + … + Le);
    2. the U functions f_u(r̂) = Σ_lm up_{lm,u} Y_lm(r̂) are sampled on a SOFT grid (G points);
    3. ``pointwise`` (e.g. :class:`mlip.nn.s2_grid.GridMLP`) acts on the U values at each point;
    4. the result is projected back to degrees ≤ L;
    5. concatenated with the input scalars and mapped by ``down`` to ``irreps_out``.

    Rotations and inversion move f over the sphere (the grid features have parity (−1)^l), so the
    layer is O(3)-equivariant up to grid aliasing: exact for a degree-2 polynomial ``pointwise``
    on a grid at :func:`mlip.nn.s2_grid.exact_product_resolution`, approximate for an MLP.

    Args:
        irreps_in: input irreps (l > 0 parts must have parity (−1)^l).
        irreps_out: output irreps.
        lmax: L of the grid functions.
        channels: U.
        pointwise: module mapping (…, U) → (…, U).
        res_beta: grid polar resolution (even). res_alpha: azimuthal resolution.
        normalization: e3nn grid normalisation.
    """

    def __init__(self, irreps_in: o3.Irreps | str, irreps_out: o3.Irreps | str, *, lmax: int,
                 channels: int, pointwise: nn.Module, res_beta: int, res_alpha: int,
                 normalization: str = "component") -> None:
        super().__init__()
        self.irreps_in, self.irreps_out = o3.Irreps(irreps_in), o3.Irreps(irreps_out)
        wrong = [str(ir) for _, ir in self.irreps_in if ir.p != (-1) ** ir.l]
        if wrong:
            raise ConfigError(f"the S2 grid mixer needs parity (-1)^l features; got {wrong} in "
                              f"{self.irreps_in}")
        self.lmax, self.channels = lmax, channels
        irreps_grid = sh_parity_irreps(channels, lmax)
        scalar_columns = [c for (_, ir), sl in zip(self.irreps_in, self.irreps_in.slices())
                          if ir == o3.Irrep("0e") for c in range(sl.start, sl.stop)]
        grid_columns = component_major_columns(channels, lmax)
        # ``up`` writes, and ``down`` reads, the grid functions in component-major order; ``down``
        # also reads x itself, of which it uses only the 0e columns (the others map to -1)
        x_columns = [irreps_grid.dim + scalar_columns.index(c) if c in scalar_columns else -1
                     for c in range(self.irreps_in.dim)]
        self.up = IrrepsLinear(self.irreps_in, irreps_grid, out_columns=grid_columns)
        self.grid = S2Grid(lmax, res_beta, res_alpha, normalization)
        self.pointwise = pointwise
        self.down = IrrepsLinear(irreps_grid + o3.Irreps(f"{len(scalar_columns)}x0e"),
                                 self.irreps_out, in_columns=grid_columns + x_columns)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: (n_atoms, irreps_in.dim). Returns: (n_atoms, irreps_out.dim)."""
        n_sph = (self.lmax + 1) ** 2
        up = self.up(x).reshape(-1, n_sph, self.channels)  # (n_atoms, n_sph, U)
        values = self.pointwise(self.grid.to_grid(up))  # (n_atoms, G, U)
        mixed = self.grid.from_grid(values).reshape(-1, n_sph * self.channels)
        return self.down(torch.cat([mixed, x], dim=1))

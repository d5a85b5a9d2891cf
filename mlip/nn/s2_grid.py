"""Spherical-grid (S²) projections and pointwise operations on grid values.

Features are band-limited functions on the sphere, f(r̂) = Σ_{l≤L, m} x_{lm} Y_{lm}(r̂), stored
component-major, ``x (n, n_sph, n_channels)`` with n_sph = (L+1)² in e3nn's order (l, m = −l..l).
:class:`S2Grid` holds the dense matrices of e3nn's SOFT (Kostelec–Rockmore) grid transforms
``to_grid (G, n_sph)`` and ``from_grid (n_sph, G)``, G = res_beta · res_alpha, so a round trip is
two small matmuls. Rotations (and, for features with parity (−1)^l, the inversion) act on f by
moving it over the sphere, so any pointwise map on grid values commutes with them — exactly for
polynomial maps when the grid obeys :func:`exact_product_resolution`, approximately (aliasing)
for non-polynomial ones such as an MLP.
"""

from __future__ import annotations

import torch
from e3nn import o3
from torch import nn

from mlip.errors import ConfigError
from mlip.nn.precision import float64_construction
from mlip.nn.readout import ScalarMLP

__all__ = [
    "S2Grid", "exact_product_resolution", "grid_matrices", "GridMLP", "GridBilinear",
]


def exact_product_resolution(lmax: int, lmax_out: int | None = None) -> tuple[int, int]:
    """Smallest SOFT grid (res_beta, res_alpha) on which the product of two degree-``lmax``
    functions projects back to degree ``lmax_out`` exactly.

    The product has degree 2·lmax; the quadrature must integrate degree 2·lmax + lmax_out, so
    res_beta = even_ceil(2·lmax + lmax_out + 1) and res_alpha = 2·lmax + lmax_out + 1
    (e.g. L = 2: 8 × 7). One point fewer in either direction breaks exactness.
    """
    lmax_out = lmax if lmax_out is None else lmax_out
    res = 2 * lmax + lmax_out + 1
    return res + res % 2, res


def _check_res_beta(lmax: int, res_beta: int) -> None:
    if res_beta % 2 or res_beta < 2 * (lmax + 1):
        raise ConfigError(f"S2 grid res_beta must be even and >= 2(lmax+1) = {2 * (lmax + 1)}, "
                          f"got {res_beta}")


def grid_matrices(lmax: int, res_beta: int, res_alpha: int,
                  normalization: str = "component") -> tuple[torch.Tensor, torch.Tensor]:
    """Dense e3nn ``ToS2Grid`` / ``FromS2Grid`` matrices for degree ≤ ``lmax``, float64.

    Any res_alpha is accepted (:class:`S2Grid` asks for a lossless one, ≥ 2L + 1).

    Raises:
        ConfigError: res_beta odd or < 2(L+1) (e3nn's SOFT quadrature cannot use it).

    Returns:
        ``to_grid`` (G, n_sph) and ``from_grid`` (n_sph, G), contiguous;
        G = res_beta·res_alpha, n_sph = (L+1)².
    """
    _check_res_beta(lmax, res_beta)
    n_sph, n_grid = (lmax + 1) ** 2, res_beta * res_alpha
    with float64_construction():  # e3nn builds its quadrature in the default dtype
        to_grid = o3.ToS2Grid(lmax, (res_beta, res_alpha), normalization=normalization,
                              dtype=torch.float64)
        from_grid = o3.FromS2Grid((res_beta, res_alpha), lmax, normalization=normalization,
                                  dtype=torch.float64)
        to_matrix = to_grid(torch.eye(n_sph)).reshape(n_sph, n_grid).T
        from_matrix = from_grid(torch.eye(n_grid).reshape(n_grid, res_beta, res_alpha)).T
    return to_matrix.contiguous(), from_matrix.contiguous()


class S2Grid(nn.Module):
    """Dense SOFT-grid transforms for degree ≤ ``lmax`` (e3nn ``ToS2Grid`` / ``FromS2Grid``).

    Buffers are computed in float64 and follow ``.to(dtype)``; they are rebuilt from the
    arguments, so they are not saved in checkpoints.

    Args:
        lmax: largest degree L.
        res_beta: number of polar (β) rings; must be even (SOFT quadrature).
        res_alpha: number of azimuthal (α) points; ≥ 2L + 1 for a lossless round trip.
        normalization: e3nn grid normalisation, ``"component"`` or ``"integral"``.
    """

    def __init__(self, lmax: int, res_beta: int, res_alpha: int,
                 normalization: str = "component") -> None:
        super().__init__()
        _check_res_beta(lmax, res_beta)
        if res_alpha < 2 * lmax + 1:
            raise ConfigError(f"S2 grid res_alpha must be >= 2 lmax + 1 = {2 * lmax + 1}, "
                              f"got {res_alpha}")
        if normalization not in ("component", "integral"):
            raise ConfigError("S2 grid normalization must be 'component' or 'integral', "
                              f"got {normalization!r}")
        self.lmax, self.res_beta, self.res_alpha = lmax, res_beta, res_alpha
        to_matrix, from_matrix = grid_matrices(lmax, res_beta, res_alpha, normalization)
        self.register_buffer("to_matrix", to_matrix, persistent=False)  # (G, n_sph)
        self.register_buffer("from_matrix", from_matrix, persistent=False)  # (n_sph, G)

    def to_grid(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: (n, n_sph, n_channels). Returns: (n, G, n_channels) grid values."""
        return torch.matmul(self.to_matrix.to(x.dtype), x)

    def from_grid(self, values: torch.Tensor) -> torch.Tensor:
        """Args: values: (n, G, n_channels). Returns: (n, n_sph, n_channels) coefficients."""
        return torch.matmul(self.from_matrix.to(values.dtype), values)


class GridMLP(nn.Module):
    """The same MLP at every grid point and head: (…, H·D) → split into H heads of D → MLP → merge.

    Facet's mixer MLP (Linear → SiLU → Linear → SiLU, weights shared across points and heads).

    Args:
        channels: H·D, the grid feature size.
        hidden: hidden widths of the MLP.
        num_heads: H (must divide ``channels``).
    """

    def __init__(self, channels: int, hidden: list[int], num_heads: int = 1) -> None:
        super().__init__()
        if channels % num_heads:
            raise ConfigError(f"grid MLP: {num_heads} heads do not divide {channels} channels")
        self.num_heads = num_heads
        head = channels // num_heads
        self.mlp = ScalarMLP([head, *hidden, head], final_activation=True)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        """Args: values: (…, channels). Returns: (…, channels)."""
        shape = values.shape
        heads = values.reshape(*shape[:-1], self.num_heads, shape[-1] // self.num_heads)
        return self.mlp(heads).reshape(shape)


class GridBilinear(nn.Module):
    """A degree-2 polynomial at every grid point, (v A) ⊙ (v B): the Gaunt-type product.

    Exactly equivariant on a grid at :func:`exact_product_resolution`; used as the exact mode of
    the grid mixer and in tests.

    Args:
        channels: grid feature size (in and out).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.left = nn.Parameter(torch.randn(channels, channels) / channels ** 0.5)
        self.right = nn.Parameter(torch.randn(channels, channels) / channels ** 0.5)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        """Args: values: (…, channels). Returns: (…, channels)."""
        return (values @ self.left) * (values @ self.right)

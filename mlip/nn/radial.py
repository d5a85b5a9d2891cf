"""Radial bases φ(r) for edge lengths: Bessel (sinc), Gaussian smearing and cubic B-splines.

Every basis maps distances (n_edges,) Å to features (n_edges, n_basis). None of them vanishes
at the cutoff on its own: multiply by an envelope (:mod:`mlip.nn.cutoff`) to make the energy C².
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mlip.errors import ConfigError
from mlip.nn.cutoff import polynomial_envelope
from mlip.nn.precision import flush_tiny, tiny_threshold

__all__ = ["BesselBasis", "GaussianBasis", "CubicBSplineBasis", "SplineRadial"]


class BesselBasis(nn.Module):
    """b_n(r) = sqrt(2/r_c) · sin(n π r / r_c) / r, n = 1..K (NequIP/MACE; Klicpera et al. 2020).

    Evaluated as sqrt(2/r_c) · (n π / r_c) · sinc(n r / r_c), which stays finite as r → 0.

    Args:
        cutoff: r_c, Å.
        num_basis: K.
        trainable: learn the frequencies n π / r_c.
    """

    def __init__(self, cutoff: float, num_basis: int = 8, trainable: bool = False) -> None:
        super().__init__()
        if num_basis < 1:
            raise ConfigError(f"BesselBasis needs num_basis >= 1, got {num_basis}")
        self.cutoff = float(cutoff)
        freq = torch.arange(1, num_basis + 1, dtype=torch.float64) * math.pi / self.cutoff
        if trainable:
            self.frequencies = nn.Parameter(freq)
        else:
            self.register_buffer("frequencies", freq)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        """Args: r: (n_edges,) Å. Returns: (n_edges, num_basis) Å⁻¹."""
        freq = self.frequencies.to(r.dtype)
        # torch.sinc(x) = sin(πx)/(πx), so sin(ω r)/r = ω · sinc(ω r / π)
        return math.sqrt(2.0 / self.cutoff) * freq * torch.sinc(r[:, None] * freq / math.pi)


class GaussianBasis(nn.Module):
    """g_k(r) = exp(-(r - μ_k)² / (2 Δμ²)), K centres μ_k evenly spaced on [start, r_c].

    The Gaussian smearing of SchNet and EquiformerV2/V3; Δμ is the centre spacing. Tails below
    :func:`mlip.nn.precision.tiny_threshold` (beyond ≈ 9.3 Δμ in float32) are exact zeros, so
    neither the values nor their gradients hold subnormal numbers.

    Args:
        cutoff: r_c, Å (last centre).
        num_basis: K (≥ 2).
        start: first centre, Å.
    """

    def __init__(self, cutoff: float, num_basis: int = 10, start: float = 0.0) -> None:
        super().__init__()
        if num_basis < 2:
            raise ConfigError(f"GaussianBasis needs num_basis >= 2, got {num_basis}")
        centres = torch.linspace(start, cutoff, num_basis, dtype=torch.float64)
        self.register_buffer("centres", centres)
        self.coefficient = -0.5 / float(centres[1] - centres[0]) ** 2

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        """Args: r: (n_edges,) Å. Returns: (n_edges, num_basis) dimensionless."""
        exponent = self.coefficient * (r[:, None] - self.centres.to(r.dtype)) ** 2
        # exp(-inf) = 0 with a zero gradient, where exp of the tail would be a subnormal
        underflow = exponent < math.log(tiny_threshold(r.dtype))
        return torch.exp(exponent.masked_fill(underflow, -math.inf))


class CubicBSplineBasis(nn.Module):
    """Uniform cardinal cubic B-splines on [0, r_c]: a local, C² partition of unity.

    With K basis functions the knot spacing is h = r_c / (K − 3) and basis k is supported on
    [(k − 3) h, (k + 1) h]. For r in the knot interval [i h, (i+1) h] with t = r/h − i, only
    bases i..i+3 are non-zero, with weights

        (1−t)³/6,  (3t³ − 6t² + 4)/6,  (−3t³ + 3t² + 3t + 1)/6,  t³/6,

    which sum to one for every r in [0, r_c]. Distances ≥ r_c are clamped into the last interval
    (the envelope zeroes them anyway).

    Args:
        cutoff: r_c, Å.
        num_basis: K (≥ 4).
    """

    def __init__(self, cutoff: float, num_basis: int = 16) -> None:
        super().__init__()
        if num_basis < 4:
            raise ConfigError(f"a cubic B-spline basis needs num_basis >= 4, got {num_basis}")
        self.cutoff = float(cutoff)
        self.num_basis = num_basis
        self.spacing = self.cutoff / (num_basis - 3)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        """Args: r: (n_edges,) Å. Returns: (n_edges, num_basis), ≤ 4 non-zeros per row."""
        u = (r / self.spacing).clamp(0.0, self.num_basis - 3)
        interval = u.detach().floor().clamp(max=self.num_basis - 4)
        t = u - interval
        t2, t3 = t * t, t * t * t
        weights = torch.stack([(1 - t) ** 3, 3 * t3 - 6 * t2 + 4, -3 * t3 + 3 * t2 + 3 * t + 1, t3],
                              dim=1) / 6.0  # (n_edges, 4)
        columns = interval.long()[:, None] + torch.arange(4, device=r.device)  # (n_edges, 4)
        return r.new_zeros(r.shape[0], self.num_basis).scatter(1, columns, weights)


class SplineRadial(nn.Module):
    """Learnable radial functions w(r) = f_p(r/r_c) · φ(r) @ W, φ the cubic B-spline basis.

    The Facet replacement for a radial MLP: a linear map on a local spline basis, so each output
    channel is its own cubic spline (C²) with ``num_basis`` learnable control values, and the
    polynomial envelope f_p makes every output vanish C²-smoothly at r_c. Products f_p · φ below
    :func:`mlip.nn.precision.tiny_threshold` are exact zeros (no subnormal numbers in the
    matrix products of the forward and backward pass; see :mod:`mlip.nn.precision`).

    Args:
        cutoff: r_c, Å.
        num_out: number of radial functions P (e.g. tensor-product path weights).
        num_basis: K control points per function.
        envelope_p: order p of the polynomial envelope.
    """

    def __init__(self, cutoff: float, num_out: int, num_basis: int = 16,
                 envelope_p: int = 6) -> None:
        super().__init__()
        self.basis = CubicBSplineBasis(cutoff, num_basis)
        self.cutoff = float(cutoff)
        self.envelope_p = envelope_p
        self.control = nn.Parameter(torch.randn(num_basis, num_out))

    def forward(self, r: torch.Tensor, columns: torch.Tensor | None = None) -> torch.Tensor:
        """Args:
            r: (n_edges,) Å.
            columns: optional (n_cols,) int64 output functions to return (repeats allowed),
                e.g. :attr:`mlip.nn.uvu_product.UVUTensorProduct.weight_index`; selecting
                control columns is cheaper than expanding the (n_edges, num_out) output.

        Returns:
            (n_edges, num_out) or (n_edges, n_cols), dimensionless.
        """
        envelope = polynomial_envelope(r, self.cutoff, self.envelope_p)  # (n_edges,)
        control = self.control if columns is None else self.control[:, columns]
        return flush_tiny(self.basis(r) * envelope[:, None]) @ control

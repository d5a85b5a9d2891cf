"""Smooth cutoff envelopes f(r) with f(r_c) = f'(r_c) = f''(r_c) = 0."""

from __future__ import annotations

import torch


def polynomial_envelope(r: torch.Tensor, cutoff: float, p: int = 6) -> torch.Tensor:
    """Polynomial envelope of order p (NequIP/MACE), C² at the cutoff.

    f_p(u) = 1 − (p+1)(p+2)/2·u^p + p(p+2)·u^(p+1) − p(p+1)/2·u^(p+2) for u = r/r_c < 1, else 0.

    Args:
        r: (...) distances, Å. cutoff: r_c, Å. p: order (≥ 2).

    Returns:
        (...) envelope values in [0, 1].
    """
    u = r / cutoff
    # Horner form: one power and three multiply-adds instead of three powers
    f = 1.0 + u.pow(p) * (-0.5 * (p + 1) * (p + 2) + u * (p * (p + 2) - 0.5 * p * (p + 1) * u))
    return torch.where(u < 1.0, f, torch.zeros_like(f))


def cosine_envelope(r: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Cosine envelope ½(cos(π r/r_c) + 1) for r < r_c, else 0 (C¹ at the cutoff).

    Args:
        r: (...) distances, Å. cutoff: r_c, Å.
    """
    f = 0.5 * (torch.cos(torch.pi * r / cutoff) + 1.0)
    return torch.where(r < cutoff, f, torch.zeros_like(f))

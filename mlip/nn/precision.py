"""Build modules in float64 so that their constant buffers are exact to float64 round-off."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

__all__ = ["float64_construction"]


@contextlib.contextmanager
def float64_construction() -> Iterator[None]:
    """Temporarily make float64 the default dtype.

    e3nn computes Clebsch–Gordan tables, SOFT quadrature weights, etc. in the default dtype;
    built under float32 they carry ~1e-8 relative errors that a later ``.double()`` cannot undo
    (equivariance then fails at ~1e-9). Build under this context, then ``.float()`` if wanted.
    """
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)

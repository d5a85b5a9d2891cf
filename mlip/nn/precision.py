"""Floating-point hygiene: float64 construction, and keeping subnormal numbers out of the model.

Subnormal ("denormal") numbers, below the dtype's smallest normal number (float32: 1.18e-38),
cost x86 CPUs a micro-code assist per operation, so one tiny operand can slow a whole matrix
product 50–100×. They arise in trained models from weights that never receive a gradient
(e.g. spline control values for distances no data reaches) decayed geometrically by weight
decay, and from basis-function tails (Gaussians, B-spline × envelope products). Rather than
switching the CPU's flush-to-zero mode (per thread, and a change to the user's other numerics),
mlip zeroes such values at the source: every magnitude below :func:`tiny_threshold` — the
square root of the smallest normal number, so that a product of two kept values is still
normal — is replaced by an exact zero. Relative to the O(1) quantities they add to, these
values are far below the dtype's epsilon (float32: 1.1e-19 vs 1.2e-7; float64: 1.5e-154), so
results do not change beyond round-off.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterable, Iterator

import torch

__all__ = ["float64_construction", "tiny_threshold", "flush_tiny", "flush_tiny_"]


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


def tiny_threshold(dtype: torch.dtype) -> float:
    """√(smallest normal number) of a floating dtype: float32 1.08e-19, float64 1.49e-154."""
    return math.sqrt(torch.finfo(dtype).tiny)


def flush_tiny(x: torch.Tensor) -> torch.Tensor:
    """x with every entry of magnitude below :func:`tiny_threshold` replaced by an exact 0.

    Differentiable (the gradient of a zeroed entry is 0); for small tensors such as basis
    functions (n_edges, K). Args: x: (...) floating. Returns: (...) same dtype.
    """
    return torch.where(x.abs() < tiny_threshold(x.dtype), torch.zeros_like(x), x)


@torch.no_grad()
def flush_tiny_(tensors: Iterable[torch.Tensor], *, count: bool = True) -> int | None:
    """Zero, in place, every entry below :func:`tiny_threshold` of floating tensors.

    Meant for parameters (``model.parameters()``, an EMA's averages) after a cast, a load or an
    optimiser step; non-floating tensors and tensors without data (meta) are skipped.

    Args:
        count: also return how many non-zero entries were zeroed (one device sync); the
            training step passes False and stays free of host reads.

    Returns:
        The number zeroed, or None when ``count`` is False.
    """
    counts = []
    for tensor in tensors:
        if tensor.is_floating_point() and tensor.numel() and not tensor.is_meta:
            small = tensor.abs() < tiny_threshold(tensor.dtype)
            if count:
                counts.append((small & (tensor != 0)).sum())
            tensor.masked_fill_(small, 0.0)
    if not count:
        return None
    return int(torch.stack(counts).sum()) if counts else 0  # one device sync

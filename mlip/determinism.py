"""Deterministic mode: runs that repeat bit for bit on the same machine and thread count.

Without it, float32 training and MD on several CPU threads are not reproducible: the backward
of advanced indexing (``x[index]``, e.g. a species embedding or a per-edge gather) is
``index_put_(accumulate=True)``, which torch parallelises on the CPU with atomic adds, so the
order in which rows are summed (and the rounding) changes from run to run. float64 hides it
for a while, float32 shows it within a few steps (the losses of two runs differ from step 2).

:func:`deterministic_mode` turns on ``torch.use_deterministic_algorithms``, under which torch
sums those rows in a fixed order (and, on CUDA, picks deterministic kernels), with the cuDNN
settings to match. Callers also avoid choices made by timing (``max_atoms_per_call="auto"``
in MD). What stays outside: a different thread count, CPU, BLAS build or torch release may
round differently; a wall-clock budget (``train.max_time_s``, ``schedule.fit_to_time``) still
depends on speed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

__all__ = ["deterministic_mode"]

#: cuBLAS workspace setting that deterministic CUDA matmuls need (read when cuBLAS starts).
CUBLAS_WORKSPACE = ":4096:8"


@contextlib.contextmanager
def deterministic_mode(enabled: bool = True) -> Iterator[None]:
    """Run the body with deterministic torch kernels, then restore the previous settings.

    Args:
        enabled: False leaves every setting as it is (a no-op context).

    An operation without a deterministic kernel (some CUDA reductions) warns once instead of
    failing the run (``warn_only``). On CUDA, ``CUBLAS_WORKSPACE_CONFIG`` is set to
    :data:`CUBLAS_WORKSPACE` unless already set; it only takes effect when cuBLAS has not
    started yet in the process.
    """
    if not enabled:
        yield
        return
    previous = (torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled(),
                torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True, warn_only=previous[1] if previous[0] else True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = previous[2:]

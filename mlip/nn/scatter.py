"""Scatter reductions over an index (segment sums), pure torch."""

from __future__ import annotations

import torch


def scatter_sum(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """Sum rows of ``src`` into ``dim_size`` buckets given by ``index``.

    Args:
        src: (n, ...) values.
        index: (n,) int64 bucket of each row.
        dim_size: number of buckets.

    Returns:
        (dim_size, ...) sums; empty buckets are zero.
    """
    out = src.new_zeros((dim_size,) + tuple(src.shape[1:]))
    return out.index_add(0, index, src)

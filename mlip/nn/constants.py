"""Constant tensors (Clebsch-Gordan, Wigner, grid matrices) kept exact in float64.

A buffer built in float32 and later cast with ``model.double()`` keeps only float32 precision,
which caps equivariance at ~1e-7. :class:`ExactConstants` instead stores a float64 master copy
outside the ``state_dict`` (the constants follow from the hyper-parameters) and hands out a copy
cast to the dtype and device of the tensor it is used with, cached per (dtype, device).
"""

from __future__ import annotations

import torch

__all__ = ["ExactConstants"]


class ExactConstants:
    """A named set of float64 (or integer) constants, cast on use."""

    def __init__(self) -> None:
        self._master: dict[str, torch.Tensor] = {}
        self._cache: dict[tuple[str, torch.dtype, torch.device], torch.Tensor] = {}

    def add(self, name: str, value: torch.Tensor) -> None:
        """Store ``value`` (floating tensors are promoted to float64) under ``name``."""
        value = value.detach().cpu()
        self._master[name] = value.to(torch.float64) if value.is_floating_point() else value

    def get(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """The constant ``name`` on ``like``'s device, in ``like``'s dtype if it is floating."""
        master = self._master[name]
        dtype = like.dtype if master.is_floating_point() else master.dtype
        key = (name, dtype, like.device)
        if key not in self._cache:
            self._cache[key] = master.to(device=like.device, dtype=dtype)
        return self._cache[key]

"""Errors raised while training (both are :class:`~mlip.errors.MLIPError`)."""

from __future__ import annotations

from mlip.errors import MLIPError

__all__ = ["TrainingDivergedError", "BatchTooLargeError"]


class TrainingDivergedError(MLIPError, RuntimeError):
    """The loss or the gradients became NaN/inf; no weights were updated with them."""


class BatchTooLargeError(MLIPError, RuntimeError):
    """A batch did not fit in device memory; the message names its size in atoms and edges."""

"""The error hierarchy of mlip.

Every error a user can trigger with bad input is an :class:`MLIPError` whose message names the
offending item (frame, atom, element, key, file). Errors about invalid values also derive from
:class:`ValueError` so generic ``except ValueError`` handlers keep working.
"""

from __future__ import annotations

__all__ = [
    "MLIPError",
    "InvalidStructureError",
    "UnknownElementError",
    "CellTooSmallError",
    "OverlappingAtomsError",
    "NeighborListOverflow",
    "CorruptStoreError",
    "CheckpointMismatchError",
    "ConfigError",
    "SimulationBlowUpError",
    "TrainingDivergedError",
    "BatchTooLargeError",
    "MissingExtraError",
]


class MLIPError(Exception):
    """Base class of every error raised deliberately by mlip."""


class InvalidStructureError(MLIPError, ValueError):
    """Positions, cell, pbc or shapes that cannot describe a structure (NaN, singular cell, ...)."""


class UnknownElementError(MLIPError, ValueError):
    """An atomic number that a model, store or table does not know."""


class CellTooSmallError(MLIPError, ValueError):
    """A periodic cell too small for the requested operation."""


class OverlappingAtomsError(MLIPError, ValueError):
    """Two atoms closer than a physically meaningful distance."""


class NeighborListOverflow(MLIPError, RuntimeError):
    """A neighbour-list buffer would exceed its hard capacity; nothing is ever truncated."""


class CorruptStoreError(MLIPError, OSError):
    """A snapshot store or HDF5 file that is truncated, foreign or inconsistent."""


class CheckpointMismatchError(MLIPError, ValueError):
    """A checkpoint that is not an mlip file, or from an incompatible model or version."""


class ConfigError(MLIPError, ValueError):
    """A configuration key or value that is unknown or invalid."""


class SimulationBlowUpError(MLIPError, RuntimeError):
    """A simulation became unphysical (non-finite values, huge forces, runaway temperature)."""

    def __init__(self, message: str, *, step: int | None = None, system: int | None = None):
        super().__init__(message)
        self.step = step
        self.system = system


class TrainingDivergedError(MLIPError, RuntimeError):
    """The loss or the gradients became NaN/inf; no weights were updated with them."""


class BatchTooLargeError(MLIPError, RuntimeError):
    """A batch did not fit in device memory; the message names its size in atoms and edges."""


class MissingExtraError(MLIPError, ImportError):
    """An optional package is needed and not installed; the message says what to install."""

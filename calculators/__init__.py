"""ASE calculators backed by mlip potentials."""

from mlip.calculators.ase import MLIPCalculator

__all__ = ["MLIPCalculator"]

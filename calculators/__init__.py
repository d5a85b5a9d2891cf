"""ASE calculators backed by mlip potentials."""

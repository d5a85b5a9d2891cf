"""Shared neural-network blocks (radial bases, envelopes, grids, tensor products, norms)."""

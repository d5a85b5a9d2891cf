"""Fixtures of the MD tests: a smooth Lennard-Jones 'copper' and small fcc cells (float64)."""

from __future__ import annotations

import pytest
from ase.build import bulk

from mlip.models import build


@pytest.fixture(scope="module")
def lj_model():
    """Smooth LJ with copper-like parameters (nearest-neighbour minimum near 2.58 Å)."""
    return build("lennard_jones", species=[29], cutoff=5.0, epsilon=0.4, sigma=2.3).eval()


@pytest.fixture()
def cu32():
    """32-atom cubic fcc cell, slightly rattled."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.rattle(0.02, seed=1)
    return atoms


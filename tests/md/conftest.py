"""Fixtures of the MD tests: a smooth Lennard-Jones 'copper' and small fcc cells (float64)."""

from __future__ import annotations

import numpy as np
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



@pytest.fixture(scope="module")
def lj():
    """Smooth LJ 'copper' with a 4 Å cutoff (the restart and run-status tests)."""
    return build("lennard_jones", species=[29], cutoff=4.0, epsilon=0.4, sigma=2.3).eval()


def rattled_cu_cells(n: int = 2) -> list:
    """n rattled 16-atom fcc Cu cells (2x2x1 cubic, a = 3.56 Å), rattle seeds 0..n-1."""
    out = []
    for k in range(n):
        atoms = bulk("Cu", "fcc", a=3.56, cubic=True).repeat((2, 2, 1))
        atoms.rattle(0.02, seed=k)
        out.append(atoms)
    return out


def strained_cu_cell(seed: int, a: float = 3.5):
    """An 8-atom fcc Cu cell (2x1x1 cubic, lattice constant ``a`` Å) strained by up to ±3 % per
    axis and rattled by 0.08 Å, both seeded (the relaxation tests)."""
    atoms = bulk("Cu", "fcc", a=a, cubic=True).repeat((2, 1, 1))
    rng = np.random.default_rng(seed)
    atoms.set_cell(atoms.cell * (1 + rng.uniform(-0.03, 0.03, 3)), scale_atoms=True)
    atoms.rattle(0.08, seed=seed)
    return atoms

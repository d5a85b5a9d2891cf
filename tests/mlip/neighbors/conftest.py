"""Random and hand-made structures for the neighbour-list tests, with their ASE reference lists."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.neighborlist import neighbor_list as ase_neighbor_list


@dataclass(frozen=True)
class Case:
    """One structure: positions (n, 3) Å, cell (3, 3) Å rows, pbc (3,), cutoff Å."""

    positions: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    cutoff: float
    zero_free_rows: bool = False  # cell rows along non-periodic axes are zero

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (torch.tensor(self.positions), torch.tensor(self.cell), torch.tensor(self.pbc))


def _pair_set(i, j, S) -> set[tuple[int, int, int, int, int]]:
    """The (i, j, S) triples of a list as a set of int tuples (numpy or torch inputs)."""
    i, j, S = (np.asarray(x.cpu() if isinstance(x, torch.Tensor) else x) for x in (i, j, S))
    return set(zip(i.tolist(), j.tolist(), *np.asarray(S).reshape(-1, 3).T.tolist()))


def _ase_pairs(case: Case) -> set[tuple]:
    atoms = Atoms(positions=case.positions, cell=case.cell, pbc=case.pbc)
    return _pair_set(*ase_neighbor_list("ijS", atoms, case.cutoff))


def _random_cell(rng: np.random.Generator, style: int) -> np.ndarray:
    """A cell with edges 1.5-6 Å whose volume is 15-100 % of that of a box with the same edges
    (nearly singular cells only make every code, ASE included, search huge image boxes)."""
    while True:
        if style == 0:  # skewed triclinic
            cell = rng.uniform(-1, 1, (3, 3)) * 2 + np.diag(rng.uniform(1.5, 6, 3))
        elif style == 1:  # strongly skewed: random directions
            cell = rng.normal(size=(3, 3))
            cell *= (rng.uniform(2.0, 6.0, 3) / np.linalg.norm(cell, axis=1))[:, None]
        else:  # rotated orthorhombic
            cell = np.diag(rng.uniform(1.5, 6, 3)) @ np.linalg.qr(rng.normal(size=(3, 3)))[0].T
        ratio = abs(np.linalg.det(cell)) / np.linalg.norm(cell, axis=1).prod()
        if ratio > 0.15 and (style != 1 or ratio < 0.5):
            return cell


def random_cases(n_cases: int = 300, seed: int = 0) -> list[Case]:
    """The recipe of docs/neighbors.md ("Tests"): 1-12 atoms, skewed/rotated cells, random
    mixed pbc, positions in [-0.5, 1.5) fractional (unwrapped), cutoff 1-7 Å."""
    rng = np.random.default_rng(seed)
    cases = []
    for k in range(n_cases):
        cell = _random_cell(rng, k % 3)
        n = int(rng.integers(1, 13))
        pbc = rng.random(3) < 0.5
        positions = rng.uniform(-0.5, 1.5, (n, 3)) @ cell
        zero_rows = k % 7 == 0 and not pbc.all()
        if zero_rows:
            cell = cell * pbc[:, None]
        cases.append(Case(positions, cell, pbc, float(rng.uniform(1, 7)), zero_rows))
    return cases


@pytest.fixture(scope="session")
def pair_set():
    """``pair_set(i, j, S)``: the (i, j, S) triples of a list as a set of int tuples."""
    return _pair_set


@pytest.fixture(scope="session")
def cases() -> list[Case]:
    return random_cases()


@pytest.fixture(scope="session")
def ase_reference(cases) -> list[set[tuple]]:
    return [_ase_pairs(c) for c in cases]


@pytest.fixture(scope="session")
def batched_cases(cases) -> tuple:
    """All random cases with cutoff 4.5 Å as one batch: positions, cell, pbc, batch, offsets."""
    positions = torch.tensor(np.concatenate([c.positions for c in cases]))
    cell = torch.tensor(np.stack([c.cell for c in cases]))
    pbc = torch.tensor(np.stack([c.pbc for c in cases]))
    counts = [len(c.positions) for c in cases]
    batch = torch.repeat_interleave(torch.arange(len(cases)), torch.tensor(counts))
    return positions, cell, pbc, batch, np.concatenate([[0], np.cumsum(counts)]).tolist()

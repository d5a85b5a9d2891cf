"""Blow-up checks: each check fires alone, names its value, and the lowest code wins."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from ase.build import bulk

from mlip.md.guard import REASONS, BlowUpLimits, check_step, describe_failure
from mlip.md.state import state_from_atoms, volume

LIMITS = BlowUpLimits()
T_LIMIT = 5000.0


def _pair():
    """Two healthy 4-atom copper cells at rest (prev = new) with finite forces and energies."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    state = state_from_atoms([atoms, atoms.copy()])
    state = dataclasses.replace(state, forces=torch.ones_like(state.positions),
                                energy=torch.zeros(2, dtype=torch.float64),
                                min_distance=torch.full((2,), 2.5, dtype=torch.float64))
    return state, torch.zeros(2, dtype=torch.float64), volume(state.cell)


def _check(new, energy=None):
    prev, prev_energy, volume0 = _pair()
    new_energy = prev_energy if energy is None else energy
    return check_step(prev, new, prev_energy, new_energy, volume0, LIMITS, T_LIMIT)


def test_a_healthy_step_passes():
    state, _, _ = _pair()
    code, value = _check(dataclasses.replace(state, stress=torch.zeros(2, 3, 3,
                                                                       dtype=torch.float64)))
    assert code.tolist() == [0, 0] and value.tolist() == [0.0, 0.0]


def _broken(kind: str):
    state, _, _ = _pair()
    f = {f.name: getattr(state, f.name).clone() for f in dataclasses.fields(state)
         if isinstance(getattr(state, f.name), torch.Tensor)}
    energy = None
    if kind == "nan":
        f["forces"][5, 1] = float("nan")
    elif kind == "nan momenta":
        f["momenta"][6, 0] = float("nan")
    elif kind == "force":
        f["forces"][6] = torch.tensor([0.0, 60.0, 80.0])  # |F| = 100
    elif kind == "distance":
        f["min_distance"][1] = 0.3
    elif kind == "temperature":
        f["momenta"][4:] = 10.0
    elif kind == "jump":
        energy = torch.tensor([0.0, 0.4], dtype=torch.float64)  # 0.1 eV/atom
    elif kind == "moved":
        f["positions"][7, 2] += 0.75
    elif kind == "volume":
        f["cell"][1] = f["cell"][1] * 1.5  # volume × 3.375
    return dataclasses.replace(state, **f), energy


@pytest.mark.parametrize("kind, code, value", [
    ("nan", 1, 0.0), ("nan momenta", 1, 0.0), ("force", 2, 100.0), ("distance", 3, 0.3),
    ("jump", 5, 0.1), ("moved", 6, 0.75), ("volume", 7, 2.375)])
def test_each_check_stops_only_the_broken_system(kind, code, value):
    new, energy = _broken(kind)
    codes, values = _check(new, energy)
    assert codes.tolist() == [0, code]
    assert values[0] == 0.0 and values[1].item() == pytest.approx(value, rel=1e-12)
    message = describe_failure(1, 12, code, values[1].item(), LIMITS, T_LIMIT)
    assert message.startswith(f"system 1 stopped at step 12: {REASONS[code][0]}")


def test_temperature_runaway_and_lowest_code_wins():
    new, _ = _broken("temperature")
    codes, values = _check(new)
    assert codes.tolist() == [0, 4] and values[1] > T_LIMIT
    both = dataclasses.replace(new, forces=new.forces.clone().index_fill_(0, torch.tensor([5]),
                                                                          float("inf")))
    assert _check(both)[0].tolist() == [0, 1]  # non-finite (1) beats temperature (4)

"""The compiled CPU screen of the blow-up checks agrees with the torch checks, system by system."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule

from mlip.md.guard import BlowUpLimits, check_step, check_step_torch, healthy_cpu
from mlip.md.state import MDState, maxwell_boltzmann_momenta, state_from_atoms, volume

LIMITS = BlowUpLimits()
T_LIMIT = 5000.0
F64 = dict(dtype=torch.float64)
#: system index → structure: two molecules, a single atom and two periodic cells
STRUCTURES = [molecule("CH4"), bulk("Cu", "fcc", a=3.61, cubic=True), Atoms("Ar"),
              molecule("H2O"), bulk("Si", "diamond", a=5.43)]
PERIODIC = [1, 4]


@dataclasses.dataclass
class Step:
    """The arguments of :func:`check_step` for one step of a batch."""

    prev: MDState
    new: MDState
    prev_energy: torch.Tensor
    new_energy: torch.Tensor
    volume0: torch.Tensor

    def args(self, limits: BlowUpLimits = LIMITS, t_limit: float = T_LIMIT) -> tuple:
        return (self.prev, self.new, self.prev_energy, self.new_energy, self.volume0, limits,
                t_limit)


def _step(seed: int, stress: str, cell: str) -> Step:
    """A healthy step of the five systems at 300 to 430 K.

    Args:
        stress: ``shared`` (not computed: ``stress_computed`` False), ``finite`` or ``nan``
            (new stress all NaN).
        cell: ``shared`` or ``changed`` (periodic cells scaled by 1 %).
    """
    gen = torch.Generator().manual_seed(seed)
    state = state_from_atoms(STRUCTURES)
    n_graphs, n_atoms = state.n_graphs, state.positions.shape[0]
    momenta = maxwell_boltzmann_momenta(state.masses, state.batch, n_graphs, 300.0, seed)
    prev = dataclasses.replace(
        state, momenta=momenta, forces=torch.randn(n_atoms, 3, generator=gen, **F64),
        energy=torch.randn(n_graphs, generator=gen, **F64),
        stress=torch.randn(n_graphs, 3, 3, generator=gen, **F64) * 1e-3, stress_computed=True,
        min_distance=1.0 + torch.rand(n_graphs, generator=gen, **F64))
    new_stress = {"shared": prev.stress,
                  "finite": torch.randn(n_graphs, 3, 3, generator=gen, **F64) * 1e-3,
                  "nan": torch.full((n_graphs, 3, 3), float("nan"), **F64)}[stress]
    heat = 1.0 + 0.2 * torch.rand(n_graphs, 1, generator=gen, **F64)  # momentum factor
    new = dataclasses.replace(
        prev, positions=prev.positions + 0.01 * torch.randn(n_atoms, 3, generator=gen, **F64),
        momenta=momenta * heat[state.batch],
        forces=torch.randn(n_atoms, 3, generator=gen, **F64),
        energy=prev.energy + 1e-3, stress=new_stress, stress_computed=stress != "shared",
        cell=prev.cell * 1.01 if cell == "changed" else prev.cell, step=prev.step + 1)
    prev_energy = torch.randn(n_graphs, generator=gen, **F64)
    new_energy = prev_energy + 1e-3 * torch.randn(n_graphs, generator=gen, **F64)
    return Step(prev, new, prev_energy, new_energy, volume(prev.cell))


def _break(step: Step, kind: str, g: int) -> Step:
    """The step with check ``kind`` violated in system ``g`` only (the fields it leaves alone
    keep their identity, so a shared stress or cell stays shared)."""
    new, f = step.new, {}

    def edit(name: str) -> torch.Tensor:
        if name not in f:
            f[name] = getattr(new, name).clone()
        return f[name]

    first, n = int(new.first_atom[g]), int(new.n_atoms[g])
    new_energy = step.new_energy.clone()
    if kind == "force":
        edit("forces")[first] = torch.tensor([0.0, 30.0, 45.0])
    elif kind == "moved":
        edit("positions")[first, 1] += 0.6
    elif kind == "distance":
        edit("min_distance")[g] = 0.3
    elif kind == "temperature":
        edit("momenta")[first:first + n] *= 10.0
    elif kind == "jump":
        new_energy[g] += 0.06 * n
    elif kind == "volume":
        edit("cell")[g] *= 1.2
    elif kind == "stress_partly_nan":
        edit("stress")[g, 0, 1] = float("nan")
    elif kind == "stress_inf":
        edit("stress")[g, 2, 2] = float("inf")
    elif kind == "nan_position":
        edit("positions")[first, 0] = float("nan")
    elif kind in ("nan_force", "inf_force"):
        edit("forces")[first, 2] = float(kind[:3])
    elif kind in ("nan_energy", "inf_energy"):
        new_energy[g] = float(kind[:3])
    else:
        raise ValueError(kind)
    return dataclasses.replace(step, new=dataclasses.replace(new, **f), new_energy=new_energy)


def _assert_agree(step: Step, limits: BlowUpLimits = LIMITS, t_limit: float = T_LIMIT
                  ) -> torch.Tensor:
    """Assert that the screen and the torch codes agree; return the codes."""
    args = step.args(limits, t_limit)
    code, value = check_step_torch(*args)
    flags = healthy_cpu(*args)
    assert flags.dtype == np.bool_ and flags.shape == (step.new.n_graphs,)
    assert flags.tolist() == (code == 0).tolist()
    fast_code, fast_value = check_step(*args)
    assert fast_code.dtype == torch.long and fast_value.dtype == torch.float64
    assert torch.equal(fast_code, code) and torch.equal(fast_value, value)
    return code


@pytest.mark.parametrize("stress", ["shared", "finite", "nan"])
@pytest.mark.parametrize("cell", ["shared", "changed"])
def test_healthy_steps_pass_both(stress, cell):
    for seed in range(3):
        assert _assert_agree(_step(seed, stress, cell)).tolist() == [0] * len(STRUCTURES)


KINDS = ["force", "moved", "distance", "temperature", "jump", "nan_position", "nan_force",
         "inf_force", "nan_energy", "inf_energy"]


@pytest.mark.parametrize("kind", KINDS + ["volume", "stress_partly_nan", "stress_inf"])
@pytest.mark.parametrize("stress", ["shared", "finite"])
def test_each_violation_fails_only_its_system_in_both(kind, stress):
    if kind.startswith("stress") and stress == "shared":
        pytest.skip("a shared stress is not checked")
    systems = PERIODIC if kind == "volume" else range(len(STRUCTURES))
    for g in systems:
        step = _break(_step(g, stress, "changed" if kind == "volume" else "shared"), kind, g)
        code = _assert_agree(step)
        assert code[g] > 0 and int(code.count_nonzero()) == 1


def test_screen_is_stricter_on_nan_temperature_and_distance():
    """A NaN momentum or shortest distance passes the torch codes: the screen sends the step
    there, and check_step returns the torch answer."""
    step = _step(0, "shared", "shared")
    momenta, distance = step.new.momenta.clone(), step.new.min_distance.clone()
    momenta[0, 0] = float("nan")
    distance[3] = float("nan")
    step.new = dataclasses.replace(step.new, momenta=momenta, min_distance=distance)
    flags = healthy_cpu(*step.args())
    assert flags.tolist() == [False, True, True, False, True]
    code, value = check_step(*step.args())
    torch_code, torch_value = check_step_torch(*step.args())
    assert torch.equal(code, torch_code) and torch.equal(value, torch_value)


def test_a_value_at_its_limit_is_left_to_torch():
    """|F| exactly at the limit fails the screen's margin; the torch check passes it."""
    step = _step(1, "shared", "shared")
    forces = step.new.forces.clone()
    forces[0] = torch.tensor([0.0, 30.0, 40.0])  # |F| = 50 eV/Å = the limit
    step.new = dataclasses.replace(step.new, forces=forces)
    assert healthy_cpu(*step.args()).tolist() == [False, True, True, True, True]
    code, value = check_step(*step.args())
    assert code.tolist() == [0] * 5 and value.tolist() == [0.0] * 5


@pytest.mark.parametrize("seed", range(20))
def test_random_limits_agree(seed):
    """Limits drawn around the step's own values fail a random subset of checks and systems."""
    rng = np.random.default_rng(seed)
    step = _step(seed, ["shared", "finite", "nan"][seed % 3], ["shared", "changed"][seed % 2])
    limits = BlowUpLimits(max_force=rng.uniform(2.2, 4.0), min_distance=rng.uniform(0.8, 1.3),
                          max_displacement=rng.uniform(0.022, 0.04),
                          max_energy_jump=rng.uniform(2e-4, 2e-3),
                          max_volume_change=rng.uniform(0.02, 0.1))
    _assert_agree(step, limits, rng.uniform(300.0, 700.0))


@pytest.mark.parametrize("kind", ["inf_force", "inf_energy", "nan_energy", "nan_position"])
def test_non_finite_values_fail_with_every_limit_off(kind):
    off = BlowUpLimits(max_force=float("inf"), min_distance=0.0,
                       max_displacement=float("inf"), max_energy_jump=float("inf"),
                       max_volume_change=float("inf"))
    code = _assert_agree(_break(_step(0, "finite", "changed"), kind, 2), off, float("inf"))
    assert code.tolist() == [0, 0, 1, 0, 0]

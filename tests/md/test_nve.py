"""Velocity Verlet: step-for-step parity with ASE, dt² scaling, batch independence."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from ase import units
from ase.md.verlet import VelocityVerlet

from mlip.calculators import MLIPCalculator
from mlip.md.conservation import nve_conservation
from mlip.md.force_field import ForceField
from mlip.md.nve import nve_init, nve_step
from mlip.md.state import maxwell_boltzmann_momenta, state_from_atoms, temperature_K


def _thermalised(atoms, temperature, seed=0):
    state = state_from_atoms([atoms])
    momenta = maxwell_boltzmann_momenta(state.masses, state.batch, 1, temperature, seed)
    atoms.set_momenta(momenta.numpy())
    return atoms


def test_maxwell_boltzmann_hits_the_temperature_with_zero_momentum(cu32):
    state = state_from_atoms([cu32, cu32[:5]])
    momenta = maxwell_boltzmann_momenta(state.masses, state.batch, 2, 450.0, seed=3)
    state = dataclasses.replace(state, momenta=momenta)
    np.testing.assert_allclose(temperature_K(state).numpy(), [450.0, 450.0], rtol=1e-12)
    assert momenta[:32].sum(dim=0).abs().max() < 1e-10


def test_nve_matches_ase_velocity_verlet_for_100_steps(lj_model, cu32):
    atoms = _thermalised(cu32, 600.0)
    ours = state_from_atoms([atoms])
    force_field = ForceField(lj_model, skin=0.2)
    ours = nve_init(ours, force_field)
    atoms.calc = MLIPCalculator(lj_model, skin=0.2)
    dynamics = VelocityVerlet(atoms, timestep=2.0 * units.fs)
    for _ in range(100):
        ours = nve_step(ours, force_field, dt=2.0 * units.fs)
        dynamics.run(1)
        np.testing.assert_allclose(ours.positions.numpy(), atoms.positions, rtol=0, atol=1e-8)
    np.testing.assert_allclose(ours.momenta.numpy(), atoms.get_momenta(), rtol=0, atol=1e-8)
    assert ours.step == 100
    assert force_field.neighbors.n_rebuilds >= 2  # atoms moved enough to exercise the skin


def test_energy_fluctuation_scales_as_dt_squared(lj_model, cu32):
    reports = [nve_conservation(lj_model, cu32, timestep_fs=dt, duration_fs=200.0,
                                temperature_K=300.0, seed=1) for dt in (4.0, 2.0)]
    ratio = reports[0].fluctuation_meV_per_atom / reports[1].fluctuation_meV_per_atom
    assert 3.5 < ratio < 4.5, ratio
    assert abs(reports[1].drift_meV_per_atom_ps) < 0.1
    assert reports[1].drift_ratio < 1.0


@pytest.mark.slow
def test_long_nve_drift_is_small(lj_model, cu32):
    report = nve_conservation(lj_model, cu32, timestep_fs=1.0, duration_fs=5000.0,
                              temperature_K=300.0, equilibration_fs=200.0)
    assert abs(report.drift_meV_per_atom_ps) < 0.1


def test_batch_equals_single_systems(lj_model, cu32):
    other = cu32.copy()
    other.rattle(0.05, seed=7)
    systems = [_thermalised(cu32.copy(), 500.0, 1), _thermalised(other, 300.0, 2)]
    force_field = ForceField(lj_model)
    batched = nve_init(state_from_atoms(systems), force_field)
    singles = [nve_init(state_from_atoms([a]), ForceField(lj_model)) for a in systems]
    for _ in range(10):
        batched = nve_step(batched, force_field, dt=2.0 * units.fs)
        singles = [nve_step(s, ForceField(lj_model), dt=2.0 * units.fs) for s in singles]
    expected = torch.cat([s.positions for s in singles])
    torch.testing.assert_close(batched.positions, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("max_atoms", [None, 40, 1])
def test_model_evaluated_in_groups_of_systems_gives_the_same_run(lj_model, cu32, max_atoms):
    """max_atoms_per_call splits the model call by whole systems (40: {32, 5}, {32}; 1: one
    system per call) without changing any system's energy, forces, stress or trajectory."""
    small = cu32[:5]
    small.pbc = False
    other = cu32.copy()
    other.rattle(0.05, seed=7)
    systems = [_thermalised(cu32.copy(), 500.0, 1), small, _thermalised(other, 300.0, 2)]
    reference = ForceField(lj_model, compute_stress=True)
    grouped = ForceField(lj_model, compute_stress=True, max_atoms_per_call=max_atoms)
    state = state_from_atoms(systems)
    expected, got = reference(state), grouped(state)
    for name in ("energy", "forces", "stress", "min_distance"):
        torch.testing.assert_close(getattr(got, name), getattr(expected, name), rtol=0,
                                   atol=1e-12, equal_nan=True)
    groups = grouped._group_bounds(state)
    assert len(groups) == {None: 1, 40: 2, 1: 3}[max_atoms]
    a, b = nve_init(state, reference), nve_init(state, grouped)
    for _ in range(5):
        a, b = nve_step(a, reference, dt=2.0 * units.fs), nve_step(b, grouped, dt=2.0 * units.fs)
    torch.testing.assert_close(b.positions, a.positions, rtol=0, atol=1e-12)


def test_auto_group_size_times_the_choices_and_keeps_the_results(lj_model, cu32, monkeypatch,
                                                                  caplog):
    """'auto' times the whole batch and each smaller group size on the first call, keeps the
    fastest and gives the same forces; one system, or a batch below every group size, is
    never split."""
    import mlip.md.force_field as force_field_module

    monkeypatch.setattr(force_field_module, "AUTO_GROUP_SIZES", (40, 10))
    systems = [_thermalised(cu32.copy(), 300.0, seed) for seed in range(3)]  # 3 x 32 atoms
    state = state_from_atoms(systems)
    expected = ForceField(lj_model, compute_stress=True)(state)
    auto = ForceField(lj_model, compute_stress=True, max_atoms_per_call="auto")
    with caplog.at_level("INFO", logger="mlip.md.force_field"):
        got = auto(state)
    assert auto.group_size in (None, 40, 10) and not auto.group_size_pending
    assert auto.max_atoms_per_call == "auto"  # the request stays apart from the choice
    assert "all atoms" in caplog.text and "40 atoms" in caplog.text and "10 atoms" in caplog.text
    for name in ("energy", "forces", "stress", "min_distance"):
        torch.testing.assert_close(getattr(got, name), getattr(expected, name), rtol=0,
                                   atol=1e-12, equal_nan=True)
    single = ForceField(lj_model, max_atoms_per_call="auto")
    assert single.group_size_pending and single.group_size is None
    single(state_from_atoms(systems[:1]))
    assert single.group_size is None and not single.group_size_pending
    assert single.max_atoms_per_call == "auto"
    exact = ForceField(lj_model, max_atoms_per_call="auto", deterministic=True)
    assert not exact.group_size_pending and exact.group_size is None  # 'auto' means all
    assert ForceField(lj_model, max_atoms_per_call=40).group_size == 40


@pytest.mark.parametrize("bad", [0, -3, "fast", 2.5])
def test_bad_group_size_is_refused(lj_model, bad):
    from mlip.errors import ConfigError

    with pytest.raises(ConfigError, match="max_atoms_per_call must be"):
        ForceField(lj_model, max_atoms_per_call=bad)

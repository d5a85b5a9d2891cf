"""Thermostats: the mean kinetic temperature (and its variance) match the canonical values
within a stated number of standard errors (from the independent systems of a batch)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from ase.build import bulk

from mlip.md.ensembles import make_integrator
from mlip.md.force_field import ForceField
from mlip.md.state import maxwell_boltzmann_momenta, state_from_atoms, temperature_K
from mlip.models import build

TARGET_K = 300.0
N_SIGMA = 4.0  # the allowed deviation, in standard errors (two-sided p ≈ 6e-5)


@pytest.fixture(scope="module")
def short_lj():
    """The LJ 'copper' with a 4 Å cutoff (first and second shells): half the edges."""
    return build("lennard_jones", species=[29], cutoff=4.0, epsilon=0.4, sigma=2.3).eval()


def _batch(lj_model, n_systems=16):
    """16 independent 16-atom crystals: enough systems for a reliable standard error."""
    crystals = []
    for k in range(n_systems):
        atoms = bulk("Cu", "fcc", a=3.56, cubic=True).repeat((2, 2, 1))
        atoms.rattle(0.02, seed=k)
        crystals.append(atoms)
    state = state_from_atoms(crystals)
    momenta = maxwell_boltzmann_momenta(state.masses, state.batch, n_systems, TARGET_K, seed=5)
    return dataclasses.replace(state, momenta=momenta), ForceField(lj_model, skin=0.5)


def _run(integrator, state, force_field, steps, record=None):
    state = integrator.init(state, force_field)
    temps, extra = [], []
    for _ in range(steps):
        state = integrator.step(state, force_field)
        temps.append(temperature_K(state))
        if record is not None:
            extra.append(record(state))
    return state, torch.stack(temps).numpy(), extra


def _mean_and_error(samples: np.ndarray) -> tuple[float, float]:
    """Mean over time and systems, and its standard error from the per-system means.

    The systems of a batch are independent, so their time averages are independent samples
    whatever the autocorrelation time; samples is (n_steps, n_systems).
    """
    per_system = samples.mean(axis=0)
    return float(per_system.mean()), float(per_system.std(ddof=1) / np.sqrt(per_system.size))


def _check_canonical(temps: np.ndarray, n_atoms: int, resolution: float) -> None:
    """Mean T and var(T) within N_SIGMA standard errors, which must be below ``resolution``·T."""
    mean, error = _mean_and_error(temps)
    assert error < resolution * TARGET_K, error  # the run is long enough to be meaningful
    assert abs(mean - TARGET_K) < N_SIGMA * error, (mean, error)
    # canonical kinetic-energy fluctuations: var(T) = 2 T² / (3N)
    var, var_error = _mean_and_error((temps - TARGET_K) ** 2)
    expected = 2.0 * TARGET_K**2 / (3 * n_atoms)
    assert abs(var - expected) < N_SIGMA * var_error, (var, expected, var_error)


@pytest.mark.parametrize("steps, resolution", [
    (1000, 0.015),  # 4 SE ≤ 6 % of T
    pytest.param(8000, 0.005, marks=pytest.mark.slow),  # 4 SE ≤ 2 % of T
])
def test_langevin_samples_the_canonical_temperature(short_lj, steps, resolution):
    state, force_field = _batch(short_lj)
    integrator = make_integrator("nvt_langevin", timestep_fs=2.0, temperature_K=TARGET_K,
                                 friction_per_fs=0.02, seed=11)
    _, temps, _ = _run(integrator, state, force_field, steps)
    _check_canonical(temps[150:], 16, resolution)


@pytest.mark.parametrize("steps, resolution", [
    (1500, 0.015),
    pytest.param(10000, 0.005, marks=pytest.mark.slow),
])
def test_nose_hoover_chain_samples_the_canonical_temperature(short_lj, steps, resolution):
    state, force_field = _batch(short_lj)
    integrator = make_integrator("nvt_nhc", timestep_fs=2.0, temperature_K=TARGET_K,
                                 damping_fs=40.0)
    conserved = integrator.conserved
    final, temps, econs = _run(integrator, state, force_field, steps, record=conserved)
    _check_canonical(temps[300:], 16, resolution)
    econs = torch.stack(econs).numpy() / 16  # (steps, n_systems) eV/atom
    time_ps = np.arange(steps) * 2e-3
    drift = np.polyfit(time_ps, econs, 1)[0] * 1e3  # (n_systems,) meV/atom/ps
    assert np.abs(drift).max() < 0.05, drift  # the extended energy is conserved
    assert np.abs(econs - econs[0]).max() < 1e-3  # and fluctuates by < 1 meV/atom
    assert final.eta_velocity.abs().max() > 0  # the chain actually acted


@pytest.mark.parametrize("ensemble", ["nvt_langevin", "npt_crescale"])
def test_thermostat_noise_does_not_depend_on_the_rest_of_the_batch(short_lj, ensemble):
    """System g of a batch seeded s follows the same trajectory as that system run alone
    with seed s + g (its own noise stream), and a different seed gives a different one."""
    state, force_field = _batch(short_lj, n_systems=3)
    per_atom = [f.name for f in dataclasses.fields(state) if f.metadata.get("per") == "atom"]
    alone = dataclasses.replace(
        state, **{name: getattr(state, name)[state.batch == 2] for name in per_atom},
        layout=state.layout.systems(2, 3), cell=state.cell[2:], pbc=state.pbc[2:],
        energy=state.energy[2:], stress=state.stress[2:], min_distance=state.min_distance[2:])

    def positions(start, seed):
        integrator = make_integrator(ensemble, timestep_fs=2.0, temperature_K=TARGET_K,
                                     friction_per_fs=0.05, compressibility_per_GPa=0.01,
                                     barostat_time_fs=50.0, seed=seed)
        force_field = ForceField(short_lj, skin=0.5, compute_stress=integrator.needs_stress)
        final, _, _ = _run(integrator, start, force_field, 30)
        return final.positions[-16:], final.cell[-1]

    batched, cell_batched = positions(state, 7)
    single, cell_single = positions(alone, 9)
    torch.testing.assert_close(single, batched, rtol=0, atol=1e-10)
    torch.testing.assert_close(cell_single, cell_batched, rtol=0, atol=1e-12)
    other, _ = positions(alone, 8)
    assert (other - single).abs().max() > 1e-4

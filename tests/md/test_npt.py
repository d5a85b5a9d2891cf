"""C-rescale barostat: the mean pressure equals the target within its standard error."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from ase.build import bulk

from mlip.errors import ConfigError
from mlip.md.ensembles import make_integrator
from mlip.md.force_field import ForceField
from mlip.md.state import (
    instantaneous_pressure,
    maxwell_boltzmann_momenta,
    state_from_atoms,
    volume,
)
from mlip.models import build
from mlip.units import GPa

N_SIGMA = 4.0
TARGET_GPA = 1.0


@pytest.fixture(scope="module")
def stiff_lj():
    """LJ 'copper' with a 4 Å cutoff: a ≈ 3.553 Å at 0 K, bulk modulus ≈ 370 GPa."""
    return build("lennard_jones", species=[29], cutoff=4.0, epsilon=0.4, sigma=2.3).eval()


def _batch(model, n_systems=8, a=3.60):
    crystals = []
    for k in range(n_systems):
        atoms = bulk("Cu", "fcc", a=a, cubic=True).repeat(2)
        atoms.rattle(0.02, seed=k)
        crystals.append(atoms)
    state = state_from_atoms(crystals)
    momenta = maxwell_boltzmann_momenta(state.masses, state.batch, n_systems, 300.0, seed=2)
    return dataclasses.replace(state, momenta=momenta), ForceField(model, skin=0.5,
                                                                     compute_stress=True)


def _mean_and_error(samples: np.ndarray) -> tuple[float, float]:
    """Mean over time and systems, and its standard error from the per-system means.

    The systems of a batch are independent, so their time averages are independent samples
    whatever the autocorrelation time; samples is (n_steps, n_systems).
    """
    per_system = samples.mean(axis=0)
    return float(per_system.mean()), float(per_system.std(ddof=1) / np.sqrt(per_system.size))


def _pressures(integrator, state, force_field, steps):
    state = integrator.init(state, force_field)
    volume0 = volume(state.cell)
    record = []
    for _ in range(steps):
        state = integrator.step(state, force_field)
        record.append(torch.diagonal(instantaneous_pressure(state), dim1=1, dim2=2) / GPa)
    return state, volume0, torch.stack(record).numpy()  # (steps, n_systems, 3) GPa


@pytest.mark.parametrize("anisotropic", [False, True])
def test_crescale_mean_pressure_matches_the_target(stiff_lj, anisotropic):
    state, force_field = _batch(stiff_lj)
    integrator = make_integrator(
        "npt_crescale", timestep_fs=2.0, temperature_K=300.0, pressure_GPa=TARGET_GPA,
        friction_per_fs=0.02, barostat_time_fs=100.0, compressibility_per_GPa=1 / 370.0,
        anisotropic=anisotropic, seed=4)
    final, volume0, pressure = _pressures(integrator, state, force_field, 1200)
    production = pressure[400:]
    mean, error = _mean_and_error(production.mean(-1))  # scalar pressure
    assert error < 0.35, error  # resolves a third of a GPa
    assert abs(mean - TARGET_GPA) < N_SIGMA * error, (mean, error)
    if anisotropic:  # every axis is driven to the target on its own
        for axis in range(3):
            mean, error = _mean_and_error(production[:, :, axis])
            assert abs(mean - TARGET_GPA) < N_SIGMA * error, (axis, mean, error)
    # the starting cell (a = 3.60 Å) is under tension, so the barostat must have shrunk it
    assert (volume(final.cell) < volume0).all()
    cell = final.cell
    off_diagonal = cell - torch.diag_embed(torch.diagonal(cell, dim1=1, dim2=2))
    assert off_diagonal.abs().max() < 1e-12  # orthorhombic cells stay orthorhombic


def test_crescale_needs_full_periodicity(stiff_lj):
    slab = bulk("Cu", "fcc", a=3.6, cubic=True)
    slab.pbc = [True, True, False]
    state = state_from_atoms([bulk("Cu", "fcc", a=3.6, cubic=True), slab])
    integrator = make_integrator("npt_crescale", timestep_fs=1.0, temperature_K=300.0)
    with pytest.raises(ConfigError, match=r"system 1 has pbc=\[True, True, False\]"):
        integrator.init(state, ForceField(stiff_lj, compute_stress=True))


def test_make_integrator_rejects_bad_settings():
    with pytest.raises(ConfigError, match="unknown ensemble 'npt_berendsen'"):
        make_integrator("npt_berendsen", timestep_fs=1.0, temperature_K=300.0)
    with pytest.raises(ConfigError, match=r"temperature_K = None is not allowed for ensemble "
                       r"'nvt_langevin': a finite number > 0 \(K\)"):
        make_integrator("nvt_langevin", timestep_fs=1.0)
    with pytest.raises(ConfigError, match=r"timestep_fs = -1\.0 is not allowed .*> 0"):
        make_integrator("nve", timestep_fs=-1.0)

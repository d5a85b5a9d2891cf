"""Per-system streams: system g of a batch runs like the same system alone with seed + g."""

from __future__ import annotations

import torch
from ase.build import bulk

from mlip.md import make_integrator, run_md
from mlip.md.noise import system_normals
from mlip.md.state import maxwell_boltzmann_momenta, state_from_atoms, temperature_K


def _crystals():
    out = []
    for k, repeat in enumerate([(2, 1, 1), (1, 1, 1), (2, 2, 1)]):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(repeat)
        atoms.rattle(0.02, seed=k)
        out.append(atoms)
    return out


def test_initial_momenta_of_a_system_do_not_depend_on_the_batch():
    crystals = _crystals()
    batch = state_from_atoms(crystals)
    momenta = maxwell_boltzmann_momenta(batch.masses, batch.batch, 3, 300.0, seed=7)
    for g, atoms in enumerate(crystals):
        alone = state_from_atoms([atoms])
        own = maxwell_boltzmann_momenta(alone.masses, alone.batch, 1, 300.0, seed=7 + g)
        assert torch.equal(momenta[batch.batch == g], own)
    temps = temperature_K(batch.replace(momenta=momenta))
    torch.testing.assert_close(temps, torch.full_like(temps, 300.0), rtol=1e-12, atol=0.0)


def test_langevin_system_in_a_batch_runs_like_alone_with_seed_plus_g(lj_model):
    crystals = _crystals()
    integrator = make_integrator("nvt_langevin", timestep_fs=2.0, temperature_K=300.0, seed=4)
    batch = run_md(lj_model, crystals, integrator, steps=20, initial_temperature_K=300.0, seed=4)
    for g in (1, 2):
        own = make_integrator("nvt_langevin", timestep_fs=2.0, temperature_K=300.0, seed=4 + g)
        alone = run_md(lj_model, [crystals[g]], own, steps=20, initial_temperature_K=300.0,
                       seed=4 + g)
        torch.testing.assert_close(batch.state.positions[batch.state.batch == g],
                                   alone.state.positions, rtol=0.0, atol=1e-10)


def test_streams_beyond_the_first_two_are_valid_int64_keys():
    """Stream numbers multiply a 64-bit constant: the product must wrap, not overflow."""
    rows = torch.arange(20000)
    draws = system_normals(torch.tensor([3]), 5, 2, torch.zeros_like(rows), rows, 3,
                           torch.float64)
    assert abs(float(draws.mean())) < 0.02 and abs(float(draws.std()) - 1.0) < 0.02

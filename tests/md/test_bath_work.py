"""Econs includes the energy exchanged with the bath: in Langevin and C-rescale NPT it changes
only by integration error (∝ dt²), while E_tot (+ P₀V) follows the bath."""

from __future__ import annotations

import pytest
import torch
from ase.build import bulk

from mlip.md import make_integrator
from mlip.md.force_field import ForceField
from mlip.md.npt import enthalpy
from mlip.md.state import state_from_atoms
from mlip.units import GPa

SETTINGS = {
    "nvt_langevin": dict(friction_per_fs=0.05),
    "npt_crescale": dict(friction_per_fs=0.05, pressure_GPa=5.0, barostat_time_fs=100.0,
                         compressibility_per_GPa=0.05),
}


def _ranges(lj_model, ensemble: str, timestep_fs: float) -> tuple[float, float]:
    """Heat a 32-atom crystal from 0 K to 600 K for 200 fs; (range of Econs, range of
    E_tot + P₀V), eV."""
    settings = SETTINGS[ensemble]
    integrator = make_integrator(ensemble, timestep_fs=timestep_fs, temperature_K=600.0, seed=1,
                                 **settings)
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.rattle(0.02, seed=1)
    force_field = ForceField(lj_model, skin=0.5, compute_stress=True)
    state = integrator.init(state_from_atoms([atoms]), force_field)
    pressure = settings.get("pressure_GPa", 0.0) * GPa
    conserved, reference = [integrator.conserved(state)], [enthalpy(state, pressure)]
    for _ in range(round(200.0 / timestep_fs)):
        state = integrator.step(state, force_field)
        conserved.append(integrator.conserved(state))
        reference.append(enthalpy(state, pressure))
    conserved, reference = torch.cat(conserved), torch.cat(reference)
    if ensemble == "npt_crescale":  # the barostat did work: the cell shrank
        assert torch.linalg.det(state.cell).item() < 0.99 * atoms.get_volume()
    return float(conserved.max() - conserved.min()), float(reference.max() - reference.min())


@pytest.mark.parametrize("ensemble", sorted(SETTINGS))
def test_econs_changes_by_integration_error_only(lj_model, ensemble):
    coarse, heated = _ranges(lj_model, ensemble, 2.0)
    fine, _ = _ranges(lj_model, ensemble, 1.0)
    assert heated > 3.0  # E_tot (+ P₀V) follows the bath by eV
    assert coarse < 5e-3 * heated
    assert fine < 0.45 * coarse  # ∝ dt²: halving dt divides it by about 4

"""NVE energy-conservation metrics (docs/simulation.md, "Energy conservation check") for any
potential.

Used by the tests (with the analytic Lennard-Jones model now, a trained model later) and
available to users to vet a potential before production MD.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms

from mlip.md.force_field import ForceField
from mlip.md.nve import nve_init, nve_step, total_energy
from mlip.md.state import kinetic_energy, maxwell_boltzmann_momenta, state_from_atoms
from mlip.models import Potential
from mlip.models.loading import resolve_model
from mlip.units import fs

__all__ = ["ConservationReport", "nve_conservation"]


@dataclass(frozen=True)
class ConservationReport:
    """Energy conservation of one NVE run.

    Attributes:
        drift_meV_per_atom_ps: least-squares slope of E_tot/N versus time.
        fluctuation_meV_per_atom: standard deviation of E_tot/N around that line.
        drift_ratio: |drift × duration| / std(E_kin) (mlipaudit's measure; < 1 is good).
        timestep_fs, duration_fs: the run.
        total_energy_per_atom: (n_samples,) eV, E_tot/N at every step.
    """

    drift_meV_per_atom_ps: float
    fluctuation_meV_per_atom: float
    drift_ratio: float
    timestep_fs: float
    duration_fs: float
    total_energy_per_atom: np.ndarray


def nve_conservation(model: Potential | str | os.PathLike, atoms: Atoms, *, timestep_fs: float,
                     duration_fs: float, temperature_K: float, seed: int = 0,
                     equilibration_fs: float = 0.0, skin: float = 1.0,
                     device: str | torch.device = "cpu") -> ConservationReport:
    """Run velocity-Verlet NVE from Maxwell–Boltzmann momenta and measure conservation.

    Args:
        model: a potential or checkpoint path (run it in float64 for meaningful numbers).
        atoms: the structure (``FixAtoms``/``FixCom`` honoured). timestep_fs: fs.
        duration_fs: measured length, fs.
        temperature_K: initial temperature, K. seed: momenta seed.
        equilibration_fs: NVE time discarded before measuring, fs.
        skin: neighbour-list skin, Å. device: torch device.
    """
    model = resolve_model(model, device=device)
    state = state_from_atoms([atoms], device)
    momenta = maxwell_boltzmann_momenta(state.masses, state.batch, 1, temperature_K, seed,
                                        state.constraints)
    force_field = ForceField(model, skin=skin)
    state = nve_init(state.replace(momenta=momenta), force_field)
    n_skip = round(equilibration_fs / timestep_fs)
    n_steps = round(duration_fs / timestep_fs)
    energies, kinetic = [], []
    for k in range(n_skip + n_steps + 1):
        if k >= n_skip:
            energies.append(total_energy(state))
            kinetic.append(kinetic_energy(state.momenta, state.masses, state.batch, 1))
        if k < n_skip + n_steps:
            state = nve_step(state, force_field, dt=timestep_fs * fs)
    per_atom = torch.cat(energies).cpu().numpy() / len(atoms)
    time_ps = np.arange(per_atom.shape[0]) * timestep_fs * 1e-3
    slope, intercept = np.polyfit(time_ps, per_atom, 1)
    residual = per_atom - (slope * time_ps + intercept)
    kin_std = float(torch.cat(kinetic).std()) / len(atoms)
    duration_ps = time_ps[-1]
    return ConservationReport(
        drift_meV_per_atom_ps=float(slope) * 1e3,
        fluctuation_meV_per_atom=float(residual.std()) * 1e3,
        drift_ratio=abs(float(slope) * duration_ps) / kin_std if kin_std > 0 else float("inf"),
        timestep_fs=timestep_fs, duration_fs=duration_fs, total_energy_per_atom=per_atom)

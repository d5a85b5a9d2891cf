"""Energy conservation of a trained potential on 3BPA (issue 7): NVE drift and dt² scaling.

Uses the small Facet potential shipped in ``mlip/data/bundled/facet_3bpa.pt`` (trained with
``mlip train facet`` on the bundled 3BPA set), evaluated in float64.
"""

from __future__ import annotations

from importlib import resources

import ase.io
import pytest
import torch

from mlip.md import nve_conservation, run_relax
from mlip.models import load_model


def bundled(name: str) -> str:
    return str(resources.files("mlip.data.bundled").joinpath(name))


@pytest.fixture(scope="module")
def trained():
    model = load_model(bundled("facet_3bpa.pt"), dtype=torch.float64)
    start = ase.io.read(bundled("3bpa_train_300K.xyz"), index=0)
    relaxed = run_relax(model, [start], fmax=0.05, steps=300).atoms[0]
    return model, relaxed


def test_fluctuation_scales_as_dt_squared(trained):
    """Halving dt divides the total-energy fluctuation by 3.5–4.5 (exact, smooth forces)."""
    model, atoms = trained
    coarse, fine = (nve_conservation(model, atoms, timestep_fs=dt, duration_fs=100.0,
                                     temperature_K=300.0, seed=1) for dt in (0.5, 0.25))
    ratio = coarse.fluctuation_meV_per_atom / fine.fluctuation_meV_per_atom
    assert 3.5 < ratio < 4.5, f"fluctuation ratio {ratio:.2f} (0.5 fs vs 0.25 fs)"


@pytest.mark.slow
def test_nve_drift_below_0p1_meV_per_atom_per_ps_over_5_ps(trained):
    """300 K, dt 0.5 fs, 5 ps: |drift| < 0.1 meV/atom/ps and drift ratio < 1."""
    model, atoms = trained
    report = nve_conservation(model, atoms, timestep_fs=0.5, duration_fs=5000.0,
                              temperature_K=300.0, seed=2)
    assert abs(report.drift_meV_per_atom_ps) < 0.1, report.drift_meV_per_atom_ps
    assert report.drift_ratio < 1.0, report.drift_ratio

"""The MD driver and relaxer on a CUDA device give the CPU's results and read the device once
per step (marked ``gpu``: skipped by default, run with ``pytest -m gpu`` on a CUDA machine)."""

from __future__ import annotations

import warnings

import pytest
import torch
from ase.build import bulk, molecule

from mlip.md import MDOutputs, make_integrator, run_md, run_relax
from mlip.models import build
from mlip.models.facet import FACET_PRESETS

pytestmark = pytest.mark.gpu


def _facet(device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build("facet", species=[1, 6, 8, 29], **FACET_PRESETS["facet-tiny"])
    return model.double().eval().to(device)


def _structures() -> list:
    """Two molecules and a rattled periodic 32-atom Cu cell."""
    copper = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    copper.rattle(0.05, seed=1)
    water, methanol = molecule("H2O"), molecule("CH3OH")
    return [water, methanol, copper]


@pytest.mark.parametrize("ensemble, extra", [("nve", {}),
                                             ("nvt_langevin", {"temperature_K": 300.0}),
                                             ("nvt_nhc", {"temperature_K": 300.0}),
                                             ("npt_crescale", {"temperature_K": 300.0,
                                                               "pressure_GPa": 1.0})])
def test_md_on_cuda_follows_the_cpu_run(ensemble, extra):
    structures = _structures()[-1:] if ensemble.startswith("npt") else _structures()
    finals = {}
    for device in ("cpu", "cuda"):
        integrator = make_integrator(ensemble, timestep_fs=0.5, **extra)
        result = run_md(_facet(device), structures, integrator, steps=20, device=device,
                        initial_temperature_K=300.0, seed=3)
        assert not result.failures
        finals[device] = result.state
    for name in ("positions", "momenta", "cell", "energy"):
        torch.testing.assert_close(getattr(finals["cuda"], name).cpu(),
                                   getattr(finals["cpu"], name), rtol=0, atol=1e-10,
                                   msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("relax_cell", [False, True])
def test_relaxation_on_cuda_reaches_the_cpu_energy(relax_cell):
    structures = _structures()[-1:] if relax_cell else _structures()
    energies = {device: run_relax(_facet(device), structures, fmax=0.01, relax_cell=relax_cell,
                                  steps=300, device=device).energy
                for device in ("cpu", "cuda")}
    torch.testing.assert_close(torch.tensor(energies["cuda"]), torch.tensor(energies["cpu"]),
                               rtol=0, atol=1e-8)


def test_an_md_step_on_cuda_waits_for_the_device_once():
    """Counted by torch's sync debug mode: one wait per step (the neighbour list's stale flags
    and pair count) plus the rebuilds and the log intervals."""
    model, steps, log_interval = _facet("cuda"), 60, 30
    integrator = make_integrator("nve", timestep_fs=0.5)
    run_md(model, _structures(), integrator, steps=2, device="cuda")  # warm-up
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = run_md(model, _structures(), integrator, steps=steps, device="cuda",
                            outputs=MDOutputs(log_interval=log_interval))
    finally:
        torch.cuda.set_sync_debug_mode(0)
    waits = sum("synchroniz" in str(w.message) for w in caught)
    rebuilds, logs = result.nl_builds, steps // log_interval
    assert steps <= waits <= steps + 20 * (rebuilds + logs + 1), (waits, rebuilds)

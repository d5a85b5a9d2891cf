"""The MD inner loop reads the device once per step: the neighbour list's stale flags and pair
count, together.

On a GPU every read of a device value (``bool(t)``, ``.item()``, ``.tolist()``, ``nonzero``,
``torch.equal``, ``bincount``) waits for the device. The operations are counted on the CPU with
a dispatch mode, so the test needs no GPU and fails when a per-step read creeps back in.
"""

from __future__ import annotations

import collections
import traceback

import pytest
import torch
from ase.build import bulk, molecule
from torch.utils._python_dispatch import TorchDispatchMode

from mlip.md import ForceField, make_integrator
from mlip.md.state import select_systems, state_from_atoms
from mlip.models import build
from mlip.models.facet import FACET_PRESETS
from mlip.neighbors import VerletList

HOST_READS = {"_local_scalar_dense", "nonzero", "equal", "bincount", "repeat_interleave",
              "unique", "_unique2", "masked_select", "is_nonzero"}


class HostReads(TorchDispatchMode):
    """Counts the operations that make the host wait for the device, by calling line."""

    def __init__(self) -> None:
        super().__init__()
        self.sites: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ in HOST_READS:
            ours = [f for f in traceback.extract_stack() if "/torch/" not in f.filename]
            self.sites[f"{func.overloadpacket.__name__} at {ours[-1].filename}:"
                       f"{ours[-1].lineno}"] += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("backend", ["torch", "auto"])  # the GPU path; the CPU path (numba)
def test_an_md_step_reads_the_device_once(backend):
    torch.manual_seed(0)
    model = build("facet", species=[1, 6, 8, 29], **FACET_PRESETS["facet-tiny"]).double().eval()
    copper = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    copper.rattle(0.02, seed=1)
    water = molecule("H2O")
    water.center(vacuum=3.0)
    state = state_from_atoms([copper, water])
    for ensemble in ("nve", "nvt_langevin"):
        integrator = make_integrator(ensemble, timestep_fs=0.5, temperature_K=300.0)
        force_field = ForceField(model, skin=1.0)
        force_field.neighbors = VerletList(model.cutoff, skin=1.0, backend=backend)
        current = integrator.init(state, force_field)
        current = integrator.step(current, force_field)  # first neighbour list, caches
        keep_all = torch.ones(current.n_graphs, dtype=torch.bool)
        steps = 10
        with HostReads() as reads:
            for _ in range(steps):  # the GPU path of the driver: step, then merge
                current = select_systems(keep_all, integrator.step(current, force_field),
                                         current)
        assert sum(reads.sites.values()) <= steps, (ensemble, dict(reads.sites))

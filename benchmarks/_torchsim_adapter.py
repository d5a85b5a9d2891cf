"""An mlip potential as a torch-sim (``torch-sim-atomistic`` 0.3.0) ``ModelInterface``.

Benchmark-only: lets torch-sim's integrators drive the very same mlip model that
``mlip.md.run_md`` drives. torch-sim's way is kept: the neighbour list is rebuilt at every call,
system by system, with ``torch_sim.neighbors.vesin_nl_ts`` (as its own MACE and Lennard-Jones
models do), and the model is called once on the whole batch. Runs in the interpreter of
``.venv-torchsim`` (see ``benchmarks/models.py: ensure_torchsim_venv``).
"""

from __future__ import annotations

import torch
import torch_sim as ts
from torch_sim.models.interface import ModelInterface
from torch_sim.neighbors import vesin_nl_ts

from mlip.graph import AtomicGraph
from mlip.models import Potential
from mlip.structures import Layout

__all__ = ["MlipModel"]


class MlipModel(ModelInterface):
    """torch-sim model wrapping an mlip :class:`~mlip.models.Potential` (eval mode).

    Args:
        model: the potential; its floating dtype is the simulation's dtype.
        compute_stress: also return the stress (eV/Å³, ASE sign), (n_systems, 3, 3).

    ``forward(state)`` returns ``energy`` (n_systems,) eV, ``forces`` (n_atoms, 3) eV/Å and,
    when asked, ``stress``, all detached, in the model's dtype (torch-sim's metal units are
    eV and Å, as mlip's).
    """

    def __init__(self, model: Potential, *, compute_stress: bool = False) -> None:
        super().__init__()
        self.model = model.eval()
        first = next(p for p in model.parameters() if p.is_floating_point())
        self._device, self._dtype = first.device, first.dtype
        self._compute_forces, self._compute_stress = True, compute_stress
        self._cutoff = torch.tensor(float(model.cutoff), dtype=torch.float64)

    def forward(self, state: ts.SimState | dict, **_: object) -> dict[str, torch.Tensor]:
        """Energy, forces (and stress) of every system of ``state``."""
        if isinstance(state, dict):
            state = ts.SimState(**state, masses=torch.ones_like(state["positions"]))
        positions, system_idx = state.positions, state.system_idx
        n_systems = state.n_systems
        n_atoms = torch.bincount(system_idx, minlength=n_systems)
        cells = state.row_vector_cell  # (n_systems, 3, 3), rows are lattice vectors
        edges, shifts, offset = [], [], 0
        for b, count in enumerate(n_atoms.tolist()):
            mapping, shift = vesin_nl_ts(positions=positions[offset:offset + count],
                                         cell=cells[b], pbc=state.pbc, cutoff=self._cutoff)
            edges.append(mapping + offset)
            shifts.append(shift)
            offset += count
        pbc = torch.full((n_systems, 3), bool(state.pbc), device=positions.device)
        graph = AtomicGraph(positions=positions, atomic_numbers=state.atomic_numbers,
                            cell=cells, pbc=pbc,
                            layout=Layout.from_tensors(n_atoms, state.atomic_numbers, pbc),
                            edge_index=torch.cat(edges, dim=1),
                            edge_shift=torch.cat(shifts).round().to(torch.long),
                            cutoff=float(self.model.cutoff))
        with torch.enable_grad():
            out = self.model(graph, compute_forces=True, compute_stress=self._compute_stress)
        results = {"energy": out.energy.detach(), "forces": out.forces.detach()}
        if self._compute_stress:
            results["stress"] = out.stress.detach()
        return results

"""Measured memory of a relaxation batch: :func:`measure_memory` fits
bytes ≈ a·atoms + b·edges + d·systems + c from probe calls of the model, and
:class:`MemoryModel` applies the fit to the admission of structures into a batch
(:mod:`mlip.md.inflight`).

What is measured:

* CUDA: the peak of ``torch.cuda.max_memory_allocated`` during one force call (neighbour list,
  graph, forward and backward) above what was allocated before it: everything the call holds
  at its peak. The caching allocator may *reserve* more than it allocates (fragmentation), so
  leave some headroom below the card's memory.
* CPU: torch keeps no peak statistics of host memory, so the probe counts the bytes of the
  tensors autograd saves for the backward (``torch.autograd.graph.saved_tensors_hooks``, each
  storage once) plus the outputs: the memory held between the forward and the backward, which
  is the part that grows with the batch. Temporaries of a single operation and the gradient
  buffers of the backward come on top (a lower bound of the true peak: the process's peak
  memory grew by 1.12-1.13x the estimate for facet-s and SevenNet-0 on batches of Si cells).

Both add the model's parameters and buffers (once, in the constant) and the optimiser state
(measured from the probe's state: its per-atom and per-system tensors, three times, since a
step holds the state before the move, the moved one and their merge).

The probes are the first structure, a copy expanded by 25 % (fewer edges per atom) and both
together in one batch: three calls with independent (atoms, edges), fitted by non-negative
least squares. A structure's edges are counted within the model's cutoff at its starting
positions (:func:`count_edges`); a relaxation changes them little.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from ase import Atoms

from mlip.md.force_field import ForceField
from mlip.md.relax import Optimizer
from mlip.md.state import MDState, state_from_atoms
from mlip.models import Potential
from mlip.neighbors import neighbor_list

__all__ = ["MemoryModel", "measure_memory", "count_edges", "state_bytes"]

#: Copies of the optimiser state alive during a step (before, moved, merged).
STATE_COPIES = 3
#: Expansion of the second probe (fewer edges per atom than the first).
PROBE_EXPANSION = 1.25


@dataclass(frozen=True)
class MemoryModel:
    """bytes ≈ per_atom·atoms + per_edge·edges + per_system·systems + constant.

    Attributes:
        per_atom, per_edge, per_system, constant: bytes.
        method: how the model's part was measured (``"cuda peak"`` or ``"saved tensors"``).
        probes: (atoms, edges, bytes) of each probe call.
    """

    per_atom: float
    per_edge: float
    per_system: float
    constant: float
    method: str
    probes: tuple[tuple[int, int, int], ...] = ()

    def estimate(self, atoms: int, edges: int, systems: int) -> float:
        """Estimated bytes of a batch of ``systems`` systems with these totals."""
        return (self.per_atom * atoms + self.per_edge * edges + self.per_system * systems
                + self.constant)

    def describe(self) -> str:
        """One line: the fitted costs."""
        return (f"memory model ({self.method}): {self.per_atom:.4g} B/atom + "
                f"{self.per_edge:.4g} B/edge + {self.per_system:.4g} B/system + "
                f"{self.constant / 2**20:.4g} MiB")


def count_edges(atoms: Atoms, cutoff: float) -> int:
    """Directed pairs closer than ``cutoff`` (Å) in ``atoms`` (what the model sees)."""
    i, _, _ = neighbor_list(torch.as_tensor(atoms.positions, dtype=torch.float64),
                            torch.as_tensor(np.asarray(atoms.cell), dtype=torch.float64),
                            torch.as_tensor(atoms.pbc), float(cutoff))
    return int(i.shape[0])


def state_bytes(state: MDState) -> tuple[float, float]:
    """Bytes per atom and per system of a state's per-atom and per-system tensors."""
    per_atom = per_system = 0
    for name, value in vars(state).items():
        if not isinstance(value, torch.Tensor):
            continue
        per = state.__dataclass_fields__[name].metadata.get("per")
        if per == "atom":
            per_atom += value.element_size() * value.numel()
        elif per == "system":
            per_system += value.element_size() * value.numel()
    return per_atom / max(state.positions.shape[0], 1), per_system / max(state.n_graphs, 1)


def measure_memory(model: Potential, structure: Atoms, optimizer: Optimizer, *,
                   skin: float = 1.0, device: str | torch.device = "cpu") -> MemoryModel:
    """Fit the memory of relaxing batches like ``structure`` with ``model`` and ``optimizer``.

    Args:
        model: the potential, on ``device``. structure: a representative structure (the
            first of the input). optimizer: the bound optimiser (its state is measured, and
            the stress is evaluated when it relaxes the cell). skin: Verlet skin, Å.
    """
    device = torch.device(device)
    expanded = _expanded(structure)
    probes = [[structure], [expanded], [structure, expanded]]
    measure = _cuda_peak if device.type == "cuda" else _saved_bytes
    if device.type == "cuda":  # first-call workspaces (cuBLAS, ...) stay out of the fit
        ForceField(model, skin=skin, compute_stress=optimizer.needs_stress)(
            state_from_atoms([structure], device))
    rows, sizes = [], []
    for frames in probes:
        state = state_from_atoms(frames, device)
        force_field = ForceField(model, skin=skin, compute_stress=optimizer.needs_stress)
        edges = sum(count_edges(a, model.cutoff) for a in frames)
        used = measure(lambda: force_field(state), device)  # noqa: B023 (called at once)
        atoms = int(state.positions.shape[0])
        rows.append((atoms, edges, 1.0))
        sizes.append((atoms, edges, int(used)))
    from scipy.optimize import nnls

    coef, _ = nnls(np.asarray(rows, dtype=float), np.asarray([s[2] for s in sizes], float))
    start = optimizer.init(state_from_atoms([structure], device),
                           ForceField(model, skin=skin, compute_stress=optimizer.needs_stress))
    per_atom_state, per_system_state = state_bytes(start)
    weights = sum(t.element_size() * t.numel()
                  for t in (*model.parameters(), *model.buffers()))
    return MemoryModel(per_atom=float(coef[0]) + STATE_COPIES * per_atom_state,
                       per_edge=float(coef[1]), per_system=STATE_COPIES * per_system_state,
                       constant=float(coef[2]) + weights,
                       method="cuda peak" if device.type == "cuda" else "saved tensors",
                       probes=tuple(sizes))


def _expanded(structure: Atoms) -> Atoms:
    """``structure`` stretched by :data:`PROBE_EXPANSION` (cell and positions)."""
    out = structure.copy()
    out.calc = None
    if out.pbc.any():
        out.set_cell(out.cell * PROBE_EXPANSION, scale_atoms=True)
    else:
        centre = out.positions.mean(axis=0)
        out.positions = centre + (out.positions - centre) * PROBE_EXPANSION
    return out


def _cuda_peak(call: Callable[[], object], device: torch.device) -> int:
    """Peak bytes allocated on ``device`` during ``call()`` above what was allocated before."""
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    out = call()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    del out
    return peak


def _saved_bytes(call: Callable[[], object], device: torch.device) -> int:
    """Bytes of the tensors autograd saves during ``call()`` (each storage once) plus those of
    its outputs."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = call()
    outputs = sum(t.element_size() * t.numel() for t in vars(out).values()
                  if isinstance(t, torch.Tensor))
    return sum(storages.values()) + outputs

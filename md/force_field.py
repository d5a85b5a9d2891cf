"""The force function the integrators call: model + skin neighbour list → :class:`ForceOutput`."""

from __future__ import annotations

import logging
import math
import time

import torch

from mlip.determinism import deterministic_mode
from mlip.errors import ConfigError
from mlip.graph import graph_from_neighbors, update_neighbors
from mlip.md.state import ForceOutput, MDState
from mlip.models import Potential, PotentialOutput
from mlip.neighbors import Neighbors, VerletList
from mlip.structures import Layout

__all__ = ["AUTO_GROUP_SIZES", "ForceField"]

log = logging.getLogger(__name__)

#: Group sizes (atoms per model call) that ``max_atoms_per_call="auto"`` times against one call
#: on the whole batch (128: SevenNet-0 on a CPU, ~2x faster per atom than 560 atoms at once).
AUTO_GROUP_SIZES = (1024, 256, 128)
#: A first call longer than this (s) is timed once per candidate, not twice: its timing is
#: well above the noise, and a second round would cost as much as a few steps of a heavy model.
AUTO_TIME_ONCE_S = 0.5


class ForceField:
    """Evaluates a potential on an :class:`MDState`, reusing its neighbour list with a skin.

    The model may run in float32; positions are cast for the model and results are cast back
    to float64 for the integrators.

    Args:
        model: the potential (eval mode).
        skin: Verlet skin, Å.
        compute_stress: also return the stress (needed by barostats and cell relaxation).
        max_atoms_per_call: evaluate the model on groups of whole systems of at most this many
            atoms (one system larger than it goes alone); None: the whole batch at once;
            ``"auto"``: on a CPU, time the first call with each of :data:`AUTO_GROUP_SIZES`
            and keep the fastest (None on other devices and for one system). Each system's
            results are the same either way. On a CPU, a heavy model on a large batch of small
            systems runs faster in groups that stay in cache (facet-s on 64 3BPA molecules:
            about 3x with groups of ~200 atoms), a cheap one slower; on a GPU use None.
        deterministic: evaluate the model under :func:`mlip.determinism.deterministic_mode`
            (float32 forces repeat bit for bit on the same machine and thread count);
            ``"auto"`` then means None (no choice by timing).

    Attributes:
        max_atoms_per_call: the request, as given (never changed).
        group_size: atoms per model call in use (None: the whole batch); with ``"auto"`` None
            until the first call has chosen it.
        group_size_pending: True while ``"auto"`` still has to time the first call.
    """

    def __init__(self, model: Potential, *, skin: float = 1.0, compute_stress: bool = False,
                 max_atoms_per_call: int | str | None = None, deterministic: bool = False
                 ) -> None:
        if not (max_atoms_per_call is None or max_atoms_per_call == "auto"
                or (isinstance(max_atoms_per_call, int) and max_atoms_per_call >= 1)):
            raise ConfigError("max_atoms_per_call must be a positive integer, None or 'auto', "
                              f"got {max_atoms_per_call!r}")
        self.model = model
        self.compute_stress = compute_stress
        self.deterministic = deterministic
        self.max_atoms_per_call = max_atoms_per_call
        self.group_size_pending = max_atoms_per_call == "auto" and not deterministic
        self.group_size: int | None = None if max_atoms_per_call == "auto" else max_atoms_per_call
        self._groups: tuple[tuple, list[tuple[tuple[int, int, int, int], Layout]]] | None = None
        self.neighbors = VerletList(model.cutoff, skin)
        self.model_dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()),
                                torch.float64)
        self._no_stress: torch.Tensor | None = None

    def _nan_stress(self, n_graphs: int, device: torch.device) -> torch.Tensor:
        """(n_graphs, 3, 3) NaN stress for steps that skip it (one tensor reused; never
        modified in place)."""
        if (self._no_stress is None or self._no_stress.shape[0] != n_graphs
                or self._no_stress.device != device):
            self._no_stress = torch.full((n_graphs, 3, 3), float("nan"), dtype=torch.float64,
                                         device=device)
        return self._no_stress

    def _evaluate(self, state: MDState, neighbors: Neighbors) -> PotentialOutput:
        """Model outputs for the whole batch, in one call or group by group."""
        if self.group_size_pending:
            return self._choose_group_size(state, neighbors)
        groups = self._group_bounds(state)
        dtype, cutoff = self.model_dtype, self.model.cutoff
        with torch.enable_grad():
            if len(groups) == 1:
                return self.model(graph_from_neighbors(state, neighbors, cutoff, dtype),
                                  compute_forces=True, compute_stress=self.compute_stress)
            atom_bounds = torch.tensor([a for g, _ in groups for a in g[2:]],
                                       device=neighbors.edge_index.device)
            edge_bounds = torch.searchsorted(neighbors.edge_index[0], atom_bounds).tolist()
            outs = []
            for k, (group, layout) in enumerate(groups):  # edges are sorted by centre atom
                graph = graph_from_neighbors(state, neighbors, cutoff, dtype, group, layout,
                                             (edge_bounds[2 * k], edge_bounds[2 * k + 1]))
                outs.append(self.model(graph, compute_forces=True,
                                       compute_stress=self.compute_stress))
        return PotentialOutput.concat(outs)

    def _choose_group_size(self, state: MDState, neighbors: Neighbors) -> PotentialOutput:
        """Set ``group_size`` to the fastest of one call on the whole batch and the group sizes
        of :data:`AUTO_GROUP_SIZES` (each timed twice, the best kept; once when a call takes
        longer than :data:`AUTO_TIME_ONCE_S`); return the outputs of the last timed call."""
        candidates: list[int | None] = [None]
        if state.positions.device.type == "cpu" and state.n_graphs > 1:
            candidates += [n for n in AUTO_GROUP_SIZES if n < state.positions.shape[0]]
        timings: dict[int | None, float] = {}
        self.group_size_pending = False
        rounds = 2
        for size in candidates if len(candidates) > 1 else []:
            self.group_size, self._groups = size, None
            for _ in range(rounds):
                start = time.perf_counter()
                out = self._evaluate(state, neighbors)
                timings[size] = min(timings.get(size, math.inf), time.perf_counter() - start)
                if timings[size] > AUTO_TIME_ONCE_S:
                    rounds = 1
                    break
        self.group_size = min(timings, key=timings.__getitem__) if timings else None
        self._groups = None
        if timings:
            log.info("model called on %s; first calls: %s", "the whole batch"
                     if self.group_size is None else f"groups of <= {self.group_size} atoms",
                     ", ".join(f"{'all' if n is None else n} atoms {t * 1e3:.3g} ms"
                               for n, t in timings.items()))
            return out  # the last timed call: the chosen grouping's results up to round-off
        return self._evaluate(state, neighbors)

    def _group_bounds(self, state: MDState
                      ) -> list[tuple[tuple[int, int, int, int], Layout]]:
        """(g0, g1, a0, a1) and the layout of each group of whole systems (computed once per
        batch layout and group size, from the layout's host counts)."""
        key = (state.layout, self.group_size)
        if self._groups is not None and self._groups[0] == key:
            return self._groups[1]
        limit, counts = self.group_size, state.layout.counts
        bounds, g0, a0, size = [], 0, 0, 0
        for g, n in enumerate(counts):
            if limit is not None and size and size + n > limit:
                bounds.append((g0, g, a0, a0 + size))
                g0, a0, size = g, a0 + size, 0
            size += n
        bounds.append((g0, len(counts), a0, a0 + size))
        groups = [(b, state.layout if len(bounds) == 1 else state.layout.systems(*b[:2]))
                  for b in bounds]
        self._groups = (key, groups)
        return groups

    def __call__(self, state: MDState) -> ForceOutput:
        """Energy, forces, stress and shortest distance per system at ``state.positions``."""
        neighbors = update_neighbors(self.neighbors, state)
        with deterministic_mode(self.deterministic):
            out = self._evaluate(state, neighbors)
        stress_computed = out.stress is not None
        stress = (self._nan_stress(state.n_graphs, state.positions.device) if out.stress is None
                  else _float64_constant(out.stress))
        return ForceOutput(energy=_float64_constant(out.energy),
                           forces=_float64_constant(out.forces), stress=stress,
                           min_distance=neighbors.shortest_distance,
                           stress_computed=stress_computed)


def _float64_constant(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` detached, in float64 (itself when it already is: the compiled path)."""
    if tensor.dtype == torch.float64 and not tensor.requires_grad:
        return tensor
    return tensor.detach().to(torch.float64)


"""Change which systems a batched state holds: :func:`take_systems` keeps some systems of a
state, :func:`concat_systems` appends the systems of one state to another.

Both work on any :class:`~mlip.md.state.MDState` subclass (FIRE, L-BFGS, ...) through the scope
metadata of its fields (per atom, per system, global), so every per-system variable of an
optimiser (FIRE's velocities and time step, L-BFGS's history, the cell filter's log F) travels
with its system exactly (bit for bit). Neither reads the device: the indices come from the
layout's host counts.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence, TypeVar

import numpy as np
import torch

from mlip.md.constraints import Constraints
from mlip.md.state import MDState
from mlip.structures import Layout

__all__ = ["take_systems", "concat_systems"]

S = TypeVar("S", bound=MDState)


def take_systems(state: S, keep: Sequence[int]) -> S:
    """The systems ``keep`` of ``state`` (host indices, increasing), as a new state.

    Raises:
        ValueError: ``keep`` is empty, unsorted or out of range.
    """
    keep = [int(g) for g in keep]
    counts = state.layout.counts
    if not keep or any(b <= a for a, b in zip(keep, keep[1:])) or keep[0] < 0 \
            or keep[-1] >= len(counts):
        raise ValueError(f"take_systems: keep must be increasing indices in [0, {len(counts)}), "
                         f"got {keep}")
    if len(keep) == len(counts):
        return state
    device = state.positions.device
    starts = np.cumsum(counts) - np.asarray(counts)
    atoms = np.concatenate([np.arange(starts[g], starts[g] + counts[g]) for g in keep])
    atom_index = torch.as_tensor(atoms, dtype=torch.long, device=device)
    system_index = torch.as_tensor(keep, dtype=torch.long, device=device)
    runs = _runs(keep)
    layout = Layout.concat([state.layout.systems(a, b) for a, b in runs])
    changes = {}
    for f in dataclasses.fields(state):
        per = f.metadata.get("per")
        if per == "atom":
            changes[f.name] = getattr(state, f.name).index_select(0, atom_index)
        elif per == "system":
            changes[f.name] = getattr(state, f.name).index_select(0, system_index)
    c = state.constraints
    if c is not None:
        changes["constraints"] = Constraints(
            fixed=c.fixed.index_select(0, atom_index),
            fix_com=c.fix_com.index_select(0, system_index),
            removed_dof=c.removed_dof.index_select(0, system_index), any_fix_com=c.any_fix_com)
    return state.replace(layout=layout, **changes)


def concat_systems(first: S, second: S) -> S:
    """The systems of ``first`` followed by those of ``second`` (same state type and device).

    Global fields (``stress_computed``, ``step``) are those of ``first``; the constraints of a
    state without any become "nothing fixed" next to a state with some.

    Raises:
        TypeError: states of different types.
    """
    if type(first) is not type(second):
        raise TypeError(f"concat_systems: {type(first).__name__} and {type(second).__name__}")
    changes = {}
    for f in dataclasses.fields(first):
        if f.metadata.get("per") in ("atom", "system"):
            changes[f.name] = torch.cat([getattr(first, f.name), getattr(second, f.name)])
    constraints = None
    if first.constraints is not None or second.constraints is not None:
        a, b = _constraints_or_free(first), _constraints_or_free(second)
        constraints = Constraints(
            fixed=torch.cat([a.fixed, b.fixed]), fix_com=torch.cat([a.fix_com, b.fix_com]),
            removed_dof=torch.cat([a.removed_dof, b.removed_dof]),
            any_fix_com=a.any_fix_com or b.any_fix_com)
    return first.replace(layout=Layout.concat([first.layout, second.layout]),
                         constraints=constraints, **changes)


def _constraints_or_free(state: MDState) -> Constraints:
    """The constraints of ``state``, or "nothing fixed" ones when it has none."""
    if state.constraints is not None:
        return state.constraints
    device = state.positions.device
    return Constraints(fixed=torch.zeros(state.positions.shape[0], dtype=torch.bool, device=device),
                       fix_com=torch.zeros(state.n_graphs, dtype=torch.bool, device=device),
                       removed_dof=torch.zeros(state.n_graphs, dtype=torch.float64, device=device),
                       any_fix_com=False)


def _runs(indices: list[int]) -> list[tuple[int, int]]:
    """Consecutive runs of sorted ``indices`` as (start, stop) pairs."""
    runs, start = [], indices[0]
    for prev, g in zip(indices, indices[1:]):
        if g != prev + 1:
            runs.append((start, prev + 1))
            start = g
    runs.append((start, indices[-1] + 1))
    return runs

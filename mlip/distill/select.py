"""Stage 2, select: hold out the end of every teacher MD trajectory, then pick diverse frames
from the rest by farthest-point sampling in a cheap invariant descriptor space.

Descriptor of a frame (:func:`structure_descriptors`): for every atom, radial symmetry functions
G(μ) = Σ_j exp(−(r_ij − μ)²/(2w²))·f_c(r_ij), one set per neighbour element, with centres μ
evenly spaced from 0.5 Å to the cutoff (w = their spacing, f_c a cosine cutoff); the frame's
vector is the mean and the standard deviation over its atoms of each centre element, and its
volume per atom for periodic frames. The mean tracks density and coordination (strain,
temperature), the standard deviation the disorder (a perfect crystal has none). Each feature is
standardised over the pool before distances are taken, so no unit dominates.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list

__all__ = ["structure_descriptors", "farthest_point_sampling", "holdout_split",
           "N_CENTRES"]

N_CENTRES = 8
SMALLEST_CENTRE = 0.5  # Å


def structure_descriptors(frames: Sequence[Atoms], cutoff: float,
                          elements: Sequence[int] | None = None) -> np.ndarray:
    """(n_frames, n_features) invariant descriptors (see the module docstring).

    Args:
        frames: the structures. cutoff: radial cutoff, Å.
        elements: atomic numbers the features are laid out for (default: all in ``frames``).
    """
    if elements is None:
        elements = sorted({int(z) for atoms in frames for z in atoms.numbers})
    elements = list(elements)
    index = {z: k for k, z in enumerate(elements)}
    centres = np.linspace(SMALLEST_CENTRE, cutoff, N_CENTRES)
    width = centres[1] - centres[0]
    n_el = len(elements)
    rows = []
    for atoms in frames:
        i, j, d = neighbor_list("ijd", atoms, cutoff)
        fc = 0.5 * (np.cos(np.pi * d / cutoff) + 1.0)
        g = np.exp(-0.5 * ((d[:, None] - centres) / width) ** 2) * fc[:, None]
        per_atom = np.zeros((len(atoms), n_el, N_CENTRES))
        neighbour_el = np.array([index[int(z)] for z in atoms.numbers[j]], dtype=np.int64)
        np.add.at(per_atom, (i, neighbour_el), g)
        per_atom = per_atom.reshape(len(atoms), -1)
        mean = np.zeros((n_el, per_atom.shape[1]))
        std = np.zeros((n_el, per_atom.shape[1]))
        centre_el = np.array([index[int(z)] for z in atoms.numbers], dtype=np.int64)
        for e in range(n_el):
            mine = per_atom[centre_el == e]
            if len(mine):
                mean[e], std[e] = mine.mean(0), mine.std(0)
        volume = atoms.get_volume() / len(atoms) if np.all(atoms.pbc) else 0.0
        rows.append(np.concatenate([mean.ravel(), std.ravel(), [volume]]))
    return np.asarray(rows).reshape(len(frames), -1)


def farthest_point_sampling(features: np.ndarray, n: int,
                            start: Sequence[int] = ()) -> list[int]:
    """Indices of ``n`` rows of ``features`` picked greedily, each the farthest (Euclidean, on
    standardised features) from those picked before.

    Args:
        features: (n_rows, n_features).
        n: how many to pick (at most the rows not in ``start``).
        start: rows already chosen (not returned); without them the first pick is the row
            farthest from the mean.

    Returns:
        The picked row indices, in the order picked (ties: the lowest index).
    """
    x = np.asarray(features, dtype=np.float64)
    spread = x.std(0)
    x = (x - x.mean(0)) / np.where(spread > 0, spread, 1.0)
    taken = list(dict.fromkeys(int(k) for k in start))
    n = min(n, len(x) - len(taken))
    if n <= 0:
        return []
    picked: list[int] = []
    if taken:
        nearest = np.linalg.norm(x[:, None, :] - x[taken][None], axis=2).min(1)
    else:
        first = int(np.argmax(np.linalg.norm(x, axis=1)))
        picked, taken = [first], [first]
        nearest = np.linalg.norm(x - x[first], axis=1)
    nearest[taken] = -np.inf
    while len(picked) < n:
        k = int(np.argmax(nearest))
        picked.append(k)
        nearest = np.minimum(nearest, np.linalg.norm(x - x[k], axis=1))
        nearest[k] = -np.inf
    return picked


def holdout_split(systems: Sequence[str], kinds: Sequence[str], steps: Sequence[int],
                  fraction: float) -> tuple[list[int], list[int]]:
    """(pool, held-out) frame indices: the last ``fraction`` of the frames (by step) of every MD
    trajectory (``config_type`` ``md_*``) is held out; everything else is the pool."""
    from mlip.distill.generate import holdout_count

    trajectories: dict[str, list[int]] = {}
    for k, (system, kind) in enumerate(zip(systems, kinds)):
        if str(kind).startswith("md_"):
            trajectories.setdefault(str(system), []).append(k)
    held = set()
    for members in trajectories.values():
        members.sort(key=lambda k: int(steps[k]))
        n_hold = holdout_count(len(members), fraction)
        held.update(members[len(members) - n_hold:])
    pool = [k for k in range(len(systems)) if k not in held]
    return pool, sorted(held)

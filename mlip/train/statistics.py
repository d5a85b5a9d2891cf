"""Training-split statistics: per-element E0, output scale and shift, average neighbour count.

Conventions follow engine.md §5.8/§6.3 (and MACE's ``rms_forces_scaling``):

* E0 (eV per element) from isolated-atom energies when given, else by least squares
  ``min_E0 Σ_k (E_k − Σ_z c_kz E0_z)²`` with ``c_kz`` the count of element z in frame k;
* shift (eV/atom) = mean over frames of the interaction energy per atom, (E_k − Σ_z c_kz E0_z)/N_k;
* scale (eV) = RMS of the force components (or the standard deviation of the per-atom
  interaction energy when no frame has forces);
* ``avg_num_neighbors`` = mean number of edges per atom at the model cutoff.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols

from mlip.data.stats import require_separable_e0, solve_reference_energies
from mlip.errors import ConfigError
from mlip.train.data import FrameSet

log = logging.getLogger(__name__)

__all__ = [
    "DataStatistics",
    "composition_matrix",
    "fit_e0",
    "isolated_atom_e0",
    "compute_statistics",
    "parse_e0",
]


@dataclass
class DataStatistics:
    """Statistics of the training split.

    Attributes:
        e0: {Z: eV} per-element reference energies.
        scale: eV, model output scale.
        shift: eV/atom, mean interaction energy per atom.
        avg_num_neighbors: mean edges per atom at the cutoff.
        e0_method: how E0 was obtained.
    """

    e0: dict[int, float]
    scale: float
    shift: float
    avg_num_neighbors: float
    e0_method: str

    def as_dict(self) -> dict:
        """Plain-Python form (for checkpoints and JSON)."""
        out = asdict(self)
        out["e0"] = {int(z): float(v) for z, v in self.e0.items()}
        return out


def composition_matrix(frames: FrameSet, species: Sequence[int]) -> np.ndarray:
    """(n_frames, n_species) count of each species in each frame."""
    column = {z: k for k, z in enumerate(species)}
    counts = np.zeros((len(frames), len(species)))
    for row, item in enumerate(frames.items):
        for z in item.graph.atomic_numbers.tolist():
            counts[row, column[int(z)]] += 1
    return counts


def _energies(frames: FrameSet) -> tuple[np.ndarray, np.ndarray]:
    """(n_frames,) eV energies and a mask of frames that have one."""
    energies = np.array([float(b.targets.energy[0]) for b in frames.items])
    return energies, np.isfinite(energies)


def fit_e0(
    frames: FrameSet,
    species: Sequence[int],
    residual: np.ndarray | None = None,
    prior: Mapping[int, float] | None = None,
) -> dict[int, float]:
    """Least-squares per-element E0 (eV) from frame energies (or from given residuals, eV),
    solved by :func:`mlip.data.stats.solve_reference_energies` as streamed stores are.

    Args:
        frames: the frames. species: the elements to fit.
        residual: (n_frames,) eV to fit instead of the frame energies (NaN: no energy).
        prior: {Z: eV} E0 to stay closest to (fine-tuning: the model's old E0). The fit is then
            ``prior + δ`` with δ the minimum-norm least-squares fit of what the prior leaves, so
            directions the energies do not determine keep the prior; elements without a prior
            that the energies cannot separate are logged as a warning instead of refused.

    Raises:
        ConfigError: no frame has an energy, or (without ``prior``) the compositions do not
            determine the E0 of some elements (named, see
            :func:`mlip.data.stats.require_separable_e0`).
    """
    energies, mask = _energies(frames)
    if residual is not None:
        energies = residual
        mask = np.isfinite(residual)
    if not mask.any():
        raise ConfigError(f"cannot fit E0: no frame of {frames.source} has an energy")
    counts = composition_matrix(frames, species)[mask]
    base = np.array([float((prior or {}).get(z, 0.0)) for z in species])
    target = energies[mask] - counts @ base
    delta, _, undetermined = solve_reference_energies(
        counts.T @ counts, counts.T @ target, list(species)
    )
    if prior is None:
        require_separable_e0(undetermined, len(frames), frames.source)
    else:
        new = [chemical_symbols[z] for z in undetermined if z not in prior]
        if new:
            log.warning(
                "the energies of %s do not separate the E0 of new element(s) %s from the others "
                "(fixed ratios); their refitted E0 only hold for these compositions. Give "
                "data.isolated_atoms or data.e0 for a transferable reference",
                frames.source, ", ".join(new),
            )
    return {int(z): float(b + delta[int(z)]) for z, b in zip(species, base)}


def isolated_atom_e0(frames: Sequence[Atoms], source: str) -> dict[int, float]:
    """E0 (eV) from one-atom frames with energies.

    Raises:
        ConfigError: a frame with more than one atom or without an energy.
    """
    e0 = {}
    for k, atoms in enumerate(frames):
        if len(atoms) != 1:
            raise ConfigError(
                f"{source}: frame {k} has {len(atoms)} atoms; isolated-atom files hold "
                "one-atom frames"
            )
        try:
            e0[int(atoms.numbers[0])] = float(atoms.get_potential_energy())
        except Exception:
            raise ConfigError(
                f"{source}: frame {k} ({atoms.get_chemical_formula()}) has no energy"
            ) from None
    return e0


def parse_e0(mapping: Mapping) -> dict[int, float]:
    """Turn ``{"H": -13.6, 8: -2040.0}`` into ``{1: -13.6, 8: -2040.0}``.

    Raises:
        ConfigError: an unknown element symbol.
    """
    out = {}
    for key, value in mapping.items():
        if isinstance(key, str) and not key.isdigit():
            if key not in atomic_numbers:
                raise ConfigError(f"data.e0: unknown element {key!r}")
            out[atomic_numbers[key]] = float(value)
        else:
            out[int(key)] = float(value)
    return out


def compute_statistics(
    frames: FrameSet, species: Sequence[int], e0: dict[int, float], e0_method: str
) -> DataStatistics:
    """Scale, shift and neighbour count of ``frames`` given the E0 to subtract.

    Raises:
        ConfigError: an element of the frames without an E0.
    """
    missing = [z for z in frames.elements() if z not in e0]
    if missing:
        raise ConfigError(
            f"no E0 for element(s) {[chemical_symbols[z] for z in missing]} "
            f"({e0_method}); give them in data.e0 or data.isolated_atoms"
        )
    energies, mask = _energies(frames)
    counts = composition_matrix(frames, species)
    reference = counts @ np.array([e0.get(z, 0.0) for z in species])
    n_atoms = counts.sum(axis=1)
    per_atom = ((energies - reference) / n_atoms)[mask]
    shift = float(per_atom.mean()) if per_atom.size else 0.0
    forces = torch.cat([b.targets.forces.flatten() for b in frames.items])
    forces = forces[torch.isfinite(forces)]
    if forces.numel():
        scale = float(forces.pow(2).mean().sqrt())
    else:
        scale = float(per_atom.std()) if per_atom.size > 1 else 1.0
    n_edges = sum(b.graph.n_edges for b in frames.items)
    avg = n_edges / float(n_atoms.sum())
    return DataStatistics(
        e0={int(z): float(e0[z]) for z in species if z in e0},
        scale=scale or 1.0,
        shift=shift,
        avg_num_neighbors=avg,
        e0_method=e0_method,
    )

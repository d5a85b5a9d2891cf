"""What every :class:`mlip.models.Potential` returns: :class:`PotentialOutput`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import torch
from torch.utils import _pytree

__all__ = ["PotentialOutput"]


@dataclass(frozen=True)
class PotentialOutput:
    """Energies and their derivatives of one batch of systems (ASE units and signs).

    Attributes:
        energy: (n_graphs,) float64, eV.
        node_energy: (n_atoms,) float64, eV; sums to ``energy`` per system.
        forces: (n_atoms, 3) eV/Å, F = -∂E/∂r, in the model's dtype; None when not asked.
        stress: (n_graphs, 3, 3) eV/Å³, σ = (1/V) ∂E/∂ε (ASE sign: positive = tensile), in the
            model's dtype; NaN for a system without a periodic axis; None when not asked.
        virial: (n_graphs, 3, 3) eV, W = -σ·V = -∂E/∂ε, the LAMMPS sign: Σ over pairs of
            r_ij ⊗ f_ij (r_ij = r_j - r_i, f_ij the force of i on j) for a pair potential, so a
            repulsive system has tr W > 0; present exactly when ``stress`` is, NaN where it is.

    In training mode (``create_graph``) the tensors stay in the autograd graph; otherwise they
    are detached. A registered pytree node whose leaves are the tensors present, so
    ``torch.utils._pytree`` and DDP see them.
    """

    energy: torch.Tensor
    node_energy: torch.Tensor
    forces: torch.Tensor | None = None
    stress: torch.Tensor | None = None
    virial: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if (self.stress is None) != (self.virial is None):
            raise ValueError("PotentialOutput: stress and virial come together "
                             f"(stress {_shape(self.stress)}, virial {_shape(self.virial)})")

    @classmethod
    def concat(cls, outputs: Sequence[PotentialOutput]) -> PotentialOutput:
        """One output from those of consecutive groups of whole systems (atoms and systems
        in order), as a single call on the whole batch returns.

        Raises:
            ValueError: no outputs, or a derivative present in some groups and not in others.
        """
        if not outputs:
            raise ValueError("PotentialOutput.concat needs at least one output")
        if len(outputs) == 1:
            return outputs[0]
        joined = {}
        for field in dataclasses.fields(cls):
            values = [getattr(o, field.name) for o in outputs]
            missing = sum(v is None for v in values)
            if missing not in (0, len(values)):
                raise ValueError(f"PotentialOutput.concat: {field.name} is missing in {missing} "
                                 f"of {len(values)} outputs")
            joined[field.name] = None if missing else torch.cat(values)
        return cls(**joined)

    def detach(self) -> PotentialOutput:
        """The same values outside the autograd graph."""
        return PotentialOutput(*(None if t is None else t.detach() for t in _values(self)))


def _values(output: PotentialOutput) -> list[torch.Tensor | None]:
    return [getattr(output, f.name) for f in dataclasses.fields(output)]


def _shape(tensor: torch.Tensor | None) -> str:
    return "None" if tensor is None else str(tuple(tensor.shape))


def _flatten(output: PotentialOutput) -> tuple[list[torch.Tensor], tuple[str, ...]]:
    """The tensors present (the leaves) and their field names (the context)."""
    names = tuple(f.name for f in dataclasses.fields(output) if getattr(output, f.name) is not None)
    return [getattr(output, name) for name in names], names


def _unflatten(values: list[torch.Tensor], names: tuple[str, ...]) -> PotentialOutput:
    return PotentialOutput(**dict(zip(names, values)))


_pytree.register_pytree_node(PotentialOutput, _flatten, _unflatten)

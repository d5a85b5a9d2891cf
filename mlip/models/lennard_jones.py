"""A smooth Lennard-Jones pair potential: the analytic reference model for tests and demos."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mlip.graph import AtomicGraph
from mlip.models.base import Potential
from mlip.models.registry import register_model
from mlip.nn.cutoff import polynomial_envelope
from mlip.nn.scatter import scatter_sum


@register_model("lennard_jones")
class LennardJones(Potential):
    """E = ½ Σ_i Σ_j 4ε[(σ/r)^12 − (σ/r)^6] · f_p(r/r_c), one ε and σ for all species.

    The polynomial envelope f_p makes the energy C² at the cutoff, so NVE conserves energy.
    ``epsilon`` (eV) and ``sigma`` (Å) are trainable parameters.

    Args:
        species: atomic numbers it accepts.
        cutoff: r_c, Å.
        epsilon: well depth, eV.
        sigma: zero-crossing distance, Å.
        envelope_p: order of the polynomial envelope.
    """

    def __init__(
        self,
        *,
        species: Sequence[int],
        cutoff: float = 5.0,
        epsilon: float = 0.01,
        sigma: float = 2.5,
        envelope_p: int = 6,
    ) -> None:
        super().__init__(species=species, cutoff=cutoff)
        self.epsilon = nn.Parameter(torch.tensor(float(epsilon), dtype=torch.float64))
        self.sigma = nn.Parameter(torch.tensor(float(sigma), dtype=torch.float64))
        self.envelope_p = envelope_p

    @property
    def receptive_layers(self) -> int:
        """A pair potential: one hop."""
        return 1

    def atomic_energies(self, graph: AtomicGraph, edge_vectors: torch.Tensor) -> torch.Tensor:
        r = edge_vectors.norm(dim=1)
        x2 = (self.sigma / r) ** 2
        x6 = x2 * x2 * x2
        pair = (
            4.0
            * self.epsilon
            * (x6 * x6 - x6)
            * polynomial_envelope(r, self.cutoff, self.envelope_p)
        )
        return 0.5 * scatter_sum(pair, graph.edge_index[0], graph.positions.shape[0])

"""Species embeddings: a learned vector per element of the model's species list."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SpeciesEmbedding"]


class SpeciesEmbedding(nn.Module):
    """x_i = W[s_i], s_i the index of atom i's element in the model's species list.

    Initialised N(0, 1) so the scalar features start with unit variance.

    Args:
        num_species: number of elements the model knows.
        dim: embedding size (channels).
    """

    def __init__(self, num_species: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_species, dim))

    def forward(self, species: torch.Tensor) -> torch.Tensor:
        """Args: species: (n_atoms,) int64 indices. Returns: (n_atoms, dim) dimensionless."""
        return self.weight[species]

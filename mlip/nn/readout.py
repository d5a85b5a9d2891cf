"""Energy readouts: per-atom scalar heads and species-wise rescaling."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ScalarMLP", "SpeciesWiseRescale"]


class ScalarMLP(nn.Module):
    """A plain MLP on invariant (l = 0) features: Linear → SiLU → … → Linear.

    Weights are N(0, 1/fan_in) so activations keep unit variance; biases start at zero.

    Args:
        dims: layer widths, input first, e.g. ``[32, 16, 1]``.
        final_activation: apply SiLU after the last layer too.
    """

    def __init__(self, dims: list[int], final_activation: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for k, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            linear = nn.Linear(d_in, d_out)
            nn.init.normal_(linear.weight, std=d_in ** -0.5)
            nn.init.zeros_(linear.bias)
            layers.append(linear)
            if k < len(dims) - 2 or final_activation:
                layers.append(nn.SiLU())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: (..., dims[0]). Returns: (..., dims[-1])."""
        return self.net(x)


class SpeciesWiseRescale(nn.Module):
    """e_i → softplus(θ_s + log(e − 1)) · e_i + b_s, per species s (Facet's ``SpeciesWiseRescale``).

    The scale starts at exactly 1 and the shift at 0, so the module starts as the identity.

    Args:
        num_species: number of elements.
    """

    def __init__(self, num_species: int) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(num_species))
        self.shift = nn.Parameter(torch.zeros(num_species))
        self.offset = float(torch.log(torch.expm1(torch.tensor(1.0, dtype=torch.float64))))

    def forward(self, energies: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """Args: energies: (n_atoms,); species: (n_atoms,) int64. Returns: (n_atoms,)."""
        scale = nn.functional.softplus(self.log_scale + self.offset)
        return scale[species] * energies + self.shift[species]

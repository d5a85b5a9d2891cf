"""DeNS, denoising non-equilibrium structures (Liao et al. 2024), as EquiformerV3 uses it.

Per structure, with probability ``probability``, each atom is corrupted with probability
``corrupt_ratio`` by Gaussian noise ε ~ N(0, σ²) (σ = 0.025 Å); a structure where more than
``strict_max_ratio`` of the atoms would be corrupted is left clean. For the corrupted atoms the
model receives the reference forces as input (``SO3Linear(Y(F̂)·|F|)`` added to x⁰) and a separate
equivariant head predicts ε/σ; the loss is the mean squared error over the corrupted atoms.
Clean atoms keep the usual force supervision (the trainer's job). Used in direct pre-training.

A training loop would add ``dens_weight * model.denoising_loss(graph, targets.forces,
generator=g)`` (``dens_weight`` 10 on MPtrj, 1 on OMat24) for a model built with
``denoising=True``; ``mlip train`` does not (it refuses ``model.denoising: true``).
"""

from __future__ import annotations

from typing import Callable

import torch
from e3nn import o3

from mlip.graph import AtomicGraph
from mlip.nn.so3_linear import SO3Linear

__all__ = ["corrupt_positions", "DenoisingMixin"]


def corrupt_positions(graph: AtomicGraph, *, sigma: float = 0.025, corrupt_ratio: float = 0.5,
                      probability: float = 0.5, strict_max_ratio: float = 0.75,
                      generator: torch.Generator | None = None
                      ) -> tuple[AtomicGraph, torch.Tensor, torch.Tensor]:
    """Add DeNS noise to a batch and rebuild its neighbour list.

    Args:
        graph: the clean batch. sigma: noise standard deviation, Å.
        corrupt_ratio: per-atom corruption probability. probability: per-structure probability.
        strict_max_ratio: skip structures with a larger corrupted fraction.
        generator: random source (CPU).

    Returns:
        ``(noisy_graph, noise (n_atoms, 3) Å, mask (n_atoms,) bool)``; noise is zero off the mask.
    """
    n_atoms = graph.positions.shape[0]
    chosen = torch.rand(graph.n_graphs, generator=generator) < probability
    atom_mask = torch.rand(n_atoms, generator=generator) < corrupt_ratio
    batch = graph.batch.cpu()
    fraction = torch.zeros(graph.n_graphs).index_add(0, batch, atom_mask.float())
    fraction = fraction / graph.n_atoms.cpu().float()
    mask = atom_mask & (chosen & (fraction <= strict_max_ratio))[batch]
    noise = torch.randn(n_atoms, 3, generator=generator, dtype=torch.float64) * sigma
    noise = (noise * mask[:, None]).to(graph.positions)
    mask = mask.to(graph.positions.device)
    noisy = AtomicGraph.build(graph.positions + noise, graph.atomic_numbers, graph.cell, graph.pbc,
                              graph.n_atoms, graph.cutoff)
    return noisy, noise, mask


class DenoisingMixin:
    """Adds the DeNS force encoder, noise head and :meth:`denoising_loss` to EquiformerV3."""

    def build_denoising(self, enabled: bool, attention: Callable[..., torch.nn.Module]) -> None:
        """Create the force encoder and noise head (or ``None`` when ``enabled`` is false)."""
        self.force_encoder = SO3Linear(1, self.channels, self.lmax, bias=False) if enabled else None
        self.noise_head = attention(out_channels=1) if enabled else None

    def encode_forces(self, forces: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """SO3Linear(Y(F̂)·|F|) on masked atoms: (n_atoms, 3) eV/Å -> (n_atoms, (L+1)², C)."""
        magnitude = forces.norm(dim=1, keepdim=True)
        direction = forces / magnitude.clamp_min(1e-12)
        sph = o3.spherical_harmonics(list(range(self.lmax + 1)), direction, normalize=False,
                                     normalization="component")  # (n_atoms, n_sph)
        sph = sph * (magnitude * mask[:, None].to(forces.dtype))
        return self.force_encoder(sph[:, :, None])

    def predict_noise(self, graph: AtomicGraph, mask: torch.Tensor,
                      forces: torch.Tensor) -> torch.Tensor:
        """Predicted ε/σ (n_atoms, 3) of a corrupted batch.

        Args:
            graph: the corrupted batch. mask: (n_atoms,) bool, corrupted atoms.
            forces: (n_atoms, 3) eV/Å reference forces (encoded on the masked atoms only).
        """
        if self.noise_head is None:
            raise RuntimeError("this EquiformerV3 was built with denoising=False")
        edges = self.edge_context(graph, graph.edge_vectors())
        x = self.node_features(graph, edges, extra=self.encode_forces(forces, mask))
        out = self.noise_head(x, edges.index, edges.to_edge, edges.features, edges.envelope)
        return out[:, 1:4, 0]

    def denoising_loss(self, graph: AtomicGraph, forces: torch.Tensor | None = None, *,
                       sigma: float = 0.025,
                       corrupt_ratio: float = 0.5, probability: float = 0.5,
                       strict_max_ratio: float = 0.75,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """DeNS loss of a labelled batch: mean ‖pred − ε/σ‖² over corrupted atoms (0 if none).

        Args:
            graph: the clean batch. forces: (n_atoms, 3) eV/Å reference forces (the batch's
                ``Targets.forces``; None or NaN entries count as 0).
        """
        noisy, noise, mask = corrupt_positions(
            graph, sigma=sigma, corrupt_ratio=corrupt_ratio, probability=probability,
            strict_max_ratio=strict_max_ratio, generator=generator)
        forces = torch.zeros_like(graph.positions) if forces is None else torch.nan_to_num(forces)
        predicted = self.predict_noise(noisy, mask, forces.to(graph.positions))
        if not bool(mask.any()):
            return predicted.sum() * 0.0
        return (predicted[mask] - noise[mask] / sigma).pow(2).sum(dim=1).mean()


"""EquiformerV3: SO(2) graph attention with a smooth radius cutoff (arXiv 2604.09130).

Block diagram (features ``x`` are (n_atoms, (L+1)², C), component-major, e3nn order)::

    x⁰   = embed(Z) on l = 0  +  EdgeDegreeEmbedding(s_ij, D_ij, f(r_ij))
    x    = x + DropPath(GraphAttention(MergeLN(x)))        ┐ × num_layers
    x    = x + DropPath(GridFeedForward(MergeLN(x)))       ┘
    e_i  = MLP(MergeLN(x)[:, l=0])

Edge invariants ``s_ij = [Gaussian(r_ij) ‖ emb_src(Z_j) ‖ emb_tgt(Z_i)]``; ``D_ij`` rotates the
edge onto the polar axis (+y in e3nn, :mod:`mlip.nn.wigner`); f is the C² polynomial envelope,
applied inside and outside the attention normalisation and to the degree embedding, so the energy
is C² as neighbours cross r_c. Features are SO(3) irreps (no parity, like the reference code):
energies are rotation invariant but not guaranteed inversion invariant.

Forces and stress come from the energy gradient (``forward``). For pre-training, an optional
direct (non-conservative) force head (:meth:`EquiformerV3.direct_forces`) and the DeNS
denoising objective (:meth:`EquiformerV3.denoising_loss`, see :mod:`mlip.models.equiformer_v3_dens`)
are available; neither is used by ``forward``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from mlip.errors import ConfigError
from mlip.graph import AtomicGraph
from mlip.models.base import Potential
from mlip.models.equiformer_v3_dens import DenoisingMixin
from mlip.models.output import PotentialOutput
from mlip.models.registry import register_model
from mlip.nn.cutoff import polynomial_envelope
from mlip.nn.embedding import SpeciesEmbedding
from mlip.nn.feed_forward import GridFeedForward
from mlip.nn.graph_attention import EquivariantGraphAttention
from mlip.nn.layer_norm import EquivariantMergeLayerNorm
from mlip.nn.radial import GaussianBasis
from mlip.nn.readout import ScalarMLP
from mlip.nn.scatter import scatter_sum
from mlip.nn.so2 import m_primary_order
from mlip.nn.wigner import WignerD, edge_rotation

__all__ = ["EdgeContext", "EquiformerV3", "PRESETS"]

#: Hyper-parameter sets: ``paper`` = the MPtrj L=4 configuration (30 M parameters), ``cpu`` = the
#: tiny configuration used by the tests (docs/equiformer_v3.md, "Hyper-parameters").
PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(cutoff=6.0, num_layers=7, channels=128, lmax=4, mmax=2, num_heads=8,
                  attn_hidden=32, attn_alpha_channels=64, attn_value_channels=16, ffn_hidden=512,
                  num_rbf=10, edge_channels=128, attn_grid=(14, 8), ffn_grid=(14, 14)),
    "cpu": dict(cutoff=5.0, num_layers=2, channels=16, lmax=2, mmax=1, num_heads=2, attn_hidden=8,
                attn_alpha_channels=8, attn_value_channels=4, ffn_hidden=32, num_rbf=8,
                edge_channels=16, attn_grid=(8, 4), ffn_grid=(8, 8)),
}


def _is_weight_matrix(name: str, param: torch.Tensor) -> bool:
    """Linear-map weights (nn.Linear, SO(2)/SO(3) linears, FFN grid maps), not norms or biases."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf.startswith("grid_"):
        return True
    return leaf == "weight" and param.dim() >= 2 and "norm" not in name


@dataclass(frozen=True)
class EdgeContext:
    """The per-edge (and species) tensors of one batch that every layer reads.

    Attributes:
        index: (2, n_edges) int64, row 0 the receiver (centre) i, row 1 the sender j.
        to_edge: (n_edges, n_rows, (L+1)²) m-truncated Wigner-D rows of the rotation R_ij
            that takes the edge onto the polar axis (R_ij r̂_ij = e_y).
        features: (n_edges, num_rbf + 2·edge_channels) invariants s_ij, the model's dtype.
        envelope: (n_edges,) cutoff envelope f(r_ij) in [0, 1].
        species: (n_atoms,) int64 species index of each atom.
    """

    index: torch.Tensor
    to_edge: torch.Tensor
    features: torch.Tensor
    envelope: torch.Tensor
    species: torch.Tensor


class EdgeDegreeEmbedding(nn.Module):
    """x_i += Σ_j f(r_ij) · D_ijᵀ [rad(s_ij) on the m = 0 rows] / sqrt(avg_degree) (eSCN)."""

    def __init__(self, lmax: int, channels: int, edge_features: int, avg_degree: float) -> None:
        super().__init__()
        self.lmax, self.channels, self.scale = lmax, channels, 1.0 / math.sqrt(avg_degree)
        self.radial = nn.Sequential(
            nn.Linear(edge_features, edge_features), nn.LayerNorm(edge_features), nn.SiLU(),
            nn.Linear(edge_features, (lmax + 1) * channels))

    def forward(self, edge_features: torch.Tensor, to_edge: torch.Tensor, weight: torch.Tensor,
                receivers: torch.Tensor, n_nodes: int) -> torch.Tensor:
        """(n_edges, F) invariants, (n_edges, n_rows, n_sph) rotations, (n_edges,) envelope
        -> (n_nodes, n_sph, C)."""
        coeff = self.radial(edge_features).reshape(-1, self.lmax + 1, self.channels)
        coeff = coeff * weight[:, None, None]  # m = 0 rows of the edge frame
        message = torch.einsum("eri,erc->eic", to_edge[:, : self.lmax + 1], coeff)  # (E, n_sph, C)
        return scatter_sum(message, receivers, n_nodes) * self.scale


class TransformerBlock(nn.Module):
    """Pre-norm attention and feed-forward sub-blocks with residuals and (per-graph) drop-path."""

    def __init__(self, attention: EquivariantGraphAttention, feed_forward: GridFeedForward,
                 lmax: int, channels: int, drop_path: float) -> None:
        super().__init__()
        self.norm_attention = EquivariantMergeLayerNorm(lmax, channels)
        self.attention = attention
        self.norm_ffn = EquivariantMergeLayerNorm(lmax, channels)
        self.feed_forward = feed_forward
        self.drop_path = drop_path

    def _drop(self, update: torch.Tensor, batch: torch.Tensor, n_graphs: int) -> torch.Tensor:
        if not self.training or self.drop_path == 0.0:
            return update
        keep = torch.rand(n_graphs, device=update.device) >= self.drop_path
        return update * (keep.to(update.dtype) / (1.0 - self.drop_path))[batch][:, None, None]

    def forward(self, x: torch.Tensor, edges: EdgeContext, batch: torch.Tensor,
                n_graphs: int) -> torch.Tensor:
        """(n_atoms, n_sph, C) -> (n_atoms, n_sph, C); ``edges`` from ``edge_context``."""
        update = self.attention(self.norm_attention(x), edges.index, edges.to_edge,
                                edges.features, edges.envelope)
        x = x + self._drop(update, batch, n_graphs)
        return x + self._drop(self.feed_forward(self.norm_ffn(x)), batch, n_graphs)


@register_model("equiformer_v3")
class EquiformerV3(DenoisingMixin, Potential):
    """EquiformerV3 potential (defaults: the paper's MPtrj L = 4 model; ``PRESETS["cpu"]`` is tiny).

    Args:
        species: atomic numbers. cutoff: r_c, Å. num_layers: transformer blocks.
        channels: C. lmax: L. mmax: largest |m| kept in the SO(2) convolutions.
        num_heads, attn_hidden, attn_alpha_channels, attn_value_channels: attention sizes.
        ffn_hidden: FFN grid width K. num_rbf: Gaussian radial basis size.
        edge_channels: size of the source/target element embeddings of the edges.
        envelope_p: order of the polynomial cutoff envelope (5 in the paper).
        attn_grid, ffn_grid: S² grids (res_beta, res_alpha); default the exact-product rule.
        avg_degree: constant divisor² of the degree embedding (from the training set).
        attn_eps: ε of the smooth softmax. attn_dropout, drop_path: regularisation (paper: 0.1,
            0.05 on OMat/MPtrj; default 0).
        smooth_cutoff: envelope in attention and degree embedding; ``False`` only to demonstrate
            the discontinuity of a plain softmax.
        direct_force_head: build the non-conservative force head (:meth:`direct_forces`).
        denoising: build the DeNS force encoder and noise head (:meth:`denoising_loss`).
        init_gain: factor on the initial weight matrices of the degree embedding and the blocks
            (linear, SO(2), SO(3) and grid maps; not norms, biases or the energy head). torch's
            uniform ±1/√fan_in init has variance 1/(3·fan_in); the default √3 gives 1/fan_in,
            the variance of the reference's ``weight_init="normal"``, which keeps the attention
            and FFN updates O(0.1–1) at init and trains ~2.4× faster here (docs/training.md).
            1.0 is the previous init. Only fresh models: checkpoints store their weights.
    """

    symmetry_group = "SO(3)"  # SO(3) irreps without parity, as the reference

    def __init__(self, *, species: Sequence[int], cutoff: float = 6.0, num_layers: int = 7,
                 channels: int = 128, lmax: int = 4, mmax: int = 2, num_heads: int = 8,
                 attn_hidden: int = 32, attn_alpha_channels: int = 64,
                 attn_value_channels: int = 16,
                 ffn_hidden: int = 512, num_rbf: int = 10, edge_channels: int = 128,
                 envelope_p: int = 5, attn_grid: Sequence[int] | None = None,
                 ffn_grid: Sequence[int] | None = None, avg_degree: float = 23.4,
                 attn_eps: float = 1e-16, attn_dropout: float = 0.0, drop_path: float = 0.0,
                 smooth_cutoff: bool = True, direct_force_head: bool = False,
                 denoising: bool = False, init_gain: float = math.sqrt(3.0)) -> None:
        super().__init__(species=species, cutoff=cutoff)
        self.lmax, self.channels = lmax, channels
        self.envelope_p, self.smooth_cutoff = envelope_p, smooth_cutoff
        n_species, n_edge = len(self.species), num_rbf + 2 * edge_channels
        self.node_embedding = SpeciesEmbedding(n_species, channels)
        self.source_embedding = SpeciesEmbedding(n_species, edge_channels)
        self.target_embedding = SpeciesEmbedding(n_species, edge_channels)
        self.rbf = GaussianBasis(cutoff, num_rbf)
        self.wigner = WignerD(lmax)
        rows = torch.tensor(m_primary_order(lmax, mmax))
        self.register_buffer("edge_rows", rows, persistent=False)
        self.degree_embedding = EdgeDegreeEmbedding(lmax, channels, n_edge, avg_degree)

        def attention(out_channels: int | None = None) -> EquivariantGraphAttention:
            return EquivariantGraphAttention(
                channels=channels, lmax=lmax, mmax=mmax, edge_features=n_edge, num_heads=num_heads,
                hidden=attn_hidden, alpha_channels=attn_alpha_channels,
                value_channels=attn_value_channels,
                out_channels=out_channels, grid_resolution=tuple(attn_grid) if attn_grid else None,
                attn_eps=attn_eps, attn_dropout=attn_dropout, smooth_cutoff=smooth_cutoff)

        self.blocks = nn.ModuleList(
            TransformerBlock(attention(), GridFeedForward(lmax, channels, ffn_hidden,
                                                          tuple(ffn_grid) if ffn_grid else None),
                             lmax, channels, drop_path) for _ in range(num_layers))
        self.final_norm = EquivariantMergeLayerNorm(lmax, channels)
        self.energy_head = ScalarMLP([channels, channels, 1])
        self.force_head = attention(out_channels=1) if direct_force_head else None
        self.build_denoising(denoising, attention)
        self._scale_init(init_gain)

    def _scale_init(self, gain: float) -> None:
        """Multiply the initial weight matrices of the degree embedding and blocks by ``gain``."""
        if not (math.isfinite(gain) and gain > 0):
            raise ConfigError(f"model.init_gain = {gain!r}: must be a positive finite number "
                              "(1.0 is torch's default init, √3 the shipped one)")
        if gain == 1.0:
            return
        with torch.no_grad():
            for module in (self.degree_embedding, self.blocks):
                for name, param in module.named_parameters():
                    if _is_weight_matrix(name, param):
                        param.mul_(gain)

    @classmethod
    def from_preset(cls, preset: str, *, species: Sequence[int], **overrides: Any) -> EquiformerV3:
        """Build from ``PRESETS[preset]`` ("paper" or "cpu") with keyword overrides."""
        return cls(species=species, **{**PRESETS[preset], **overrides})

    @property
    def receptive_layers(self) -> int:
        """One hop for the edge-degree embedding, one per transformer block."""
        return len(self.blocks) + 1

    def edge_context(self, graph: AtomicGraph, edge_vectors: torch.Tensor) -> EdgeContext:
        """Per-edge tensors shared by all layers (see :class:`EdgeContext`), from the edge
        vectors (n_edges, 3) Å."""
        species = self.species_indices(graph.atomic_numbers)
        receivers, senders = graph.edge_index
        distance = edge_vectors.norm(dim=1)
        features = torch.cat([self.rbf(distance), self.source_embedding(species[senders]),
                              self.target_embedding(species[receivers])], dim=1)
        to_edge = self.wigner(edge_rotation(edge_vectors), self.edge_rows)
        envelope = polynomial_envelope(distance, self.cutoff, self.envelope_p)
        return EdgeContext(index=graph.edge_index, to_edge=to_edge, features=features,
                           envelope=envelope, species=species)

    def node_features(self, graph: AtomicGraph, edges: EdgeContext,
                      extra: torch.Tensor | None = None) -> torch.Tensor:
        """Final normalised node features (n_atoms, (L+1)², C); ``extra`` is added to x⁰."""
        n_atoms = graph.positions.shape[0]
        dtype = edges.features.dtype
        x = edges.features.new_zeros(n_atoms, (self.lmax + 1) ** 2, self.channels)
        x[:, 0] = self.node_embedding(edges.species).to(dtype)
        weight = edges.envelope if self.smooth_cutoff else torch.ones_like(edges.envelope)
        x = x + self.degree_embedding(edges.features, edges.to_edge, weight,
                                      edges.index[0], n_atoms)
        if extra is not None:
            x = x + extra
        for block in self.blocks:
            x = block(x, edges, graph.batch, graph.n_graphs)
        return self.final_norm(x)

    def atomic_energies(self, graph: AtomicGraph, edge_vectors: torch.Tensor) -> torch.Tensor:
        """Per-atom learned energies (n_atoms,), dimensionless (see :class:`Potential`)."""
        edges = self.edge_context(graph, edge_vectors)
        return self.energy_head(self.node_features(graph, edges)[:, 0]).squeeze(-1)

    def direct_forces(self, graph: AtomicGraph) -> PotentialOutput:
        """Energy and **direct** (non-conservative) forces from one pass, for pre-training only.

        Returns:
            ``energy`` (n_graphs,) and ``node_energy`` (n_atoms,) float64 eV, and ``forces``
            (n_atoms, 3) eV/Å read from the l = 1 block of the force head (e3nn's l = 1 basis is
            (x, y, z)), scaled by ``energy_scale``; no stress.
        """
        if self.force_head is None:
            raise RuntimeError("this EquiformerV3 was built with direct_force_head=False")
        edge_vectors = graph.edge_vectors()
        edges = self.edge_context(graph, edge_vectors)
        x = self.node_features(graph, edges)
        learned = self.energy_head(x[:, 0]).squeeze(-1)
        node_energy = self.compose_node_energy(learned, edges.species, graph.edge_index,
                                               edge_vectors)
        forces = self.force_head(x, edges.index, edges.to_edge, edges.features, edges.envelope)
        return PotentialOutput(
            energy=scatter_sum(node_energy, graph.batch, graph.n_graphs), node_energy=node_energy,
            forces=forces[:, 1:4, 0] * self.energy_scale.to(forces.dtype))


"""Facet: a CG message-passing potential with spline radial functions and S²-grid mixing.

Miklaucic et al., "Facet" (arXiv 2509.08418). A NequIP/SevenNet-style network whose two
efficiency changes are (1) learnable cubic B-spline radial functions instead of radial MLPs and
(2) a spherical-grid MLP as the node update. Features use TRUE parities (0e + 1o + 2e + …), so
the energy is invariant under rotations, reflections, translations and permutations (E(3)).
Design and measurements: ``docs/models.md`` ("Facet"). Per layer t:

    m_i = (1/n̄^ρ) Σ_j TP_uvu(W_in h_j, Y(r̂_ij); w_t(r_ij))     (w_t: spline radial, envelope C²)
    u_i = W_out m_i
    v_i = S2Mix(u_i)                                              (grid MLP, or exact bilinear)
    h_i ← W_res h_i + LayerNorm_0(v_i)                            (scale initialised to 0)

and the energy is e_i = rescale_Z(MLP(h_i^{0e})). Features are in e3nn layout (n_atoms, irreps.dim).
"""

from __future__ import annotations

from typing import Sequence

import torch
from e3nn import o3
from torch import nn
from torch.utils.checkpoint import checkpoint

from mlip.errors import ConfigError
from mlip.graph import AtomicGraph
from mlip.models.base import Potential
from mlip.models.registry import register_model
from mlip.nn.embedding import SpeciesEmbedding
from mlip.nn.irreps_linear import IrrepsLinear
from mlip.nn.norm import EquivariantLayerNorm
from mlip.nn.precision import float64_construction
from mlip.nn.radial import SplineRadial
from mlip.nn.readout import ScalarMLP, SpeciesWiseRescale
from mlip.nn.s2_grid import GridBilinear, GridMLP, exact_product_resolution
from mlip.nn.s2_mixing import S2MixingLayer
from mlip.nn.scatter import scatter_sum
from mlip.nn.uvu_product import UVUTensorProduct

__all__ = ["Facet", "FACET_PRESETS", "FacetLayer", "DEFAULT_GRID_RES"]

#: Grid (res_beta, res_alpha) of the MLP mixer per L: the error/speed trade-off measured by
#: benchmarks/facet_equivariance.py (energy error ≪ 0.01 meV/atom, forces < 1e-3 relative).
DEFAULT_GRID_RES = {0: (2, 1), 1: (10, 9), 2: (14, 13), 3: (18, 17), 4: (24, 23)}

#: Ready-made hyper-parameter sets: ``build("facet", species=[...], **FACET_PRESETS["facet-s"])``.
FACET_PRESETS: dict[str, dict] = {
    "facet-s": dict(cutoff=5.0, hidden_irreps="32x0e+16x1o+8x2e", num_layers=2, sh_lmax=2,
                    embedding_dim=32, num_spline_basis=12, radial_power=0.7, mixer_hidden=[16],
                    mixer_heads=2, readout_hidden=[16]),
    "facet-tiny": dict(cutoff=4.0, hidden_irreps="8x0e+4x1o+4x2e", num_layers=2, sh_lmax=2,
                       embedding_dim=8, num_spline_basis=8, mixer_hidden=[8], mixer_heads=2,
                       readout_hidden=[8]),
}


class FacetLayer(nn.Module):
    """One Facet interaction: spline-weighted CG convolution, linear, grid mixing, residual.

    Args:
        irreps_in: node features entering the layer.
        irreps_hidden: node features leaving it (parity (−1)^l).
        irreps_sh: edge spherical harmonics.
        cutoff: r_c, Å. num_spline_basis: K. envelope_p: envelope order.
        neighbor_norm: the constant n̄^ρ dividing the neighbour sum.
        mixer: the :class:`S2MixingLayer` (irreps_hidden → irreps_hidden).
        residual_init: initial scale of the residual branch's layer norm.

    Attributes:
        max_edges_per_block: None, or evaluate the convolution on blocks of at most this many
            edges with activation checkpointing (same values; the per-edge messages of only
            one block are held, at the cost of recomputing them in the backward). Set through
            :meth:`Facet.set_max_edges_per_block`.
    """

    def __init__(self, irreps_in: o3.Irreps, irreps_hidden: o3.Irreps, irreps_sh: o3.Irreps, *,
                 cutoff: float, num_spline_basis: int, envelope_p: int, neighbor_norm: float,
                 mixer: S2MixingLayer, residual_init: float) -> None:
        super().__init__()
        self.irreps_in, self.irreps_out = irreps_in, irreps_hidden
        self.neighbor_norm = neighbor_norm
        self.linear_in = IrrepsLinear(irreps_in, irreps_in)
        self.conv = UVUTensorProduct(irreps_in, irreps_sh, irreps_hidden)
        self.radial = SplineRadial(cutoff, self.conv.weight_numel, num_spline_basis, envelope_p)
        self.linear_out = IrrepsLinear(self.conv.irreps_out, irreps_hidden,
                                       in_columns=self.conv.columns)
        self.mixer = mixer
        self.residual = IrrepsLinear(irreps_in, irreps_hidden)
        self.norm = EquivariantLayerNorm(irreps_hidden, scale_init=residual_init)
        self.max_edges_per_block: int | None = None

    def forward(self, h: torch.Tensor, edge_index: torch.Tensor, edge_sh: torch.Tensor,
                edge_length: torch.Tensor) -> torch.Tensor:
        """Args:
            h: (n_atoms, irreps_in.dim) node features.
            edge_index: (2, n_edges) int64, row 0 centre i, row 1 neighbour j.
            edge_sh: (n_edges, n_sph) spherical harmonics of r̂_ij.
            edge_length: (n_edges,) Å.

        Returns:
            (n_atoms, irreps_hidden.dim) updated features.
        """
        h_in = self.linear_in(h)
        n_edges, block = edge_length.shape[0], self.max_edges_per_block
        if block is None or n_edges <= block:
            m = self._neighbor_sum(h_in, edge_index, edge_sh, edge_length)
        else:  # one block of edges at a time; the backward recomputes each block's messages
            m = None
            for start in range(0, n_edges, block):
                part = (edge_index[:, start:start + block], edge_sh[start:start + block],
                        edge_length[start:start + block])
                if torch.is_grad_enabled():
                    total = checkpoint(self._neighbor_sum, h_in, *part, use_reentrant=False)
                else:
                    total = self._neighbor_sum(h_in, *part)
                m = total if m is None else m + total
        v = self.mixer(self.linear_out(m / self.neighbor_norm))
        return self.residual(h) + self.norm(v)

    def _neighbor_sum(self, h_in: torch.Tensor, edge_index: torch.Tensor, edge_sh: torch.Tensor,
                      edge_length: torch.Tensor) -> torch.Tensor:
        """Σ_j of the spline-weighted messages, (n_atoms, n_message_columns)."""
        weights = self.radial(edge_length, self.conv.weight_index)  # (n_edges, n_messages)
        messages = self.conv(h_in[edge_index[1]], edge_sh, weights)
        return scatter_sum(messages, edge_index[0], h_in.shape[0])


@register_model("facet")
class Facet(Potential):
    """The Facet potential. Defaults follow the paper-like facet-s reference config; see
    :data:`FACET_PRESETS` for CPU-sized sets.

    Args:
        species: atomic numbers the model knows.
        cutoff: r_c, Å (fixed; radius graph, no neighbour cap).
        hidden_irreps: node features, parity (−1)^l, e.g. ``"128x0e+64x1o+32x2e"``.
        num_layers: T interaction layers.
        sh_lmax: largest degree of the edge spherical harmonics.
        embedding_dim: size of the species embedding (the first layer's scalar input).
        num_spline_basis: K cubic B-spline control points per radial function.
        envelope_p: order of the polynomial cutoff envelope.
        avg_num_neighbors: n̄, the training set's mean neighbour count (set by the trainer).
        radial_power: ρ in the neighbour-sum normalisation 1/n̄^ρ.
        mixer: ``"mlp"`` (Facet's grid MLP, approximately equivariant) or ``"bilinear"``
            (a degree-2 grid product, exactly equivariant at the default grid).
        mixer_hidden: hidden widths of the grid MLP.
        mixer_heads: heads H of the grid MLP (weights shared across heads).
        grid_res: (res_beta, res_alpha) of the S² grid; ``None``: :data:`DEFAULT_GRID_RES` for
            the MLP, :func:`mlip.nn.s2_grid.exact_product_resolution` for the bilinear mixer.
        grid_normalization: e3nn grid normalisation, ``"component"`` or ``"integral"``.
        readout_hidden: hidden widths of the per-atom energy MLP.
        residual_init: initial scale of each layer's residual branch (0: layers start as identity).
    """

    #: grid-MLP mixer (default): approximately equivariant; measured ≤ 2e-6 (E) and 2e-5 (F)
    #: relative on the tiny conformance model, ≤ 1e-3 (F) at the default grids (docs/models.md)
    symmetry_tolerance = {"energy": 1e-5, "forces": 1e-3}

    def __init__(self, *, species: Sequence[int], cutoff: float = 6.0,
                 hidden_irreps: str = "128x0e+64x1o+32x2e", num_layers: int = 2, sh_lmax: int = 2,
                 embedding_dim: int = 64, num_spline_basis: int = 16, envelope_p: int = 6,
                 avg_num_neighbors: float = 1.0, radial_power: float = 1.0, mixer: str = "mlp",
                 mixer_hidden: Sequence[int] = (16,), mixer_heads: int = 2,
                 grid_res: Sequence[int] | None = None, grid_normalization: str = "component",
                 readout_hidden: Sequence[int] = (16,), residual_init: float = 0.0) -> None:
        super().__init__(species=species, cutoff=cutoff)
        irreps_hidden = o3.Irreps(hidden_irreps).sort().irreps.simplify()  # 0e block first
        if num_layers < 1 or not avg_num_neighbors > 0:
            raise ConfigError(f"facet needs num_layers >= 1 and avg_num_neighbors > 0, got "
                              f"{num_layers} and {avg_num_neighbors}")
        if irreps_hidden.count("0e") == 0:
            raise ConfigError(f"facet hidden_irreps {hidden_irreps!r} need scalar (0e) channels")
        self.sh_degrees = list(range(sh_lmax + 1))
        irreps_sh = o3.Irreps.spherical_harmonics(sh_lmax)  # 0e + 1o + 2e + …
        with float64_construction():  # exact CG/grid constants; call .float() for float32
            self.embedding = SpeciesEmbedding(len(self.species), embedding_dim)
            layers, irreps_in = [], o3.Irreps(f"{embedding_dim}x0e")
            for _ in range(num_layers):
                mix = _mixing_layer(irreps_hidden, mixer, list(mixer_hidden), mixer_heads,
                                    grid_res, grid_normalization)
                layers.append(FacetLayer(
                    irreps_in, irreps_hidden, irreps_sh, cutoff=self.cutoff,
                    num_spline_basis=num_spline_basis, envelope_p=envelope_p,
                    neighbor_norm=float(avg_num_neighbors) ** radial_power, mixer=mix,
                    residual_init=residual_init))
                irreps_in = irreps_hidden
            self.layers = nn.ModuleList(layers)
            self.num_scalars = irreps_hidden.count("0e")
            self.readout = ScalarMLP([self.num_scalars, *readout_hidden, 1])
            self.rescale = SpeciesWiseRescale(len(self.species))

    def atomic_energies(self, graph: AtomicGraph, edge_vectors: torch.Tensor) -> torch.Tensor:
        """Per-atom energies (n_atoms,), dimensionless (× ``energy_scale`` eV in the base class)."""
        species = self.species_indices(graph.atomic_numbers)
        edge_length = edge_vectors.norm(dim=1)  # (n_edges,)
        edge_sh = o3.spherical_harmonics(self.sh_degrees, edge_vectors, normalize=True,
                                         normalization="component")  # (n_edges, n_sph)
        h = self.embedding(species)  # (n_atoms, embedding_dim)
        for layer in self.layers:
            h = layer(h, graph.edge_index, edge_sh, edge_length)
        energies = self.readout(h[:, :self.num_scalars]).squeeze(1)  # (n_atoms,)
        return self.rescale(energies, species)

    @property
    def receptive_layers(self) -> int:
        """One hop per interaction layer (the embedding reads only the species)."""
        return len(self.layers)

    def set_max_edges_per_block(self, max_edges: int | None) -> Facet:
        """Bound the memory of the convolutions: messages are made and summed for at most
        ``max_edges`` edges at a time, and recomputed in the backward (activation
        checkpointing). The results are unchanged (up to summation order); the cost is about
        one more forward of the convolutions per force call. For large systems on a GPU (the
        per-edge messages of a wide model take n_edges × (message columns) floats); None
        turns it off. Not saved with the model: a run-time setting.
        """
        if max_edges is not None and max_edges < 1:
            raise ConfigError(f"max_edges_per_block must be >= 1 or None, got {max_edges}")
        if max_edges is not None and "_compiled_inference" in self.__dict__:
            raise ConfigError(_BLOCKS_AND_COMPILE)
        for layer in self.layers:
            layer.max_edges_per_block = max_edges
        return self

    def enable_compile(self, enabled: bool = True) -> Facet:
        """:meth:`Potential.enable_compile`; refused while edge blocks are set."""
        if enabled and any(layer.max_edges_per_block is not None for layer in self.layers):
            raise ConfigError(_BLOCKS_AND_COMPILE)
        return super().enable_compile(enabled)


#: Edge blocks loop over a number of edges that changes every step, which a compiled function
#: would have to recompile for; their checkpointing cannot be traced by torch.func either.
_BLOCKS_AND_COMPILE = ("edge blocks (max_edges_per_block) and compiled inference cannot be "
                       "combined; use one or the other")


def _mixing_layer(irreps: o3.Irreps, kind: str, hidden: list[int], heads: int,
                  grid_res: Sequence[int] | None, normalization: str) -> S2MixingLayer:
    """The S² mixer of one layer: U = the largest l > 0 multiplicity, grid per ``kind``."""
    lmax = irreps.lmax
    channels = max([mul for mul, ir in irreps if ir.l > 0], default=irreps.count("0e"))
    if kind == "mlp":
        pointwise: nn.Module = GridMLP(channels, hidden, heads)
        default = DEFAULT_GRID_RES.get(lmax, exact_product_resolution(lmax))
    elif kind == "bilinear":
        pointwise = GridBilinear(channels)
        default = exact_product_resolution(lmax)
    else:
        raise ConfigError(f"facet mixer must be 'mlp' or 'bilinear', got {kind!r}")
    res_beta, res_alpha = default if grid_res is None else grid_res
    return S2MixingLayer(irreps, irreps, lmax=lmax, channels=channels, pointwise=pointwise,
                         res_beta=res_beta, res_alpha=res_alpha, normalization=normalization)

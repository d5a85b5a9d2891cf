"""CHGNet (``chgnet``) pretrained models as an mlip potential: ``"chgnet:0.3.0"``.

The network is chgnet's own (``CHGNet.load`` from the weights in the wheel's
``chgnet/pretrained/<name>/``). chgnet builds two graphs with its own neighbour search: the
*atom graph* (directed bonds within the atom-graph cutoff, 6 Å for 0.3.0, paired into
undirected bonds that carry one feature vector) and the *bond graph* (the angles: ordered
pairs of distinct directed bonds with the same centre atom, both shorter than the bond-graph
cutoff, 3 Å). Here both are rebuilt in torch from mlip's edges (:func:`chgnet_graph`), and
chgnet's embeddings, basis expansions, interaction blocks and readout run on them. chgnet's
graph converter, its force/stress autograd and its magnetic-moment head are not used: forces
and stress come from mlip's autograd path, the same derivative chgnet takes.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from mlip.errors import ConfigError
from mlip.graph import AtomicGraph
from mlip.models.foundation.base import FoundationPotential, import_extra

__all__ = ["CHGNetGraph", "CHGNetPotential", "chgnet_graph"]

#: the pretrained weight sets in the chgnet 0.4.2 wheel (chgnet/pretrained/<name>/)
_MODELS = ("0.3.0", "0.2.0", "r2scan")
#: elements of chgnet's embedding and composition tables (H … Pu)
_N_ELEMENTS = 94


@dataclass(frozen=True)
class CHGNetGraph:
    """chgnet's atom and bond graphs on mlip's edges (one batch, global atom indices).

    Attributes:
        atom_graph: (n_directed, 2) int64, centre i and neighbour j of the directed bonds
            shorter than the atom-graph cutoff (the edges of mlip's graph that are).
        bond_of_edge: (n_directed,) int64, the undirected bond of each directed one (i→j with
            image S and j→i with image -S share one).
        bond_lengths: (n_bonds,) Å, the length of each undirected bond.
        unit_vectors: (n_directed, 3), r_ij / |r_ij| of the directed bonds.
        angle_centres: (n_angles,) int64, the centre atom of each angle.
        angle_bonds: (n_angles, 2) int64, its first and second directed bonds.
    """

    atom_graph: torch.Tensor
    bond_of_edge: torch.Tensor
    bond_lengths: torch.Tensor
    unit_vectors: torch.Tensor
    angle_centres: torch.Tensor
    angle_bonds: torch.Tensor

    @property
    def n_angles(self) -> int:
        return int(self.angle_bonds.shape[0])

    def bond_graph(self) -> torch.Tensor:
        """chgnet's batched bond graph: (n_angles, 3) int64 rows (centre atom, undirected bond
        of the first directed bond, undirected bond of the second)."""
        return torch.stack([self.angle_centres, self.bond_of_edge[self.angle_bonds[:, 0]],
                            self.bond_of_edge[self.angle_bonds[:, 1]]], dim=1)


def chgnet_graph(edge_index: torch.Tensor, edge_shift: torch.Tensor, edge_vectors: torch.Tensor,
                 n_atoms: int, atom_cutoff: float, bond_cutoff: float) -> CHGNetGraph:
    """Rebuild chgnet's atom graph and bond graph from mlip's edges, vectorised.

    * **atom graph**: the edges shorter than ``atom_cutoff`` (a Verlet list's skin edges are
      dropped: chgnet's radial basis is exactly zero beyond its cutoff, value and gradient).
    * **undirected bonds**: i→j with image S and j→i with image -S are one bond; the pair is
      found from the integer keys (i, j, S), oriented so that i < j (or, for an atom and its
      own image, S's first non-zero component > 0). Its length is that of its first directed
      edge (the two are equal up to round-off).
    * **bond graph**: every ordered pair (d, e) of distinct directed bonds with the same centre
      atom, both shorter than ``bond_cutoff`` (so i≠j, an atom bonded to its own image, and
      the two directions of one self-image bond both count, as in chgnet's converter).

    Args:
        edge_index: (2, n_edges) int64, row 0 the centre i. edge_shift: (n_edges, 3) int64 S.
        edge_vectors: (n_edges, 3) Å, r_j - r_i + S·cell (inside the autograd graph).
        n_atoms: atoms in the batch. atom_cutoff, bond_cutoff: Å.
    """
    lengths = torch.linalg.vector_norm(edge_vectors, dim=1)
    keep = torch.nonzero(lengths < atom_cutoff).reshape(-1)
    i, j = edge_index[0, keep], edge_index[1, keep]
    shift, vectors, lengths = edge_shift[keep], edge_vectors[keep], lengths[keep]
    n_edges = int(keep.shape[0])

    # undirected bonds: the key (i, j, S) of one orientation, the same for both directions
    s0, s1, s2 = shift.unbind(dim=1)
    leading = torch.where(s0 != 0, s0, torch.where(s1 != 0, s1, s2))
    forward = (i < j) | ((i == j) & (leading > 0))
    sign = torch.where(forward, 1, -1).unsqueeze(1)
    keys = torch.cat([torch.where(forward, i, j).unsqueeze(1), torch.where(forward, j, i)
                      .unsqueeze(1), shift * sign], dim=1)
    _, bond_of_edge = torch.unique(keys, dim=0, return_inverse=True)
    bond_of_edge = bond_of_edge.reshape(-1)
    n_bonds = int(bond_of_edge.max()) + 1 if n_edges else 0
    order = torch.arange(n_edges, device=keep.device)
    first = torch.full((n_bonds,), n_edges, dtype=torch.long, device=keep.device)
    first = first.scatter_reduce(0, bond_of_edge, order, reduce="amin")

    # bond graph: ordered pairs of distinct short directed bonds around each centre
    short = torch.nonzero(lengths < bond_cutoff).reshape(-1)
    short = short[torch.argsort(i[short], stable=True)]
    centres = i[short]
    counts = torch.bincount(centres, minlength=n_atoms)
    starts = torch.cumsum(counts, 0) - counts
    per_bond = counts[centres]  # partners of each short bond, itself included
    left = torch.repeat_interleave(torch.arange(short.shape[0], device=keep.device), per_bond)
    offsets = torch.cumsum(per_bond, 0) - per_bond
    right = (starts[centres].repeat_interleave(per_bond)
             + torch.arange(left.shape[0], device=keep.device)
             - offsets.repeat_interleave(per_bond))
    distinct = left != right
    left, right = short[left[distinct]], short[right[distinct]]
    return CHGNetGraph(atom_graph=torch.stack([i, j], dim=1), bond_of_edge=bond_of_edge,
                       bond_lengths=lengths[first], unit_vectors=vectors / lengths.unsqueeze(1),
                       angle_centres=i[left], angle_bonds=torch.stack([left, right], dim=1))


class CHGNetPotential(FoundationPotential):
    """A pretrained CHGNet model (float32 as chgnet runs it; float64 also works).

    Per-atom energies: chgnet's readout MLP runs on each atom's final features (its pretrained
    models all use ``mlp_first``: an MLP per atom, then a sum) and chgnet adds the
    composition energy of its ``AtomRef`` (a fitted energy per element). E_i is the atom's
    readout output plus its element's AtomRef energy, exactly chgnet's ``site_energies``; their
    sum is chgnet's total energy (chgnet reports that per atom, ``e`` × n_atoms). Magnetic
    moments (chgnet's ``site_wise`` head) are not computed.

    Args:
        model: the pretrained model's name as chgnet names it (``0.3.0``, ``0.2.0``,
            ``r2scan``).
    """

    family: ClassVar[str] = "chgnet"
    package: ClassVar[str] = "chgnet"
    default_dtype: ClassVar[torch.dtype] = torch.float32
    models: ClassVar[tuple[str, ...]] = _MODELS

    def __init__(self, *, model: str = "0.3.0") -> None:
        name = self.check_model_name(model)
        chgnet = import_extra(self.package, self.family)
        from chgnet.model import CHGNet

        folder = Path(chgnet.__file__).parent / "pretrained" / name
        with contextlib.redirect_stdout(io.StringIO()):  # chgnet prints its parameter count
            network = CHGNet.load(model_name=name, use_device="cpu", verbose=False)
        if not network.mlp_first:
            raise ConfigError(f"chgnet:{name} pools atom features before its readout MLP, "
                              "which has no per-atom energies (not supported)")
        converter = network.graph_converter
        super().__init__(model=name, species=range(1, _N_ELEMENTS + 1),
                         cutoff=float(converter.atom_graph_cutoff))
        self.weights_path = str(next(folder.glob("*.pth.tar")))
        self.bond_cutoff = float(converter.bond_graph_cutoff)
        network.graph_converter = None  # mlip builds the graphs (chgnet_graph)
        self.network = network

    @staticmethod
    def _bonds_without_angles(graph: AtomicGraph, g: CHGNetGraph) -> torch.Tensor | None:
        """(n_bonds, 1) bool, True for the bonds of a system without any angle (None when
        every system has one). chgnet skips its bond and angle updates for a structure without
        angles; in a batch with angles elsewhere, those bonds keep their features, so that
        each system's energy is the one chgnet gives it alone (with ``chgnet:0.2.0``, whose
        bond update has a bias, chgnet's own batches would differ)."""
        system_has_angles = torch.bincount(graph.batch[g.angle_centres],
                                           minlength=graph.cell.shape[0]) > 0
        if bool(system_has_angles.all()):
            return None
        n_bonds = g.bond_lengths.shape[0]
        system_of_bond = torch.zeros(n_bonds, dtype=torch.long, device=g.bond_lengths.device)
        system_of_bond.scatter_(0, g.bond_of_edge, graph.batch[g.atom_graph[:, 0]])
        return ~system_has_angles[system_of_bond].unsqueeze(1)

    def atomic_energies(self, graph: AtomicGraph, edge_vectors: torch.Tensor) -> torch.Tensor:
        """chgnet's per-atom energies (its AtomRef energies included), (n_atoms,) eV."""
        net = self.network
        n_atoms = graph.atomic_numbers.shape[0]
        g = chgnet_graph(graph.edge_index, graph.edge_shift, edge_vectors, n_atoms,
                         self.cutoff, self.bond_cutoff)
        z = graph.atomic_numbers - 1  # chgnet's tables start at H
        radial = net.bond_basis_expansion
        bases_ag = radial.rbf_expansion_ag(g.bond_lengths)
        bases_bg = radial.rbf_expansion_bg(g.bond_lengths)
        atom_feas = net.atom_embedding(z)
        bond_feas = net.bond_embedding(bases_ag)
        weights_ag = net.bond_weights_ag(bases_ag)
        weights_bg = net.bond_weights_bg(bases_bg)
        angles = g.n_angles > 0
        if angles:
            bond_graph = g.bond_graph()
            # chgnet's bond vectors point from the neighbour to the centre: the same angles
            angle_feas = net.angle_embedding(net.angle_basis_expansion(
                g.unit_vectors[g.angle_bonds[:, 0]], g.unit_vectors[g.angle_bonds[:, 1]]))
            kept = self._bonds_without_angles(graph, g)
        for k, atom_layer in enumerate(net.atom_conv_layers):
            atom_feas = atom_layer(atom_feas=atom_feas, bond_feas=bond_feas,
                                   bond_weights=weights_ag, atom_graph=g.atom_graph,
                                   directed2undirected=g.bond_of_edge)
            if not angles or k == len(net.atom_conv_layers) - 1:
                continue
            bond_layer, angle_layer = net.bond_conv_layers[k], net.angle_layers[k]
            if bond_layer is not None:
                updated = bond_layer(atom_feas=atom_feas, bond_feas=bond_feas,
                                     bond_weights=weights_bg, angle_feas=angle_feas,
                                     bond_graph=bond_graph)
                bond_feas = updated if kept is None else torch.where(kept, bond_feas, updated)
                if angle_layer is not None:
                    angle_feas = angle_layer(atom_feas=atom_feas, bond_feas=bond_feas,
                                             angle_feas=angle_feas, bond_graph=bond_graph)
        if net.readout_norm is not None:
            atom_feas = net.readout_norm(atom_feas)
        readout = net.mlp(atom_feas).reshape(-1)
        if net.composition_model is None:
            return readout
        return readout + net.composition_model.fc.weight[0, z]

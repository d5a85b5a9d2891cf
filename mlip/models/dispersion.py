"""DFT-D3(BJ) dispersion as an additive term of any potential: :class:`WithDispersion`.

The D3 pair energies come from torch-dftd (``pip install mlip[dispersion]``), evaluated on
mlip's own edge vectors inside the autograd graph, so forces, stress and virial of the sum come
from the one autograd path of :func:`mlip.models.forces.energy_forces_stress`. See
docs/simulation.md, "Dispersion (D3)", for the choice of library and the cutoffs.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import re

import torch

from mlip.errors import ConfigError, MissingExtraError
from mlip.graph import AtomicGraph
from mlip.models.base import Potential

__all__ = ["D3_CN_CUTOFF", "D3_CUTOFF", "WithDispersion", "d3_functionals", "with_dispersion"]

_BOHR = 0.52917721067  # Å (ase.units.Bohr, the value torch-dftd's calculator uses)
#: pair cutoff of the D3 sum, Å: 95 bohr, torch-dftd's and the DFT-D3 program's default
D3_CUTOFF = 95.0 * _BOHR
#: coordination-number cutoff, Å: 40 bohr, torch-dftd's and the DFT-D3 program's default
D3_CN_CUTOFF = 40.0 * _BOHR


def _torch_dftd():
    """The torch_dftd package, or a :class:`MissingExtraError` saying what to install."""
    try:
        import torch_dftd.dftd3_xc_params
        import torch_dftd.functions.dftd3
        import torch_dftd.nn.dftd3_module
    except ImportError as error:
        raise MissingExtraError(
            "DFT-D3 dispersion needs the package 'torch-dftd', which is not installed; install "
            "the pinned version with: pip install mlip[dispersion]") from error
    return torch_dftd


@functools.cache
def d3_functionals() -> tuple[str, ...]:
    """The exchange-correlation functionals torch-dftd has D3(BJ) parameters for."""
    source = inspect.getsource(_torch_dftd().dftd3_xc_params.get_dftd3_default_params)
    bj = source.split('damping == "bj"')[1].split("elif damping")[0]
    return tuple(sorted(set(re.findall(r'xc == "([^"]+)"', bj))))


def _parse(spec: str) -> str:
    """The functional of a dispersion spec ``"d3bj:pbe"`` (or a bare ``"pbe"``), checked."""
    family, _, functional = spec.strip().lower().rpartition(":")
    if family not in ("", "d3bj"):
        raise ConfigError(f"unknown dispersion {spec!r}: only DFT-D3(BJ) is available, "
                          "written d3bj:FUNCTIONAL, e.g. d3bj:pbe")
    if functional not in d3_functionals():
        raise ConfigError(f"no D3(BJ) parameters for the functional {functional!r}; valid "
                          f"functionals: {', '.join(d3_functionals())}")
    return functional


class WithDispersion(Potential):
    """A potential plus the DFT-D3(BJ) dispersion energy (two-body, no three-body term).

    E_i = E_i^model + E_i^D3, where E_i^D3 is half the D3(BJ) energy of every pair (i, j) with
    r_ij ≤ ``cutoff``, its C6 from coordination numbers counted within ``cn_cutoff``
    (torch-dftd's ``edisp``). The graph is built with ``cutoff = max(model cutoff, D3 cutoff)``;
    the wrapped model sees only its own edges (r ≤ its cutoff). Elements: the model's.
    Not in :data:`mlip.models.MODELS` and not saved by ``save_model``: wrap the loaded model.

    Args:
        model: the potential to add dispersion to.
        functional: exchange-correlation functional of the D3(BJ) parameters, e.g. ``"pbe"``
            (:func:`d3_functionals` lists them; an unknown one is refused naming them).
        cutoff: D3 pair cutoff, Å (default 95 bohr ≈ 50.3 Å, the library's).
        cn_cutoff: coordination-number cutoff, Å (default 40 bohr ≈ 21.2 Å, the library's).
    """

    def __init__(self, *, model: Potential, functional: str, cutoff: float = D3_CUTOFF,
                 cn_cutoff: float = D3_CN_CUTOFF) -> None:
        functional = _parse(functional)
        if not 0 < cn_cutoff <= cutoff:
            raise ConfigError(f"D3 cutoffs must satisfy 0 < cn_cutoff <= cutoff, got "
                              f"cn_cutoff={cn_cutoff} Å, cutoff={cutoff} Å")
        super().__init__(species=model.species, cutoff=max(model.cutoff, cutoff))
        dftd = _torch_dftd()
        params = dftd.dftd3_xc_params.get_dftd3_default_params("bj", functional)
        self.model = model
        self.functional = functional
        self.d3_cutoff = float(cutoff)
        self.d3_cn_cutoff = float(cn_cutoff)
        self.d3 = dftd.nn.dftd3_module.DFTD3Module(
            params, cutoff=cutoff, cnthr=cn_cutoff, dtype=model.model_dtype(), bidirectional=True,
        ).to(device=model.species_index.device)

    @property
    def receptive_layers(self) -> int | None:
        """Hops of this graph's cutoff covering the model's reach and D3's (pair cutoff plus
        the coordination-number cutoff of the partner)."""
        inner = self.model.receptive_layers
        if inner is None:
            return None
        reach = max(inner * self.model.cutoff, self.d3_cutoff + self.d3_cn_cutoff)
        return math.ceil(reach / self.cutoff - 1e-12)

    def check_elements(self, elements) -> None:
        self.model.check_elements(elements)

    def node_energy(self, graph: AtomicGraph, edge_vectors: torch.Tensor) -> torch.Tensor:
        """E_i^model + E_i^D3, (n_atoms,) float64 eV."""
        length2 = (edge_vectors * edge_vectors).sum(dim=1)
        return (self._model_energy(graph, edge_vectors, length2)
                + self._d3_energy(graph, edge_vectors, length2))

    def _model_energy(self, graph: AtomicGraph, edge_vectors: torch.Tensor,
                      length2: torch.Tensor) -> torch.Tensor:
        """The wrapped model's per-atom energy on its own edges (r ≤ its cutoff)."""
        if self.model.cutoff >= graph.cutoff:
            return self.model.node_energy(graph, edge_vectors)
        keep = (length2 <= self.model.cutoff ** 2).nonzero().squeeze(1)
        own = dataclasses.replace(graph, edge_index=graph.edge_index[:, keep],
                                  edge_shift=graph.edge_shift[keep], cutoff=self.model.cutoff)
        return self.model.node_energy(own, edge_vectors[keep])

    def _d3_energy(self, graph: AtomicGraph, edge_vectors: torch.Tensor,
                   length2: torch.Tensor) -> torch.Tensor:
        """Per-atom D3(BJ) energy, (n_atoms,) float64 eV: torch-dftd's per-graph sum with every
        atom as its own "graph" (each directed edge i→j adds half the pair energy to i)."""
        functions = _torch_dftd().functions.dftd3
        n_atoms = graph.positions.shape[0]
        edge_index, vectors = graph.edge_index, edge_vectors
        if self.d3_cutoff < graph.cutoff:
            keep = (length2 <= self.d3_cutoff ** 2).nonzero().squeeze(1)
            edge_index, vectors = edge_index[:, keep], vectors[keep]
        if n_atoms == 0 or edge_index.shape[1] == 0:
            return torch.zeros(n_atoms, dtype=torch.float64, device=edge_vectors.device)
        distance = torch.sqrt((vectors * vectors).sum(dim=1) + 1e-20) / functions.d3_autoang
        energy = functions.edisp(
            graph.atomic_numbers, distance, edge_index, c6ab=self.d3.c6ab, r0ab=self.d3.r0ab,
            rcov=self.d3.rcov, r2r4=self.d3.r2r4, params=self.d3.params,
            cutoff=self.d3_cutoff / _BOHR, cnthr=self.d3_cn_cutoff / _BOHR,
            batch=graph.batch, batch_edge=edge_index[0],
            cell=edge_vectors.new_empty((n_atoms, 0)),  # edisp counts its "graphs" by cell rows
            damping="bj", bidirectional=True, abc=False)
        return functions.d3_autoev * energy

    def __repr__(self) -> str:
        return (f"WithDispersion({self.model!r}, d3bj:{self.functional}, "
                f"cutoff={self.d3_cutoff:.2f} Å, cn_cutoff={self.d3_cn_cutoff:.2f} Å)")


def with_dispersion(model: Potential, dispersion: str | None, **cutoffs: float) -> Potential:
    """``model`` plus D3(BJ) dispersion as ``dispersion`` names it (``"d3bj:pbe"`` or
    ``"pbe"``), on the model's device and dtype; ``model`` itself when ``dispersion`` is None.

    Args:
        cutoffs: ``cutoff`` and ``cn_cutoff`` of :class:`WithDispersion`, Å.
    """
    if dispersion is None:
        return model
    return WithDispersion(model=model, functional=dispersion, **cutoffs).eval()

"""An ASE calculator for any mlip potential."""

from __future__ import annotations

import os

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.data import chemical_symbols

from mlip.errors import ConfigError, UnknownElementError
from mlip.graph import AtomicGraph, graph_from_neighbors, update_neighbors
from mlip.models import Potential
from mlip.models.dispersion import with_dispersion
from mlip.models.loading import resolve_model
from mlip.neighbors import VerletList
from mlip.structures import Structures, full_to_voigt

__all__ = ["MLIPCalculator"]

_DTYPES = {"float64": torch.float64, "float32": torch.float32}


class MLIPCalculator(Calculator):
    """ASE calculator backed by an mlip :class:`~mlip.models.Potential`.

    Provides ``energy`` and ``free_energy`` (eV, identical), ``forces`` (eV/Å), ``energies``
    (per-atom, eV; they sum to the energy) and, for periodic structures, ``stress`` (eV/Å³,
    Voigt order xx yy zz yz xz xy, ASE sign). Works with ``ase.md`` integrators,
    ``ase.optimize`` and ``ase.filters.FrechetCellFilter``. The forces are the potential's raw
    forces: ASE applies the atoms' constraints (any kind) in ``atoms.get_forces()``, so fixed
    atoms stay fixed under ``ase.md``/``ase.optimize``. The neighbour list is built with a
    Verlet skin and reused while no atom has moved more than half of it.

    Args:
        model: a potential or the path of a checkpoint written by :func:`mlip.models.save_model`.
            A potential that must be moved, cast or put in eval mode is copied first: the
            caller's object is never changed.
        device: torch device to run on.
        dtype: model dtype, ``torch.float64``/``torch.float32`` or ``"float64"``/``"float32"``
            (default: keep the model's / checkpoint's dtype).
        skin: Verlet skin, Å (0 rebuilds the list at every call).
        compile: evaluate the model through ``torch.compile``
            (:meth:`mlip.models.Potential.enable_compile`; the first call compiles).
        dispersion: add DFT-D3(BJ) dispersion, ``"d3bj:FUNCTIONAL"`` (e.g. ``"d3bj:pbe"``;
            :class:`mlip.models.dispersion.WithDispersion`, needs ``mlip[dispersion]``).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies"]

    def __init__(self, model: Potential | str | os.PathLike, *, device: str | torch.device = "cpu",
                 dtype: torch.dtype | str | None = None, skin: float = 1.0, compile: bool = False,
                 dispersion: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if isinstance(dtype, str):
            if dtype not in _DTYPES:
                raise ConfigError(f"dtype {dtype!r} is not supported; use one of {sorted(_DTYPES)}")
            dtype = _DTYPES[dtype]
        self.model = resolve_model(model, device=device, dtype=dtype,
                                   compile=compile and dispersion is None)
        if dispersion is not None:
            self.model = with_dispersion(self.model, dispersion)
            if compile:
                self.model.enable_compile()
        self.device = torch.device(device)
        self.dtype = next((p.dtype for p in self.model.parameters() if p.is_floating_point()),
                          torch.float64)
        self.neighbors = VerletList(self.model.cutoff, skin)

    def calculate(self, atoms: Atoms | None = None, properties: list[str] | None = None,
                  system_changes: list[str] = all_changes) -> None:
        """Compute every implemented property of ``atoms`` (stress only when periodic)."""
        super().calculate(atoms, properties or ["energy"], system_changes)
        atoms = self.atoms
        self._check_elements(atoms.numbers)
        if "stress" in (properties or []) and not atoms.pbc.any():
            raise PropertyNotImplementedError("stress is not defined for a structure without "
                                              "periodic boundary conditions")
        if "numbers" in system_changes or "pbc" in system_changes:
            self.neighbors.reset()
        graph = self._graph(atoms)
        periodic = bool(atoms.pbc.any())
        with torch.enable_grad():
            out = self.model(graph, compute_forces=True, compute_stress=periodic)
        energy = float(out.energy[0])
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": out.forces.detach().cpu().numpy().astype(np.float64),
            "energies": out.node_energy.detach().cpu().numpy().astype(np.float64),
        }
        if periodic:
            self.results["stress"] = full_to_voigt(
                out.stress[0].detach().cpu().numpy().astype(np.float64))

    def _check_elements(self, numbers: np.ndarray) -> None:
        unknown = sorted(set(int(z) for z in numbers) - set(self.model.species))
        if unknown:
            names = ", ".join(f"{chemical_symbols[z]} (Z={z})" for z in unknown)
            known = ", ".join(chemical_symbols[z] for z in self.model.species)
            raise UnknownElementError(f"the model does not know element(s) {names}; "
                                      f"it knows {known}")

    def _graph(self, atoms: Atoms) -> AtomicGraph:
        """The one-structure batch with edges inside the cutoff, from the skin list."""
        structures = Structures.from_ase(atoms, torch.float64, self.device)
        neighbors = update_neighbors(self.neighbors, structures)
        return graph_from_neighbors(structures, neighbors, self.model.cutoff, self.dtype)

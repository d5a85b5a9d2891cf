"""The :class:`Potential` base class every model family derives from."""

from __future__ import annotations

import functools
import inspect
from typing import Any, ClassVar, Iterable, Mapping, Sequence

import torch
from ase.data import chemical_symbols
from torch import nn

from mlip.errors import ConfigError, UnknownElementError
from mlip.graph import AtomicGraph
from mlip.models.output import PotentialOutput
from mlip.nn.precision import flush_tiny_
from mlip.nn.scatter import scatter_sum

__all__ = ["Potential", "isolation_switch"]

_N_ELEMENTS = len(chemical_symbols)
_FLOAT64_BUFFERS = ("reference_energies", "energy_scale", "energy_shift")


class Potential(nn.Module):
    """A machine-learning potential: per-atom energies from an :class:`AtomicGraph`.

    Subclasses implement :meth:`atomic_energies` (the learned, unscaled per-atom output) and
    take **keyword-only** constructor arguments, which are recorded in ``self.hparams`` and
    are what a checkpoint stores. The base class adds the energy normalisation

        E_i = E0[Z_i] + s_i · (scale · e_i + shift)

    (``E0`` per-element reference energies, ``scale``/``shift`` dataset statistics; all eV),
    where s_i is the isolated-atom switch of :func:`isolation_switch`: 0 for an atom without
    neighbours (its energy is exactly E0[Z_i], as is an empty graph's: the sum of E0) and 1 as
    soon as it has one neighbour closer than about 0.6 r_c, C² in between. The network runs
    in the model's dtype; E0, scale, shift, s_i and the sums over atoms are float64, so
    ``energy`` and ``node_energy`` are float64 for a float32 model too. Forces and stress
    come from the single autograd path :func:`mlip.models.forces.energy_forces_stress` in the
    model's dtype; a graph in another floating dtype is cast to the model's at the boundary.

    Args:
        species: atomic numbers the model knows.
        cutoff: interaction radius, Å.
    """

    registry_name: str = ""
    hparams: dict[str, Any]
    #: what the family promises under rotations: the largest relative energy error and force
    #: (and stress) error of its default configuration in float64 (checked by
    #: :class:`mlip.testing.ModelConformance`); exact families state round-off
    symmetry_tolerance: ClassVar[dict[str, float]] = {"energy": 1e-10, "forces": 1e-10}
    #: "E(3)": also invariant under reflections; "SO(3)": rotations only
    symmetry_group: ClassVar[str] = "E(3)"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        original = cls.__init__
        signature = inspect.signature(original)

        @functools.wraps(original)
        def init(self: Potential, *args: Any, **kw: Any) -> None:
            original(self, *args, **kw)
            if type(self) is cls:
                bound = signature.bind(self, *args, **kw)
                bound.apply_defaults()
                recorded = dict(bound.arguments)
                recorded.pop("self")
                self.hparams = _plain(recorded)

        cls.__init__ = init  # type: ignore[method-assign]

    def __init__(self, *, species: Sequence[int], cutoff: float) -> None:
        super().__init__()
        species = sorted({int(z) for z in species})
        if not species:
            raise ConfigError("a model needs at least one species")
        bad = [z for z in species if not 0 < z < _N_ELEMENTS]
        if bad:
            raise ConfigError(f"invalid atomic numbers in species: {bad}")
        if not cutoff > 0:
            raise ConfigError(f"cutoff must be > 0 Å, got {cutoff}")
        self.species = species
        self.cutoff = float(cutoff)
        index = torch.full((_N_ELEMENTS,), -1, dtype=torch.long)
        index[torch.tensor(species)] = torch.arange(len(species))
        self.register_buffer("species_index", index, persistent=False)
        self.register_buffer("reference_energies", torch.zeros(len(species), dtype=torch.float64))
        self.register_buffer("energy_scale", torch.ones((), dtype=torch.float64))
        self.register_buffer("energy_shift", torch.zeros((), dtype=torch.float64))
        self.register_load_state_dict_post_hook(_flush_tiny_weights)

    # ------------------------------------------------------------------ to implement
    def atomic_energies(self, graph: AtomicGraph, edge_vectors: torch.Tensor) -> torch.Tensor:
        """Learned per-atom energies before scale, shift and E0.

        Args:
            graph: the batch (its ``positions``/``cell`` must not be used for geometry).
            edge_vectors: (n_edges, 3) Å, r_j - r_i + S @ cell, inside the autograd graph.

        Returns:
            (n_atoms,) dimensionless (multiplied by ``energy_scale`` eV).
        """
        raise NotImplementedError

    @property
    def receptive_layers(self) -> int | None:
        """Message-passing hops of the energy: E_i depends only on atoms reachable from i in at
        most this many edges of length <= ``cutoff`` (so within ``receptive_layers × cutoff``
        Å); None when the family does not state it (:mod:`mlip.lammps` refuses such a model).
        """
        return None

    # ------------------------------------------------------------------ provided
    def species_indices(self, atomic_numbers: torch.Tensor) -> torch.Tensor:
        """Map atomic numbers (n_atoms,) to indices into ``self.species`` (-1 for an element
        the model does not know: :meth:`check_elements` rejects those before a call)."""
        return self.species_index[atomic_numbers]

    def check_elements(self, elements: Iterable[int]) -> None:
        """Reject elements the model was not trained on (host values: no device read).

        Args:
            elements: atomic numbers, e.g. ``graph.layout.elements``.

        Raises:
            UnknownElementError: naming the unknown elements and the known ones.
        """
        unknown = sorted(set(elements) - set(self.species))
        if unknown:
            names = ", ".join(f"{chemical_symbols[z]} (Z={z})" for z in unknown)
            known = ", ".join(chemical_symbols[z] for z in self.species)
            raise UnknownElementError(
                f"the model does not know element(s) {names}; it knows {known}"
            )

    def node_energy(self, graph: AtomicGraph, edge_vectors: torch.Tensor) -> torch.Tensor:
        """Per-atom energies E_i = E0[Z_i] + s_i·(scale·e_i + shift), (n_atoms,) float64 eV."""
        species = self.species_indices(graph.atomic_numbers)
        learned = self.atomic_energies(graph, edge_vectors)
        return self.compose_node_energy(learned, species, graph.edge_index, edge_vectors)

    def compose_node_energy(self, learned: torch.Tensor, species: torch.Tensor,
                            edge_index: torch.Tensor, edge_vectors: torch.Tensor) -> torch.Tensor:
        """E_i = E0[Z_i] + s_i·(scale·e_i + shift) in float64 (see the class docstring).

        Args:
            learned: (n_atoms,) e_i in the model's dtype. species: (n_atoms,) species indices.
            edge_index: (2, n_edges), row 0 the centre i. edge_vectors: (n_edges, 3) Å.

        Returns:
            (n_atoms,) float64 eV.
        """
        switch = isolation_switch(edge_index, edge_vectors, self.cutoff, learned.shape[0])
        interaction = learned.to(torch.float64) * self.energy_scale + self.energy_shift
        return self.reference_energies[species] + switch.to(torch.float64) * interaction

    def model_dtype(self) -> torch.dtype:
        """The floating dtype the network runs in (its parameters'; float64 without any)."""
        return next((p.dtype for p in self.parameters() if p.is_floating_point()), torch.float64)

    def _apply(self, fn: Any, recurse: bool = True) -> Potential:
        """``.to``/``.float``/``.cuda``: E0, scale and shift follow the device but stay float64.

        Weights below :func:`mlip.nn.precision.tiny_threshold` of the new dtype (subnormal or
        near it, e.g. float64 weights decayed to 1e-40 cast to float32) become exact zeros.
        """
        kept = {name: self._buffers.pop(name) for name in _FLOAT64_BUFFERS}
        try:
            super()._apply(fn, recurse)
        finally:
            for name, value in kept.items():
                self._buffers[name] = value.to(device=fn(value).device)
        _flush_tiny_weights(self)
        return self

    def enable_compile(self, enabled: bool = True) -> Potential:
        """Compile inference (energy, forces, stress) with ``torch.compile``; ``False`` undoes it.

        Used in eval mode when forces are asked for; training keeps the autograd path. The first
        call compiles (seconds to minutes; see
        :class:`mlip.models.forces.CompiledEnergyForcesStress`). It pays off where
        per-operation overhead dominates (small systems, cheap models, long MD runs), not for a
        heavy model on a CPU. A run-time setting, not saved with the model.
        """
        from mlip.models.forces import CompiledEnergyForcesStress, cpu_compiler_available

        on_cpu = all(t.device.type == "cpu" for t in self.buffers())
        if enabled and on_cpu and not cpu_compiler_available():
            raise ConfigError("compiling a model on a CPU needs a C++ compiler ($CXX, g++ or "
                              "c++) and none was found; run without compile")
        if enabled:
            self.__dict__["_compiled_inference"] = CompiledEnergyForcesStress(self)
        else:
            self.__dict__.pop("_compiled_inference", None)
        return self

    def set_energy_reference(
        self, reference_energies: Mapping[int, float], scale: float = 1.0, shift: float = 0.0
    ) -> None:
        """Set per-element E0 (eV), the output scale (eV) and the per-atom shift (eV)."""
        e0 = torch.zeros(len(self.species), dtype=torch.float64)
        for z, value in reference_energies.items():
            if int(z) not in self.species:
                raise UnknownElementError(
                    f"reference energy for {chemical_symbols[int(z)]} (Z={z}), "
                    "which is not among the model's species"
                )
            e0[self.species.index(int(z))] = float(value)
        self.reference_energies.copy_(e0.to(self.reference_energies.dtype))
        self.energy_scale.fill_(float(scale))
        self.energy_shift.fill_(float(shift))

    def forward(
        self, graph: AtomicGraph, compute_forces: bool = True, compute_stress: bool = False
    ) -> PotentialOutput:
        """Energy, per-atom energy, forces, stress and virial of a batch.

        A graph in another floating dtype than the model's is cast to the model's first.

        Returns:
            ``energy`` (n_graphs,) eV and ``node_energy`` (n_atoms,) eV, both float64, and when
            asked ``forces`` (n_atoms, 3) eV/Å = -dE/dr, ``stress`` (n_graphs, 3, 3) eV/Å³ (ASE
            sign; NaN for non-periodic graphs) and ``virial`` (n_graphs, 3, 3) eV = -stress·V,
            in the model's dtype (None when not asked). In training mode the autograd graph is
            kept so that losses on forces and stress can be differentiated.
        """
        from mlip.models.forces import energy_forces_stress

        self.check_elements(graph.layout.elements)
        dtype = self.model_dtype()
        if graph.positions.dtype != dtype:  # e.g. AtomicGraph.from_ase (float64), float32 model
            graph = graph.to(dtype=dtype)
        compiled = self.__dict__.get("_compiled_inference")
        if compiled is not None and compute_forces and not self.training:
            return compiled(graph, compute_stress)
        return energy_forces_stress(
            self,
            graph,
            compute_forces=compute_forces,
            compute_stress=compute_stress,
            create_graph=self.training,
        )


def _flush_tiny_weights(model: nn.Module, *_: Any) -> None:
    """Zero parameters and floating buffers below the tiny threshold (also a load hook).

    Subnormal weights slow CPU matrix products 50–100× (see :mod:`mlip.nn.precision`).
    """
    flush_tiny_(model.parameters(), count=False)
    flush_tiny_(model.buffers(), count=False)


def _plain(value: Any) -> Any:
    """Convert hyper-parameters to plain Python types (lists, dicts, numbers, strings)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value


def isolation_switch(edge_index: torch.Tensor, edge_vectors: torch.Tensor, cutoff: float,
                     n_atoms: int) -> torch.Tensor:
    """s_i = S(min(4 c_i, 1)), c_i = Σ_j (1 − r_ij²/r_c²)³: 0 for an atom without neighbours.

    c_i is atom i's neighbour count weighted by (1 − r²/r_c²)³ (zero with its first two
    derivatives at r_c, and free of square roots) and S(x) = 10x³ − 15x⁴ + 6x⁵ the C²
    smoothstep, so s_i is C² in the positions, exactly 0 when no neighbour is inside r_c and
    exactly 1 once c_i ≥ 1/4 (one neighbour closer than about 0.6 r_c, or a few farther out).
    Edges beyond r_c (a Verlet list's skin) count zero.

    Args:
        edge_index: (2, n_edges) int64, row 0 the centre i. edge_vectors: (n_edges, 3) Å.
        cutoff: r_c, Å. n_atoms: number of atoms.

    Returns:
        (n_atoms,) in [0, 1], dtype of ``edge_vectors``.
    """
    inside = (1.0 - (edge_vectors * edge_vectors).sum(dim=1) * (1.0 / cutoff**2)).clamp(min=0.0)
    x = (4.0 * scatter_sum(inside * inside * inside, edge_index[0], n_atoms)).clamp(max=1.0)
    return x * x * x * (10.0 + x * (-15.0 + 6.0 * x))

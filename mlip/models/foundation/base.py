"""What every foundation-model adapter shares: :class:`FoundationPotential`."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import ClassVar, Sequence

import torch

from mlip.errors import ConfigError, MissingExtraError
from mlip.models.base import Potential

__all__ = ["FoundationPotential", "import_extra"]


def import_extra(package: str, family: str) -> ModuleType:
    """Import the optional ``package`` an adapter wraps, or say how to install it.

    Raises:
        MissingExtraError: naming the package and ``pip install mlip[foundation]``.
    """
    if importlib.util.find_spec(package) is None:
        raise MissingExtraError(
            f"the {family!r} models need the package {package!r}, which is not installed; "
            "install the pinned version with: pip install mlip[foundation]")
    return importlib.import_module(package)


class FoundationPotential(Potential):
    """A pretrained potential of another package, evaluated on mlip's graph.

    The adapter returns the package's own per-atom energies (eV, already including its
    reference energies, scale and shift) from mlip's edge vectors, so forces and stress come
    from mlip's one autograd path (:func:`mlip.models.forces.energy_forces_stress`). The base
    class's composition ``E0 + s_i·(scale·e_i + shift)`` is replaced by ``E_i = e_i``: a
    foreign model keeps its own energy of an isolated atom, and mlip's E0, scale, shift and
    isolated-atom switch are not applied (they stay at their neutral values and unused).

    Not in :data:`mlip.models.MODELS`: it is loaded by name (:func:`load_foundation`), not
    from a potential file, and cannot be saved with ``save_model``.

    Subclasses set ``family``, ``package``, ``default_dtype`` and ``models`` (the accepted
    model names), and implement :meth:`atomic_energies`.
    """

    #: prefix of the model names, e.g. "sevennet" in "sevennet:7net-0"
    family: ClassVar[str] = ""
    #: the importable package that holds the network and its weights
    package: ClassVar[str] = ""
    #: the dtype the package runs the model in
    default_dtype: ClassVar[torch.dtype] = torch.float32
    #: accepted model names (as the package names its pretrained weights)
    models: ClassVar[Sequence[str]] = ()

    def __init__(self, *, model: str, species: Sequence[int], cutoff: float) -> None:
        super().__init__(species=species, cutoff=cutoff)
        self.model_name = model

    @classmethod
    def check_model_name(cls, model: str) -> str:
        """``model`` normalised (lower case), or a :class:`ConfigError` naming the known ones."""
        key = model.strip().lower()
        if key not in cls.models:
            raise ConfigError(f"unknown {cls.family} model {model!r}; available: "
                              f"{', '.join(cls.models)}")
        return key

    def compose_node_energy(self, learned: torch.Tensor, species: torch.Tensor,
                            edge_index: torch.Tensor, edge_vectors: torch.Tensor) -> torch.Tensor:
        """E_i = e_i in float64: the package's own per-atom energy, eV (see the class doc)."""
        return learned.to(torch.float64)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.family}:{self.model_name}, cutoff={self.cutoff} Å)"

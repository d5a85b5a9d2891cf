"""Potentials: the :class:`Potential` interface, the model registry and checkpoints."""

from mlip.models import equiformer_v3, facet, lennard_jones, tdn  # noqa: F401  (registers the families)
from mlip.models.base import Potential
from mlip.models.checkpoint import load_model, save_model
from mlip.models.forces import energy_forces_stress
from mlip.models.output import PotentialOutput
from mlip.models.registry import MODELS, build, register_model

__all__ = ["Potential", "MODELS", "build", "register_model", "load_model", "save_model",
           "energy_forces_stress", "PotentialOutput"]

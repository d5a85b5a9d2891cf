"""mlip: train equivariant machine-learning interatomic potentials and run them."""

__version__ = "0.1.0"

from mlip.errors import MLIPError  # noqa: E402
from mlip.graph import AtomicGraph  # noqa: E402
from mlip.targets import LabelledBatch, Targets  # noqa: E402


def load_model(path, device="cpu", dtype=None):
    """Load a saved potential (see :func:`mlip.models.load_model`)."""
    from mlip.models import load_model as _load

    return _load(path, device=device, dtype=dtype)


__all__ = ["__version__", "AtomicGraph", "LabelledBatch", "Targets", "MLIPError", "load_model"]

"""A ready-to-run potential from a module or a saved file, shared by every caller of a model
(the MD driver, relaxation, the ASE calculator, the command line)."""

from __future__ import annotations

import copy
import os

import torch

from mlip.models.base import Potential
from mlip.models.checkpoint import load_model

__all__ = ["resolve_model"]


def resolve_model(model: Potential | str | os.PathLike, device: str | torch.device = "cpu",
                  dtype: torch.dtype | None = None, *, compile: bool = False) -> Potential:
    """A ready-to-run potential (eval mode) from a module or a checkpoint path.

    A module passed in is never changed: it is used as it is when it already runs on
    ``device`` in ``dtype`` in eval mode (and no compile is asked for), and deep-copied first
    otherwise, so that moving, casting, switching to eval mode or compiling never alters the
    caller's object.

    Args:
        model: a :class:`mlip.models.Potential` or the path of a file written by ``save_model``.
        device: where the model runs.
        dtype: floating dtype of the model (default: keep / as saved).
        compile: evaluate it through ``torch.compile`` (:meth:`Potential.enable_compile`).
    """
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model, device=device, dtype=dtype)
    elif compile or not _runs_as_is(model, torch.device(device), dtype):
        model = copy.deepcopy(model).to(device=device, dtype=dtype)
    model = model.eval()
    return model.enable_compile() if compile else model


def _runs_as_is(model: Potential, device: torch.device, dtype: torch.dtype | None) -> bool:
    """Whether ``model`` is in eval mode with every tensor on ``device`` (and in ``dtype``)."""
    tensors = [*model.parameters(), *model.buffers()]
    same_device = all(_same_device(t.device, device) for t in tensors)
    same_dtype = dtype is None or all(t.dtype == dtype for t in tensors if t.is_floating_point())
    return same_device and same_dtype and not model.training


def _same_device(actual: torch.device, wanted: torch.device) -> bool:
    """``cuda`` (current device) and ``cuda:0`` count as one place when 0 is current."""
    if actual.type != wanted.type:
        return False
    if wanted.index is None and actual.type == "cuda":
        return actual.index == torch.cuda.current_device()
    return wanted.index is None or actual.index == wanted.index

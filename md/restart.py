"""MD checkpoints: the full state, the integrator settings, the per-system run status, the
run's counters (neighbour-list builds, simulated time) and where it writes its outputs.

A run restarted from a checkpoint reproduces the uninterrupted run bit for bit on the same
device: the noise is a pure function of (seed, step), and the driver drops its neighbour list
whenever it writes a checkpoint, so both runs rebuild it at the same positions and get the same
pairs in the same order.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from mlip.errors import CheckpointMismatchError
from mlip.files import atomic_torch_save, load_payload
from mlip.md.constraints import Constraints
from mlip.md.npt import CRescaleState
from mlip.md.nvt import LangevinState, NoseHooverState
from mlip.md.relax import FireState
from mlip.md.state import MDState
from mlip.md.status import RunStatus
from mlip.structures import Layout

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint"]

FORMAT = "mlip-md-restart"
FORMAT_VERSION = 2  # 2: counters and outputs; bath work in Langevin/NPT states
_STATE_TYPES = {cls.__name__: cls for cls in (MDState, LangevinState, NoseHooverState,
                                              CRescaleState, FireState)}


@dataclass(frozen=True)
class Checkpoint:
    """What a restart needs.

    Attributes:
        state: the MD state (any subclass). settings: ``make_integrator`` keyword arguments
        plus ``ensemble``. status: the per-system run status.
        counters: ``nl_builds`` (neighbour-list builds so far) and ``time_ps`` (simulated
            time, which a change of time step on restart keeps continuous).
        outputs: the run's :class:`mlip.md.MDOutputs` fields (paths as strings), or None.
    """

    state: MDState
    settings: dict[str, Any]
    status: RunStatus
    counters: dict[str, int | float] = field(default_factory=dict)
    outputs: dict[str, Any] | None = None


def save_checkpoint(path: str | os.PathLike, checkpoint: Checkpoint) -> None:
    """Write ``checkpoint`` atomically (temporary file + rename)."""
    state = checkpoint.state
    fields = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
    payload = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "state_type": type(state).__name__,
        "state": {k: _stored(v) for k, v in fields.items()},
        "settings": checkpoint.settings,
        "status": checkpoint.status.to_checkpoint(),
        "counters": dict(checkpoint.counters),
        "outputs": checkpoint.outputs,
    }
    atomic_torch_save(payload, path)


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointMismatchError: missing, unreadable or foreign file, unsupported version,
            unknown state type or incomplete run status.
    """
    payload = load_payload(path, FORMAT, "MD checkpoint", FORMAT_VERSION)
    cls = _STATE_TYPES.get(payload["state_type"])
    if cls is None:
        raise CheckpointMismatchError(f"{path}: unknown state type {payload['state_type']!r}")
    stored = dict(payload["state"])
    if "layout" not in stored:  # written while the state held a batch tensor
        batch, cell = stored.pop("batch"), stored["cell"]
        stored["layout"] = Layout.from_tensors(torch.bincount(batch, minlength=cell.shape[0]),
                                               stored["atomic_numbers"], stored["pbc"]).to_dict()
    state = cls(**{k: _restored(k, v, device) for k, v in stored.items()})
    return Checkpoint(state=state, settings=payload["settings"],
                      status=RunStatus.from_checkpoint(payload["status"], device, path),
                      counters=payload["counters"], outputs=payload["outputs"])


def _stored(value: Any) -> Any:
    """A state field as saved: tensors on the CPU, constraints and layout as dicts."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, (Constraints, Layout)):
        return value.to_dict()
    return value


def _restored(name: str, value: Any, device: str | torch.device) -> Any:
    """Inverse of :func:`_stored` for the field ``name``, on ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if name == "constraints" and value is not None:
        return Constraints.from_dict(value, device)
    if name == "layout":
        return Layout.from_dict(value, device)
    return value

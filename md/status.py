"""The per-system status of an MD run: which systems were stopped, why, when, and whether that
was reported yet. A frozen value of device tensors, so that the inner loop never reads the
device to update it; converted explicitly to and from the dictionary a checkpoint stores."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from mlip.errors import CheckpointMismatchError
from mlip.md.state import MDState, volume

__all__ = ["RunStatus"]


@dataclass(frozen=True)
class RunStatus:
    """Per-system status of an MD run; every field is an (n_graphs,) tensor on the run's device.

    Attributes:
        code: int64 failure code of :func:`mlip.md.guard.check_step` (0: healthy).
        value: float64 offending value of the failure (its unit follows the code).
        step: int64 step at which the system failed (0 while healthy).
        reported: bool, the failure has been reported (logged, last good frame written).
        volume0: float64 cell volume at the start of the run, Å³ (the reference of the
            volume check).
    """

    code: torch.Tensor
    value: torch.Tensor
    step: torch.Tensor
    reported: torch.Tensor
    volume0: torch.Tensor

    @classmethod
    def start(cls, state: MDState) -> RunStatus:
        """Every system healthy, the volumes of ``state`` as the reference."""
        n, device = state.n_graphs, state.positions.device
        return cls(code=torch.zeros(n, dtype=torch.long, device=device),
                   value=torch.zeros(n, dtype=torch.float64, device=device),
                   step=torch.zeros(n, dtype=torch.long, device=device),
                   reported=torch.zeros(n, dtype=torch.bool, device=device),
                   volume0=volume(state.cell))

    @property
    def healthy(self) -> torch.Tensor:
        """(n_graphs,) bool: not stopped."""
        return self.code == 0

    def record(self, code: torch.Tensor, value: torch.Tensor, step: int) -> RunStatus:
        """The status after a step whose checks gave ``code``/``value``: systems healthy
        until now that fail (code > 0) keep this code, value and step; the rest is kept."""
        newly = self.healthy & (code > 0)
        return dataclasses.replace(self, code=torch.where(newly, code, self.code),
                                   value=torch.where(newly, value, self.value),
                                   step=torch.where(newly, step, self.step))

    def pending(self) -> torch.Tensor:
        """(n_graphs,) bool: failed and not reported yet."""
        return (self.code > 0) & ~self.reported

    def mark_reported(self, systems: torch.Tensor) -> RunStatus:
        """The status with the failures of ``systems`` ((n_graphs,) bool) reported."""
        return dataclasses.replace(self, reported=self.reported | systems)

    def to_checkpoint(self) -> dict[str, torch.Tensor]:
        """The fields as a checkpoint stores them: name → CPU tensor."""
        return {f.name: getattr(self, f.name).detach().cpu() for f in dataclasses.fields(self)}

    @classmethod
    def from_checkpoint(cls, stored: dict[str, torch.Tensor], device: str | torch.device,
                        path: object = "checkpoint") -> RunStatus:
        """Inverse of :meth:`to_checkpoint`, on ``device``.

        Raises:
            CheckpointMismatchError: a field is missing or not a tensor (names it and ``path``).
        """
        values = {}
        for f in dataclasses.fields(cls):
            value = stored.get(f.name) if isinstance(stored, dict) else None
            if not isinstance(value, torch.Tensor):
                raise CheckpointMismatchError(f"{path}: run status field {f.name!r} is missing "
                                              "or not a tensor")
            values[f.name] = value.to(device)
        return cls(**values)

"""Exponential moving average of model weights (validation and export use the averaged weights)."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

__all__ = ["ExponentialMovingAverage"]


class ExponentialMovingAverage:
    """θ_ema ← d_t θ_ema + (1 − d_t) θ after every optimiser step, d_t = min(d, (1 + t)/(10 + t)).

    The warm-up of d_t (as in ``torch_ema``, used by MACE) keeps early averages from being
    dominated by the random initialisation.

    Args:
        model: the module whose floating-point parameters are averaged.
        decay: d, e.g. 0.99.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.num_updates = 0
        self.shadow = [p.detach().clone() for p in self._parameters(model)]

    @staticmethod
    def _parameters(model: nn.Module) -> list[nn.Parameter]:
        return [p for p in model.parameters() if p.requires_grad]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend the current parameters of ``model`` into the average."""
        self.num_updates += 1
        decay = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for average, param in zip(self.shadow, self._parameters(model)):
            average.lerp_(param.detach(), 1.0 - decay)

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily load the averaged weights into ``model``; restore them on exit."""
        params = self._parameters(model)
        saved = [p.detach().clone() for p in params]
        with torch.no_grad():
            for param, average in zip(params, self.shadow):
                param.copy_(average)
        try:
            yield model
        finally:
            with torch.no_grad():
                for param, value in zip(params, saved):
                    param.copy_(value)

    def state_dict(self) -> dict:
        """Checkpointable state."""
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": list(self.shadow)}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
        for average, value in zip(self.shadow, state["shadow"]):
            average.copy_(value)

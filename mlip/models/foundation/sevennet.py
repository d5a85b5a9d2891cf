"""SevenNet (``sevenn``) pretrained models as an mlip potential: ``"sevennet:7net-0"``.

The network is sevenn's own (``AtomGraphSequential`` built from the checkpoint in the wheel's
``sevenn/pretrained_potentials/``); mlip runs its layers from the edge embedding to the
per-species rescale on mlip's edges and returns sevenn's per-atom energies. sevenn's force and
stress module and its edge preprocessing are not used: forces and stress come from mlip's
autograd path, the same derivative sevenn takes.
"""

from __future__ import annotations

import os
from typing import ClassVar

import torch
from torch import nn

from mlip.errors import ConfigError
from mlip.graph import AtomicGraph
from mlip.models.foundation.base import FoundationPotential, import_extra

__all__ = ["SevenNetPotential"]

#: model name → the checkpoint's folder in sevenn/pretrained_potentials/ (single-fidelity
#: models only; sevenn's other names download their weights, which mlip never does)
_CHECKPOINTS = {
    "7net-0": "SevenNet_0__11Jul2024",
    "7net-0_11jul2024": "SevenNet_0__11Jul2024",
    "7net-0_22may2024": "SevenNet_0__22May2024",
    "7net-l3i5": "SevenNet_l3i5",
}
#: sevenn's layers mlip runs itself (edges) or replaces by its own autograd (totals, forces)
_SKIPPED = ("edge_preprocess", "reduce_total_enegy", "reduce_total_energy", "force_output")


class _InsideCutoff(nn.Module):
    """sevenn's cutoff envelope, zero beyond the cutoff (mlip's Verlet lists carry skin edges;
    sevenn's XPLOR polynomial is not zero there). Edge lengths r in Å."""

    def __init__(self, envelope: nn.Module, cutoff: float) -> None:
        super().__init__()
        self.envelope = envelope
        self.cutoff = cutoff

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        value = self.envelope(r)
        return torch.where(r < self.cutoff, value, torch.zeros_like(value))


class _OnehotInModelDtype(nn.Module):
    """sevenn's one-hot species embedding, cast to the dtype of the edge vectors (sevenn's
    own layer always returns float32, which would stop a float64 model)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        from sevenn import _keys as key

        data = self.layer(data)
        dtype = data[key.EDGE_VEC].dtype
        for name in {self.layer.key_output, self.layer.key_additional_output} - {None}:
            data[name] = data[name].to(dtype)
        return data


class SevenNetPotential(FoundationPotential):
    """A pretrained SevenNet model (float32 as sevenn runs it; float64 also works).

    Args:
        model: the pretrained model's name as sevenn names it (``7net-0``,
            ``7net-0_22may2024``, ``7net-l3i5``).
    """

    family: ClassVar[str] = "sevennet"
    package: ClassVar[str] = "sevenn"
    default_dtype: ClassVar[torch.dtype] = torch.float32
    models: ClassVar[tuple[str, ...]] = tuple(_CHECKPOINTS)

    def __init__(self, *, model: str = "7net-0") -> None:
        name = self.check_model_name(model)
        import_extra(self.package, self.family)
        from sevenn import _const, util

        path = os.path.join(_const._prefix, _CHECKPOINTS[name],
                            os.path.basename(_const.SEVENNET_0_11Jul2024))
        if not os.path.exists(path):
            found = os.listdir(os.path.join(_const._prefix, _CHECKPOINTS[name]))
            path = os.path.join(_const._prefix, _CHECKPOINTS[name],
                                next(f for f in found if f.endswith(".pth")))
        checkpoint = util.load_checkpoint(path)
        network = checkpoint.build_model()
        if network.modal_map:
            raise ConfigError(f"sevennet:{name} is a multi-fidelity model (not supported)")
        cutoff = float(checkpoint.config["cutoff"])
        type_map = {int(z): int(i) for z, i in network.type_map.items()}
        super().__init__(model=name, species=sorted(type_map), cutoff=cutoff)
        self.weights_path = path
        network.set_is_batch_data(True)
        embedding = network._modules["edge_embedding"]
        embedding.cutoff_function = _InsideCutoff(embedding.cutoff_function, cutoff)
        network._modules["onehot_idx_to_onehot"] = _OnehotInModelDtype(
            network._modules["onehot_idx_to_onehot"])
        self.layers = nn.ModuleList(
            module for key, module in network._modules.items() if key not in _SKIPPED)
        onehot = torch.full((max(type_map) + 1,), -1, dtype=torch.long)
        for z, i in type_map.items():
            onehot[z] = i
        self.register_buffer("onehot_index", onehot, persistent=False)

    @property
    def receptive_layers(self) -> int:
        """One hop per convolution (the other layers act on each atom alone)."""
        return sum(type(getattr(layer, "layer", layer)).__name__.endswith("Convolution")
                   for layer in self.layers)

    def atomic_energies(self, graph: AtomicGraph, edge_vectors: torch.Tensor) -> torch.Tensor:
        """sevenn's per-atom energies (its scale and shift per species included), (n_atoms,) eV."""
        from sevenn import _keys as key

        data = {
            key.NODE_FEATURE: self.onehot_index[graph.atomic_numbers],
            key.ATOMIC_NUMBERS: graph.atomic_numbers,
            key.EDGE_IDX: graph.edge_index,  # row 0 the centre (sevenn's edge_dst), as mlip's
            key.EDGE_VEC: edge_vectors,      # r_j - r_i + S·cell, as sevenn's
            key.BATCH: graph.batch,
        }
        for layer in self.layers:
            data = layer(data)
        return data[key.ATOMIC_ENERGY].reshape(-1)

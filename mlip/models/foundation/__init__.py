"""Pretrained universal potentials from other packages as :class:`mlip.models.Potential`.

A foundation model is named ``"<family>:<model>"`` (``"sevennet:7net-0"``): the family is an
adapter of this package, the model name is the one its package gives its pretrained weights.
:func:`mlip.models.load_model` (and so ``MLIPCalculator``, ``mlip relax``/``md`` and the MD
driver) accepts these names. The weights come from the package's wheel; nothing is downloaded.
See ``docs/foundation.md`` for the adapter interface.
"""

from __future__ import annotations

import os

import torch

from mlip.errors import ConfigError
from mlip.models.foundation.base import FoundationPotential
from mlip.models.foundation.chgnet import CHGNetPotential
from mlip.models.foundation.sevennet import SevenNetPotential

__all__ = ["FOUNDATION_MODELS", "FoundationPotential", "is_foundation_name", "load_foundation"]

#: family prefix → adapter class (each knows its package, weights and model names)
FOUNDATION_MODELS: dict[str, type[FoundationPotential]] = {
    SevenNetPotential.family: SevenNetPotential,
    CHGNetPotential.family: CHGNetPotential,
}


def is_foundation_name(name: str | os.PathLike) -> bool:
    """Whether ``name`` reads ``"<family>:<model>"`` (a word, a colon, a model name) and is no
    existing file. The family need not be known: :func:`load_foundation` then refuses it naming
    the known ones, instead of a "no such file" error."""
    if not isinstance(name, str) or os.path.exists(name):
        return False
    family, colon, model = name.partition(":")
    return bool(colon) and family.isidentifier() and bool(model) and "/" not in model


def load_foundation(name: str, device: str | torch.device = "cpu",
                    dtype: torch.dtype | None = None) -> FoundationPotential:
    """The pretrained model ``"<family>:<model>"`` in eval mode on ``device``.

    Args:
        name: e.g. ``"sevennet:7net-0"``.
        device: where it runs.
        dtype: floating dtype (default: the dtype its package runs it in).

    Raises:
        ConfigError: unknown family or model name (naming the available ones).
        MissingExtraError: the family's package is not installed.
    """
    family, _, model = name.partition(":")
    cls = FOUNDATION_MODELS.get(family.lower())
    if cls is None:
        raise ConfigError(f"unknown foundation model family {family!r} in {name!r} (and no "
                          f"potential file of that name exists); known families: "
                          f"{sorted(FOUNDATION_MODELS)}")
    potential = cls(model=model)
    return potential.to(device=device, dtype=dtype or potential.default_dtype).eval()

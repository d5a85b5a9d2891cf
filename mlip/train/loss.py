"""The training loss: weighted energy-per-atom, force and stress terms with label masking.

    L = w_E · Σ_g w_g ℓ((E_g − Ê_g)/N_g) / n_E + w_F · Σ_a,c w_g(a) ℓ(F_ac − F̂_ac) / n_F
        + w_S · Σ_g,cd w_g ℓ(σ_gcd − σ̂_gcd) / n_S

with ℓ the squared error or the Huber function (δ in the label's unit), ``w_g`` the per-frame
weights, and ``n_E``, ``n_F``, ``n_S`` the numbers of labelled frames, force components and stress
components. Missing (NaN) labels are masked per frame, never filled with zeros, so a batch may mix
frames with and without stress (bulk cells with molecules or slabs); a term whose label no frame
of the batch has gives (0, 0). Each term is returned as a (sum, count) pair so that data-parallel
runs divide global sums by global counts.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
import torch.nn.functional as F

from mlip.models.output import PotentialOutput
from mlip.targets import LabelledBatch
from mlip.train.config import LossConfig

__all__ = ["LossConfig", "loss_terms", "combine_terms", "TERMS"]

#: The loss terms, in order.
TERMS = ("energy", "forces", "stress")


def _elementwise(diff: torch.Tensor, config: LossConfig) -> torch.Tensor:
    if config.kind == "huber":
        return F.huber_loss(
            diff, torch.zeros_like(diff), reduction="none", delta=config.huber_delta
        )
    return diff.pow(2)


def energy_errors(
    prediction: PotentialOutput, batch: LabelledBatch
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Masked errors per label: {term: (errors, frame of each error)}.

    Returns:
        ``energy``: (n_E,) eV/atom; ``forces``: (n_F, 3) eV/Å; ``stress``: (n_S, 3, 3) eV/Å³; each
        with the (n,) int64 graph index of every row. Rows without a label are dropped.
    """
    graph, targets = batch
    out = {}
    per_atom = (prediction.energy - targets.energy) / graph.n_atoms.to(targets.energy.dtype)
    frames = torch.arange(graph.n_graphs, device=per_atom.device)
    mask = torch.isfinite(targets.energy)
    out["energy"] = (per_atom[mask], frames[mask])
    if prediction.forces is not None:
        mask = torch.isfinite(targets.forces).all(dim=1)
        out["forces"] = ((prediction.forces - targets.forces)[mask], graph.batch[mask])
    if prediction.stress is not None:
        mask = torch.isfinite(targets.stress).flatten(1).all(dim=1) & torch.isfinite(
            prediction.stress.detach()
        ).flatten(1).all(dim=1)
        out["stress"] = ((prediction.stress - targets.stress)[mask], frames[mask])
    return out


def loss_terms(
    prediction: PotentialOutput, batch: LabelledBatch, config: LossConfig
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Weighted (sum, count) of ℓ for each term with a non-zero weight.

    Args:
        prediction: the model output (``energy`` (n_graphs,) eV, ``forces`` (n_atoms, 3) eV/Å
            or None, ``stress`` (n_graphs, 3, 3) eV/Å³ or None).
        batch: the graph and its ``targets``.
        config: weights and kind.

    Returns:
        {term: (sum (), count ())}; the sum carries gradients, the count is a float tensor.
    """
    weights = batch.targets.weight
    out = {}
    for term, (errors, frames) in energy_errors(prediction, batch).items():
        if config.weight(term) == 0.0:
            continue
        values = _elementwise(errors, config).reshape(errors.shape[0], math.prod(errors.shape[1:]))
        total = (values * weights[frames, None].to(values.dtype)).sum()
        out[term] = (
            total,
            torch.tensor(float(values.numel()), dtype=values.dtype, device=values.device),
        )
    return out


def combine_terms(
    sums: Mapping[str, torch.Tensor], counts: Mapping[str, torch.Tensor], config: LossConfig
) -> torch.Tensor:
    """Σ_term w_term · sum_term / count_term over the terms with a non-zero count."""
    total = None
    for term, value in sums.items():
        count = counts[term]
        if float(count) == 0.0:
            continue
        part = config.weight(term) * value / count
        total = part if total is None else total + part
    if total is None:
        return next(iter(sums.values())) * 0.0 if sums else torch.zeros(())
    return total

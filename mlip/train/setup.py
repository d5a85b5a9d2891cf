"""Everything a run needs before its first step: data splits, statistics and the model.

A fresh model is built from the ``model`` section (checked against its constructor), with
``species`` (the elements of the training split) and ``cutoff`` from the data and the mean
neighbour count of the training split as ``avg_num_neighbors`` (or ``avg_degree``) when the
constructor takes it and the config does not set it. Fine-tuning (``finetune.from``) rebuilds
the saved model, extended to new elements when the data has them, copies every weight that
fits (rows of species-indexed tensors are remapped), keeps its scale and shift, and refits E0
on the new data.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
from ase.data import chemical_symbols

from mlip.data.stats import (
    ModelStatistics,
    frame_statistics,
    isolated_atom_e0,
    parse_e0,
    require_separable_e0,
)
from mlip.errors import ConfigError
from mlip.models import Potential, build
from mlip.models.checkpoint import read_payload
from mlip.models.registry import check_hparams
from mlip.train.config import DataConfig, LossConfig, TrainingConfig
from mlip.train.data import read_atoms, train_splits
from mlip.train.split import StoreSplit

__all__ = ["Splits", "prepare_data", "prepare_model"]

log = logging.getLogger(__name__)

#: Constructor arguments that take the mean neighbour count of the training split.
NEIGHBOUR_ARGS = ("avg_num_neighbors", "avg_degree")


@dataclass
class Splits:
    """Training, validation and (possibly empty) test splits, each a store split read batch by
    batch (:class:`mlip.train.split.StoreSplit`)."""

    train: StoreSplit
    valid: StoreSplit
    test: StoreSplit


def prepare_data(data: DataConfig, seed: int = 0) -> Splits:
    """The splits of the ``data`` config section (see :func:`mlip.train.data.train_splits`).

    Raises:
        ConfigError: missing files, or a split that ends up empty.
    """
    return Splits(*train_splits(data, seed))


def check_labels(splits: Splits, loss: LossConfig) -> None:
    """Refuse a positive energy or force weight on training data without that label.

    Stress is trained where present (periodic frames with stress labels), so a stress weight on
    molecular data is not an error.

    Raises:
        ConfigError: naming the weight and the data.
    """
    for term in ("energy", "forces"):
        if loss.weight(term) > 0 and not splits.train.has_label(term):
            raise ConfigError(
                f"loss.{term}_weight = {loss.weight(term)} but no training frame of "
                f"{splits.train.source} has {term}; set loss.{term}_weight: 0"
            )


def check_species(splits: Splits, known: Sequence[int] = ()) -> None:
    """Refuse validation/test elements that are missing from the training split (and from
    ``known``, the species of a model being fine-tuned).

    Raises:
        ConfigError: naming each such element, its split and how many frames contain it.
    """
    trained = set(splits.train.elements()) | set(known)
    problems = []
    for name, part in (("validation", splits.valid), ("test", splits.test)):
        for z, count in sorted(part.element_frames().items()):
            if z not in trained:
                problems.append(
                    f"{chemical_symbols[z]} in {count} {name} frame(s) of {part.source}"
                )
    if problems:
        raise ConfigError(
            f"element(s) missing from the training split ({splits.train.source}): "
            f"{'; '.join(problems)}. The model's species are the training elements; add frames "
            "with them to the training data or remove those frames"
        )


def _reference_e0(
    config: TrainingConfig, species: list[int], train: StoreSplit
) -> tuple[dict, str]:
    """E0 of a fresh model from the ``data.e0`` / ``data.isolated_atoms`` settings."""
    data = config.data
    method = data.e0
    if isinstance(method, Mapping):
        return parse_e0(method), "given"
    if method not in ("auto", "least_squares", "isolated"):
        raise ConfigError(
            f"data.e0 = {method!r} is not one of ['auto', 'least_squares', 'isolated'] "
            "or a {symbol: eV} mapping"
        )
    if method == "isolated" and not data.isolated_atoms:
        raise ConfigError(
            "data.e0 = 'isolated' needs data.isolated_atoms (a file of one-atom frames)"
        )
    if data.isolated_atoms and method != "least_squares":
        return isolated_atom_e0(
            read_atoms(data.isolated_atoms), str(data.isolated_atoms)
        ), "isolated"
    stats = train.statistics(None)
    if not stats.reference_energies:
        raise ConfigError(f"cannot fit E0: no frame of {train.source} has an energy")
    require_separable_e0(stats.e0_undetermined, stats.n_frames, train.source)
    return dict(stats.reference_energies), "least_squares"


def prepare_model(config: TrainingConfig, splits: Splits) -> tuple[Potential, ModelStatistics]:
    """Build (or load for fine-tuning) the model and set its energy reference.

    The model species are the elements of the training split.

    Raises:
        ConfigError: a validation or test element that no training frame has (its E0 and
            weights could not be trained), naming the element and its frames.
    """
    species = splits.train.elements()
    if config.finetune.source:
        return _finetune_model(config, splits, species)
    check_species(splits)
    e0, method = _reference_e0(config, species, splits.train)
    stats = ModelStatistics.from_data(splits.train.statistics(e0), e0, species, method)
    hparams = dict(config.model.hparams)
    if "cutoff" in hparams:
        raise ConfigError("model.cutoff: set the cutoff once, in data.cutoff")
    if hparams.get("denoising"):
        raise ConfigError(
            "model.denoising: true builds EquiformerV3's DeNS heads, but mlip train does not add "
            "the denoising loss (the heads would stay untrained); remove model.denoising"
        )
    cls = check_hparams(config.model.name, hparams)
    hparams.setdefault("species", species)
    hparams["cutoff"] = float(config.data.cutoff)
    missing = sorted(set(species) - set(hparams["species"]))
    if missing:
        raise ConfigError(f"model.species lacks element(s) {missing} present in the data")
    parameters = inspect.signature(cls.__init__).parameters
    for name in NEIGHBOUR_ARGS:
        if name in parameters:
            hparams.setdefault(name, stats.avg_num_neighbors)
    model = build(config.model.name, **hparams)
    model.set_energy_reference(stats.e0, stats.scale, stats.shift)
    return model, stats


def _finetune_model(
    config: TrainingConfig, splits: Splits, species: list[int]
) -> tuple[Potential, ModelStatistics]:
    """The saved potential, extended to ``species``, with E0 refitted on the training split."""
    source = config.finetune.source
    extra = sorted(config.model.hparams)
    if extra:
        raise ConfigError(f"fine-tuning takes the architecture from {source}; "
                          f"remove model keys {extra}")
    payload = read_payload(source)
    if abs(float(payload["cutoff"]) - float(config.data.cutoff)) > 1e-9:
        raise ConfigError(
            f"data.cutoff = {config.data.cutoff} Å differs from the cutoff "
            f"{payload['cutoff']} Å of {source}; fine-tuning keeps the model cutoff"
        )
    old_species = list(payload["species"])
    check_species(splits, old_species)
    hparams = dict(payload["hparams"])
    hparams["species"] = sorted(set(old_species) | set(species))
    model = build(payload["model"], **hparams)
    _transfer_weights(model, payload["state_dict"], old_species, str(source))
    scale, shift = float(model.energy_scale), float(model.energy_shift)
    e0_old = {
        z: float(e)
        for z, e in zip(old_species, payload["state_dict"]["reference_energies"].tolist())
    }
    if config.data.isolated_atoms or isinstance(config.data.e0, Mapping):
        e0, method = _reference_e0(config, species, splits.train)
        e0 = {**e0_old, **e0}
    elif config.finetune.refit_e0 or set(species) - set(old_species):
        present = splits.train.elements()
        refit = _residual_e0(model, splits.train, present, scale, shift, e0_old)
        e0, method = {**e0_old, **refit}, "refit_residual"
    else:
        e0, method = e0_old, "from_model"
    model.set_energy_reference(e0, scale, shift)
    stats = ModelStatistics.from_data(splits.train.statistics(e0), e0, hparams["species"], method)
    return model, dataclasses.replace(stats, scale=scale, shift=shift)


def _transfer_weights(
    model: Potential, state: Mapping[str, torch.Tensor], old_species: list[int], source: str
) -> None:
    """Copy weights that fit; remap species-indexed rows; log what is left at its new init."""
    new_state = model.state_dict()
    rows = [model.species.index(z) for z in old_species]
    fresh = []
    for key, target in new_state.items():
        value = state.get(key)
        if value is None:
            fresh.append(key)
        elif value.shape == target.shape:
            new_state[key] = value.to(target.dtype)
        else:
            axes = [
                d
                for d in range(value.ndim)
                if value.ndim == target.ndim
                and value.shape[d] == len(old_species)
                and target.shape[d] == len(model.species)
                and all(value.shape[e] == target.shape[e] for e in range(value.ndim) if e != d)
            ]
            if not axes:
                fresh.append(key)
                continue
            moved = target.clone().movedim(axes[0], 0)
            moved[rows] = value.movedim(axes[0], 0).to(target.dtype)
            new_state[key] = moved.movedim(0, axes[0])
    model.load_state_dict(new_state)
    if fresh:
        log.warning(
            "fine-tuning from %s: %d tensors keep their fresh initialisation: %s",
            source,
            len(fresh),
            ", ".join(fresh[:10]),
        )


@torch.no_grad()
def _residual_e0(
    model: Potential, train: StoreSplit, species: list[int], scale: float,
    shift: float, prior: dict[int, float],
) -> dict[int, float]:
    """E0 of ``species`` by least squares on E_ref − (model energy without E0) over ``train``
    (one pass over the store split), closest to the model's old E0 ``prior`` where the
    energies do not determine them."""
    model.set_energy_reference({}, scale, shift)
    model.eval()
    dtype = next(model.parameters()).dtype
    n_atoms, numbers, residual = [], [], []
    for graph, targets in train.eval_graphs(32):
        predicted = model(graph.to(dtype=dtype), compute_forces=False).energy.double()
        n_atoms.append(graph.n_atoms.numpy())
        numbers.append(graph.atomic_numbers.numpy())
        residual.append((targets.energy.double() - predicted).numpy())
    stats = frame_statistics(np.concatenate(n_atoms), np.concatenate(numbers),
                             np.concatenate(residual), prior=prior)
    if not stats.reference_energies:
        raise ConfigError(f"cannot fit E0: no frame of {train.source} has an energy")
    new = [chemical_symbols[z] for z in stats.e0_undetermined if z not in prior]
    if new:
        log.warning(
            "the energies of %s do not separate the E0 of new element(s) %s from the others "
            "(fixed ratios); their refitted E0 only hold for these compositions. Give "
            "data.isolated_atoms or data.e0 for a transferable reference",
            train.source, ", ".join(new),
        )
    return {z: stats.reference_energies[z] for z in species}

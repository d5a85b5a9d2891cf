"""Facet: E(3) symmetry (exact mode and grid-MLP bounds), gradients, smoothness, extensivity,
batching, dtypes, checkpoints and configuration errors. All float64 unless stated."""

from __future__ import annotations

import pytest
import torch

from mlip.errors import ConfigError
from mlip.graph import AtomicGraph
from mlip.models import build
from mlip.models.facet import FACET_PRESETS
from mlip.testing import (
    assert_equivariant,
    equivariance_errors,
    random_rotation,
)

BPA_SPECIES = [1, 6, 7, 8]


def facet(species, mixer="mlp", **overrides):
    """facet-tiny with live residual branches (residual_init=1) so every layer contributes."""
    torch.manual_seed(0)
    hparams = dict(FACET_PRESETS["facet-tiny"], residual_init=1.0, avg_num_neighbors=10.0)
    hparams.update(overrides)
    return build("facet", species=species, mixer=mixer, **hparams).double()


@pytest.fixture(scope="module")
def bpa_graph(bpa_frames):
    return AtomicGraph.from_ase(bpa_frames[:2], 4.0).to(dtype=torch.float64)


@pytest.fixture(scope="module")
def hfo2_graph(hfo2_frames):
    return AtomicGraph.from_ase(hfo2_frames[4], 4.0).to(dtype=torch.float64)  # 12 atoms


def test_exact_mode_is_e3_equivariant_on_molecules(bpa_graph):
    assert_equivariant(facet(BPA_SPECIES, "bilinear"), bpa_graph, tol=1e-10, n_trials=1)


def test_exact_mode_is_e3_equivariant_with_stress_in_a_periodic_cell(hfo2_graph):
    assert_equivariant(facet([8, 72], "bilinear"), hfo2_graph, tol=1e-10, n_trials=1,
                       compute_stress=True)


def test_grid_mlp_equivariance_error_is_below_the_bounds(bpa_frames):
    """Default grid: energy error < 0.01 meV/atom and force error < 1e-3 (relative) on 3BPA."""
    graph = AtomicGraph.from_ase(bpa_frames[:1], 5.0).to(dtype=torch.float64)
    model = facet(BPA_SPECIES, **dict(FACET_PRESETS["facet-s"], residual_init=1.0,
                                      avg_num_neighbors=graph.n_edges / 27))
    energy = float(model(graph).energy[0].detach())
    for seed, reflect in [(0, False), (1, True), (2, True)]:
        errors = equivariance_errors(model, graph, random_rotation(seed, reflect))
        assert errors["energy"] * abs(energy) / 27 < 1e-5, errors  # eV/atom
        assert errors["forces"] < 1e-3, errors


def test_grid_mlp_is_not_exact_at_a_coarse_grid(bpa_graph):
    """The grid MLP aliases: the symmetry tests above could fail if the grid were too coarse."""
    errors = equivariance_errors(facet(BPA_SPECIES, grid_res=[6, 5]), bpa_graph, random_rotation(0))
    assert errors["forces"] > 1e-6


def test_edge_blocks_give_the_same_energy_forces_stress_and_gradients(hfo2_frames):
    model = facet([8, 72])
    graph = AtomicGraph.from_ase(hfo2_frames[4], 4.0).to(dtype=torch.float64)
    assert graph.n_edges > 300

    def evaluate(block):
        model.set_max_edges_per_block(block)
        out = model(graph, compute_forces=True, compute_stress=True)  # training mode: graph kept
        loss = out.energy.sum() + (out.forces ** 2).sum() + (out.stress ** 2).sum()
        grads = torch.autograd.grad(loss, list(model.parameters()))
        return [out.energy, out.forces, out.stress, *grads]

    whole = evaluate(None)
    for block in (97, graph.n_edges - 1):
        for a, b in zip(evaluate(block), whole):
            assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)
    with pytest.raises(ConfigError, match="max_edges_per_block"):
        model.set_max_edges_per_block(0)


def test_presets_build_and_count_parameters():
    small = build("facet", species=BPA_SPECIES, **FACET_PRESETS["facet-s"])
    default = build("facet", species=BPA_SPECIES)
    n_small = sum(p.numel() for p in small.parameters())
    n_default = sum(p.numel() for p in default.parameters())
    assert 5_000 < n_small < 50_000 < n_default
    assert next(small.parameters()).dtype == torch.float64  # built in float64; .float() to train


def test_zero_residual_init_gives_a_species_only_model(bpa_graph):
    """With every residual branch starting at zero, geometry does not matter yet (forces 0)."""
    model = build("facet", species=BPA_SPECIES, **FACET_PRESETS["facet-tiny"])
    assert model(bpa_graph).forces.abs().max() == 0


@pytest.mark.parametrize("overrides, message", [
    (dict(mixer="softmax"), "facet mixer must be 'mlp' or 'bilinear', got 'softmax'"),
    (dict(hidden_irreps="8x0e+4x1e"), r"parity \(-1\)\^l features; got \['1e'\]"),
    (dict(hidden_irreps="4x1o"), "need scalar \\(0e\\) channels"),
    (dict(mixer_heads=3), "3 heads do not divide 4 channels"),
    (dict(num_layers=0), "num_layers >= 1 and avg_num_neighbors > 0, got 0 and"),
    (dict(grid_res=[7, 7]), "res_beta must be even"),
])
def test_bad_hyperparameters_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build("facet", species=[1], **dict(FACET_PRESETS["facet-tiny"], **overrides))

"""Facet: E(3) symmetry (exact mode and grid-MLP bounds), gradients, smoothness, extensivity,
batching, dtypes, checkpoints and configuration errors. All float64 unless stated."""

from __future__ import annotations

import ase
import ase.build
import numpy as np
import pytest
import torch

from mlip.errors import CheckpointMismatchError, ConfigError
from mlip.graph import AtomicGraph
from mlip.models import build, load_model, save_model
from mlip.models.facet import FACET_PRESETS
from mlip.testing import (
    assert_equivariant,
    assert_forces_are_gradients,
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
    energy = float(model(graph)["energy"][0].detach())
    for seed, reflect in [(0, False), (1, True), (2, True)]:
        errors = equivariance_errors(model, graph, random_rotation(seed, reflect))
        assert errors["energy"] * abs(energy) / 27 < 1e-5, errors  # eV/atom
        assert errors["forces"] < 1e-3, errors


def test_grid_mlp_is_not_exact_at_a_coarse_grid(bpa_graph):
    """The grid MLP aliases: the symmetry tests above could fail if the grid were too coarse."""
    errors = equivariance_errors(facet(BPA_SPECIES, grid_res=[6, 5]), bpa_graph, random_rotation(0))
    assert errors["forces"] > 1e-6


def test_forces_are_gradients_for_a_molecule(bpa_graph):
    assert_forces_are_gradients(facet(BPA_SPECIES), bpa_graph, tol=1e-6)


def test_forces_and_stress_are_gradients_in_a_skewed_periodic_cell(hfo2_frames):
    atoms = hfo2_frames[4].copy()
    atoms.rattle(0.05, seed=3)
    shear = np.array([[1, 0.08, 0], [0, 1, 0.05], [0.03, 0, 1]])
    atoms.set_cell(atoms.cell @ shear, scale_atoms=True)
    graph = AtomicGraph.from_ase(atoms, 4.0).to(dtype=torch.float64)
    assert_forces_are_gradients(facet([8, 72]), graph, check_stress=True, tol=1e-6)


def test_energy_and_forces_are_continuous_across_the_cutoff():
    """Atom 3 moves across r_c of atom 1 (staying inside r_c of atom 2). The part of E and F that
    varies smoothly is removed by linear extrapolation from the inside points; what is left at
    r_c + δ is the jump caused by the edge (dis)appearing: it must stay below 1e-8."""
    model = facet([6, 8]).eval()
    cutoff, delta = model.cutoff, 1e-6
    energies, forces = [], []
    for k in (-2, -1, 1):
        atoms = ase.Atoms("COC", positions=[[0, 0, 0], [1.2, 0.3, 0], [0, cutoff + k * delta, 0]])
        graph = AtomicGraph.from_ase(atoms, cutoff).to(dtype=torch.float64)
        assert graph.n_edges == (6 if k < 0 else 4)
        out = model(graph)
        energies.append(float(out["energy"][0]))
        forces.append(out["forces"].numpy())
    e_jump = energies[2] - (3 * energies[1] - 2 * energies[0])  # extrapolate -2δ, -δ → +δ
    f_jump = np.abs(forces[2] - (3 * forces[1] - 2 * forces[0])).max()
    assert abs(e_jump) < 1e-8 and f_jump < 1e-8
    assert abs(energies[2] - energies[1]) > 1e-7  # the scan does move the energy (smoothly)


def test_supercell_energy_is_extensive(hfo2_frames):
    model = facet([8, 72]).eval()
    atoms = hfo2_frames[4]
    cell = model(AtomicGraph.from_ase(atoms, 4.0).to(dtype=torch.float64))
    supercell = model(AtomicGraph.from_ase(atoms * (2, 2, 2), 4.0).to(dtype=torch.float64))
    assert abs(float(supercell["energy"][0] / cell["energy"][0]) - 8.0) < 8e-9
    assert torch.allclose(supercell["forces"][:len(atoms)], cell["forces"], atol=1e-10)


def test_batched_equals_one_by_one(bpa_frames, hfo2_frames):
    model = facet([1, 6, 7, 8, 72]).eval()
    frames = [bpa_frames[0], hfo2_frames[5], bpa_frames[3]]
    batch = model(AtomicGraph.from_ase(frames, 4.0).to(dtype=torch.float64), compute_stress=True)
    offset = 0
    for k, atoms in enumerate(frames):
        graph = AtomicGraph.from_ase(atoms, 4.0).to(dtype=torch.float64)
        single = model(graph, compute_stress=True)
        assert abs(float(batch["energy"][k] - single["energy"][0])) < 1e-12
        forces = batch["forces"][offset:offset + len(atoms)]
        assert torch.allclose(forces, single["forces"], atol=1e-12)
        assert torch.allclose(batch["stress"][k], single["stress"][0], atol=1e-12, equal_nan=True)
        offset += len(atoms)


def test_edge_blocks_give_the_same_energy_forces_stress_and_gradients(hfo2_frames):
    model = facet([8, 72])
    graph = AtomicGraph.from_ase(hfo2_frames[4], 4.0).to(dtype=torch.float64)
    assert graph.n_edges > 300

    def evaluate(block):
        model.set_max_edges_per_block(block)
        out = model(graph, compute_forces=True, compute_stress=True)  # training mode: graph kept
        loss = out["energy"].sum() + (out["forces"] ** 2).sum() + (out["stress"] ** 2).sum()
        grads = torch.autograd.grad(loss, list(model.parameters()))
        return [out["energy"], out["forces"], out["stress"], *grads]

    whole = evaluate(None)
    for block in (97, graph.n_edges - 1):
        for a, b in zip(evaluate(block), whole):
            assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)
    with pytest.raises(ConfigError, match="max_edges_per_block"):
        model.set_max_edges_per_block(0)


def test_float32_agrees_with_float64(bpa_graph):
    model = facet(BPA_SPECIES).eval()
    ref = model(bpa_graph)
    out = model.float()(bpa_graph.to(dtype=torch.float32))
    assert out["energy"].dtype == torch.float32
    assert torch.allclose(out["energy"].double(), ref["energy"], rtol=1e-5)
    assert (out["forces"].double() - ref["forces"]).abs().max() < 1e-4 * ref["forces"].abs().max()


def test_checkpoint_round_trip_is_identical_and_corruption_is_refused(tmp_path, bpa_graph):
    model = facet(BPA_SPECIES, grid_res=[10, 9]).eval()
    model.set_energy_reference({1: -13.6, 6: -1029.0}, scale=0.3, shift=0.01)
    path = tmp_path / "facet.pt"
    save_model(model, path)
    loaded = load_model(path)
    assert loaded.hparams == model.hparams and loaded.hparams["grid_res"] == [10, 9]
    ref, out = model(bpa_graph), loaded(bpa_graph)
    assert torch.equal(ref["energy"], out["energy"]) and torch.equal(ref["forces"], out["forces"])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointMismatchError, match="not a readable mlip potential file"):
        load_model(path)


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
    assert model(bpa_graph)["forces"].abs().max() == 0


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

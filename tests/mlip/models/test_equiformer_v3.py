"""EquiformerV3 (CPU preset, float64): symmetries, smooth cutoff, gradients, batching, I/O."""

from __future__ import annotations

import ase
import ase.build
import ase.units
import numpy as np
import pytest
import torch
from ase.md.verlet import VelocityVerlet

from mlip.calculators import MLIPCalculator
from mlip.errors import ConfigError
from mlip.graph import AtomicGraph
from mlip.models import PotentialOutput, build, load_model, save_model
from mlip.models.equiformer_v3 import PRESETS, EquiformerV3
from mlip.models.equiformer_v3_dens import corrupt_positions
from mlip.testing import (
    assert_forces_are_gradients,
    equivariance_errors,
    random_rotation,
    transform_graph,
)

CUTOFF = 4.0  # the CPU preset with a shorter cutoff keeps the graphs (and the test time) small


def _model(**overrides) -> EquiformerV3:
    torch.manual_seed(0)
    overrides = {"cutoff": CUTOFF, **overrides}
    return EquiformerV3.from_preset("cpu", species=[1, 6, 8], **overrides).double().eval()


@pytest.fixture(scope="module")
def model() -> EquiformerV3:
    """The CPU preset with the direct force head (unused by ``forward``)."""
    return _model(direct_force_head=True)


@pytest.fixture(scope="module")
def molecule() -> ase.Atoms:
    """A chiral 8-atom molecule with one bond exactly along +y (the polar axis of e3nn)."""
    rng = np.random.default_rng(3)
    positions = rng.uniform(-1.8, 1.8, (8, 3))
    positions[1] = positions[0] + [0.0, 1.4, 0.0]
    return ase.Atoms(numbers=[6, 6, 8, 1, 1, 1, 8, 1], positions=positions)


@pytest.fixture(scope="module")
def crystal() -> ase.Atoms:
    """A rattled triclinic two-species cell (periodic, 6 atoms)."""
    atoms = ase.Atoms(
        "C2O4",
        scaled_positions=np.random.default_rng(1).uniform(0, 1, (6, 3)),
        cell=[[3.9, 0.0, 0.0], [0.5, 4.1, 0.0], [0.3, -0.4, 4.3]],
        pbc=True,
    )
    atoms.set_distance(0, 1, 1.3, fix=0)  # avoid overlaps at random
    return atoms


def _nve_energy_error(model: EquiformerV3, atoms: ase.Atoms, timestep_fs: float,
                      steps: int) -> float:
    """max_t |E_tot(t) − E_tot(0)| / n_atoms (eV/atom) of ASE velocity Verlet from 300 K."""
    atoms = atoms.copy()
    atoms.calc = MLIPCalculator(model, skin=0.5)
    kT = 300 * ase.units.kB
    noise = np.random.default_rng(0).normal(size=(len(atoms), 3))
    atoms.set_momenta(noise * np.sqrt(atoms.get_masses() * kT)[:, None])
    dynamics = VelocityVerlet(atoms, timestep=timestep_fs * ase.units.fs)
    start = atoms.get_total_energy()
    errors = []
    for _ in range(steps):
        dynamics.run(1)
        errors.append(abs(atoms.get_total_energy() - start))
    return max(errors) / len(atoms)


def _graph(atoms) -> AtomicGraph:
    return AtomicGraph.from_ase(atoms, CUTOFF)


def test_inversion_is_not_a_symmetry_of_so3_features(model, molecule):
    """SO(3) irreps without parity (as the reference): energies are not inversion invariant."""
    errors = equivariance_errors(model, _graph(molecule), random_rotation(0, reflect=True))
    print(f"EquiformerV3 improper-rotation errors (relative): {errors}")
    assert errors["energy"] > 1e-9


def test_forces_with_an_edge_along_the_polar_axis(model, molecule):
    graph = _graph(molecule)
    out = model(graph)
    assert torch.isfinite(out.forces).all()
    # atom 0 holds the edge 0–1 along +y, where Euler-angle Wigner matrices are singular
    assert_forces_are_gradients(model, graph, tol=1e-6, n_atoms_checked=1)


def _trimer(distance: float) -> AtomicGraph:
    atoms = ase.Atoms(
        "COH", positions=[[0, 0, 0], [1.2, 0.3, 0.0], [-distance * 0.6, 0.0, distance * 0.8]]
    )
    return _graph(atoms)


def test_energy_is_smooth_as_a_neighbour_crosses_the_cutoff_and_jumps_without_the_envelope(model):
    delta = 1e-5
    inside, outside = _trimer(CUTOFF - delta), _trimer(CUTOFF + delta)
    assert inside.n_edges == outside.n_edges + 2
    smooth = [model(g) for g in (inside, outside)]
    assert abs(float(smooth[0].energy - smooth[1].energy)) < 1e-9
    assert float((smooth[0].forces - smooth[1].forces).abs().max()) < 1e-7
    hard = _model(smooth_cutoff=False, direct_force_head=True)
    hard.load_state_dict(model.state_dict())
    jump = abs(float(hard(inside).energy - hard(outside).energy))
    smooth_jump = abs(float(smooth[0].energy - smooth[1].energy))
    print(f"energy jump at the cutoff: smooth {smooth_jump:.2e} eV, plain softmax {jump:.2e} eV")
    assert jump > 1e-4


def test_checkpoint_round_trip(model, crystal, tmp_path):
    model.set_energy_reference({1: -13.6, 6: -1030.0, 8: -2040.0}, scale=0.8)
    graph = _graph(crystal)
    reference = model(graph, compute_stress=True)
    save_model(model, tmp_path / "eqv3.pt")
    loaded = load_model(tmp_path / "eqv3.pt")
    out = loaded(graph, compute_stress=True)
    assert loaded.hparams == model.hparams and loaded.hparams["attn_grid"] == [8, 4]
    assert loaded.force_head is not None
    for key in ("energy", "node_energy", "forces", "stress", "virial"):
        assert torch.equal(getattr(out, key), getattr(reference, key)), key
    model.set_energy_reference({}, scale=1.0)


def test_registry_and_presets():
    model = build("equiformer_v3", species=[8, 1], **PRESETS["cpu"])
    assert model.hparams["species"] == [8, 1] and model.hparams["lmax"] == 2
    paper = EquiformerV3.__init__.__wrapped__.__kwdefaults__
    assert {
        k: paper[k] for k in ("num_layers", "channels", "lmax", "mmax", "num_heads", "ffn_hidden")
    } == {"num_layers": 7, "channels": 128, "lmax": 4, "mmax": 2, "num_heads": 8, "ffn_hidden": 512}


def test_direct_force_head_is_equivariant(model, molecule):
    graph = _graph(molecule)
    rotation = random_rotation(7)
    with torch.no_grad():
        ref = model.direct_forces(graph)
        out = model.direct_forces(transform_graph(graph, rotation))
    assert isinstance(ref, PotentialOutput) and ref.stress is None
    assert ref.forces.shape == (8, 3) and ref.forces.abs().max() > 0
    assert torch.allclose(out.forces, ref.forces @ rotation.T, atol=1e-12)
    reference = model(graph, compute_forces=False)
    assert torch.allclose(out.energy, reference.energy, atol=1e-12)
    assert torch.allclose(ref.node_energy, reference.node_energy, atol=1e-12)
    with pytest.raises(RuntimeError, match="direct_force_head=False"):
        _model(num_layers=1).direct_forces(graph)


def test_denoising_corruption_and_loss(molecule):
    graph = _graph(molecule)
    generator = torch.Generator().manual_seed(0)
    _, noise, mask = corrupt_positions(
        graph, probability=1.0, corrupt_ratio=1.0, strict_max_ratio=1.0, generator=generator
    )
    assert bool(mask.all()) and float(noise.std()) == pytest.approx(0.025, rel=0.5)
    _, noise, mask = corrupt_positions(
        graph, probability=1.0, corrupt_ratio=1.0, generator=generator
    )
    assert (
        not bool(mask.any()) and float(noise.abs().max()) == 0.0
    )  # above strict_max_ratio: skipped
    model = _model(denoising=True, num_layers=1).train()
    loss = model.denoising_loss(graph, probability=1.0, corrupt_ratio=0.5, generator=generator)
    loss.backward()
    assert torch.isfinite(loss) and float(loss.detach()) > 0
    assert model.noise_head.linear_out.weight.grad.abs().max() > 0
    assert model.force_encoder.weight.grad is not None
    # the reference forces are an input of the noise head: other forces, another loss
    with torch.no_grad():
        losses = [
            float(model.denoising_loss(graph, forces, probability=1.0, corrupt_ratio=0.5,
                                       generator=torch.Generator().manual_seed(3)))
            for forces in (None, torch.full((8, 3), float("nan")), torch.ones(8, 3))
        ]
    assert losses[0] == losses[1] != losses[2]


def test_force_loss_trains_through_second_derivatives(molecule):
    """Training mode keeps the force graph: a force loss back-propagates (double backward through
    the Wigner-D construction, including the edge along +y) to finite parameter gradients."""
    model = _model(num_layers=1).train()
    out = model(_graph(molecule))
    out.forces.pow(2).sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert model.blocks[0].attention.so2_in.linear_m[0].weight.grad.abs().max() > 0


@pytest.mark.slow
def test_nve_energy_error_scales_as_timestep_squared(model, molecule):
    """A smooth, conservative PES gives velocity-Verlet energy errors ∝ dt² (1 fs vs 0.5 fs over
    100 fs, random weights, float64; measured ratio 3.98, 1.4e-4 vs 3.4e-5 eV/atom)."""
    coarse = _nve_energy_error(model, molecule, 1.0, 100)
    fine = _nve_energy_error(model, molecule, 0.5, 200)
    assert 3.5 < coarse / fine < 4.5 and fine < 1e-4


def test_init_gain_scales_the_weight_matrices_only():
    torch.manual_seed(0)
    plain = EquiformerV3.from_preset("cpu", species=[1, 6], init_gain=1.0)
    torch.manual_seed(0)
    scaled = EquiformerV3.from_preset("cpu", species=[1, 6], init_gain=2.0)
    for (name, a), b in zip(plain.named_parameters(), scaled.parameters()):
        in_blocks = name.startswith(("blocks.", "degree_embedding."))
        leaf = name.rsplit(".", 1)[-1]
        matrix = in_blocks and (leaf.startswith("grid_")
                                or (leaf == "weight" and a.dim() >= 2 and "norm" not in name))
        torch.testing.assert_close(b, 2.0 * a if matrix else a, rtol=1e-6, atol=0, msg=name)
    assert scaled.hparams["init_gain"] == 2.0


@pytest.mark.parametrize("gain", [0.0, -1.0, float("nan")])
def test_init_gain_must_be_positive(gain):
    with pytest.raises(ConfigError, match="model.init_gain"):
        EquiformerV3.from_preset("cpu", species=[1, 6], init_gain=gain)


def test_default_init_is_variance_preserving():
    """Default weights have variance 1/fan_in (EquiformerV2's ``weight_init="normal"``), not
    torch's uniform 1/(3 fan_in), which left the attention and FFN updates ~20x below the
    residual stream at init and slowed training (docs/training.md)."""
    torch.manual_seed(0)
    model = EquiformerV3.from_preset("cpu", species=[1, 6], channels=64)
    weight = model.blocks[0].feed_forward.linear_in.weight  # (L+1, C_in = 64, K)
    assert abs(float(weight.var()) * 64 - 1.0) < 0.1

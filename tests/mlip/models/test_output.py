"""PotentialOutput: concatenation of groups, the virial's value and sign, pytree and detach."""

from __future__ import annotations

import dataclasses

import ase
import numpy as np
import pytest
import torch
from torch.utils import _pytree

from mlip.graph import AtomicGraph
from mlip.models import PotentialOutput, build
from mlip.testing import assert_close_ulps

CUTOFF = 4.0


@pytest.fixture
def lj():
    return build("lennard_jones", species=[1, 6, 8], cutoff=CUTOFF, sigma=1.5,
                 epsilon=0.05).double().eval()


def _crystal() -> ase.Atoms:
    scaled = [[0.03, 0.05, 0.02], [0.31, 0.02, 0.28], [0.52, 0.55, 0.07], [0.77, 0.33, 0.61],
              [0.15, 0.71, 0.53], [0.60, 0.84, 0.82]]
    return ase.Atoms("C2O2H2", scaled_positions=scaled, pbc=True,
                     cell=[[3.9, 0.0, 0.0], [0.5, 4.1, 0.0], [0.3, -0.4, 4.3]])


def _dimer(distance: float) -> ase.Atoms:
    """Two carbons alone in a periodic box (no image within the cutoff)."""
    box = 3 * CUTOFF
    return ase.Atoms("CC", positions=[[5.0, 5.0, 5.0], [5.0 + 0.6 * distance,
                                                      5.0 + 0.8 * distance, 5.0]],
                     cell=[box] * 3, pbc=True)


def _frames() -> list[ase.Atoms]:
    molecule = ase.Atoms("COH", positions=[[0, 0, 0], [1.2, 0.1, 0], [-0.9, 0.6, 0.2]])
    return [_crystal(), molecule, _dimer(1.4)]


def test_concat_of_groups_equals_one_call(lj):
    frames = _frames()
    whole = lj(AtomicGraph.from_ase(frames, CUTOFF), compute_stress=True)
    parts = [lj(AtomicGraph.from_ase(group, CUTOFF), compute_stress=True)
             for group in (frames[:2], frames[2:])]
    joined = PotentialOutput.concat(parts)
    assert isinstance(joined, PotentialOutput)
    for field in dataclasses.fields(PotentialOutput):
        assert_close_ulps(getattr(joined, field.name), getattr(whole, field.name), ulps=8,
                          scale=getattr(whole, field.name).abs().nan_to_num().max(),
                          name=field.name)
    assert PotentialOutput.concat(parts[:1]) is parts[0]


def test_concat_refuses_mixed_or_no_outputs(lj):
    graph = AtomicGraph.from_ase(_frames()[:1], CUTOFF)
    with_forces, without = lj(graph), lj(graph, compute_forces=False)
    assert without.forces is None and without.stress is None and without.virial is None
    with pytest.raises(ValueError, match="forces is missing in 1 of 2"):
        PotentialOutput.concat([with_forces, without])
    with pytest.raises(ValueError, match="at least one"):
        PotentialOutput.concat([])


def test_stress_and_virial_come_together():
    zeros = torch.zeros(1, 3, 3)
    with pytest.raises(ValueError, match="stress and virial"):
        PotentialOutput(torch.zeros(1), torch.zeros(2), stress=zeros)


def test_virial_is_minus_stress_times_volume_and_nan_without_periodicity(lj):
    frames = _frames()
    out = lj(AtomicGraph.from_ase(frames, CUTOFF), compute_stress=True)
    volumes = torch.tensor([abs(np.linalg.det(a.cell.array)) if a.pbc.any() else np.nan
                            for a in frames], dtype=torch.float64)
    expected = -out.stress * volumes[:, None, None]
    assert_close_ulps(out.virial, expected, ulps=8, scale=expected.abs().nan_to_num().amax(
        dim=(1, 2), keepdim=True), name="virial")
    assert torch.isnan(out.virial[1]).all() and torch.isfinite(out.virial[[0, 2]]).all()
    assert out.virial[0].abs().max() > 1e-3  # the crystal is not stress free


def test_virial_is_minus_the_strain_derivative_by_finite_differences(lj):
    """W_ab = -∂E/∂ε_ab (eV) under r → r(1 + ε), cell → cell(1 + ε), ε symmetric."""
    crystal = _crystal()
    virial = lj(AtomicGraph.from_ase(crystal, CUTOFF), compute_stress=True).virial[0]
    h = 1e-5
    for a in range(3):
        for b in range(3):
            eps = np.zeros((3, 3))
            eps[a, b] += 0.5 * h
            eps[b, a] += 0.5 * h
            energies = []
            for sign in (1.0, -1.0):
                deformed = crystal.copy()
                deformed.set_cell(crystal.cell.array @ (np.eye(3) + sign * eps),
                                  scale_atoms=True)
                graph = AtomicGraph.from_ase(deformed, CUTOFF)
                energies.append(float(lj(graph, compute_forces=False).energy[0]))
            fd = -(energies[0] - energies[1]) / (2 * h)
            assert abs(fd - float(virial[a, b])) < 1e-6 * float(virial.abs().max()), (a, b)


@pytest.mark.parametrize("distance, sign", [(1.2, 1.0), (2.2, -1.0)])
def test_virial_of_a_pair_is_r_ij_outer_f_ij_with_the_lammps_sign(lj, distance, sign):
    """For one pair, W = r_ij ⊗ f_ij (r_ij = r_j - r_i, f_ij the force on j): a compressed
    pair (repulsive) pushes outwards, tr W > 0 and the ASE stress is compressive (tr σ < 0); a
    stretched pair (attractive) the opposite."""
    atoms = _dimer(distance)
    out = lj(AtomicGraph.from_ase(atoms, CUTOFF), compute_stress=True)
    r_ij = torch.as_tensor(atoms.positions[1] - atoms.positions[0])
    expected = torch.outer(r_ij, out.forces[1])
    assert_close_ulps(out.virial[0], expected, ulps=16, scale=expected.abs().max(),
                      name="virial")
    assert sign * float(torch.trace(out.virial[0])) > 1e-4
    assert sign * float(torch.trace(out.stress[0])) < 0.0
    pressure = -float(torch.trace(out.stress[0])) / 3  # eV/Å³, ASE's pressure
    volume = atoms.get_volume()
    assert pressure == pytest.approx(float(torch.trace(out.virial[0])) / (3 * volume),
                                     rel=1e-12)


def test_pytree_and_detach_keep_every_field(lj):
    graph = AtomicGraph.from_ase(_frames(), CUTOFF)
    lj.train()
    out = lj(graph, compute_stress=True)
    assert out.forces.requires_grad and out.stress.requires_grad
    leaves, spec = _pytree.tree_flatten(out)
    assert len(leaves) == 5 and all(isinstance(t, torch.Tensor) for t in leaves)
    again = _pytree.tree_unflatten(leaves, spec)
    assert isinstance(again, PotentialOutput) and again.virial is out.virial
    detached = out.detach()
    for field in dataclasses.fields(PotentialOutput):
        value = getattr(detached, field.name)
        assert not value.requires_grad
        assert torch.equal(value.nan_to_num(), getattr(out, field.name).nan_to_num())
    energy_only = lj(graph, compute_forces=False)
    assert len(_pytree.tree_flatten(energy_only)[0]) == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        out.energy = out.energy * 2

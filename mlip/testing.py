"""Checks every model must pass, shared by the test suites of all model families.

All checks run in float64 (unless they compare dtypes) and raise ``AssertionError`` with the
measured error. :class:`ModelConformance` is the conformance suite run over every entry of the
model registry (``tests/mlip/models/test_conformance.py``).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Sequence

import numpy as np
import torch

from mlip.graph import AtomicGraph
from mlip.models.output import PotentialOutput

__all__ = [
    "random_rotation",
    "transform_graph",
    "assert_equivariant",
    "assert_forces_are_gradients",
    "equivariance_errors",
    "ModelConformance",
    "conformance_model",
    "CONFORMANCE_E0",
    "CONFORMANCE_HPARAMS",
    "CONFORMANCE_SPECIES",
    "assert_close_ulps",
]


def _outputs(model: torch.nn.Module, graph: AtomicGraph, **kwargs) -> PotentialOutput:
    """The model's outputs, detached (a model in training mode keeps its autograd graph)."""
    return model(graph, **kwargs).detach()


def random_rotation(
    seed: int, reflect: bool = False, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """A random proper rotation (det +1), or an improper one (det −1) if ``reflect``; (3, 3)."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    if reflect:
        q = -q
    return torch.tensor(q, dtype=dtype)


def transform_graph(
    graph: AtomicGraph,
    rotation: torch.Tensor,
    translation: torch.Tensor | None = None,
    permutation: torch.Tensor | None = None,
) -> AtomicGraph:
    """Apply r → r Rᵀ + t (and cell → cell Rᵀ) and optionally permute atoms within each graph.

    Edges are carried over (rotations and translations keep the neighbour set); a permutation
    relabels them. ``permutation`` is (n_atoms,) with new_atom[k] = old_atom[permutation[k]] and
    must keep atoms inside their graph.
    """
    rot = rotation.to(graph.positions)
    positions = graph.positions @ rot.T
    if translation is not None:
        positions = positions + translation.to(positions)
    cell = graph.cell @ rot.T
    changes = dict(positions=positions, cell=cell)
    if permutation is not None:
        inverse = torch.empty_like(permutation)
        inverse[permutation] = torch.arange(len(permutation))
        changes.update(
            positions=positions[permutation],
            atomic_numbers=graph.atomic_numbers[permutation],
            edge_index=inverse[graph.edge_index],
        )
    return dataclasses.replace(graph, **changes)


def equivariance_errors(
    model: torch.nn.Module, graph: AtomicGraph, rotation: torch.Tensor, compute_stress: bool = False
) -> dict[str, float]:
    """Relative errors of E (invariant), F (covariant) and σ (R σ Rᵀ) under ``rotation``."""
    ref = _outputs(model, graph, compute_forces=True, compute_stress=compute_stress)
    out = _outputs(
        model, transform_graph(graph, rotation), compute_forces=True, compute_stress=compute_stress
    )
    rot = rotation.to(ref.forces)

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).detach().abs().max() / b.detach().abs().max().clamp_min(1e-300))

    errors = {
        "energy": rel(out.energy, ref.energy),
        "forces": rel(out.forces, ref.forces @ rot.T),
    }
    if compute_stress:
        errors["stress"] = rel(out.stress, rot @ ref.stress @ rot.T)
    return errors


def assert_equivariant(
    model: torch.nn.Module,
    graph: AtomicGraph,
    *,
    tol: float = 1e-10,
    reflections: bool = True,
    compute_stress: bool = False,
    n_trials: int = 3,
    seed: int = 0,
) -> None:
    """E invariant, F and σ covariant under random rotations (and reflections), translations and
    permutations, to relative ``tol`` (float64)."""
    graph = graph.to(dtype=torch.float64)
    ref = _outputs(model, graph, compute_forces=True)
    for trial in range(n_trials):
        for reflect in (False, True) if reflections else (False,):
            rot = random_rotation(seed + trial, reflect)
            errors = equivariance_errors(model, graph, rot, compute_stress)
            for key, err in errors.items():
                assert err < tol, (
                    f"{key} not equivariant (reflect={reflect}): relative error {err:.3e}"
                )
    g = torch.Generator().manual_seed(seed)
    shifted = transform_graph(
        graph, torch.eye(3, dtype=torch.float64), torch.randn(3, generator=g) * 3
    )
    out = _outputs(model, shifted, compute_forces=True)
    err = float(
        (out.energy - ref.energy).abs().max() / ref.energy.abs().max().clamp_min(1e-300)
    )
    assert err < tol, f"energy not translation invariant: relative error {err:.3e}"
    perm = torch.cat(
        [
            start + torch.randperm(int(n), generator=g)
            for start, n in zip(graph.atom_offsets[:-1].tolist(), graph.n_atoms.tolist())
        ]
    )
    out = _outputs(
        model,
        transform_graph(graph, torch.eye(3, dtype=torch.float64), permutation=perm),
        compute_forces=True,
    )
    err_e = float(
        (out.energy - ref.energy).abs().max() / ref.energy.abs().max().clamp_min(1e-300)
    )
    err_f = float(
        (out.forces - ref.forces[perm]).abs().max()
        / ref.forces.abs().max().clamp_min(1e-300)
    )
    assert err_e < tol and err_f < tol, (
        f"not permutation equivariant: energy {err_e:.3e}, forces {err_f:.3e}"
    )


def assert_forces_are_gradients(
    model: torch.nn.Module,
    graph: AtomicGraph,
    *,
    h: float = 1e-5,
    tol: float = 1e-6,
    check_stress: bool = False,
    n_atoms_checked: int = 4,
) -> None:
    """Autograd forces (and stress) match central finite differences of the energy (float64).

    The error is relative to the largest force (stress) component.
    """
    graph = graph.to(dtype=torch.float64)
    out = _outputs(model, graph, compute_forces=True, compute_stress=check_stress)
    forces = out.forces

    def energy_at(positions: torch.Tensor, cell: torch.Tensor | None = None) -> float:
        moved = dataclasses.replace(
            graph, positions=positions, cell=graph.cell if cell is None else cell
        )
        return float(model(moved, compute_forces=False).energy.detach().sum())

    scale = float(forces.detach().abs().max().clamp_min(1e-12))
    atoms = torch.linspace(
        0, graph.positions.shape[0] - 1, min(n_atoms_checked, graph.positions.shape[0])
    ).long()
    for a in atoms.tolist():
        for k in range(3):
            plus, minus = graph.positions.clone(), graph.positions.clone()
            plus[a, k] += h
            minus[a, k] -= h
            fd = -(energy_at(plus) - energy_at(minus)) / (2 * h)
            err = abs(fd - float(forces[a, k])) / scale
            assert err < tol, (
                f"force on atom {a}, axis {k}: autograd {float(forces[a, k]):.10g} "
                f"vs FD {fd:.10g} (rel {err:.2e})"
            )
    if not check_stress:
        return
    stress = out.stress
    volume = torch.linalg.det(graph.cell).abs()
    sscale = float(stress.abs().max().clamp_min(1e-12))
    for a in range(3):
        for b in range(3):
            eps = torch.zeros(3, 3, dtype=torch.float64)
            eps[a, b] += 0.5 * h
            eps[b, a] += 0.5 * h
            energies = []
            for sign in (1.0, -1.0):
                deform = torch.eye(3, dtype=torch.float64) + sign * eps
                pos = torch.cat(
                    [graph.positions[graph.batch == g] @ deform for g in range(graph.n_graphs)]
                )
                energies.append(
                    model(
                        dataclasses.replace(graph, positions=pos, cell=graph.cell @ deform),
                        compute_forces=False,
                    ).energy.detach()
                )
            fd = (energies[0] - energies[1]) / (2 * h) / volume
            err = float((fd - stress[:, a, b].detach()).abs().max()) / sscale
            assert err < tol, (
                f"stress[{a},{b}]: autograd {stress[:, a, b].tolist()} "
                f"vs FD {fd.tolist()} (rel {err:.2e})"
            )


def assert_close_ulps(actual, expected, ulps: float = 4, *, scale=None, name: str = "values"
                      ) -> None:
    """Assert that two float arrays agree to ``ulps`` units in the last place of their dtype.

    For results of two code paths that round differently (a BLAS that fuses multiply-adds, a
    vector width, a summation order): one ulp is the spacing of the dtype's numbers at
    ``max(|expected|, scale)``. ``scale`` (broadcastable, same units as the values) is the
    magnitude of the operands a result was computed from, where it lost digits by cancellation:
    ``|D|² = |r_j - r_i + S·cell|²`` of a 3 Å pair across a 100 Å shift inherits the ulp of
    the 100 Å terms. NaNs must sit in the same places; infinities must be equal.

    Args:
        actual, expected: torch tensors or numpy arrays of the same shape; the spacing is that
            of ``expected``'s float dtype.
        ulps: allowed difference in ulps. scale: optional magnitude of the operands.
        name: what the values are, for the message.

    Raises:
        AssertionError: naming the worst element, both values and the difference in ulps.
    """
    a = torch.as_tensor(actual).detach().cpu()
    e = torch.as_tensor(expected).detach().cpu()
    if a.shape != e.shape:
        raise AssertionError(f"{name}: shape {tuple(a.shape)} != expected {tuple(e.shape)}")
    if not e.is_floating_point():
        raise AssertionError(f"{name}: expected a float dtype, got {e.dtype}")
    info = torch.finfo(e.dtype)
    a, e = a.to(torch.float64), e.to(torch.float64)
    nan = torch.isnan(e)
    if not torch.equal(nan, torch.isnan(a)):
        index = tuple(torch.nonzero(nan != torch.isnan(a))[0].tolist())
        raise AssertionError(f"{name}[{index}]: {a[index].item()!r} vs expected "
                             f"{e[index].item()!r} (NaN in one only)")
    magnitude = e.abs()
    if scale is not None:
        magnitude = torch.maximum(magnitude, torch.as_tensor(scale, dtype=torch.float64).abs())
    magnitude = magnitude.clamp_min(info.tiny)
    spacing = info.eps * torch.exp2(torch.floor(torch.log2(magnitude)))  # ulp at the magnitude
    finite = torch.isfinite(e) & torch.isfinite(magnitude)
    off = torch.where(finite, (a - e).abs() / spacing, torch.where(a == e, 0.0, torch.inf))
    off = torch.where(nan, 0.0, off)
    if off.numel() and bool((off > ulps).any()):
        index = tuple(torch.unravel_index(torch.argmax(off), off.shape))
        index = tuple(int(i) for i in index)
        raise AssertionError(
            f"{name}[{index}]: {a[index].item()!r} vs expected {e[index].item()!r}, "
            f"{off[index].item():.3g} ulps apart (allowed {ulps}, one ulp = "
            f"{spacing[index].item():.3g}); {int((off > ulps).sum())} of {off.numel()} "
            f"elements off")


# =============================================================================================
# The model conformance suite: one set of checks for every registered model family.
# =============================================================================================

#: Species every conformance model is built with (the bundled 3BPA molecule: H, C, N, O).
CONFORMANCE_SPECIES = (1, 6, 7, 8)

#: Realistic per-element reference energies (eV, PBE-like magnitudes): energies of ~10⁴ eV
#: expose float32 sums.
CONFORMANCE_E0 = {1: -13.6, 6: -1029.8, 7: -1485.3, 8: -2042.6}

#: Small hyper-parameters per registry name (merged over ``cutoff=4.0``); a family not listed
#: is built from its signature's defaults. Residual branches are live where a preset starts
#: them at zero, so that every layer contributes.
CONFORMANCE_HPARAMS: dict[str, dict] = {
    "facet": dict(hidden_irreps="8x0e+4x1o+4x2e", num_layers=2, sh_lmax=2, embedding_dim=8,
                  num_spline_basis=8, mixer_hidden=[8], mixer_heads=2, readout_hidden=[8],
                  residual_init=1.0, avg_num_neighbors=10.0),
    "tdn": dict(channels=8, num_blocks=2, num_heads=2, num_basis=8, radial_hidden=16),
    "equiformer_v3": dict(num_layers=2, channels=16, lmax=2, mmax=1, num_heads=2, attn_hidden=8,
                          attn_alpha_channels=8, attn_value_channels=4, ffn_hidden=32,
                          num_rbf=8, edge_channels=16, attn_grid=[8, 4], ffn_grid=[8, 8]),
    "lennard_jones": dict(sigma=1.0, epsilon=0.05),
}


def conformance_model(name: str, seed: int = 0) -> torch.nn.Module:
    """The registry model ``name`` with :data:`CONFORMANCE_HPARAMS`, float64, eval mode."""
    from mlip.models import build
    from mlip.nn.precision import float64_construction

    hparams = {"cutoff": 4.0, **CONFORMANCE_HPARAMS.get(name, {})}
    with float64_construction():
        torch.manual_seed(seed)
        return build(name, species=list(CONFORMANCE_SPECIES), **hparams).double().eval()


def _bpa_molecule():
    """The first frame of the bundled 3BPA set (27 atoms, H C N O), without labels."""
    from importlib import resources

    import ase.io

    path = resources.files("mlip.data.bundled").joinpath("3bpa_train_300K.xyz")
    atoms = ase.io.read(str(path), index=0)
    atoms.calc = None
    return atoms


def _small_molecule():
    """Acetamide (9 atoms, H C N O), slightly rattled, non-periodic."""
    import ase.build

    atoms = ase.build.molecule("CH3CONH2")
    atoms.rattle(0.05, seed=2)
    return atoms


def _crystal():
    """A rattled triclinic periodic cell of 6 atoms (C2N2O2), all pairs ≥ 1.15 Å apart."""
    import ase

    scaled = [[0.03, 0.05, 0.02], [0.31, 0.02, 0.28], [0.52, 0.55, 0.07], [0.77, 0.33, 0.61],
              [0.15, 0.71, 0.53], [0.60, 0.84, 0.82]]
    return ase.Atoms("C2N2O2", scaled_positions=scaled, pbc=True,
                     cell=[[3.9, 0.0, 0.0], [0.5, 4.1, 0.0], [0.3, -0.4, 4.3]])


def _max_abs(t: torch.Tensor) -> float:
    return float(t.detach().abs().max()) if t.numel() else 0.0


class ModelConformance:
    """Checks every registered model must pass (in the spirit of NequIP's model test mixin).

    ``ModelConformance(model)`` takes a float64 :class:`mlip.models.Potential` (see
    :func:`conformance_model`) whose species include H, C, N and O. Each ``check_*`` method
    raises ``AssertionError`` with the measured error; :meth:`run` runs them all. The family
    states its own rotation tolerance and symmetry group as class attributes of the model
    (``symmetry_tolerance`` relative errors of E and F, ``symmetry_group`` "E(3)" or "SO(3)";
    reflections are checked for E(3) only). Everything else holds to round-off for every
    family. Energies are compared with the per-element E0 of :data:`CONFORMANCE_E0` set where
    that is what is tested (isolated atoms, float32 sums, checkpoints).
    """

    #: the checks :meth:`run` runs, in order
    CHECKS = ("output_fields", "virial", "isolated_atoms", "fragments_add", "batch_equals_single",
              "permutation_translation", "rotation_reflection", "periodic_images", "supercell",
              "cutoff_smoothness", "finite_differences", "float32", "no_gradient_between_frames",
              "checkpoint_round_trip", "unknown_species")

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.cutoff = float(model.cutoff)

    # ------------------------------------------------------------------ helpers
    def graph(self, atoms, dtype: torch.dtype = torch.float64) -> AtomicGraph:
        """One or several ``ase.Atoms`` as a float64 graph at the model's cutoff."""
        return AtomicGraph.from_ase(atoms, self.cutoff, dtype=dtype)

    def evaluate(self, graph: AtomicGraph, stress: bool = False,
                 model: torch.nn.Module | None = None) -> PotentialOutput:
        """Energy, forces (and stress) of ``graph``, detached."""
        return _outputs(model or self.model, graph, compute_forces=True, compute_stress=stress)

    def _with_e0(self, e0: dict[int, float] = CONFORMANCE_E0) -> torch.nn.Module:
        """A copy of the model with ``e0`` (eV), scale 0.7 and shift −0.3 eV."""
        model = copy.deepcopy(self.model)
        model.set_energy_reference(e0, scale=0.7, shift=-0.3)
        return model

    def run(self, checks: Sequence[str] | None = None) -> None:
        """Run ``checks`` (default: all of :attr:`CHECKS`)."""
        for name in checks or self.CHECKS:
            getattr(self, f"check_{name}")()

    # ------------------------------------------------------------------ checks
    def check_output_fields(self) -> None:
        """The model returns a :class:`PotentialOutput`: float64 ``energy`` (n_graphs,) and
        ``node_energy`` (n_atoms,) summing to it, and exactly the derivatives asked for, in the
        model's dtype (forces (n_atoms, 3); stress and virial (n_graphs, 3, 3))."""
        graph = self.graph([_small_molecule(), _crystal()])
        n_atoms, dtype = graph.positions.shape[0], self.model.model_dtype()
        for forces, stress in ((False, False), (True, False), (True, True), (False, True)):
            out = self.model(graph, compute_forces=forces, compute_stress=stress)
            asked = f"compute_forces={forces}, compute_stress={stress}"
            assert isinstance(out, PotentialOutput), f"{asked}: returned {type(out).__name__}"
            assert out.energy.shape == (2,) and out.energy.dtype == torch.float64, (
                f"{asked}: energy {tuple(out.energy.shape)} {out.energy.dtype}")
            assert (out.node_energy.shape == (n_atoms,)
                    and out.node_energy.dtype == torch.float64), (
                f"{asked}: node_energy {tuple(out.node_energy.shape)} {out.node_energy.dtype}")
            summed = torch.stack([part.sum() for part in out.node_energy.split(
                graph.n_atoms.tolist())])
            assert_close_ulps(summed, out.energy.detach(), ulps=64, name="Σ node_energy")
            assert (out.forces is not None) == forces, f"{asked}: forces {out.forces is None}"
            if forces:
                assert out.forces.shape == (n_atoms, 3) and out.forces.dtype == dtype
            for name in ("stress", "virial"):
                value = getattr(out, name)
                assert (value is not None) == stress, f"{asked}: {name} present: {not stress}"
                if stress:
                    assert value.shape == (2, 3, 3) and value.dtype == dtype, (
                        f"{name}: {tuple(value.shape)} {value.dtype}")

    def check_virial(self) -> None:
        """W = -σ·V (eV), NaN for a non-periodic system; for a molecule alone in a periodic box
        (no image within r_c) W = sym(Σ_i r_i ⊗ F_i), the LAMMPS/ASE sign (positive trace =
        the atoms push outwards)."""
        crystal, molecule = _crystal(), _small_molecule()
        out = self.evaluate(self.graph([molecule, crystal]), stress=True)
        assert torch.isnan(out.virial[0]).all(), "the virial of a molecule is not NaN"
        volume = abs(float(np.linalg.det(crystal.cell.array)))
        assert_close_ulps(out.virial[1], -out.stress[1] * volume, ulps=8,
                          scale=_max_abs(out.virial[1]), name="virial vs -stress·V")
        molecule.center(vacuum=self.cutoff + 1.0)
        molecule.pbc = True
        out = self.evaluate(self.graph(molecule), stress=True)
        positions = torch.as_tensor(molecule.positions)
        moment = positions.T @ out.forces
        expected = 0.5 * (moment + moment.T)
        err = _max_abs(out.virial[0] - expected) / max(1e-12, _max_abs(expected))
        assert err < 1e-10, (f"virial {out.virial[0].tolist()} != sym(Σ r⊗F) "
                             f"{expected.tolist()} (relative error {err:.2e})")

    def check_isolated_atoms(self) -> None:
        """An isolated atom, atoms farther apart than r_c (alone and inside a batch with an
        interacting molecule), a periodic cell without neighbours: E = Σ E0, F = 0, σ = 0."""
        import ase

        model = self._with_e0()
        far = 2.0 * self.cutoff + 1.0
        isolated = [ase.Atoms("C", positions=[[0, 0, 0]]),
                    ase.Atoms("NOH", positions=[[0, 0, 0], [far, 0, 0], [0, far, 0.5]]),
                    ase.Atoms("O", positions=[[1, 1, 1]], cell=[far] * 3, pbc=True)]
        frames = [isolated[0], _small_molecule(), isolated[1], isolated[2]]
        batch = self.evaluate(self.graph(frames), stress=True, model=model)
        alone = [self.evaluate(self.graph(a), stress=True, model=model) for a in isolated]
        for k, (atoms, out) in enumerate(zip(isolated, alone)):
            expected = sum(CONFORMANCE_E0[int(z)] for z in atoms.numbers)
            in_batch = float(batch.energy[frames.index(atoms)])
            for energy in (float(out.energy[0]), in_batch):
                assert abs(energy - expected) <= 1e-12 * abs(expected), (
                    f"isolated structure {k} ({atoms.get_chemical_formula()}): energy "
                    f"{energy!r} eV, sum of E0 {expected!r} eV")
            assert _max_abs(out.forces) == 0.0, f"isolated structure {k}: forces not zero"
        assert _max_abs(batch.forces[:1]) == 0.0 and _max_abs(batch.forces[-4:]) == 0.0
        assert _max_abs(alone[2].stress) == 0.0 and _max_abs(batch.stress[3]) == 0.0, (
            "stress of a periodic cell without neighbours is not zero")
        assert batch.energy.dtype == torch.float64, "energies must be float64"

    def check_fragments_add(self) -> None:
        """Two molecules farther apart than r_c in one structure: E = E_A + E_B, F joined."""
        first, second = _small_molecule(), _crystal()
        second.pbc, second.cell = False, None
        second.positions += [0.0, 0.0, 2.0 * self.cutoff + 6.0]
        joined = self.evaluate(self.graph(first + second))
        parts = [self.evaluate(self.graph(a)) for a in (first, second)]
        energy = float(parts[0].energy[0] + parts[1].energy[0])
        assert abs(float(joined.energy[0]) - energy) <= 1e-11 * max(1.0, abs(energy)), (
            f"fragments: {float(joined.energy[0])!r} eV != sum of parts {energy!r} eV")
        forces = torch.cat([p.forces for p in parts])
        err = _max_abs(joined.forces - forces)
        assert err <= 1e-11 * max(1.0, _max_abs(forces)), f"fragment forces differ by {err:.2e}"

    def check_batch_equals_single(self) -> None:
        """A batch of a molecule, a crystal and an isolated atom equals each alone (E, F, σ)."""
        import ase

        frames = [_small_molecule(), _crystal(), ase.Atoms("H", positions=[[0, 0, 0]])]
        model = self._with_e0()
        batch = self.evaluate(self.graph(frames), stress=True, model=model)
        offset = 0
        for k, atoms in enumerate(frames):
            single = self.evaluate(self.graph(atoms), stress=True, model=model)
            e_b, e_s = float(batch.energy[k]), float(single.energy[0])
            assert abs(e_b - e_s) <= 1e-13 * abs(e_s) + 1e-12, (
                f"structure {k}: batched energy {e_b!r} eV, alone {e_s!r} eV")
            forces = batch.forces[offset:offset + len(atoms)]
            err = _max_abs(forces - single.forces)
            assert err <= 1e-10 * max(1.0, _max_abs(single.forces)), (
                f"structure {k}: batched forces differ from alone by {err:.2e} eV/Å")
            assert torch.allclose(batch.stress[k], single.stress[0], rtol=1e-10,
                                  atol=1e-12, equal_nan=True), f"structure {k}: stress differs"
            offset += len(atoms)

    def check_permutation_translation(self) -> None:
        """Permuting atoms and translating leave E invariant and F covariant (round-off)."""
        graph = self.graph([_small_molecule(), _crystal()])
        ref = self.evaluate(graph, stress=True)
        g = torch.Generator().manual_seed(0)
        eye = torch.eye(3, dtype=torch.float64)
        perm = torch.cat([start + torch.randperm(int(n), generator=g) for start, n in
                          zip(graph.atom_offsets[:-1].tolist(), graph.n_atoms.tolist())])
        cases = {"translation": (transform_graph(graph, eye, torch.tensor([1.7, -3.1, 0.4])),
                                 torch.arange(len(perm))),
                 "permutation": (transform_graph(graph, eye, permutation=perm), perm)}
        for what, (moved, order) in cases.items():
            out = self.evaluate(moved, stress=True)
            err_e = _max_abs(out.energy - ref.energy) / _max_abs(ref.energy)
            err_f = _max_abs(out.forces - ref.forces[order]) / _max_abs(ref.forces)
            err_s = _max_abs(out.stress[1] - ref.stress[1]) / _max_abs(ref.stress[1])
            assert max(err_e, err_f, err_s) < 1e-10, (
                f"{what}: relative errors energy {err_e:.2e}, forces {err_f:.2e}, "
                f"stress {err_s:.2e}")

    def check_rotation_reflection(self) -> None:
        """Rotations (and reflections for E(3) families) within the family's stated tolerance;
        the stress of a periodic cell rotates as R σ Rᵀ."""
        tolerance = type(self.model).symmetry_tolerance
        reflections = (False, True) if type(self.model).symmetry_group == "E(3)" else (False,)
        for atoms, stress in ((_small_molecule(), False), (_crystal(), True)):
            graph = self.graph(atoms)
            for seed, reflect in enumerate(reflections):
                errors = equivariance_errors(self.model, graph, random_rotation(seed, reflect),
                                             compute_stress=stress)
                for key, err in errors.items():
                    bound = tolerance["forces" if key == "stress" else key]
                    assert err <= bound, (
                        f"{key} not {'reflection' if reflect else 'rotation'} equivariant on "
                        f"{atoms.get_chemical_formula()}: relative error {err:.2e} > stated "
                        f"{bound:.0e}")

    def check_periodic_images(self) -> None:
        """Wrapping atoms into the cell, unwrapping them by lattice vectors and choosing another
        (sheared, unimodular) cell of the same lattice change nothing (E, F, σ)."""
        atoms = _crystal()
        ref = self.evaluate(self.graph(atoms), stress=True)
        unwrapped = atoms.copy()
        shifts = np.array([[1, 0, -2], [0, 0, 0], [-1, 3, 0], [2, 1, 1], [0, -1, 0], [-3, 0, 2]])
        unwrapped.positions += shifts @ atoms.cell.array
        other_cell = atoms.copy()
        other_cell.set_cell(np.array([[1, 0, 0], [1, 1, 0], [0, -1, 1]]) @ atoms.cell.array,
                            scale_atoms=False)
        for what, variant in (("unwrapped", unwrapped), ("another cell", other_cell)):
            out = self.evaluate(self.graph(variant), stress=True)
            for key in ("energy", "forces", "stress"):
                new, old = getattr(out, key), getattr(ref, key)
                err = _max_abs(new - old) / max(1e-12, _max_abs(old))
                assert err < 1e-10, f"{what}: {key} changed by {err:.2e} (relative)"

    def check_supercell(self) -> None:
        """A 2×2×2 supercell has 8× the energy and the same forces and stress."""
        atoms = _crystal()
        ref = self.evaluate(self.graph(atoms), stress=True)
        big = self.evaluate(self.graph(atoms * (2, 2, 2)), stress=True)
        ratio = float(big.energy[0] / ref.energy[0])
        assert abs(ratio - 8.0) < 1e-10, f"supercell energy ratio {ratio!r}, expected 8"
        err_f = _max_abs(big.forces[:len(atoms)] - ref.forces) / _max_abs(ref.forces)
        err_s = _max_abs(big.stress - ref.stress) / _max_abs(ref.stress)
        assert err_f < 1e-10 and err_s < 1e-10, (
            f"supercell forces/stress differ: {err_f:.2e}, {err_s:.2e} (relative)")

    def check_cutoff_smoothness(self) -> None:
        """E and F continuous as a neighbour crosses r_c: a third atom crossing atom 0's cutoff,
        and a dimer losing its only neighbour (then E = Σ E0). The smooth part is removed by
        linear extrapolation from two inside points; the jump left at r_c + δ must be tiny."""
        import ase

        model = self._with_e0()
        delta = 1e-6
        for name in ("trimer", "dimer"):
            energies, forces = [], []
            for k in (-2, -1, 1):
                d = self.cutoff + k * delta
                if name == "trimer":
                    atoms = ase.Atoms("CON", positions=[[0, 0, 0], [1.2, 0.3, 0], [0, d, 0]])
                else:
                    atoms = ase.Atoms("CO", positions=[[0, 0, 0], [0, 0, d]])
                out = self.evaluate(self.graph(atoms), model=model)
                energies.append(float(out.energy[0]))
                forces.append(out.forces.numpy())
            e_jump = energies[2] - (3 * energies[1] - 2 * energies[0])
            f_jump = float(np.abs(forces[2] - (3 * forces[1] - 2 * forces[0])).max())
            assert abs(e_jump) < 1e-8 and f_jump < 1e-8, (
                f"{name}: energy jumps by {e_jump:.2e} eV and forces by {f_jump:.2e} eV/Å "
                "as a neighbour crosses the cutoff")
        far = self.evaluate(self.graph(ase.Atoms("CO", positions=[[0, 0, 0], [0, 0, 0.6 *
                                                                              self.cutoff]])),
                            model=model)
        isolated = CONFORMANCE_E0[6] + CONFORMANCE_E0[8]
        assert abs(float(far.energy[0]) - isolated) > 1e-7, (
            "the dimer does not interact inside the cutoff: the smoothness check tests nothing")

    def check_finite_differences(self) -> None:
        """Forces and stress equal central finite differences of the energy (float64): a
        molecule, a dimer whose isolation switch is partly on, and a skewed periodic cell."""
        import ase

        dimer = ase.Atoms("CN", positions=[[0, 0, 0], [0.3, 0.2, 0.85 * self.cutoff]])
        assert_forces_are_gradients(self.model, self.graph(_small_molecule()), tol=1e-6,
                                    n_atoms_checked=3)
        assert_forces_are_gradients(self._with_e0({}), self.graph(dimer), tol=1e-6,
                                    n_atoms_checked=2)
        assert_forces_are_gradients(self.model, self.graph(_crystal()), tol=1e-6,
                                    check_stress=True, n_atoms_checked=2)

    def check_float32(self) -> None:
        """The same weights in float32 (graph given in float64: cast at the boundary) agree with
        float64: |ΔE| ≤ 0.5 meV and batch vs alone ≤ 0.2 meV on the 27-atom 3BPA molecule with
        realistic E0 (~1.5·10⁴ eV); forces to 1e-4 of the largest force."""
        model64 = self._with_e0()
        model32 = copy.deepcopy(model64).float()
        molecule, other = _bpa_molecule(), _small_molecule()
        graph = self.graph(molecule)
        ref, out = self.evaluate(graph, model=model64), self.evaluate(graph, model=model32)
        assert out.energy.dtype == torch.float64 and out.forces.dtype == torch.float32
        err = abs(float(out.energy[0]) - float(ref.energy[0]))
        assert err <= 5e-4, f"float32 energy off float64 by {err * 1e3:.3f} meV"
        batch = self.evaluate(self.graph([other, molecule]), model=model32)
        err = abs(float(batch.energy[1]) - float(out.energy[0]))
        assert err <= 2e-4, f"float32: batched vs alone energy differs by {err * 1e3:.3f} meV"
        err_f = _max_abs(out.forces.double() - ref.forces) / _max_abs(ref.forces)
        assert err_f < 1e-4, f"float32 forces off float64 by {err_f:.2e} (relative)"

    def check_no_gradient_between_frames(self) -> None:
        """∂E_a/∂r of another frame's atoms is exactly zero (no leakage through the batch)."""
        from mlip.models.forces import energy_forces_stress

        graph = self.graph([_small_molecule(), _crystal(), _small_molecule()])
        positions = graph.positions.clone().requires_grad_(True)
        graph = dataclasses.replace(graph, positions=positions)
        energy = energy_forces_stress(self.model, graph, compute_forces=False,
                                      create_graph=True).energy
        for a in range(graph.n_graphs):
            (grad,) = torch.autograd.grad(energy[a], positions, retain_graph=True,
                                          allow_unused=True, materialize_grads=True)
            others = graph.batch != a
            assert _max_abs(grad[~others]) > 0, f"frame {a}: its own energy has no gradient"
            leak = _max_abs(grad[others])
            assert leak == 0.0, f"∂E_{a}/∂r of other frames' atoms is {leak:.2e}, not 0"

    def check_checkpoint_round_trip(self) -> None:
        """save_model → load_model gives the same hyper-parameters and bit-identical E, F, σ."""
        import tempfile
        from pathlib import Path

        from mlip.models import load_model, save_model

        model = self._with_e0()
        graph = self.graph([_crystal(), _small_molecule()])
        ref = self.evaluate(graph, stress=True, model=model)
        with tempfile.TemporaryDirectory() as tmp:
            save_model(model, Path(tmp) / "model.pt")
            loaded = load_model(Path(tmp) / "model.pt")
        out = self.evaluate(graph, stress=True, model=loaded)
        assert loaded.hparams == model.hparams, "hyper-parameters changed in the checkpoint"
        for key in ("energy", "node_energy", "forces", "stress", "virial"):
            new, old = getattr(out, key), getattr(ref, key)
            assert torch.equal(new.nan_to_num(), old.nan_to_num()), (
                f"{key} differs after the checkpoint round trip")

    def check_unknown_species(self) -> None:
        """A species the model never saw is refused with an UnknownElementError naming it."""
        import ase

        from mlip.errors import UnknownElementError

        atoms = ase.Atoms("CAuH", positions=[[0, 0, 0], [0, 0, 2.0], [0, 1.0, 0]])
        try:
            self.model(self.graph(atoms), compute_forces=True)
        except UnknownElementError as error:
            assert "Au (Z=79)" in str(error), f"the error does not name Au (Z=79): {error}"
        else:
            raise AssertionError("a structure with gold (not a model species) was accepted")

"""Checks every model must pass, shared by the test suites of all model families.

All checks run in float64 and raise ``AssertionError`` with the measured error.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from mlip.graph import AtomicGraph

__all__ = [
    "random_rotation",
    "transform_graph",
    "assert_equivariant",
    "assert_forces_are_gradients",
    "equivariance_errors",
    "assert_close_ulps",
]


def _outputs(model: torch.nn.Module, graph: AtomicGraph, **kwargs) -> dict[str, torch.Tensor]:
    """The model's outputs, detached (a model in training mode keeps its autograd graph)."""
    return {key: value.detach() for key, value in model(graph, **kwargs).items()}


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
    rot = rotation.to(ref["forces"])

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a - b).detach().abs().max() / b.detach().abs().max().clamp_min(1e-300))

    errors = {
        "energy": rel(out["energy"], ref["energy"]),
        "forces": rel(out["forces"], ref["forces"] @ rot.T),
    }
    if compute_stress:
        errors["stress"] = rel(out["stress"], rot @ ref["stress"] @ rot.T)
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
        (out["energy"] - ref["energy"]).abs().max() / ref["energy"].abs().max().clamp_min(1e-300)
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
        (out["energy"] - ref["energy"]).abs().max() / ref["energy"].abs().max().clamp_min(1e-300)
    )
    err_f = float(
        (out["forces"] - ref["forces"][perm]).abs().max()
        / ref["forces"].abs().max().clamp_min(1e-300)
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
    forces = out["forces"]

    def energy_at(positions: torch.Tensor, cell: torch.Tensor | None = None) -> float:
        moved = dataclasses.replace(
            graph, positions=positions, cell=graph.cell if cell is None else cell
        )
        return float(model(moved, compute_forces=False)["energy"].detach().sum())

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
    stress = out["stress"]
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
                    )["energy"].detach()
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

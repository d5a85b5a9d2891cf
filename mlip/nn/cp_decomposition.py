"""Canonical polyadic (CP / CANDECOMP-PARAFAC) decomposition of a dense tensor by ALS.

A tensor T with N modes is approximated by a sum of R rank-one terms,

    T[i_1, ..., i_N] ≈ Σ_r F_1[i_1, r] · F_2[i_2, r] · ... · F_N[i_N, r],

by alternating least squares (Kolda & Bader, SIAM Review 51, 2009, §3.4): each factor in
turn solves the linear least-squares problem F_n (⊛_{m≠n} F_mᵀF_m) = T_(n) (⊙_{m≠n} F_m),
where ⊛ is the Hadamard product and ⊙ the Khatri–Rao product. The fit is deterministic for a
given seed and runs in float64; results are cached in memory per (tensor, rank, seed).
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass

import torch

from mlip.errors import ConfigError

__all__ = ["CPFit", "fit_cp_als", "cp_reconstruct"]

_CACHE: dict[tuple, "CPFit"] = {}


@dataclass(frozen=True)
class CPFit:
    """The result of a CP fit.

    Attributes:
        factors: one (n_k, rank) float64 matrix per mode; columns balanced so that every
            mode carries the same norm of each rank-one term.
        relative_error: ‖T − T_R‖_F / ‖T‖_F.
        n_iter: ALS sweeps performed.
    """

    factors: tuple[torch.Tensor, ...]
    relative_error: float
    n_iter: int


def cp_reconstruct(factors: tuple[torch.Tensor, ...] | list[torch.Tensor]) -> torch.Tensor:
    """The dense tensor Σ_r Π_k F_k[i_k, r] of CP factors (each (n_k, rank))."""
    letters = string.ascii_lowercase[: len(factors)]
    spec = ",".join(f"{c}z" for c in letters) + "->" + letters
    return torch.einsum(spec, *factors)


def _khatri_rao(matrices: list[torch.Tensor]) -> torch.Tensor:
    """Column-wise Kronecker product, rows in C order of the matrices' row indices."""
    out = matrices[0]
    for m in matrices[1:]:
        out = (out[:, None, :] * m[None, :, :]).reshape(-1, out.shape[1])
    return out


def _balance(factors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Rescale columns so each rank-one term has the same norm in every mode."""
    norms = torch.stack([f.norm(dim=0) for f in factors]).clamp_min(1e-300)  # (n_modes, rank)
    target = norms.prod(dim=0).pow(1.0 / len(factors))
    return [f * (target / n) for f, n in zip(factors, norms)]


def _als(tensor: torch.Tensor, rank: int, seed: int, max_iter: int, tol: float) -> CPFit:
    """One ALS run from a seeded Gaussian start (float64)."""
    generator = torch.Generator().manual_seed(seed)
    factors = [torch.randn(n, rank, generator=generator, dtype=torch.float64) for n in tensor.shape]
    unfolded = [tensor.movedim(k, 0).reshape(tensor.shape[k], -1) for k in range(tensor.dim())]
    norm2 = float((tensor * tensor).sum())
    eye = torch.eye(rank, dtype=torch.float64)
    error, previous, sweep = float("inf"), float("inf"), 0
    for sweep in range(1, max_iter + 1):
        for mode in range(tensor.dim()):
            others = [f for k, f in enumerate(factors) if k != mode]
            gram = torch.stack([f.T @ f for f in others]).prod(dim=0)  # (rank, rank)
            mttkrp = unfolded[mode] @ _khatri_rao(others)  # (n_mode, rank)
            ridge = (1e-13 * float(gram.diagonal().mean())) * eye
            factors[mode] = torch.linalg.solve(gram + ridge, mttkrp.T).T
        if sweep % 10 and sweep != max_iter:
            continue
        # ‖T − T_R‖² = ‖T‖² − 2⟨T, T_R⟩ + ‖T_R‖², from the last mode's products
        inner = float((mttkrp * factors[-1]).sum())
        model2 = float((gram * (factors[-1].T @ factors[-1])).sum())
        error = max(norm2 - 2 * inner + model2, 0.0) ** 0.5 / norm2**0.5
        if error < tol or previous - error < 1e-6 * error:
            break
        previous = error
    factors = _balance(factors)
    error = float((tensor - cp_reconstruct(factors)).norm()) / norm2**0.5
    return CPFit(tuple(factors), error, sweep)


def fit_cp_als(tensor: torch.Tensor, rank: int, *, seed: int = 0, n_restarts: int = 1,
               max_iter: int = 2000, tol: float = 1e-10) -> CPFit:
    """Fit rank-``rank`` CP factors to ``tensor`` by ALS; the best of ``n_restarts`` seeds.

    Args:
        tensor: (n_1, ..., n_N) any floating dtype; fitted in float64.
        rank: number of rank-one terms R ≥ 1.
        seed: seed of the first restart (restart k uses seed + k).
        n_restarts: independent random initialisations; the lowest error wins.
        max_iter: maximum ALS sweeps per restart.
        tol: stop when the relative Frobenius error falls below this (or improves by less
            than a relative 1e-6 over 10 sweeps).

    Returns:
        The :class:`CPFit` (cached in memory: a second call with the same inputs is free).

    Raises:
        ConfigError: if ``rank`` < 1.
    """
    if rank < 1:
        raise ConfigError(f"CP rank must be >= 1, got {rank}")
    tensor = tensor.detach().to(dtype=torch.float64, device="cpu").contiguous()
    digest = hashlib.sha1(tensor.numpy().tobytes()).hexdigest()
    key = (digest, tuple(tensor.shape), rank, seed, n_restarts, max_iter, tol)
    if key not in _CACHE:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the sweeps are many tiny products: threads only add overhead
        try:
            fits = [_als(tensor, rank, seed + k, max_iter, tol) for k in range(n_restarts)]
        finally:
            torch.set_num_threads(threads)
        _CACHE[key] = min(fits, key=lambda fit: fit.relative_error)
    return _CACHE[key]

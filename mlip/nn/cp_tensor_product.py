"""CP-decomposed tensor product (TDN) and the exact Clebsch–Gordan product it replaces.

Both modules compute the "uvu" tensor product of a multi-channel feature ``x`` with a
single-channel feature ``y`` (typically the edge spherical harmonics), every path
(l1, l2 → l3) with |l1 − l2| ≤ l3 ≤ min(l1 + l2, L), weighted per channel:

    out[k, u] = Σ_p w[p, u] Σ_ij T_p[i, j, k] x[i, u] y[j]

``T_p`` are e3nn's normalised CG blocks (``o3.TensorProduct``, component normalisation,
element path normalisation), so the exact product equals e3nn's to round-off. Irreps are
SO(3)-only, ``C x (0e + 1e + ... + Le)``, as in TDN (docs/tdn.md, "The CP tensor product").

With **path-weight sharing** (TDN's default) w[p, u] = w[u], and the whole product is one
fixed bilinear map M = Σ_p T_p ∈ R^{d×d×d}, d = (L+1)². TDN (Chen et al., arXiv 2507.01131)
replaces it by a rank-R CP decomposition M ≈ Σ_r A[:, r] ⊗ B[:, r] ⊗ C[:, r]:

    a[r, u] = Σ_i A[i, r] x[i, u],   b[r] = Σ_j B[j, r] y[j],
    out[k, u] = w[u] Σ_r C[k, r] a[r, u] b[r]                  O(R·d·U) instead of O(L⁶·U)

With R = 7L² (the "quadratic" schedule) the cost is O(L⁴). When d(R + C) < 2RC (e.g. L = 2,
R = 28, C = 16) the same sum is evaluated kernel-first, K = C diag(b) Aᵀ (one d×d matrix per
edge) applied to all channels: O(d²R + d²C) per edge, ~25 % faster TDN training steps.
Without sharing, the 4-way tensor T[p, i, j, k] is decomposed instead, with one more factor
P[p, r] that mixes the per-path weights: out[k, u] = Σ_r C[k, r] a[r, u] b[r] Σ_p w[p, u] P[p, r].

The CP product is equivariant only approximately: with ε the operator norm of M − M_R and
D_g the Wigner matrices, ‖f(D_g x, D_g y) − D_g f(x, y)‖ ≤ 2ε |w| ‖x‖ ‖y‖ (docs/tdn.md,
"The CP tensor product").
:attr:`CPTensorProduct.operator_error` is an upper bound of ε (the largest singular value
of the k-unfolding of the residual), so the bound holds with it.

Layout: features are component-major, ``x[n, i, u]`` with component ``i = l² + l + m``.
"""

from __future__ import annotations

import functools
import math

import torch
from e3nn import o3
from torch import nn

from mlip.errors import ConfigError
from mlip.nn.cp_decomposition import cp_reconstruct, fit_cp_als
from mlip.nn.precision import float64_construction

__all__ = ["RANK_SCHEDULES", "rank_schedule", "tensor_product_paths", "coupling_tensor",
           "CPTensorProduct", "CGTensorProduct", "DenseCGTensorProduct", "to_e3nn_layout",
           "from_e3nn_layout"]

RANK_SCHEDULES = ("quadratic", "linear", "log", "full")


def rank_schedule(lmax: int, schedule: str = "quadratic") -> int:
    """TDN's CP rank for a given L: quadratic 7L², linear 7L, log 16⌊ln²(L+1)⌋, full (L+1)⁴.

    The result is at least 1 (L = 0 gives a scalar product of rank 1).

    Raises:
        ConfigError: unknown schedule name.
    """
    ranks = {"quadratic": 7 * lmax**2, "linear": 7 * lmax,
             "log": 16 * int(math.log(lmax + 1) ** 2), "full": (lmax + 1) ** 4}
    if schedule not in ranks:
        raise ConfigError(f"unknown rank schedule {schedule!r}; "
                          f"choose one of {list(RANK_SCHEDULES)}")
    return max(1, ranks[schedule])


def so3_irreps(lmax: int, channels: int = 1) -> o3.Irreps:
    """``channels x 0e + channels x 1e + ... + channels x Le`` (SO(3)-only labels)."""
    return o3.Irreps([(channels, (ell, 1)) for ell in range(lmax + 1)])


def tensor_product_paths(lmax: int) -> list[tuple[int, int, int]]:
    """All CG paths (l1, l2, l3) with l1, l2, l3 ≤ L and |l1 − l2| ≤ l3 ≤ l1 + l2."""
    return [(l1, l2, l3) for l1 in range(lmax + 1) for l2 in range(lmax + 1)
            for l3 in range(abs(l1 - l2), min(l1 + l2, lmax) + 1)]


def _e3nn_tensor_product(lmax: int, channels: int) -> o3.TensorProduct:
    instructions = [(l1, l2, l3, "uvu", True) for l1, l2, l3 in tensor_product_paths(lmax)]
    return o3.TensorProduct(so3_irreps(lmax, channels), so3_irreps(lmax),
                            so3_irreps(lmax, channels), instructions, shared_weights=False,
                            internal_weights=False)


@functools.lru_cache(maxsize=None)
def coupling_tensor(lmax: int, share_path_weights: bool = True) -> torch.Tensor:
    """The bilinear map of the exact product, read off e3nn on basis vectors (float64).

    Returns:
        (d, d, d) M[i, j, k] = Σ_p T_p[i, j, k] if ``share_path_weights``, else the
        (n_paths, d, d, d) stack T[p, i, j, k]; d = (L+1)².
    """
    with float64_construction():  # e3nn's CG tables are built in the default dtype
        tp = _e3nn_tensor_product(lmax, 1)
    d, n_paths = (lmax + 1) ** 2, len(tensor_product_paths(lmax))
    eye = torch.eye(d, dtype=torch.float64)
    x = eye[:, None, :].expand(d, d, d).reshape(d * d, d)
    y = eye[None, :, :].expand(d, d, d).reshape(d * d, d)
    if share_path_weights:
        return tp(x, y, torch.ones(d * d, n_paths, dtype=torch.float64)).reshape(d, d, d)
    blocks = [tp(x, y, torch.eye(n_paths, dtype=torch.float64)[p].expand(d * d, n_paths))
              for p in range(n_paths)]
    return torch.stack(blocks).reshape(n_paths, d, d, d)


def to_e3nn_layout(x: torch.Tensor, lmax: int) -> torch.Tensor:
    """(n, d, C) component-major → (n, C·d) e3nn layout of ``C x 0e + C x 1e + ...``."""
    blocks = [x[:, ell * ell:(ell + 1) ** 2, :].transpose(1, 2).flatten(1)
              for ell in range(lmax + 1)]
    return torch.cat(blocks, dim=1)


def from_e3nn_layout(x: torch.Tensor, lmax: int, channels: int) -> torch.Tensor:
    """(n, C·d) e3nn layout → (n, d, C) component-major; inverse of :func:`to_e3nn_layout`."""
    blocks, start = [], 0
    for ell in range(lmax + 1):
        size = channels * (2 * ell + 1)
        block = x[:, start:start + size].reshape(x.shape[0], channels, 2 * ell + 1)
        blocks.append(block.transpose(1, 2))
        start += size
    return torch.cat(blocks, dim=1)


class _TensorProductBase(nn.Module):
    """Shared irreps bookkeeping and weight-shape checks."""

    def __init__(self, lmax: int, channels: int, share_path_weights: bool) -> None:
        super().__init__()
        if lmax < 0 or channels < 1:
            raise ConfigError(f"tensor product needs lmax >= 0 and channels >= 1, "
                              f"got {lmax}, {channels}")
        self.lmax, self.channels, self.share_path_weights = lmax, channels, share_path_weights
        self.paths = tensor_product_paths(lmax)
        self.irreps_in1 = so3_irreps(lmax, channels)
        self.irreps_in2 = so3_irreps(lmax)
        self.irreps_out = so3_irreps(lmax, channels)
        self.weight_shape = (channels,) if share_path_weights else (len(self.paths), channels)

    def _check(self, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor) -> None:
        d = (self.lmax + 1) ** 2
        n = x.shape[0]
        if (x.shape != (n, d, self.channels) or y.shape != (n, d)
                or weight.shape != (n, *self.weight_shape)):
            expected_w = ", ".join(map(str, self.weight_shape))
            raise ValueError(f"{type(self).__name__}: expected x (n, {d}, {self.channels}), "
                             f"y (n, {d}), weight (n, {expected_w}); got {tuple(x.shape)}, "
                             f"{tuple(y.shape)}, {tuple(weight.shape)}")


class CGTensorProduct(_TensorProductBase):
    """The exact CG product (e3nn ``o3.TensorProduct``, "uvu", all paths), for comparison.

    Args:
        lmax: L of both inputs and the output.
        channels: C, the multiplicity of ``x`` and of the output.
        share_path_weights: one weight per channel for all paths (TDN) or one per path.
    """

    def __init__(self, lmax: int, channels: int, *, share_path_weights: bool = True) -> None:
        super().__init__(lmax, channels, share_path_weights)
        self.tp = _e3nn_tensor_product(lmax, channels)

    def forward(self, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Exact product.

        Args:
            x: (n, d, C) features. y: (n, d) single-channel features (edge SH).
            weight: (n, C) if path weights are shared, else (n, n_paths, C).

        Returns:
            (n, d, C) the product, component-major.
        """
        self._check(x, y, weight)
        if self.share_path_weights:
            weight = weight[:, None, :].expand(-1, len(self.paths), -1)
        out = self.tp(to_e3nn_layout(x, self.lmax), y, weight.flatten(1))
        return from_e3nn_layout(out, self.lmax, self.channels)


class DenseCGTensorProduct(_TensorProductBase):
    """The exact product as one dense contraction with the coupling tensor (fast exact path).

    Because ``y`` has a single channel, contracting it with M first gives one d×d matrix per
    edge, applied to all C channels: out[k, u] = w[u] Σ_i (Σ_j M[i, j, k] y[j]) x[i, u]. That is
    O(d³ + d²·C) per edge, against O(R·d·C) for the CP product and O(Σ_paths (2l+1)³ · C) for
    e3nn's per-path code; at C ≥ d it is the cheapest of the three (benchmarks/tensor_products.py).
    Same arguments, call and irreps as :class:`CGTensorProduct`, equal to it to round-off.
    """

    def __init__(self, lmax: int, channels: int, *, share_path_weights: bool = True) -> None:
        super().__init__(lmax, channels, share_path_weights)
        self.register_buffer("coupling", coupling_tensor(lmax, share_path_weights).clone())

    def forward(self, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Exact product; arguments and shapes as in :meth:`CGTensorProduct.forward`."""
        self._check(x, y, weight)
        coupling = self.coupling.to(x.dtype)
        if self.share_path_weights:
            kernel = torch.einsum("ijk,nj->nki", coupling, y)  # (n, d, d)
            return torch.bmm(kernel, x) * weight[:, None, :]
        kernel = torch.einsum("pijk,nj->npki", coupling, y)  # (n, n_paths, d, d)
        return torch.einsum("npki,niu,npu->nku", kernel, x, weight)


class CPTensorProduct(_TensorProductBase):
    """TDN's rank-R CP tensor product, a drop-in for :class:`CGTensorProduct` (same irreps).

    The factors are fitted once by ALS on the explicit coupling tensor (float64, seeded,
    cached in memory) and stored as non-trainable float64 buffers (saved in the state dict,
    moved by ``.to()``) that are cast to the input dtype on use.

    Args:
        lmax: L of both inputs and the output.
        channels: C, the multiplicity of ``x`` and of the output.
        rank: CP rank R; ``None`` uses ``rank_schedule(lmax, schedule)``.
        schedule: rank schedule when ``rank`` is None (see :func:`rank_schedule`).
        share_path_weights: one weight per channel for all paths (TDN) or one per path.
        seed: seed of the ALS initialisation.
        als_iterations: maximum ALS sweeps per restart.
        als_restarts: ALS runs from seeds seed, seed+1, ...; the best fit is kept (the 4-way
            unshared tensor converges less reliably than the shared one).

    Attributes:
        fit_error: relative Frobenius error ‖M − M_R‖/‖M‖ of the fitted factors.
        operator_error: ε, a bound on the operator norm of M − M_R (largest singular value of
            its output-mode unfolding; for unshared weights, of the per-path residual stack).
    """

    def __init__(self, lmax: int, channels: int, *, rank: int | None = None,
                 schedule: str = "quadratic", share_path_weights: bool = True, seed: int = 0,
                 als_iterations: int = 2000, als_restarts: int = 1) -> None:
        super().__init__(lmax, channels, share_path_weights)
        self.rank = rank_schedule(lmax, schedule) if rank is None else int(rank)
        target = coupling_tensor(lmax, share_path_weights)
        fit = fit_cp_als(target, self.rank, seed=seed, n_restarts=als_restarts,
                         max_iter=als_iterations)
        self.fit_error = fit.relative_error
        residual = target - cp_reconstruct(fit.factors)  # (…, d, d, d)
        unfolded = residual.movedim(-1, 0).reshape(residual.shape[-1], -1)
        self.operator_error = float(torch.linalg.matrix_norm(unfolded, ord=2))
        *path_factor, a, b, c = (f.clone() for f in fit.factors)  # the fit is cached: never alias
        self.register_buffer("factor_in1", a)  # (d, R)
        self.register_buffer("factor_in2", b)  # (d, R)
        self.register_buffer("factor_out", c)  # (d, R)
        if path_factor:
            self.register_buffer("factor_path", path_factor[0])  # (n_paths, R)

    def forward(self, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """CP product.

        Args:
            x: (n, d, C) features. y: (n, d) single-channel features (edge SH).
            weight: (n, C) if path weights are shared, else (n, n_paths, C).

        Returns:
            (n, d, C) the approximate product, component-major.
        """
        self._check(x, y, weight)
        b = y @ self.factor_in2.to(y.dtype)  # (n, R)
        d, channels = x.shape[1], x.shape[2]
        if self.share_path_weights and d * (self.rank + channels) < 2 * self.rank * channels:
            # the same product, contracted kernel-first: K = C diag(b) Aᵀ is one (d, d) matrix
            # per edge for all channels, O(d²R + d²C) instead of O(2RdC) (fewer flops for C > d)
            scaled = self.factor_out.to(x.dtype) * b[:, None, :]  # (n, d, R)
            kernel = torch.matmul(scaled, self.factor_in1.to(x.dtype).T)  # (n, d, d)
            return torch.bmm(kernel, x) * weight[:, None, :]
        a = torch.matmul(self.factor_in1.to(x.dtype).T, x)  # (n, R, C)
        if self.share_path_weights:
            terms = a * (b[:, :, None] * weight[:, None, :])  # (n, R, C)
        else:
            mixed = torch.matmul(self.factor_path.to(weight.dtype).T, weight)  # (n, R, C)
            terms = a * b[:, :, None] * mixed
        return torch.matmul(self.factor_out.to(x.dtype), terms)  # (n, d, C)

"""Cost of an eSCN SO(2) edge convolution vs a full Clebsch-Gordan convolution, L = 2, 4, 6.

Both map per-edge neighbour features x_j ((L+1)², C channels, degrees 0..L) to a message of the
same shape, with edge-dependent weights:

* **CG** (NequIP/MACE/e3nn style): ``e3nn.o3.TensorProduct(x_j ⊗ Y(r̂_ij) → out)`` with every
  path l1 ⊗ l2 → l3 allowed (SO(3) irreps, no parity selection) in "uvu" mode and per-edge
  weights (n_edges, weight_numel) from the radial network (counted as an input, not timed).
* **SO(2)** (ours, ``mlip.nn``): Wigner-D of the edge rotation, rotate, per-degree radial
  scaling, :class:`mlip.nn.so2.SO2Linear` (C → C, all orders |m| ≤ m_max) and rotate back. Timed
  with m_max = L (equivalent expressivity class, eSCN) and m_max = 2 (EquiformerV3's truncation).

Forward + backward (to inputs and parameters), float32, median of ``--repeats`` runs, on the CPU
of this machine unless ``--device cuda``. The CPU is shared: absolute numbers are noisy; compare
the ratios measured in the same process. Results: ``benchmarks/results/so2_vs_cg.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Callable

import torch
from e3nn import o3

from mlip.nn.so2 import SO2Linear, degrees_of_order, m_primary_order
from mlip.nn.wigner import WignerD, edge_rotation


def _time(step: Callable[[], torch.Tensor], repeats: int, device: str) -> float:
    """Median wall time (ms) of forward + backward."""
    times = []
    for k in range(repeats + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step().square().sum().backward()
        if device == "cuda":
            torch.cuda.synchronize()
        if k:  # the first run warms up caches
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def cg_convolution(lmax: int, channels: int, n_edges: int, device: str) -> tuple[Callable, int]:
    """A full CG edge convolution; returns (step, number of per-edge weights)."""
    irreps = o3.Irreps([(channels, (ell, 1)) for ell in range(lmax + 1)])
    sh_irreps = o3.Irreps([(1, (ell, 1)) for ell in range(lmax + 1)])
    instructions = [
        (i1, i2, i3, "uvu", True)
        for i1 in range(lmax + 1)
        for i2 in range(lmax + 1)
        for i3 in range(lmax + 1)
        if abs(i1 - i2) <= i3 <= i1 + i2
    ]
    tp = o3.TensorProduct(
        irreps, sh_irreps, irreps, instructions, shared_weights=False, internal_weights=False
    ).to(device)
    x = torch.randn(n_edges, irreps.dim, device=device, requires_grad=True)
    vectors = torch.randn(n_edges, 3, device=device)
    sh = o3.spherical_harmonics(list(range(lmax + 1)), vectors, normalize=True)
    weights = torch.randn(n_edges, tp.weight_numel, device=device, requires_grad=True)
    return (lambda: tp(x, sh, weights)), tp.weight_numel


def so2_convolution(lmax: int, mmax: int, channels: int, n_edges: int, device: str) -> Callable:
    """Our rotate → SO(2) linear → rotate back, including the Wigner-D construction."""
    rows = torch.tensor(m_primary_order(lmax, mmax), device=device)
    degree = torch.tensor(degrees_of_order(lmax, mmax), device=device)
    wigner = WignerD(lmax)
    layer = SO2Linear(channels, channels, lmax, mmax).to(device)
    x = torch.randn(n_edges, (lmax + 1) ** 2, channels, device=device, requires_grad=True)
    vectors = torch.randn(n_edges, 3, device=device, requires_grad=True)
    radial = torch.randn(n_edges, lmax + 1, channels, device=device, requires_grad=True)

    def step() -> torch.Tensor:
        to_edge = wigner(edge_rotation(vectors), rows)  # (n_edges, n_rows, n_sph)
        rotated = torch.einsum("eri,eic->erc", to_edge, x) * radial[:, degree]
        out, _ = layer(rotated)
        return torch.einsum("eri,erc->eic", to_edge, out)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", type=int, default=2000)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--lmax", type=int, nargs="+", default=[2, 4, 6])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1: steadier on a shared CPU)"
    )
    parser.add_argument(
        "--output", default=str(Path(__file__).parent / "results" / "so2_vs_cg.json")
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    print(f"{args.edges} edges, {args.channels} channels, float32, forward+backward, {args.device}")
    print(
        f"{'L':>3} {'CG ms':>10} {'SO2 m=L ms':>11} {'SO2 m=2 ms':>11} {'CG/SO2(m=L)':>12} "
        f"{'CG/SO2(m=2)':>12} {'CG weights/edge':>16}"
    )
    for lmax in args.lmax:
        cg_step, n_weights = cg_convolution(lmax, args.channels, args.edges, args.device)
        cg_ms = _time(cg_step, args.repeats, args.device)
        full_ms = _time(
            so2_convolution(lmax, lmax, args.channels, args.edges, args.device),
            args.repeats,
            args.device,
        )
        trunc_ms = _time(
            so2_convolution(lmax, min(2, lmax), args.channels, args.edges, args.device),
            args.repeats,
            args.device,
        )
        row = dict(
            lmax=lmax,
            cg_ms=cg_ms,
            so2_full_ms=full_ms,
            so2_mmax2_ms=trunc_ms,
            ratio_full=cg_ms / full_ms,
            ratio_mmax2=cg_ms / trunc_ms,
            cg_weights_per_edge=n_weights,
        )
        rows.append(row)
        print(
            f"{lmax:>3} {cg_ms:>10.1f} {full_ms:>11.1f} {trunc_ms:>11.1f} "
            f"{row['ratio_full']:>12.2f} {row['ratio_mmax2']:>12.2f} {n_weights:>16}"
        )
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(
        edges=args.edges,
        channels=args.channels,
        dtype="float32",
        device=args.device,
        repeats=args.repeats,
        torch_threads=torch.get_num_threads(),
        note="shared CPU; absolute times are noisy, ratios are from the same process",
    )
    out.write_text(json.dumps(dict(meta=meta, results=rows), indent=2))
    print(f"saved {out}")


if __name__ == "__main__":
    main()

"""e3nn's CG tensor product vs TDN's CP tensor product: wall time, memory, scaling in L.

Both compute the same "uvu" product of x (n_edges, (L+1)², C) with edge spherical harmonics
y (n_edges, (L+1)²) and one radial weight per (edge, channel) shared by all paths: the e3nn
``o3.TensorProduct`` (``mlip.nn.cp_tensor_product.CGTensorProduct``) against the rank-7L² CP
product (``CPTensorProduct``). Timed: forward + backward (gradients w.r.t. x and the weights, as
in training with forces), float32, minimum (and median) over repeats after warm-up, in one
process. Memory: the
bytes autograd saves for the backward pass plus the output (a deterministic activation-memory
measure; CPU has no peak-allocation counter). Exponents are least-squares slopes of
log(time) vs log(L) over L ≥ 2, printed next to the asymptotic 6 (CG) and 4 (CP) and the
exponents of the exact operation counts over the same L range. A third column times the exact
product as one dense contraction with the coupling tensor M (``DenseCGProduct``): because the
second input (the edge SH) has one channel, that costs O(d³ + d²C) per edge, not O(L⁶·C), and
is the fairer algorithmic baseline for this "uvu" product.

The CPU is shared, so absolute times are noisy; compare ratios from the same run.

    python benchmarks/tensor_products.py [--lmax 6] [--channels 16 128] [--edges 128] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from e3nn import o3

from mlip.nn.cp_tensor_product import (
    CGTensorProduct,
    CPTensorProduct,
    coupling_tensor,
    rank_schedule,
    tensor_product_paths,
)

RESULTS = Path(__file__).resolve().parent / "results" / "tensor_products.json"


def operation_counts(lmax: int) -> tuple[int, int]:
    """Multiply-adds per edge and channel: dense CG paths Σ(2l1+1)(2l2+1)(2l3+1); CP 2·R·d."""
    cg = sum((2 * a + 1) * (2 * b + 1) * (2 * c + 1) for a, b, c in tensor_product_paths(lmax))
    return cg, 2 * rank_schedule(lmax) * (lmax + 1) ** 2


def saved_bytes(fn) -> int:
    """Bytes of the tensors autograd saves during ``fn()`` plus its output (deduplicated)."""
    seen: dict[tuple, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[(t.untyped_storage().data_ptr(), t.dtype)] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(seen.values()) + out.numel() * out.element_size()


def time_forward_backward(module, x, y, w, repeats: int, warmup: int = 3,
                          budget_s: float = 5.0) -> tuple[float, float]:
    """(min, median) seconds of forward + backward after ``warmup`` calls.

    e3nn's TorchScript-compiled products run their profiling passes during the first calls,
    which are 10-100x slower; other jobs on a shared CPU only add time, so the minimum is the
    better estimate of the intrinsic cost. Stops early (at least 2 timed calls) after
    ``budget_s`` of timed calls.
    """
    times: list[float] = []
    for call in range(warmup + repeats):
        xg, wg = x.detach().requires_grad_(), w.detach().requires_grad_()
        start = time.perf_counter()
        module(xg, y, wg).square().sum().backward()
        times.append(time.perf_counter() - start)
        if call >= warmup + 1 and sum(times[warmup:]) > budget_s:
            break
    return min(times[warmup:]), statistics.median(times[warmup:])


class DenseCGProduct(torch.nn.Module):
    """The exact shared-weight product as one dense contraction with M (a second reference).

    out[k,u] = w[u] Σ_i (Σ_j M[i,j,k] y[j]) x[i,u]: O(d³ + d²·C) per edge, because y has a
    single channel.
    """

    def __init__(self, lmax: int) -> None:
        super().__init__()
        self.register_buffer("coupling", coupling_tensor(lmax).float())

    def forward(self, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        kernel = torch.einsum("ijk,nj->nki", self.coupling, y)  # (n, d, d)
        return torch.bmm(kernel, x) * weight[:, None, :]


def run_case(lmax: int, channels: int, n_edges: int, repeats: int) -> dict:
    """Time and measure both products at one (L, C)."""
    generator = torch.Generator().manual_seed(lmax * 1000 + channels)
    d = (lmax + 1) ** 2
    x = torch.randn(n_edges, d, channels, generator=generator)
    y = o3.spherical_harmonics(list(range(lmax + 1)), torch.randn(n_edges, 3, generator=generator),
                               normalize=True, normalization="component")
    w = torch.randn(n_edges, channels, generator=generator)
    cg = CGTensorProduct(lmax, channels)
    # timing does not depend on the factors' quality: a short ALS keeps the set-up fast at L ≥ 4
    cp = CPTensorProduct(lmax, channels, als_iterations=2000 if lmax <= 3 else 100).float()
    row = {"lmax": lmax, "channels": channels, "n_edges": n_edges, "rank": cp.rank,
           "cp_fit_error": cp.fit_error, "n_paths": len(cp.paths)}
    row["cg_ops"], row["cp_ops"] = operation_counts(lmax)
    row["cg_s"], row["cg_median_s"] = time_forward_backward(cg, x, y, w, repeats)
    row["cp_s"], row["cp_median_s"] = time_forward_backward(cp, x, y, w, repeats)
    dense = DenseCGProduct(lmax)
    row["dense_s"], row["dense_median_s"] = time_forward_backward(dense, x, y, w, repeats)
    row["cg_mb"] = saved_bytes(lambda: cg(x.requires_grad_(), y, w.requires_grad_())) / 2**20
    row["cp_mb"] = saved_bytes(lambda: cp(x.requires_grad_(), y, w.requires_grad_())) / 2**20
    row["speedup"] = row["cg_s"] / row["cp_s"]
    row["speedup_vs_dense"] = row["dense_s"] / row["cp_s"]
    return row


def exponent(rows: list[dict], key: str) -> float:
    """Slope of log(key) against log(L) over L ≥ 2."""
    sel = [r for r in rows if r["lmax"] >= 2]
    return float(np.polyfit(np.log([r["lmax"] for r in sel]), np.log([r[key] for r in sel]), 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lmax", type=int, default=6)
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 128])
    parser.add_argument("--edges", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    print(f"{'L':>2} {'C':>4} {'R':>4} {'CG ms':>9} {'CP ms':>9} {'speed-up':>8} {'dense ms':>9} "
          f"{'CG MB':>8} {'CP MB':>8} {'CP fit err':>10}")
    for channels in args.channels:
        for lmax in range(1, args.lmax + 1):
            row = run_case(lmax, channels, args.edges, args.repeats)
            rows.append(row)
            print(f"{lmax:>2} {channels:>4} {row['rank']:>4} {1e3 * row['cg_s']:>9.2f} "
                  f"{1e3 * row['cp_s']:>9.2f} {row['speedup']:>8.2f} {1e3 * row['dense_s']:>9.2f} "
                  f"{row['cg_mb']:>8.2f} {row['cp_mb']:>8.2f} {row['cp_fit_error']:>10.3g}",
                  flush=True)
    summary = {}
    for channels in args.channels:
        sel = [r for r in rows if r["channels"] == channels]
        if len([r for r in sel if r["lmax"] >= 2]) < 2:
            continue
        keys = ("cg_s", "cp_s", "dense_s", "cg_ops", "cp_ops", "cg_mb", "cp_mb")
        summary[channels] = {key: exponent(sel, key) for key in keys}
        s = summary[channels]
        print(f"C={channels}: time exponent in L (L>=2)  CG {s['cg_s']:.2f} (theory 6; op count "
              f"over this range {s['cg_ops']:.2f})   CP {s['cp_s']:.2f} (theory 4; op count "
              f"{s['cp_ops']:.2f});  dense-M {s['dense_s']:.2f};  memory exponent "
              f"CG {s['cg_mb']:.2f}, CP {s['cp_mb']:.2f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"args": vars(args), "torch_threads": torch.get_num_threads(),
                                   "device": "cpu", "rows": rows, "exponents": summary}, indent=1))
    print(f"saved {RESULTS}")


if __name__ == "__main__":
    main()

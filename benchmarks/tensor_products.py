"""e3nn's CG tensor product vs TDN's CP tensor product: wall time, memory, scaling in L.

Both compute the same "uvu" product of x (n_edges, (L+1)², C) with edge spherical harmonics
y (n_edges, (L+1)²) and one radial weight per (edge, channel) shared by all paths: the e3nn
``o3.TensorProduct`` (``mlip.nn.cp_tensor_product.CGTensorProduct``) against the rank-7L² CP
product (``CPTensorProduct``). A third column times the same exact product as one dense
contraction with the coupling tensor M (``DenseCGTensorProduct``): since the second input has
one channel, that costs O(d³ + d²C) per edge, not O(L⁶·C), and is the fairer algorithmic
baseline for this product.

Timed: forward + backward (gradients w.r.t. x and the weights, as in training with forces),
float32, one thread, minimum (and median) over repeats after warm-up, in one process. Memory:
the bytes autograd saves for the backward pass plus the output (a deterministic
activation-memory measure; CPU has no peak-allocation counter). Exponents are least-squares
slopes of log(time) vs log(L) over L ≥ 2, printed next to the asymptotic 6 (CG) and 4 (CP) and
the exponents of the exact operation counts over the same L range. The CPU is shared, so
absolute times are noisy; compare ratios from the same run.

    python benchmarks/tensor_products.py [--lmax 6] [--channels 16 128] [--edges 128] [--models]

``--models`` adds TDN energy+forces timings next to MACE and Facet at matched sizes, run through
the subprocess workers of ``benchmarks/models.py`` (MACE lives in its own venv).
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
    DenseCGTensorProduct,
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
                          budget_s: float = 2.0, max_calls: int = 200) -> tuple[float, float]:
    """(min, median) seconds of forward + backward after ``warmup`` calls.

    e3nn's TorchScript-compiled products run their profiling passes during the first calls,
    which are 10-100x slower. Other jobs on a shared CPU only add time (preemption), so the
    minimum is the better estimate of the intrinsic cost: timed calls continue after
    ``repeats`` until ``budget_s`` is spent (at most ``max_calls``) to catch unpreempted ones.
    """
    times: list[float] = []
    for call in range(warmup + max_calls):
        xg, wg = x.detach().requires_grad_(), w.detach().requires_grad_()
        start = time.perf_counter()
        module(xg, y, wg).square().sum().backward()
        times.append(time.perf_counter() - start)
        timed = times[warmup:]
        if len(timed) >= repeats and sum(timed) > budget_s:
            break
    return min(times[warmup:]), statistics.median(times[warmup:])


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
    dense = DenseCGTensorProduct(lmax, channels).float()
    row = {"lmax": lmax, "channels": channels, "n_edges": n_edges, "rank": cp.rank,
           "cp_fit_error": cp.fit_error, "n_paths": len(cp.paths)}
    row["cg_ops"], row["cp_ops"] = operation_counts(lmax)
    row["cg_s"], row["cg_median_s"] = time_forward_backward(cg, x, y, w, repeats)
    row["cp_s"], row["cp_median_s"] = time_forward_backward(cp, x, y, w, repeats)
    row["dense_s"], row["dense_median_s"] = time_forward_backward(dense, x, y, w, repeats)
    row["cg_mb"] = saved_bytes(lambda: cg(x.requires_grad_(), y, w.requires_grad_())) / 2**20
    row["cp_mb"] = saved_bytes(lambda: cp(x.requires_grad_(), y, w.requires_grad_())) / 2**20
    row["dense_mb"] = saved_bytes(lambda: dense(x.requires_grad_(), y, w.requires_grad_())) / 2**20
    row["speedup"] = row["cg_s"] / row["cp_s"]
    row["speedup_vs_dense"] = row["dense_s"] / row["cp_s"]
    return row


def exponent(rows: list[dict], key: str) -> float:
    """Slope of log(key) against log(L) over L ≥ 2."""
    sel = [r for r in rows if r["lmax"] >= 2]
    return float(np.polyfit(np.log([r["lmax"] for r in sel]), np.log([r[key] for r in sel]), 1)[0])


#: TDN cases for the E+F throughput table (matched to benchmarks/models.py's MACE/Facet cases:
#: 128 channels up to l = 1 like "mace 128x0e+128x1o", and L = 2 like Facet's paper size).
TDN_CASES: dict[str, tuple[str, dict]] = {
    "tdn L1 C128 (cp)": ("tdn", dict(cutoff=5.0, lmax=1, channels=128, num_blocks=2, num_heads=4)),
    "tdn L2 C64 (cp)": ("tdn", dict(cutoff=5.0, lmax=2, channels=64, num_blocks=2, num_heads=4)),
    "tdn L2 C64 (dense exact)": ("tdn", dict(cutoff=5.0, lmax=2, channels=64, num_blocks=2,
                                             num_heads=4, tensor_product="dense")),
    "tdn L2 C64 (e3nn cg)": ("tdn", dict(cutoff=5.0, lmax=2, channels=64, num_blocks=2,
                                         num_heads=4, tensor_product="cg")),
}
PEER_LABELS = ("mace 128x0e+128x1o L3", "facet 128x0e+64x1o+32x2e L2 (paper)")


def model_throughput(threads: int) -> dict:
    """E+F time per call of TDN vs MACE and Facet, through benchmarks/models.py's workers."""
    import importlib.util
    import tempfile
    from argparse import Namespace

    harness_path = Path(__file__).with_name("models.py")
    spec = importlib.util.spec_from_file_location("models_bench", harness_path)
    harness = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(harness)
    harness.MLIP_CASES.update(TDN_CASES)
    harness.ensure_mace_venv()
    settings = Namespace(threads=threads, repeats=3, avg_neighbors=30.0, compile=False)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as folder:
        for system, path in harness.write_systems(Path(folder), 8).items():
            results[system] = {}
            for label in [*TDN_CASES, *PEER_LABELS]:
                results[system][label] = row = harness.run_case(label, path, settings)
                harness.print_row(system, label, row)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lmax", type=int, default=6)
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 128])
    parser.add_argument("--edges", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="minimum timed calls")
    parser.add_argument("--models", action="store_true",
                        help="also time TDN model E+F next to MACE and Facet (subprocesses)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 is robust on a shared, oversubscribed CPU)")
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
        keys = ("cg_s", "cp_s", "dense_s", "cg_ops", "cp_ops", "cg_mb", "cp_mb", "dense_mb")
        summary[channels] = {key: exponent(sel, key) for key in keys}
        s = summary[channels]
        print(f"C={channels}: time exponent in L (L>=2)  CG {s['cg_s']:.2f} (theory 6; op count "
              f"over this range {s['cg_ops']:.2f})   CP {s['cp_s']:.2f} (theory 4; op count "
              f"{s['cp_ops']:.2f});  dense-M {s['dense_s']:.2f};  memory exponent "
              f"CG {s['cg_mb']:.2f}, CP {s['cp_mb']:.2f}")
    models = model_throughput(max(args.threads, 2)) if args.models else None
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"args": vars(args), "torch_threads": torch.get_num_threads(),
                                   "device": "cpu", "rows": rows, "exponents": summary,
                                   "model_throughput": models}, indent=1))
    print(f"saved {RESULTS}")


if __name__ == "__main__":
    main()

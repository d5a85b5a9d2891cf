"""Neighbour-list speed: mlip vs vesin, matscipy and ASE, side by side in one process.

Rattled fcc Cu supercells (a = 3.615 Å, periodic), cutoff 5 Å, N = 256, 2048, 10976 (and
~100k with ``--large``), plus a batch of 100 free 30-atom clusters (one batched mlip call vs a
loop of vesin calls), plus the per-call overhead table: one 27-atom molecule, one 32-atom Cu
cell, the batch of clusters and N = 2048 / 10976 Cu, with 1 and 2 torch threads. Every code
must return the same number of pairs (and, up to 2048 atoms, the same (i, j, S) set) before it
is timed. Times are the best and the median of ``--repeats`` runs after one warm-up; all codes
run single-threaded except in the overhead table. On a shared CPU the absolute numbers are
noisy; the ratios measured in the same process are what to compare.

Usage: ``python benchmarks/neighbors.py [--large] [--cuda] [--repeats 7]``
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import ase.build
import ase.io
import numpy as np
import torch
import vesin
from ase.neighborlist import neighbor_list as ase_neighbor_list
from matscipy.neighbours import neighbour_list as matscipy_neighbour_list

from mlip.neighbors import neighbor_list

CUTOFF = 5.0
RESULTS = Path(__file__).parent / "results" / "neighbors.json"
BUNDLED = Path(__file__).resolve().parents[1] / "data" / "bundled"


def timed(fn, repeats: int) -> dict[str, float]:
    """Best and median wall time of ``fn()`` in ms, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return {"best_ms": min(times), "median_ms": statistics.median(times)}


def copper(repeat: int) -> ase.Atoms:
    atoms = ase.build.bulk("Cu", "fcc", a=3.615, cubic=True).repeat(repeat)
    atoms.rattle(0.05, seed=repeat)
    return atoms


def _pair_set(i, j, S) -> set:
    i, j, S = (np.asarray(x) for x in (i, j, S))
    return set(zip(i.tolist(), j.tolist(), *S.T.tolist()))


def bench_copper(repeat: int, repeats: int, with_ase: bool) -> dict:
    """Time every code on one Cu supercell; check they agree first."""
    atoms = copper(repeat)
    pos, cell = atoms.positions, atoms.cell.array
    tensors = (torch.tensor(pos), torch.tensor(cell), torch.tensor(atoms.pbc))
    nl = vesin.NeighborList(cutoff=CUTOFF, full_list=True)
    codes = {
        "mlip": lambda: neighbor_list(*tensors, CUTOFF),
        "vesin": lambda: nl.compute(pos, cell, True, "ijS"),
        "matscipy": lambda: matscipy_neighbour_list("ijS", atoms=atoms, cutoff=CUTOFF),
    }
    if len(atoms) <= 2048:
        codes["mlip (torch backend)"] = lambda: neighbor_list(*tensors, CUTOFF, backend="torch")
    if with_ase:
        codes["ase"] = lambda: ase_neighbor_list("ijS", atoms, CUTOFF)
    outputs = {name: fn() for name, fn in codes.items()}
    counts = {name: len(out[0]) for name, out in outputs.items()}
    if len(set(counts.values())) != 1:
        raise RuntimeError(f"codes disagree on the number of pairs: {counts}")
    if len(atoms) <= 2048:
        reference = _pair_set(*outputs["vesin"])
        for name, out in outputs.items():
            if _pair_set(*(np.asarray(x) for x in out)) != reference:
                raise RuntimeError(f"{name} returns a different (i, j, S) set than vesin")
    row = {"n_atoms": len(atoms), "n_pairs": counts["vesin"]}
    row.update({name: timed(fn, repeats) for name, fn in codes.items()})
    return row


def clusters(n_systems: int, n_atoms: int, seed: int = 0) -> list[np.ndarray]:
    """Free clusters: ``n_atoms`` random points at ~0.1 atoms/Å³, at least 0.9 Å apart."""
    rng = np.random.default_rng(seed)
    radius = (3 * n_atoms / (4 * np.pi * 0.1)) ** (1 / 3)
    out = []
    while len(out) < n_systems:
        points = rng.normal(size=(n_atoms, 3))
        points /= np.linalg.norm(points, axis=1, keepdims=True)
        points *= radius * rng.uniform(0, 1, (n_atoms, 1)) ** (1 / 3)
        gaps = np.linalg.norm(points[:, None] - points[None], axis=2) + 10 * np.eye(n_atoms)
        if gaps.min() > 0.9:
            out.append(points)
    return out


def cluster_batch() -> tuple[list[np.ndarray], tuple[torch.Tensor, ...]]:
    """100 free 30-atom clusters, and them as one batch: (positions, cell, pbc, batch)."""
    systems = clusters(100, 30)
    positions = torch.tensor(np.concatenate(systems))
    cell = torch.zeros(len(systems), 3, 3, dtype=torch.float64)
    pbc = torch.zeros(len(systems), 3, dtype=torch.bool)
    batch = torch.repeat_interleave(torch.arange(len(systems)), 30)
    return systems, (positions, cell, pbc, batch)


def bench_batched(repeats: int) -> dict:
    """100 free 30-atom clusters: one batched mlip call vs one vesin call per system."""
    systems, (positions, cell, pbc, batch) = cluster_batch()
    nl = vesin.NeighborList(cutoff=CUTOFF, full_list=True)
    zero = np.zeros((3, 3))
    codes = {
        "mlip (batched)": lambda: neighbor_list(positions, cell, pbc, CUTOFF, batch),
        "mlip (per system)": lambda: [neighbor_list(torch.from_numpy(p), cell[0], pbc[0], CUTOFF)
                                      for p in systems],
        "vesin (per system)": lambda: [nl.compute(p, zero, False, "ijS") for p in systems],
    }
    total = len(codes["mlip (batched)"]()[0])
    per_system = sum(len(out[0]) for out in codes["vesin (per system)"]())
    if total != per_system:
        raise RuntimeError(f"batched mlip finds {total} pairs, vesin {per_system}")
    row = {"n_systems": len(systems), "n_atoms_each": 30, "n_pairs": total}
    row.update({name: timed(fn, repeats) for name, fn in codes.items()})
    return row


def _single_cases() -> dict[str, ase.Atoms]:
    """The small single systems of the per-call overhead table."""
    molecule = ase.io.read(BUNDLED / "3bpa_train_300K.xyz", index=0)
    return {"3BPA molecule (27 atoms, free)": molecule, "Cu cell (32 atoms, periodic)": copper(2)}


def bench_small(threads: int, repeats: int) -> dict:
    """Per-call time on small inputs with ``threads`` torch threads, next to vesin."""
    torch.set_num_threads(threads)
    rows = {}
    for name, atoms in _single_cases().items():
        pos, cell, pbc = atoms.positions, atoms.cell.array, atoms.pbc
        tensors = (torch.tensor(pos), torch.tensor(cell), torch.tensor(pbc))
        nl = vesin.NeighborList(cutoff=CUTOFF, full_list=True)
        rows[name] = {"mlip": timed(lambda: neighbor_list(*tensors, CUTOFF), repeats),
                      "vesin": timed(lambda: nl.compute(pos, cell, bool(pbc.all()), "ijS"),
                                     repeats)}
    systems, (positions, cell, pbc, batch) = cluster_batch()
    nl = vesin.NeighborList(cutoff=CUTOFF, full_list=True)
    zero = np.zeros((3, 3))
    rows["100 clusters x 30 atoms (one batched call)"] = {
        "mlip": timed(lambda: neighbor_list(positions, cell, pbc, CUTOFF, batch), repeats),
        "vesin": timed(lambda: [nl.compute(p, zero, False, "ijS") for p in systems], repeats)}
    for repeat in (8, 14):
        atoms = copper(repeat)
        pos, cell_np = atoms.positions, atoms.cell.array
        tensors = (torch.tensor(pos), torch.tensor(cell_np), torch.tensor(atoms.pbc))
        nl = vesin.NeighborList(cutoff=CUTOFF, full_list=True)
        rows[f"Cu {len(atoms)} atoms"] = {
            "mlip": timed(lambda: neighbor_list(*tensors, CUTOFF), max(3, repeats // 20)),
            "vesin": timed(lambda: nl.compute(pos, cell_np, True, "ijS"), max(3, repeats // 20))}
    torch.set_num_threads(1)
    return {"threads": threads, "rows": rows}


def bench_cuda(repeats: int) -> dict | None:
    """mlip's torch backend on a GPU for 32 000 Cu atoms, if a GPU is present."""
    if not torch.cuda.is_available():
        return None
    atoms = copper(20)
    arrays = (atoms.positions, atoms.cell.array, atoms.pbc)
    tensors = [torch.tensor(x, device="cuda") for x in arrays]

    def run():
        out = neighbor_list(*tensors, CUTOFF)
        torch.cuda.synchronize()
        return out

    row = {"n_atoms": len(atoms), "n_pairs": len(run()[0]), "device": torch.cuda.get_device_name()}
    row["mlip (cuda)"] = timed(run, repeats)
    return row


def print_small(small: list[dict]) -> None:
    """The per-call overhead table (best and median ms, ratio = mlip / vesin)."""
    print("\nper-call time on small inputs (best / median ms; ratio = mlip best / vesin best)")
    for block in small:
        print(f"  torch threads = {block['threads']}")
        for name, row in block["rows"].items():
            ours, ref = row["mlip"], row["vesin"]
            print(f"    {name:<44} mlip {ours['best_ms']:8.3f} / {ours['median_ms']:8.3f}   "
                  f"vesin {ref['best_ms']:8.3f} / {ref['median_ms']:8.3f}   "
                  f"({ours['best_ms'] / ref['best_ms']:5.2f}x)")


def print_table(rows: list[dict], batched: dict) -> None:
    print(f"\nneighbour list, rattled fcc Cu, cutoff {CUTOFF} Å "
          "(best of runs, ms; ratio = code / vesin)")
    names = [k for k in rows[0] if isinstance(rows[0][k], dict)]
    print(f"{'N':>7} {'pairs':>9} " + " ".join(f"{n:>22}" for n in names))
    for row in rows:
        cells = []
        for name in names:
            if name in row:
                t = row[name]["best_ms"]
                cells.append(f"{t:9.2f} ({t / row['vesin']['best_ms']:5.2f}x)".rjust(22))
            else:
                cells.append(f"{'-':>22}")
        print(f"{row['n_atoms']:>7} {row['n_pairs']:>9} " + " ".join(cells))
    ref = batched["vesin (per system)"]["best_ms"]
    print(f"\n{batched['n_systems']} free clusters of {batched['n_atoms_each']} atoms "
          f"({batched['n_pairs']} pairs):")
    for name in ("mlip (batched)", "mlip (per system)", "vesin (per system)"):
        t = batched[name]["best_ms"]
        print(f"  {name:<20} {t:8.2f} ms  ({t / ref:5.2f}x vesin loop)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", action="store_true", help="add a ~100k-atom cell (29³ cubes)")
    parser.add_argument("--cuda", action="store_true", help="also time 32k atoms on a GPU")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    repeats = [4, 8, 14] + ([29] if args.large else [])
    rows = [bench_copper(r, args.repeats if r < 29 else 3, with_ase=r <= 14) for r in repeats]
    batched = bench_batched(args.repeats)
    small = [bench_small(threads, 30 * args.repeats) for threads in (1, 2)]
    cuda = bench_cuda(args.repeats) if args.cuda else None
    print_table(rows, batched)
    print_small(small)
    if cuda:
        print(f"\nCUDA ({cuda['device']}), {cuda['n_atoms']} atoms: "
              f"{cuda['mlip (cuda)']['best_ms']:.2f} ms")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({
        "benchmark": "neighbors", "cutoff_A": CUTOFF, "threads": 1,
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "torch": torch.__version__, "vesin": vesin.__version__},
        "copper": rows, "batched_clusters": batched, "small_systems": small, "cuda": cuda,
        "note": "best/median of repeated runs in one process on a shared CPU; compare ratios",
    }, indent=2))
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()

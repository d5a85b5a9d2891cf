"""Snapshot-store benchmark: write/import speed, size, random reads, loader throughput, peak RSS.

Synthesises rattled copies of the shipped 3BPA molecule (27 atoms) and HfO2 cells, then measures
(same process, same machine, so ratios are meaningful; absolute numbers are noisy on a shared CPU):

* writing frames/s from in-memory arrays for each compression filter, and bytes per frame;
* extxyz import vs ``ase.io.read`` of the same file alone, and ``mace_prepare_data`` on it when a
  MACE environment exists (``.venv-mace``), both as command lines;
* store bytes vs extxyz bytes;
* random single-frame reads/s and block reads/s;
* loader graphs/s with neighbour lists (0 and 2 workers);
* peak RSS of a loader pass over a small and a large store.

Usage: ``python benchmarks/store.py [--frames 100000] [--xyz-frames 5000] [--huge]``
(``--huge`` = 10^6 frames). Results go to ``benchmarks/results/store.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import ase.io
import numpy as np

from mlip.data import (
    BlockBatchSampler,
    FrameBatch,
    SnapshotStore,
    StoreDataset,
    StoreWriter,
    import_files,
    make_loader,
    make_split,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "store.json"


def _bundled(name: str) -> str:
    return str(resources.files("mlip.data.bundled").joinpath(name))


def synthesise(n_frames: int, crystal_fraction: float = 0.0, seed: int = 0) -> FrameBatch:
    """Rattled 3BPA molecules (+ a fraction of rattled HfO2 cells) as one in-memory batch."""
    rng = np.random.default_rng(seed)
    n_cryst = int(n_frames * crystal_fraction)
    parts = [
        _rattled(ase.io.read(_bundled("3bpa_train_300K.xyz"), index=0), n_frames - n_cryst, rng)
    ]
    if n_cryst:
        cells = ase.io.read(_bundled("hfo2_scan_vasp.xyz"), index=":")
        parts += [
            _rattled(a, n_cryst // len(cells) + (k < n_cryst % len(cells)), rng)
            for k, a in enumerate(cells)
        ]
    return FrameBatch.concat([p for p in parts if len(p)])


def _rattled(atoms, n: int, rng: np.random.Generator) -> FrameBatch:
    m = len(atoms)
    pos = np.tile(atoms.positions, (n, 1)) + rng.normal(scale=0.05, size=(n * m, 3))
    forces = np.tile(atoms.get_forces(), (n, 1)) + rng.normal(scale=0.1, size=(n * m, 3))
    stress = atoms.get_stress(voigt=False) if atoms.pbc.any() else np.full((3, 3), np.nan)
    mask = 7 if atoms.pbc.any() else 3
    return FrameBatch(
        n_atoms=np.full(n, m, dtype=np.int64),
        atoms={
            "numbers": np.tile(atoms.numbers, n).astype(np.uint8),
            "positions": pos,
            "forces": forces,
        },
        frames={
            "energy": atoms.get_potential_energy() + rng.normal(scale=0.1, size=n),
            "cell": np.tile(atoms.cell.array, (n, 1, 1)),
            "pbc": np.tile(atoms.pbc, (n, 1)),
            "stress": np.tile(stress, (n, 1, 1)),
            "weight": np.ones(n),
            "step": np.arange(n) % 50,
            "label_mask": np.full(n, mask, dtype=np.uint8),
            "system": np.array(
                [f"{atoms.get_chemical_formula()}-{k // 50}" for k in range(n)], dtype=object
            ),
            "source": np.full(n, "synthetic", dtype=object),
            "source_frame": np.arange(n),
        },
    )


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).iterdir())


def bench_write(batch: FrameBatch, tmp: Path) -> dict:
    out = {}
    for comp in ("zstd", "lz4", "gzip", "lzf", "none"):
        path = tmp / f"w-{comp}.h5"
        t = time.perf_counter()
        with StoreWriter(path, compression=comp) as w:
            for a in range(0, len(batch), 65536):
                w.append(batch.select(np.arange(a, min(len(batch), a + 65536))))
        dt = time.perf_counter() - t
        out[comp] = {
            "frames_per_s": len(batch) / dt,
            "bytes_per_frame": _dir_bytes(path) / len(batch),
        }
        if comp != "zstd":
            shutil.rmtree(path)
    return out


def bench_import(xyz: Path, tmp: Path) -> dict:
    t_ase = t_imp = float("inf")
    for attempt in range(2):  # alternate and keep the best of each: the CPU is shared
        t = time.perf_counter()
        ase.io.read(xyz, index=":")
        t_ase = min(t_ase, time.perf_counter() - t)
        shutil.rmtree(tmp / "imp.h5", ignore_errors=True)
        t = time.perf_counter()
        import_files([xyz], tmp / "imp.h5")
        t_imp = min(t_imp, time.perf_counter() - t)
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "mlip", "data", "import", str(xyz), "-o", str(tmp / "cli.h5")],
        check=True,
        capture_output=True,
    )
    t_cli = time.perf_counter() - t
    res = {
        "ase_read_s": t_ase,
        "import_s": t_imp,
        "import_over_ase_read": t_imp / t_ase,
        "cli_import_s": t_cli,
        "extxyz_bytes": xyz.stat().st_size,
        "store_bytes": _dir_bytes(tmp / "imp.h5"),
    }
    res["store_over_extxyz"] = res["store_bytes"] / res["extxyz_bytes"]
    res.update(bench_mace(xyz, tmp))
    return res


def bench_mace(xyz: Path, tmp: Path) -> dict:
    exe = ROOT / ".venv-mace" / "bin" / "mace_prepare_data"
    if not exe.exists():
        return {"mace_prepare_data_s": None}
    out = tmp / "mace"
    out.mkdir()
    t = time.perf_counter()
    proc = subprocess.run(
        [
            str(exe),
            "--train_file",
            str(xyz),
            "--valid_fraction",
            "0.05",
            "--work_dir",
            str(out),
            "--h5_prefix",
            f"{out}/",
            "--energy_key",
            "energy",
            "--forces_key",
            "forces",
            "--r_max",
            "5.0",
            "--num_process",
            "2",
            "--seed",
            "0",
        ],
        capture_output=True,
        text=True,
    )
    dt = time.perf_counter() - t
    size = sum(p.stat().st_size for p in out.rglob("*.h5"))
    return {
        "mace_prepare_data_s": dt if proc.returncode == 0 else None,
        "mace_h5_bytes": size,
        "mace_error": proc.stderr[-300:] if proc.returncode else None,
    }


def bench_reads(path: Path, n_reads: int = 2000) -> dict:
    store = SnapshotStore(path)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(store), n_reads)
    t = time.perf_counter()
    for i in idx:
        store.read([int(i)])
    single = n_reads / (time.perf_counter() - t)
    starts = rng.integers(0, len(store) - 256, 200)
    t = time.perf_counter()
    for s in starts:
        store.read_range(int(s), int(s) + 256)
    block = 200 * 256 / (time.perf_counter() - t)
    return {"random_frames_per_s": single, "block256_frames_per_s": block}


def bench_loader(path: Path, workers: int, n_batches: int = 150, cutoff: float = 5.0) -> dict:
    loader = make_loader(path, "train", cutoff, max_atoms=2048, num_workers=workers, seed=0)
    it = iter(loader)
    next(it)  # worker start-up and first block reads are not counted
    graphs = edges = 0
    t = time.perf_counter()
    for k, (g, _) in enumerate(it):
        graphs += g.n_graphs
        edges += g.n_edges
        if k + 1 >= n_batches:
            break
    dt = time.perf_counter() - t
    return {
        "workers": workers,
        "graphs_per_s": graphs / dt,
        "batches_per_s": (k + 1) / dt,
        "edges_per_graph": edges / max(graphs, 1),
    }


def bench_batch_reads(path: Path, n_batches: int = 300) -> dict:
    """Frames/s of the loader's data path alone (sampler + block cache, no neighbour list)."""
    dataset = StoreDataset(path, "train", 5.0)
    sampler = BlockBatchSampler(dataset.store, "train", max_atoms=2048, seed=0)
    frames = 0
    t = time.perf_counter()
    for k, indices in enumerate(sampler):
        frames += len(dataset.frames(indices))
        if k + 1 >= n_batches:
            break
    return {"frames_per_s": frames / (time.perf_counter() - t)}


_RSS_SCRIPT = """
import resource, sys
from mlip.data import make_loader
loader = make_loader(sys.argv[1], "train", 5.0, max_atoms=2048, num_workers=2, seed=0)
for k, g in enumerate(loader):
    if k >= 100:
        break
me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(me, kids)
"""


def peak_rss_mib(path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, str(path)], check=True, capture_output=True, text=True
    ).stdout.split()
    return {"main_mib": int(out[0]) / 1024, "largest_worker_mib": int(out[1]) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--xyz-frames", type=int, default=5_000)
    parser.add_argument("--huge", action="store_true", help="10^6 frames")
    args = parser.parse_args()
    n = 1_000_000 if args.huge else args.frames
    tmp = Path(tempfile.mkdtemp(prefix="mlip-store-bench-"))
    try:
        results = {"frames": n, "xyz_frames": args.xyz_frames, "cpus": os.cpu_count()}
        batch = synthesise(n)
        results["write_molecules_27_atoms"] = bench_write(batch, tmp)
        big = tmp / "w-zstd.h5"
        del batch
        mixed = synthesise(args.xyz_frames, crystal_fraction=0.1, seed=1)
        xyz = tmp / "mixed.xyz"
        ase.io.write(xyz, mixed.to_ase(), format="extxyz")
        results["import_extxyz"] = bench_import(xyz, tmp)
        results["reads"] = bench_reads(big)
        for path in (big, tmp / "imp.h5"):
            make_split(path, (0.9, 0.05, 0.05), seed=0)
        results["loader_data_path_no_nl"] = bench_batch_reads(big)
        results["loader"] = [bench_loader(big, w) for w in (0, 2)]
        results["peak_rss"] = {
            "small_store_frames": args.xyz_frames,
            "small": peak_rss_mib(tmp / "imp.h5"),
            "large_store_frames": n,
            "large": peak_rss_mib(big),
        }
        results["bench_process_maxrss_mib"] = (
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1))
    _print(results)


def _print(r: dict) -> None:
    print(f"\nsnapshot store benchmark ({r['frames']} synthetic 27-atom frames; shared CPU, noisy)")
    print(f"{'filter':8s} {'write frames/s':>15s} {'bytes/frame':>12s}")
    for comp, v in r["write_molecules_27_atoms"].items():
        print(f"{comp:8s} {v['frames_per_s']:15.0f} {v['bytes_per_frame']:12.0f}")
    imp = r["import_extxyz"]
    print(
        f"\nextxyz import ({r['xyz_frames']} frames): ase.io.read {imp['ase_read_s']:.2f} s, "
        f"mlip import {imp['import_s']:.2f} s (ratio {imp['import_over_ase_read']:.2f}), "
        f"`mlip data import` CLI {imp['cli_import_s']:.2f} s, mace_prepare_data "
        f"{_fmt(imp['mace_prepare_data_s'])} s"
    )
    print(
        f"size: store {imp['store_bytes']} B = {100 * imp['store_over_extxyz']:.1f}% of extxyz "
        f"({imp['extxyz_bytes']} B); MACE h5 {imp.get('mace_h5_bytes')} B"
    )
    rd = r["reads"]
    print(
        f"reads: random single frames {rd['random_frames_per_s']:.0f}/s, blocks of 256 "
        f"{rd['block256_frames_per_s']:.0f} frames/s"
    )
    print(
        f"loader data path without neighbour lists (1 process): "
        f"{r['loader_data_path_no_nl']['frames_per_s']:.0f} frames/s"
    )
    for lo in r["loader"]:
        print(
            f"loader ({lo['workers']} workers, r=5 Å, NL built): "
            f"{lo['graphs_per_s']:.0f} graphs/s, "
            f"{lo['batches_per_s']:.1f} batches/s, {lo['edges_per_graph']:.0f} edges/graph"
        )
    p = r["peak_rss"]
    print(
        f"peak RSS loader pass: {p['small_store_frames']}-frame store main "
        f"{p['small']['main_mib']:.0f} MiB "
        f"worker {p['small']['largest_worker_mib']:.0f} MiB; "
        f"{p['large_store_frames']}-frame store main "
        f"{p['large']['main_mib']:.0f} MiB worker {p['large']['largest_worker_mib']:.0f} MiB"
    )


def _fmt(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds:.2f}"


if __name__ == "__main__":
    main()

"""Facet's grid-MLP equivariance error against S² grid resolution (float64, 3BPA molecules).

For each L (largest degree of the hidden features) and SOFT grid (res_beta × res_alpha), a
facet-s-sized model with live residual branches (random weights, avg_num_neighbors from the data)
is evaluated on 3BPA molecules under random rotations and reflections. Reported: the energy error
in meV/atom (eV scale of random weights, energy_scale = 1) and relative to |E|, the force error
relative to the largest force component, and the E+F time per molecule batch, next to the exact
bilinear mixer at the resolution rule. Default grids (``DEFAULT_GRID_RES``) are chosen from this.
A second table times our dense grid round trip (``S2Grid``) against e3nn's ToS2Grid/FromS2Grid
modules on 256 × 32 features (float32).

    python benchmarks/facet_equivariance.py [--frames 4] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import ase.io
import torch
from e3nn import o3

from mlip.graph import AtomicGraph
from mlip.models import build
from mlip.models.facet import DEFAULT_GRID_RES, FACET_PRESETS
from mlip.nn.s2_grid import S2Grid, exact_product_resolution
from mlip.testing import equivariance_errors, random_rotation

ROOT = Path(__file__).resolve().parents[1]
HIDDEN = {1: "32x0e+16x1o", 2: "32x0e+16x1o+8x2e", 3: "32x0e+16x1o+8x2e+8x3o"}
GRIDS = {1: [(4, 3), (6, 5), (8, 7), (10, 9), (12, 11), (18, 17)],
         2: [(8, 7), (10, 9), (12, 11), (14, 13), (16, 15), (18, 17), (24, 23), (36, 35)],
         3: [(10, 9), (14, 13), (18, 17), (20, 19), (24, 23), (36, 35)]}


def measure(graph: AtomicGraph, lmax: int, mixer: str, grid: tuple[int, int], trials: int) -> dict:
    """Worst errors over ``trials`` random rotations (odd trials: reflections) and the E+F time."""
    torch.manual_seed(0)
    n_atoms = graph.positions.shape[0]
    hparams = dict(FACET_PRESETS["facet-s"], hidden_irreps=HIDDEN[lmax], sh_lmax=lmax,
                   residual_init=1.0, avg_num_neighbors=graph.n_edges / n_atoms)
    model = build("facet", species=[1, 6, 7, 8], mixer=mixer, grid_res=list(grid), **hparams).eval()
    energy = model(graph).energy.abs().max().item()
    worst = {"energy": 0.0, "forces": 0.0}
    for seed in range(trials):
        errors = equivariance_errors(model, graph, random_rotation(seed, reflect=bool(seed % 2)))
        worst = {k: max(worst[k], errors[k]) for k in worst}
    start = time.perf_counter()
    for _ in range(3):
        model(graph)
    seconds = (time.perf_counter() - start) / 3
    per_graph_atoms = n_atoms / graph.n_graphs
    return {"lmax": lmax, "mixer": mixer, "grid": list(grid), "energy_rel": worst["energy"],
            "energy_meV_per_atom": worst["energy"] * energy / per_graph_atoms * 1e3,
            "forces_rel": worst["forces"], "ef_ms": seconds * 1e3,
            "default": mixer == "mlp" and tuple(grid) == DEFAULT_GRID_RES[lmax]}


def transform_timings(repeats: int = 20) -> list[dict]:
    """ms per to-grid + from-grid round trip: dense matrices (ours) vs e3nn modules."""
    rows = []
    for lmax, grid in DEFAULT_GRID_RES.items():
        if lmax == 0:
            continue
        x = torch.randn(256, (lmax + 1) ** 2, 32)
        dense = S2Grid(lmax, *grid).float()
        to_grid, from_grid = o3.ToS2Grid(lmax, grid), o3.FromS2Grid(grid, lmax)
        x_e3nn = x.transpose(1, 2).contiguous()  # e3nn wants (…, n_sph) last
        ms = {}
        for name, fn in [("dense", lambda: dense.from_grid(dense.to_grid(x))),
                         ("e3nn", lambda: from_grid(to_grid(x_e3nn)))]:
            fn()
            start = time.perf_counter()
            for _ in range(repeats):
                fn()
            ms[name] = (time.perf_counter() - start) / repeats * 1e3
        rows.append({"lmax": lmax, "grid": list(grid), "dense_ms": ms["dense"],
                     "e3nn_ms": ms["e3nn"], "speedup": ms["e3nn"] / ms["dense"]})
        print(f"grid round trip L={lmax} {grid[0]}x{grid[1]}: dense {ms['dense']:.2f} ms, "
              f"e3nn {ms['e3nn']:.2f} ms ({ms['e3nn'] / ms['dense']:.1f}x)")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    frames = ase.io.read(ROOT / "data/bundled/3bpa_train_300K.xyz", index=f":{args.frames}")
    graph = AtomicGraph.from_ase(frames, FACET_PRESETS["facet-s"]["cutoff"]).to(dtype=torch.float64)
    rows = []
    print(f"{'L':>2} {'mixer':>8} {'grid':>7} {'E err meV/atom':>15} {'E rel':>9} {'F rel':>9} "
          f"{'E+F ms':>7}")
    for lmax, grids in GRIDS.items():
        cases = [("bilinear", exact_product_resolution(lmax))] + [("mlp", g) for g in grids]
        for mixer, grid in cases:
            row = measure(graph, lmax, mixer, grid, args.trials)
            rows.append(row)
            mark = " <- default" if row["default"] else ""
            print(f"{lmax:>2} {mixer:>8} {grid[0]:>3}x{grid[1]:<3} "
                  f"{row['energy_meV_per_atom']:>15.2e} "
                  f"{row['energy_rel']:>9.1e} {row['forces_rel']:>9.1e} {row['ef_ms']:>7.1f}{mark}")
    timings = transform_timings()
    out = ROOT / "benchmarks/results/facet_equivariance.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"frames": args.frames, "threads": args.threads, "dtype": "float64",
                               "rows": rows, "grid_transform_timings": timings},
                              indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

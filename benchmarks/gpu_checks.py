"""CUDA checks: the GPU paths compute what the CPU paths compute, and the MD loop stays on the GPU.

Run on a machine with a CUDA device (the `device` tool); prints a table and saves JSON.

1. Neighbour list: CUDA (chunked torch cell list) == CPU (numba) as (i, j, S) sets on random
   batched systems (molecules, mixed pbc, skewed cells).
2. MD: the same NVE and Langevin runs of facet-s (random weights, float64) on the GPU and the
   CPU; largest position difference after the run (Å).
3. Host synchronisations per MD step on the GPU, counted with ``torch.cuda.set_sync_debug_mode``
   (the loop should only sync at log intervals and for the skin test).
4. FIRE relaxation (positions, and positions + cell) on both devices: energy difference, eV/atom.
5. Every model family (facet, tdn, equiformer_v3, mid-size): CPU vs GPU energies, forces and
   stress in float64; GPU E+F+S time in float32 on 2048 Cu atoms and 64 3BPA molecules.
6. Training: a short ``mlip.train`` run of the shipped facet config on the GPU (optimiser
   steps per second, final validation metrics).
7. Compiled inference (``Potential.enable_compile``) on the GPU: Lennard-Jones and facet-s
   compiled vs eager energies, forces and stress in float64; time per E+F call in float32 on
   one and on 64 3BPA molecules, eager and compiled.

    python benchmarks/gpu_checks.py [--output results/gpu_checks.json] [--train-seconds 60]
    python benchmarks/gpu_checks.py --checks syncs compile   # a subset
"""

from __future__ import annotations

import argparse
import collections
import json
import time
import traceback
import warnings
from importlib import resources
from pathlib import Path

import ase.io
import numpy as np
import torch
from ase.build import bulk

from mlip.md import make_integrator, run_md, run_relax
from mlip.models import build
from mlip.models.facet import FACET_PRESETS
from mlip.neighbors import neighbor_list

RESULTS = Path(__file__).parent / "results" / "gpu_checks.json"
SPECIES = [1, 6, 7, 8, 29]


def random_systems(n: int, seed: int) -> tuple[torch.Tensor, ...]:
    """A batch of n random systems: free clusters, slabs and skewed periodic cells."""
    rng = np.random.default_rng(seed)
    positions, cells, pbcs, batch = [], [], [], []
    for g in range(n):
        n_atoms = int(rng.integers(1, 60))
        cell = np.diag(rng.uniform(3.0, 9.0, 3)) + rng.uniform(-1.0, 1.0, (3, 3)) * 0.8
        pbc = rng.random(3) < 0.6
        positions.append(rng.random((n_atoms, 3)) @ cell + rng.normal(0, 0.5, (n_atoms, 3)))
        cells.append(cell)
        pbcs.append(pbc)
        batch.append(np.full(n_atoms, g))
    return (torch.tensor(np.concatenate(positions)), torch.tensor(np.stack(cells)),
            torch.tensor(np.stack(pbcs)), torch.tensor(np.concatenate(batch)))


def check_neighbors(device: str) -> dict:
    """Count of systems whose CUDA pair set differs from the CPU one."""
    mismatches, pairs = 0, 0
    for seed in range(20):
        positions, cell, pbc, batch = random_systems(16, seed)
        cpu = neighbor_list(positions, cell, pbc, 4.5, batch)
        gpu = neighbor_list(*(t.to(device) for t in (positions, cell, pbc)), 4.5,
                            batch.to(device))
        as_set = [set(zip(i.tolist(), j.tolist(), *s.T.tolist())) for i, j, s in
                  (cpu, [t.cpu() for t in gpu])]
        mismatches += as_set[0] != as_set[1]
        pairs += len(as_set[0])
    return {"batches": 20, "pairs": pairs, "mismatching_batches": mismatches}


def structures() -> list:
    """Three 3BPA molecules and a rattled periodic 32-atom Cu cell."""
    path = resources.files("mlip.data.bundled").joinpath("3bpa_train_300K.xyz")
    molecules = ase.io.read(str(path), index=":3")
    copper = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    copper.rattle(0.05, seed=1)
    return [*molecules, copper]


def facet(device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build("facet", species=SPECIES, avg_num_neighbors=20.0, **FACET_PRESETS["facet-s"])
    return model.eval().to(device=device, dtype=torch.float64)


def check_md(steps: int, device: str) -> dict:
    """Largest |Δr| between CPU and GPU after the same NVE / Langevin runs."""
    out = {}
    for ensemble, extra in (("nve", {}), ("nvt_langevin", {"temperature_K": 300.0})):
        finals = {}
        for where in ("cpu", device):
            integrator = make_integrator(ensemble, timestep_fs=0.5, **extra)
            result = run_md(facet(where), structures(), integrator, steps=steps, device=where,
                            initial_temperature_K=300.0, seed=3)
            finals[where] = result.state.positions.cpu()
        diff = (finals["cpu"] - finals[device]).abs().max().item()
        out[ensemble] = {"steps": steps, "max_position_diff_A": diff}
    return out


def count_syncs(steps: int, log_interval: int, device: str) -> dict:
    """Host syncs per step of a GPU NVE run (warnings raised by the sync debug mode)."""
    from mlip.md import MDOutputs

    integrator = make_integrator("nve", timestep_fs=0.5)
    model = facet(device)
    run_md(model, structures(), integrator, steps=2, device=device)  # warm-up
    if device.startswith("cuda"):
        torch.cuda.set_sync_debug_mode("warn")
    sites: dict[int, str] = {}
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            record = warnings.showwarning

            def where(message, *args, **kwargs) -> None:  # the Python frames that synced
                skip = ("gpu_checks.py", "warnings.py")
                frames = [f for f in traceback.extract_stack()[:-1] if "site-packages/torch"
                          not in f.filename and Path(f.filename).name not in skip]
                sites[id(message)] = " <- ".join(f"{Path(f.filename).name}:{f.lineno}"
                                                 for f in frames[-2:][::-1])
                record(message, *args, **kwargs)

            warnings.showwarning = where
            run_md(model, structures(), integrator, steps=steps, device=device,
                   outputs=MDOutputs(log_interval=log_interval))
    finally:
        if device.startswith("cuda"):
            torch.cuda.set_sync_debug_mode(0)
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    return {"steps": steps, "log_interval": log_interval, "syncs": len(syncs),
            "syncs_per_step": len(syncs) / steps,
            "by_site": dict(collections.Counter(sites[id(w.message)] for w in syncs
                                                if id(w.message) in sites).most_common())}


def check_relax(device: str) -> dict:
    """Energy per atom after FIRE on CPU and GPU (positions; positions + cell)."""
    out = {}
    for relax_cell in (False, True):
        atoms = structures()[-1:] if relax_cell else structures()
        energies = {}
        for where in ("cpu", device):
            result = run_relax(facet(where), atoms, fmax=0.01, relax_cell=relax_cell,
                               steps=300, device=where)
            n_atoms = torch.tensor([len(a) for a in atoms], dtype=torch.float64)
            energies[where] = torch.tensor(result.energy, dtype=torch.float64) / n_atoms
        diff = (energies["cpu"] - energies[device]).abs().max().item()
        out["cell" if relax_cell else "positions"] = {"max_energy_diff_eV_per_atom": diff}
    return out


TIMED_CU_REPEAT = 8  # 2048 atoms

#: One mid-size model per family (the benchmarks/models.py rows), for the GPU agreement check.
FAMILIES = {
    "facet": dict(hidden_irreps="128x0e+64x1o+32x2e", sh_lmax=2, avg_num_neighbors=20.0),
    "tdn": dict(lmax=2, channels=64, num_blocks=2, num_heads=4),
    "equiformer_v3": dict(num_layers=2, channels=64, lmax=2, mmax=2, num_heads=4,
                          attn_hidden=32, attn_alpha_channels=16, attn_value_channels=16,
                          ffn_hidden=128, num_rbf=16, edge_channels=32),
}


def _max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest |a - b|, where NaN in both (the stress of a molecule) counts as equal."""
    both_nan = torch.isnan(a) & torch.isnan(b)
    return (a - b).masked_fill(both_nan, 0.0).abs().max().item()


def check_models(device: str) -> dict:
    """Per family: CPU vs GPU energy/forces/stress in float64, and GPU E+F+S calls per second
    (float32) on a rattled 2048-atom Cu cell and on 64 3BPA molecules."""
    from mlip.graph import AtomicGraph

    copper = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    copper.rattle(0.05, seed=2)
    path = resources.files("mlip.data.bundled").joinpath("3bpa_train_300K.xyz")
    small = AtomicGraph.from_ase([copper, *ase.io.read(str(path), index=":2")], 5.0)
    big_cu = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(TIMED_CU_REPEAT)
    big_cu.rattle(0.05, seed=3)
    timed_cases = {"cu_2048": AtomicGraph.from_ase(big_cu, 5.0),
                   "3bpa_x64": AtomicGraph.from_ase(ase.io.read(str(path), index=":64"), 5.0)}
    if not device.startswith("cuda"):  # a dry run of the script on a CPU
        timed_cases = {}
    out = {}
    for name, hparams in FAMILIES.items():
        torch.manual_seed(0)
        model = build(name, species=SPECIES, cutoff=5.0, **hparams)
        model = model.double().eval()
        ref = model(small, compute_forces=True, compute_stress=True)
        gpu = model.to(device)(small.to(device), compute_forces=True, compute_stress=True)
        row = {key: _max_difference(getattr(ref, key), getattr(gpu, key).cpu())
               for key in ("energy", "forces", "stress")}
        model = model.float()
        for case, graph in timed_cases.items():
            graph = graph.to(device, torch.float32)
            for _ in range(2):
                model(graph, compute_forces=True, compute_stress=True)
            torch.cuda.synchronize()
            t0, calls = time.perf_counter(), 5
            for _ in range(calls):
                model(graph, compute_forces=True, compute_stress=True)
            torch.cuda.synchronize()
            seconds = (time.perf_counter() - t0) / calls
            row[case] = {"atoms": graph.positions.shape[0], "edges": graph.n_edges,
                         "ms_per_call": seconds * 1e3,
                         "atoms_per_s": graph.positions.shape[0] / seconds,
                         "peak_GiB": torch.cuda.max_memory_allocated() / 2**30}
            torch.cuda.reset_peak_memory_stats()
        out[name] = row
    return out


def _per_call_ms(model: torch.nn.Module, graph, calls: int = 20) -> float:
    """Wall time of one E+F call on the GPU, ms (after two warm-up calls)."""
    sync = torch.cuda.synchronize if graph.positions.is_cuda else (lambda: None)
    for _ in range(2):
        model(graph, compute_forces=True)
    sync()
    t0 = time.perf_counter()
    for _ in range(calls):
        model(graph, compute_forces=True)
    sync()
    return (time.perf_counter() - t0) / calls * 1e3


def check_compile(device: str) -> dict:
    """Compiled vs eager on the GPU: float64 agreement and float32 time per E+F call."""
    import copy

    from mlip.graph import AtomicGraph

    path = resources.files("mlip.data.bundled").joinpath("3bpa_train_300K.xyz")
    molecules = ase.io.read(str(path), index=":64")
    mixed = AtomicGraph.from_ase([*structures(), molecules[5]], 5.0).to(device)
    timed = {"3bpa_x1": AtomicGraph.from_ase(molecules[:1], 5.0),
             "3bpa_x64": AtomicGraph.from_ase(molecules, 5.0)}
    models = {"lennard_jones": build("lennard_jones", species=SPECIES, cutoff=5.0,
                                     epsilon=0.02, sigma=1.0).eval().to(device),
              "facet-s": facet(device)}
    out = {}
    for name, eager in models.items():
        compiled = copy.deepcopy(eager).enable_compile()
        ref = eager.double()(mixed, compute_forces=True, compute_stress=True)
        t0 = time.perf_counter()
        got = compiled.double()(mixed, compute_forces=True, compute_stress=True)
        row = {"first_call_s": time.perf_counter() - t0}
        row.update({key: _max_difference(getattr(ref, key), getattr(got, key))
                    for key in ("energy", "forces", "stress")})
        eager, compiled = eager.float(), compiled.float()
        for case, graph in timed.items():
            graph = graph.to(device, torch.float32)
            row[case] = {"eager_ms": _per_call_ms(eager, graph),
                         "compiled_ms": _per_call_ms(compiled, graph)}
        out[name] = row
    return out


def check_training(seconds: float, folder: Path, device: str) -> dict:
    """A short run of the shipped facet config on the GPU."""
    import yaml

    from mlip.train import train
    from mlip.train.config import shipped_config
    from mlip.train.records import read_metrics

    config = yaml.safe_load(shipped_config("facet").read_text())
    config["device"] = device
    config["train"].update(max_time_s=seconds, progress=False)
    t0 = time.perf_counter()
    train(config, folder / "train_gpu")
    rows = read_metrics(folder / "train_gpu")
    last = rows[-1]
    return {"wall_s": time.perf_counter() - t0, "epochs": last.get("epoch"),
            "steps": last["step"], "steps_per_s": last["step"] / last["time_s"],
            "batch_size": config["data"]["batch_size"],
            "valid_forces_rmse": last.get("valid_forces_rmse"),
            "valid_energy_rmse": last.get("valid_energy_rmse")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--md-steps", type=int, default=20,
                        help="steps of the CPU-vs-GPU MD comparison (chaos grows differences)")
    parser.add_argument("--train-seconds", type=float, default=60.0)
    parser.add_argument("--device", default="cuda", help="(cpu only to try the script out)")
    parser.add_argument("--checks", nargs="*", default=None,
                        help="run only these checks (neighbors md syncs relax models training "
                             "compile)")
    args = parser.parse_args()
    device = args.device
    results: dict = {"device": torch.cuda.get_device_name() if device == "cuda" else device,
                     "torch": torch.__version__}
    steps = [("neighbors", lambda: check_neighbors(device)),
             ("md", lambda: check_md(args.md_steps, device)),
             ("syncs", lambda: count_syncs(100, 50, device)),
             ("relax", lambda: check_relax(device)),
             ("models", lambda: check_models(device)),
             ("training", lambda: check_training(args.train_seconds, args.output.parent, device)),
             ("compile", lambda: check_compile(device))]
    if args.train_seconds <= 0:
        steps = [step for step in steps if step[0] != "training"]
    if args.checks is not None:
        unknown = set(args.checks) - {name for name, _ in steps}
        if unknown:
            parser.error(f"unknown checks {sorted(unknown)}")
        steps = [step for step in steps if step[0] in args.checks]
    for name, check in steps:
        t0 = time.perf_counter()
        try:
            results[name] = check()
        except Exception as error:  # report and go on: one GPU session, many checks
            results[name] = {"error": f"{type(error).__name__}: {error}"}
        print(f"{name} ({time.perf_counter() - t0:.1f} s): {json.dumps(results[name])}",
              flush=True)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=1) + "\n")
    print(f"saved {args.output}")


if __name__ == "__main__":
    main()

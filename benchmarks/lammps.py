"""mlip inside LAMMPS (``mlip lammps`` on K MPI ranks) vs mlip's own MD driver on one process.

Same model (a seeded facet-tiny Facet for Cu, 2 layers, cutoff 4 Å, float64 unless
``--dtype``), same system (periodic fcc Cu, NVE from 300 K, 1 fs). Reported, in atom-steps/s
(atoms × steps / wall seconds of the timed steps):

* ``baseline``: :func:`mlip.md.run_md` on one process, and ``mlip lammps`` on 1 rank (which
  evaluates the whole box as one periodic system: no ghost shell), interleaved (run_md, LAMMPS,
  run_md again: both run_md timings are kept, the machine is shared and noisy);
* ``strong``: one system on 1..K ranks;
* ``weak``: a system that grows with the ranks (the base cell repeated K times along x);
* the redundant-work factor of each LAMMPS run: atoms (edges) the model ran on per owned atom
  (edge), summed over ranks (1 would be no redundancy); every LAMMPS case on several ranks
  runs with both ghost shells, ``single`` (L·r_c + skin, reverse communication; the default)
  and ``double`` (2·L·r_c + skin).

LAMMPS times its own ``run`` (the "Loop time" of the second of two runs; the first warms up).
The numbers of a shared 2-core development machine are noisy and small: they show the shape
(the redundancy factor falls as sub-domains grow), not the throughput of a cluster.

Usage::

    python benchmarks/lammps.py                       # 3x3x3 and 4x4x4 cells, ranks 1 and 2
    python benchmarks/lammps.py --repeat 5 --ranks 1 2 4 --steps 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from ase.build import bulk

from mlip.md import run_md
from mlip.models import build, save_model
from mlip.models.facet import FACET_PRESETS

RESULTS = Path(__file__).parent / "results" / "lammps.json"
MPIEXEC = Path(sys.executable).parent / "mpiexec"

INPUT = """\
units metal
atom_style atomic
boundary p p p
lattice fcc 3.61
region box block 0 {nx} 0 {n} 0 {n}
create_box 1 box
create_atoms 1 box
mass 1 63.546
pair_style zero {cutoff}
pair_coeff * *
neighbor 1.0 bin
neigh_modify every 1 delay 0 check yes
fix mlip all external pf/callback 1 1
velocity all create 300 7 dist gaussian
fix nve all nve
timestep 0.001
thermo 1000
run 2
run {steps}
"""


def make_model(dtype: str, path: Path) -> Path:
    """The seeded benchmark potential, saved to ``path``."""
    torch.manual_seed(0)
    model = build("facet", species=[29], avg_num_neighbors=12.0, **FACET_PRESETS["facet-tiny"])
    save_model(model.to(getattr(torch, dtype)), path)
    return path


def lammps_rate(model: Path, n: int, nx: int, ranks: int, steps: int, workdir: Path,
                shell: str) -> dict:
    """Atom-steps/s of ``mlip lammps`` on ``ranks`` ranks for an nx×n×n fcc cell."""
    (workdir / "in.lmp").write_text(INPUT.format(n=n, nx=nx, steps=steps, cutoff=4.0))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([str(MPIEXEC), "-n", str(ranks), sys.executable, "-m", "mlip",
                           "lammps", str(model), "in.lmp", "--ghost-shell", shell],
                          cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=3600)
    if done.returncode:
        raise SystemExit(f"mlip lammps failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    loop = re.findall(r"Loop time of ([0-9.eE+-]+) on \d+ procs for (\d+) steps with (\d+) atoms",
                      done.stdout)[-1]
    seconds, timed_steps, atoms = float(loop[0]), int(loop[1]), int(loop[2])
    work = re.search(r"the model ran on ([0-9.]+) atoms and ([0-9.]+) edges", done.stdout)
    return {"ghost_shell": shell if ranks > 1 else "none (whole box)", "ranks": ranks,
            "atoms": atoms, "steps": timed_steps,
            "seconds": seconds,
            "atom_steps_per_s": atoms * timed_steps / seconds,
            "atoms_evaluated_per_owned": float(work.group(1)),
            "edges_evaluated_per_owned": float(work.group(2))}


def driver_rate(model: Path, n: int, steps: int) -> dict:
    """Atom-steps/s of :func:`mlip.md.run_md` (NVE) on one process, same cell and model.

    Timed as a run of ``steps`` minus a run of 2 steps (after a warm-up), so that its set-up
    (loading the model, the state, the first neighbour list) cancels, as LAMMPS's "Loop time"
    of a second ``run`` leaves its own out; the rate is over the ``steps - 2`` extra steps.
    """
    torch.set_num_threads(1)
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(n)

    def seconds_of(k: int) -> float:
        start = time.perf_counter()
        run_md(str(model), [atoms], steps=k, ensemble="nve", timestep=1.0,
               initial_temperature_K=300.0, max_atoms_per_call=None)
        return time.perf_counter() - start

    seconds_of(2)  # warm-up
    short = seconds_of(2)
    seconds = seconds_of(steps) - short
    return {"atoms": len(atoms), "steps": steps - 2, "seconds": seconds,
            "atom_steps_per_s": len(atoms) * (steps - 2) / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, nargs="+", default=[3, 4],
                        help="cubic cells of n×n×n fcc unit cells (4n³ atoms)")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--dtype", default="float64", choices=("float32", "float64"))
    parser.add_argument("-o", "--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    results = {"machine": f"{platform.node()} ({os.cpu_count()} cores, shared; noisy)",
               "model": "facet-tiny Cu, 2 layers, cutoff 4 Å, " + args.dtype,
               "steps": args.steps, "baseline": [], "strong": [], "weak": []}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        model = make_model(args.dtype, scratch / "model.pt")
        for n in args.repeat:
            before = driver_rate(model, n, args.steps)
            one = lammps_rate(model, n, n, 1, args.steps, scratch, "single")
            after = driver_rate(model, n, args.steps)
            own = 0.5 * (before["atom_steps_per_s"] + after["atom_steps_per_s"])
            results["baseline"].append({
                "atoms": before["atoms"], "run_md": [before, after], "lammps_1_rank": one,
                "lammps_over_run_md": one["atom_steps_per_s"] / own})
            print(json.dumps(results["baseline"][-1]), flush=True)
            results["strong"].append({"cell": n, **one})
            results["weak"].append({"cell": n, **one})
            for shell in ("single", "double"):
                for ranks in (r for r in args.ranks if r > 1):
                    strong = lammps_rate(model, n, n, ranks, args.steps, scratch, shell)
                    results["strong"].append({"cell": n, **strong})
                    weak = lammps_rate(model, n, n * ranks, ranks, args.steps, scratch, shell)
                    results["weak"].append({"cell": n, **weak})
                    print(json.dumps({"strong": strong, "weak": weak}), flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

"""SevenNet-0 in mlip vs torch-sim vs ASE's loop: batched FIRE relaxation and NVT Langevin MD.

The same pretrained model (``sevennet:7net-0``, the weights in the ``sevenn==0.13.0`` wheel,
float32) runs three ways on the same N rattled, strained bulk cells (Si, Cu, NaCl, MgO, Al,
GaAs; ``--atoms`` atoms each, written to one temporary extxyz file that every side reads):

* **mlip**: ``mlip.md.run_relax`` (batched FIRE; workload ``relax_cell``: with the Fréchet cell
  filter, ``--no-cell`` leaves it out) and
  ``mlip.md.run_md`` (NVT Langevin), mlip's SevenNet adapter on mlip's Verlet lists;
* **torch-sim** (``torch-sim-atomistic`` 0.3.0): its own SevenNet model interface
  (``torch_sim.models.sevennet``, vesin neighbour lists rebuilt every call, sevenn's own
  force/stress layer: it always computes the stress), ``ts.optimize`` with ``fire`` /
  ``frechet_cell_fire`` (ASE flavour; converged systems leave the batch every 5 steps, its
  default) and ``ts.nvt_langevin``; it runs in ``.venv-torchsim`` (built on first use, see
  ``benchmarks/models.py``) as a subprocess (:mod:`benchmarks._torchsim_sevennet_worker`) that
  waits while the others run;
* **ASE**: sevenn's own ``SevenNetCalculator``, one structure after the other, with
  ``ase.optimize.FIRE`` (on a ``FrechetCellFilter`` for ``relax_cell``) and
  ``ase.md.Langevin``.

Same settings on every side: FIRE with ASE's parameters (dt 0.1, dt_max 1.0, max step 0.2 Å),
``--fmax`` on the largest atomic (and cell) force, at most ``--relax-steps`` moves; MD 300 K,
1 fs, friction 0.01/fs, ``--md-steps`` timed steps after the initial force call. Same threads
(``torch.set_num_threads`` and ``OMP_NUM_THREADS``), device and dtype (float32). Each side is
warmed up once (a 2-step relax and MD on the whole batch), then the sides alternate
(``--repeats`` rounds, each round runs every side once, the order rotating; ASE in the first
``--ase-repeats`` rounds only, it is slow). Reported per workload and side: the median wall
time to all converged (relax) or atom-steps/s (MD), model calls and structure evaluations
(the number of (structure, force call) pairs: every engine evaluates the model once per FIRE
move, but torch-sim drops converged systems from the batch, mlip keeps them frozen in it),
how many converged, the time per structure evaluation (relax), and the ratios mlip/torch-sim
and mlip/ASE (> 1: mlip faster). Sanity columns: the largest energy (eV/atom) and force (eV/Å)
difference of the three on the starting structures (the same model?) and the largest
difference of the final relaxed energies, mlip vs each (eV/atom; differing FIRE paths may end
in different nearby minima).

    python benchmarks/foundation.py [--structures 64] [--atoms 8 16] [--threads 2]
        [--device cpu|cuda] [--repeats 2] [--ase-repeats 1] [--relax-steps 200]
        [--md-steps 10] [--fmax 0.05] [--no-relax] [--no-cell] [--no-md] [--no-torch-sim]
        [--no-ase]

writes benchmarks/results/foundation.json (atomically) and prints the table. The defaults are
the published run: roughly 50 minutes on a quiet 2-core CPU (extrapolated from 16 cells, which
took 27 minutes on one thread of a shared 2-core machine; SevenNet-0 costs ~0.1–0.3 s per
structure evaluation there). ``model_calls`` count every call of the model, mlip's first-call
timing of ``max_atoms_per_call="auto"`` and its calls per group of atoms included (MD: the
initial force call included).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from ase import Atoms

ROOT = Path(__file__).resolve().parents[1]
MODEL = "sevennet:7net-0"
#: the sevenn name of the same weights (its own calculator and torch-sim's interface)
SEVENN_MODEL = "7net-0"
MD = {"temperature_K": 300.0, "timestep_fs": 1.0, "friction_per_fs": 0.01, "seed": 0}
SIDES = ("mlip", "torch_sim", "ase")

#: (formula, structure, lattice constant Å) of the bulk prototypes, cubic cells of 8 atoms
#: (fcc metals: the 4-atom cube doubled)
PROTOTYPES = (("Si", "diamond", 5.43), ("Cu", "fcc", 3.61), ("NaCl", "rocksalt", 5.64),
              ("MgO", "rocksalt", 4.21), ("Al", "fcc", 4.04), ("GaAs", "zincblende", 5.65))


def make_structures(n: int, atoms: tuple[int, ...] = (8, 16), rattle: float = 0.05,
                    strain: float = 0.02, seed: int = 0) -> list[Atoms]:
    """``n`` bulk cells cycling through :data:`PROTOTYPES`, each of a size drawn from
    ``atoms`` (8 times a power of two), its cell strained by a random symmetric strain (entries
    uniform in ±``strain``) and its positions rattled (Gaussian, σ = ``rattle`` Å)."""
    import ase.build

    if any(k < 8 or (k // 8) & (k // 8 - 1) or k % 8 for k in atoms):
        raise ValueError(f"atoms per cell must be 8 times a power of two, got {atoms}")
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        formula, kind, a = PROTOTYPES[i % len(PROTOTYPES)]
        cell = ase.build.bulk(formula, kind, a=a, cubic=True)
        if len(cell) == 4:
            cell = cell * (2, 1, 1)
        repeat = [1, 1, 1]
        for k in range((int(rng.choice(atoms)) // 8).bit_length() - 1):  # double axes in turn
            repeat[k % 3] *= 2
        cell = cell * tuple(repeat)
        eps = rng.uniform(-strain, strain, (3, 3))
        cell.set_cell(cell.cell.array @ (np.eye(3) + (eps + eps.T) / 2), scale_atoms=True)
        cell.positions += rng.normal(0.0, rattle, cell.positions.shape)
        cell.wrap()
        frames.append(cell)
    return frames


def _count_calls(model: torch.nn.Module) -> tuple[dict[str, int], Callable[[], None]]:
    """Count the calls of ``model`` and the structures they evaluated (forward pre-hook);
    returns the counter and the hook's remover."""
    counter = {"calls": 0, "systems": 0}

    def hook(_: torch.nn.Module, args: tuple) -> None:
        counter["calls"] += 1
        counter["systems"] += int(args[0].n_graphs)

    return counter, model.register_forward_pre_hook(hook).remove


def mlip_relax(model, frames: list[Atoms], args: argparse.Namespace, cell: bool,
               steps: int) -> dict[str, Any]:
    """Wall time of ``run_relax`` on the batch, with its model calls and results."""
    from mlip.md import run_relax

    counter, remove = _count_calls(model)
    try:
        _sync(args.device)
        start = time.perf_counter()
        result = run_relax(model, frames, fmax=args.fmax, relax_cell=cell, steps=steps,
                           device=args.device)
        _sync(args.device)
        wall = time.perf_counter() - start
    finally:
        remove()
    return {"wall_s": wall, "model_calls": counter["calls"],
            "structure_evaluations": counter["systems"], "converged": result.converged,
            "energy": result.energy, "moves": result.n_steps}


def mlip_md(model, frames: list[Atoms], args: argparse.Namespace, steps: int) -> dict[str, Any]:
    """atom-steps/s of ``run_md``'s loop (NVT Langevin, after the initial force call)."""
    from mlip.md import run_md

    counter, remove = _count_calls(model)
    try:
        result = run_md(model, frames, steps=steps, temperature=MD["temperature_K"],
                        timestep=MD["timestep_fs"], initial_temperature_K=MD["temperature_K"],
                        seed=MD["seed"], device=args.device)
    finally:
        remove()
    return {"wall_s": result.wall_s, "model_calls": counter["calls"],
            "structure_evaluations": counter["systems"],
            "atom_steps_per_s": result.atom_steps_per_s}


class _CountingCalculator:
    """sevenn's ASE calculator with a count of its evaluations."""

    def __init__(self, device: str) -> None:
        from sevenn.calculator import SevenNetCalculator

        self.calc = SevenNetCalculator(SEVENN_MODEL, device=device)
        self.calls = 0
        original = self.calc.calculate

        def calculate(*a, **k):
            self.calls += 1
            return original(*a, **k)

        self.calc.calculate = calculate


def ase_relax(counting: _CountingCalculator, frames: list[Atoms], args: argparse.Namespace,
              cell: bool, steps: int) -> dict[str, Any]:
    """ASE's loop: ``FIRE`` (on a ``FrechetCellFilter`` for ``cell``) per structure."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE

    counting.calls = 0
    converged, energies, moves = [], [], []
    start = time.perf_counter()
    for frame in frames:
        atoms = frame.copy()
        atoms.calc = counting.calc
        optimizer = FIRE(FrechetCellFilter(atoms) if cell else atoms, logfile=None)
        converged.append(bool(optimizer.run(fmax=args.fmax, steps=steps)))
        energies.append(atoms.get_potential_energy())
        moves.append(optimizer.nsteps)
    wall = time.perf_counter() - start
    return {"wall_s": wall, "model_calls": counting.calls, "structure_evaluations": counting.calls,
            "converged": converged, "energy": energies, "moves": moves}


def ase_md(counting: _CountingCalculator, frames: list[Atoms], steps: int) -> dict[str, Any]:
    """ASE's loop: ``Langevin`` per structure; time of the ``run`` calls (after each
    structure's initial force call)."""
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    rng = np.random.default_rng(MD["seed"])
    wall, atom_steps = 0.0, 0
    counting.calls = 0
    for frame in frames:
        atoms = frame.copy()
        atoms.calc = counting.calc
        MaxwellBoltzmannDistribution(atoms, temperature_K=MD["temperature_K"], rng=rng)
        atoms.get_forces()
        dynamics = Langevin(atoms, MD["timestep_fs"] * units.fs,
                            temperature_K=MD["temperature_K"],
                            friction=MD["friction_per_fs"] / units.fs, fixcm=False,
                            rng=rng)
        start = time.perf_counter()
        dynamics.run(steps)
        wall += time.perf_counter() - start
        atom_steps += len(atoms) * steps
    return {"wall_s": wall, "model_calls": counting.calls,
            "structure_evaluations": counting.calls, "atom_steps_per_s": atom_steps / wall}


class TorchSimSide:
    """The torch-sim worker subprocess (``.venv-torchsim``), one JSON request at a time."""

    def __init__(self, python: Path, structures: Path, args: argparse.Namespace) -> None:
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads),
                   MKL_NUM_THREADS=str(args.threads))
        self.process = subprocess.Popen(
            [str(python), str(ROOT / "benchmarks/_torchsim_sevennet_worker.py")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.versions = self("setup", structures=str(structures), threads=args.threads,
                             device=args.device, model=SEVENN_MODEL)

    def __call__(self, op: str, **request: Any) -> dict[str, Any]:
        self.process.stdin.write(json.dumps({"op": op, **request}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the torch-sim worker died during {op!r} (its stderr is above)")
        answer = json.loads(line)
        if not answer.pop("ok"):
            raise RuntimeError(f"torch-sim worker, {op!r}: {answer['error']}")
        return answer

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.process.stdin.flush()
            self.process.wait(timeout=60)


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def single_points(model, frames: list[Atoms], torch_sim: TorchSimSide | None,
                  counting: _CountingCalculator | None, device: str) -> dict[str, Any]:
    """Largest energy (eV/atom) and force (eV/Å) difference of torch-sim and ASE from mlip on
    the starting structures."""
    from mlip.graph import AtomicGraph

    graph = AtomicGraph.from_ase(frames, model.cutoff).to(device)
    out = model(graph)
    n = torch.tensor([len(a) for a in frames], dtype=torch.float64)
    ours_e, ours_f = out.energy.detach().cpu().double(), out.forces.detach().cpu().double()
    others: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    if torch_sim is not None:
        theirs = torch_sim("single_point")
        others["torch_sim"] = (torch.tensor(theirs["energy"]), torch.tensor(theirs["forces"]))
    if counting is not None:
        energies, forces = [], []
        for frame in frames:
            atoms = frame.copy()
            atoms.calc = counting.calc
            energies.append(atoms.get_potential_energy())
            forces.append(torch.tensor(atoms.get_forces()))
        others["ase"] = (torch.tensor(energies, dtype=torch.float64), torch.cat(forces).double())
    return {name: {"max_energy_diff_eV_per_atom": float(((e - ours_e) / n).abs().max()),
                   "max_force_diff_eV_per_A": float((f - ours_f).abs().max())}
            for name, (e, f) in others.items()}


def _rotate(names: list[str], k: int) -> list[str]:
    return names[k % len(names):] + names[:k % len(names)]


def run_workload(kind: str, sides: dict[str, Callable[[int], dict]], frames: list[Atoms],
                 args: argparse.Namespace) -> dict[str, Any]:
    """Warm up every side, then alternate them for ``args.repeats`` rounds; the row."""
    steps = args.md_steps if kind == "md" else args.relax_steps
    for name, run in sides.items():
        print(f"[{kind}] warm-up {name}", file=sys.stderr, flush=True)
        run(2)
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    for round_ in range(args.repeats):
        for name in _rotate(list(sides), round_):
            if name == "ase" and round_ >= args.ase_repeats:
                continue
            result = sides[name](steps)
            runs[name].append(result)
            metric = (f"{result['atom_steps_per_s']:.1f} atom-steps/s" if kind == "md"
                      else f"{result['wall_s']:.1f} s, {sum(result['converged'])} converged")
            print(f"[{kind}] round {round_ + 1} {name}: {metric}", file=sys.stderr, flush=True)
    n_atoms = np.array([len(a) for a in frames])
    row: dict[str, Any] = {"workload": kind, "steps": steps}
    for name, results in runs.items():
        last = results[-1]
        side = {"wall_s_all": [round(r["wall_s"], 3) for r in results],
                "wall_s": round(statistics.median(r["wall_s"] for r in results), 3),
                "model_calls": last["model_calls"],
                "structure_evaluations": last["structure_evaluations"]}
        if kind == "md":
            side["atom_steps_per_s_all"] = [round(r["atom_steps_per_s"], 2) for r in results]
            side["atom_steps_per_s"] = round(statistics.median(
                r["atom_steps_per_s"] for r in results), 2)
        else:
            side["converged"] = int(sum(last["converged"]))
            side["ms_per_structure_evaluation"] = round(
                1e3 * side["wall_s"] / max(side["structure_evaluations"], 1), 2)
            if "moves" in last:
                side["moves_max"] = int(max(last["moves"]))
                side["moves_mean"] = round(float(np.mean(last["moves"])), 1)
            side["energy"] = last["energy"]
        row[name] = side
    for name in ("torch_sim", "ase"):
        if name not in row:
            continue
        if kind == "md":
            row[f"ratio_mlip_{name}"] = round(row["mlip"]["atom_steps_per_s"]
                                              / row[name]["atom_steps_per_s"], 3)
        else:
            row[f"ratio_mlip_{name}"] = round(row[name]["wall_s"] / row["mlip"]["wall_s"], 3)
            diff = (np.array(row[name]["energy"]) - np.array(row["mlip"]["energy"])) / n_atoms
            row[f"final_energy_diff_{name}_eV_per_atom"] = {
                "max": float(np.abs(diff).max()), "median": float(np.median(np.abs(diff)))}
    for name in runs:
        row[name].pop("energy", None)
    return row


def _write_json(path: Path, report: dict) -> None:
    """Write ``report`` to ``path`` atomically (a temporary file in its folder, renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(report, indent=1) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _table(report: dict) -> str:
    lines = [f"SevenNet-0, {report['structures']} structures ({report['atoms']} atoms), "
             f"{report['device']}, {report['threads']} threads, float32"]
    lines.append(f"{'workload':<12}{'side':<11}{'metric':>16}{'calls':>7}{'evals':>7}"
                 f"{'conv':>6}{'mlip/x':>8}{'ΔE_final':>10}")
    for row in report["rows"]:
        for name in SIDES:
            if name not in row:
                continue
            side = row[name]
            metric = (f"{side['atom_steps_per_s']:.1f} at-st/s" if row["workload"] == "md"
                      else f"{side['wall_s']:.1f} s")
            ratio = row.get(f"ratio_mlip_{name}")
            diff = row.get(f"final_energy_diff_{name}_eV_per_atom", {}).get("max")
            lines.append(f"{row['workload']:<12}{name:<11}{metric:>16}{side['model_calls']:>7}"
                         f"{side.get('structure_evaluations', ''):>7}"
                         f"{side.get('converged', ''):>6}"
                         f"{'' if ratio is None else f'{ratio:.2f}x':>8}"
                         f"{'' if diff is None else f'{diff:.1e}':>10}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--structures", type=int, default=64, help="N cells in the batch")
    parser.add_argument("--atoms", type=int, nargs="+", default=[8, 16],
                        help="atoms per cell, drawn per cell (multiples of 8)")
    parser.add_argument("--rattle", type=float, default=0.05, help="σ of the rattle, Å")
    parser.add_argument("--strain", type=float, default=0.02, help="largest strain entry")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=2, help="rounds of mlip and torch-sim")
    parser.add_argument("--ase-repeats", type=int, default=1, help="rounds that include ASE")
    parser.add_argument("--fmax", type=float, default=0.05, help="eV/Å")
    parser.add_argument("--relax-steps", type=int, default=200, help="most FIRE moves")
    parser.add_argument("--md-steps", type=int, default=10, help="timed MD steps")
    parser.add_argument("--no-cell", action="store_true", help="no cell-filter relaxation")
    parser.add_argument("--no-relax", action="store_true", help="no positions-only relaxation")
    parser.add_argument("--no-md", action="store_true", help="no MD workload")
    parser.add_argument("--no-torch-sim", action="store_true", help="leave torch-sim out")
    parser.add_argument("--no-ase", action="store_true", help="leave ASE's loop out")
    parser.add_argument("--torch-sim-python", type=Path, default=None,
                        help="python of a venv with torch-sim and sevenn (default: "
                             ".venv-torchsim, built on first use)")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks/results/foundation.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; returns the report (also written to ``--output``)."""
    args = parse_args(argv)
    from mlip.models import load_model

    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    frames = make_structures(args.structures, tuple(args.atoms), args.rattle, args.strain)
    model = load_model(MODEL, device=args.device).eval()
    counting = None if args.no_ase else _CountingCalculator(args.device)
    torch_sim = None
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        structures = Path(folder) / "structures.extxyz"
        import ase.io

        ase.io.write(structures, frames)
        try:
            if not args.no_torch_sim:
                python = args.torch_sim_python
                if python is None:
                    sys.path.append(str(ROOT / "benchmarks"))
                    from models import ensure_torchsim_venv

                    python = ensure_torchsim_venv(with_sevenn=True)
                torch_sim = TorchSimSide(python, structures, args)
            agreement = single_points(model, frames, torch_sim, counting, args.device)
            workloads = ([] if args.no_relax else [("relax", False)]) + (
                [] if args.no_cell else [("relax_cell", True)])
            rows = []
            for kind, cell in workloads:
                sides: dict[str, Callable[[int], dict]] = {
                    "mlip": lambda s, c=cell: mlip_relax(model, frames, args, c, s)}
                if torch_sim is not None:
                    sides["torch_sim"] = lambda s, c=cell: torch_sim(
                        "relax", fmax=args.fmax, steps=s, cell=c)
                if counting is not None:
                    sides["ase"] = lambda s, c=cell: ase_relax(counting, frames, args, c, s)
                rows.append(run_workload(kind, sides, frames, args))
            if not args.no_md:
                sides = {"mlip": lambda s: mlip_md(model, frames, args, s)}
                if torch_sim is not None:
                    sides["torch_sim"] = lambda s: torch_sim("md", steps=s, **MD)
                if counting is not None:
                    sides["ase"] = lambda s: ase_md(counting, frames, s)
                rows.append(run_workload("md", sides, frames, args))
        finally:
            if torch_sim is not None:
                torch_sim.close()
    import importlib.metadata

    import mlip

    sys.path.append(str(ROOT / "benchmarks"))
    from cpu_speed import cpu_model

    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "model": MODEL, "dtype": "float32", "device": args.device,
        "device_name": (torch.cuda.get_device_name() if args.device == "cuda"
                        else cpu_model()),
        "threads": args.threads, "structures": len(frames),
        "atoms": int(sum(len(a) for a in frames)), "atoms_per_structure": args.atoms,
        "rattle_A": args.rattle, "strain": args.strain, "fmax_eV_per_A": args.fmax,
        "relax_steps": args.relax_steps, "md_steps": args.md_steps, "md": MD,
        "repeats": args.repeats, "ase_repeats": args.ase_repeats,
        "versions": {"mlip": mlip.__version__, "torch": torch.__version__,
                     "sevenn": importlib.metadata.version("sevenn"),
                     "ase": importlib.metadata.version("ase"),
                     **({} if torch_sim is None else
                        {"torch_sim": torch_sim.versions["torch_sim"],
                         "torch_sim_venv_torch": torch_sim.versions["torch"],
                         "torch_sim_venv_sevenn": torch_sim.versions["sevenn"]})},
        "start_agreement_vs_mlip": agreement,
        "total_wall_s": round(time.perf_counter() - began, 1),
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "rows": rows,
    }
    _write_json(args.output, report)
    print(_table(report))
    return report


if __name__ == "__main__":
    main()

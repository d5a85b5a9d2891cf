"""float32 vs float64 energy + forces on the CPU, for every family with trained weights.

Each potential file is loaded twice (float32 and float64, :func:`mlip.models.load_model`) and
timed on a batch of bundled 3BPA molecules; the cases run interleaved (one call of each per
round), so the ratios come from the same machine state. Also recorded: how many weights of the
file would be subnormal in float32 (what :mod:`mlip.nn.precision` zeroes), the largest force
difference float32 − float64, the CPU model, how much this CPU slows a matrix product with
subnormal operands (AMD Zen barely does, Intel cores do, 50–100×) and the load average.

    python benchmarks/cpu_speed.py [--model facet=data/bundled/facet_3bpa.pt]
        [--model tdn=RUN/best.pt ...] [--threads 2] [--repeats 7] [--molecules 16]

Without ``--model`` only the shipped Facet runs. TDN and EquiformerV3 weights come from their
shipped configs, e.g. ``mlip train tdn -o /tmp/tdn --set train.max_time_s=120``.

Second part, the MD driver against torch-sim (``torch-sim-atomistic`` 0.3.0, in
``.venv-torchsim``, built on first use): NVT Langevin (300 K, 1 fs, γ = 0.01/fs on both sides)
with the same potential, the shipped Facet through :mod:`benchmarks._torchsim_adapter`
(torch-sim rebuilds the neighbour list every step, its way), float32 and float64, on 1, 16 and
64 molecules, plus Lennard-Jones (each engine's own) as a sanity row. mlip runs twice: its
default (``run_md``, eager model, ``max_atoms_per_call="auto"``, chosen once per case) and
``run_md(compile=True)`` (compile time reported apart; ``--no-compile`` leaves it out). All
sides run in one worker process (``.venv-torchsim``'s interpreter, which also holds mlip) and
alternate, ours, ours compiled, theirs, ours, ... (``--md-repeats`` each, ``--md-steps`` timed
steps per repeat after the initial force call); a row reports the median atom-steps/s of each
side and the ratios. The adapter's energies and forces are checked against mlip's own call
first (the run aborts on a mismatch). A per-phase timing of mlip's step (``--molecules``
molecules, eager and compiled; ``--skip-profile`` leaves it out) comes first. All parts go
into the one JSON file (``--skip-md`` leaves the comparison out). On a shared CPU the
absolute numbers are noisy, the ratios of the interleaved sides much less so; an
oversubscribed CPU makes two-thread runs meaningless (each OpenMP region waits for a
descheduled thread): use ``--threads 1`` there.

    python benchmarks/cpu_speed.py    # the whole thing, < 10 min on a quiet 2-core CPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import ase.io
import torch

from mlip.graph import AtomicGraph
from mlip.models import load_model
from mlip.models.checkpoint import read_payload

ROOT = Path(__file__).resolve().parents[1]
DTYPES = (torch.float32, torch.float64)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the platform string elsewhere)."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def subnormal_weights_in_file(path: Path) -> int:
    """Weights of the file that are subnormal once cast to float32 (before mlip zeroes them)."""
    tiny = torch.finfo(torch.float32).tiny
    count = 0
    for value in read_payload(path)["state_dict"].values():
        if value.is_floating_point():
            magnitude = value.to(torch.float32).abs()
            count += int(((magnitude > 0) & (magnitude < tiny)).sum())
    return count


def subnormal_matmul_slowdown(repeats: int) -> float:
    """How much slower this CPU multiplies with 1.4 % subnormal operands: the shipped Facet's
    slow backward product before the fix, ``[7236, 592] @ [592, 12]`` (median time ratio)."""
    torch.manual_seed(0)
    a, b = torch.randn(7236, 592), torch.randn(592, 12)
    tiny = b.clone()
    tiny[:8] = 1e-39  # 96 of 7104 entries, as in the shipped file's control values
    times: dict[str, list[float]] = {"normal": [], "subnormal": []}
    for _ in range(repeats):
        for name, operand in (("normal", b), ("subnormal", tiny)):
            start = time.perf_counter()
            a @ operand
            times[name].append(time.perf_counter() - start)
    return statistics.median(times["subnormal"]) / statistics.median(times["normal"])


#: Molecule counts of the driver comparison, and the shipped potential it drives.
MD_MOLECULES = (1, 16, 64)
SHIPPED = ROOT / "data/bundled/facet_3bpa.pt"
MD_TEMPERATURE_K, MD_TIMESTEP_FS, MD_FRICTION_PER_FS = 300.0, 1.0, 0.01


def _lennard_jones(dtype: torch.dtype):
    """mlip's Lennard-Jones model (3BPA's elements, ε = 0.02 eV, σ = 1 Å, r_c = 5 Å, as in
    benchmarks/md.py), eval mode, in ``dtype``."""
    from mlip.models import build

    return build("lennard_jones", species=[1, 6, 7, 8], cutoff=5.0, epsilon=0.02,
                 sigma=1.0).to(dtype).eval()


def _ours(model, frames, steps: int, group) -> float:
    """atom-steps/s of ``mlip.md.run_md`` (the loop after the initial force call)."""
    from mlip.md import run_md

    result = run_md(model, frames, steps=steps, temperature=MD_TEMPERATURE_K,
                    timestep=MD_TIMESTEP_FS, initial_temperature_K=MD_TEMPERATURE_K, seed=0,
                    max_atoms_per_call=group)
    return result.atom_steps_per_s


def _theirs(ts_model, frames, steps: int, dtype: torch.dtype) -> float:
    """atom-steps/s of torch-sim's NVT Langevin on ``ts_model`` (the loop after its init,
    as in ``torch_sim.integrate``)."""
    import torch_sim as ts

    units = ts.units.MetalUnits
    state = ts.io.atoms_to_state(frames, torch.device("cpu"), dtype)
    dt = torch.tensor(MD_TIMESTEP_FS * 1e-3 * units.time, dtype=dtype)
    kT = torch.tensor(MD_TEMPERATURE_K * units.temperature, dtype=dtype)
    gamma = MD_FRICTION_PER_FS / (1e-3 * units.time)  # 1/fs → torch-sim's time unit
    init, update = ts.nvt_langevin(ts_model, dt=dt, kT=kT, gamma=torch.tensor(gamma, dtype=dtype),
                                   seed=0)
    state = init(state)
    start = time.perf_counter()
    for _ in range(steps):
        state = update(state, kT=kT)
    return state.positions.shape[0] * steps / (time.perf_counter() - start)


def _check_adapter(model, ts_model, frames, dtype: torch.dtype) -> float:
    """Largest |ΔF| (eV/Å) between the adapter and mlip's own call; raises on a mismatch
    (energies and forces beyond a few hundred ulps of their scale)."""
    import torch_sim as ts

    theirs = ts_model(ts.io.atoms_to_state(frames, torch.device("cpu"), dtype))
    graph = AtomicGraph.from_ase(frames, model.cutoff)
    graph = graph.replace(positions=graph.positions.to(dtype), cell=graph.cell.to(dtype))
    ours = model(graph)
    eps = torch.finfo(dtype).eps
    for key in ("energy", "forces"):
        scale = float(getattr(ours, key).abs().max()) + 1.0
        diff = float((theirs[key] - getattr(ours, key)).abs().max())
        if diff > 300 * eps * scale:
            raise RuntimeError(f"torch-sim adapter {key} differ from mlip's by {diff:.3g} "
                               f"({dtype}, {len(frames)} molecules)")
    return float((theirs["forces"] - ours.forces).abs().max())


class _PhaseTimer:
    """Wall time of each call of chosen functions (patched for the duration of a ``with``)."""

    def __init__(self, targets: dict[str, tuple[object, str]]) -> None:
        self.targets, self.seconds = targets, {name: [] for name in targets}
        self._saved: list[tuple[object, str, object]] = []

    def _wrap(self, name: str, function):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[name].append(time.perf_counter() - start)
        return timed

    def __enter__(self) -> _PhaseTimer:
        for name, (owner, attribute) in self.targets.items():
            own = vars(owner).get(attribute)  # None: inherited (deleted again on exit)
            self._saved.append((owner, attribute, own))
            setattr(owner, attribute, self._wrap(name, getattr(owner, attribute)))
        return self

    def __exit__(self, *_: object) -> None:
        for owner, attribute, own in reversed(self._saved):
            if own is None:
                delattr(owner, attribute)
            else:
                setattr(owner, attribute, own)


def profile_md_step(dtype: torch.dtype, args: argparse.Namespace,
                    compile: bool = False) -> dict[str, float | None]:
    """ms per step of each phase of ``run_md`` (shipped Facet, NVT Langevin, ``--molecules``
    molecules in one model call, ``--md-steps`` steps after the initial call): neighbour list,
    graph building and casts, the model call (eager: its forward to the energy and the
    backward to the forces; compiled: both in one compiled function, not split), the rest of
    the force call, the integrator with thermostat and blow-up screen, and the loop's own
    overhead (logging, progress, checks)."""
    from mlip.md import driver, run_md
    from mlip.md import force_field as force_field_module
    from mlip.md.force_field import ForceField
    from mlip.models.loading import resolve_model
    from mlip.neighbors import VerletList

    model = resolve_model(SHIPPED, dtype=dtype, compile=compile)
    frames = ase.io.read(ROOT / "data/bundled/3bpa_train_300K.xyz", index=f":{args.molecules}")
    run_md(model, frames, steps=2, max_atoms_per_call=None)  # warm-up (and compile)
    targets = {"step": (driver._Run, "advance"), "force call": (ForceField, "__call__"),
               "neighbour list": (VerletList, "update"),
               "graph + casts": (force_field_module, "graph_from_neighbors"),
               "model call": (type(model), "forward")}
    if not compile:  # traced into the compiled function otherwise
        targets.update({"model forward": (type(model), "node_energy"),
                        "backward": (torch.autograd, "grad")})
    with _PhaseTimer(targets) as timer:
        result = run_md(model, frames, steps=args.md_steps, temperature=MD_TEMPERATURE_K,
                        initial_temperature_K=MD_TEMPERATURE_K, seed=0, max_atoms_per_call=None)
    # the initial force call (integrator init) is not part of a step: drop each phase's first
    per_step = {name: sum(calls[0 if name == "step" else 1:]) * 1e3 / args.md_steps
                for name, calls in timer.seconds.items()}
    whole = result.wall_s * 1e3 / args.md_steps
    model_call = per_step["model call"]
    split = ("model forward", "backward")
    return {
        "neighbour list": per_step["neighbour list"],
        "graph + casts": per_step["graph + casts"],
        "model call": model_call,
        **{name: per_step.get(name) for name in split},
        "model call, other": None if compile else model_call - sum(per_step[k] for k in split),
        "rest of the force call": per_step["force call"] - model_call
        - per_step["neighbour list"] - per_step["graph + casts"],
        "integrator + thermostat + screen": per_step["step"] - per_step["force call"],
        "loop (logging, outputs)": whole - per_step["step"],
        "whole step": whole,
    }


def _auto_group(model, frames) -> int | None:
    """The group size (atoms per model call) that run_md's ``max_atoms_per_call="auto"``
    chooses at its first force call, chosen once here so that every repeat uses it."""
    from mlip.md import ForceField, state_from_atoms

    force_field = ForceField(model, max_atoms_per_call="auto")
    force_field(state_from_atoms(frames))
    return force_field.group_size


def md_worker(spec: dict) -> list[dict]:
    """Run the driver comparison (in ``.venv-torchsim``): one row per (model, dtype, molecules),
    the sides alternating ``spec['repeats']`` times each."""
    import sys

    from torch_sim.models.lennard_jones import LennardJonesModel

    sys.path.append(str(ROOT / "benchmarks"))
    from _torchsim_adapter import MlipModel

    from mlip.models.loading import resolve_model

    torch.set_num_threads(spec["threads"])
    rows = []
    for label in spec["models"]:
        for dtype in DTYPES:
            compiled = None
            if label == "facet":
                model = load_model(SHIPPED, dtype=dtype).eval()
                ts_model = MlipModel(model)
                if spec["compile"]:
                    compiled = resolve_model(SHIPPED, dtype=dtype, compile=True)
            else:
                model = _lennard_jones(dtype)
                ts_model = LennardJonesModel(sigma=1.0, epsilon=0.02, cutoff=5.0, dtype=dtype)
            for n in spec["molecules"]:
                frames = ase.io.read(ROOT / "data/bundled/3bpa_train_300K.xyz", index=f":{n}")
                diff = _check_adapter(model, ts_model, frames, dtype) if label == "facet" else None
                group = _auto_group(model, frames)
                _ours(model, frames, 2, group)  # warm-up (numba's first compile, caches)
                _theirs(ts_model, frames, 2, dtype)
                sides = {"mlip": (model, group)}
                compile_s = None
                if compiled is not None:
                    start = time.perf_counter()
                    _ours(compiled, frames, 2, None)  # compiles (or loads torch's cache)
                    compile_s = time.perf_counter() - start
                    sides["mlip_compiled"] = (compiled, _auto_group(compiled, frames))
                rates: dict[str, list[float]] = {name: [] for name in [*sides, "torch_sim"]}
                for _ in range(spec["repeats"]):
                    for name, (potential, size) in sides.items():
                        rates[name].append(_ours(potential, frames, spec["steps"], size))
                    rates["torch_sim"].append(_theirs(ts_model, frames, spec["steps"], dtype))
                median = {name: statistics.median(r) for name, r in rates.items()}
                row = {"model": label, "dtype": str(dtype).removeprefix("torch."),
                       "molecules": n, "atoms": sum(len(a) for a in frames),
                       "max_atoms_per_call": group,
                       "max_atoms_per_call_compiled": sides.get("mlip_compiled", (0, None))[1],
                       **{f"{name}_atom_steps_per_s": round(v, 1) for name, v in median.items()},
                       "ratio": round(median["mlip"] / median["torch_sim"], 3)}
                if compiled is not None:
                    row["ratio_compiled"] = round(median["mlip_compiled"] / median["torch_sim"], 3)
                    row["compile_s"] = round(compile_s, 1)
                row.update({f"{name}_all": [round(r, 1) for r in v] for name, v in rates.items()})
                row["adapter_max_force_diff_eV_per_A"] = diff
                rows.append(row)
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def driver_comparison(args: argparse.Namespace) -> dict:
    """The driver comparison, run by ``.venv-torchsim``'s interpreter (built on first use)."""
    import subprocess
    import sys

    sys.path.append(str(ROOT / "benchmarks"))
    from models import TORCHSIM_VERSION, ensure_torchsim_venv

    python = ensure_torchsim_venv()
    spec = {"threads": args.threads, "repeats": args.md_repeats, "steps": args.md_steps,
            "molecules": args.md_molecules, "models": ["facet", "lennard_jones"],
            "compile": not args.no_compile}
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    done = subprocess.run([str(python), str(Path(__file__).resolve()), "--md-worker",
                           json.dumps(spec)], stdout=subprocess.PIPE, env=env, text=True)
    if done.returncode:
        raise RuntimeError("the driver comparison worker failed (its stderr is above)")
    return {"torch_sim": TORCHSIM_VERSION, "thermostat": (
        f"NVT Langevin {MD_TEMPERATURE_K:g} K, {MD_TIMESTEP_FS:g} fs, "
        f"friction {MD_FRICTION_PER_FS:g}/fs"), **spec,
            "rows": json.loads(done.stdout.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=None, metavar="LABEL=PATH")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--molecules", type=int, default=16)
    parser.add_argument("--md-molecules", type=int, nargs="+", default=list(MD_MOLECULES))
    parser.add_argument("--md-steps", type=int, default=10, help="timed steps per repeat")
    parser.add_argument("--md-repeats", type=int, default=3, help="alternations per side")
    parser.add_argument("--skip-md", action="store_true", help="no driver comparison")
    parser.add_argument("--no-compile", action="store_true",
                        help="leave out mlip's compiled-inference side of the comparison")
    parser.add_argument("--skip-profile", action="store_true",
                        help="no per-phase timing of mlip's MD step")
    parser.add_argument("--md-worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks/results/cpu_speed.json")
    args = parser.parse_args()
    if args.md_worker is not None:
        print(json.dumps(md_worker(json.loads(args.md_worker))))
        return
    torch.set_num_threads(args.threads)
    specs = args.model or [f"facet={ROOT / 'data/bundled/facet_3bpa.pt'}"]
    files = {label: Path(path).resolve() for label, path in (spec.split("=", 1) for spec in specs)}

    frames = ase.io.read(ROOT / "data/bundled/3bpa_train_300K.xyz", index=f":{args.molecules}")
    models = {(label, dtype): load_model(path, dtype=dtype)
              for label, path in files.items() for dtype in DTYPES}
    graphs = {label: AtomicGraph.from_ase(frames, models[label, torch.float64].cutoff)
              for label in files}
    forces = {key: model(graphs[key[0]]).forces.double() for key, model in models.items()}
    load_before = os.getloadavg()
    times: dict[tuple, list[float]] = {key: [] for key in models}
    for _ in range(args.repeats):
        for key, model in models.items():
            start = time.perf_counter()
            model(graphs[key[0]])
            times[key].append(time.perf_counter() - start)
    load_after = os.getloadavg()
    slowdown = subnormal_matmul_slowdown(args.repeats)

    results = []
    for label, path in files.items():
        ms = {dtype: statistics.median(times[label, dtype]) * 1e3 for dtype in DTYPES}
        reference = forces[label, torch.float64]
        results.append({
            "model": label,
            "file": str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path),
            "family": models[label, torch.float64].registry_name,
            "subnormal_float32_weights_in_file": subnormal_weights_in_file(path),
            "float32_ms": round(ms[torch.float32], 2),
            "float64_ms": round(ms[torch.float64], 2),
            "float32_speedup": round(ms[torch.float64] / ms[torch.float32], 2),
            "float32_ms_all": [round(t * 1e3, 2) for t in times[label, torch.float32]],
            "float64_ms_all": [round(t * 1e3, 2) for t in times[label, torch.float64]],
            "max_force_diff_eV_per_A": float((forces[label, torch.float32] - reference)
                                             .abs().max()),
            "max_force_eV_per_A": float(reference.abs().max()),
        })
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu_model(),
        "threads": args.threads,
        "repeats": args.repeats,
        "system": f"{len(frames)} 3BPA molecules ({sum(len(a) for a in frames)} atoms)",
        "torch": torch.__version__,
        "subnormal_matmul_slowdown": round(slowdown, 2),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
        "results": results,
    }
    if not args.skip_profile:
        report["md_step_profile"] = {
            f"{str(d).removeprefix('torch.')}{' compiled' if c else ''}":
                profile_md_step(d, args, c)
            for d in DTYPES for c in ([False] if args.no_compile else [False, True])}
    if not args.skip_md:
        report["driver_vs_torch_sim"] = driver_comparison(args)
        report["loadavg_after_md"] = [round(x, 2) for x in os.getloadavg()]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1) + "\n")
    print(f"{'model':<16}{'float32 ms':>12}{'float64 ms':>12}{'f64/f32':>9}{'max|ΔF|':>10}")
    for row in results:
        print(f"{row['model']:<16}{row['float32_ms']:>12.1f}{row['float64_ms']:>12.1f}"
              f"{row['float32_speedup']:>9.2f}{row['max_force_diff_eV_per_A']:>10.1e}")
    for row in report.get("driver_vs_torch_sim", {}).get("rows", []):
        print(f"{row['model']:<14}{row['dtype']:<8}{row['molecules']:>4} mol  mlip "
              f"{row['mlip_atom_steps_per_s']:>9.0f}  torch-sim "
              f"{row['torch_sim_atom_steps_per_s']:>9.0f} atom-steps/s  ratio {row['ratio']:.2f}"
              + (f"  compiled {row['ratio_compiled']:.2f}" if "ratio_compiled" in row else ""))


if __name__ == "__main__":
    main()

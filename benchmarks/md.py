"""MD throughput: mlip's batched torch driver vs ASE's VelocityVerlet loop, same model, same run.

Cases: one 3BPA molecule (27 atoms), 64 3BPA molecules (batched in one state for mlip; ASE
runs molecules one after the other, so its rate is measured on a few of them), and periodic
fcc Cu with 256 and 2048 atoms. Both sides use the same potential and the same neighbour list
with a skin (ASE through :class:`mlip.calculators.MLIPCalculator`). Reported: atom-steps/s
(atoms × steps / wall seconds) and the ratio mlip / ASE. The CPU of the development box is
shared, so absolute numbers are noisy; the ratios are measured in the same process.

Two models by default: the analytic Lennard-Jones (per-step overhead dominates) and a randomly
initialised facet-s (``FACET_PRESETS["facet-s"]``, float64; the model dominates). Our driver
runs with its default ``max_atoms_per_call="auto"`` (on a CPU the first call times one model
call on the whole batch against calls on groups of whole molecules, which keep a heavy model's
working set in cache, and keeps the faster); the molecule batch is run once more with one call
on the whole batch (``--max-atoms-per-call``).

Usage::

    python benchmarks/md.py                       # Lennard-Jones and facet-s, default sizes
    python benchmarks/md.py --model runs/x/best.pt  # a trained checkpoint instead
    python benchmarks/md.py --model facet --hparams '{"species": [1, 6, 7, 8, 29]}'
    python benchmarks/md.py --compile --model lennard_jones   # both sides on the compiled model

With ``--compile`` the model object shared by both sides evaluates energy, forces and stress
through ``torch.compile`` (``Potential.enable_compile``): ASE's calculator gets the same speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from importlib import resources
from pathlib import Path

import ase.io
import torch
from ase import Atoms, units
from ase.build import bulk
from ase.md.verlet import VelocityVerlet

from mlip.calculators import MLIPCalculator
from mlip.md import BlowUpLimits, MDOutputs, make_integrator, run_md
from mlip.md.state import maxwell_boltzmann_momenta, state_from_atoms
from mlip.models import build
from mlip.models.facet import FACET_PRESETS
from mlip.models.loading import resolve_model

RESULTS = Path(__file__).parent / "results" / "md.json"
RESULTS_COMPILED = Path(__file__).parent / "results" / "md_compiled.json"
MACE_PYTHON = Path(__file__).resolve().parent.parent / ".venv-mace" / "bin" / "python"

#: Run in .venv-mace (mace-torch 0.3.16, e3nn 0.4.4): ASE VelocityVerlet with MACECalculator on a
#: randomly initialised MACE of a common small size (2 layers, 32x0e+32x1o, L=3, r_max 5 Å).
_MACE_SCRIPT = """
import json, sys, time, numpy as np, torch, ase.io
from e3nn import o3
from mace import modules
from mace.calculators import MACECalculator
from ase import units
from ase.md.verlet import VelocityVerlet
torch.set_num_threads(int(sys.argv[3]))
torch.set_default_dtype(torch.float64)
z = [1, 6, 7, 8, 29]
block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
model = modules.MACE(r_max=5.0, num_bessel=8, num_polynomial_cutoff=5, max_ell=3,
    interaction_cls=block, interaction_cls_first=block, num_interactions=2,
    num_elements=len(z), hidden_irreps=o3.Irreps("32x0e + 32x1o"),
    MLP_irreps=o3.Irreps("16x0e"), gate=torch.nn.functional.silu,
    atomic_energies=np.zeros(len(z)), avg_num_neighbors=20.0, atomic_numbers=z,
    correlation=3, radial_type="bessel")
calc = MACECalculator(models=model, device="cpu", default_dtype="float64")
rates = {}
for name in sys.argv[4:]:
    atoms = ase.io.read(sys.argv[1], index=name)
    atoms.calc = calc
    dynamics = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    dynamics.run(1)
    start = time.perf_counter()
    dynamics.run(int(sys.argv[2]))
    rates[atoms.info["case"]] = len(atoms) * int(sys.argv[2]) / (time.perf_counter() - start)
print(json.dumps(rates))
"""


def load_potential(name: str, hparams: str | None, device: str, dtype: torch.dtype):
    """A checkpoint path, a registry name with JSON hparams, the default Lennard-Jones, or
    ``facet-s`` (random weights, in ``dtype``)."""
    if name == "lennard_jones" and hparams is None:
        return build("lennard_jones", species=[1, 6, 7, 8, 29], cutoff=5.0, epsilon=0.02,
                     sigma=1.0).eval().to(device)
    if name == "facet-s" and hparams is None:
        return build("facet", species=[1, 6, 7, 8, 29], avg_num_neighbors=20.0,
                     **FACET_PRESETS["facet-s"]).eval().to(device=device, dtype=dtype)
    if os.path.exists(name):
        return resolve_model(name, device=device)
    return build(name, **json.loads(hparams or "{}")).eval().to(device)


def cases(n_molecules: int, cu_sizes: list[int]) -> dict[str, list[Atoms]]:
    """Benchmark systems by name."""
    path = resources.files("mlip.data.bundled").joinpath("3bpa_train_300K.xyz")
    molecules = ase.io.read(str(path), index=f":{n_molecules}")
    out = {"3bpa_x1": molecules[:1], f"3bpa_x{n_molecules}": molecules}
    for n in cu_sizes:
        reps = round((n / 4) ** (1 / 3))
        cell = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(reps)
        cell.rattle(0.02, seed=0)
        out[f"cu_{len(cell)}"] = [cell]
    return out


def thermalised(structures: list[Atoms], temperature: float) -> list[Atoms]:
    """Copies with Maxwell-Boltzmann momenta (the same ones on both sides)."""
    state = state_from_atoms(structures)
    momenta = maxwell_boltzmann_momenta(state.masses, state.batch, state.n_graphs, temperature, 0)
    out, start = [], 0
    for atoms in structures:
        copy = atoms.copy()
        copy.calc = None
        copy.set_momenta(momenta[start:start + len(atoms)].numpy())
        start += len(atoms)
        out.append(copy)
    return out


def ours(model, structures: list[Atoms], steps: int, timestep_fs: float, device: str,
         max_atoms_per_call: int | str | None = "auto") -> float:
    """Atom-steps/s of run_md (NVE, no outputs, blow-up checks on)."""
    integrator = make_integrator("nve", timestep_fs=timestep_fs)
    lenient = BlowUpLimits(max_force=1e6, min_distance=0.0, max_energy_jump=1e6,
                           max_temperature_K=1e9, max_displacement=10.0)
    kwargs = dict(device=device, limits=lenient, max_atoms_per_call=max_atoms_per_call)
    run_md(model, structures, integrator, steps=2, **kwargs)  # warm-up
    result = run_md(model, structures, integrator, steps=steps,
                    outputs=MDOutputs(log_interval=steps), **kwargs)
    return result.atom_steps_per_s


def ase_loop(model, structures: list[Atoms], steps: int, timestep_fs: float, device: str) -> float:
    """Atom-steps/s of ASE VelocityVerlet with MLIPCalculator, one structure after the other."""
    calc = MLIPCalculator(model, device=device)
    atoms_steps, wall = 0, 0.0
    for atoms in structures:
        atoms = atoms.copy()
        atoms.calc = calc
        dynamics = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
        dynamics.run(2)  # warm-up (first neighbour list, first forces)
        start = time.perf_counter()
        dynamics.run(steps)
        wall += time.perf_counter() - start
        atoms_steps += len(atoms) * steps
    return atoms_steps / wall


def mace_peer(structures: dict[str, Atoms], steps: int, threads: int) -> dict[str, float]:
    """Atom-steps/s of ASE + MACECalculator per case (a different, heavier model), or {}."""
    if not MACE_PYTHON.exists():
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "cases.xyz")
        frames = []
        for name, atoms in structures.items():
            atoms = atoms.copy()
            atoms.info["case"] = name
            frames.append(atoms)
        ase.io.write(path, frames)
        env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}  # e3nn 0.4's own tables
        args = [str(MACE_PYTHON), "-c", _MACE_SCRIPT, path, str(steps), str(threads)]
        args += [str(k) for k in range(len(frames))]
        done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=1800)
    if done.returncode != 0:
        print(f"MACE peer failed: {done.stderr.strip().splitlines()[-1:]}")
        return {}
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_model(model, args: argparse.Namespace, steps: int, repeats: int) -> list[dict]:
    """Both sides on every case for one model (best of ``repeats`` alternating runs each);
    prints and returns the rows."""
    rows = []
    runs = [(name, structures, "auto") for name, structures in
            cases(args.molecules, args.cu).items()]
    if args.max_atoms_per_call != "none":  # the molecule batch again, another group size
        size = None if args.max_atoms_per_call == "all" else int(args.max_atoms_per_call)
        runs.insert(2, (f"{runs[1][0]}/{args.max_atoms_per_call}", runs[1][1], size))
    for name, structures, max_atoms in runs:
        structures = thermalised(structures, 300.0)
        timestep = 0.5 if name.startswith("3bpa") else 2.0
        n_steps = steps if sum(map(len, structures)) < 1000 else max(steps // 5, 5)
        rate_ours, rate_ase = 0.0, 0.0
        for _ in range(repeats):  # alternate the sides and keep the best of each (shared CPU)
            rate_ours = max(rate_ours, ours(model, structures, n_steps, timestep, args.device,
                                            max_atoms))
            rate_ase = max(rate_ase, ase_loop(model, structures[: args.ase_molecules], n_steps,
                                              timestep, args.device))
        n_atoms = sum(map(len, structures))
        rows.append({"case": name, "atoms": n_atoms, "steps": n_steps,
                     "max_atoms_per_call": max_atoms, "mlip_atom_steps_per_s": rate_ours,
                     "ase_atom_steps_per_s": rate_ase, "ratio": rate_ours / rate_ase})
        print(f"{name:>15} {n_atoms:>6} {rate_ours:>18.4g} {rate_ase:>17.4g} "
              f"{rate_ours / rate_ase:>6.2f}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="*", default=["lennard_jones", "facet-s"],
                        help="registry names, 'facet-s' or checkpoint paths")
    parser.add_argument("--hparams", help="JSON constructor arguments for a registry name")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"],
                        help="dtype of facet-s (the driver integrates in float64 either way)")
    parser.add_argument("--output", type=Path, default=None,
                        help=f"JSON results file (default {RESULTS.name}, or "
                             f"{RESULTS_COMPILED.name} with --compile)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the model (both sides use the compiled model)")
    parser.add_argument("--max-edges-per-block", type=int, default=None,
                        help="Facet: evaluate the convolutions on blocks of this many edges "
                             "(bounds GPU memory for large systems)")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--model-steps", type=int, default=10,
                        help="steps for models other than Lennard-Jones (slower per step)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="alternating runs per side for Lennard-Jones (best kept)")
    parser.add_argument("--molecules", type=int, default=64)
    parser.add_argument("--ase-molecules", type=int, default=4,
                        help="molecules ASE runs to measure its (per-molecule) rate")
    parser.add_argument("--cu", type=int, nargs="*", default=[256, 2048])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--max-atoms-per-call", default="all",
                        help="also run the molecule batch with this max_atoms_per_call: 'all' "
                             "(one call on the whole batch), a number of atoms, or 'none' to "
                             "skip the row")
    parser.add_argument("--mace-steps", type=int, default=5,
                        help="steps of the optional ASE+MACE peer (0 skips it)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {}
    for name in args.model:
        model = load_potential(name, args.hparams, args.device, getattr(torch, args.dtype))
        if args.max_edges_per_block is not None:
            model.set_max_edges_per_block(args.max_edges_per_block)
        if args.compile:
            model.enable_compile()
        cheap = name == "lennard_jones"
        steps, repeats = (args.steps, args.repeats) if cheap else (args.model_steps, 1)
        print(f"model {name}\n{'case':>15} {'atoms':>6} {'mlip atom-steps/s':>18} "
              f"{'ASE atom-steps/s':>17} {'ratio':>6}")
        results[name] = run_model(model, args, steps, repeats)
    singles = {name: structures[0] for name, structures in cases(1, args.cu[:1]).items()}
    mace = mace_peer(singles, args.mace_steps, args.threads) if args.mace_steps else {}
    for name, rate in mace.items():
        print(f"ASE + MACECalculator (random small MACE), {name}: {rate:.4g} atom-steps/s")
    args.output = args.output or (RESULTS_COMPILED if args.compile else RESULTS)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    meta = {"models": args.model, "device": args.device, "threads": args.threads,
            "torch": torch.__version__, "dtype": args.dtype,
            "max_edges_per_block": args.max_edges_per_block, "compile": args.compile,
            "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
            "repeats_lennard_jones": args.repeats,
            "note": "shared 2-core CPU, noisy; ratios from the same process, best of "
                    "alternating runs per side",
            "facet_note": f"facet-s preset, random weights, {args.dtype}, avg_num_neighbors 20",
            "mace_note": "ASE VelocityVerlet + MACECalculator, randomly initialised MACE "
                         "(2 layers, 32x0e+32x1o, L=3, r_max 5 A, float64), mace-torch 0.3.16 "
                         "in .venv-mace: a heavier model than the one above, for scale only"}
    args.output.write_text(json.dumps({"meta": meta, "rows": results,
                                   "ase_mace_atom_steps_per_s": mace}, indent=2) + "\n")
    print(f"saved {args.output}")


if __name__ == "__main__":
    main()

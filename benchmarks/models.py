"""Energy+forces throughput and peak memory: mlip models (by registry name) vs MACE, one table.

Each (model, system) case runs in its own subprocess (a clean peak-RSS measurement): mlip models
with this interpreter, MACE with ``.venv-mace/bin/python benchmarks/_mace_worker.py`` because
mace-torch pins e3nn 0.4.4 (the venv is created on first use). Cases run interleaved, so ratios
come from the same machine state: ``--rounds`` rounds each run every case once, in the same order,
and a row reports the median over the rounds (``ms_rounds`` keeps each round's time). On a shared
CPU the absolute numbers are noisy (±20 % or more). The table (benchmarks/results/models.json)
is always written from one complete run; a run with ``--only`` writes
benchmarks/results/models_only.json instead and never touches the table.
Systems: a rattled 256-atom fcc Cu cell and a batch of 3BPA molecules, r_c = 5 Å, float32.

    python benchmarks/models.py [--threads 2] [--repeats 3] [--rounds 3] [--molecules 8]
        [--only facet]

More models join the table through ``MLIP_CASES`` (registry name + hyper-parameters).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MACE_PYTHON = ROOT / ".venv-mace/bin/python"
CUTOFF = 5.0

#: label -> (registry name, hyper-parameters). Matched to MACE: same hidden irreps (where Facet's
#: parity rule allows), same SH degree, cutoff and number of interaction layers.
MLIP_CASES: dict[str, tuple[str, dict]] = {
    "facet 128x0e+128x1o L3": ("facet", dict(cutoff=CUTOFF, hidden_irreps="128x0e+128x1o",
                                             sh_lmax=3, num_layers=2)),
    "facet 128x0e+64x1o+32x2e L2 (paper)": ("facet", dict(cutoff=CUTOFF)),
    "facet-s": ("facet", dict(cutoff=CUTOFF, preset="facet-s")),
    "tdn L2 C64 (cp)": ("tdn", dict(cutoff=CUTOFF, lmax=2, channels=64, num_blocks=2, num_heads=4)),
    "equiformer_v3 L2 C64 mmax2": ("equiformer_v3", dict(
        cutoff=CUTOFF, num_layers=2, channels=64, lmax=2, mmax=2, num_heads=4, attn_hidden=32,
        attn_alpha_channels=16, attn_value_channels=16, ffn_hidden=128, num_rbf=16,
        edge_channels=32)),
}
MACE_CASES: dict[str, dict] = {
    "mace 128x0e L3": dict(hidden_irreps="128x0e", max_ell=3, correlation=3, num_interactions=2),
    "mace 128x0e+128x1o L3": dict(hidden_irreps="128x0e+128x1o", max_ell=3, correlation=3,
                                  num_interactions=2),
}
#: (ours, peer) rows whose throughput ratio is reported.
PAIRS = [("facet 128x0e+128x1o L3", "mace 128x0e+128x1o L3"),
         ("facet 128x0e+64x1o+32x2e L2 (paper)", "mace 128x0e L3"),
         ("facet-s", "mace 128x0e L3"),
         ("tdn L2 C64 (cp)", "mace 128x0e+128x1o L3"),
         ("equiformer_v3 L2 C64 mmax2", "mace 128x0e+128x1o L3")]


def write_systems(folder: Path, n_molecules: int) -> dict[str, Path]:
    """The benchmark structures as extxyz files both workers read."""
    import ase.build
    import ase.io

    cu = ase.build.bulk("Cu", "fcc", a=3.61, cubic=True) * (4, 4, 4)
    cu.rattle(0.05, seed=0)
    molecules = ase.io.read(ROOT / "data/bundled/3bpa_train_300K.xyz", index=f":{n_molecules}")
    paths = {"Cu 256 (PBC)": folder / "cu256.xyz", f"3BPA x{n_molecules}": folder / "3bpa.xyz"}
    ase.io.write(paths["Cu 256 (PBC)"], cu)
    ase.io.write(paths[f"3BPA x{n_molecules}"], [m.copy() for m in molecules])
    return paths


#: The MACE release every benchmark compares against (issue 16), and the torch both venvs use.
MACE_VERSION = "0.3.16"
TORCH_VERSION = "2.13.0"


def ensure_peer_venv(folder: str, package: str, version: str, extras: list[str]) -> Path:
    """Create ROOT/``folder`` with ``package==version`` and ``extras`` (torch pinned first and
    with every install, so pip never pulls another torch); refuse a venv that holds another
    version of ``package``. Returns its python."""
    venv = ROOT / folder
    python = venv / "bin/python"
    if not python.exists():
        subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin/pip"), "install", "-q"]
        subprocess.run(pip + [f"torch=={TORCH_VERSION}"], check=True)
        subprocess.run(pip + [f"torch=={TORCH_VERSION}", f"{package}=={version}"], check=True)
        if extras:
            subprocess.run(pip + [f"torch=={TORCH_VERSION}", *extras], check=True)
    found = subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
        capture_output=True, text=True, check=False).stdout.strip()
    if found != version:
        raise RuntimeError(f"{venv} holds {package} {found or '(none)'}, the benchmarks need "
                           f"{version}: delete the folder to rebuild it")
    return python


def ensure_mace_venv() -> None:
    """.venv-mace with ``mace-torch==MACE_VERSION``, ase and matscipy."""
    ensure_peer_venv(".venv-mace", "mace-torch", MACE_VERSION, ["ase", "matscipy"])


#: The torch-sim release the driver comparison runs against (issue 24), in its own venv.
TORCHSIM_VERSION = "0.3.0"
TORCHSIM_PYTHON = ROOT / ".venv-torchsim/bin/python"


#: The sevenn release whose SevenNet-0 weights benchmarks/foundation.py runs (mlip's pin).
SEVENN_VERSION = "0.13.0"


def ensure_peer_package(python: Path, package: str, version: str) -> None:
    """Install ``package==version`` into the venv of ``python`` when it lacks it (torch pinned
    in the same install, so pip never changes it); refuse another installed version."""
    probe = ("import importlib.metadata as m, sys\n"
             "try: print(m.version(sys.argv[1]))\n"
             "except m.PackageNotFoundError: pass")

    def installed() -> str:
        return subprocess.run([str(python), "-c", probe, package], capture_output=True,
                              text=True, check=True).stdout.strip()

    found = installed()
    if not found:
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"torch=={TORCH_VERSION}",
                        f"{package}=={version}"], check=True)
        found = installed()
    if found != version:
        raise RuntimeError(f"{python} has {package} {found or '(none)'}, the benchmarks need "
                           f"{version}: delete its venv to rebuild it")


def ensure_torchsim_venv(with_sevenn: bool = False) -> Path:
    """.venv-torchsim with ``torch-sim-atomistic==TORCHSIM_VERSION`` and mlip (editable), and
    with ``with_sevenn`` also ``sevenn==SEVENN_VERSION`` (for torch-sim's SevenNet model)."""
    python = ensure_peer_venv(".venv-torchsim", "torch-sim-atomistic", TORCHSIM_VERSION,
                              ["-e", str(ROOT)])
    if with_sevenn:
        ensure_peer_package(python, "sevenn", SEVENN_VERSION)
    return python


def run_case(label: str, structure: Path, args: argparse.Namespace) -> dict:
    """Run one case in a subprocess and return its JSON result."""
    common = dict(cutoff=CUTOFF, structure_file=str(structure), threads=args.threads,
                  repeats=args.repeats, dtype="float32", avg_num_neighbors=args.avg_neighbors)
    env = dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1", OMP_NUM_THREADS=str(args.threads))
    if label in MACE_CASES:
        command = [str(MACE_PYTHON), str(ROOT / "benchmarks/_mace_worker.py"),
                   json.dumps(dict(common, **MACE_CASES[label]))]
    else:
        name, hparams = MLIP_CASES[label]
        command = [sys.executable, str(ROOT / "benchmarks/_mlip_worker.py"),
                   json.dumps(dict(common, model=name, hparams=hparams, compile=args.compile))]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--molecules", type=int, default=8)
    parser.add_argument("--avg-neighbors", type=float, default=30.0)
    parser.add_argument("--compile", action="store_true", help="torch.compile the mlip models")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds over all cases; rows report the median")
    parser.add_argument("--only", default="", help="comma-separated substrings of case labels "
                        "(written to models_only.json, not to the table)")
    args = parser.parse_args()
    ensure_mace_venv()
    labels = [*MLIP_CASES, *MACE_CASES]
    if args.only:
        labels = [lab for lab in labels if any(s in lab for s in args.only.split(","))]
    runs: dict[str, dict[str, list[dict]]] = {}
    with tempfile.TemporaryDirectory() as folder:
        systems = write_systems(Path(folder), args.molecules)
        for round_ in range(args.rounds):
            for system, path in systems.items():
                for label in labels:
                    row = run_case(label, path, args)
                    runs.setdefault(system, {}).setdefault(label, []).append(row)
                    print_row(f"{system} r{round_ + 1}", label, row)
    results = {system: {label: median_row(rows) for label, rows in by_label.items()}
               for system, by_label in runs.items()}
    for system, rows in results.items():
        for label, row in rows.items():
            print_row(system, label, row)
    name = "models_only.json" if args.only else "models.json"
    out = ROOT / "benchmarks/results" / name
    ratios = report_ratios(results)
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M"), "settings": vars(args),
                               "results": results, "ratios": ratios}, indent=1))
    print(f"wrote {out}")


def median_row(rows: list[dict]) -> dict:
    """One case over the rounds: the round with the median time, with every round's time (an
    error if any round failed)."""
    failed = [r for r in rows if "error" in r]
    if failed:
        return failed[0]
    ordered = sorted(rows, key=lambda r: r["ms"])
    return {**ordered[(len(ordered) - 1) // 2], "ms_rounds": [r["ms"] for r in rows]}


def print_row(system: str, label: str, row: dict) -> None:
    if "error" in row:
        print(f"{system:<14} {label:<38} ERROR {row['error']}", flush=True)
        return
    print(f"{system:<14} {label:<38} {row['params']:>9,d} params {row['ms']:>9.1f} ms "
          f"{row['atom_steps_per_s']:>9.0f} atom-steps/s {row['peak_mb']:>7.0f} MB peak",
          flush=True)


def report_ratios(results: dict[str, dict[str, dict]]) -> list[dict]:
    """Throughput and parameter ratios ours/peer for :data:`PAIRS`."""
    ratios = []
    for system, rows in results.items():
        for ours, peer in PAIRS:
            a, b = rows.get(ours, {}), rows.get(peer, {})
            if "ms" in a and "ms" in b:
                ratio = {"system": system, "ours": ours, "peer": peer,
                         "speedup": b["ms"] / a["ms"], "param_ratio": a["params"] / b["params"],
                         "memory_ratio": a["peak_mb"] / max(b["peak_mb"], 1e-9)}
                ratios.append(ratio)
                print(f"{system:<14} {ours} vs {peer}: {ratio['speedup']:.2f}x throughput, "
                      f"{ratio['param_ratio']:.2f}x params, "
                      f"{ratio['memory_ratio']:.2f}x peak memory")
    return ratios


if __name__ == "__main__":
    main()

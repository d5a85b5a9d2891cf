"""Accuracy at equal wall-clock budgets: every mlip family and MACE, from scratch, same splits.

Datasets (from ``../shared/data``, see its MANIFEST.md): 3BPA 300 K (E0 = its isolated atoms),
rMD17 aspirin and mlearn Si (energy, forces, stress). Without isolated atoms E0 is the
least-squares fit of energy on composition over the training split, minimum-norm where the
compositions do not separate the elements (aspirin: one molecule; the numpy solution, as MACE's
``E0s="average"``), computed here once and given to every code as explicit values.
Each dataset gets one fixed seeded split (:data:`DATASETS`): a test split that is never used for
any choice (recipes, checkpoint selection, schedules), a validation split (checkpoint selection,
recipe tuning) and the training split. The test split is only read after a training has ended.

Codes: ``facet``, ``tdn`` and ``equiformer_v3`` with their shipped configs
(``mlip/configs/NAME.yaml``: model, cutoff, batch size, lr, loss) with the data replaced, and
MACE (``mace-torch==0.3.16`` in ``.venv-mace``, built by benchmarks/models.py) through
``benchmarks/_mace_train_worker.py`` (32x0e+32x1o, L=2, correlation 3, 2 layers, r_c 5 Å,
batch 5, lr 0.01: its 3BPA recipe at a CPU size). Every code gets the same loss weights
(1·MSE(E/N) + 100·MSE(F) + 1·MSE(σ)), Adam+AMSGrad, clip 10, EMA 0.99, the best EMA weights by
validation loss, float32, one thread, and the same schedule, chosen with ``--schedules``:
``cosine`` (decay to 1 % sized to the budget from the mean step rate after the first epoch or
200 steps and again after every epoch: mlip's ``schedule.fit_to_time``, reimplemented in the MACE
worker with the same formula)
or ``plateau`` (×0.8 after ``--plateau-patience`` epochs without a better validation loss:
mlip's plateau schedule and torch's ReduceLROnPlateau, MACE's default).

``--stage-two 0.8`` adds MACE's second stage to every code for the last 20 % of the budget
(energy weight 1000, constant lr 1e-3, best model chosen on that stage's validation loss; mlip's
``stage_two`` config section, reimplemented in the MACE worker); off by default.

Budgets: ``--budgets 240 900`` s (3600 optional); two trainings run at a time (``--parallel 2``,
each a separate process with one thread) on the 2 cores, in an interleaved order (the codes of
one dataset and budget run next to each other), so ratios compare trainings that saw the same
machine state. During training each code saves its EMA weights at log-spaced times (budget/64 …
budget/2); after the budget they and the final weights are evaluated on the test split, which
gives the learning curve (test force RMSE vs training time, log-log, one PNG per dataset).

``--extra-test DATASET=NAME=PATH`` adds a second held-out set for a dataset (e.g. 3BPA frames
sampled at 300–1200 K: ``3bpa=mixedT=train_mixedT.xyz`` of the BOTNet-datasets repository,
``dataset_3BPA/``, commit 29e6d46); frames that also occur in the dataset's source file are
dropped, and each code's selected model is tested on it too (``extra_NAME_*_rmse`` columns).

Reported per (dataset, budget, schedule, code): test E RMSE (meV/atom), F RMSE (meV/Å), stress
RMSE (meV/Å³, 9 components), parameters, epochs and steps, and the force RMSE over MACE's.
The JSON (``--out``, default benchmarks/results/accuracy.json) holds exactly one run of this
script; nothing is merged from earlier runs.

    python benchmarks/accuracy.py [--budgets 240 900] [--datasets 3bpa aspirin si]
        [--families facet tdn equiformer_v3 mace] [--schedules cosine] [--parallel 2]
        [--out benchmarks/results/accuracy.json] [--plots-dir benchmarks/results]

The shared CPU makes absolute numbers noisy; the same command on a quiet machine is the
reference. Smoke test: ``--budgets 20 --datasets 3bpa --families facet --out /tmp/a.json
--plots-dir /tmp``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(Path(__file__).resolve().parent))  # not first: lammps.py here

#: name -> source file, isolated-atom file (None: least-squares E0), test and validation sizes,
#: and the split seed. Fixed: changing them changes what the table measures.
DATASETS: dict[str, dict[str, Any]] = {
    "3bpa": {"file": "3bpa/3bpa_train_300K.xyz", "isolated_atoms": "3bpa/3bpa_iso_atoms.xyz",
             "n_test": 100, "n_valid": 50, "seed": 16},
    "aspirin": {"file": "rmd17_aspirin/rmd17_aspirin_train.xyz", "isolated_atoms": None,
                "n_test": 200, "n_valid": 50, "seed": 16},
    "si": {"file": "mlearn/mlearn_Si_train.xyz", "isolated_atoms": None,
           "n_test": 40, "n_valid": 20, "seed": 16},
}
MLIP_FAMILIES = ("facet", "tdn", "equiformer_v3")
#: The shared recipe (loss, optimiser, EMA) every code gets.
RECIPE = {"energy_weight": 1.0, "forces_weight": 100.0, "stress_weight": 1.0,
          "ema_decay": 0.99, "weight_decay": 5.0e-7, "min_lr_ratio": 0.01,
          "plateau_factor": 0.8}
#: MACE's size and step settings (its 3BPA recipe, CPU-sized).
MACE_CASE = {"hidden_irreps": "32x0e+32x1o", "max_ell": 2, "correlation": 3,
             "num_interactions": 2, "cutoff": 5.0, "batch_size": 5, "lr": 0.01}
#: Stage two (``--stage-two FRACTION``): the same for every code.
STAGE_TWO = {"energy_weight": 1000.0, "lr": 1.0e-3}
#: Snapshots for the learning curve at budget / 2**k, k = SNAPSHOT_HALVINGS … 1.
SNAPSHOT_HALVINGS = 6


# ---------------------------------------------------------------------- splits
def write_splits(data_dir: Path, folder: Path, names: list[str],
                 extra_tests: dict[str, dict[str, Path]] | None = None) -> dict[str, dict]:
    """The fixed train/valid/test extxyz files of each dataset, with their sizes and a hash
    of the test frames (so runs can prove they used the same test split); ``extra_tests``
    ({dataset: {name: path}}) are written alongside without the frames of the source file."""
    import ase.io
    import numpy as np

    out = {}
    for name in names:
        spec = DATASETS[name]
        frames = ase.io.read(data_dir / spec["file"], index=":")
        order = np.random.default_rng(spec["seed"]).permutation(len(frames))
        n_test, n_valid = spec["n_test"], spec["n_valid"]
        parts = {"test": order[:n_test], "valid": order[n_test:n_test + n_valid],
                 "train": order[n_test + n_valid:]}
        paths = {}
        for part, index in parts.items():
            paths[part] = folder / name / f"{part}.xyz"
            paths[part].parent.mkdir(parents=True, exist_ok=True)
            ase.io.write(paths[part], [frames[i] for i in index])
        iso = spec["isolated_atoms"]
        out[name] = {
            "paths": {k: str(v) for k, v in paths.items()},
            "isolated_atoms": str(data_dir / iso) if iso else None,
            "e0": None if iso else least_squares_e0([frames[i] for i in parts["train"]]),
            "sizes": {k: len(v) for k, v in parts.items()},
            "test_sha256": hashlib.sha256(paths["test"].read_bytes()).hexdigest(),
            "stress": bool(frames[0].pbc.all()),
            "extra_tests": {},
        }
        for extra, source in (extra_tests or {}).get(name, {}).items():
            kept = unseen_frames(ase.io.read(source, index=":"), frames)
            path = folder / name / f"extra_{extra}.xyz"
            ase.io.write(path, kept)
            out[name]["extra_tests"][extra] = {"path": str(path), "frames": len(kept),
                                               "sha256": hashlib.sha256(path.read_bytes())
                                               .hexdigest()}
    return out


def unseen_frames(candidates: list, seen: list, tolerance: float = 1e-6) -> list:
    """The frames of ``candidates`` whose positions (Å) match no frame of ``seen``."""
    import numpy as np

    by_size: dict[int, list] = {}
    for atoms in seen:
        by_size.setdefault(len(atoms), []).append(atoms.positions)
    return [atoms for atoms in candidates
            if not any(np.allclose(atoms.positions, other, atol=tolerance, rtol=0.0)
                       for other in by_size.get(len(atoms), []))]


def parse_extra_tests(items: list[str]) -> dict[str, dict[str, Path]]:
    """``["DATASET=NAME=PATH", ...]`` as {dataset: {name: path}}, refusing unknown datasets."""
    out: dict[str, dict[str, Path]] = {}
    for item in items:
        parts = item.split("=", 2)
        if len(parts) != 3 or parts[0] not in DATASETS or not Path(parts[2]).is_file():
            raise SystemExit(f"--extra-test {item!r}: expected DATASET=NAME=PATH with DATASET "
                             f"in {sorted(DATASETS)} and an existing file")
        out.setdefault(parts[0], {})[parts[1]] = Path(parts[2])
    return out


def least_squares_e0(frames: list) -> dict[str, float]:
    """{symbol: E0 (eV)} minimising Σ (E − Σ_Z n_Z E0_Z)² over ``frames``; the minimum-norm
    solution when the compositions do not determine every E0."""
    import numpy as np
    from ase.data import chemical_symbols

    zs = sorted({int(z) for atoms in frames for z in atoms.numbers})
    counts = np.array([[np.sum(atoms.numbers == z) for z in zs] for atoms in frames], float)
    energies = np.array([atoms.get_potential_energy() for atoms in frames])
    solution = np.linalg.lstsq(counts, energies, rcond=None)[0]
    return {chemical_symbols[z]: float(e) for z, e in zip(zs, solution)}


# ---------------------------------------------------------------------- jobs
def snapshot_times(budget: float) -> list[float]:
    return [budget / 2**k for k in range(SNAPSHOT_HALVINGS, 0, -1)]


def make_jobs(args: argparse.Namespace, splits: dict, work: Path) -> list[dict]:
    """One job per (dataset, budget, schedule, code); the codes of a case are adjacent so the
    two workers always run trainings of the same case side by side."""
    jobs = []
    for budget in args.budgets:
        for dataset in args.datasets:
            for schedule in args.schedules:
                for family in args.families:
                    run_dir = work / f"{dataset}_{budget:g}s_{schedule}_{family}"
                    jobs.append({"dataset": dataset, "budget_s": budget, "schedule": schedule,
                                 "family": family, "run_dir": str(run_dir),
                                 "split": splits[dataset], "seed": args.seed,
                                 "plateau_patience": args.plateau_patience,
                                 "stage_two": ({**STAGE_TWO, "start_fraction": args.stage_two}
                                               if args.stage_two else None)})
    return jobs


def run_job(job: dict) -> dict:
    """Train and test one job in its own one-thread process; its JSON result (or the error)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")
    if job["family"] == "mace":
        from models import MACE_PYTHON

        command = [str(MACE_PYTHON), str(ROOT / "benchmarks/_mace_train_worker.py"),
                   json.dumps(mace_case(job))]
    else:
        command = [sys.executable, __file__, "--worker", json.dumps(job)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    row = {k: job[k] for k in ("dataset", "budget_s", "schedule", "family")}
    row["wall_s"] = time.perf_counter() - start
    if done.returncode:
        return {**row, "error": done.stderr.strip()[-2000:] or "failed"}
    return {**row, **json.loads(done.stdout.strip().splitlines()[-1])}


def mace_case(job: dict) -> dict:
    """The MACE worker's case for ``job``."""
    split = job["split"]
    return {**MACE_CASE, **RECIPE, **split["paths"], "isolated_atoms": split["isolated_atoms"],
            "extra_tests": {k: v["path"] for k, v in split["extra_tests"].items()},
            "e0": split["e0"], "stage_two": job["stage_two"],
            "budget_s": job["budget_s"], "schedule": job["schedule"], "threads": 1,
            "seed": job["seed"], "dtype": "float32", "max_epochs": 100_000,
            "plateau_patience": job["plateau_patience"], "run_dir": job["run_dir"],
            "snapshot_s": snapshot_times(job["budget_s"]),
            "stress_weight": RECIPE["stress_weight"] if split["stress"] else 0.0}


# ---------------------------------------------------------------------- the mlip worker
def mlip_config(job: dict) -> dict:
    """The family's shipped config with the job's data, budget, schedule and the shared recipe."""
    import yaml

    from mlip.train.config import shipped_config

    config = yaml.safe_load(shipped_config(job["family"]).read_text())
    split = job["split"]
    # no data.test: the test split is read by the worker after training, never by the run
    config["data"].update(train=split["paths"]["train"], valid=split["paths"]["valid"],
                          test_fraction=0.0, split_seed=0)
    config["data"].pop("valid_fraction", None)
    if split["isolated_atoms"]:
        config["data"].update(isolated_atoms=split["isolated_atoms"], e0="isolated")
    else:
        config["data"].pop("isolated_atoms", None)
        config["data"]["e0"] = dict(split["e0"])
    config["loss"] = {"energy_weight": RECIPE["energy_weight"],
                      "forces_weight": RECIPE["forces_weight"],
                      "stress_weight": RECIPE["stress_weight"], "kind": "mse"}
    config["ema"] = {"decay": RECIPE["ema_decay"]}
    config["optimizer"].update(weight_decay=RECIPE["weight_decay"], amsgrad=True,
                               clip_grad_norm=10.0)
    if job["schedule"] == "cosine":
        config["schedule"] = {"name": "cosine", "min_lr_ratio": RECIPE["min_lr_ratio"],
                              "fit_to_time": True}
    else:
        config["schedule"] = {"name": "plateau", "plateau_factor": RECIPE["plateau_factor"],
                              "plateau_patience": job["plateau_patience"]}
    if job["stage_two"]:
        config["stage_two"] = {**job["stage_two"], "schedule": "constant"}
    config["train"] = {"max_time_s": job["budget_s"], "max_epochs": 100_000, "progress": False,
                       "checkpoint_every_steps": 100_000}
    config.update(device="cpu", dtype="float32", seed=job["seed"])
    return config


def test_errors(model_path: Path, labelled: str | Path, stress: bool,
                dtype: Any = None) -> dict[str, float]:
    """E (meV/atom), F (meV/Å) and stress (meV/Å³) RMSE of a saved potential on the labelled
    frames of a file (``dtype``: evaluate in it, e.g. torch.float64; default the saved dtype)."""
    from mlip.models import load_model
    from mlip.train.data import source_split
    from mlip.train.evaluate import evaluate
    from mlip.train.loss import LossConfig

    model = load_model(model_path, dtype=dtype)
    frames = source_split(labelled, model.cutoff)
    summary = evaluate(model, frames, LossConfig(), compute_stress=stress).summary()
    return {f"{t}_rmse": summary[f"{t}_rmse"] for t in ("energy", "forces", "stress")}


def mlip_worker(job: dict) -> None:
    """Train one mlip family (EMA snapshots at the job's times), then test: one JSON line."""
    import torch

    import mlip.train.api as api
    from mlip.models import load_model
    from mlip.train.loop import Trainer
    from mlip.train.records import read_metrics

    torch.set_num_threads(1)
    run_dir = Path(job["run_dir"])
    pending = snapshot_times(job["budget_s"])
    snapshots: list[dict] = []

    class SnapshotTrainer(Trainer):
        """Exports the EMA weights when the training clock passes each snapshot time."""

        def _log_step(self, loss: float, lr: float) -> None:
            super()._log_step(loss, lr)
            now = self.progress.elapsed_s
            if pending and now >= pending[0]:
                path = run_dir / f"snapshot_{len(snapshots):02d}.pt"
                self._export(path)
                snapshots.append({"time_s": now, "step": self.progress.step, "path": str(path)})
                while pending and now >= pending[0]:
                    pending.pop(0)

    api.Trainer = SnapshotTrainer
    config = mlip_config(job)
    best = api.train(config, run_dir)
    rows = read_metrics(run_dir)
    test_frames = job["split"]["paths"]["test"]
    stress = job["split"]["stress"]

    def test(path: Path, labelled: str | Path = test_frames) -> dict:
        return {f"test_{t}": v for t, v in test_errors(path, labelled, stress).items()}

    last = rows[-1]
    curve = [{"time_s": s["time_s"], "step": s["step"], **test(Path(s["path"]))}
             for s in snapshots]
    curve.append({"time_s": last["time_s"], "step": last["step"], **test(run_dir / "final.pt")})
    extra = {}
    for name, spec in job["split"]["extra_tests"].items():
        scores = test(best, spec["path"])
        extra.update({f"extra_{name}_{k[5:]}": v for k, v in scores.items()})
    model = load_model(best)
    n_train = job["split"]["sizes"]["train"]
    per_epoch = -(-n_train // int(config["data"]["batch_size"]))
    print(json.dumps({
        "params": sum(p.numel() for p in model.parameters()),
        "epochs": last["step"] / per_epoch, "full_epochs": last["epoch"], "steps": last["step"],
        "train_s": last["time_s"], **test(best), **extra, "curve": curve,
        "e0": "isolated atoms" if job["split"]["isolated_atoms"] else job["split"]["e0"],
        "final_lr": last["lr"], "stage_two": last.get("stage") == 2,
    }))


# ---------------------------------------------------------------------- report
def ratios(rows: list[dict]) -> list[dict]:
    """Force (and energy) RMSE of every mlip row over the MACE row of the same case."""
    out = []
    key = ("dataset", "budget_s", "schedule")
    mace = {tuple(r[k] for k in key): r for r in rows if r["family"] == "mace" and "error" not in r}
    for row in rows:
        peer = mace.get(tuple(row[k] for k in key))
        if row["family"] == "mace" or peer is None or "error" in row:
            continue
        extra = {f"{k[:-len('_forces_rmse')]}_forces_rmse_over_mace": v / peer[k]
                 for k, v in row.items()
                 if k.startswith("extra_") and k.endswith("_forces_rmse") and peer.get(k)}
        out.append({**{k: row[k] for k in key}, "family": row["family"],
                    "forces_rmse_over_mace": row["test_forces_rmse"] / peer["test_forces_rmse"],
                    "energy_rmse_over_mace": row["test_energy_rmse"] / peer["test_energy_rmse"],
                    **extra})
    return out


def print_table(rows: list[dict]) -> None:
    print(f"{'dataset':8s} {'budget':>6s} {'schedule':8s} {'code':14s} {'params':>8s} "
          f"{'epochs':>7s} {'E meV/at':>9s} {'F meV/Å':>8s} {'S meV/Å³':>9s}")
    for r in rows:
        head = f"{r['dataset']:8s} {r['budget_s']:6g} {r['schedule']:8s} {r['family']:14s}"
        if "error" in r:
            print(f"{head} ERROR {r['error'].splitlines()[-1]}")
            continue
        stress = r.get("test_stress_rmse", math.nan)
        extra = "".join(f" {k[6:-12]} F {v:.2f}" for k, v in r.items()
                        if k.startswith("extra_") and k.endswith("_forces_rmse"))
        print(f"{head} {r['params']:8d} {r['epochs']:7.1f} {r['test_energy_rmse']:9.2f} "
              f"{r['test_forces_rmse']:8.2f} {stress:9.2f}{extra}")


def plot_curves(rows: list[dict], folder: Path) -> list[str]:
    """One log-log PNG per dataset: test force RMSE vs training time, a line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for dataset in sorted({r["dataset"] for r in rows}):
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for r in rows:
            if r["dataset"] != dataset or "error" in r:
                continue
            points = [(c["time_s"], c["test_forces_rmse"]) for c in r["curve"]
                      if c["time_s"] > 0 and math.isfinite(c["test_forces_rmse"])]
            if points:
                ax.plot(*zip(*points), marker="o",
                        label=f"{r['family']} {r['schedule']} {r['budget_s']:g} s")
        ax.set(xscale="log", yscale="log", xlabel="training time (s)",
               ylabel="test force RMSE (meV/Å)", title=f"{dataset}: test forces vs time")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        path = folder / f"accuracy_{dataset}.png"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        written.append(str(path))
    return written


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities as None (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        mlip_worker(json.loads(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=[240.0, 900.0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--families", nargs="+", default=[*MLIP_FAMILIES, "mace"],
                        choices=[*MLIP_FAMILIES, "mace"])
    parser.add_argument("--schedules", nargs="+", default=["cosine"],
                        choices=["cosine", "plateau"])
    parser.add_argument("--plateau-patience", type=int, default=5)
    parser.add_argument("--stage-two", type=float, default=None, metavar="FRACTION",
                        help="stage two for every code from this fraction of the budget")
    parser.add_argument("--parallel", type=int, default=2, help="trainings at a time")
    parser.add_argument("--seed", type=int, default=0, help="weights and batch order")
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared/data")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--extra-test", nargs="+", default=[], metavar="DATASET=NAME=PATH",
                        help="a further held-out set for a dataset (its training frames removed)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/accuracy.json")
    parser.add_argument("--plots-dir", type=Path, default=ROOT / "benchmarks/results")
    args = parser.parse_args()
    if "mace" in args.families:
        from models import ensure_mace_venv

        ensure_mace_venv()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work_dir or Path(tmp)
        splits = write_splits(args.data_dir, work / "splits", args.datasets,
                              parse_extra_tests(args.extra_test))
        jobs = make_jobs(args, splits, work / "runs")
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.parallel) as pool:
            rows = list(pool.map(run_job, jobs))
    print_table(rows)
    args.plots_dir.mkdir(parents=True, exist_ok=True)
    plots = plot_curves(rows, args.plots_dir)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    result = {"started": started, "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
              "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
              "settings": settings, "recipe": RECIPE, "mace": MACE_CASE,
              "splits": {k: {kk: v[kk] for kk in ("sizes", "test_sha256", "isolated_atoms", "e0",
                                                   "extra_tests")}
                         for k, v in splits.items()},
              "results": rows, "ratios": ratios(rows), "plots": plots}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(_finite(result), indent=1))
    print(f"wrote {args.out} and {', '.join(plots)}")


if __name__ == "__main__":
    main()

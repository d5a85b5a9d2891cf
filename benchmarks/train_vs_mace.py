"""Accuracy at equal wall-clock budget: mlip (Facet, shipped config) vs MACE on the same 3BPA split.

Both train from scratch on the same frames of the bundled 3BPA 300 K set (default split
400 / 50 / 50, seeded) with the same wall-clock budget and thread count, one after the other
in one run of this script. Shared recipe: E0 = isolated-atom energies, scale = force RMS,
loss 1·MSE(E/N) + 100·MSE(F), Adam+AMSGrad, grad clip 10, EMA 0.99, best EMA weights by
validation loss. Each code keeps its own step settings: mlip the shipped
``mlip/configs/facet.yaml`` (cutoff 4 Å, batch 2, lr 0.02, cosine decay fitted to the budget),
MACE its 3BPA paper recipe (batch 5, lr 0.01) at its paper cutoff of 5 Å and again at Facet's
4 Å (``--mace-cutoffs``; each MACE run gets the average neighbour count at its own cutoff).
MACE runs in ``.venv-mace`` (created by benchmarks/models.py on first use) through
``benchmarks/_mace_train_worker.py``. Reports test energy RMSE (meV/atom), force RMSE (meV/Å),
time per epoch and epochs completed, and the ratio to the best MACE run.

The CPU is shared with other work, so timings are noisy; with other processes running, two
OpenMP threads per code can be many times slower than one (every small op waits for a
descheduled thread), hence the default of one thread.

    python benchmarks/train_vs_mace.py [--budget-s 240] [--threads 1] [--skip-mace]

Published 3BPA 300 K force RMSE (full training on GPU), meV/Å: ACE 27.1, NequIP 10.8, MACE 8.8.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import ase.io
import numpy as np
import torch
import yaml
from ase.neighborlist import neighbor_list

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import MACE_PYTHON, ensure_mace_venv  # noqa: E402

from mlip.models import load_model  # noqa: E402
from mlip.train import train  # noqa: E402
from mlip.train.config import shipped_config  # noqa: E402
from mlip.train.data import load_frameset, read_frames  # noqa: E402
from mlip.train.evaluate import evaluate  # noqa: E402
from mlip.train.loss import LossConfig  # noqa: E402
from mlip.train.records import read_metrics  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "data/bundled"


def write_split(folder: Path, n_valid: int, n_test: int, seed: int) -> dict[str, Path]:
    """Seeded train/valid/test extxyz files from the bundled 3BPA set."""
    frames = ase.io.read(BUNDLED / "3bpa_train_300K.xyz", index=":")
    order = np.random.default_rng(seed).permutation(len(frames))
    parts = {
        "test": order[:n_test],
        "valid": order[n_test : n_test + n_valid],
        "train": order[n_test + n_valid :],
    }
    paths = {}
    for name, idx in parts.items():
        paths[name] = folder / f"{name}.xyz"
        ase.io.write(paths[name], [frames[i] for i in idx])
    return paths


def run_mlip(paths: dict[str, Path], args: argparse.Namespace, folder: Path) -> dict:
    """Train with the shipped facet.yaml (budget and data replaced) and test the best model."""
    config = yaml.safe_load(shipped_config("facet").read_text())
    config["data"].update(
        train=str(paths["train"]),
        valid=str(paths["valid"]),
        test=str(paths["test"]),
        isolated_atoms=str(BUNDLED / "3bpa_iso_atoms.xyz"),
    )
    config["train"].update(max_time_s=args.budget_s, max_epochs=10_000, progress=False)
    config["device"] = "cpu"
    best = train(config, folder / "mlip_run")
    rows = read_metrics(folder / "mlip_run")
    model = load_model(best)
    test = load_frameset(read_frames(paths["test"]), model.cutoff, "test")
    summary = evaluate(model, test, LossConfig()).summary()
    n_train = len(ase.io.read(paths["train"], index=":"))
    steps_per_epoch = -(-n_train // int(config["data"]["batch_size"]))
    last = rows[-1]
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "epochs": last["step"] / steps_per_epoch,
        "steps": last["step"],
        "train_s": last["time_s"],
        "s_per_epoch": last["time_s"] / (last["step"] / steps_per_epoch),
        "test_energy_rmse": summary["energy_rmse"],
        "test_forces_rmse": summary["forces_rmse"],
        "model": dict(config["model"]),
        "batch_size": int(config["data"]["batch_size"]),
        "lr": float(config["optimizer"]["lr"]),
    }


def average_neighbors(path: Path, cutoff: float) -> float:
    """Mean number of neighbours within ``cutoff`` Å over the frames of ``path``."""
    frames = ase.io.read(path, index=":")
    edges = sum(len(neighbor_list("i", atoms, cutoff)) for atoms in frames)
    return edges / sum(len(atoms) for atoms in frames)


def run_mace(paths: dict[str, Path], args: argparse.Namespace, cutoff: float) -> dict:
    """Train MACE in its venv with the matched size and recipe at ``cutoff`` Å."""
    ensure_mace_venv()
    avg_neighbors = average_neighbors(paths["train"], cutoff)
    case = {
        "train": str(paths["train"]),
        "valid": str(paths["valid"]),
        "test": str(paths["test"]),
        "isolated_atoms": str(BUNDLED / "3bpa_iso_atoms.xyz"),
        "budget_s": args.budget_s,
        "threads": args.threads,
        "seed": args.seed,
        "dtype": "float32",
        "cutoff": cutoff,
        "hidden_irreps": "32x0e+32x1o",
        "max_ell": 2,
        "correlation": 3,
        "num_interactions": 2,
        "avg_num_neighbors": avg_neighbors,
        "batch_size": 5,
        "lr": 0.01,
        "ema_decay": 0.99,
        "energy_weight": 1.0,
        "forces_weight": 100.0,
    }
    env = dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1", OMP_NUM_THREADS=str(args.threads))
    result = subprocess.run(
        [str(MACE_PYTHON), str(ROOT / "benchmarks/_mace_train_worker.py"), json.dumps(case)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"MACE worker failed:\n{result.stderr[-3000:]}")
    out = json.loads(result.stdout.strip().splitlines()[-1])
    out["model"] = {
        k: case[k]
        for k in ("hidden_irreps", "max_ell", "correlation", "num_interactions", "cutoff")
    }
    out.update(batch_size=case["batch_size"], lr=case["lr"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--budget-s", type=float, default=240.0, help="training wall time per code, s"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-valid", type=int, default=50)
    parser.add_argument("--n-test", type=int, default=50)
    parser.add_argument("--skip-mace", action="store_true")
    parser.add_argument(
        "--mace-cutoffs",
        type=float,
        nargs="+",
        default=[5.0, 4.0],
        help="MACE is trained once per cutoff (5 Å: its 3BPA recipe; 4 Å: Facet's)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = write_split(folder, args.n_valid, args.n_test, args.seed)
        results["mlip facet"] = run_mlip(paths, args, folder)
        if not args.skip_mace:
            for cutoff in args.mace_cutoffs:
                results[f"mace r{cutoff:g}"] = run_mace(paths, args, cutoff)
    print(
        f"3BPA 300 K, {args.budget_s:.0f} s training budget each, {args.threads} threads "
        "(shared CPU: noisy)"
    )
    print(
        f"{'code':12s} {'params':>8s} {'epochs':>7s} {'s/epoch':>8s} {'E RMSE meV/atom':>16s} "
        f"{'F RMSE meV/Å':>13s}"
    )
    for name, r in results.items():
        print(
            f"{name:12s} {r['params']:8d} {r['epochs']:7.2f} {r['s_per_epoch']:8.1f} "
            f"{r['test_energy_rmse']:16.2f} {r['test_forces_rmse']:13.2f}"
        )
    ours = results["mlip facet"]
    peers = {name: r for name, r in results.items() if name.startswith("mace")}
    if peers:
        best_name = min(peers, key=lambda name: peers[name]["test_forces_rmse"])
        best = peers[best_name]
        results["ratios"] = {
            "best_mace": best_name,
            "forces_rmse_ours_over_best_mace": ours["test_forces_rmse"] / best["test_forces_rmse"],
            "s_per_epoch_ours_over_best_mace": ours["s_per_epoch"] / best["s_per_epoch"],
        }
        print(
            f"force RMSE ours / best MACE ({best_name}) = "
            f"{results['ratios']['forces_rmse_ours_over_best_mace']:.2f}; time per epoch "
            f"ratio = {results['ratios']['s_per_epoch_ours_over_best_mace']:.2f}"
        )
    results["settings"] = vars(args)
    out = ROOT / "benchmarks/results/train_vs_mace.json"
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

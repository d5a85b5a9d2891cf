"""``mlip demo``: the README's main command — the whole story on the bundled 3BPA data.

1. import the bundled DFT frames into a snapshot store;
2. train the example Facet potential on it (reused when the run already finished);
3. relax a structure with FIRE;
4. run a short batched NVT (Langevin) MD and an NVE check of energy conservation;
5. plot the learning curves and the thermo log, and print where everything is.
"""

from __future__ import annotations

import argparse
import logging
import time
from importlib import resources
from pathlib import Path

import ase.io
import numpy as np
import torch

from mlip.data import SnapshotStore, import_files
from mlip.md import MDOutputs, make_integrator, nve_conservation, plot_thermo, run_md, run_relax
from mlip.models import load_model
from mlip.settings import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, Group, Setting
from mlip.train import shipped_config, train
from mlip.train.plot import plot_learning_curves

log = logging.getLogger("mlip.demo")

DATASET = "3bpa_train_300K.xyz"
ISOLATED_ATOMS = "3bpa_iso_atoms.xyz"


SETTINGS = Group("mlip demo", (
    Setting("--out", (str,), "mlip-demo", "output folder", flags=("-o",)),
    Setting("--train-seconds", (float,), 150.0, "wall-clock budget of the training loop",
            unit="s", range=POSITIVE),
    Setting("--md-steps", (int,), 2000, "NVT steps (0.5 fs each)", range=NON_NEGATIVE),
    Setting("--replicas", (int,), 4, "molecules simulated as one batch", range=AT_LEAST_ONE),
    Setting("--retrain", (bool,), False, "train again even if a model exists"),
))

GROUPS = (SETTINGS,)


def bundled_path(name: str) -> str:
    """Path of a file shipped in :mod:`mlip.data.bundled`."""
    return str(resources.files("mlip.data.bundled").joinpath(name))


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` verb."""
    parser = subparsers.add_parser(
        "demo",
        help="import → train → relax → MD on the bundled 3BPA data",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    SETTINGS.add_arguments(parser)
    parser.set_defaults(func=SETTINGS.bind(run))


def run(args: argparse.Namespace) -> int:
    """Run the demo; returns 0 on success, 2 when MD stopped some molecule (blow-up)."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    store = _import(out / "3bpa.h5")
    model_path = _train(store, out / "train", args.train_seconds, args.retrain)
    relaxed = _relax(model_path, out / "relaxed.xyz")
    md_files, md_failures = _md(model_path, relaxed, out, args.md_steps, args.replicas)
    drift = nve_conservation(
        load_model(model_path, dtype=torch.float64),
        relaxed,
        timestep_fs=0.5,
        duration_fs=500.0,
        temperature_K=300.0,
    )
    print("\nmlip demo finished in %.0f s" % (time.perf_counter() - started))
    print(f"  snapshot store        {store}   (`mlip data info {store}`)")
    print(f"  trained potential     {model_path}")
    print(f"  learning curves       {plot_learning_curves(out / 'train')}")
    print(f"  relaxed structure     {out / 'relaxed.xyz'}")
    for label, path in md_files.items():
        print(f"  {label:<21} {path}")
    print(
        f"  NVE check (0.5 fs, 0.5 ps): drift {drift.drift_meV_per_atom_ps:.4f} meV/atom/ps, "
        f"fluctuation {drift.fluctuation_meV_per_atom:.4f} meV/atom"
    )
    if md_failures:
        print(f"\nFAILED: MD stopped {len(md_failures)} of {args.replicas} molecules "
              f"(systems {sorted(md_failures)}; reasons above)")
        return 2
    return 0


def _import(store: Path) -> Path:
    """Import the bundled frames into ``store`` (resumes/skips if already there)."""
    if not (store / "manifest.json").is_file():
        import_files(
            [bundled_path(DATASET)],
            store,
            progress=True,
            metadata={"source": {"name": "3BPA 300 K (BOTNet-datasets)", "license": "MIT"}},
        )
    frames = SnapshotStore(store)
    print(f"store {store}: {len(frames)} frames")
    frames.close()
    return store


def _train(store: Path, run_dir: Path, seconds: float, retrain: bool) -> Path:
    """Train the shipped Facet example on ``store``; reuse a finished run unless ``retrain``."""
    best = run_dir / "best.pt"
    if best.is_file() and not retrain:
        print(f"reusing the trained potential {best} (pass --retrain to train again)")
        return best
    if retrain and run_dir.exists():
        run_dir = run_dir.with_name(run_dir.name + time.strftime("-%Y%m%d-%H%M%S"))
    overrides = {
        "data.train": str(store),
        "data.isolated_atoms": bundled_path(ISOLATED_ATOMS),
        "train.max_time_s": seconds,
    }
    print(f"training the example Facet potential for {seconds:.0f} s into {run_dir} ...")
    return train(shipped_config("facet"), run_dir, overrides=overrides)


def _relax(model_path: Path, out: Path):
    """Relax the first bundled frame with FIRE; write and return it."""
    atoms = ase.io.read(bundled_path(DATASET), index=0)
    result = run_relax(model_path, [atoms], fmax=0.05, steps=500)
    relaxed = result.atoms[0]
    ase.io.write(out, relaxed)
    status = "converged" if result.converged[0] else "NOT converged"
    print(
        f"relaxation {status} in {result.n_steps[0]} steps: E = {result.energy[0]:.4f} eV, "
        f"fmax = {result.fmax[0]:.3f} eV/Å"
    )
    return relaxed


def _md(model_path: Path, relaxed, out: Path, steps: int,
        replicas: int) -> tuple[dict[str, Path], dict[int, str]]:
    """Batched Langevin NVT at 300 K of ``replicas`` copies of the relaxed molecule.

    Returns:
        the output files by label, and system → reason for the molecules MD stopped.
    """
    rng = np.random.default_rng(0)
    batch = []
    for _ in range(replicas):
        copy = relaxed.copy()
        copy.positions += rng.normal(scale=0.01, size=copy.positions.shape)
        batch.append(copy)
    files = {
        "MD trajectory": out / "md.extxyz",
        "thermo log": out / "thermo.csv",
        "MD checkpoint": out / "md.ckpt",
    }
    integrator = make_integrator(
        "nvt_langevin", timestep_fs=0.5, temperature_K=300.0, friction_per_fs=0.01, seed=0
    )
    outputs = MDOutputs(
        trajectory=files["MD trajectory"],
        log=files["thermo log"],
        checkpoint=files["MD checkpoint"],
        trajectory_interval=50,
        log_interval=10,
    )
    for path in files.values():
        path.unlink(missing_ok=True)
    result = run_md(
        model_path,
        batch,
        integrator,
        steps=steps,
        outputs=outputs,
        initial_temperature_K=300.0,
        progress=True,
    )
    if result.failures:
        for system, reason in result.failures.items():
            print(f"MD system {system} stopped: {reason}")
    files["thermo plot"] = plot_thermo(files["thermo log"])
    return files, result.failures

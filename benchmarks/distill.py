"""Distil SevenNet-0 into Facet students for two systems of ``../shared/data`` and check the
targets: the student at least 10x faster than the teacher in MD on the same device, and its
force error against the teacher at most 30 meV/Å on held-out teacher frames at every training
temperature.

Systems (see ``../shared/data/MANIFEST.md``):

* ``si``: the first 64-atom bulk Si cell of ``mlearn/mlearn_Si_train.xyz`` (mlearn, PBE);
* ``hfo2``: the 96-atom HfO2 cell (first frame) of ``hfo2/hfo2_scan_vasp.xyz``.

Each runs ``mlip distill sevennet:7net-0 SEED -o WORK/NAME`` with the command's defaults (300 /
600 / 1200 K, 2000 teacher MD steps per temperature, 8 rattles and 8 strains, a budget of 400
labelled frames, 2 active-learning rounds with a committee of 2, automatic epochs, speed timed on
the seed repeated to at least 1000 atoms), which is the real benchmark. ``--quick`` shrinks
every setting (a smoke test of the whole path that says nothing about the targets; the JSON
records ``"quick": true``). The run directories resume: an interrupted benchmark continues
where it stopped.

    python benchmarks/distill.py [--systems si hfo2] [--device auto] [--quick]
        [--work-dir runs/distill-bench] [--out benchmarks/results/distill.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import ase.io
import torch
import yaml

from mlip.distill import distill

ROOT = Path(__file__).resolve().parents[1]
TEACHER = "sevennet:7net-0"
SPEEDUP_TARGET = 10.0
FORCE_TARGET = 30.0  # meV/Å

#: name → (file under the data dir, how to pick the seed from its frames)
SYSTEMS = {
    "si": ("mlearn/mlearn_Si_train.xyz", lambda frames: next(a for a in frames if len(a) == 64)),
    "hfo2": ("hfo2/hfo2_scan_vasp.xyz", lambda frames: frames[0]),
}

#: --quick: a few steps of everything (minutes on a CPU), not a measurement.
QUICK = dict(temperatures=[300, 1200], md_steps=20, md_interval=5, rattles=2, strains=2,
             budget=12, rounds=1, committee=2, epochs=3, speed_steps=5, speed_atoms=0,
             al_steps=10)


def seed_structure(data_dir: Path, name: str):
    """The seed structure of system ``name`` (labels dropped)."""
    path, pick = SYSTEMS[name]
    atoms = pick(ase.io.read(data_dir / path, index=":"))
    atoms.calc = None
    return atoms


def _overrides(pairs: list[str]) -> dict:
    """``KEY=VALUE`` strings as distill settings (values parsed as YAML)."""
    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--override {pair!r}: expected KEY=VALUE")
        settings[key.strip()] = yaml.safe_load(value)
    return settings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared/data")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "runs/distill-bench")
    parser.add_argument("--out", type=Path, default=None,
                        help="default benchmarks/results/distill.json (distill_quick.json "
                        "with --quick)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="tiny settings: a smoke test")
    parser.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE",
                        help="distill settings instead of the defaults (YAML values, e.g. "
                        "md_steps=400 train_time=600); recorded in the JSON")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    out = args.out or ROOT / "benchmarks/results" / (
        "distill_quick.json" if args.quick else "distill.json")
    settings = dict(QUICK) if args.quick else {}
    settings.update(_overrides(args.override))
    results = {"teacher": TEACHER, "quick": args.quick, "settings": settings or "defaults",
               "device": args.device, "torch": torch.__version__,
               "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
               "cpu_threads": torch.get_num_threads(), "host": platform.node(),
               "targets": {"speedup_min": SPEEDUP_TARGET, "forces_rmse_max_meV_A": FORCE_TARGET},
               "systems": {}}
    for name in args.systems:
        start = time.monotonic()
        seed = seed_structure(args.data_dir, name)
        report = distill(TEACHER, [seed], args.work_dir / name, device=args.device, **settings)
        forces = {t: e["forces_rmse"] for t, e in report["heldout"].items()}
        speedup = report["speed"]["speedup"]
        results["systems"][name] = {
            "atoms": len(seed), "formula": seed.get_chemical_formula(),
            "wall_s": round(time.monotonic() - start, 1),
            "heldout": report["heldout"], "speed": report["speed"],
            "rdf_distance": {f"{r['temperature_K']:g} K": r["rdf_distance"]
                             for r in report["rdf"]},
            "student_parameters": report["student_parameters"],
            "training_frames": report["training_frames"],
            "meets_speedup": speedup >= SPEEDUP_TARGET,
            "meets_forces": all(f <= FORCE_TARGET for f in forces.values()),
        }
        print(f"{name}: held-out F RMSE {forces} meV/Å, speed-up {speedup:.1f}x")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

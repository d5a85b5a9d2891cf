"""Test errors of a trained potential on the accuracy benchmark's fixed 3BPA test split.

The shipped ``data/bundled/facet_3bpa.pt`` is trained on the 3BPA 300 K train + valid splits of
:mod:`accuracy` (never on its test split), so its error on that test split is a held-out
measurement. ``--extra-test NAME=PATH`` adds further sets (frames of the 300 K source file are
dropped), e.g. the 3BPA frames sampled at 300, 600 and 1200 K (``train_mixedT.xyz`` of the
BOTNet-datasets repository, ``dataset_3BPA/``, commit 29e6d46; 469 frames remain).

    python benchmarks/shipped_potential.py [--model data/bundled/facet_3bpa.pt]
        [--extra-test mixedT=PATH] [--out benchmarks/results/shipped_potential.json]
    python benchmarks/shipped_potential.py --write-training-splits DIR

Reports energy (meV/atom) and force (meV/Å) RMSE per set, in float64, one JSON file.
``--write-training-splits DIR`` writes only ``DIR/train.xyz`` and ``DIR/valid.xyz`` (the frames
the shipped potential is trained and selected on; data/bundled/PROVENANCE.md has the command).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(Path(__file__).resolve().parent))  # not first: lammps.py here

from accuracy import parse_extra_tests, test_errors, write_splits  # noqa: E402


def errors(model_path: Path, frames_path: Path) -> dict:
    """E (meV/atom) and F (meV/Å) RMSE of the model on the frames, float64."""
    import torch

    from mlip.train.data import read_atoms

    rmse = test_errors(model_path, frames_path, stress=False, dtype=torch.float64)
    return {"frames": len(read_atoms(frames_path)), "energy_rmse": rmse["energy_rmse"],
            "forces_rmse": rmse["forces_rmse"]}


def write_training_splits(data_dir: Path, folder: Path) -> None:
    """The train and valid files of the fixed 3BPA split in ``folder`` (never the test split)."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_splits(data_dir, Path(tmp), ["3bpa"])["3bpa"]["paths"]
        for part in ("train", "valid"):
            shutil.copyfile(paths[part], folder / f"{part}.xyz")
    print(f"wrote {folder / 'train.xyz'} and {folder / 'valid.xyz'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "data/bundled/facet_3bpa.pt")
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared/data")
    parser.add_argument("--extra-test", nargs="+", default=[], metavar="NAME=PATH")
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks/results/shipped_potential.json")
    parser.add_argument("--write-training-splits", type=Path, default=None, metavar="DIR")
    args = parser.parse_args()
    if args.write_training_splits:
        write_training_splits(args.data_dir, args.write_training_splits)
        return
    extra = parse_extra_tests([f"3bpa={item}" for item in args.extra_test])
    with tempfile.TemporaryDirectory() as tmp:
        split = write_splits(args.data_dir, Path(tmp), ["3bpa"], extra)["3bpa"]
        sets = {"test_300K": {"path": split["paths"]["test"], "sha256": split["test_sha256"]},
                **split["extra_tests"]}
        results = {name: {**errors(args.model, Path(spec["path"])), "sha256": spec["sha256"]}
                   for name, spec in sets.items()}
    for name, row in results.items():
        print(f"{name:10s} {row['frames']:5d} frames  E {row['energy_rmse']:7.2f} meV/atom  "
              f"F {row['forces_rmse']:7.2f} meV/Å")
    out = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "model": str(args.model),
           "model_sha256": hashlib.sha256(args.model.read_bytes()).hexdigest(),
           "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""``mlip data``: import, info, split, stats and export of snapshot stores."""

from __future__ import annotations

import argparse
import json

from mlip.settings import (
    AT_LEAST_ONE,
    NON_NEGATIVE,
    POSITIVE,
    UNIT_INTERVAL,
    Group,
    Range,
    Setting,
    Sum,
)

#: Compression filters of new shards (the same as mlip.data.schema.COMPRESSIONS; a test
#: keeps them equal without importing the data package at CLI start).
COMPRESSIONS = ("zstd", "lz4", "gzip", "lzf", "none")
_SPLITS = ("train", "val", "test")

IMPORT = Group("mlip data import SRC... -o STORE", (
    Setting("--output", (str,), None, "store directory, e.g. store.h5", flags=("-o",),
            required=True),
    Setting("--format", (str,), None, "source format: extxyz, traj, ase-db, oc20, vasp, "
            "pubchemqcr, oc20-lmdb, aselmdb", nullable=True,
            default_text="LMDBs from their records, other files from their names"),
    Setting("--stage", (list,), None, "PubChemQCR levels of theory to import: pm3, hf, "
            "DFT_1st (1st), DFT_2nd (2nd), dft (both DFT stages), all; one per use "
            "(--stage pm3 --stage hf)", item=str, nullable=True, repeat=True,
            default_text="dft"),
    *(Setting(f"--{label}-key", (str,), None, f"name of the {label} field", nullable=True,
              default_text="auto") for label in ("energy", "forces", "stress", "virial", "system")),
    Setting("--on-error", (str,), "raise", "stop at the first bad frame, or skip and log it",
            choices=("raise", "skip")),
    Setting("--level-of-theory", (str,), None, "store metadata: the DFT level of theory",
            nullable=True),
    Setting("--license", (str,), None, "store metadata: the data's licence", nullable=True),
    Setting("--energy-referencing", (str,), "total", "store metadata: what the energies are "
            "relative to"),
    Setting("--compression", (str,), "zstd", "filter of new shards", choices=COMPRESSIONS),
    Setting("--shard-frames", (int,), 1 << 20, "frames per shard", range=AT_LEAST_ONE),
))

INFO = Group("mlip data info STORE", (
    Setting("--json", (bool,), False, "print JSON instead of a table"),
))

SPLIT = Group("mlip data split STORE", (
    Setting("--by", (str,), "trajectory", "what a split keeps together: whole trajectories "
            "(alias system: the frames' system id; frames without one are warned about), "
            "input files (source), info['config_type'] values (config_type), or single frames",
            choices=("trajectory", "system", "source", "config_type", "frame")),
    Setting("--fractions", (list,), [0.9, 0.05, 0.05], "fractions of train, val (and test)",
            item=float, length=(2, 3), range=UNIT_INTERVAL),
    Setting("--seed", (int,), 0, "seed of the permutation", range=NON_NEGATIVE),
), rules=(Sum(("--fractions",), Range(1, 1)),))

STATS = Group("mlip data stats STORE", (
    Setting("--split", (str,), None, "statistics of this split only", choices=_SPLITS,
            nullable=True, default_text="all frames"),
    Setting("--cutoff", (float,), None, "also count neighbours within this cutoff", unit="Å",
            range=POSITIVE, nullable=True),
))

EXPORT = Group("mlip data export STORE -o FILE", (
    Setting("--output", (str,), None, "new file; the format follows the extension (.xyz, "
            ".extxyz, .traj, .h5)", flags=("-o",), required=True),
    Setting("--split", (str,), None, "export this split only", choices=_SPLITS, nullable=True,
            default_text="all frames"),
    Setting("--format", (str,), None, "output format: extxyz, traj or h5 (checked by "
            "mlip.io.output_format)", nullable=True, default_text="from -o"),
))

GROUPS = (IMPORT, INFO, SPLIT, STATS, EXPORT)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``mlip data {import,info,split,stats,export}``."""
    parser = subparsers.add_parser("data", help="build and inspect snapshot stores")
    verbs = parser.add_subparsers(dest="data_command", metavar="VERB", required=True)

    p = verbs.add_parser(
        "import", help="import extxyz/traj/db/OC20/VASP/PubChemQCR files (resumable)"
    )
    p.add_argument("sources", nargs="+", metavar="SRC")
    IMPORT.add_arguments(p)
    p.set_defaults(func=IMPORT.bind(_import))

    p = verbs.add_parser("info", help="counts, elements, label coverage, size")
    p.add_argument("store")
    INFO.add_arguments(p)
    p.set_defaults(func=INFO.bind(_info))

    p = verbs.add_parser("split", help="train/val/test split without trajectory leakage")
    p.add_argument("store")
    SPLIT.add_arguments(p)
    p.set_defaults(func=SPLIT.bind(_split))

    p = verbs.add_parser("stats", help="E0 fit, mean energy per atom, force RMS, neighbours")
    p.add_argument("store")
    STATS.add_arguments(p)
    p.set_defaults(func=STATS.bind(_stats))

    p = verbs.add_parser("export", help="write frames to .xyz/.extxyz, .traj or a .h5 store")
    p.add_argument("store")
    EXPORT.add_arguments(p)
    p.set_defaults(func=EXPORT.bind(_export))


def _import(args: argparse.Namespace) -> int:
    from mlip.data.importers import LabelKeys, import_files

    keys = LabelKeys(
        energy=args.energy_key,
        forces=args.forces_key,
        stress=args.stress_key,
        virial=args.virial_key,
        system=args.system_key,
    )
    metadata = {"energy_referencing": args.energy_referencing}
    metadata.update(
        {
            k: v
            for k, v in (("level_of_theory", args.level_of_theory), ("license", args.license))
            if v is not None
        }
    )
    report = import_files(
        args.sources,
        args.output,
        fmt=args.format,
        keys=keys,
        on_error=args.on_error,
        metadata=metadata,
        compression=args.compression,
        shard_frames=args.shard_frames,
        progress=True,
        stages=args.stage,
    )
    print(
        f"imported {report.frames_written} frames into {args.output}; skipped "
        f"{report.frames_skipped} bad frames; resumed {len(report.sources_resumed)} sources"
    )
    for source, frame, reason in report.skipped[:20]:
        print(f"  skipped {source} frame {frame}: {reason}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from mlip.data import SnapshotStore, format_info, store_info

    info = store_info(SnapshotStore(args.store))
    print(json.dumps(info, indent=1) if args.json else format_info(info))
    return 0


def _split(args: argparse.Namespace) -> int:
    from mlip.data import SnapshotStore, make_split

    counts = make_split(args.store, args.fractions, by=args.by, seed=args.seed)
    entry = SnapshotStore(args.store).manifest["split"]
    print(f"split by {args.by} ({entry['n_groups']} groups): "
          + " ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


def _stats(args: argparse.Namespace) -> int:
    from mlip.data import SnapshotStore, compute_statistics

    stats = compute_statistics(SnapshotStore(args.store), args.split, cutoff=args.cutoff)
    print(json.dumps(stats.as_dict(), indent=1))
    return 0


def _export(args: argparse.Namespace) -> int:
    from mlip.data import SnapshotStore, export_frames

    n = export_frames(SnapshotStore(args.store), args.output, args.split, fmt=args.format)
    print(f"wrote {n} frames to {args.output}")
    return 0

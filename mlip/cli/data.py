"""``mlip data``: import, info, split, stats and export of snapshot stores."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``mlip data {import,info,split,stats,export}``."""
    parser = subparsers.add_parser("data", help="build and inspect snapshot stores")
    verbs = parser.add_subparsers(dest="data_command", metavar="VERB", required=True)

    _add_import(verbs)

    p = verbs.add_parser("info", help="counts, elements, label coverage, size")
    p.add_argument("store")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_info)

    p = verbs.add_parser("split", help="train/val/test split without trajectory leakage")
    p.add_argument("store")
    p.add_argument("--by", choices=("trajectory", "system", "frame"), default="trajectory")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.9, 0.05, 0.05])
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_split)

    p = verbs.add_parser("stats", help="E0 fit, mean energy per atom, force RMS, neighbours")
    p.add_argument("store")
    p.add_argument("--split", default=None, help="train, val or test (default: all frames)")
    p.add_argument("--cutoff", type=float, default=None, help="Å; also count neighbours")
    p.set_defaults(func=_stats)

    p = verbs.add_parser("export", help="write frames back to extxyz (or any ASE format)")
    p.add_argument("store")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--split", default=None)
    p.add_argument("--format", default=None)
    p.set_defaults(func=_export)


def _add_import(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "import", help="import extxyz/traj/db/OC20/VASP/PubChemQCR files (resumable)"
    )
    p.add_argument("sources", nargs="+", metavar="SRC")
    p.add_argument("-o", "--output", required=True, help="store directory, e.g. store.h5")
    p.add_argument(
        "--format",
        default=None,
        help="extxyz, traj, ase-db, oc20, vasp, pubchemqcr (default: from the file name)",
    )
    for label in ("energy", "forces", "stress", "virial", "system"):
        p.add_argument(
            f"--{label}-key", default=None, help=f"name of the {label} field (default: auto)"
        )
    p.add_argument(
        "--on-error",
        choices=("raise", "skip"),
        default="raise",
        help="stop at the first bad frame, or skip and log it",
    )
    p.add_argument("--level-of-theory", default=None)
    p.add_argument("--license", default=None)
    p.add_argument("--energy-referencing", default="total")
    p.add_argument("--compression", default="zstd", help="zstd, lz4, gzip, lzf or none")
    p.add_argument("--shard-frames", type=int, default=1 << 20)
    p.set_defaults(func=_import)


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
    from mlip.data import make_split

    counts = make_split(args.store, args.fractions, by=args.by, seed=args.seed)
    print(" ".join(f"{k}={v}" for k, v in counts.items()))
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

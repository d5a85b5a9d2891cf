"""``mlip eval MODEL DATA``: error metrics of a potential on a store or ASE-readable file."""

from __future__ import annotations

import argparse

from mlip.settings import AT_LEAST_ONE, DEVICE_PATTERN, Group, Setting

SETTINGS = Group("mlip eval MODEL DATA...", (
    Setting("--out-dir", (str,), "eval", "folder for the parity plots", flags=("-o",)),
    Setting("--batch-size", (int,), 16, "frames per forward pass", range=AT_LEAST_ONE),
    Setting("--device", (str,), "auto", "torch device (auto: a GPU if torch sees one, else the "
            "CPU)", pattern=DEVICE_PATTERN),
    Setting("--max-frames", (int,), None, "use only the first N frames", range=AT_LEAST_ONE,
            nullable=True, default_text="all"),
    Setting("--split", (str,), None, "evaluate only this split of a snapshot store",
            choices=("train", "val", "test"), nullable=True, default_text="all frames"),
))

GROUPS = (SETTINGS,)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``eval`` verb."""
    parser = subparsers.add_parser(
        "eval", help="metrics table and parity plots of a potential on data"
    )
    parser.add_argument("model", help="potential file (e.g. RUN_DIR/best.pt)")
    parser.add_argument("data", nargs="+", help="snapshot store (.h5) or ASE-readable file(s)")
    SETTINGS.add_arguments(parser)
    parser.set_defaults(func=SETTINGS.bind(run))


def run(args: argparse.Namespace) -> int:
    """Print the metrics table; write parity plots."""
    from mlip.settings import resolve_device
    from mlip.train.evaluate import evaluate_potential

    table, plots = evaluate_potential(
        args.model,
        args.data,
        args.out_dir,
        batch_size=args.batch_size,
        device=str(resolve_device(args.device, setting="--device")),
        max_frames=args.max_frames,
        split=args.split,
    )
    print(table)
    for path in plots:
        print(f"wrote {path}")
    return 0

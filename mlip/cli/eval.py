"""``mlip eval MODEL DATA``: error metrics of a potential on a store or ASE-readable file."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``eval`` verb."""
    parser = subparsers.add_parser(
        "eval", help="metrics table and parity plots of a potential on data"
    )
    parser.add_argument("model", help="potential file (e.g. RUN_DIR/best.pt)")
    parser.add_argument("data", nargs="+", help="snapshot store (.h5) or ASE-readable file(s)")
    parser.add_argument(
        "-o", "--out-dir", default="eval", help="folder for parity plots (default: eval)"
    )
    parser.add_argument("--batch-size", type=int, default=16, help="frames per forward pass")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--max-frames", type=int, default=None, help="use only the first N frames")
    parser.add_argument("--split", choices=("train", "val", "test"), default=None,
                        help="evaluate only this split of a snapshot store")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the metrics table; write parity plots."""
    from mlip.train.evaluate import evaluate_potential

    table, plots = evaluate_potential(
        args.model,
        args.data,
        args.out_dir,
        batch_size=args.batch_size,
        device=args.device,
        max_frames=args.max_frames,
        split=args.split,
    )
    print(table)
    for path in plots:
        print(f"wrote {path}")
    return 0

"""``mlip plot RUN_DIR | FILE.csv``: learning curves of a run, or the columns of a CSV log."""

from __future__ import annotations

import argparse
from pathlib import Path

from mlip.settings import Group, Setting

SETTINGS = Group("mlip plot RUN_DIR | FILE.csv", (
    Setting("--out", (str,), None, "PNG path", nullable=True, flags=("-o",),
            default_text="next to the source"),
))

GROUPS = (SETTINGS,)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``plot`` verb."""
    parser = subparsers.add_parser(
        "plot", help="PNG learning curves of a run dir, or plots of a CSV log"
    )
    parser.add_argument("source", help="training run directory or CSV file (e.g. an MD thermo.csv)")
    SETTINGS.add_arguments(parser)
    parser.set_defaults(func=SETTINGS.bind(run))


def run(args: argparse.Namespace) -> int:
    """Plot and print the PNG path."""
    from mlip.train.plot import plot_csv, plot_learning_curves

    source = Path(args.source)
    if source.is_dir():
        out = plot_learning_curves(source, args.out)
    elif not source.is_file():
        raise FileNotFoundError(f"{source}: no such run directory or CSV file")
    elif _is_thermo_log(source):
        from mlip.md.plot import plot_thermo

        out = plot_thermo(source, args.out)
    else:
        out = plot_csv(source, args.out)
    print(f"wrote {out}")
    return 0


def _is_thermo_log(path: Path) -> bool:
    """An mlip MD thermo log: ``.jsonl``, or a CSV with ``system`` and ``time_ps`` columns."""
    if path.suffix.lower() == ".jsonl":
        return True
    with open(path) as handle:
        header = {column.strip() for column in handle.readline().split(",")}
    return {"system", "time_ps"} <= header

"""``mlip train CONFIG.yaml``: train a potential (``--resume RUN_DIR`` continues a run)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` verb."""
    parser = subparsers.add_parser(
        "train",
        help="train a potential from a YAML config",
        description="Train a potential. Override any config key with --set section.key=value "
        "(values are YAML, e.g. --set optimizer.lr=1e-3 --set data.train=[a.xyz,b.xyz]). "
        "Under torchrun (torchrun --nproc_per_node=K -m mlip train ...) it runs data-parallel.",
    )
    parser.add_argument("config", nargs="?", help="YAML config file, or the name of a shipped "
                        "example (facet, tdn, equiformer_v3); not needed with --resume")
    parser.add_argument("-o", "--run-dir", help="output directory (default: runs/<config name>)")
    parser.add_argument(
        "--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last.ckpt"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (repeatable)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train (or resume) and print the path of the best potential."""
    from mlip.errors import ConfigError
    from mlip.train import shipped_config, train

    if args.resume:
        best = train(None, args.resume, overrides=args.overrides, resume=True)
    else:
        if not args.config:
            raise ConfigError("give a config file (mlip train CONFIG.yaml) or --resume RUN_DIR")
        config = Path(args.config)
        if not config.exists() and shipped_config(args.config).is_file():
            config = shipped_config(args.config)
        run_dir = args.run_dir or str(Path("runs") / config.stem)
        best = train(config, run_dir, overrides=args.overrides)
    print(f"best potential: {best}")
    return 0

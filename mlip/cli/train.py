"""``mlip train CONFIG.yaml``: train a potential (``--resume RUN_DIR`` continues a run)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from mlip.settings import Group, Setting

SETTINGS = Group("mlip train CONFIG.yaml", (
    Setting("--run-dir", (str,), None, "output directory", nullable=True, flags=("-o",),
            default_text="runs/CONFIG_STEM"),
    Setting("--resume", (str,), None, "continue the run in RUN_DIR from its last.ckpt",
            nullable=True, metavar="RUN_DIR"),
    Setting("--set", (list,), [], "override a config key (repeatable; values are YAML; see the "
            "training config table)", item=str, metavar="KEY=VALUE", repeat=True),
))

GROUPS = (SETTINGS,)


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
    SETTINGS.add_arguments(parser)
    parser.set_defaults(func=SETTINGS.bind(run))


def run(args: argparse.Namespace) -> int:
    """Train (or resume) and print the path of the best potential (rank 0 only under torchrun)."""
    from mlip.errors import ConfigError
    from mlip.train import shipped_config, train

    if args.resume:
        best = train(None, args.resume, overrides=args.set, resume=True)
    else:
        if not args.config:
            raise ConfigError("give a config file (mlip train CONFIG.yaml) or --resume RUN_DIR")
        config = Path(args.config)
        if not config.exists() and shipped_config(args.config).is_file():
            config = shipped_config(args.config)
        run_dir = args.run_dir or str(Path("runs") / config.stem)
        best = train(config, run_dir, overrides=args.set)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"best potential: {best}")
    return 0

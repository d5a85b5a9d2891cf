"""What ``mlip relax`` and ``mlip md`` share: how the potential is loaded and run."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the CLI imports torch only when a verb runs
    from mlip.models import Potential


def add_potential_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--device``, ``--skin`` and ``--compile``."""
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--skin", type=float, default=1.0, help="neighbour-list skin, Å")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the energy, forces and stress (the first step "
                             "compiles, seconds to minutes; pays off for long runs of small "
                             "systems or cheap models)")


def load_potential(args: argparse.Namespace) -> Potential:
    """The potential of ``args.model`` on ``args.device``, compiled if ``args.compile``."""
    from mlip.md.force_field import resolve_model

    model = resolve_model(args.model, device=args.device)
    return model.enable_compile() if args.compile else model

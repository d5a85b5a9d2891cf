"""What ``mlip relax`` and ``mlip md`` share: the potential's settings, and how it is loaded."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from mlip.settings import DEVICE_PATTERN, NON_NEGATIVE, Setting, resolve_device

if TYPE_CHECKING:  # the CLI imports torch only when a verb runs
    from mlip.models import Potential

#: ``--device``, ``--skin``, ``--compile`` and ``--d3``, declared once for both verbs.
POTENTIAL_SETTINGS = (
    Setting("--device", (str,), "auto", "torch device (auto: a GPU if torch sees one, else the "
            "CPU)", pattern=DEVICE_PATTERN),
    Setting("--skin", (float,), 1.0, "neighbour-list skin", unit="Å", range=NON_NEGATIVE),
    Setting("--compile", (bool,), False, "torch.compile the energy, forces and stress (the "
            "first step compiles, seconds to minutes; pays off for long runs of small systems "
            "or cheap models)"),
    Setting("--d3", (str,), None, "add DFT-D3(BJ) dispersion with the parameters of this "
            "exchange-correlation functional, e.g. pbe (needs pip install mlip[dispersion])",
            nullable=True, metavar="FUNCTIONAL"),
)


def load_potential(args: argparse.Namespace) -> Potential:
    """The potential of ``args.model`` on ``args.device``, plus D3(BJ) dispersion with the
    parameters of ``args.d3`` when given, compiled if ``args.compile``.

    ``args.device`` becomes the resolved torch device (:func:`mlip.settings.resolve_device`).
    """
    from mlip.models.dispersion import with_dispersion
    from mlip.models.loading import resolve_model

    args.device = resolve_device(args.device, setting="--device")
    if args.d3 is None:
        return resolve_model(args.model, device=args.device, compile=args.compile)
    model = with_dispersion(resolve_model(args.model, device=args.device), f"d3bj:{args.d3}")
    return model.enable_compile() if args.compile else model

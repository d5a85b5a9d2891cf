"""``mlip relax MODEL IN``: FIRE (or L-BFGS) relaxation of every structure in IN, as one batch."""

from __future__ import annotations

import argparse
from pathlib import Path

from mlip.cli._simulation import POTENTIAL_SETTINGS, load_potential
from mlip.settings import NON_NEGATIVE, POSITIVE, Group, OnlyWith, Setting

SETTINGS = Group("mlip relax MODEL IN", (
    Setting("--output", (str,), None, "relaxed structures, format by extension: .xyz, .extxyz, "
            ".traj or .h5 store", nullable=True, flags=("-o",), default_text="IN_STEM.relaxed.xyz"),
    Setting("--fmax", (float,), 0.01, "force threshold", unit="eV/Å", range=POSITIVE),
    Setting("--cell", (bool,), False, "relax the cell too (needs pbc)"),
    Setting("--optimizer", (str,), "fire", "fire, or lbfgs (fewer force calls near a smooth "
            "minimum); --cell takes its cell variant (the non-cell keys of mlip.md.OPTIMIZERS)",
            choices=("fire", "lbfgs")),
    Setting("--steps", (int,), 1000, "maximum optimiser steps", range=NON_NEGATIVE),
    Setting("--pressure", (float,), 0.0, "external pressure of the cell relaxation", unit="GPa"),
    *POTENTIAL_SETTINGS,
), rules=(OnlyWith("--pressure", "--cell", (True,)),))

GROUPS = (SETTINGS,)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``relax`` verb."""
    parser = subparsers.add_parser(
        "relax", help="relax structures (positions, optionally the cell) with FIRE or L-BFGS",
        description="Relax every structure of IN (any ASE-readable file) in one batch with FIRE "
        "(or --optimizer lbfgs); "
        "--cell also relaxes the cell through a Fréchet cell filter.")
    parser.add_argument("model", help="potential file written by mlip train / save_model, or a "
                        "pretrained model: sevennet:7net-0, chgnet:0.3.0 "
                        "(pip install mlip[foundation])")
    parser.add_argument("input", help="structure file (all frames are relaxed)")
    SETTINGS.add_arguments(parser)
    parser.set_defaults(func=SETTINGS.bind(run))


def run(args: argparse.Namespace) -> int:
    """Relax, write the structures and print one line per structure."""
    import ase.io

    from mlip.io import check_output, write_frames
    from mlip.md import run_relax

    output = args.output or str(Path(args.input).with_suffix("")) + ".relaxed.xyz"
    check_output(output)  # an unsupported extension or existing store: refused before any work
    structures = ase.io.read(args.input, index=":")
    result = run_relax(load_potential(args), structures, fmax=args.fmax, relax_cell=args.cell,
                       optimizer=args.optimizer, steps=args.steps, pressure_GPa=args.pressure,
                       skin=args.skin, device=args.device, progress=True)
    write_frames(output, result.atoms)
    print(result.summary())
    print(f"relaxed structures: {output}")
    return 0 if all(result.converged) else 1

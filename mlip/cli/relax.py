"""``mlip relax MODEL IN``: FIRE relaxation of every structure in IN, as one batch."""

from __future__ import annotations

import argparse
from pathlib import Path

from mlip.cli._simulation import add_potential_arguments, load_potential


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``relax`` verb."""
    parser = subparsers.add_parser(
        "relax", help="relax structures (positions, optionally the cell) with FIRE",
        description="Relax every structure of IN (any ASE-readable file) in one batch with FIRE; "
        "--cell also relaxes the cell through a Fréchet cell filter.")
    parser.add_argument("model", help="potential file written by mlip train / save_model")
    parser.add_argument("input", help="structure file (all frames are relaxed)")
    parser.add_argument("-o", "--output", help="relaxed structures (default: IN_STEM.relaxed.xyz)")
    parser.add_argument("--fmax", type=float, default=0.01, help="force threshold, eV/Å")
    parser.add_argument("--cell", action="store_true", help="relax the cell too (needs pbc)")
    parser.add_argument("--steps", type=int, default=1000, help="maximum FIRE steps")
    parser.add_argument("--pressure", type=float, default=0.0, help="external pressure, GPa")
    add_potential_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Relax, write the structures and print one line per structure."""
    import ase.io

    from mlip.md import run_relax

    structures = ase.io.read(args.input, index=":")
    result = run_relax(load_potential(args), structures, fmax=args.fmax, relax_cell=args.cell,
                       steps=args.steps, pressure_GPa=args.pressure, skin=args.skin,
                       device=args.device, progress=True)
    output = args.output or str(Path(args.input).with_suffix("")) + ".relaxed.xyz"
    ase.io.write(output, result.atoms, format="extxyz")
    print(result.summary())
    print(f"relaxed structures: {output}")
    return 0 if all(result.converged) else 1

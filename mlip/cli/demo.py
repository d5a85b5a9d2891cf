"""``mlip demo``: the README's main command on the bundled data."""

from __future__ import annotations

import argparse
from importlib import resources

import ase.io

from mlip.graph import AtomicGraph


def bundled_path(name: str) -> str:
    """Path of a file shipped in :mod:`mlip.data.bundled`."""
    return str(resources.files("mlip.data.bundled").joinpath(name))


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` verb."""
    parser = subparsers.add_parser("demo", help="run the end-to-end demo on bundled data")
    parser.add_argument("--cutoff", type=float, default=5.0, help="neighbour cutoff, Å")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build graphs and neighbour lists for bundled structures and print a summary."""
    for name, index in (("3bpa_train_300K.xyz", 0), ("random1000156.traj", -1)):
        atoms = ase.io.read(bundled_path(name), index=index)
        graph = AtomicGraph.from_ase(atoms, cutoff=args.cutoff)
        print(f"{name}: {atoms.get_chemical_formula()}, {len(atoms)} atoms, pbc={atoms.pbc.tolist()}, "
              f"{graph.n_edges} edges within {args.cutoff} Å "
              f"({graph.n_edges / len(atoms):.1f} neighbours per atom)")
    return 0

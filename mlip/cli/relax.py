"""``mlip relax MODEL IN``: FIRE (or L-BFGS) relaxation of every structure in IN, as one batch
or, with ``--max-memory``, streamed through a batch kept under a memory budget."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from mlip.cli._simulation import POTENTIAL_SETTINGS, load_potential
from mlip.settings import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, Group, OnlyWith, Setting
from mlip.units import BYTES_PATTERN

SETTINGS = Group("mlip relax MODEL IN", (
    Setting("--output", (str,), None, "relaxed structures, format by extension: .xyz, .extxyz, "
            ".traj or .h5 store", nullable=True, flags=("-o",), default_text="IN_STEM.relaxed.xyz"),
    Setting("--fmax", (float,), 0.01, "force threshold", unit="eV/Å", range=POSITIVE),
    Setting("--cell", (bool,), False, "relax the cell too (needs pbc)"),
    Setting("--optimizer", (str,), "fire", "fire, or lbfgs (fewer force calls near a smooth "
            "minimum); --cell takes its cell variant (the non-cell keys of mlip.md.OPTIMIZERS)",
            choices=("fire", "lbfgs")),
    Setting("--lbfgs-memory", (int,), None, "L-BFGS history length (stored steps)",
            range=AT_LEAST_ONE, nullable=True, metavar="N", default_text="20"),
    Setting("--steps", (int,), 1000, "maximum optimiser steps", range=NON_NEGATIVE),
    Setting("--pressure", (float,), 0.0, "external pressure of the cell relaxation", unit="GPa"),
    Setting("--max-memory", (str,), None, "memory budget of the batch (model weights, "
            "activations, optimiser state; estimated from measured bytes per atom and per "
            "edge): structures stream through it, each leaving as it finishes and written at "
            "once; without it every structure is relaxed in one batch", nullable=True,
            pattern=BYTES_PATTERN, metavar="SIZE"),
    Setting("--ordered", (bool,), False, "write the structures in input order (those that "
            "finish early wait); without --max-memory the output is always in input order"),
    *POTENTIAL_SETTINGS,
), rules=(OnlyWith("--pressure", "--cell", (True,)),
          OnlyWith("--lbfgs-memory", "--optimizer", ("lbfgs",))))

GROUPS = (SETTINGS,)

#: Seconds between commits of an .h5 store output (each commit makes the frames durable).
STORE_COMMIT_SECONDS = 60.0
#: Above this many structures the summary lists only those that did not converge.
SUMMARY_ALL_UP_TO = 100


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``relax`` verb."""
    parser = subparsers.add_parser(
        "relax", help="relax structures (positions, optionally the cell) with FIRE or L-BFGS",
        description="Relax every structure of IN (any ASE-readable file) in one batch with FIRE "
        "(or --optimizer lbfgs); "
        "--cell also relaxes the cell through a Fréchet cell filter; --max-memory streams "
        "any number of structures through a batch under a memory budget.")
    parser.add_argument("model", help="potential file written by mlip train / save_model, or a "
                        "pretrained model: sevennet:7net-0, chgnet:0.3.0 "
                        "(pip install mlip[foundation])")
    parser.add_argument("input", help="structure file (all frames are relaxed; read lazily "
                        "with --max-memory)")
    SETTINGS.add_arguments(parser)
    parser.set_defaults(func=SETTINGS.bind(run))


def run(args: argparse.Namespace) -> int:
    """Relax, append each structure to the output as it finishes, print a summary."""
    import ase.io

    from mlip.io import FrameWriter, check_output
    from mlip.md import relax_stream

    output = args.output or str(Path(args.input).with_suffix("")) + ".relaxed.xyz"
    fmt = check_output(output)  # an unsupported extension or existing store: refused first
    if args.max_memory is None:
        structures = ase.io.read(args.input, index=":")
        total = len(structures)
    else:
        structures, total = ase.io.iread(args.input, index=":"), _count_frames(args.input)
    stream = relax_stream(load_potential(args), structures, fmax=args.fmax,
                          relax_cell=args.cell, optimizer=args.optimizer, steps=args.steps,
                          pressure_GPa=args.pressure, lbfgs_memory=args.lbfgs_memory,
                          max_memory=args.max_memory,
                          ordered=args.ordered or args.max_memory is None, skin=args.skin,
                          device=args.device, progress=True, total=total)
    rows = []
    with FrameWriter(output) as writer:
        committed = time.monotonic()
        for index, atoms in stream:
            info = atoms.info
            ids = None
            if fmt == "h5":  # the store's columns: input file and frame, steps, status
                ids = [{"source": str(args.input), "source_frame": index,
                        "step": info["relax_steps"], "config_type": info["relax_status"]}]
            writer.write([atoms], ids)
            if fmt == "h5" and time.monotonic() - committed > STORE_COMMIT_SECONDS:
                writer.flush()
                committed = time.monotonic()
            results = atoms.calc.results if atoms.calc is not None else {}
            rows.append((index, info["relax_status"], info["relax_steps"],
                         results.get("energy", float("nan")), info["relax_fmax"]))
    if stream.memory_model is not None:
        print(stream.memory_model.describe())
    print(_summary(rows))
    print(f"relaxed structures: {output}")
    return 0 if all(status == "converged" for _, status, *_ in rows) else 1


def _summary(rows: list[tuple[int, str, int, float, float]]) -> str:
    """One line per structure (only those that did not converge beyond
    :data:`SUMMARY_ALL_UP_TO` structures), then the counts."""
    lines = []
    for index, status, steps, energy, fmax in sorted(rows):
        if status == "converged" and len(rows) > SUMMARY_ALL_UP_TO:
            continue
        text = {"converged": "converged", "max_steps": "NOT converged"}.get(status, status)
        lines.append(f"structure {index}: {text} after {steps} steps, E = {energy:.6f} eV, "
                     f"fmax = {fmax:.2e} eV/Å")
    statuses = [status for _, status, *_ in rows]
    blown = sum(s.startswith("blown_up") for s in statuses)
    lines.append(f"{len(rows)} structures: {statuses.count('converged')} converged, "
                 f"{statuses.count('max_steps')} not converged in the step limit, "
                 f"{blown} blown up")
    return "\n".join(lines)


def _count_frames(path: str) -> int | None:
    """Frames of an .xyz/.extxyz file by a scan of its atom-count lines (None for other
    formats or a file that does not look like XYZ): the total of the progress bar."""
    if Path(path).suffix.lower() not in (".xyz", ".extxyz"):
        return None
    count = 0
    with open(path, "rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                n_atoms = int(line)
            except ValueError:
                return None
            for _ in range(n_atoms + 1):
                handle.readline()
            count += 1
    return count

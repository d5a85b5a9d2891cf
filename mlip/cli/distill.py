"""``mlip distill TEACHER STRUCTURES -o RUN_DIR``: a fast student potential from a teacher."""

from __future__ import annotations

import argparse

from mlip.distill.config import SETTINGS

GROUPS = (SETTINGS,)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``distill`` verb."""
    parser = subparsers.add_parser(
        "distill", help="distil a fast Facet potential from a pretrained (or any) teacher",
        description="Generate teacher-labelled frames from the seed STRUCTURES (MD at a ladder "
        "of temperatures, rattles, strains), select diverse frames, train a Facet student, "
        "improve it by active learning and report it against the teacher (held-out errors, MD "
        "speed-up, radial distribution functions). Every stage's outputs stay in RUN_DIR; "
        "rerunning the same command resumes. --budget counts the teacher frames the student "
        "is trained on (docs/distill.md).")
    parser.add_argument("teacher", help="pretrained model name (sevennet:7net-0; pip install "
                        "mlip[foundation]) or a potential file written by mlip train")
    parser.add_argument("structures", help="seed structures: any ASE-readable file (every "
                        "frame is a seed: bulk cells, slabs, molecules)")
    SETTINGS.add_arguments(parser)
    parser.set_defaults(func=SETTINGS.bind(run))


def run(args: argparse.Namespace) -> int:
    """Run (or resume) the distillation and print where the student and the report are."""
    from pathlib import Path

    from mlip.distill import distill

    options = {s.dest: getattr(args, s.dest) for s in SETTINGS.settings
               if s.dest in args.given and s.name != "--output"}
    report = distill(args.teacher, args.structures, args.output, **options)
    forces = ", ".join(f"{t}: {e['forces_rmse']:.1f}" for t, e in report["heldout"].items())
    print(f"student: {Path(args.output) / report['student']}")
    print(f"held-out force RMSE vs teacher (meV/Å): {forces}")
    print(f"MD speed-up vs teacher: {report['speed']['speedup']:.1f}x")
    print(f"report: {Path(args.output) / 'report.md'}")
    return 0

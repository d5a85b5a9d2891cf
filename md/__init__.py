"""Batched torch molecular dynamics and relaxation.

Integrators and optimisers are pure ``(init, step)`` pairs on a frozen :class:`MDState`, bound
through their registries (:data:`ENSEMBLES` with :func:`make_integrator`, :data:`OPTIMIZERS`
with :func:`make_optimizer`); :func:`run_md` and :func:`run_relax` own every side effect.
"""

from mlip.md.conservation import ConservationReport, nve_conservation
from mlip.md.driver import MDOutputs, MDResult, run_md
from mlip.md.ensembles import ENSEMBLES, Ensemble, Integrator, make_integrator
from mlip.md.force_field import ForceField
from mlip.md.guard import BlowUpLimits
from mlip.md.lbfgs import LBFGSState, lbfgs_init, lbfgs_step  # also registers "lbfgs"
from mlip.md.optimize import RelaxResult, relax_stream, run_relax
from mlip.md.plot import plot_thermo
from mlip.md.relax import OPTIMIZERS, FireState, Optimizer, fire_init, fire_step, make_optimizer
from mlip.md.state import MDState, state_from_atoms, state_to_atoms

__all__ = ["ENSEMBLES", "OPTIMIZERS", "BlowUpLimits", "ConservationReport", "Ensemble",
           "FireState", "ForceField", "Integrator", "LBFGSState", "MDOutputs", "MDResult",
           "MDState", "Optimizer", "RelaxResult", "fire_init", "fire_step", "lbfgs_init",
           "lbfgs_step", "make_integrator",
           "make_optimizer", "nve_conservation", "plot_thermo", "relax_stream", "run_md",
           "run_relax",
           "state_from_atoms", "state_to_atoms"]

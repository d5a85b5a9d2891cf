"""Distillation: a fast, specialised Facet student from a pretrained (or any) teacher potential.

``distill(teacher, structures, run_dir, **settings)`` (``mlip distill TEACHER STRUCTURES -o
RUN_DIR``) generates teacher-labelled frames (MD ladder, rattles, strains), selects diverse ones
by farthest-point sampling, trains a committee of students with the shipped trainer, adds the
frames the students disagree on in active-learning rounds, and reports the student against the
teacher (held-out errors per temperature, MD speed-up, radial distribution functions).
See docs/distill.md.
"""

from mlip.distill.config import SETTINGS, BudgetPlan, DistillConfig
from mlip.distill.pipeline import distill, load_teacher, read_structures
from mlip.distill.select import farthest_point_sampling, holdout_split, structure_descriptors

__all__ = ["distill", "SETTINGS", "DistillConfig", "BudgetPlan", "farthest_point_sampling",
           "structure_descriptors", "holdout_split", "load_teacher", "read_structures"]

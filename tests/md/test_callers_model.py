"""run_md and run_relax work on their own copy: the caller's module is never moved, cast or
switched to eval mode."""

from __future__ import annotations

import torch

from mlip.md import run_md, run_relax
from mlip.models import build


def _training_mode_model() -> torch.nn.Module:
    return build("lennard_jones", species=[29], cutoff=5.0, epsilon=0.4, sigma=2.3).train()


def test_run_md_leaves_the_callers_model_in_training_mode(cu32):
    mine = _training_mode_model()
    run_md(mine, [cu32], ensemble="nve", temperature=None, steps=2)
    assert mine.training


def test_run_relax_leaves_the_callers_model_in_training_mode(cu32):
    mine = _training_mode_model()
    run_relax(mine, [cu32], steps=2)
    assert mine.training


def test_a_ready_model_is_used_as_it_is():
    """No copy when nothing has to change (no doubled memory for large models)."""
    from mlip.models.loading import resolve_model

    mine = _training_mode_model().eval()
    assert resolve_model(mine) is mine

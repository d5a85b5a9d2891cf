"""The driver's run status: a frozen value with explicit checkpoint conversion, and restart
files written before it was typed (a dict of tensors) still load and continue."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mlip.errors import CheckpointMismatchError
from mlip.md import MDOutputs, make_integrator, run_md
from mlip.md.restart import FORMAT, FORMAT_VERSION, load_checkpoint
from mlip.md.state import state_from_atoms, volume
from mlip.md.status import RunStatus
from tests.md.conftest import rattled_cu_cells


def test_record_keeps_the_first_failure_and_report_marks_it():
    status = RunStatus.start(state_from_atoms(rattled_cu_cells(3)))
    assert status.healthy.all() and not status.pending().any()
    torch.testing.assert_close(status.volume0, volume(state_from_atoms(rattled_cu_cells(3)).cell))
    failed = status.record(torch.tensor([0, 3, 0]), torch.tensor([0.0, 0.4, 0.0],
                                                                  dtype=torch.float64), step=7)
    assert failed.healthy.tolist() == [True, False, True]
    assert failed.code.tolist() == [0, 3, 0] and failed.step.tolist() == [0, 7, 0]
    assert failed.pending().tolist() == [False, True, False]
    later = failed.record(torch.tensor([2, 5, 0]), torch.tensor([9.0, 9.0, 0.0],
                                                                 dtype=torch.float64), step=8)
    assert later.code.tolist() == [2, 3, 0]  # system 1 keeps its first failure
    assert later.value.tolist() == [9.0, 0.4, 0.0] and later.step.tolist() == [8, 7, 0]
    reported = later.mark_reported(later.pending())
    assert not reported.pending().any() and reported.reported.tolist() == [True, True, False]
    assert status.code.tolist() == [0, 0, 0]  # frozen: the original is unchanged
    with pytest.raises(dataclasses.FrozenInstanceError):
        status.code = failed.code


def test_checkpoint_conversion_round_trips_and_names_a_missing_field():
    status = RunStatus.start(state_from_atoms(rattled_cu_cells(2))).record(
        torch.tensor([0, 4]), torch.tensor([0.0, 5e3], dtype=torch.float64), step=3)
    stored = status.to_checkpoint()
    assert set(stored) == {"code", "value", "step", "reported", "volume0"}
    back = RunStatus.from_checkpoint(stored, "cpu")
    for f in dataclasses.fields(RunStatus):
        assert torch.equal(getattr(back, f.name), getattr(status, f.name))
        assert getattr(back, f.name).dtype == getattr(status, f.name).dtype
    del stored["reported"]
    with pytest.raises(CheckpointMismatchError, match="old.ckpt: run status field 'reported'"):
        RunStatus.from_checkpoint(stored, "cpu", "old.ckpt")


def _old_format_file(lj, tmp_path):
    """A restart file exactly as the driver wrote it while the status was a dict of tensors
    (format version 2), with system 1 stopped at step 6 (atoms too close, reported)."""
    integrator = make_integrator("nvt_langevin", timestep_fs=2.0, temperature_K=100.0, seed=2)
    result = run_md(lj, rattled_cu_cells(), integrator, steps=10, initial_temperature_K=100.0,
                    skin=0.3)
    state = result.state
    payload = {
        "format": "mlip-md-restart", "format_version": 2,
        "state_type": "LangevinState",
        "state": {**{f.name: (v.detach().cpu() if isinstance(v, torch.Tensor) else v)
                     for f in dataclasses.fields(state) for v in [getattr(state, f.name)]
                     if f.name not in ("layout", "stress_computed")},  # fields added since
                  "batch": state.batch.cpu()},  # the layout was a batch tensor then
        "settings": {"ensemble": "nvt_langevin", **integrator.settings},
        "status": {"code": torch.tensor([0, 3]), "value": torch.tensor([0.0, 0.5],
                                                                       dtype=torch.float64),
                   "step": torch.tensor([0, 6]), "reported": torch.tensor([False, True]),
                   "volume0": volume(state.cell)},
        "counters": {"nl_builds": 1, "time_ps": 0.02},
        "outputs": MDOutputs().plain(),
    }
    path = tmp_path / "old.ckpt"
    torch.save(payload, path)
    return path, state


def test_restart_file_written_before_the_typed_status_still_loads_and_continues(lj, tmp_path):
    assert (FORMAT, FORMAT_VERSION) == ("mlip-md-restart", 2)
    path, state = _old_format_file(lj, tmp_path)
    ckpt = load_checkpoint(path)
    assert isinstance(ckpt.status, RunStatus)
    assert ckpt.status.code.tolist() == [0, 3] and ckpt.status.step.tolist() == [0, 6]
    assert ckpt.status.reported.tolist() == [False, True]
    result = run_md(lj, steps=16, restart=path, skin=0.3)
    assert result.steps == 16 and result.failures == {}  # already reported before
    frozen = state.positions[state.batch == 1]
    torch.testing.assert_close(result.state.positions[result.state.batch == 1], frozen,
                               rtol=0, atol=0)  # the stopped system stays stopped
    assert not torch.equal(result.state.positions[result.state.batch == 0],
                           state.positions[state.batch == 0])


def test_new_checkpoints_store_the_same_dictionary(lj, tmp_path):
    outputs = MDOutputs(checkpoint=tmp_path / "md.ckpt", checkpoint_interval=5)
    run_md(lj, rattled_cu_cells(), make_integrator("nve", timestep_fs=2.0), steps=5,
           outputs=outputs, initial_temperature_K=50.0, skin=0.3)
    payload = torch.load(tmp_path / "md.ckpt", weights_only=True)
    assert payload["format_version"] == 2
    assert set(payload["status"]) == {"code", "value", "step", "reported", "volume0"}
    assert all(isinstance(v, torch.Tensor) for v in payload["status"].values())

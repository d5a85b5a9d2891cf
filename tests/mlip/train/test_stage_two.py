"""Stage two (MACE's "stage two"/SWA): the switch of loss weights and lr, resume across it, the
best-model selection on the stage's own loss; warm-up and plateau set from a YAML file."""

import csv
import json

import pytest
import torch
import yaml

import mlip.train.loop as loop
from mlip.errors import ConfigError
from mlip.train import train

STAGE_TWO = {"start_fraction": 0.5, "energy_weight": 1000.0, "forces_weight": 1000.0,
             "lr": 0.002}


class _Crash(Exception):
    """Stands for a killed process."""


def _steps(run_dir):
    with open(run_dir / "steps.csv") as handle:
        return {int(r["step"]): (r["loss"], r["lr"]) for r in csv.DictReader(handle)}


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def stage_config(tiny_config):
    """15 steps (3 epochs of 5), constant lr 0.01; stage two from half of the epoch budget."""
    tiny_config["train"]["max_epochs"] = 3
    tiny_config["schedule"] = {"name": "constant"}
    tiny_config["stage_two"] = dict(STAGE_TWO)
    return tiny_config


def test_switch_changes_lr_and_loss_weights_and_restarts_best_selection(stage_config, tmp_path):
    run = tmp_path / "run"
    train(stage_config, run)
    steps = _steps(run)
    # 7/15 of the budget after 7 steps, 8/15 after 8: the 9th step is the first of stage two
    assert {float(lr) for s, (_, lr) in steps.items() if s <= 8} == {0.01}
    assert {float(lr) for s, (_, lr) in steps.items() if s > 8} == {0.002}
    rows = _rows(run)
    assert [(r["step"], r["stage"]) for r in rows] == [(5, 1), (10, 2), (15, 2)]
    for row, (w_e, w_f) in zip(rows, [(1.0, 100.0), (1000.0, 1000.0), (1000.0, 1000.0)]):
        # mse loss, unit frame weights: the logged loss is the stage's weighted sum of MSEs
        expected = w_e * (row["valid_energy_rmse"] / 1e3) ** 2 + w_f * (
            row["valid_forces_rmse"] / 1e3) ** 2
        assert row["valid_loss"] == pytest.approx(expected, rel=1e-9)
    # stage-two losses (weights 1000) are far above stage one's: comparing them with the
    # stage-one best would never pick a stage-two model
    assert min(r["valid_loss"] for r in rows[1:]) > rows[0]["valid_loss"]
    best = torch.load(run / "best.pt", weights_only=True)["extra"]
    stage_two_best = min(rows[1:], key=lambda r: r["valid_loss"])
    assert best["step"] == stage_two_best["step"]
    assert best["valid"]["stage"] == 2
    first = torch.load(run / loop.BEST_STAGE_ONE_NAME, weights_only=True)["extra"]
    assert first["step"] == 5 and first["valid"]["stage"] == 1
    state = torch.load(run / "last.ckpt", weights_only=False)
    assert state["progress"]["stage_two_step"] == 8
    assert state["schedule"]["stage_two"] == {"start": 8, "end": 15, "lr": 0.002,
                                              "name": "constant"}


@pytest.mark.parametrize("crash_at", [7, 11])  # last checkpoint before / after the switch
def test_resume_across_the_switch_is_bit_for_bit(stage_config, tmp_path, monkeypatch, crash_at):
    stage_config["stage_two"]["schedule"] = "cosine"
    train(stage_config, tmp_path / "straight")
    real = loop.Trainer._log_step

    def crashing(self, loss, lr):
        real(self, loss, lr)
        if self.progress.step == crash_at:
            raise _Crash

    monkeypatch.setattr(loop.Trainer, "_log_step", crashing)
    with pytest.raises(_Crash):
        train(stage_config, tmp_path / "split")
    monkeypatch.setattr(loop.Trainer, "_log_step", real)
    train(None, tmp_path / "split", resume=True)
    straight, split = _steps(tmp_path / "straight"), _steps(tmp_path / "split")
    assert len(straight) == 15
    assert split == straight  # identical repr of every float64 loss and lr
    assert float(straight[9][1]) == 0.002 and float(straight[15][1]) < 0.002  # cosine decays
    untimed = [[{k: v for k, v in r.items() if k != "time_s"} for r in _rows(tmp_path / name)]
               for name in ("split", "straight")]
    assert untimed[0] == untimed[1]
    for name in ("final.pt", "best.pt", loop.BEST_STAGE_ONE_NAME):
        a = torch.load(tmp_path / "straight" / name, weights_only=True)["state_dict"]
        b = torch.load(tmp_path / "split" / name, weights_only=True)["state_dict"]
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_stage_two_start_fraction_must_lie_inside_the_budget(tiny_config, tmp_path):
    for bad in (0.0, 1.0):
        tiny_config["stage_two"] = {"start_fraction": bad}
        with pytest.raises(ConfigError, match=r"stage_two.start_fraction .*\(0, 1\)"):
            train(tiny_config, tmp_path / "run")


def _from_yaml(config, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_warmup_from_yaml_ramps_the_lr(tiny_config, tmp_path):
    tiny_config["schedule"] = {"name": "constant", "warmup_steps": 4}
    train(_from_yaml(tiny_config, tmp_path), tmp_path / "run")
    lrs = [float(lr) for _, lr in _steps(tmp_path / "run").values()]
    assert lrs[:5] == pytest.approx([0.0025, 0.005, 0.0075, 0.01, 0.01], rel=1e-12)


def test_plateau_from_yaml_lowers_the_lr_when_validation_stalls(tiny_config, tmp_path,
                                                                monkeypatch):
    tiny_config["schedule"] = {"name": "plateau", "plateau_patience": 0, "plateau_factor": 0.5}
    tiny_config["train"]["max_epochs"] = 4
    real = loop.evaluate

    class _Stalled:
        """The real validation metrics with a loss that never improves."""

        def __init__(self, metrics):
            self.metrics = metrics

        def summary(self, prefix=""):
            return {**self.metrics.summary(prefix), f"{prefix}loss": 1.0}

    monkeypatch.setattr(loop, "evaluate", lambda *a, **k: _Stalled(real(*a, **k)))
    train(_from_yaml(tiny_config, tmp_path), tmp_path / "run")
    by_epoch = {}
    for step, (_, lr) in _steps(tmp_path / "run").items():
        by_epoch.setdefault((step - 1) // 5, set()).add(float(lr))
    # evaluation 1 sets the best, each later one is a plateau (patience 0): lr halves
    assert by_epoch == {0: {0.01}, 1: {0.01}, 2: {0.005}, 3: {0.0025}}

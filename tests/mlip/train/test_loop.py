import csv
import json
import math

import pytest
import torch

import mlip.train.loop as loop
from mlip.errors import CheckpointMismatchError, ConfigError
from mlip.models import load_model
from mlip.train import BatchTooLargeError, TrainingDivergedError, train
from mlip.train.schedule import LRSchedule


def _losses(run_dir):
    with open(run_dir / "steps.csv") as handle:
        return {int(r["step"]): r["loss"] for r in csv.DictReader(handle)}


def test_run_writes_metrics_checkpoints_and_a_loadable_best_model(
    tiny_config, tmp_path, bpa_frames
):
    best = train(tiny_config, tmp_path / "run")
    run = tmp_path / "run"
    for name in (
        "config.yaml",
        "last.ckpt",
        "best.pt",
        "final.pt",
        "metrics.jsonl",
        "metrics.csv",
        "steps.csv",
    ):
        assert (run / name).is_file(), name
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[-1]["step"] == 10  # 18 training frames in batches of 4: 5 steps per epoch
    assert rows[0]["valid_stress_rmse"] is None  # no stress labels: NaN, written as null
    model = load_model(best)
    assert model.registry_name == "lennard_jones"
    # E0 are the isolated-atom energies of the bundled file
    assert float(model.reference_energies[model.species.index(6)]) == pytest.approx(
        -1029.4889999855063
    )
    best_row = min(rows, key=lambda r: r["valid_loss"])
    assert torch.load(best, weights_only=True)["extra"]["step"] == best_row["step"]


def test_resume_continues_bit_for_bit(tiny_config, tmp_path):
    tiny_config["train"]["max_steps"] = 8
    train(tiny_config, tmp_path / "straight")
    tiny_config["train"]["max_steps"] = 4
    train(tiny_config, tmp_path / "split")
    train(None, tmp_path / "split", overrides=["train.max_steps=8"], resume=True)
    straight, split = _losses(tmp_path / "straight"), _losses(tmp_path / "split")
    assert len(straight) == 8
    assert split == straight  # identical repr of every float64 loss
    a = torch.load(tmp_path / "straight" / "final.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "split" / "final.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cosine_fit_to_time_sizes_the_decay_to_the_budget(tiny_config, tmp_path):
    tiny_config["schedule"] = {"name": "cosine", "fit_to_time": True}
    tiny_config["train"]["max_time_s"] = 1e-6  # the first step exhausts the budget
    train(tiny_config, tmp_path / "run")
    state = torch.load(tmp_path / "run" / "last.ckpt", weights_only=False)["schedule"]
    assert state["fitted"] and state["total_steps"] == 2  # one step taken: the decay ends next
    tiny_config["schedule"] = {"name": "plateau", "fit_to_time": True}
    with pytest.raises(ConfigError, match="allowed only with schedule.name cosine"):
        train(tiny_config, tmp_path / "bad")


def test_cosine_fit_to_time_is_refitted_after_every_epoch(tiny_config, tmp_path, monkeypatch):
    tiny_config["schedule"] = {"name": "cosine", "fit_to_time": True}
    tiny_config["train"].update(max_time_s=1e6, max_epochs=3)
    fits = []
    real = LRSchedule.fit_to_time

    def counting(self, step, elapsed_s, budget_s):
        fits.append(step)
        real(self, step, elapsed_s, budget_s)

    monkeypatch.setattr(LRSchedule, "fit_to_time", counting)
    train(tiny_config, tmp_path / "run")
    steps_per_epoch = fits[0]
    assert fits == [steps_per_epoch, 2 * steps_per_epoch, 3 * steps_per_epoch]


def test_nan_loss_stops_names_the_batch_and_keeps_last_good_checkpoint(
    tiny_config, tmp_path, monkeypatch
):
    tiny_config["train"]["max_steps"] = 8
    train(tiny_config, tmp_path / "reference")
    real = loop.loss_terms
    calls = {"n": 0}

    def poisoned(prediction, graph, config):
        calls["n"] += 1
        terms = real(prediction, graph, config)
        if calls["n"] == 5:
            total, count = terms["forces"]
            terms["forces"] = (total * math.nan, count)
        return terms

    monkeypatch.setattr(loop, "loss_terms", poisoned)
    with pytest.raises(
        TrainingDivergedError,
        match=r"the loss became nan at epoch 0, step 4, batch 4 "
        r"\(frames \['3bpa_train_300K.xyz:\d+'.*last good checkpoint .*last.ckpt is kept. "
        r"Lower the learning rate \(optimizer.lr is 0.01; try --set optimizer.lr=0.001\)",
    ):
        train(tiny_config, tmp_path / "run")
    state = torch.load(tmp_path / "run" / "last.ckpt", weights_only=True)
    assert state["progress"]["step"] == 3
    assert all(torch.isfinite(v).all() for v in state["model"]["state_dict"].values())
    monkeypatch.setattr(loop, "loss_terms", real)
    train(None, tmp_path / "run", resume=True)  # from step 3, as if it never broke
    assert _losses(tmp_path / "run") == _losses(tmp_path / "reference")


def test_out_of_memory_names_the_batch_size(tiny_config, tmp_path, monkeypatch):
    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(loop, "loss_terms", oom)
    with pytest.raises(
        BatchTooLargeError,
        match=r"out of memory on a batch of 4 frames, 108 atoms and \d+ edges "
        r"\(data.batch_size = 4, data.max_atoms_per_batch = None\); lower data.batch_size",
    ):
        train(tiny_config, tmp_path / "run")


def test_force_weight_without_forces_fails_before_training(tiny_config, tmp_path):
    tiny_config["data"]["train"] = tiny_config["data"]["isolated_atoms"]
    tiny_config["data"]["valid_fraction"] = 0.5
    with pytest.raises(
        ConfigError,
        match=r"loss.forces_weight = 100.0 but no training frame of .*3bpa_iso_atoms.xyz "
        r"has forces; set loss.forces_weight: 0",
    ):
        train(tiny_config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_fresh_run_refuses_a_used_directory_and_resume_needs_a_checkpoint(tiny_config, tmp_path):
    tiny_config["train"]["max_steps"] = 1
    train(tiny_config, tmp_path / "run")
    with pytest.raises(ConfigError, match="already holds a training run"):
        train(tiny_config, tmp_path / "run")
    with pytest.raises(CheckpointMismatchError, match="cannot resume: .*last.ckpt does not exist"):
        train(None, tmp_path / "empty", resume=True)


def test_unknown_model_hyperparameter_is_named(tiny_config, tmp_path):
    tiny_config["model"]["sigmaa"] = 1.0
    with pytest.raises(
        ConfigError,
        match=r"unknown hyper-parameter 'sigmaa' for model 'lennard_jones' "
        r"\(did you mean 'sigma'\?\)",
    ):
        train(tiny_config, tmp_path / "run")


def test_non_finite_weights_are_never_written(tiny_config, tmp_path, monkeypatch):
    tiny_config["train"]["max_steps"] = 4
    real_step = torch.optim.Adam.step
    calls = {"n": 0}

    def corrupting_step(self, *args, **kwargs):
        out = real_step(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 4:  # finite gradients, yet the update overflows
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(math.inf)
        return out

    monkeypatch.setattr(torch.optim.Adam, "step", corrupting_step)
    with pytest.raises(TrainingDivergedError, match=r"non-finite weights \(.*\) at step 4; "
                       r"last.ckpt was not written"):
        train(tiny_config, tmp_path / "run")
    state = torch.load(tmp_path / "run" / "last.ckpt", weights_only=True)
    assert state["progress"]["step"] == 3
    assert all(torch.isfinite(v).all() for v in state["model"]["state_dict"].values())

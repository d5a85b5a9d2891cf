import csv

import ase.io
import pytest
import torch

from mlip.data import import_files, make_split
from mlip.errors import ConfigError
from mlip.train import train
from mlip.train.records import read_metrics


def test_training_reads_a_split_store(tiny_config, tmp_path, bpa_frames):
    ase.io.write(tmp_path / "bpa.xyz", bpa_frames)
    import_files([tmp_path / "bpa.xyz"], tmp_path / "store.h5")
    make_split(
        tmp_path / "store.h5", fractions=(0.6, 0.2, 0.2), by="frame", seed=0
    )  # 12 / 4 / 4 frames
    tiny_config["data"].update(train=str(tmp_path / "store.h5"), max_frames=None)
    train(tiny_config, tmp_path / "run")
    rows = read_metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == [3, 6]  # 12 training frames, batches of 4, 2 epochs


def test_force_weight_on_a_store_without_forces_is_refused(tiny_config, tmp_path):
    frames = ase.io.read(tiny_config["data"]["isolated_atoms"], index=":")
    ase.io.write(tmp_path / "iso.xyz", frames + frames)
    import_files([tmp_path / "iso.xyz"], tmp_path / "store.h5")
    tiny_config["data"].update(train=str(tmp_path / "store.h5"), max_frames=None)
    with pytest.raises(
        ConfigError,
        match=r"loss.forces_weight = 100.0 but no training frame of .*store.h5 "
        r"has forces; set loss.forces_weight: 0",
    ):
        train(tiny_config, tmp_path / "run")


def _losses(run_dir):
    with open(run_dir / "steps.csv") as handle:
        return {int(r["step"]): r["loss"] for r in csv.DictReader(handle)}


def test_streaming_a_store_trains_and_resumes_bit_for_bit(tiny_config, tmp_path, bpa_frames):
    ase.io.write(tmp_path / "bpa.xyz", bpa_frames)
    import_files([tmp_path / "bpa.xyz"], tmp_path / "store.h5")
    make_split(tmp_path / "store.h5", fractions=(0.6, 0.2, 0.2), by="frame", seed=0)
    tiny_config["data"].update(train=str(tmp_path / "store.h5"), max_frames=None, streaming=True,
                               max_atoms_per_batch=4 * 27)
    tiny_config["train"]["max_steps"] = 5
    train(tiny_config, tmp_path / "straight")
    assert [r["step"] for r in read_metrics(tmp_path / "straight")] == [3, 5]  # 12 frames / 4
    tiny_config["train"]["max_steps"] = 2
    train(tiny_config, tmp_path / "split")
    train(None, tmp_path / "split", overrides=["train.max_steps=5"], resume=True)
    assert _losses(tmp_path / "split") == _losses(tmp_path / "straight")
    in_memory = dict(tiny_config, data=dict(tiny_config["data"], streaming=False))
    best = train(in_memory, tmp_path / "memory")
    a = torch.load(best, weights_only=True)["extra"]["statistics"]
    b = torch.load(tmp_path / "straight" / "best.pt", weights_only=True)["extra"]["statistics"]
    assert a["scale"] == pytest.approx(b["scale"], rel=1e-12)
    assert a["shift"] == pytest.approx(b["shift"], rel=1e-12)
    assert a["avg_num_neighbors"] == pytest.approx(b["avg_num_neighbors"], rel=1e-12)


def test_streaming_needs_a_single_split_store(tiny_config, tmp_path):
    tiny_config["data"]["streaming"] = True
    message = "data.streaming needs data.train to be one snapshot store, got .*3bpa_train_300K.xyz"
    with pytest.raises(ConfigError, match=message):
        train(tiny_config, tmp_path / "run")


def test_eval_of_one_store_split(tiny_config, tmp_path, bpa_frames):
    from mlip.train.evaluate import evaluate_potential

    ase.io.write(tmp_path / "bpa.xyz", bpa_frames)
    import_files([tmp_path / "bpa.xyz"], tmp_path / "store.h5")
    make_split(tmp_path / "store.h5", fractions=(0.6, 0.2, 0.2), by="frame", seed=0)
    tiny_config["train"]["max_steps"] = 1
    best = train(tiny_config, tmp_path / "run")
    table, plots = evaluate_potential(best, tmp_path / "store.h5", tmp_path / "eval", split="test")
    assert table.startswith("4 frames")  # 20 frames, 20 % test
    assert len(plots) == 2
    message = r"--split test: .*bpa.xyz is not a snapshot store with a split"
    with pytest.raises(ConfigError, match=message):
        evaluate_potential(best, tmp_path / "bpa.xyz", tmp_path / "eval", split="test")


def test_finetuning_streams_a_store_like_frames_in_memory(tiny_config, tmp_path, bpa_frames):
    """Fine-tuning reads a streamed split through the same path: the same refitted E0 and
    statistics as from the same frames in memory."""
    ase.io.write(tmp_path / "bpa.xyz", bpa_frames)
    import_files([tmp_path / "bpa.xyz"], tmp_path / "store.h5")
    make_split(tmp_path / "store.h5", fractions=(0.6, 0.2, 0.2), by="frame", seed=0)
    tiny_config["train"]["max_steps"] = 1
    base = train(tiny_config, tmp_path / "base")
    tiny_config["model"] = {}
    tiny_config["finetune"] = {"from": str(base)}
    tiny_config["data"].pop("isolated_atoms")
    tiny_config["data"].update(train=str(tmp_path / "store.h5"), max_frames=None)
    statistics = {}
    for streaming in (True, False):
        tiny_config["data"]["streaming"] = streaming
        best = train(tiny_config, tmp_path / f"tuned-{streaming}")
        statistics[streaming] = torch.load(best, weights_only=True)["extra"]["statistics"]
    streamed, in_memory = statistics[True], statistics[False]
    assert streamed["e0_method"] == in_memory["e0_method"] == "refit_residual"
    for z, e in in_memory["e0"].items():
        assert streamed["e0"][z] == pytest.approx(e, rel=1e-9, abs=1e-9)
    for name in ("scale", "shift", "avg_num_neighbors"):
        assert streamed[name] == pytest.approx(in_memory[name], rel=1e-9), name

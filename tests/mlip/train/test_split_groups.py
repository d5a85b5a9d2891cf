"""The train/valid split of a file keeps the frames of one group together (data.split_key)
and says when frames carry no group id."""

from __future__ import annotations

import logging

import ase.io
import pytest

from mlip.errors import ConfigError
from mlip.train.config import TrainingConfig
from mlip.train.setup import prepare_data


def _data(tiny_config, path, **changes):
    config = TrainingConfig.load({**tiny_config, "data": {**tiny_config["data"], "train": str(path),
                                                          **changes}})
    return config.data


@pytest.fixture()
def runs_file(bpa_frames, tmp_path):
    """20 3BPA frames in 5 'MD runs' of 4 consecutive frames (info key ``run``)."""
    frames = [atoms.copy() for atoms in bpa_frames]
    for k, (atoms, source) in enumerate(zip(frames, bpa_frames)):
        atoms.calc = source.calc
        atoms.info["run"] = k // 4
    path = tmp_path / "runs.xyz"
    ase.io.write(path, frames)
    return path


def _runs(part) -> set[str]:
    return set(part.system_ids())


def test_split_key_keeps_each_run_on_one_side(tiny_config, runs_file):
    splits = prepare_data(_data(tiny_config, runs_file, split_key="run", max_frames=None,
                                valid_fraction=0.4))
    train, valid = _runs(splits.train), _runs(splits.valid)
    assert train and valid and not train & valid
    assert train | valid == {str(k) for k in range(5)}
    assert len(splits.valid) % 4 == 0


def test_split_key_missing_from_frames_is_named(tiny_config, runs_file):
    with pytest.raises(ConfigError, match=r"data.split_key = 'temperature': 20 of 20 frames"):
        prepare_data(_data(tiny_config, runs_file, split_key="temperature", max_frames=None))


def test_frames_without_group_id_are_warned_about(tiny_config, runs_file, caplog):
    with caplog.at_level(logging.WARNING, logger="mlip.train.setup"):
        prepare_data(_data(tiny_config, runs_file, max_frames=None))
    assert "20 of 20 frames" in caplog.text and "data.split_key" in caplog.text


def test_file_training_split_reads_like_a_streamed_one(tiny_config, runs_file):
    """prepare_data turns a file into a store split: seeded BlockBatchSampler batches of at most
    batch_size frames covering the split once, named by store frame, resumable at any batch;
    the validation split is batched the same way."""
    splits = prepare_data(_data(tiny_config, runs_file, split_key="run", max_frames=None,
                                batch_size=3), seed=5)
    train = splits.train
    expected = train.batch_indices(1)
    assert expected == train.batch_indices(1) and expected != train.batch_indices(2)
    assert sorted(i for b in expected for i in b) == train.store.split_indices("train").tolist()
    got = list(train.batches(1))
    assert train.n_batches(1) == len(got) == len(expected)
    for (number, names, batch), indices in zip(got, expected):
        assert names == train.frame_names(indices) and names[0].startswith("runs.xyz:")
        assert batch.n_graphs == len(indices) <= 3
    assert [n for n, *_ in train.batches(1, start=2)] == list(range(2, len(got)))
    assert splits.valid.n_batches(0) == -(-len(splits.valid) // 3)

import ase.io
import pytest
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

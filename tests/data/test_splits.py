"""What a split groups by: trajectory ids (warned about when missing), source files, config_type."""

import logging

import ase.io
import numpy as np

from mlip.cli import main
from mlip.data import SnapshotStore, import_files, make_split


def _md_files(tmp_path, bundled_file, n_files=4, per_file=5):
    """``n_files`` extxyz files of consecutive frames with no trajectory id; config_type = file."""
    frames = ase.io.read(bundled_file("3bpa_train_300K.xyz"), index=f":{n_files * per_file}")
    paths = []
    for f in range(n_files):
        part = frames[f * per_file:(f + 1) * per_file]
        for atoms in part:
            atoms.info["config_type"] = f"run{f}"
        paths.append(tmp_path / f"run{f}.xyz")
        ase.io.write(paths[-1], part)
    import_files(paths, tmp_path / "store.h5")
    return tmp_path / "store.h5"


def _splits_per(store_path, column):
    store = SnapshotStore(store_path)
    values = store.read(np.arange(len(store)), (column,)).frames[column]
    codes = np.asarray(store.split_codes())
    return {v: set(codes[values == v].tolist()) for v in set(values.tolist())}


def test_by_trajectory_warns_when_frames_carry_no_id(tmp_path, bundled_file, caplog):
    store = _md_files(tmp_path, bundled_file)
    with caplog.at_level(logging.WARNING, logger="mlip.data"):
        make_split(store, (0.5, 0.25, 0.25), by="trajectory", seed=0)
    assert "20 of 20 frames of" in caplog.text and "carry no trajectory id" in caplog.text
    entry = SnapshotStore(store).manifest["split"]
    assert entry["frames_without_group_id"] == 20 and entry["n_groups"] == 20


def test_by_source_and_by_config_type_keep_groups_together(tmp_path, bundled_file, caplog):
    store = _md_files(tmp_path, bundled_file)
    for by, column in (("source", "source"), ("config_type", "config_type")):
        with caplog.at_level(logging.WARNING, logger="mlip.data"):
            counts = make_split(store, (0.5, 0.25, 0.25), by=by, seed=1)
        assert "carry no trajectory id" not in caplog.text
        assert counts == {"train": 10, "val": 5, "test": 5}
        groups = _splits_per(store, column)
        assert len(groups) == 4 and all(len(codes) == 1 for codes in groups.values())
        assert SnapshotStore(store).manifest["split"]["n_groups"] == 4


def test_cli_says_what_the_split_grouped_by(tmp_path, bundled_file, capsys):
    store = _md_files(tmp_path, bundled_file)
    assert main(["data", "split", str(store), "--by", "source", "--fractions", "0.5", "0.5"]) == 0
    assert capsys.readouterr().out.startswith("split by source (4 groups): train=10 val=10")

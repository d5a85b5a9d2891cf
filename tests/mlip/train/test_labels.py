"""Training on frames with partial labels, species and E0 checks (issue 15.3, 23.1, 23.7)."""

import ase.io
import numpy as np
import pytest

from mlip.data import SnapshotStore, import_files, make_split
from mlip.data.schema import LABEL_BITS
from mlip.errors import ConfigError
from mlip.train import train
from mlip.train.records import read_metrics

#: E0 that leave the HfO2 interaction energy near zero (eV; the fit cannot separate Hf from O).
_HFO2_E0 = {"Hf": -28.9, "O": -28.9}


def _hfo2(hfo2_frames, with_stress):
    """Small HfO2 cells (the 5 bundled ones, cycled); frame k keeps its stress when
    ``with_stress[k]``."""
    small = [a for a in hfo2_frames if len(a) == 12]
    frames = []
    for k, keep in enumerate(with_stress):
        original = small[k % len(small)]
        atoms = original.copy()
        atoms.calc = type(original.calc)(atoms, **original.calc.results)
        if not keep:
            del atoms.calc.results["stress"]
        frames.append(atoms)
    return frames


def _config(tiny_config, train_path, **data):
    tiny_config["data"] = {"train": str(train_path), "cutoff": 4.0, "batch_size": 1,
                           "e0": dict(_HFO2_E0), **data}
    tiny_config["train"]["max_epochs"] = 1
    return tiny_config


def test_frames_with_and_without_stress_train_in_memory(tiny_config, tmp_path, hfo2_frames):
    frames = _hfo2(hfo2_frames, [True, False, True, False, True, False])
    ase.io.write(tmp_path / "train.xyz", frames[:4])
    ase.io.write(tmp_path / "valid.xyz", frames[4:])
    train(_config(tiny_config, tmp_path / "train.xyz", valid=str(tmp_path / "valid.xyz")),
          tmp_path / "run")
    row = read_metrics(tmp_path / "run")[-1]
    assert row["step"] == 4  # batches of one frame: two of them have no stress label
    assert (row["valid_energy_frames"], row["valid_forces_frames"]) == (2, 2)
    assert row["valid_stress_frames"] == 1 and row["valid_stress_rmse"] > 0
    assert row["train_stress_frames"] == 2 and row["train_energy_frames"] == 4


def test_frames_with_and_without_stress_train_streaming(tiny_config, tmp_path, hfo2_frames):
    ase.io.write(tmp_path / "all.xyz", _hfo2(hfo2_frames, [True, False] * 3))
    import_files([tmp_path / "all.xyz"], tmp_path / "store.h5")
    make_split(tmp_path / "store.h5", fractions=(0.5, 0.5), by="frame", seed=0)
    store = SnapshotStore(tmp_path / "store.h5")
    mask = np.asarray(store.read(np.arange(len(store)), ("label_mask",)).frames["label_mask"])
    stressed = {name: int((mask[store.split_indices(name)] & LABEL_BITS["stress"] > 0).sum())
                for name in ("train", "val")}
    store.close()
    assert 0 < stressed["train"] < 3  # the training split mixes both kinds of frame
    config = _config(tiny_config, tmp_path / "store.h5", streaming=True, max_atoms_per_batch=12)
    train(config, tmp_path / "run")
    row = read_metrics(tmp_path / "run")[-1]
    assert row["step"] == 3
    assert row["valid_stress_frames"] == stressed["val"] and row["valid_energy_frames"] == 3
    assert row["train_stress_frames"] == stressed["train"]


def test_an_element_only_in_validation_is_refused(tiny_config, tmp_path, hfo2_frames, bpa_frames):
    ase.io.write(tmp_path / "train.xyz", bpa_frames[:6])
    ase.io.write(tmp_path / "valid.xyz", bpa_frames[6:8] + _hfo2(hfo2_frames, [True] * 3))
    tiny_config["data"].update(
        train=str(tmp_path / "train.xyz"), valid=str(tmp_path / "valid.xyz"), max_frames=None
    )
    with pytest.raises(ConfigError, match=r"missing from the training split .*: Hf in 3 "
                       r"validation frame\(s\) of .*valid.xyz\. The model's species"):
        train(tiny_config, tmp_path / "run")


def test_an_underdetermined_e0_fit_names_the_elements(tiny_config, tmp_path):
    tiny_config["data"].pop("isolated_atoms")  # one molecule: H, C, N, O counts are proportional
    with pytest.raises(ConfigError, match=r"cannot fit E0 by least squares on .*3bpa_train_300K"
                       r".*do not separate the E0 of H, C, N, O .*data.isolated_atoms.*data.e0"):
        train(tiny_config, tmp_path / "run")


def test_an_underdetermined_e0_fit_of_a_streamed_store_names_the_elements(
    tiny_config, tmp_path, hfo2_frames
):
    ase.io.write(tmp_path / "all.xyz", _hfo2(hfo2_frames, [True] * 4))
    import_files([tmp_path / "all.xyz"], tmp_path / "store.h5")
    make_split(tmp_path / "store.h5", fractions=(0.5, 0.5), by="frame", seed=0)
    config = _config(tiny_config, tmp_path / "store.h5", streaming=True, max_atoms_per_batch=12)
    config["data"]["e0"] = "least_squares"
    with pytest.raises(ConfigError, match=r"do not separate the E0 of O, Hf"):
        train(config, tmp_path / "run")


def _relabel(frames, energy, forces):
    """Copies of ``frames`` whose labels sit under other names (info/arrays, no calculator)."""
    out = []
    for original in frames:
        atoms = original.copy()
        atoms.info[energy] = original.get_potential_energy()
        atoms.arrays[forces] = original.get_forces()
        out.append(atoms)
    return out


def test_mace_ref_keys_are_read_by_train_and_eval(tiny_config, tmp_path, bpa_frames):
    from mlip.train.evaluate import evaluate_potential

    ase.io.write(tmp_path / "ref.xyz", _relabel(bpa_frames[:8], "REF_energy", "REF_forces"))
    tiny_config["data"].update(train=str(tmp_path / "ref.xyz"), max_frames=None)
    tiny_config["train"]["max_steps"] = 2
    best = train(tiny_config, tmp_path / "run")
    row = read_metrics(tmp_path / "run")[-1]
    assert row["valid_energy_frames"] == 2 and row["valid_forces_frames"] == 2
    table, _ = evaluate_potential(best, tmp_path / "ref.xyz", tmp_path / "eval")
    assert table.splitlines()[-1].split()[-1] == "8/8/0"  # frames E/F/S


def test_label_key_overrides(tiny_config, tmp_path, bpa_frames):
    ase.io.write(tmp_path / "mine.xyz", _relabel(bpa_frames[:8], "my_E", "my_F"))
    tiny_config["data"].update(train=str(tmp_path / "mine.xyz"), max_frames=None,
                               energy_key="my_E", forces_key="my_F")
    tiny_config["train"]["max_steps"] = 2
    train(tiny_config, tmp_path / "run")
    assert read_metrics(tmp_path / "run")[-1]["valid_forces_frames"] == 2


def test_a_garbage_data_file_is_a_one_line_error(tiny_config, tmp_path):
    (tmp_path / "garbage.xyz").write_bytes(bytes(range(256)) * 8)
    tiny_config["data"].update(train=str(tmp_path / "garbage.xyz"), max_frames=None)
    with pytest.raises(ConfigError, match=r"cannot read data file .*garbage.xyz \(") as error:
        train(tiny_config, tmp_path / "run")
    assert "\n" not in str(error.value)


def _first_loss(run_dir):
    import csv

    with open(run_dir / "steps.csv") as handle:
        return float(next(csv.DictReader(handle))["loss"])


def test_config_type_weights_apply_when_streaming(tiny_config, tmp_path, bpa_frames):
    frames = [a.copy() for a in bpa_frames[:8]]
    for atoms, original in zip(frames, bpa_frames):
        atoms.calc = type(original.calc)(atoms, **original.calc.results)
        atoms.info["config_type"] = "md"
    ase.io.write(tmp_path / "md.xyz", frames)
    import_files([tmp_path / "md.xyz"], tmp_path / "store.h5")
    make_split(tmp_path / "store.h5", fractions=(0.5, 0.5), by="frame", seed=0)
    tiny_config["data"].update(train=str(tmp_path / "store.h5"), max_frames=None, streaming=True,
                               max_atoms_per_batch=4 * 27)
    tiny_config["train"]["max_steps"] = 1
    train(tiny_config, tmp_path / "plain")
    tiny_config["data"]["config_type_weights"] = {"md": 2.0}
    train(tiny_config, tmp_path / "weighted")
    assert _first_loss(tmp_path / "weighted") == pytest.approx(
        2 * _first_loss(tmp_path / "plain"), rel=1e-12
    )
    tiny_config["data"]["config_type_weights"] = {"bulk": 2.0}
    with pytest.raises(ConfigError, match=r"config types \['bulk'\] that no frame of .*"
                       r"\(train split\) has \(present: \['md'\]\)"):
        train(tiny_config, tmp_path / "bad")


def test_the_training_split_keeps_a_trajectory_id_of_info_together(tmp_path, bpa_frames):
    from mlip.train.config import TrainingConfig
    from mlip.train.data import train_splits

    frames = [a.copy() for a in bpa_frames[:12]]
    for k, atoms in enumerate(frames):
        atoms.info["trajectory"] = f"run{k // 3}"
    ase.io.write(tmp_path / "runs.xyz", frames)
    data = TrainingConfig.load({"model": {"name": "lennard_jones"}, "data": {
        "train": str(tmp_path / "runs.xyz"), "cutoff": 4.0, "valid_fraction": 0.5,
        "test_fraction": 0.0, "split_seed": 0}}).data
    parts = train_splits(data, seed=0)[:2]
    groups = [set(p.system_ids()) for p in parts]
    assert [len(p) for p in parts] == [6, 6] and [len(g) for g in groups] == [2, 2]
    assert groups[0] | groups[1] == {"run0", "run1", "run2", "run3"}

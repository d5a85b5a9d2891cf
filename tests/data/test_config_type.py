"""``config_type`` is kept by the store (import, read back, copied into a training store)."""

import ase.io

from mlip.data import SnapshotStore, import_files
from mlip.train.data import read_atoms


def test_config_type_round_trips_through_the_store(tmp_path, bundled_file):
    frames = ase.io.read(bundled_file("3bpa_train_300K.xyz"), index=":4")
    for k, atoms in enumerate(frames[:3]):
        atoms.info["config_type"] = ["md", "relax", "md"][k]
    ase.io.write(tmp_path / "typed.xyz", frames)
    import_files([tmp_path / "typed.xyz"], tmp_path / "store.h5", shard_frames=2)
    store = SnapshotStore(tmp_path / "store.h5")
    back = store.to_ase()
    assert [a.info.get("config_type") for a in back] == ["md", "relax", "md", None]
    assert list(store.read([3, 1], ("config_type",)).frames["config_type"]) == ["", "relax"]
    store.close()
    assert [a.info.get("config_type") for a in read_atoms(tmp_path / "store.h5")] == [
        "md", "relax", "md", None]

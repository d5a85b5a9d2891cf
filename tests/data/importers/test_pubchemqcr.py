"""PubChemQCR LMDB importer on a tiny synthetic LMDB in the released layout."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest

from mlip.data import SnapshotStore, import_files
from mlip.errors import ConfigError, UnknownElementError
from mlip.units import Bohr, Hartree

lmdb = pytest.importorskip("lmdb")


def _step(symbols, shift, energy):
    coords = [
        {"atom": s, "x": 0.1 * i + shift, "y": 0.0, "z": 0.5 * i, "charge": 0.0}
        for i, s in enumerate(symbols)
    ]
    grad = [
        {"atom": s, "dx": 0.01 * (i + 1), "dy": -0.02, "dz": 0.0} for i, s in enumerate(symbols)
    ]
    return {"coordinates": coords, "energy": energy, "gradient": grad}


def _write_lmdb(path, molecules):
    env = lmdb.open(str(path), subdir=False, map_size=1 << 24)
    with env.begin(write=True) as txn:
        for cid, value in molecules.items():
            txn.put(cid.encode(), gzip.compress(pickle.dumps(value)))
    env.close()


MOLECULES = {
    "000000007": {
        "pm3": [_step("CO", 0.0, -1.0)],
        "hf": [_step("CO", 0.0, -2.0)],
        "DFT_1st": None,
        "DFT_2nd": [_step("CO", 0.1, -113.1), _step("CO", 0.2, -113.2)],
    },
    "000015111": {
        "pm3": [],
        "hf": [],
        "DFT_1st": [_step("HHO", 0.0, -76.3)],
        "DFT_2nd": [_step("HHO", 0.05, -76.4)],
    },
}


def test_dft_stages_are_imported_in_ev(tmp_path):
    _write_lmdb(tmp_path / "Data06.lmdb", MOLECULES)
    import_files([tmp_path / "Data06.lmdb"], tmp_path / "s.h5")
    store = SnapshotStore(tmp_path / "s.h5")
    b = store.read(np.arange(len(store)))
    assert len(store) == 4
    assert b.frames["system"].tolist() == ["000000007", "000000007", "000015111", "000015111"]
    assert b.frames["lot"].tolist() == ["DFT_2nd", "DFT_2nd", "DFT_1st", "DFT_2nd"]
    assert b.frames["step"].tolist() == [0, 1, 0, 1]
    np.testing.assert_allclose(
        b.frames["energy"], np.array([-113.1, -113.2, -76.3, -76.4]) * Hartree, rtol=1e-15
    )
    assert b.atoms["numbers"].tolist() == [6, 8, 6, 8, 1, 1, 8, 1, 1, 8]
    np.testing.assert_allclose(
        b.atoms["forces"][0], [-0.01 * Hartree / Bohr, 0.02 * Hartree / Bohr, 0.0]
    )
    assert not b.frames["pbc"].any()


def test_unknown_element_names_molecule(tmp_path):
    _write_lmdb(tmp_path / "bad.lmdb", {"000000001": {"DFT_2nd": [_step(["C", "Xx"], 0.0, -1.0)]}})
    with pytest.raises(
        UnknownElementError, match="molecule 000000001 DFT_2nd: unknown element 'Xx'"
    ):
        import_files([tmp_path / "bad.lmdb"], tmp_path / "s.h5")


def _lots(store_path):
    store = SnapshotStore(store_path)
    return store.read(np.arange(len(store))).frames["lot"].tolist()


def test_stages_selectable_from_import_files(tmp_path):
    _write_lmdb(tmp_path / "Data06.lmdb", MOLECULES)
    import_files([tmp_path / "Data06.lmdb"], tmp_path / "a.h5", stages=["hf", "PM3"])
    assert _lots(tmp_path / "a.h5") == ["pm3", "hf"]  # optimisation order, not the given order
    import_files([tmp_path / "Data06.lmdb"], tmp_path / "b.h5", stages="2nd")
    assert _lots(tmp_path / "b.h5") == ["DFT_2nd", "DFT_2nd", "DFT_2nd"]


def test_stages_selectable_from_the_cli(tmp_path):
    from mlip.cli import main

    _write_lmdb(tmp_path / "Data06.lmdb", MOLECULES)
    code = main(["data", "import", str(tmp_path / "Data06.lmdb"), "-o", str(tmp_path / "s.h5"),
                 "--stage", "all"])
    assert code == 0
    assert _lots(tmp_path / "s.h5") == ["pm3", "hf", "DFT_2nd", "DFT_2nd", "DFT_1st", "DFT_2nd"]
    code = main(["data", "import", str(tmp_path / "Data06.lmdb"), "--stage", "hf", "--stage",
                 "pm3", "-o", str(tmp_path / "t.h5")])
    assert code == 0
    assert _lots(tmp_path / "t.h5") == ["pm3", "hf"]


def test_bad_stage_requests_are_refused(tmp_path):
    _write_lmdb(tmp_path / "Data06.lmdb", MOLECULES)
    with pytest.raises(ConfigError, match=r"unknown PubChemQCR stage 'b3lyp'; choose from pm3, "):
        import_files([tmp_path / "Data06.lmdb"], tmp_path / "s.h5", stages=["b3lyp"])
    (tmp_path / "x.xyz").write_text("1\nenergy=-1.0 pbc=\"F F F\"\nH 0 0 0\n")
    with pytest.raises(ConfigError, match="no source is PubChemQCR"):
        import_files([tmp_path / "x.xyz"], tmp_path / "t.h5", stages=["pm3"])

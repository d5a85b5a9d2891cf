"""LMDB sources: OC20 S2EF/IS2RE pickles (old and new torch_geometric), fairchem ASE-LMDB, layout
detection from the records, and refusal of unknown layouts and unsafe pickles."""

from __future__ import annotations

import json
import pickle
import sys
import types
import zlib

import numpy as np
import pytest
import torch
from ase.build import fcc111
from ase.constraints import FixAtoms
from ase.db.row import AtomsRow

from mlip.data import SnapshotStore, import_files
from mlip.data.importers.aselmdb import count_rows
from mlip.data.importers.oc20_lmdb import count_frames, read_oc20_lmdb
from mlip.data.importers.pipeline import detect_format
from mlip.errors import ConfigError

lmdb = pytest.importorskip("lmdb")

N = 5  # atoms per record
NUMBERS = [79, 79, 79, 8, 1]


def _fake_pyg(monkeypatch, new_layout: bool):
    """Register torch_geometric.data.{data,storage} with Data-like classes (for writing only)."""
    data_mod = types.ModuleType("torch_geometric.data.data")
    storage_mod = types.ModuleType("torch_geometric.data.storage")

    def make(module, name, body):
        cls = type(name, (), body)
        cls.__module__, cls.__qualname__ = module.__name__, name
        setattr(module, name, cls)
        return cls

    def storage_getstate(self):  # PyG >= 2: the weak parent reference is pickled as the object
        return {"_mapping": self._mapping, "_parent": self._parent}

    storage = make(storage_mod, "GlobalStorage", {"__getstate__": storage_getstate})
    edge_attr = make(data_mod, "DataEdgeAttr", {})
    tensor_attr = make(data_mod, "DataTensorAttr", {})

    def new_data(**fields):
        obj = data_cls.__new__(data_cls)
        if new_layout:
            store = storage.__new__(storage)
            store._mapping, store._parent = dict(fields), obj
            obj.__dict__.update(_store=store, _edge_attr_cls=edge_attr,
                                _tensor_attr_cls=tensor_attr, _edge_to_layout={})
        else:
            obj.__dict__.update(x=None, edge_attr=None, __num_nodes__=None, **fields)
        return obj

    data_cls = make(data_mod, "Data", {})
    package = types.ModuleType("torch_geometric")
    package_data = types.ModuleType("torch_geometric.data")
    for name, module in (("torch_geometric", package), ("torch_geometric.data", package_data),
                         ("torch_geometric.data.data", data_mod),
                         ("torch_geometric.data.storage", storage_mod)):
        monkeypatch.setitem(sys.modules, name, module)
    return new_data


def _s2ef_fields(k: int, new_keys: bool) -> dict:
    gen = torch.Generator().manual_seed(k)
    fields = {
        "pos": torch.rand(N, 3, generator=gen) * 4,
        "cell": torch.tensor([[[8.0, 0, 0], [0, 8.0, 0], [0, 0, 20.0]]]),
        "atomic_numbers": torch.tensor(NUMBERS, dtype=torch.float32),
        "natoms": N,
        "tags": torch.tensor([0, 1, 1, 2, 2]),
        "fixed": torch.tensor([1.0, 0, 0, 0, 0]),
        "sid": 1000 + k,
        "fid": torch.tensor(k),
        "edge_index": torch.zeros(2, 0, dtype=torch.long),
    }
    if not new_keys:  # numpy values as some converted LMDBs hold them
        fields.update(sid=np.int64(1000 + k), distances=np.linspace(1.0, 2.0, 4))
    energy, forces = -10.0 - k, torch.rand(N, 3, generator=gen) - 0.5
    fields.update({"energy": energy, "forces": forces} if new_keys else
                  {"y": energy, "force": forces})
    return fields


def _write(path, records, subdir=False, length=True):
    env = lmdb.open(str(path), subdir=subdir, map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i, value in enumerate(records):
            txn.put(str(i).encode("ascii"), value)
        if length:
            txn.put(b"length", pickle.dumps(len(records), protocol=-1))
    env.close()


def _oc20_lmdb(path, monkeypatch, new_layout, n=3, subdir=False, is2re=False):
    with monkeypatch.context() as m:
        new_data = _fake_pyg(m, new_layout)
        fields = [_is2re_fields(k) if is2re else _s2ef_fields(k, new_layout) for k in range(n)]
        records = [pickle.dumps(new_data(**f), protocol=-1) for f in fields]
    assert "torch_geometric" not in sys.modules
    _write(path, records, subdir=subdir)
    return fields


@pytest.mark.parametrize("new_layout", [True, False], ids=["pyg2-energy-forces", "pyg1-y-force"])
def test_oc20_s2ef_lmdb(tmp_path, monkeypatch, new_layout):
    src = tmp_path / "data.0000.lmdb"
    fields = _oc20_lmdb(src, monkeypatch, new_layout)
    assert detect_format(src) == "oc20-lmdb"
    import_files([src], tmp_path / "s.h5")
    store = SnapshotStore(tmp_path / "s.h5")
    b = store.read(np.arange(len(store)))
    assert len(store) == 3
    assert b.atoms["numbers"].tolist() == NUMBERS * 3
    positions = np.concatenate([f["pos"].numpy() for f in fields]).astype(np.float64)
    np.testing.assert_array_equal(b.atoms["positions"], positions)
    forces = np.concatenate([f["forces" if new_layout else "force"].numpy() for f in fields])
    np.testing.assert_array_equal(b.atoms["forces"], forces.astype(np.float64))
    assert b.frames["energy"].tolist() == [-10.0, -11.0, -12.0]
    assert b.frames["system"].tolist() == ["1000", "1001", "1002"]
    assert b.frames["step"].tolist() == [0, 1, 2]
    assert b.frames["pbc"].all()
    np.testing.assert_array_equal(b.frames["cell"][0], np.diag([8.0, 8.0, 20.0]))
    assert b.atoms["tags"].tolist() == [0, 1, 1, 2, 2] * 3
    assert b.atoms["fixed"].tolist() == [1, 0, 0, 0, 0] * 3
    atoms = store[0]  # fixed → FixAtoms on the way out
    assert [c.index.tolist() for c in atoms.constraints if isinstance(c, FixAtoms)] == [[0]]


def test_oc20_lmdb_folder_with_any_name(tmp_path, monkeypatch):
    """Detection reads the records: a folder LMDB (data.mdb) named like nothing known."""
    src = tmp_path / "whatever"
    src.mkdir()
    _oc20_lmdb(src, monkeypatch, new_layout=True, n=2, subdir=True)
    assert detect_format(src) == "oc20-lmdb"
    report = import_files([src], tmp_path / "s.h5")
    assert report.frames_written == 2


def _is2re_fields(k: int) -> dict:
    fields = _s2ef_fields(k, new_keys=False)
    del fields["y"], fields["force"], fields["fid"]
    fields.update(pos_relaxed=fields["pos"] + 0.25, y_init=1.5 + k, y_relaxed=-0.5 - k)
    return fields


def test_oc20_is2re_gives_initial_and_relaxed_frames(tmp_path, monkeypatch):
    src = tmp_path / "is2re.lmdb"
    fields = _oc20_lmdb(src, monkeypatch, new_layout=False, n=2, is2re=True)
    import_files([src], tmp_path / "s.h5")
    store = SnapshotStore(tmp_path / "s.h5")
    b = store.read(np.arange(len(store)))
    assert b.frames["energy"].tolist() == [1.5, -0.5, 2.5, -1.5]
    assert b.frames["system"].tolist() == ["1000", "1000", "1001", "1001"]
    assert b.frames["step"].tolist() == [0, 1, 0, 1]
    np.testing.assert_array_equal(store[1].positions, fields[0]["pos_relaxed"].numpy())
    assert np.isnan(b.atoms["forces"]).all()
    # resuming in the middle of a record starts at the right frame
    resumed = [(k, f["energy"]) for k, f, _ in read_oc20_lmdb(src, start=1)]
    assert resumed == [(1, -0.5), (2, 2.5), (3, -1.5)]
    assert count_frames(src) == 4


def test_cli_imports_an_oc20_lmdb(tmp_path, monkeypatch, capsys):
    from mlip.cli import main

    src = tmp_path / "data.0003.lmdb"
    _oc20_lmdb(src, monkeypatch, new_layout=True, n=2)
    assert main(["data", "import", str(src), "-o", str(tmp_path / "s.h5"),
                 "--energy-referencing", "oc20-adsorption"]) == 0
    assert "imported 2 frames" in capsys.readouterr().out
    assert SnapshotStore(tmp_path / "s.h5").manifest["metadata"]["energy_referencing"] == (
        "oc20-adsorption")


def test_unsafe_pickle_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (eval, (f"open({str(marker)!r}, 'w')",))

    _write(tmp_path / "evil.lmdb", [pickle.dumps(Evil(), protocol=-1)])
    with pytest.raises(ConfigError, match=r"unknown record layout; record b'0' holds a pickle "
                       r"that cannot be read safely \(refusing to load builtins\.eval"):
        import_files([tmp_path / "evil.lmdb"], tmp_path / "s.h5")
    assert not marker.exists()


@pytest.mark.parametrize("value, found", [
    (pickle.dumps({"atoms": [1, 2]}), r"holds a pickled dict with keys \['atoms'\]"),
    (b"\x00\x01plain bytes", r"holds 13 bytes starting b'\\x00\\x01plain"),
    (zlib.compress(b'{"a": 1}'), r"holds zlib-compressed JSON dict with keys \['a'\]"),
])
def test_unknown_lmdb_layout_names_what_was_found(tmp_path, value, found):
    _write(tmp_path / "x.lmdb", [value], length=False)
    with pytest.raises(ConfigError, match=r"x\.lmdb: unknown record layout; record b'0' " + found):
        import_files([tmp_path / "x.lmdb"], tmp_path / "s.h5")
    assert not (tmp_path / "s.h5").exists()


# ------------------------------------------------------------------ fairchem ASE-LMDB


def _row_bytes(atoms, kvp, dumps) -> bytes:
    """A row as fairchem's LMDBDatabase._write stores it (zlib-compressed JSON of the row)."""
    row = AtomsRow(atoms)
    row.ctime = 1.0
    dct = {k: row[k] for k in row.__dict__ if k[0] != "_" and k not in row._keys and k != "id"}
    dct["mtime"] = 1.0
    dct["key_value_pairs"] = kvp
    if atoms.constraints:
        dct["constraints"] = [c.todict() for c in atoms.constraints]
    dct["cell"] = np.asarray(dct["cell"])
    return zlib.compress(dumps(dct))


def _json_dumps(obj) -> bytes:
    def plain(o):
        return o.tolist() if hasattr(o, "tolist") else str(o)

    return json.dumps(obj, default=plain).encode()


def _slab(k: int):
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms = fcc111("Pt", size=(2, 2, 2), vacuum=6.0)
    atoms.rattle(0.05, seed=k)
    atoms.set_constraint(FixAtoms(indices=[0, 1, 2, 3]))
    forces = np.random.default_rng(k).normal(size=(len(atoms), 3))
    atoms.calc = SinglePointCalculator(atoms, energy=-40.0 - k, forces=forces,
                                       stress=np.arange(6.0) * 1e-3)
    return atoms


@pytest.mark.parametrize("encoder", ["json", "orjson"])
def test_aselmdb_rows_in_id_order_without_deleted(tmp_path, encoder):
    if encoder == "orjson":
        orjson = pytest.importorskip("orjson")

        def dumps(obj):
            return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
    else:
        dumps = _json_dumps
    slabs = [_slab(k) for k in range(4)]
    src = tmp_path / "test.aselmdb"
    env = lmdb.open(str(src), subdir=False, map_size=1 << 24)
    with env.begin(write=True) as txn:
        for idx, atoms in enumerate(slabs, start=1):
            if idx != 3:  # row 3 was deleted
                kvp = {"sid": f"random{idx}", "fid": 7 * idx}
                txn.put(str(idx).encode(), _row_bytes(atoms, kvp, dumps))
        txn.put(b"nextid", zlib.compress(dumps(5)))
        txn.put(b"deleted_ids", zlib.compress(dumps([3])))
        txn.put(b"metadata", zlib.compress(dumps({})))
    env.close()
    assert detect_format(src) == "aselmdb"
    assert count_rows(src) == 3
    import_files([src], tmp_path / "s.h5")
    store = SnapshotStore(tmp_path / "s.h5")
    b = store.read(np.arange(len(store)))
    assert b.frames["system"].tolist() == ["random1", "random2", "random4"]
    assert b.frames["step"].tolist() == [7, 14, 28]
    assert b.frames["energy"].tolist() == [-40.0, -41.0, -43.0]
    kept = [slabs[0], slabs[1], slabs[3]]
    np.testing.assert_array_equal(b.atoms["positions"], np.concatenate([a.positions for a in kept]))
    np.testing.assert_array_equal(
        b.atoms["forces"], np.concatenate([a.calc.results["forces"] for a in kept]))
    np.testing.assert_allclose(store[2].get_stress(), np.arange(6.0) * 1e-3, rtol=0, atol=1e-18)
    assert b.atoms["fixed"].tolist() == ([1] * 4 + [0] * 4) * 3

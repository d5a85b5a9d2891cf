"""Importers: key detection, bad frames (raise/skip), OC20 S2EF, ASE db, VASP, format detection."""

from __future__ import annotations

import lzma
from pathlib import Path

import ase.db
import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from mlip.data import LabelKeys, SnapshotStore, import_files
from mlip.data.importers import detect_format
from mlip.errors import ConfigError, InvalidStructureError, UnknownElementError


def _frame(k, n=3, **results):
    rng = np.random.default_rng(k)
    atoms = Atoms("H" * n, positions=rng.normal(size=(n, 3)) * 2, cell=np.eye(3) * 10, pbc=True)
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def _good(k):
    return _frame(k, energy=-1.0 - k, forces=np.full((3, 3), 0.1 * k))


XYZ_TEMPLATE = """3
Properties=species:S:1:pos:R:3:REF_forces:R:3 REF_energy={e} pbc="F F F"
H 0.0 0.0 0.0 {f} 0.0 0.0
H 1.0 0.0 0.0 0.0 0.0 0.0
{el} 0.0 1.0 0.0 0.0 0.0 0.0
"""


def test_ref_keys_are_auto_detected_and_configurable(tmp_path):
    path = tmp_path / "ref.xyz"
    path.write_text(
        XYZ_TEMPLATE.format(e=-3.5, f=0.25, el="O") + XYZ_TEMPLATE.format(e=-4.5, f=0.5, el="O")
    )
    import_files([path], tmp_path / "a.h5")
    store = SnapshotStore(tmp_path / "a.h5")
    assert store.read([0, 1]).frames["energy"].tolist() == [-3.5, -4.5]
    assert store[1].calc.results["forces"][0, 0] == 0.5
    import_files([path], tmp_path / "b.h5", keys=LabelKeys(energy="nope"))
    b = SnapshotStore(tmp_path / "b.h5").read([0])
    assert np.isnan(b.frames["energy"][0]) and b.frames["label_mask"][0] == 2


def test_virial_becomes_stress(tmp_path):
    atoms = _frame(0, energy=1.0)
    atoms.calc = None
    atoms.info["virial"] = np.arange(9.0).reshape(3, 3)
    atoms.info["REF_energy"] = 2.0
    ase.io.write(tmp_path / "v.xyz", [atoms], format="extxyz")
    import_files([tmp_path / "v.xyz"], tmp_path / "v.h5")
    stress = SnapshotStore(tmp_path / "v.h5").read([0]).frames["stress"][0]
    np.testing.assert_allclose(stress, -np.arange(9.0).reshape(3, 3) / 1000.0, rtol=1e-14)


def _bad_file(tmp_path):
    path = tmp_path / "bad.xyz"
    text = XYZ_TEMPLATE.format(e=-1, f=0.1, el="H") + XYZ_TEMPLATE.format(e=-2, f="nan", el="H")
    text += XYZ_TEMPLATE.format(e=-3, f=0.1, el="X") + XYZ_TEMPLATE.format(e=-4, f=0.2, el="H")
    path.write_text(text)
    return path


def test_bad_frame_stops_and_keeps_earlier_frames(tmp_path):
    src = _bad_file(tmp_path)
    with pytest.raises(InvalidStructureError, match=r"bad.xyz frame 1: non-finite forces"):
        import_files([src], tmp_path / "s.h5")
    store = SnapshotStore(tmp_path / "s.h5")
    assert len(store) == 1 and store.read([0]).frames["energy"][0] == -1
    with pytest.raises(InvalidStructureError, match="frame 1"):  # resuming retries the bad frame
        import_files([src], tmp_path / "s.h5")


def test_bad_frames_are_skipped_and_logged(tmp_path):
    src = _bad_file(tmp_path)
    report = import_files([src], tmp_path / "s.h5", on_error="skip")
    assert report.frames_written == 2 and report.frames_skipped == 2
    assert [f for _, f, _ in report.skipped] == [1, 2]
    assert "unknown element (Z=0)" in report.skipped[1][2]
    store = SnapshotStore(tmp_path / "s.h5")
    assert store.read([0, 1]).frames["energy"].tolist() == [-1, -4]
    assert store.manifest["n_skipped"] == 2 and store.manifest["skipped"][0]["frame"] == 1


def test_unknown_element_and_wrong_force_length(tmp_path):
    from mlip.data import FrameBuilder

    b = FrameBuilder()
    with pytest.raises(UnknownElementError, match="x.xyz frame 7: atom 1 has unknown element"):
        b.add(
            numbers=[1, 200],
            positions=np.zeros((2, 3)),
            cell=np.zeros((3, 3)),
            pbc=[0, 0, 0],
            where="x.xyz frame 7",
        )
    with pytest.raises(
        InvalidStructureError, match=r"x.xyz frame 8: forces have shape \(3, 3\), expected \(2, 3\)"
    ):
        b.add(
            numbers=[1, 1],
            positions=np.zeros((2, 3)),
            cell=np.zeros((3, 3)),
            pbc=[0, 0, 0],
            forces=np.zeros((3, 3)),
            where="x.xyz frame 8",
        )
    with pytest.raises(InvalidStructureError, match="frame 9: non-finite energy"):
        b.add(
            numbers=[1],
            positions=np.zeros((1, 3)),
            cell=np.zeros((3, 3)),
            pbc=[0, 0, 0],
            energy=float("inf"),
            where="frame 9",
        )
    assert len(b) == 0


def test_ase_db_import(tmp_path):
    db = ase.db.connect(tmp_path / "x.db")
    for k in range(4):
        db.write(_good(k), system_id=f"mol{k // 2}")
    import_files([tmp_path / "x.db"], tmp_path / "s.h5")
    store = SnapshotStore(tmp_path / "s.h5")
    assert len(store) == 4
    assert store.read(np.arange(4)).frames["system"].tolist() == ["mol0", "mol0", "mol1", "mol1"]
    assert store[3].get_potential_energy() == -4.0


def test_oc20_s2ef_chunk_with_xz_metadata(tmp_path):
    frames = []
    for k in range(3):
        atoms = _good(k)
        atoms.set_tags([0, 1, 2])
        frames.append(atoms)
    ase.io.write(tmp_path / "0.extxyz", frames, format="extxyz")
    with lzma.open(tmp_path / "0.txt.xz", "wt") as fh:
        fh.write("random11,frame0,-0.5\nrandom11,frame7,-0.5\nrandom22,frame3,1.25\n")
    assert detect_format(tmp_path / "0.extxyz") == "oc20"
    import_files(
        [tmp_path / "0.extxyz"], tmp_path / "s.h5", metadata={"energy_referencing": "total"}
    )
    b = SnapshotStore(tmp_path / "s.h5").read([0, 1, 2])
    assert b.frames["system"].tolist() == ["random11", "random11", "random22"]
    assert b.frames["step"].tolist() == [0, 7, 3]
    assert b.frames["reference_energy"].tolist() == [-0.5, -0.5, 1.25]
    assert b.atoms["tags"].tolist() == [0, 1, 2] * 3


def test_oc20_metadata_too_short(tmp_path):
    ase.io.write(tmp_path / "1.extxyz", [_good(0), _good(1)], format="extxyz")
    (tmp_path / "1.txt").write_text("random1,frame0,0.0\n")
    with pytest.raises(InvalidStructureError, match="1.txt has no line for frame 1"):
        import_files([tmp_path / "1.extxyz"], tmp_path / "s.h5")


VASP_DATA = Path(ase.__file__).parent / "test" / "testdata" / "vasp"


@pytest.mark.skipif(not (VASP_DATA / "vasprun_pstress.xml").exists(), reason="ASE test data absent")
def test_vasprun_through_pymatgen_matches_ase(tmp_path):
    src = VASP_DATA / "vasprun_pstress.xml"
    ref = ase.io.read(src, index=":", format="vasp-xml")
    import_files([src], tmp_path / "s.h5")
    store = SnapshotStore(tmp_path / "s.h5")
    assert len(store) == len(ref)
    for k, a in enumerate(ref):
        got = store[k]
        np.testing.assert_allclose(got.positions, a.positions, atol=1e-10)
        np.testing.assert_allclose(got.calc.results["forces"], a.get_forces(), atol=1e-10)
        np.testing.assert_allclose(got.get_stress(), a.get_stress(), atol=1e-10)
        assert got.get_potential_energy() == pytest.approx(a.get_potential_energy(), abs=1e-8)
        assert got.info["step"] == k


def test_format_detection_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot tell the format of .*data.bin"):
        detect_format(tmp_path / "data.bin")
    with pytest.raises(ConfigError, match="unknown format 'csv'"):
        ase.io.write(tmp_path / "a.xyz", [_good(0)], format="extxyz")
        import_files([tmp_path / "a.xyz"], tmp_path / "s.h5", fmt="csv")
    with pytest.raises(FileNotFoundError, match="no such input file"):
        import_files([tmp_path / "missing.xyz"], tmp_path / "s.h5")


def test_a_rejected_frame_leaves_the_builder_consistent():
    from mlip.data import FrameBuilder

    b = FrameBuilder()
    ok = dict(numbers=[1, 8], positions=np.zeros((2, 3)), cell=np.zeros((3, 3)), pbc=[0, 0, 0])
    b.add(**ok, energy=1.0)
    with pytest.raises(InvalidStructureError, match=r"f3: tags has shape \(3,\), expected \(2, \)"):
        b.add(**ok, atom_extras={"tags": [0, 1, 2]}, where="f3")
    with pytest.raises(InvalidStructureError, match=r"f4: unknown per-frame columns \['colour'\]"):
        b.add(**ok, colour="red", where="f4")
    b.add(**ok, energy=2.0, atom_extras={"tags": [0, 2]})
    batch = b.build()
    assert batch.frames["energy"].tolist() == [1.0, 2.0]
    assert batch.atoms["tags"].tolist() == [-1, -1, 0, 2]


@pytest.mark.skipif(not (VASP_DATA / "OUTCAR_example_1").exists(), reason="ASE test data absent")
def test_outcar_matches_ase(tmp_path):
    src = VASP_DATA / "OUTCAR_example_1"
    ref = ase.io.read(src, index=":", format="vasp-out")
    import_files([src], tmp_path / "s.h5")
    store = SnapshotStore(tmp_path / "s.h5")
    assert len(store) == len(ref)
    for k, a in enumerate(ref):
        got = store[k]
        assert np.array_equal(got.positions, a.positions)
        assert np.array_equal(got.calc.results["forces"], a.calc.results["forces"])
        assert got.get_potential_energy() == a.get_potential_energy()

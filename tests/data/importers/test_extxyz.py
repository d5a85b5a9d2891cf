"""The streaming extxyz reader gives exactly the records ASE's reader gives, frame by frame."""

from __future__ import annotations

import gzip

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms, FixCartesian
from ase.io.extxyz import XYZError

from mlip.data import LabelKeys
from mlip.data.importers.atoms import atoms_to_record, fields_to_record
from mlip.data.importers.extxyz import iter_extxyz, read_extxyz


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.dtype.kind == "f" or b.dtype.kind == "f":
            return a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
        return a.shape == b.shape and np.array_equal(a, b)
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (a != a and b != b)
    return a == b


def _assert_matches_ase(path, keys=LabelKeys(), start=0):
    reference = ase.io.read(path, index=f"{start}:", format="extxyz")
    got = list(iter_extxyz(path, start))
    assert [k for k, _ in got] == list(range(start, start + len(reference)))
    for (k, fields), atoms in zip(got, reference):
        rec, ref = fields_to_record(fields, keys, "w"), atoms_to_record(atoms, keys, "w")
        assert _same(rec, ref), (path, k, rec, ref)


@pytest.mark.parametrize(
    "name", ["3bpa_train_300K.xyz", "hfo2_scan_vasp.xyz", "3bpa_iso_atoms.xyz"]
)
def test_bundled_files_match_ase_exactly(bundled_file, name):
    _assert_matches_ase(bundled_file(name))


def _odd_frames() -> list[Atoms]:
    rng = np.random.default_rng(0)
    a = Atoms("H2O", positions=rng.normal(size=(3, 3)), cell=rng.normal(size=(3, 3)), pbc=True)
    a.calc = SinglePointCalculator(
        a,
        energy=-1.25,
        forces=rng.normal(size=(3, 3)),
        stress=rng.normal(size=6),
        charges=rng.normal(size=3),
        magmoms=rng.normal(size=3),
        dipole=rng.normal(size=3),
    )
    a.set_tags([0, 1, 2])
    a.info.update(system_id="traj-7", step=4, charge=-1, spin=2, weight=0.5, flag=True)
    a.arrays["label"] = np.array(["x", "y", "z"], dtype=object)
    a.arrays["mask"] = np.array([True, False, True])
    b = Atoms("Cu", positions=[[0.1, 0.2, 0.3]], cell=[2.0, 3.0, 4.0], pbc=[True, False, True])
    b.info["REF_energy"] = 3.0
    b.info["virial"] = rng.normal(size=(3, 3))  # written as 9 numbers, not symmetric
    c = Atoms("NaCl", positions=rng.normal(size=(2, 3)))
    c.set_constraint(FixAtoms(indices=[1]))  # one move_mask column
    d = Atoms("N2", positions=rng.normal(size=(2, 3)), charges=[0.5, -0.5])  # ASE's path
    d.set_constraint(FixCartesian(0, mask=[True, False, False]))  # three move_mask columns
    return [a, b, c, d]


def test_odd_columns_and_keys_match_ase(tmp_path):
    path = tmp_path / "odd.xyz"
    ase.io.write(path, _odd_frames(), format="extxyz")
    _assert_matches_ase(path)
    _assert_matches_ase(path, keys=LabelKeys(energy="REF_energy", virial="virial"), start=1)


def test_hand_written_variants_match_ase(tmp_path):
    text = (
        '2\nLattice="3 0 0 0 3 0 0 0 3" Properties=Z:I:1:pos:R:3 stress="1 2 3 4 5 6 7 8 9"\n'
        "8 0 0 0\n1 1 1 1\n"
        "1\n\nh 0.5 0.5 0.5\n"  # no Properties, lower-case symbol, empty comment
        "2\nenergy=-2.0 Properties=species:S:1:pos:R:3:forces:R:3\n"
        "He 0 0 0 1 2 3 99\nHe 1 1 1 4 5 6 99\n"  # extra trailing values: ASE ignores them
        "1\nenergy=1\nAr 0 0 0\nVEC1 5 0 0\nVEC2 0 5 0\nVEC3 0 0 5\n"
        "\ntrailing text after a blank line is not read\n"
    )
    plain, packed = tmp_path / "v.xyz", tmp_path / "v.xyz.gz"
    plain.write_text(text)
    with gzip.open(packed, "wt") as fh:
        fh.write(text)
    for path in (plain, packed):
        _assert_matches_ase(path)
    assert len(list(iter_extxyz(plain))) == 4


def test_default_system_ids_and_errors(tmp_path, bundled_file):
    path = tmp_path / "odd.xyz"
    ase.io.write(path, _odd_frames(), format="extxyz")
    ids = [ids for _, _, ids in read_extxyz(path)]
    assert ids == [{}] + [{"system": f"odd.xyz:{k}"} for k in (1, 2, 3)]
    bad = tmp_path / "bad.xyz"
    bad.write_text("2\nProperties=species:S:1:pos:R:3\nH 0 0 0\n")
    with pytest.raises(XYZError, match="Frame has 1 atoms, expected 2"):
        list(iter_extxyz(bad))
    bad.write_text("two\n\n")
    with pytest.raises(XYZError, match="Expected xyz header"):
        list(iter_extxyz(bad))

"""Every output path takes its format from its extension (relax, md, data export), or is refused."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator

from mlip.cli import main
from mlip.data import SnapshotStore
from mlip.errors import ConfigError
from mlip.io import FrameWriter, write_frames


@pytest.mark.parametrize("suffix", [".traj", ".xyz", ".extxyz", ".h5"])
def test_relax_output_format_follows_extension(files, suffix):
    out = files / f"relaxed{suffix}"
    code = main(["relax", str(files / "lj.pt"), str(files / "in.xyz"), "-o", str(out),
                 "--fmax", "0.05"])
    assert code == 0
    if suffix == ".h5":
        store = SnapshotStore(out)
        assert len(store) == 2
        assert np.isfinite(store.read(np.arange(2)).atoms["forces"]).all()
        return
    if suffix == ".traj":
        assert out.read_bytes()[:8] == b"- of Ulm"  # ASE binary trajectory, not text
    frames = ase.io.read(out, index=":")
    assert len(frames) == 2
    assert frames[0].get_forces().shape == (8, 3)


def test_relax_refuses_unknown_extension_before_relaxing(files, capsys):
    out = files / "relaxed.pdb"
    code = main(["relax", str(files / "lj.pt"), str(files / "in.xyz"), "-o", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert "relaxed.pdb: unknown suffix '.pdb'" in err
    assert ".xyz, .extxyz, .traj, .h5" in err
    assert not out.exists()


def test_md_trajectory_traj_is_ase_binary(files):
    out = files / "md.traj"
    code = main(["md", str(files / "lj.pt"), str(files / "in.xyz"), "--steps", "4",
                 "--traj-interval", "2", "-o", str(out), "--log", str(files / "t.csv")])
    assert code == 0
    for g in range(2):
        path = files / f"md.{g}.traj"
        assert path.read_bytes()[:8] == b"- of Ulm"
        assert len(ase.io.read(path, index=":")) >= 2


def _labelled(n: int) -> list:
    frames = []
    for k in range(n):
        atoms = molecule("H2O")
        atoms.positions[0, 0] += 0.01 * k
        atoms.calc = SinglePointCalculator(atoms, energy=-14.0 - k,
                                           forces=np.full((3, 3), 0.1 * k))
        frames.append(atoms)
    return frames


@pytest.mark.parametrize("name", ["out.xyz", "out.traj", "out.h5"])
def test_data_export_by_extension(tmp_path, name, capsys):
    write_frames(tmp_path / "in.h5", _labelled(3))
    out = tmp_path / name
    assert main(["data", "export", str(tmp_path / "in.h5"), "-o", str(out)]) == 0
    back = SnapshotStore(out).to_ase() if name.endswith(".h5") else ase.io.read(out, index=":")
    assert [a.get_potential_energy() for a in back] == [-14.0, -15.0, -16.0]
    np.testing.assert_allclose(back[2].get_forces(), np.full((3, 3), 0.2))


def test_data_export_refuses_unknown_format(tmp_path, capsys):
    write_frames(tmp_path / "in.h5", _labelled(1))
    assert main(["data", "export", str(tmp_path / "in.h5"), "-o", str(tmp_path / "o.pdb")]) == 2
    err = capsys.readouterr().err
    assert "o.pdb: unknown suffix '.pdb'" in err and "Traceback" not in err
    assert main(["data", "export", str(tmp_path / "in.h5"), "-o", str(tmp_path / "o.foo")]) == 2
    assert "o.foo: unknown suffix '.foo'" in capsys.readouterr().err
    assert main(["data", "export", str(tmp_path / "in.h5"), "-o", str(tmp_path / "o.xyz"),
                 "--format", "cif"]) == 2
    assert "unknown format 'cif'" in capsys.readouterr().err


def test_frame_writer_refuses_to_replace_a_store(tmp_path):
    write_frames(tmp_path / "s.h5", _labelled(1))
    with pytest.raises(ConfigError, match=r"s\.h5 already exists"):
        FrameWriter(tmp_path / "s.h5")


def test_md_refuses_unknown_extensions_before_running(files, capsys):
    base = ["md", str(files / "lj.pt"), str(files / "in.xyz"), "--steps", "2"]
    assert main([*base, "-o", str(files / "md.pdb"), "--log", str(files / "t.csv")]) == 2
    assert "md.pdb: unknown suffix '.pdb'" in capsys.readouterr().err
    assert main([*base, "-o", str(files / "md.xyz"), "--log", str(files / "t.txt")]) == 2
    assert "t.txt: unknown suffix '.txt'; use .csv or .jsonl" in capsys.readouterr().err
    assert not (files / "t.txt").exists() and not (files / "md.xyz").exists()


def test_relax_refuses_an_existing_store_before_relaxing(files, capsys):
    write_frames(files / "old.h5", _labelled(1))
    code = main(["relax", str(files / "lj.pt"), str(files / "in.xyz"), "-o", str(files / "old.h5")])
    assert code == 2
    assert "old.h5 already exists" in capsys.readouterr().err
    assert len(SnapshotStore(files / "old.h5")) == 1

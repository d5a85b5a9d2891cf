"""``mlip md`` end to end on a saved Lennard-Jones potential."""

from __future__ import annotations

import csv

import ase.io
import pytest
from ase.build import bulk

from mlip.cli import main


def test_md_runs_a_batch_and_restarts(files, capsys):
    common = ["md", str(files / "lj.pt"), str(files / "in.xyz"), "--ensemble", "npt",
              "--temperature", "300", "--pressure", "1.0", "--timestep", "2",
              "-o", str(files / "md.xyz"), "--log", str(files / "thermo.csv"),
              "--checkpoint-interval", "10", "--log-interval", "5", "--traj-interval", "5"]
    assert main(common + ["--steps", "10"]) == 0
    out = capsys.readouterr().out
    assert "ns/day" in out and "atom-steps/s" in out and "system 1: 8 atoms" in out
    assert main(common + ["--steps", "20", "--restart", str(files / "md.ckpt")]) == 0
    frames = ase.io.read(files / "md.1.xyz", index=":")
    assert [f.info["step"] for f in frames] == [0, 5, 10, 15, 20]
    with open(files / "thermo.csv") as handle:
        steps = [int(r["step"]) for r in csv.DictReader(handle) if r["system"] == "0"]
    assert steps == [0, 5, 10, 15, 20]


def test_unknown_element_is_a_clean_error(files, capsys):
    ase.io.write(files / "gold.xyz", bulk("Au", "fcc", a=4.08))
    code = main(["md", str(files / "lj.pt"), str(files / "gold.xyz"), "--steps", "2",
                 "-o", str(files / "g.xyz"), "--log", str(files / "g.csv")])
    assert code == 2
    assert "does not know element(s) Au (Z=79)" in capsys.readouterr().err


def test_edge_blocks_flag(files, capsys):
    from mlip.models import build, save_model

    model = build("facet", species=[29], cutoff=4.0, hidden_irreps="8x0e+4x1o", embedding_dim=8,
                  num_spline_basis=8, mixer_hidden=[8])
    save_model(model, files / "facet.pt")
    common = ["--steps", "2", "-o", str(files / "b.xyz"), "--log", str(files / "b.csv"),
              "--max-edges-per-block", "100"]
    assert main(["md", str(files / "facet.pt"), str(files / "in.xyz"), *common]) == 0
    assert main(["md", str(files / "lj.pt"), str(files / "in.xyz"), *common]) == 2
    assert "--max-edges-per-block applies to facet models" in capsys.readouterr().err


@pytest.mark.compiles
def test_compile_flag_gives_the_eager_trajectory(files):
    """--compile changes how forces are evaluated, not what they are (float64 LJ)."""
    finals = []
    for name, extra in (("eager", []), ("compiled", ["--compile"])):
        assert main(["md", str(files / "lj.pt"), str(files / "in.xyz"), "--ensemble", "nve",
                     "--steps", "20", "--timestep", "2", "-o", str(files / f"{name}.xyz"),
                     "--log", str(files / f"{name}.csv"), *extra]) == 0
        finals.append(ase.io.read(files / f"{name}.1.xyz", index=-1))
    assert finals[1].info["step"] == 20
    assert abs(finals[0].positions - finals[1].positions).max() < 1e-10


def test_edge_blocks_and_compile_are_refused_together(files, capsys):
    from mlip.errors import ConfigError
    from mlip.models import build, save_model

    model = build("facet", species=[29], cutoff=4.0, hidden_irreps="8x0e+4x1o", embedding_dim=8,
                  num_spline_basis=8, mixer_hidden=[8])
    with pytest.raises(ConfigError, match="cannot be combined"):
        model.set_max_edges_per_block(100).enable_compile()
    with pytest.raises(ConfigError, match="cannot be combined"):
        model.set_max_edges_per_block(None).enable_compile().set_max_edges_per_block(100)
    save_model(model.enable_compile(False), files / "facet.pt")
    assert main(["md", str(files / "facet.pt"), str(files / "in.xyz"), "--steps", "2",
                 "-o", str(files / "b.xyz"), "--log", str(files / "b.csv"),
                 "--max-edges-per-block", "100", "--compile"]) == 2
    assert "cannot be combined" in capsys.readouterr().err

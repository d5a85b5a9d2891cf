"""Every CLI verb ends quietly when stdout is a closed pipe (``mlip data info S | head -1``)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator

from mlip.cli import main
from mlip.io import write_frames


@pytest.fixture()
def store(tmp_path):
    atoms = molecule("CH4")
    atoms.calc = SinglePointCalculator(atoms, energy=-24.0)
    write_frames(tmp_path / "s.h5", [atoms])
    return tmp_path / "s.h5"


def _closed_stdout():
    """A text stream writing into a pipe whose reading end is already closed."""
    read, write = os.pipe()
    os.close(read)
    return os.fdopen(write, "w")


@pytest.mark.parametrize("argv", [["data", "info"], ["data", "info", "--json"],
                                  ["data", "stats"]])
def test_closed_pipe_is_quiet(store, capsys, monkeypatch, argv):
    with _closed_stdout() as stream:
        monkeypatch.setattr(sys, "stdout", stream)  # after capsys took over sys.stdout
        assert main([*argv, str(store)]) == 141
        stream.write("x" * 100_000)  # stdout now leads to /dev/null: a final flush is fine
        stream.flush()
        monkeypatch.undo()
    assert "Traceback" not in capsys.readouterr().err


def test_closed_pipe_in_a_real_process(store):
    proc = subprocess.Popen([sys.executable, "-m", "mlip", "data", "info", str(store)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader goes away before mlip prints anything
    err = proc.stderr.read().decode()
    assert proc.wait() == 141
    assert "BrokenPipeError" not in err and "Traceback" not in err

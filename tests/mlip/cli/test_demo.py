"""mlip demo: the exit status says when MD stopped molecules (function level, no training)."""

from __future__ import annotations

import argparse
from types import SimpleNamespace

from ase import Atoms

from mlip.cli import demo
from mlip.models import build, save_model


def _run_demo(tmp_path, monkeypatch, molecule: Atoms) -> int:
    """demo.run with the import, training, relaxation and NVE check replaced; the batched
    MD stage is the real one, on ``molecule`` with a saved Lennard-Jones potential."""
    model = build("lennard_jones", species=[1], cutoff=4.0, epsilon=0.01, sigma=0.74)
    save_model(model, tmp_path / "lj.pt")
    monkeypatch.setattr(demo, "_import", lambda store: store)
    monkeypatch.setattr(demo, "_train", lambda *args: tmp_path / "lj.pt")
    monkeypatch.setattr(demo, "_relax", lambda model_path, out: molecule)
    monkeypatch.setattr(demo, "nve_conservation", lambda *args, **kwargs: SimpleNamespace(
        drift_meV_per_atom_ps=0.0, fluctuation_meV_per_atom=0.0))
    monkeypatch.setattr(demo, "plot_learning_curves", lambda run_dir: run_dir / "curves.png")
    args = argparse.Namespace(out=str(tmp_path / "demo"), train_seconds=1.0, retrain=False,
                              md_steps=20, replicas=2)
    return demo.run(args)


def test_demo_fails_when_md_stopped_molecules(tmp_path, monkeypatch, capsys):
    crushed = Atoms("H2", positions=[[0.0, 0.0, 0.0], [0.2, 0.0, 0.0]])  # blows up at once
    assert _run_demo(tmp_path, monkeypatch, crushed) == 2
    assert "FAILED: MD stopped 2 of 2 molecules" in capsys.readouterr().out


def test_demo_succeeds_when_md_ran_every_molecule(tmp_path, monkeypatch):
    bonded = Atoms("H2", positions=[[0.0, 0.0, 0.0], [0.83, 0.0, 0.0]])
    assert _run_demo(tmp_path, monkeypatch, bonded) == 0

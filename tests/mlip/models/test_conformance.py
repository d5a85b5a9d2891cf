"""The conformance suite (:class:`mlip.testing.ModelConformance`) over every registered model,
and the unknown-element error on every path (calculator, MD, relaxation, evaluation)."""

from __future__ import annotations

import ase
import ase.io
import pytest

from mlip.errors import UnknownElementError
from mlip.models import MODELS, build
from mlip.testing import ModelConformance, conformance_model

#: (registry name, check) pairs too heavy for the default run (~5-10 s each on 2 cores)
SLOW = {("equiformer_v3", "supercell"), ("tdn", "supercell")}

CASES = [pytest.param(name, check, id=f"{name}-{check}",
                      marks=[pytest.mark.slow] if (name, check) in SLOW else [])
         for name in sorted(MODELS) for check in ModelConformance.CHECKS]


@pytest.fixture(scope="module")
def suites() -> dict[str, ModelConformance]:
    """One conformance model per registry name, built on first use."""
    return {}


@pytest.mark.parametrize("name, check", CASES)
def test_conformance(suites, name, check):
    if name not in suites:
        suites[name] = ModelConformance(conformance_model(name))
    getattr(suites[name], f"check_{check}")()


# ---------------------------------------------------------------- unknown elements, every path
@pytest.fixture
def lennard_jones():
    return build("lennard_jones", species=[1, 6, 8], cutoff=4.0, sigma=1.0, epsilon=0.05).eval()


@pytest.fixture
def gold_molecule():
    return ase.Atoms("COAu", positions=[[0, 0, 0], [0, 0, 1.2], [0, 2.0, 0.5]])


def test_the_calculator_names_an_unknown_element(lennard_jones, gold_molecule):
    from mlip.calculators import MLIPCalculator

    gold_molecule.calc = MLIPCalculator(lennard_jones)
    with pytest.raises(UnknownElementError, match=r"Au \(Z=79\)"):
        gold_molecule.get_forces()


def test_md_names_an_unknown_element(lennard_jones, gold_molecule):
    from mlip.md import make_integrator, run_md

    with pytest.raises(UnknownElementError, match=r"Au \(Z=79\)"):
        run_md(lennard_jones, [gold_molecule], make_integrator("nve", timestep_fs=0.5), steps=2)


def test_relaxation_names_an_unknown_element(lennard_jones, gold_molecule):
    from mlip.md import run_relax

    with pytest.raises(UnknownElementError, match=r"Au \(Z=79\)"):
        run_relax(lennard_jones, [gold_molecule], steps=2)


def test_evaluation_names_an_unknown_element(lennard_jones, gold_molecule, tmp_path):
    from mlip.models import save_model
    from mlip.train.evaluate import evaluate_potential

    save_model(lennard_jones, tmp_path / "lj.pt")
    ase.io.write(tmp_path / "gold.xyz", gold_molecule)
    with pytest.raises(UnknownElementError, match=r"Au \(Z=79\)"):
        evaluate_potential(tmp_path / "lj.pt", tmp_path / "gold.xyz", tmp_path / "eval")

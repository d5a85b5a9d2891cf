"""Use a trained mlip potential from any ASE script: relax 3BPA, then run ASE Langevin MD.

Run from the repository root: ``python examples/ase_calculator.py [MODEL.pt]`` (default: the small
Facet potential bundled with mlip, trained on the bundled 3BPA set).
"""

from __future__ import annotations

import sys
from importlib import resources

import ase.io
import numpy as np
from ase import units
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.optimize import FIRE

from mlip.calculators import MLIPCalculator


def bundled(name: str) -> str:
    return str(resources.files("mlip.data.bundled").joinpath(name))


def main() -> None:
    model = sys.argv[1] if len(sys.argv) > 1 else bundled("facet_3bpa.pt")
    atoms = ase.io.read(bundled("3bpa_train_300K.xyz"), index=0)
    atoms.calc = MLIPCalculator(model, device="cpu", dtype="float64", skin=1.0)
    print(f"start: E = {atoms.get_potential_energy():.4f} eV")
    FIRE(atoms, logfile=None).run(fmax=0.05, steps=300)
    print(f"relaxed: E = {atoms.get_potential_energy():.4f} eV, "
          f"fmax = {abs(atoms.get_forces()).max():.3f} eV/Å")
    MaxwellBoltzmannDistribution(atoms, temperature_K=300.0, rng=np.random.default_rng(0))
    dynamics = Langevin(atoms, 0.5 * units.fs, temperature_K=300.0, friction=0.01 / units.fs)
    for block in range(5):
        dynamics.run(40)
        print(f"step {dynamics.nsteps:4d}: T = {atoms.get_temperature():6.1f} K, "
              f"E_tot = {atoms.get_total_energy():.4f} eV")


if __name__ == "__main__":
    main()

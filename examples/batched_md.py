"""mlip's own torch MD driver: relax and simulate several structures as one batch.

Run from the repository root: ``python examples/batched_md.py [MODEL.pt]``. Writes
``examples_output/`` (trajectory, thermo log, plot).
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

import ase.io

from mlip.md import MDOutputs, make_integrator, plot_thermo, run_md, run_relax


def bundled(name: str) -> str:
    return str(resources.files("mlip.data.bundled").joinpath(name))


def main() -> None:
    model = sys.argv[1] if len(sys.argv) > 1 else bundled("facet_3bpa.pt")
    out = Path("examples_output")
    out.mkdir(exist_ok=True)
    frames = ase.io.read(bundled("3bpa_train_300K.xyz"), index=":8")
    relaxed = run_relax(model, frames, fmax=0.05, steps=300)
    print(f"relaxed {sum(relaxed.converged)}/{len(frames)} structures; "
          f"energies {[round(e, 3) for e in relaxed.energy]} eV")
    integrator = make_integrator("nvt_langevin", timestep_fs=0.5, temperature_K=300.0, seed=0)
    outputs = MDOutputs(trajectory=out / "md.extxyz", log=out / "thermo.csv",
                        checkpoint=out / "md.ckpt", trajectory_interval=20)
    result = run_md(model, relaxed.atoms, integrator, steps=400, outputs=outputs,
                    initial_temperature_K=300.0, progress=True)
    print(f"failures: {result.failures or 'none'}; thermo plot: {plot_thermo(out / 'thermo.csv')}")


if __name__ == "__main__":
    main()

"""torch-sim's side of benchmarks/foundation.py: SevenNet-0 through torch-sim's own model
interface (``torch_sim.models.sevennet.SevenNetModel``), its batched FIRE (``ts.optimize``
with ``fire`` / ``frechet_cell_fire``, ASE flavour) and its NVT Langevin integrator.

Runs in ``.venv-torchsim`` (``torch-sim-atomistic`` 0.3.0 + ``sevenn`` 0.13.0, no mlip) as a
long-lived subprocess of benchmarks/foundation.py, so that the sides can alternate within one
run: it reads one JSON request per line on stdin and answers one JSON line on stdout (anything
else the libraries print goes to stderr). Requests:

* ``{"op": "setup", "structures": PATH, "threads": T, "device": D, "model": NAME}``
* ``{"op": "single_point"}``: energies (eV) and forces (eV/Å) of the structures as given;
* ``{"op": "relax", "fmax": F, "steps": S, "cell": bool}``: wall time of ``ts.optimize``;
* ``{"op": "md", "steps": S, "temperature_K": T, "timestep_fs": dt, "friction_per_fs": g,
  "seed": s}``: atom-steps/s of the loop after the integrator's init;
* ``{"op": "quit"}``.

sevenn 0.13.0 no longer defines ``sevenn.calculator.torch_script_type``, which torch-sim
0.3.0's SevenNet module imports (only to tell a TorchScript model from an eager one); it is
set back to what older sevenn defined (``torch.jit.RecursiveScriptModule``) before the import.
The model is the eager ``AtomGraphSequential`` sevenn builds from the checkpoint in its wheel.
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch


def _load_model(name: str, device: str):
    """torch-sim's SevenNetModel around sevenn's pretrained ``name`` (float32, as sevenn)."""
    import sevenn.calculator
    from sevenn import util

    if not hasattr(sevenn.calculator, "torch_script_type"):
        sevenn.calculator.torch_script_type = torch.jit.RecursiveScriptModule
    from torch_sim.models.sevennet import SevenNetModel

    network = util.load_checkpoint(name).build_model()
    return SevenNetModel(network, device=torch.device(device), dtype=torch.float32)


class _Counting(torch.nn.Module):
    """The model with a count of its calls and of the systems they evaluated."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model
        self.calls = self.systems = 0

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.model, name)

    def forward(self, state, **kwargs):
        self.calls += 1
        self.systems += int(state.n_systems)
        return self.model(state, **kwargs)


class Worker:
    """State of the worker between requests (the model and the structures)."""

    def __init__(self) -> None:
        self.model = None
        self.frames: list = []
        self.device = torch.device("cpu")

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _state(self):
        import torch_sim as ts

        return ts.io.atoms_to_state(self.frames, self.device, torch.float32)

    def setup(self, request: dict) -> dict:
        import importlib.metadata

        import ase.io

        torch.set_num_threads(int(request["threads"]))
        self.device = torch.device(request["device"])
        self.frames = ase.io.read(request["structures"], index=":")
        self.model = _Counting(_load_model(request["model"], request["device"]))
        version = importlib.metadata.version
        return {"torch": torch.__version__, "torch_sim": version("torch-sim-atomistic"),
                "sevenn": version("sevenn"), "threads": torch.get_num_threads()}

    def single_point(self, _: dict) -> dict:
        out = self.model(self._state())
        return {"energy": out["energy"].double().tolist(),
                "forces": out["forces"].double().tolist()}

    def relax(self, request: dict) -> dict:
        import torch_sim as ts

        cell = bool(request["cell"])
        optimizer = ts.optimizers.frechet_cell_fire if cell else ts.optimizers.fire
        converged_fn = ts.generate_force_convergence_fn(force_tol=request["fmax"],
                                                        include_cell_forces=cell)
        self.model.calls = self.model.systems = 0
        state = self._state()
        self._sync()
        start = time.perf_counter()
        final = ts.optimize(state, self.model, optimizer=optimizer, convergence_fn=converged_fn,
                            max_steps=int(request["steps"]), md_flavor="ase_fire")
        self._sync()
        wall = time.perf_counter() - start
        done = converged_fn(final, None)
        return {"wall_s": wall, "model_calls": self.model.calls,
                "structure_evaluations": self.model.systems,
                "converged": done.tolist(), "energy": final.energy.double().tolist()}

    def md(self, request: dict) -> dict:
        import torch_sim as ts

        units = ts.units.MetalUnits
        dtype = torch.float32
        state = self._state()
        dt = torch.tensor(request["timestep_fs"] * 1e-3 * units.time, dtype=dtype)
        kT = torch.tensor(request["temperature_K"] * units.temperature, dtype=dtype)
        gamma = torch.tensor(request["friction_per_fs"] / (1e-3 * units.time), dtype=dtype)
        init, update = ts.nvt_langevin(self.model, dt=dt, kT=kT, gamma=gamma,
                                       seed=int(request["seed"]))
        self.model.calls = self.model.systems = 0
        state = init(state)
        self._sync()
        start = time.perf_counter()
        for _ in range(int(request["steps"])):
            state = update(state, kT=kT)
        self._sync()
        wall = time.perf_counter() - start
        return {"wall_s": wall, "model_calls": self.model.calls,
                "structure_evaluations": self.model.systems,
                "atom_steps_per_s": state.positions.shape[0] * int(request["steps"]) / wall}


def main() -> None:
    """Answer requests until ``quit`` (or the end of stdin)."""
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever the libraries print goes to stderr
    worker = Worker()
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "quit":
            break
        try:
            answer = {"ok": True, **getattr(worker, request["op"])(request)}
        except Exception as error:  # reported to the parent, which raises
            answer = {"ok": False, "error": f"{type(error).__name__}: {error}"}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


if __name__ == "__main__":
    main()

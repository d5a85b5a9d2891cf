"""mlip side of benchmarks/models.py: one model, one structure file, one JSON line on stdout.

The case's ``hparams`` may name a ``preset`` from ``mlip.models.<name>.<NAME>_PRESETS``;
``avg_num_neighbors`` is passed to models whose constructor takes it.
"""

from __future__ import annotations

import importlib
import inspect
import json
import resource
import sys
import time

import ase.io
import numpy as np
import torch

from mlip.graph import AtomicGraph
from mlip.models import MODELS, build


def rss_mb() -> float:
    """Current resident set size, MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def make_model(case: dict, species: list[int]) -> torch.nn.Module:
    """Build the case's model (preset + overrides) in the case's dtype, eval mode."""
    name, hparams = case["model"], dict(case["hparams"])
    preset = hparams.pop("preset", None)
    if preset is not None:
        module = importlib.import_module(f"mlip.models.{name}")
        hparams = {**getattr(module, f"{name.upper()}_PRESETS")[preset], **hparams}
    if "avg_num_neighbors" in inspect.signature(MODELS[name].__init__).parameters:
        hparams.setdefault("avg_num_neighbors", case["avg_num_neighbors"])
    model = build(name, species=species, **hparams).to(getattr(torch, case["dtype"])).eval()
    if case.get("compile"):
        model.enable_compile()
    return model


def main() -> None:
    case = json.loads(sys.argv[1])
    torch.set_num_threads(case["threads"])
    frames = ase.io.read(case["structure_file"], index=":")
    species = sorted({int(z) for atoms in frames for z in atoms.numbers})
    model = make_model(case, species)
    graph = AtomicGraph.from_ase(frames, case["cutoff"]).to(dtype=getattr(torch, case["dtype"]))
    before = rss_mb()
    model(graph)
    times = []
    for _ in range(case["repeats"]):
        start = time.perf_counter()
        model(graph)
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    seconds = float(np.median(times))
    n_atoms = graph.positions.shape[0]
    print(json.dumps({"params": sum(p.numel() for p in model.parameters()), "ms": seconds * 1e3,
                      "atom_steps_per_s": n_atoms / seconds, "peak_mb": peak - before,
                      "n_atoms": n_atoms}))


if __name__ == "__main__":
    main()

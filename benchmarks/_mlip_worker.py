"""mlip side of benchmarks/models.py: one model, one structure file, one JSON line on stdout.

The case's ``hparams`` may name a ``preset`` from ``mlip.models.<name>.<NAME>_PRESETS``;
``avg_num_neighbors`` is passed to models whose constructor takes it.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys

import ase.io
import torch
from _worker_timing import time_and_report

from mlip.graph import AtomicGraph
from mlip.models import MODELS, build


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
    time_and_report(lambda: model(graph), case["repeats"],
                    sum(p.numel() for p in model.parameters()), graph.positions.shape[0])

if __name__ == "__main__":
    main()

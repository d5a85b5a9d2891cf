"""Compiled inference (``Potential.enable_compile``) gives the eager autograd results."""

from __future__ import annotations

import dataclasses
import pickle

import ase.build
import pytest
import torch

from mlip.errors import ConfigError, UnknownElementError
from mlip.graph import AtomicGraph
from mlip.models import PotentialOutput, build
from mlip.models.equiformer_v3 import PRESETS as EQUIFORMER_V3_PRESETS
from mlip.models.facet import FACET_PRESETS

#: every field of the model output (all present with forces and stress asked for)
_FIELDS = [field.name for field in dataclasses.fields(PotentialOutput)]


def _cu(n: int, seed: int) -> ase.Atoms:
    atoms = ase.build.bulk("Cu", "fcc", a=3.6, cubic=True).repeat(n)
    atoms.set_cell(atoms.cell[:] @ [[1, 0.1, 0], [0, 1, 0.05], [0, 0, 1]], scale_atoms=True)
    atoms.rattle(0.05, seed=seed)
    return atoms


@pytest.fixture(scope="module")
def graphs(bpa_frames):
    """Batches that change what compiled code specialises on: one or several systems,
    periodic or not, and a new size for the dynamic shapes."""
    mixed = [bpa_frames[0], _cu(2, 1), bpa_frames[1]]
    return {
        "one molecule": AtomicGraph.from_ase(bpa_frames[:1], 4.0),
        "three molecules": AtomicGraph.from_ase(bpa_frames[2:5], 4.0),
        "one crystal": AtomicGraph.from_ase([_cu(2, 2)], 4.0),
        "molecules and a crystal": AtomicGraph.from_ase(mixed, 4.0),
        "two molecules": AtomicGraph.from_ase(bpa_frames[5:7], 4.0),
    }


def _assert_same_outputs(model: torch.nn.Module, graphs: dict, tol: float,
                         rtol: float = 0.0) -> None:
    eager = {name: model(g, compute_stress=True) for name, g in graphs.items()}
    model.enable_compile()
    for name, graph in graphs.items():
        out = model(graph, compute_stress=True)
        assert isinstance(out, PotentialOutput), name
        for key in _FIELDS:
            value, ref = getattr(out, key), getattr(eager[name], key)
            assert value is not None and not value.requires_grad, (name, key)
            torch.testing.assert_close(value, ref, atol=tol, rtol=rtol, equal_nan=True,
                                       msg=lambda m, k=key, n=name: f"{n}, {k}: {m}")
    model.enable_compile(False)
    assert "_compiled_inference" not in model.__dict__


@pytest.mark.compiles
def test_compiled_lennard_jones_matches_autograd(graphs):
    model = build("lennard_jones", species=[1, 6, 7, 8, 29], cutoff=4.0, epsilon=0.05,
                  sigma=1.2).double().eval()
    _assert_same_outputs(model, graphs, tol=1e-12)


@pytest.mark.compiles
def test_compiled_lennard_jones_in_float32(graphs):
    """float32 (the usual GPU dtype) compiles too, one system included: Inductor's vectorised
    CPU code for a scatter into one bucket fails, so one system's energy is a plain sum."""
    model = build("lennard_jones", species=[1, 6, 7, 8, 29], cutoff=4.0, epsilon=0.05,
                  sigma=1.2).float().eval()
    as_float32 = {name: graph.to("cpu", torch.float32) for name, graph in graphs.items()}
    _assert_same_outputs(model, as_float32, tol=1e-5, rtol=1e-5)


@pytest.mark.compiles
def test_new_sizes_do_not_recompile(bpa_frames):
    """Atom and edge counts are symbolic: a molecule of another size reuses the compiled code."""
    model = build("lennard_jones", species=[1, 6, 7, 8], cutoff=4.0).double().eval()
    model.enable_compile()
    model(AtomicGraph.from_ase(bpa_frames[:1], 4.0))
    smaller = bpa_frames[1].copy()
    del smaller[[0, 5, 9]]
    graphs = [AtomicGraph.from_ase([smaller], 4.0), AtomicGraph.from_ase(bpa_frames[2:3], 3.0)]
    assert len({(g.positions.shape[0], g.n_edges) for g in graphs}) == 2
    with torch.compiler.set_stance("fail_on_recompile"):
        for graph in graphs:
            model(graph)


def test_compiled_inference_checks_elements_and_leaves_training_alone(bpa_frames):
    model = build("lennard_jones", species=[1, 6, 7], cutoff=4.0).double().eval()
    model.enable_compile()
    with pytest.raises(UnknownElementError, match=r"O \(Z=8\)"):
        model(AtomicGraph.from_ase(bpa_frames[:1], 4.0))
    model.train()  # losses need the autograd graph: the compiled path is not used
    carbon = AtomicGraph.from_ase(ase.Atoms("CH", positions=[[0, 0, 0], [1.1, 0, 0]]), 4.0)
    assert model(carbon).forces.requires_grad


def test_a_specialisation_torch_cannot_compile_runs_eagerly_with_a_warning(graphs, caplog):
    """Older torch releases fail to trace torch.func with dynamic shapes (torch 2.11 on CUDA):
    a specialisation whose compile (first call or a later recompile) fails warns once and runs
    the autograd path from then on."""
    model = build("lennard_jones", species=[1, 6, 7, 8, 29], cutoff=4.0).double().eval()
    graph = graphs["three molecules"]
    eager = model(graph, compute_stress=True)
    compiled = model.enable_compile().__dict__["_compiled_inference"]
    calls = []

    def failing(*args):
        calls.append(args)
        raise torch._dynamo.exc.TorchRuntimeError("isIntList() INTERNAL ASSERT FAILED\nmore")

    working, compiled._compiled = compiled._compiled, failing
    with caplog.at_level("WARNING", logger="mlip.models.forces"):
        for _ in range(2):
            out = model(graph, compute_stress=True)
            assert isinstance(out, PotentialOutput)
            for key in _FIELDS:
                torch.testing.assert_close(getattr(out, key), getattr(eager, key), rtol=0,
                                           atol=0, equal_nan=True)
    assert len(calls) == 1  # not tried again
    [record] = caplog.records
    compiled._compiled = working  # another specialisation compiles; a later recompile of it
    crystal = model(graphs["one crystal"])  # fails: it too runs eagerly from then on
    compiled._compiled = failing
    with caplog.at_level("WARNING", logger="mlip.models.forces"):
        for _ in range(2):
            torch.testing.assert_close(model(graphs["one crystal"]).forces,
                                       crystal.forces, rtol=0, atol=1e-12)
    assert len(calls) == 2 and len(caplog.records) == 2
    assert ("could not compile LennardJones for several non-periodic systems with stress, "
            "torch.float64, cpu (TorchRuntimeError: isIntList() INTERNAL ASSERT FAILED)"
            ) in record.getMessage()


def test_a_compiled_model_pickles_as_a_compiled_model():
    """Copies (DataLoader workers, EMA, deepcopy) keep the setting and compile again."""
    model = build("lennard_jones", species=[1, 6]).enable_compile()
    copy = pickle.loads(pickle.dumps(model))
    assert copy.__dict__["_compiled_inference"].model is copy


@pytest.mark.slow
@pytest.mark.compiles
@pytest.mark.parametrize("name, preset", [
    ("facet", FACET_PRESETS["facet-tiny"]),
    ("tdn", {"channels": 8, "num_blocks": 1}),
    ("equiformer_v3", EQUIFORMER_V3_PRESETS["cpu"]),
])
def test_compiled_model_families_match_autograd(graphs, name, preset):
    """Every family traces under torch.func + torch.compile (minutes of compiling on a CPU)."""
    model = build(name, species=[1, 6, 7, 8, 29], **{**preset, "cutoff": 4.0}).double().eval()
    _assert_same_outputs(model, graphs, tol=1e-10)


def test_without_a_cpu_compiler_compiling_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler")
    monkeypatch.setenv("PATH", "")
    with pytest.raises(ConfigError, match="needs a C..? compiler"):
        build("lennard_jones", species=[1]).enable_compile()

"""In-flight batching of relaxations (relax_stream, run_relax(max_memory=...), mlip relax
--max-memory): every structure once, the result of relaxing it alone, input order on request,
the batch under the budget per the estimator, blow-ups leave the batch, the CLI streams."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.constraints import FixAtoms, FixCom

from mlip.cli import main
from mlip.data import SnapshotStore
from mlip.errors import ConfigError
from mlip.md import make_optimizer, relax_stream, run_relax
from mlip.md.force_field import ForceField
from mlip.md.guard import check_step_torch
from mlip.md.memory import count_edges, measure_memory
from mlip.md.regroup import concat_systems, take_systems
from mlip.md.relax import fire_init
from mlip.md.state import state_from_atoms
from mlip.models import save_model
from mlip.models.lennard_jones import LennardJones
from mlip.neighbors import VerletList
from mlip.units import parse_bytes
from tests.md.conftest import strained_cu_cell
from tests.md.test_host_reads import HostReads


def _cluster(scale: float = 2.5) -> Atoms:
    """A 3-atom copper cluster, not periodic."""
    cluster = molecule("H2O")
    cluster.numbers[:] = 29
    cluster.positions *= scale
    return cluster


def _mixed(relax_cell: bool) -> list[Atoms]:
    """Seven structures of 8 and 16 atoms (and a cluster when the cell stays)."""
    systems = [strained_cu_cell(seed) for seed in range(5)]
    big = bulk("Cu", "fcc", a=3.5, cubic=True).repeat((2, 2, 1))
    big.rattle(0.05, seed=7)
    systems.insert(2, big)
    systems.append(strained_cu_cell(9) if relax_cell else _cluster())
    return systems


def _budget(model, systems, optimizer: str, n: int) -> int:
    """A budget that holds about the first ``n`` structures."""
    memory = measure_memory(model, systems[0], make_optimizer(optimizer))
    atoms = sum(len(a) for a in systems[:n])
    edges = sum(count_edges(a, model.cutoff) for a in systems[:n])
    return int(memory.estimate(atoms, edges, n))


@pytest.mark.parametrize("optimizer, relax_cell", [("fire", False), ("fire", True),
                                                   ("lbfgs", False), ("lbfgs", True)])
def test_every_structure_once_and_as_relaxed_alone(lj_model, optimizer, relax_cell):
    systems = _mixed(relax_cell)
    name = f"{optimizer}_cell" if relax_cell else optimizer
    budget = _budget(lj_model, systems, name, 3)
    settings = dict(fmax=0.005, steps=300, relax_cell=relax_cell, optimizer=optimizer)
    stream = relax_stream(lj_model, iter(systems), max_memory=budget, **settings)
    results = list(stream)
    assert sorted(i for i, _ in results) == list(range(len(systems)))  # each exactly once
    assert len(stream.admitted) > 2
    assert max(a.systems for a in stream.admitted) < len(systems)
    for index, frame in results:
        alone = run_relax(lj_model, [systems[index]], **settings)
        assert frame.info["relax_index"] == index
        assert frame.info["relax_steps"] == alone.n_steps[0]
        assert frame.info["relax_status"] == "converged" == alone.status[0]
        # ulps of batched against single evaluation grow along the soft cell modes over ~70
        # FIRE steps (one batch of all, as before in-flight batching, differs as much)
        atol = 1e-8 if relax_cell else 1e-10
        np.testing.assert_allclose(frame.positions, alone.atoms[0].positions, rtol=0, atol=atol)
        np.testing.assert_allclose(frame.cell[:], alone.atoms[0].cell[:], rtol=0, atol=atol)
        assert abs(frame.get_potential_energy() - alone.energy[0]) < 1e-10


def test_the_batch_stays_under_the_budget_per_the_estimator(lj_model):
    systems = _mixed(False)
    huge = bulk("Cu", "fcc", a=3.5, cubic=True).repeat(2)
    huge.rattle(0.05, seed=8)
    systems.insert(4, huge)  # 32 atoms: above a budget of two 8-atom cells
    budget = _budget(lj_model, systems, "fire", 2)
    stream = relax_stream(lj_model, (a for a in systems), max_memory=budget, fmax=0.01)
    with pytest.warns(RuntimeWarning, match=r"structure 4 \(32 atoms, \d+ edges\) alone needs"):
        done = dict(stream)
    assert len(done) == len(systems)
    memory = stream.memory_model
    assert memory.per_atom > 0 and memory.per_edge > 0 and memory.method == "saved tensors"
    edges = [count_edges(a, lj_model.cutoff) for a in systems]
    for batch in stream.admitted:  # the counts are those of the structures in the batch
        assert batch.atoms == sum(len(systems[i]) for i in batch.indices)
        assert batch.edges == sum(edges[i] for i in batch.indices)
        assert batch.systems == len(batch.indices)
        assert batch.estimate == pytest.approx(memory.estimate(batch.atoms, batch.edges,
                                                               batch.systems))
        assert batch.estimate <= budget or batch.systems == 1  # an oversized one runs alone
    assert [a.indices for a in stream.admitted if a.estimate > budget] == [(4,)]
    assert max(a.systems for a in stream.admitted) >= 2


def test_memory_budget_is_bytes_or_text(lj_model):
    assert parse_bytes("512MB") == 512 * 10**6 and parse_bytes("1.5GiB") == 3 * 2**29
    assert parse_bytes("2 gb") == 2 * 10**9 and parse_bytes(4096) == 4096
    for bad in ("2XB", "GB", "-1GB", "0", "1.5.GB", ""):
        with pytest.raises(ConfigError, match="allowed a memory size such as 512MB"):
            parse_bytes(bad)
    with pytest.raises(ConfigError, match=r"memory size '2 parsecs'"):
        run_relax(lj_model, [strained_cu_cell(0)], max_memory="2 parsecs")


def test_ordered_keeps_input_order_unordered_yields_early_ones_first(lj_model):
    hard = strained_cu_cell(0)
    easy = run_relax(lj_model, [strained_cu_cell(1)], fmax=0.001).atoms[0]  # converged already
    for budget in (None, "1GB"):
        unordered = [i for i, _ in relax_stream(lj_model, [hard, easy], fmax=0.01,
                                                max_memory=budget)]
        ordered = [i for i, _ in relax_stream(lj_model, [hard, easy], fmax=0.01,
                                              max_memory=budget, ordered=True)]
        assert unordered == [1, 0] and ordered == [0, 1]


def test_flags_read_a_step_late_change_no_result(lj_model):
    """The GPU path (flags copied without waiting, read after the next step) on the CPU."""
    systems = _mixed(False)
    budget = _budget(lj_model, systems, "lbfgs", 3)
    runs = []
    for pipelined in (False, True):
        stream = relax_stream(lj_model, iter(systems), max_memory=budget, optimizer="lbfgs",
                              fmax=0.005, steps=15)
        stream.pipelined = pipelined
        runs.append(dict(stream))
    statuses = {frame.info["relax_status"] for frame in runs[0].values()}
    assert statuses == {"converged", "max_steps"}
    for k in range(len(systems)):
        assert runs[1][k].info["relax_steps"] == runs[0][k].info["relax_steps"]
        np.testing.assert_allclose(runs[1][k].positions, runs[0][k].positions, rtol=0,
                                   atol=1e-10)


def test_a_step_waits_for_the_device_once(lj_model, monkeypatch):
    """The GPU path counted on the CPU: torch neighbour list and guard, flags read late; the
    only wait of a step is the neighbour list's (reads counted like tests/md/test_host_reads;
    ``tolist`` calls counted too)."""
    import mlip.md.inflight as inflight

    class TorchForceField(ForceField):
        def __init__(self, model, **kwargs):
            super().__init__(model, **kwargs)
            self.neighbors = VerletList(model.cutoff, self.neighbors.skin, backend="torch")

    monkeypatch.setattr(inflight, "ForceField", TorchForceField)
    monkeypatch.setattr(inflight, "check_step", check_step_torch)
    counts = {}
    for steps in (20, 40):
        stream = relax_stream(lj_model, [strained_cu_cell(s) for s in range(3)], fmax=1e-9,
                              steps=steps)
        stream.pipelined = True
        tolist = torch.Tensor.tolist
        calls = []
        monkeypatch.setattr(torch.Tensor, "tolist",
                            lambda t: calls.append(t.is_cpu) or tolist(t))
        with HostReads() as reads:
            assert [f.info["relax_status"] for _, f in stream] == ["max_steps"] * 3
        monkeypatch.setattr(torch.Tensor, "tolist", tolist)
        counts[steps] = sum(reads.sites.values()) + len(calls)
    # per extra step: the neighbour list's read and the late flags (a host copy, no wait)
    assert (counts[40] - counts[20]) / 20 <= 2


class _NaNAfter(LennardJones):
    """Lennard-Jones that returns NaN energies for the 5-atom system from its ``after``-th
    call on (the memory probe makes the first four)."""

    def __init__(self, after: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.after, self.calls = after, 0

    def forward(self, graph, compute_forces=True, compute_stress=False):
        self.calls += 1
        return super().forward(graph, compute_forces, compute_stress)

    def atomic_energies(self, graph, edge_vectors):
        energies = super().atomic_energies(graph, edge_vectors)
        if self.calls < self.after:
            return energies
        five = (graph.n_atoms == 5)[graph.batch]
        return torch.where(five, torch.full_like(energies, float("nan")), energies)


def test_blown_up_structures_leave_the_batch_and_are_reported(lj_model):
    overlapping = _cluster()
    overlapping.positions[1] = overlapping.positions[0] + [0.3, 0.0, 0.0]
    five = strained_cu_cell(3)[:5]
    five.pbc = False
    systems = [strained_cu_cell(0), overlapping, strained_cu_cell(1), five, strained_cu_cell(2)]
    model = _NaNAfter(12, species=[29], cutoff=5.0, epsilon=0.4, sigma=2.3).eval()
    with pytest.warns(RuntimeWarning) as caught:
        result = run_relax(model, systems, fmax=0.01, max_memory="1GB")
    messages = " ".join(str(w.message) for w in caught)
    assert "structure 1 blew up after 0 steps" in messages
    assert "structure 3 blew up after" in messages
    assert result.status[1].startswith("blown_up: max |F| above the limit")
    assert result.status[3].startswith("blown_up: non-finite energy")
    assert result.converged == [True, False, True, False, True]
    assert result.n_steps[3] > 0  # it moved before the potential failed
    assert np.isfinite(result.atoms[3].positions).all()  # its last good state
    assert np.isfinite(result.energy[3])
    for k in (0, 2, 4):
        alone = run_relax(lj_model, [systems[k]], fmax=0.01)
        np.testing.assert_allclose(result.atoms[k].positions, alone.atoms[0].positions,
                                   rtol=0, atol=1e-10)


def test_a_rough_start_is_not_a_blow_up(lj_model):
    """Forces above MD's 50 eV/Å at the start of a relaxation are not a blow-up."""
    rough = bulk("Cu", "fcc", a=3.5, cubic=True).repeat(2)
    rough.rattle(0.02 + 0.004 * 29, seed=29)
    start = run_relax(lj_model, [rough], steps=0)
    assert np.abs(start.atoms[0].get_forces()).max() > 50.0
    result = run_relax(lj_model, [rough], fmax=0.01, steps=300)
    assert result.status == ["converged"]


def test_regrouping_keeps_every_system_variable(lj_model):
    slab = strained_cu_cell(0)
    slab.set_constraint(FixAtoms(indices=[0, 2]))
    crystal = strained_cu_cell(1)
    crystal.set_constraint(FixCom())
    force_field = ForceField(lj_model, compute_stress=True)
    plain = fire_init(state_from_atoms([_cluster()]), force_field)
    state = fire_init(state_from_atoms([slab, strained_cu_cell(2), crystal]), force_field,
                      relax_cell=False)
    merged = concat_systems(take_systems(state, [0, 2]), plain)
    assert merged.layout.counts == (8, 8, 3)
    for name in ("positions", "forces", "velocities", "cell", "fire_dt"):
        a, b = getattr(merged, name), getattr(state, name)
        per_system = getattr(merged, name).shape[0] == merged.n_graphs
        expect = b[[0, 2]] if per_system else torch.cat([b[:8], b[16:]])
        assert torch.equal(a[:expect.shape[0]], expect)
    assert merged.constraints.fixed.tolist() == ([True, False, True] + [False] * 5
                                                 + [False] * 8 + [False] * 3)
    assert merged.constraints.fix_com.tolist() == [False, True, False]
    assert merged.constraints.removed_dof.tolist() == [6.0, 3.0, 0.0]


def test_lbfgs_memory_is_an_lbfgs_setting(lj_model):
    bound = make_optimizer("lbfgs_cell", memory=5)
    assert bound.init.keywords == {"relax_cell": True, "memory": 5}
    assert bound.settings["memory"] == 5
    with pytest.raises(ConfigError, match=r"memory = 5 is not allowed for 'fire'"):
        make_optimizer("fire", memory=5)
    with pytest.raises(ConfigError, match=r"memory = 0 is not allowed: an integer >= 1"):
        make_optimizer("lbfgs", memory=0)
    state = relax_stream(lj_model, [strained_cu_cell(0)], optimizer="lbfgs", lbfgs_memory=3)
    assert state.optimizer.init.keywords["memory"] == 3
    assert next(state)[1].info["relax_converged"]


def test_a_structure_that_cannot_be_relaxed_is_named_by_its_input_index(lj_model):
    with pytest.raises(ConfigError, match=r"system 2 has pbc=\[False, False, False\]"):
        list(relax_stream(lj_model, iter([strained_cu_cell(0), strained_cu_cell(1),
                                          _cluster()]), relax_cell=True, max_memory="1GB"))


# ---------------------------------------------------------------------------- CLI
@pytest.fixture()
def many(tmp_path, lj_model):
    """tmp_path with lj.pt and many.xyz (six structures, one of them blows up)."""
    save_model(lj_model, tmp_path / "lj.pt")
    systems = _mixed(False)[:6]
    ase.io.write(tmp_path / "many.xyz", systems)
    return tmp_path


@pytest.mark.parametrize("suffix", [".xyz", ".h5"])
def test_cli_streams_under_a_budget(many, capsys, suffix, lj_model):
    out = many / f"relaxed{suffix}"
    code = main(["relax", str(many / "lj.pt"), str(many / "many.xyz"), "-o", str(out),
                 "--fmax", "0.01", "--max-memory", "300kB", "--ordered", "--device", "cpu"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "6 structures: 6 converged, 0 not converged" in printed
    assert "memory model (saved tensors)" in printed
    direct = run_relax(lj_model, ase.io.read(many / "many.xyz", index=":"), fmax=0.01)
    if suffix == ".xyz":
        frames = ase.io.read(out, index=":")
        assert [f.info["relax_index"] for f in frames] == list(range(6))
        positions = [f.positions for f in frames]
    else:
        store = SnapshotStore(out)
        columns = store.read(np.arange(6)).frames
        assert columns["source_frame"].tolist() == list(range(6))
        assert list(columns["config_type"]) == ["converged"] * 6
        positions = [f.positions for f in store.to_ase()]
    for got, expected in zip(positions, direct.atoms):  # extended XYZ keeps 8 decimals
        np.testing.assert_allclose(got, expected.positions, rtol=0, atol=1e-8)


def test_cli_reports_a_blow_up_and_exits_1(many, capsys):
    broken = _cluster()
    broken.positions[1] = broken.positions[0] + [0.2, 0.0, 0.0]
    ase.io.write(many / "bad.xyz", [strained_cu_cell(0), broken, strained_cu_cell(1)])
    out = many / "bad.relaxed.xyz"
    with pytest.warns(RuntimeWarning, match="structure 1 blew up"):
        code = main(["relax", str(many / "lj.pt"), str(many / "bad.xyz"), "--max-memory",
                     "1GB", "--device", "cpu"])
    assert code == 1
    printed = capsys.readouterr().out
    assert "structure 1: blown_up: max |F| above the limit" in printed
    assert "3 structures: 2 converged, 0 not converged in the step limit, 1 blown up" in printed
    frames = ase.io.read(out, index=":")
    assert sorted(f.info["relax_index"] for f in frames) == [0, 1, 2]
    (bad,) = [f for f in frames if f.info["relax_index"] == 1]
    assert bad.info["relax_status"].startswith("blown_up") and not bad.info["relax_converged"]


@pytest.mark.parametrize("options, message", [
    (["--max-memory", "2XB"], "--max-memory = '2XB': allowed a memory size such as 512MB"),
    (["--max-memory", "lots"], "--max-memory = 'lots': allowed a memory size"),
    (["--lbfgs-memory", "5"], "--lbfgs-memory = 5: allowed only with --optimizer lbfgs"),
    (["--lbfgs-memory", "0", "--optimizer", "lbfgs"], "--lbfgs-memory = 0: allowed an integer"),
])
def test_cli_refuses_nonsense_memory_settings(many, capsys, options, message):
    code = main(["relax", str(many / "lj.pt"), str(many / "many.xyz"), *options])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (many / "many.relaxed.xyz").exists()


def test_cli_lbfgs_memory_reaches_the_optimizer(many, capsys, lj_model):
    out = many / "lbfgs.xyz"
    assert main(["relax", str(many / "lj.pt"), str(many / "many.xyz"), "-o", str(out),
                 "--optimizer", "lbfgs", "--lbfgs-memory", "3", "--device", "cpu"]) == 0
    direct = run_relax(lj_model, ase.io.read(many / "many.xyz", index=":"), fmax=0.01,
                       optimizer="lbfgs", lbfgs_memory=3)
    default = run_relax(lj_model, ase.io.read(many / "many.xyz", index=":"), fmax=0.01,
                        optimizer="lbfgs")
    frames = ase.io.read(out, index=":")
    assert [f.info["relax_steps"] for f in frames] == direct.n_steps != default.n_steps


def test_cli_output_holds_whole_frames_when_the_input_breaks(many, capsys):
    text = (many / "many.xyz").read_text()
    (many / "broken.xyz").write_text(text + "12\nnot an xyz comment\nCu 0 0\n")
    out = many / "broken.relaxed.xyz"
    with pytest.raises(Exception):  # noqa: B017 (whatever ASE raises for the broken frame)
        main(["relax", str(many / "lj.pt"), str(many / "broken.xyz"), "--max-memory", "200kB",
              "--device", "cpu"])
    frames = ase.io.read(out, index=":")  # every written frame is whole
    assert 0 < len(frames) <= 6
    assert all(f.info["relax_status"] == "converged" for f in frames)


@pytest.mark.gpu
def test_streaming_on_cuda_fits_the_budget_and_follows_the_cpu(lj_model):
    """On a CUDA device: the memory model comes from the allocator's peak, the device's peak
    during the run stays near the budget, and the results are the CPU's."""
    systems = _mixed(False)
    budget = 4 * 2**20
    torch.cuda.reset_peak_memory_stats()
    stream = relax_stream(lj_model, iter(systems), fmax=0.005, max_memory=budget,
                          device="cuda", ordered=True)
    on_cuda = [frame for _, frame in stream]
    assert stream.memory_model.method == "cuda peak" and stream.memory_model.per_edge > 0
    assert torch.cuda.max_memory_allocated() <= 1.25 * budget
    on_cpu = run_relax(lj_model, systems, fmax=0.005)
    for got, expected in zip(on_cuda, on_cpu.atoms):
        np.testing.assert_allclose(got.positions, expected.positions, rtol=0, atol=1e-8)

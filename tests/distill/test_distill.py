"""mlip distill end to end on a Lennard-Jones teacher (seconds): outputs of every stage, resume,
farthest-point selection, teacher labels, the student's accuracy, refusals and the CLI."""

from __future__ import annotations

import json
import logging
import shutil

import ase.io
import numpy as np
import pytest
import torch
import yaml
from ase import Atoms
from ase.build import bulk

from mlip.cli import main
from mlip.distill import distill, farthest_point_sampling, holdout_split, structure_descriptors
from mlip.distill.labels import predict, read_frames
from mlip.distill.report import label_errors, pair_distribution, rdf_distance
from mlip.errors import ConfigError
from mlip.graph import AtomicGraph
from mlip.models import build, load_model, save_model
from mlip.models.lennard_jones import LennardJones
from mlip.train import shipped_config

#: A small Facet student (2.4 k parameters), so that a training takes about a second.
SMALL_STUDENT = {"hidden_irreps": "16x0e+8x1o", "sh_lmax": 1, "embedding_dim": 16,
                 "num_layers": 1, "grid_res": None}
#: A tiny run on an 8-atom LJ crystal: 2 temperatures x 30 steps (7 frames per trajectory, the
#: last 2 held out), 4 rattles and 4 strains, 14 labelled training frames (8 by selection, 6
#: added by one round of a 2-student committee), 5 epochs per training.
SETTINGS = dict(temperatures=[100, 200], md_steps=30, md_interval=5, holdout=0.3, rattles=4,
                strains=4, budget=14, rounds=1, committee=2, epochs=5, speed_steps=10,
                speed_atoms=16, device="cpu", cutoff=5.0,
                set=[f"model.{k}={'null' if v is None else v}" for k, v in SMALL_STUDENT.items()])
STAGES = ["generate", "select", "train", "iterate_1", "report"]


def _cli_args(settings: dict) -> list[str]:
    args = []
    for key, value in settings.items():
        args.append("--" + key.replace("_", "-"))
        if key == "set":
            args = args[:-1] + [a for item in value for a in ("--set", item)]
        else:
            args += [str(v) for v in value] if isinstance(value, list) else [str(value)]
    return args


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """An LJ teacher file (ε 0.05 eV, σ 2.5 Å, 5 Å cutoff) and an 8-atom fcc seed file."""
    root = tmp_path_factory.mktemp("distill_inputs")
    save_model(LennardJones(species=[18], cutoff=5.0, epsilon=0.05, sigma=2.5), root / "lj.pt")
    ase.io.write(root / "seeds.xyz", bulk("Ar", "fcc", a=3.97, cubic=True).repeat((2, 1, 1)))
    return root / "lj.pt", root / "seeds.xyz"


@pytest.fixture(scope="module")
def full_run(inputs, tmp_path_factory):
    """One complete tiny distillation: (run dir, report)."""
    run = tmp_path_factory.mktemp("distill") / "run"
    return run, distill(*inputs, run, **SETTINGS)


def test_every_stage_writes_its_outputs_and_the_report(full_run):
    run, report = full_run
    state = json.loads((run / "distill.json").read_text())
    assert list(state["stages"]) == STAGES
    assert state["stages"]["generate"]["teacher_e0_eV"] == {"Ar": 0.0}  # LJ: a lone atom has 0
    config = yaml.safe_load((run / "train/student0/config.yaml").read_text())
    assert config["data"]["e0"] == {"Ar": 0.0}
    for path in ["generate/labels.h5/manifest.json", "generate/teacher_md_100K.h5",
                 "select/selection.json", "train/train.h5", "train/valid.h5",
                 "train/student0/best.pt", "train/student1/best.pt", "iterate_1/added.h5",
                 "iterate_1/student0/best.pt", "student.pt", "report.json", "report.md"]:
        assert (run / path).exists(), path
    assert report == json.loads((run / "report.json").read_text())
    assert list(report["heldout"]) == ["100 K", "200 K"]
    assert all(e["frames"] == 2 and e["stress_frames"] == 2 for e in report["heldout"].values())
    assert report["training_frames"] == SETTINGS["budget"]
    assert report["budget_plan"] == {"initial": 8, "per_round": 6, "rounds": 1}
    assert report["speed"]["speedup"] > 0 and report["speed"]["atoms"] == 16  # 8 atoms x 2
    assert all(0 <= row["rdf_distance"] < 1 for row in report["rdf"])
    assert "RDF distance" in (run / "report.md").read_text()
    selection = json.loads((run / "select/selection.json").read_text())
    assert len(selection["selected"]) == 8 and len(selection["heldout"]) == 4
    assert selection["pool"] == 2 * 5 + 4 + 4
    assert not set(selection["selected"]) & set(selection["heldout"])


def test_teacher_labels_in_the_store_equal_the_teacher(full_run, inputs):
    run, _ = full_run
    teacher = load_model(inputs[0])
    frames, batch = read_frames(run / "generate/labels.h5")
    assert len(frames) == 2 * 7 + 4 + 4
    for atoms in frames[::5]:
        out = teacher(AtomicGraph.from_ase(atoms, cutoff=teacher.cutoff), compute_stress=True)
        ref = atoms.calc.results
        assert ref["energy"] == pytest.approx(float(out.energy[0]), rel=1e-12, abs=1e-12)
        np.testing.assert_allclose(ref["forces"], out.forces.detach().numpy(), atol=1e-12)
        full = out.stress.detach().numpy()[0]
        np.testing.assert_allclose(ref["stress"], full[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]],
                                   atol=1e-12)
    added, _ = read_frames(run / "iterate_1/added.h5")
    labels = predict(teacher, added)
    for k, atoms in enumerate(added):
        np.testing.assert_allclose(atoms.calc.results["forces"], labels.forces[k], atol=1e-12)


def test_student_error_is_below_what_an_untrained_model_gets(full_run):
    run, _ = full_run
    selection = json.loads((run / "select/selection.json").read_text())
    held, _ = read_frames(run / "generate/labels.h5", selection["heldout"])
    force_rms = 1000 * np.sqrt(np.mean(np.concatenate(
        [a.calc.results["forces"].ravel() for a in held]) ** 2))
    bound = 0.5 * force_rms  # predicting zero forces gives 1.0x
    trained = label_errors(load_model(run / "student.pt"), held)["forces_rmse"]
    model = {**yaml.safe_load(shipped_config("facet").read_text())["model"], **SMALL_STUDENT}
    torch.manual_seed(0)
    untrained = build(model.pop("name"), species=[18], cutoff=5.0, **model)
    assert trained < bound < label_errors(untrained, held)["forces_rmse"]


def test_resume_after_a_late_output_is_lost_redoes_only_the_late_stages(full_run, inputs,
                                                                       tmp_path, caplog):
    run, report = full_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "iterate_1/student0/best.pt").unlink()
    before = (copy / "train/student0/best.pt").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="mlip.distill"):
        again = distill(*inputs, copy, **SETTINGS)
    log = caplog.text
    for stage in ("generate", "select", "train"):
        assert f"stage {stage}: complete, skipped" in log
    assert "redoing it" in log and "stage 4/5: iterate_1" in log
    assert (copy / "train/student0/best.pt").stat().st_mtime_ns == before
    for t, errors in report["heldout"].items():
        assert again["heldout"][t]["forces_rmse"] == pytest.approx(errors["forces_rmse"],
                                                                   rel=1e-6)


def test_run_killed_after_selection_resumes_to_the_same_student(full_run, inputs, tmp_path,
                                                                caplog):
    run, report = full_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    state = json.loads((copy / "distill.json").read_text())
    state["stages"] = {k: state["stages"][k] for k in ("generate", "select")}
    (copy / "distill.json").write_text(json.dumps(state))
    (copy / "report.json").unlink()  # a killed run never wrote these
    labels = (copy / "generate/labels.h5/manifest.json").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="mlip.distill"):
        again = distill(*inputs, copy, **SETTINGS)
    assert "stage generate: complete, skipped" in caplog.text
    assert "stage 3/5: train" in caplog.text
    assert (copy / "generate/labels.h5/manifest.json").stat().st_mtime_ns == labels
    for t, errors in report["heldout"].items():
        for key in ("energy_rmse", "forces_rmse", "stress_rmse"):
            assert again["heldout"][t][key] == pytest.approx(errors[key], rel=1e-6)


def test_farthest_point_sampling_picks_the_isolated_points():
    rng = np.random.default_rng(0)
    cluster = rng.normal(0.0, 0.01, (10, 2))
    corners = np.array([[10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    features = np.concatenate([cluster, corners])
    picked = farthest_point_sampling(features, 4)
    assert set(picked) >= {10, 11, 12} and len(set(picked) - {10, 11, 12}) == 1
    assert picked[0] == 12  # the farthest from the mean
    # with rows already chosen, the next picks are the farthest from them
    assert set(farthest_point_sampling(features, 2, start=[0, 12])) == {10, 11}
    assert farthest_point_sampling(features, 99, start=range(13)) == []


def test_descriptors_single_out_the_rattled_and_the_strained_crystal():
    crystal = bulk("Ar", "fcc", a=3.97, cubic=True).repeat(2)
    frames = []
    for k in range(6):
        near = crystal.copy()
        near.rattle(1e-4, seed=k)
        frames.append(near)
    rattled = crystal.copy()
    rattled.rattle(0.2, seed=9)
    strained = crystal.copy()
    strained.set_cell(crystal.cell[:] * 0.94, scale_atoms=True)
    frames += [rattled, strained]
    picked = farthest_point_sampling(structure_descriptors(frames, 5.0), 3)
    assert {6, 7} <= set(picked) and len(set(picked) & set(range(6))) == 1


def test_holdout_takes_the_end_of_each_md_trajectory():
    systems = ["a@300K"] * 5 + ["b@300K"] * 5 + ["a:rattle0"]
    kinds = ["md_300K"] * 10 + ["rattle"]
    steps = [40, 0, 10, 20, 30] * 2 + [0]
    pool, held = holdout_split(systems, kinds, steps, 0.4)
    assert held == [0, 4, 5, 9] and pool == [1, 2, 3, 6, 7, 8, 10]


def test_pair_distribution_of_an_ideal_gas_is_one():
    rng = np.random.default_rng(1)
    gas = [Atoms("Ar2000", positions=rng.uniform(0, 30, (2000, 3)), cell=[30, 30, 30], pbc=True)]
    r, g = pair_distribution(gas, r_max=6.0, bins=12)
    assert np.all(np.abs(g[4:] - 1) < 0.1)
    assert rdf_distance(g, g) == 0.0


def test_bad_input_is_refused_before_any_work(inputs, tmp_path):
    teacher, seeds = inputs
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match="unknown teacher 'nosuch.pt'"):
        distill("nosuch.pt", seeds, run, **SETTINGS)
    with pytest.raises(ConfigError, match="nosuchfamily"):
        distill("nosuchfamily:model", seeds, run, **SETTINGS)
    (tmp_path / "empty.xyz").write_text("")
    with pytest.raises(ConfigError, match="holds no structures"):
        distill(teacher, tmp_path / "empty.xyz", run, **SETTINGS)
    with pytest.raises(ConfigError, match="does not exist"):
        distill(teacher, tmp_path / "missing.xyz", run, **SETTINGS)
    with pytest.raises(ConfigError, match="--budget = 8: too small"):
        distill(teacher, seeds, run, **{**SETTINGS, "budget": 8})
    with pytest.raises(ConfigError, match="pool of 18"):
        distill(teacher, seeds, run, **{**SETTINGS, "budget": 100})
    with pytest.raises(ConfigError, match="--temperatures"):
        distill(teacher, seeds, run, **{**SETTINGS, "temperatures": [-5]})
    with pytest.raises(ConfigError, match="unknown distill setting 'budjet'"):
        distill(teacher, seeds, run, budjet=10)
    assert not run.exists()


def test_other_settings_in_an_existing_run_dir_are_refused(full_run, inputs):
    run, _ = full_run
    with pytest.raises(ConfigError, match="other settings.*epochs: 5 -> 6"):
        distill(*inputs, run, **{**SETTINGS, "epochs": 6})


def test_cli_resumes_a_finished_run_and_refuses_bad_input(full_run, inputs, tmp_path, capsys):
    run, report = full_run
    teacher, seeds = inputs
    assert main(["distill", str(teacher), str(seeds), "-o", str(run),
                 *_cli_args(SETTINGS)]) == 0
    out = capsys.readouterr().out
    assert f"student: {run / 'student.pt'}" in out and "MD speed-up vs teacher" in out
    assert main(["distill", "nosuch.pt", str(seeds), "-o", str(tmp_path / "x")]) == 2
    assert "unknown teacher" in capsys.readouterr().err
    assert main(["distill", str(teacher), str(seeds), "-o", str(tmp_path / "x"),
                 "--budget", "0"]) == 2
    assert "--budget = 0: allowed an integer >= 1" in capsys.readouterr().err


def test_a_teacher_trajectory_that_blows_up_is_reported_and_dropped(inputs, tmp_path):
    from mlip.distill.config import DistillConfig
    from mlip.distill.generate import make_seeds, run_ladder

    crystal = bulk("Ar", "fcc", a=3.97, cubic=True).repeat((2, 1, 1))
    crushed = crystal.copy()
    crushed.positions[1] = crushed.positions[0] + [1.2, 0.0, 0.0]  # 1.2 Å apart: ~1e4 eV/Å
    config = DistillConfig.from_options({**SETTINGS, "output": str(tmp_path)})
    seeds = make_seeds([crystal, crushed], 0, 0)
    frames, systems, kinds, steps, blown = run_ladder(load_model(inputs[0]), seeds, config,
                                                      tmp_path, 10, "teacher", "cpu")
    assert [b["structure"] for b in blown] == ["1:Ar8", "1:Ar8"]
    assert [b["temperature_K"] for b in blown] == [100, 200]
    assert set(systems) == {"0:Ar8@100K", "0:Ar8@200K"} and len(frames) == 2 * 3
    assert kinds[:3] == ["md_100K"] * 3 and steps[:3] == [0, 5, 10]


def test_budget_plan_splits_the_budget_and_keeps_eight_frames_for_the_first_student():
    from mlip.distill.config import BudgetPlan, DistillConfig

    def plan(**options):
        return BudgetPlan.of(DistillConfig.from_options({"output": "x", **options}), 10_000)

    assert plan(budget=400, rounds=2) == BudgetPlan(initial=240, per_round=80, rounds=2)
    assert plan(budget=12, rounds=1) == BudgetPlan(initial=8, per_round=4, rounds=1)
    assert plan(budget=10, rounds=2) == BudgetPlan(initial=8, per_round=1, rounds=2)
    assert plan(budget=8, rounds=0) == BudgetPlan(initial=8, per_round=0, rounds=0)
    with pytest.raises(ConfigError, match="allowed >= 11"):
        plan(budget=10, rounds=3)
    config = DistillConfig.from_options({"output": "x", "batch_size": 4})
    assert config.epochs_for(360) == 34 and config.epochs_for(8) == 1500
    assert DistillConfig.from_options({"output": "x", "epochs": 7}).epochs_for(360) == 7


def test_repeated_grows_the_shortest_periodic_axis():
    from mlip.distill.report import repeated

    crystal = bulk("Ar", "fcc", a=3.97, cubic=True)
    assert len(repeated(crystal, 0)) == 4 and len(repeated(crystal, 30)) == 32
    slab = crystal.copy()
    slab.pbc = (True, True, False)
    assert len(repeated(slab, 30)) == 36 and np.allclose(repeated(slab, 30).cell[2], slab.cell[2])
    molecule = Atoms("Ar2", positions=[[0, 0, 0], [0, 0, 3.8]])
    assert len(repeated(molecule, 100)) == 2


def test_force_disagreement_and_error_are_the_largest_atomic_values():
    from mlip.distill.active import force_disagreement, force_error
    from mlip.distill.labels import Predictions

    def preds(*forces):
        return Predictions(np.zeros(len(forces)), [np.asarray(f, float) for f in forces],
                           np.full((len(forces), 3, 3), np.nan))

    a = preds([[0, 0, 0], [1, 0, 0]])
    b = preds([[0, 0, 0], [-1, 0, 0]])
    # spread of atom 1: sqrt(mean(|±1|^2)) = 1; atom 0: 0
    assert force_disagreement([a, b]) == pytest.approx([1.0])
    assert force_error(a, b) == pytest.approx([2.0])


def test_a_single_student_round_adds_the_frames_it_gets_most_wrong(full_run, inputs, tmp_path):
    from mlip.distill.active import active_round
    from mlip.distill.config import DistillConfig
    from mlip.distill.generate import make_seeds

    run, _ = full_run
    teacher = load_model(inputs[0])
    config = DistillConfig.from_options({**SETTINGS, "output": str(tmp_path), "committee": 1,
                                         "al_steps": 10})
    seeds = make_seeds(ase.io.read(inputs[1], index=":"), 0, 0)
    student = run / "train/student0/best.pt"
    summary = active_round(3, [student], teacher, seeds, config, tmp_path, "cpu", 2)
    assert summary["score"] == "force error" and summary["candidates"] == 2 * 3
    added, batch = read_frames(tmp_path / "added.h5")
    assert len(added) == 2 and set(batch.frames["config_type"]) == {"active_3"}
    candidates = []
    for t in SETTINGS["temperatures"]:
        candidates += read_frames(tmp_path / f"student_md_{t}K.h5")[0]
    model = load_model(student)
    errors = [np.linalg.norm(predict(model, [c]).forces[0] - predict(teacher, [c]).forces[0],
                             axis=1).max() for c in candidates]
    worst = sorted(errors)[-2:]
    got = [np.linalg.norm(predict(model, [a]).forces[0] - a.calc.results["forces"], axis=1).max()
           for a in added]
    assert sorted(got) == pytest.approx(worst, rel=1e-6)

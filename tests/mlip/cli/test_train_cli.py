import csv
import json

import yaml

from mlip.cli import main


def test_train_resume_eval_and_plot_from_the_command_line(tiny_train_config, tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_train_config))
    run = tmp_path / "run"
    assert main(["train", str(config), "-o", str(run), "--set", "optimizer.lr=2e-3"]) == 0
    assert f"best potential: {run / 'best.pt'}" in capsys.readouterr().out
    assert yaml.safe_load((run / "config.yaml").read_text())["optimizer"]["lr"] == 2e-3
    assert main(["train", "--resume", str(run), "--set", "train.max_steps=5"]) == 0
    with open(run / "steps.csv") as handle:
        assert [int(r["step"]) for r in csv.DictReader(handle)] == [1, 2, 3, 4, 5]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 5
    capsys.readouterr()

    assert (
        main(
            [
                "eval",
                str(run / "best.pt"),
                tiny_train_config["data"]["train"],
                "--max-frames",
                "6",
                "-o",
                str(tmp_path / "eval"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "6 frames" in out and "forces RMSE (meV/Å)" in out
    assert (tmp_path / "eval" / "parity_energy.png").stat().st_size > 0
    assert (tmp_path / "eval" / "parity_forces.png").stat().st_size > 0

    assert main(["plot", str(run)]) == 0
    assert (run / "learning_curves.png").stat().st_size > 0
    assert main(["plot", str(run / "steps.csv"), "-o", str(tmp_path / "steps.png")]) == 0
    assert (tmp_path / "steps.png").stat().st_size > 0


def test_plot_draws_md_thermo_logs(tmp_path, capsys):
    thermo = tmp_path / "thermo.csv"
    rows = ["system,time_ps,n_atoms,Etot_eV,Epot_eV,T_K,P_GPa,V_A3"]
    rows += [f"0,{0.01 * k},27,{-1.0 + 1e-4 * k},{-1.2},{300 + k},,{1000.0}" for k in range(5)]
    thermo.write_text("\n".join(rows) + "\n")
    assert main(["plot", str(thermo)]) == 0
    assert f"wrote {tmp_path / 'thermo.png'}" in capsys.readouterr().out
    assert (tmp_path / "thermo.png").stat().st_size > 0


def test_cli_errors_are_one_line(tiny_train_config, tmp_path, capsys):
    tiny_train_config["loss"] = {"forces_wieght": 10}
    config = tmp_path / "typo.yaml"
    config.write_text(yaml.safe_dump(tiny_train_config))
    assert main(["train", str(config), "-o", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert (
        "mlip train: error: unknown config key 'loss.forces_wieght' "
        "(did you mean 'loss.forces_weight'?)"
        in err
    )
    assert main(["train"]) == 2
    assert "give a config file" in capsys.readouterr().err
    assert main(["plot", str(tmp_path / "missing")]) == 2
    assert "no such run directory or CSV file" in capsys.readouterr().err
    assert main(["plot", str(tmp_path)]) == 2
    assert "has no metrics.jsonl rows to plot" in capsys.readouterr().err


def test_train_accepts_the_name_of_a_shipped_config(tmp_path, capsys):
    run = tmp_path / "run"
    overrides = ["model={name: lennard_jones, sigma: 1.0}", "data.max_frames=6",
                 "data.batch_size=3", "data.valid_fraction=0.34", "train.max_steps=1",
                 "train.progress=false", "device=cpu"]
    args = ["train", "facet", "-o", str(run)] + [a for o in overrides for a in ("--set", o)]
    assert main(args) == 0
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["data"]["train"] == "bundled:3bpa_train_300K.xyz"  # from mlip/configs/facet.yaml
    assert config["model"] == {"name": "lennard_jones", "sigma": 1.0}

import csv
import os
import subprocess
import sys

import pytest
import torch
import yaml

from mlip.train import train


def _losses(run_dir):
    with open(run_dir / "steps.csv") as handle:
        return [float(r["loss"]) for r in csv.DictReader(handle)]


def test_two_gloo_processes_match_one_process_at_the_same_global_batch(tiny_config, tmp_path):
    tiny_config["train"]["max_steps"] = 6
    tiny_config["data"]["batch_size"] = 4  # two frames per rank
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_config))
    train(tiny_config, tmp_path / "single")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "mlip",
        "train",
        str(path),
        "-o",
        str(tmp_path / "ddp"),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("best potential:") == 1  # rank 0 only
    single, ddp = _losses(tmp_path / "single"), _losses(tmp_path / "ddp")
    assert len(single) == len(ddp) == 6
    assert ddp == pytest.approx(single, rel=1e-10)
    a = torch.load(tmp_path / "single" / "final.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "ddp" / "final.pt", weights_only=True)["state_dict"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-10, atol=1e-12)

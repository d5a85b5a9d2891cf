"""Every registered model trains through the same loop, from its shipped example config."""

import pytest
import torch
import yaml

from mlip.models import MODELS, load_model
from mlip.train import shipped_config, train
from mlip.train.config import resolve_config

SHIPPED = ["facet", "tdn", "equiformer_v3"]


@pytest.mark.slow  # one step of each full-size example model: ~10-60 s each on a loaded 2-core CPU
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_config_trains_one_step(name, tmp_path):
    if name not in MODELS:
        pytest.skip(f"model {name} is not registered yet")
    config = yaml.safe_load(shipped_config(name).read_text())
    assert resolve_config(config)["model"]["name"] == name
    config["data"].update(max_frames=6, batch_size=2, valid_fraction=0.34)
    config["train"].update(max_steps=1, progress=False)
    config.update(device="cpu", dtype="float64")
    config["ema"]["decay"] = None
    best = train(config, tmp_path / "run")
    state = torch.load(tmp_path / "run" / "last.ckpt", weights_only=True)
    assert state["progress"]["step"] == 1
    model = load_model(best)
    assert model.registry_name == name
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())
    if "avg_num_neighbors" in model.hparams:
        assert model.hparams["avg_num_neighbors"] == pytest.approx(state["stats"]["avg_num_neighbors"])

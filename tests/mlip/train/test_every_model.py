"""Every registered model trains through the same loop, from its shipped example config."""

import math

import pytest
import torch
import yaml

from mlip.errors import ConfigError
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
        expected = state["stats"]["avg_num_neighbors"]
        assert model.hparams["avg_num_neighbors"] == pytest.approx(expected)


#: The smallest useful size of each family (one training step must take seconds).
TINY_HPARAMS = {
    "lennard_jones": {"sigma": 1.0, "epsilon": 0.05},
    "facet": {"hidden_irreps": "8x0e+4x1o", "num_layers": 1, "sh_lmax": 1, "embedding_dim": 8,
              "num_spline_basis": 8, "mixer_hidden": [8], "readout_hidden": [8]},
    "tdn": {"lmax": 1, "channels": 8, "num_blocks": 1, "num_heads": 2, "num_basis": 8,
            "radial_hidden": 16},
    "equiformer_v3": {"num_layers": 1, "channels": 8, "lmax": 1, "mmax": 1, "num_heads": 2,
                      "attn_hidden": 4, "attn_alpha_channels": 4, "attn_value_channels": 2,
                      "ffn_hidden": 8, "num_rbf": 4, "edge_channels": 8},
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registered_model_takes_a_training_step(name, tiny_config, tmp_path):
    if name not in TINY_HPARAMS:
        pytest.fail(f"add tiny hyper-parameters for the new model {name!r} to TINY_HPARAMS")
    tiny_config["model"] = {"name": name, **TINY_HPARAMS[name]}
    tiny_config["data"].update(max_frames=4, batch_size=3, valid_fraction=0.25)
    tiny_config["train"].update(max_steps=1)
    tiny_config["ema"] = {"decay": None}
    model = load_model(train(tiny_config, tmp_path / "run"))
    assert model.registry_name == name
    state = torch.load(tmp_path / "run" / "last.ckpt", weights_only=True)
    assert state["progress"]["step"] == 1
    assert math.isfinite(state["progress"]["best_valid_loss"])
    finite = [torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point()]
    assert all(finite)


def test_denoising_model_is_refused_by_the_trainer(tiny_config, tmp_path):
    """mlip train does not add the DeNS loss, so it refuses a model built for it (docs say so)."""
    tiny_config["model"] = {"name": "equiformer_v3", **TINY_HPARAMS["equiformer_v3"],
                            "denoising": True}
    with pytest.raises(ConfigError, match="model.denoising: true .* does not add the denoising"):
        train(tiny_config, tmp_path / "run")
    assert not (tmp_path / "run" / "last.ckpt").exists()

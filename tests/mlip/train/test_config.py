import pytest

from mlip.errors import ConfigError
from mlip.train.config import DEFAULTS, apply_overrides, load_config, resolve_config, shipped_config


def test_defaults_filled_and_overrides_parsed_as_yaml(tiny_config):
    config = apply_overrides(
        tiny_config,
        ["optimizer.lr=1e-3", "data.train=[a.xyz, b.xyz]", "ema.decay=null", "train.max_steps=7"],
    )
    resolved = resolve_config(config)
    assert resolved["optimizer"]["lr"] == 1e-3
    assert resolved["data"]["train"] == ["a.xyz", "b.xyz"]
    assert resolved["ema"]["decay"] is None
    assert resolved["train"]["max_steps"] == 7
    assert resolved["loss"]["forces_weight"] == DEFAULTS["loss"]["forces_weight"]
    assert tiny_config["optimizer"]["lr"] == 0.01  # the input is not modified


def test_unknown_key_names_it_with_a_hint(tiny_config):
    tiny_config["data"]["cutof"] = 5.0
    with pytest.raises(
        ConfigError, match=r"unknown config key 'data.cutof' \(did you mean 'data.cutoff'\?\)"
    ):
        resolve_config(tiny_config)


def test_unknown_section_names_it():
    with pytest.raises(
        ConfigError, match=r"unknown config key 'optimiser' \(did you mean 'optimizer'\?\)"
    ):
        resolve_config({"optimiser": {"lr": 1.0}, "data": {"train": "x"}})


def test_bad_choice_and_missing_train():
    with pytest.raises(ConfigError, match=r"loss.kind = 'l1': allowed one of 'mse', 'huber'"):
        resolve_config({"loss": {"kind": "l1"}, "data": {"train": "x"}})
    with pytest.raises(ConfigError, match="data.train is required"):
        resolve_config({})


def test_override_without_equals_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="override 'optimizer.lr' must look like key.sub=value"):
        apply_overrides({}, ["optimizer.lr"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="nothere.yaml does not exist"):
        load_config(tmp_path / "nothere.yaml")


@pytest.mark.parametrize("name", ["facet", "tdn", "equiformer_v3"])
def test_shipped_configs_resolve_with_valid_model_hparams(name):
    import yaml

    from mlip.models.registry import check_hparams

    raw = yaml.safe_load(shipped_config(name).read_text())
    resolved = resolve_config(raw)
    assert resolved["model"]["name"] == name
    hparams = {k: v for k, v in resolved["model"].items() if k != "name"}
    assert check_hparams(name, hparams).registry_name == name

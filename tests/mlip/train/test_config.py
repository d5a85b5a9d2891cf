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


#: A config.yaml as written into a run directory (and into last.ckpt) before the typed config.
SAVED = """
seed: 0
device: auto
dtype: float64
deterministic: false
data:
  train: bundled:3bpa_train_300K.xyz
  valid: null
  test: null
  valid_fraction: 0.1
  test_fraction: 0.0
  split_seed: 0
  split_key: null
  max_frames: 24
  cutoff: 5.0
  batch_size: 10
  max_atoms_per_batch: null
  isolated_atoms: null
  e0: {H: -13.6, C: -1029.5}
  energy_key: null
  forces_key: null
  stress_key: null
  config_type_weights: {}
  streaming: false
  num_workers: 0
model: {name: lennard_jones, sigma: 1.0, epsilon: 0.05}
loss: {energy_weight: 1.0, forces_weight: 100.0, stress_weight: 1.0, kind: mse, huber_delta: 0.01}
optimizer:
  name: adam
  lr: 0.01
  weight_decay: 5.0e-07
  amsgrad: true
  betas: [0.9, 0.999]
  clip_grad_norm: 10.0
schedule: {name: plateau, warmup_steps: 0, min_lr_ratio: 0.01, fit_to_time: false,
  plateau_factor: 0.8, plateau_patience: 50}
ema: {decay: 0.99}
stage_two: {start_fraction: 0.5, energy_weight: 1000.0, forces_weight: null, stress_weight: null,
  lr: 0.001, schedule: constant}
train: {max_epochs: 100, max_steps: null, max_time_s: null, eval_every_epochs: 1,
  checkpoint_every_steps: 100, progress: true, find_unused_parameters: false}
finetune: {from: base.pt, refit_e0: true}
"""


def test_a_saved_config_loads_typed_and_saves_back_unchanged():
    import yaml

    from mlip.train.config import FinetuneConfig, LossConfig, TrainingConfig

    saved = yaml.safe_load(SAVED)
    config = TrainingConfig.load(saved)
    assert config.data.max_frames == 24 and config.data.e0 == {"H": -13.6, "C": -1029.5}
    assert config.model.name == "lennard_jones" and config.model.hparams == {
        "sigma": 1.0, "epsilon": 0.05}
    assert config.finetune == FinetuneConfig(source="base.pt", refit_e0=True)
    assert config.stage_two.start_fraction == 0.5 and config.train.max_steps is None
    assert config.loss == LossConfig()  # the saved loss section holds the defaults
    assert config.as_dict() == saved
    assert list(config.as_dict()) == list(saved)  # same order in config.yaml
    assert TrainingConfig.load(config.as_dict()) == config
    with pytest.raises(AttributeError):
        config.train.max_steps = 3  # frozen


def test_typed_sections_are_exactly_the_declared_keys_and_hold_no_defaults_of_their_own():
    import dataclasses

    from mlip.train.config import CONFIG, SECTIONS, LossConfig

    declared = {}
    for name in CONFIG.names():
        if "." in name:
            section, key = name.split(".", 1)
            declared.setdefault(section, set()).add(key)
    for section, cls in SECTIONS.items():
        keys = {f.metadata.get("key", f.name) for f in dataclasses.fields(cls)}
        assert keys == declared[section], section
        if cls is not LossConfig:
            assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(cls))
    assert dataclasses.asdict(LossConfig()) == DEFAULTS["loss"]  # LossConfig() = CONFIG's defaults


def test_unknown_key_in_a_typed_load_names_its_dotted_path():
    from mlip.train.config import TrainingConfig

    with pytest.raises(ConfigError, match=r"unknown config key 'stage_two.lrr' \(did you mean "
                       r"'stage_two.lr'\?\); valid keys: \['energy_weight', "):
        TrainingConfig.load({"data": {"train": "x"}, "stage_two": {"lrr": 1.0}})

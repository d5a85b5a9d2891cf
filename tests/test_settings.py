"""The declared settings: coercion, ranges, choices, combinations, the device rule, the docs."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

from mlip.errors import ConfigError
from mlip.settings import (
    DOCUMENTED,
    FRACTION,
    POSITIVE,
    Group,
    OnlyWith,
    Range,
    Setting,
    Sum,
    render_docs,
    resolve_device,
)
from mlip.train.config import DEFAULTS, apply_overrides, resolve_config

ROOT = Path(__file__).resolve().parents[1]


def _resolve(*overrides: str) -> dict:
    return resolve_config(apply_overrides({"data": {"train": "x.xyz"}}, list(overrides)))


def test_set_values_are_coerced_to_the_declared_type():
    resolved = _resolve("optimizer.lr=1e-3", "train.max_time_s=60", "loss.energy_weight=2")
    assert resolved["optimizer"]["lr"] == 1e-3 and type(resolved["optimizer"]["lr"]) is float
    assert type(resolved["train"]["max_time_s"]) is float
    assert type(resolved["loss"]["energy_weight"]) is float


@pytest.mark.parametrize("override, message", [
    ("optimizer.lr=fast", "optimizer.lr = 'fast': allowed a number > 0"),
    ("optimizer.lr=-1", "optimizer.lr = -1: allowed a number > 0"),
    ("optimizer.lr=.nan", "optimizer.lr = nan: allowed a number > 0"),
    ("data.valid_fraction=1.5", "data.valid_fraction = 1.5: allowed a number in [0, 1)"),
    ("data.test_fraction=0.95",
     "data.valid_fraction + data.test_fraction = 1.05: allowed < 1"),
    ("train.max_steps=2.5", "train.max_steps = 2.5: allowed an integer >= 1 or null"),
    ("train.progress=3", "train.progress = 3: allowed true or false"),
    ("data.batch_size=true", "data.batch_size = True: allowed an integer >= 1"),
    ("loss.kind=null", "loss.kind = null: allowed one of 'mse', 'huber'"),
    ("optimizer.betas=[0.9]", "optimizer.betas = [0.9]: allowed a list of 2 numbers in [0, 1)"),
    ("data.train=5", "data.train = 5: allowed text or a list of strings"),
    ("data.e0=isolated", "data.e0 = 'isolated': allowed only with data.isolated_atoms set "
                         "(got data.isolated_atoms = null)"),
    ("data.config_type_weights={md: -1}",
     "data.config_type_weights = {'md': -1}: allowed a mapping of names to numbers >= 0"),
    ("device=gpu", "device = 'gpu': allowed auto, cpu, cuda or cuda:N"),
])
def test_nonsense_config_values_are_one_line_errors(override, message):
    with pytest.raises(ConfigError) as caught:
        _resolve(override)
    assert str(caught.value) == message


def test_unknown_keys_still_get_a_hint_and_model_keys_pass_through():
    with pytest.raises(ConfigError, match=r"unknown config key 'train.max_step' \(did you mean "
                                          r"'train.max_steps'\?\)"):
        _resolve("train.max_step=3")
    resolved = _resolve("model={name: tdn, lmax: 2}")
    assert resolved["model"] == {"name": "tdn", "lmax": 2}


def test_defaults_are_allowed_values():
    for module in DOCUMENTED:
        for group in importlib.import_module(module).GROUPS:
            for setting in group.settings:
                if not setting.required:
                    assert setting.check(setting.default) == setting.default, setting.name
    assert _resolve()["optimizer"] == DEFAULTS["optimizer"]


def test_setting_checks_text_like_typed_values():
    size = Setting("--n", (int, str), "auto", "group size", choices=("auto", "all"),
                   range=Range(1, None))
    assert size.check("8") == 8 and size.check("all") == "all" and size.check(8.0) == 8
    with pytest.raises(ConfigError, match=r"^--n = 'some': allowed an integer >= 1 or 'auto', "
                                          r"'all'$"):
        size.check("some")
    with pytest.raises(ConfigError, match="--n = 0: allowed"):
        size.check("0")
    fractions = Setting("--f", (list,), [0.5, 0.5], "fractions", item=float, length=(2, 3),
                        range=FRACTION)
    assert fractions.check(["0.25", "0.75"]) == [0.25, 0.75]
    with pytest.raises(ConfigError, match=r"--f = \[0.5\]: allowed a list of 2 to 3 numbers"):
        fractions.check(["0.5"])


def test_rules_name_both_settings():
    group = Group("g", (Setting("--mode", (str,), "a", "mode", choices=("a", "b")),
                        Setting("--p", (float,), 0.0, "p"),
                        Setting("--x", (list,), [1.0], "x", item=float)),
                  rules=(OnlyWith("--p", "--mode", ("b",)), Sum(("--x",), Range(1, 1))))
    assert group.check({"--mode": "b", "--p": "2"})["--p"] == 2.0
    assert group.check({"--x": ["0.7", "0.2", "0.1"]})["--x"] == [0.7, 0.2, 0.1]  # 1 within ulps
    with pytest.raises(ConfigError, match=r"^--p = 2: allowed only with --mode b \(got --mode = "
                                          r"'a'\)$"):
        group.check({"--p": "2"})
    with pytest.raises(ConfigError, match=r"^sum of --x = 1.5: allowed = 1$"):
        group.check({"--x": ["0.5", "1"]})
    assert group.check({"--p": "2"}, keep_unset=("--mode",))["--mode"] is None  # not judged


def test_range_reads_like_maths():
    assert [str(r) for r in (POSITIVE, FRACTION, Range(1, None), Range(None, 1, high_open=True),
                             Range(1, 1))] == ["> 0", "in [0, 1)", ">= 1", "< 1", "= 1"]


@pytest.fixture
def no_cuda(monkeypatch):
    """A torch build without CUDA, whatever this machine has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.version, "cuda", None)


def test_device_rule(no_cuda):
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError) as caught:
        resolve_device("cuda", setting="--device")
    assert str(caught.value) == ("--device = 'cuda': allowed auto or cpu (this torch build has "
                                 "no CUDA)")
    with pytest.raises(ConfigError, match=r"^device = 'cuda:x': allowed auto, cpu, cuda or "):
        resolve_device("cuda:x")
    with pytest.raises(ConfigError, match="device = 'cuda:1': allowed auto or cpu"):
        _resolve("device=cuda:1")
    from mlip.train.distributed import resolve_device as training_device  # the same rule

    with pytest.raises(ConfigError, match="device = 'cuda': allowed auto or cpu"):
        training_device("cuda")


def test_device_index_beyond_the_visible_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("auto") == torch.device("cuda", 0)
    with pytest.raises(ConfigError, match=r"cuda:2': allowed auto, cpu, cuda or cuda:0 to cuda:1"):
        resolve_device("cuda:2")


def test_docs_table_is_up_to_date():
    assert (ROOT / "docs" / "settings.md").read_text() == render_docs(), (
        "docs/settings.md is stale: python -m mlip.settings docs/settings.md")


def test_cli_compressions_are_the_store_compressions():
    from mlip.cli.data import COMPRESSIONS
    from mlip.data.schema import COMPRESSIONS as STORE_COMPRESSIONS

    assert COMPRESSIONS == STORE_COMPRESSIONS

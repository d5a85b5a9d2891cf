"""Foundation-model names: parsing, unknown names and the missing-extra error (no package
needed: these run whether or not ``mlip[foundation]`` is installed)."""

from __future__ import annotations

import importlib.util

import pytest

from mlip.errors import ConfigError, MissingExtraError
from mlip.models import load_model
from mlip.models.foundation import FOUNDATION_MODELS, is_foundation_name


def test_names_with_a_known_family_are_foundation_names(tmp_path, monkeypatch):
    assert "sevennet" in FOUNDATION_MODELS
    assert is_foundation_name("sevennet:7net-0")
    assert is_foundation_name("SevenNet:7net-0")
    assert not is_foundation_name("model.pt")
    assert is_foundation_name("unknown:7net-0")  # refused by load_model, naming the known
    assert not is_foundation_name("runs/a:b/best.pt")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sevennet:7net-0").write_bytes(b"")  # an existing file is a file, not a name
    assert not is_foundation_name("sevennet:7net-0")


def test_an_adapter_family_mlip_does_not_have_is_refused_naming_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown foundation model family 'orb'.*sevennet"):
        load_model("orb:v2")


FAMILIES = [  # (model name, the package it needs, the start of its list of known models)
    ("sevennet:7net-0", "sevenn", "7net-0"),
    ("chgnet:0.3.0", "chgnet", r"0\.3\.0, 0\.2\.0, r2scan"),
]


@pytest.mark.parametrize(("name", "package", "known"), FAMILIES)
def test_unknown_model_name_is_refused_naming_the_available_ones(name, package, known):
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"needs {package}")
    family = name.partition(":")[0]
    with pytest.raises(ConfigError, match=rf"unknown {family} model 'nope'; available: {known}"):
        load_model(f"{family}:nope")


@pytest.mark.parametrize(("name", "package", "known"), FAMILIES)
def test_without_the_package_the_error_says_what_to_install(monkeypatch, name, package, known):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda wanted, *a: None if wanted == package else real(wanted, *a))
    with pytest.raises(MissingExtraError, match=rf"'{package}'.*pip install mlip\[foundation\]"):
        load_model(name)

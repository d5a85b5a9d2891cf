"""Packaging: every source folder is an installed sub-package of the single `mlip` namespace."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
MAPPING = {"mlip": "mlip", "calculators": "mlip.calculators", "data": "mlip.data", "md": "mlip.md"}


def _source_packages() -> list[str]:
    names = []
    for top, prefix in MAPPING.items():
        for init in sorted((ROOT / top).rglob("__init__.py")):
            rel = init.parent.relative_to(ROOT / top)
            names.append(".".join([prefix, *rel.parts]) if rel.parts else prefix)
    return names


def test_every_source_folder_is_listed_in_pyproject():
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    missing = [name for name in _source_packages() if name not in listed]
    assert not missing, f"add these packages to [tool.setuptools] packages: {missing}"


@pytest.mark.parametrize("name", _source_packages())
def test_package_imports_under_the_mlip_namespace(name):
    module = importlib.import_module(name)
    assert module.__name__ == name


def test_console_script_reports_version():
    out = subprocess.run(
        [sys.executable, "-m", "mlip", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().startswith("mlip ")

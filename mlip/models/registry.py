"""The model registry: ``MODELS``, :func:`register_model` and :func:`build`."""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable, TypeVar

from mlip.errors import ConfigError
from mlip.models.base import Potential

__all__ = ["MODELS", "register_model", "build", "check_hparams"]

MODELS: dict[str, type[Potential]] = {}

P = TypeVar("P", bound=type[Potential])


def register_model(name: str) -> Callable[[P], P]:
    """Class decorator registering a :class:`Potential` subclass under ``name``."""
    def decorate(cls: P) -> P:
        if name in MODELS and MODELS[name] is not cls:
            raise ValueError(f"model name {name!r} is registered twice")
        cls.registry_name = name
        MODELS[name] = cls
        return cls
    return decorate


def check_hparams(name: str, hparams: dict[str, Any]) -> type[Potential]:
    """Return the class registered as ``name`` after checking ``hparams`` against its signature.

    Raises:
        ConfigError: unknown model name or unknown keyword, naming the valid choices.
    """
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; registered models: {sorted(MODELS)}")
    cls = MODELS[name]
    params = inspect.signature(cls.__init__).parameters
    valid = [p for p in params if p != "self"]
    for key in hparams:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown hyper-parameter {key!r} for model {name!r}{hint}; "
                              f"valid keys: {sorted(valid)}")
    return cls


def build(name: str, **hparams: Any) -> Potential:
    """Build the registered model ``name`` from keyword hyper-parameters."""
    return check_hparams(name, hparams)(**hparams)

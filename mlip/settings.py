"""Every user-facing setting declared once: type, range, choices, default, unit and help.

A :class:`Setting` declares one option of a CLI verb (``--steps``) or one key of the training
config (``data.valid_fraction``); a :class:`Group` holds the settings of one verb (or of the
config) and the :class:`OnlyWith` / :class:`Sum` rules that relate them. From a group come

* the argparse options (:meth:`Group.add_arguments`; ``--help`` shows every default),
* the check of the given values (:meth:`Group.check`, :meth:`Group.apply`): coercion of text
  (``--set optimizer.lr=1e-3`` is a float), ranges, choices and combinations, each refusal a
  :class:`~mlip.errors.ConfigError` of one line ``NAME = VALUE: allowed ...``,
* the Markdown tables of ``docs/settings.md`` (:func:`render_docs`; regenerate the file with
  ``python -m mlip.settings docs/settings.md``).

:func:`resolve_device` is the one device rule of every verb and of the training config.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Collection, Mapping, NoReturn

from mlip.errors import ConfigError

if TYPE_CHECKING:  # the CLI imports torch only when a verb runs
    import torch

__all__ = ["Range", "Setting", "OnlyWith", "Sum", "Group", "DEVICE_PATTERN", "resolve_device",
           "render_docs"]

#: The device syntax of every verb and of the training config.
DEVICE_PATTERN = ("auto|cpu|cuda(:[0-9]+)?", "auto, cpu, cuda or cuda:N")

_NOUNS = {int: "an integer", float: "a number", bool: "true or false", str: "text",
          list: "a list", dict: "a mapping"}
_PLURALS = {int: "integers", float: "numbers", bool: "booleans", str: "strings"}


@dataclass(frozen=True)
class Range:
    """An interval of numbers; ``None`` bounds are open-ended."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, x: float) -> bool:
        if math.isnan(x):
            return False
        above = self.low is None or (x > self.low if self.low_open else x >= self.low)
        below = self.high is None or (x < self.high if self.high_open else x <= self.high)
        return above and below

    def near(self, x: float, tolerance: float = 1e-9) -> bool:
        """``x`` inside, or within ``tolerance`` of a closed bound (for sums of fractions)."""
        closed = [b for b, is_open in ((self.low, self.low_open), (self.high, self.high_open))
                  if b is not None and not is_open]
        return x in self or any(abs(x - b) <= tolerance for b in closed)

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            if self.low == self.high:
                return f"= {self.low:g}"
            return (f"in {'(' if self.low_open else '['}{self.low:g}, "
                    f"{self.high:g}{')' if self.high_open else ']'}")
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return "any"


#: Ranges used throughout the declarations.
POSITIVE = Range(0, None, low_open=True)
NON_NEGATIVE = Range(0, None)
AT_LEAST_ONE = Range(1, None)
FRACTION = Range(0, 1, high_open=True)
UNIT_INTERVAL = Range(0, 1)


@dataclass(frozen=True)
class Setting:
    """One option of a verb (``name`` = ``--steps``) or one config key (``data.cutoff``).

    Attributes:
        name: the option string or the dotted config key; errors and docs name it so.
        types: accepted Python types among int, float, bool, str, list, dict (an int is
            accepted for a float; text is converted to the number types).
        default: the value when not given (a fresh copy each time).
        help: one sentence for ``--help`` and the docs.
        unit: the unit of numbers ("" when none; ASE units).
        choices: the allowed texts, when ``str`` is a type and the text is a keyword.
        range: the allowed numbers (also of list items and mapping values).
        item: the type of list items and mapping values.
        length: allowed list lengths (min, max).
        pattern: (regular expression a text must match, how to say it).
        nullable: ``None`` (YAML ``null``) is allowed.
        required: no default: the value must be given.
        flags: extra option strings (``-o``).
        default_text: how the default reads when it is not a plain value ("IN_STEM.xyz").
        metavar: the value's name in ``--help`` ("N", "KEY=VALUE").
        repeat: a list option takes one item per use (``--set a=1 --set b=2``), not several.
    """

    name: str
    types: tuple[type, ...]
    default: Any
    help: str
    unit: str = ""
    choices: tuple[str, ...] = ()
    range: Range | None = None
    item: type | None = None
    length: tuple[int, int] | None = None
    pattern: tuple[str, str] | None = None
    nullable: bool = False
    required: bool = False
    flags: tuple[str, ...] = ()
    default_text: str | None = None
    metavar: str | None = None
    repeat: bool = False

    @property
    def dest(self) -> str:
        """The argparse attribute (``--log-interval`` → ``log_interval``)."""
        return self.name.lstrip("-").replace("-", "_")

    @property
    def is_option(self) -> bool:
        """A command-line option (``--steps``), not a config key."""
        return self.name.startswith("-")

    @property
    def is_flag(self) -> bool:
        """A CLI switch without a value (``--cell``)."""
        return self.types == (bool,)

    def shown_default(self) -> str:
        """The default as ``--help`` and the docs show it."""
        if self.default_text is not None:
            return self.default_text
        if self.default is None:
            return "none"
        if isinstance(self.default, bool):
            return "on" if self.default else "off"
        if isinstance(self.default, (list, tuple)):
            return " ".join(f"{v:g}" if isinstance(v, float) else str(v)
                            for v in self.default) or "none"
        return str(self.default) if self.default != {} else "{}"

    def allowed(self) -> str:
        """What the setting accepts, in words ("an integer >= 1", "one of 'mse', 'huber'")."""
        if self.is_flag and self.is_option:
            return "a switch (no value)"
        parts = []
        for kind in self.types:
            if kind is str and self.choices:
                parts.append(", ".join(repr(c) for c in self.choices))
            elif kind is str and self.pattern:
                parts.append(self.pattern[1])
            elif kind in (list, dict):
                parts.append(self._container(kind))
            elif kind in (int, float) and self.range:
                parts.append(f"{_NOUNS[kind]} {self.range}")
            else:
                parts.append(_NOUNS[kind])
        if self.nullable and not self.is_option:  # a CLI option is null by not being given
            parts.append("null")
        if len(parts) == 1 and self.types == (str,) and self.choices:
            return f"one of {parts[0]}"
        return " or ".join(parts)

    def _container(self, kind: type) -> str:
        if self.length and self.length[0] == self.length[1]:
            size = f"{self.length[0]} "
        elif self.length:
            size = f"{self.length[0]} to {self.length[1]} "
        else:
            size = ""
        items = _PLURALS.get(self.item, "values") if self.item else "values"
        within = f" {self.range}" if self.range and self.item in (int, float) else ""
        if kind is dict:
            return f"a mapping of names to {items}{within}"
        return f"a list of {size}{items}{within}"

    def check(self, value: Any) -> Any:
        """``value`` converted to the declared type and checked; :class:`ConfigError` if not.

        Text is read as a number where a number is declared (``"1e-3"`` → 0.001), so values
        from the command line and from YAML 1.1 are checked alike.
        """
        if value is None:
            if self.nullable:
                return None
            if self.required:
                raise ConfigError(f"{self.name} is required: allowed {self.allowed()}")
            self._refuse(value)
        if isinstance(value, (list, tuple)) and list in self.types:
            items = [self._scalar(v, (self.item,) if self.item else (int, float, str, bool), value)
                     for v in value]
            if self.length and not self.length[0] <= len(items) <= self.length[1]:
                self._refuse(items)
            return items
        if isinstance(value, Mapping) and dict in self.types:
            kinds = (self.item,) if self.item else (int, float, str, bool)
            return {str(k): self._scalar(v, kinds, value) for k, v in value.items()}
        return self._scalar(value, self.types)

    def _scalar(self, value: Any, types: tuple[type, ...], container: Any = None) -> Any:
        """One value checked against ``types`` (and the choices, pattern and range); an error
        quotes the whole ``container`` it came from, else the value as read (``-5``)."""
        if isinstance(value, str):
            if str in types and self._text_ok(value):
                return value
            value = _number(value, types)
        if isinstance(value, bool):
            if bool not in types:
                self._refuse(value if container is None else container)
            return value
        if isinstance(value, int) and int not in types and float in types:
            value = float(value)
        if isinstance(value, float) and float not in types and int in types and value.is_integer():
            value = int(value)
        if not isinstance(value, tuple(t for t in types if t in (int, float))) or not (
            math.isfinite(value) and (self.range is None or value in self.range)
        ):
            self._refuse(value if container is None else container)
        return value

    def _text_ok(self, text: str) -> bool:
        if self.choices:
            return text in self.choices
        if self.pattern:
            return re.fullmatch(self.pattern[0], text) is not None
        return True

    def _refuse(self, value: Any) -> NoReturn:
        raise ConfigError(f"{self.name} = {_show(value)}: allowed {self.allowed()}")


def _number(text: str, types: tuple[type, ...]) -> Any:
    """``text`` as an int or float where one is declared; the text itself if it is neither."""
    for kind in (int, float):
        if kind in types:
            try:
                return kind(text.strip())
            except ValueError:
                pass
    return text


def _show(value: Any) -> str:
    """A value as errors quote it: text in quotes, numbers and lists plain."""
    if value is None:
        return "null"
    return repr(value) if not isinstance(value, float) else f"{value:g}"


@dataclass(frozen=True)
class OnlyWith:
    """``setting`` (when given, or when its value is one of ``values``) needs ``other`` to be
    one of ``other_values`` (or, when those are empty, set to anything but null).

    An ``other`` without a value yet (null and ``other_values`` given: e.g. kept from an MD
    checkpoint) is not judged here.
    """

    setting: str
    other: str
    other_values: tuple[Any, ...] = ()
    values: tuple[Any, ...] = ()

    def check(self, values: Mapping[str, Any], given: Collection[str]) -> None:
        """:class:`ConfigError` naming ``setting``, its value and the needed ``other``."""
        value = values[self.setting]
        if (value not in self.values) if self.values else (self.setting not in given):
            return
        other = values[self.other]
        if self.other_values and other is None:
            return
        if other in self.other_values if self.other_values else other is not None:
            return
        raise ConfigError(f"{self.setting} = {_show(value)}: allowed only with {self._needed()} "
                          f"(got {self.other} = {_show(other)})")

    def _needed(self, quote: str = "") -> str:
        other = f"{quote}{self.other}{quote}"
        if self.other_values == (True,):
            return other
        if not self.other_values:
            return f"{other} set"
        return f"{other} " + " or ".join(str(v) for v in self.other_values)

    def __str__(self) -> str:
        when = " or ".join(f"`{self.setting}` {v}" for v in self.values) or f"`{self.setting}`"
        return f"{when} only with {self._needed('`')}"


@dataclass(frozen=True)
class Sum:
    """The sum of ``settings`` (numbers, or the items of one list) must lie in ``range``."""

    settings: tuple[str, ...]
    range: Range

    def check(self, values: Mapping[str, Any], given: Collection[str]) -> None:
        """:class:`ConfigError` naming the settings, the sum and the allowed range."""
        total = sum(sum(v) if isinstance(v, list) else v
                    for v in (values[name] for name in self.settings) if v is not None)
        if not self.range.near(total):
            raise ConfigError(f"{self._label()} = {total:g}: allowed {self.range}")

    def _label(self, quote: str = "") -> str:
        names = [f"{quote}{name}{quote}" for name in self.settings]
        return f"sum of {names[0]}" if len(names) == 1 else " + ".join(names)

    def __str__(self) -> str:
        return f"{self._label('`')} {self.range}"


@dataclass(frozen=True)
class Group:
    """The settings of one verb (or of the training config) and the rules between them."""

    title: str
    settings: tuple[Setting, ...]
    rules: tuple[OnlyWith | Sum, ...] = ()

    def __getitem__(self, name: str) -> Setting:
        for setting in self.settings:
            if setting.name == name:
                return setting
        raise KeyError(name)

    def names(self) -> list[str]:
        """Every setting's name, in declaration order."""
        return [s.name for s in self.settings]

    def defaults(self) -> dict[str, Any]:
        """A fresh copy of every default, by name."""
        return {s.name: copy.deepcopy(s.default) for s in self.settings}

    def check(self, given: Mapping[str, Any], keep_unset: Collection[str] = ()) -> dict[str, Any]:
        """Every setting by name: the given values checked, the rest defaults, rules checked.

        Args:
            given: values by name (text or typed); names not declared here are not allowed.
            keep_unset: names left ``None`` when not given instead of taking their default.

        Raises:
            ConfigError: a value or combination that is not allowed (one line naming it).
        """
        values = {}
        for setting in self.settings:
            if setting.name in given:
                values[setting.name] = setting.check(given[setting.name])
            elif setting.required:
                setting.check(None)
            else:
                values[setting.name] = (None if setting.name in keep_unset
                                        else copy.deepcopy(setting.default))
        for rule in self.rules:
            rule.check(values, given)
        return values

    # ---- argparse ----------------------------------------------------------------------

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """One option per setting; its value stays text (``None`` when not given) until
        :meth:`apply` checks it, so that every refusal is one line."""
        for s in self.settings:
            helptext = f"{s.help} [{s.unit}] " if s.unit else f"{s.help} "
            helptext = (helptext + f"(default: {s.shown_default()})").replace("%", "%%")
            if s.is_flag:
                parser.add_argument(*s.flags, s.name, action="store_true", default=None,
                                    help=helptext)
                continue
            metavar = s.metavar or ("{" + ",".join(s.choices) + "}"
                                    if s.types == (str,) and s.choices else None)
            if list in s.types:  # --fractions 0.9 0.1, or one item per option: --set a=1
                parser.add_argument(*s.flags, s.name, default=None, help=helptext,
                                    metavar=metavar, action="append" if s.repeat else "extend",
                                    nargs=None if s.repeat else "+")
            else:
                parser.add_argument(*s.flags, s.name, default=None, help=helptext,
                                    metavar=metavar)

    def apply(self, args: argparse.Namespace, keep_unset: Collection[str] = ()
              ) -> argparse.Namespace:
        """Check the options of parsed ``args`` in place; ``args.given`` names those given.

        Args:
            args: from a parser built with :meth:`add_arguments`.
            keep_unset: setting names left ``None`` when not given (e.g. kept from a checkpoint).
        """
        given = {s.name: getattr(args, s.dest) for s in self.settings
                 if getattr(args, s.dest) is not None}
        for name, value in self.check(given, keep_unset).items():
            setattr(args, self[name].dest, value)
        args.given = frozenset(self[name].dest for name in given)
        return args

    def bind(self, run: Callable[[argparse.Namespace], int],
             keep_unset: Callable[[argparse.Namespace], Collection[str]] = lambda args: ()
             ) -> Callable[[argparse.Namespace], int]:
        """``run`` preceded by :meth:`apply` (the ``func`` a sub-parser sets)."""
        return lambda args: run(self.apply(args, keep_unset(args)))

    # ---- docs --------------------------------------------------------------------------

    def markdown(self) -> str:
        """A Markdown table of the settings, then the rules as a list."""
        lines = [f"### {self.title}", "",
                 "| setting | default | allowed | unit | meaning |", "|---|---|---|---|---|"]
        for s in self.settings:
            name = " / ".join(f"`{n}`" for n in (*s.flags, s.name))
            default = "required" if s.required else f"`{s.shown_default()}`"
            lines.append(f"| {name} | {default} | {s.allowed()} | {s.unit} | {s.help} |")
        if self.rules:
            lines += ["", *(f"- {rule}" for rule in self.rules)]
        return "\n".join(lines).replace("|  |", "| |") + "\n"


def resolve_device(name: str, *, setting: str = "device", local_rank: int = 0) -> torch.device:
    """The torch device of ``name`` (``auto``, ``cpu``, ``cuda`` or ``cuda:N``).

    ``auto`` is ``cuda:local_rank`` when this torch build sees a GPU, else ``cpu``; ``cuda`` is
    ``cuda:local_rank``.

    Raises:
        ConfigError: a name outside that syntax, CUDA on a torch without CUDA or without a
            GPU, or a GPU index that does not exist (one line naming ``setting``).
    """
    import torch

    if not isinstance(name, str) or not re.fullmatch(DEVICE_PATTERN[0], name):
        raise ConfigError(f"{setting} = {_show(name)}: allowed {DEVICE_PATTERN[1]}")
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if available else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        index = local_rank if device.index is None else device.index
        if not available:
            why = ("this torch build has no CUDA" if torch.version.cuda is None
                   else "no GPU is visible")
            raise ConfigError(f"{setting} = {name!r}: allowed auto or cpu ({why})")
        if index >= available:
            raise ConfigError(f"{setting} = {name!r}: allowed auto, cpu, cuda or cuda:0 to "
                              f"cuda:{available - 1} ({available} GPU(s) visible)")
        device = torch.device("cuda", index)
    return device


#: Modules whose ``GROUPS`` are documented in docs/settings.md, in this order.
DOCUMENTED = ("mlip.train.config", "mlip.cli.train", "mlip.cli.eval", "mlip.cli.plot",
              "mlip.cli.relax", "mlip.cli.md", "mlip.cli.lammps", "mlip.cli.data", "mlip.cli.demo",
              "mlip.cli.distill")

_HEADER = """# Settings

Every setting of the `mlip` verbs and of the training config, with its default, what it
accepts and its unit. This page is generated from the declarations in the code
(`python -m mlip.settings docs/settings.md`; a test checks that it is up to date), and the same
declarations give `--help` and the checks: a value outside what is allowed is refused before
anything runs, with one line naming the setting, the value and what is allowed, e.g.

```text
mlip md: error: --steps = -5: allowed an integer >= 0
mlip train: error: optimizer.lr = 'fast': allowed a number > 0
```

Devices: every verb and the config's `device` take `auto` (a GPU when torch sees one, else the
CPU), `cpu`, `cuda` or `cuda:N`; CUDA on a torch build without it is refused the same way.
Training config keys are set in the YAML file or with `mlip train ... --set section.key=value`
(values are YAML); the `model` section's keys besides `name` are the model's own
hyperparameters ([models.md](models.md)).
"""


def render_docs() -> str:
    """The text of docs/settings.md: every documented group as a table."""
    groups = [g for module in DOCUMENTED for g in importlib.import_module(module).GROUPS]
    return _HEADER + "".join(f"\n{group.markdown()}" for group in groups)


def main(argv: list[str]) -> int:
    """``python -m mlip.settings PATH``: write :func:`render_docs` to PATH."""
    if len(argv) != 1:
        print("usage: python -m mlip.settings docs/settings.md", file=sys.stderr)
        return 2
    Path(argv[0]).write_text(render_docs())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

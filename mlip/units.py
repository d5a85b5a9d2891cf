"""Units: mlip uses ASE's unit system everywhere (eV, Å, amu, e, ASE time).

This module re-exports :mod:`ase.units` and adds the few conversion factors mlip needs. It is
the only place unit factors are defined.
"""

from __future__ import annotations

import re

from ase.units import Bohr, GPa, Hartree, bar, fs, kB  # noqa: F401

from mlip.errors import ConfigError

#: 1 ps in ASE time units.
ps = 1000.0 * fs
#: meV in eV.
meV = 1e-3
#: eV/Å³ → GPa.
EV_PER_A3_TO_GPA = 1.0 / GPa
#: Hartree/Bohr → eV/Å.
HARTREE_PER_BOHR = Hartree / Bohr

__all__ = ["GPa", "Hartree", "Bohr", "bar", "fs", "kB", "ps", "meV", "EV_PER_A3_TO_GPA",
           "HARTREE_PER_BOHR", "BYTE_UNITS", "BYTES_PATTERN", "parse_bytes"]

#: Memory size units → bytes (decimal kB, MB, GB, TB; binary KiB, MiB, GiB, TiB); case-blind.
BYTE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
              "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
#: A memory size as text (regular expression, how to say it): a number and an optional unit.
BYTES_PATTERN = (r"\s*[0-9]*\.?[0-9]+(e[0-9]+)?\s*((?i:[kmgt]i?)?(?i:b))?\s*",
                 "a memory size such as 512MB, 2GB or 1.5GiB (bytes without a unit)")


def parse_bytes(size: int | float | str) -> int:
    """A memory size in bytes: a number of bytes, or text such as ``"512MB"``, ``"2GB"``,
    ``"1.5GiB"`` (units of :data:`BYTE_UNITS`, any case; a bare number is bytes).

    Raises:
        ConfigError: not a size > 0 (the message names the value and what is allowed).
    """
    value: float | None = None
    if isinstance(size, (int, float)) and not isinstance(size, bool):
        value = float(size)
    elif isinstance(size, str):
        match = re.fullmatch(BYTES_PATTERN[0], size)
        if match is not None:
            number = re.match(r"\s*[0-9.e]+", size).group().strip()
            unit = size.strip()[len(number):].strip().lower() or "b"
            value = float(number) * BYTE_UNITS[unit]
    if value is None or not (0 < value < float("inf")):
        raise ConfigError(f"memory size {size!r}: allowed {BYTES_PATTERN[1]}, > 0")
    return int(value)

"""Units: mlip uses ASE's unit system everywhere (eV, Å, amu, e, ASE time).

This module re-exports :mod:`ase.units` and adds the few conversion factors mlip needs. It is
the only place unit factors are defined.
"""

from __future__ import annotations

from ase.units import Bohr, GPa, Hartree, bar, fs, kB  # noqa: F401

#: 1 ps in ASE time units.
ps = 1000.0 * fs
#: meV in eV.
meV = 1e-3
#: eV/Å³ → GPa.
EV_PER_A3_TO_GPA = 1.0 / GPa
#: Hartree/Bohr → eV/Å.
HARTREE_PER_BOHR = Hartree / Bohr

__all__ = ["GPa", "Hartree", "Bohr", "bar", "fs", "kB", "ps", "meV", "EV_PER_A3_TO_GPA",
           "HARTREE_PER_BOHR"]

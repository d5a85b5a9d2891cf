"""Counter-based Gaussian noise: a pure function of (system seed, step, stream, element).

Each system of a batch draws from its own stream, so its thermostat noise (and trajectory)
does not depend on which other systems share the batch, and the noise of step k can be
recomputed from the step number alone (bit-exact restart). The generator hashes a 64-bit
counter with the SplitMix64 finaliser (Steele, Lea & Flood, OOPSLA 2014) in wrapping int64
arithmetic and turns two uniforms into a normal with the Box–Muller transform; it runs as a
few vectorised tensor operations on any device, without a ``torch.Generator`` per system.
"""

from __future__ import annotations

import math

import torch

__all__ = ["system_normals", "atom_normals"]

# SplitMix64 constants as signed int64 (wrapping multiplication).
_GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15
_MUL1 = -4658895280553007687  # 0xBF58476D1CE4E5B9
_MUL2 = -7723592293110705685  # 0x94D049BB133111EB
_GOLDEN2 = 4354685564936845354  # 2 × _GOLDEN mod 2⁶⁴: even, so first and second never collide


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 values (torch shifts arithmetically)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _wrap(x: int) -> int:
    """A Python integer reduced to the signed int64 it wraps to (two's complement)."""
    return (x + 2**63) % 2**64 - 2**63


def _mix(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64 finaliser: a bijective avalanche hash of int64 values."""
    x = (x ^ _shift_right(x, 30)) * _MUL1
    x = (x ^ _shift_right(x, 27)) * _MUL2
    return x ^ _shift_right(x, 31)


def _uniform_open(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Hash values → uniforms in (0, 1] (53 bits)."""
    return (_shift_right(x, 11).to(dtype) + 1.0) * (2.0 ** -53)


def system_normals(seeds: torch.Tensor, step: int, stream: int, system: torch.Tensor,
                   element: torch.Tensor, n_components: int, dtype: torch.dtype) -> torch.Tensor:
    """Standard normal draws, element ``e`` of system ``g`` depending only on
    (seeds[g], step, stream, element[e]).

    Args:
        seeds: (n_graphs,) int64 per-system seeds.
        step: integrator step. stream: independent stream number (e.g. 0 thermostat, 1 barostat).
        system: (n,) int64 system of each row. element: (n,) int64 index of each row within
            its system.
        n_components: columns per row.

    Returns:
        (n, n_components) ξ ~ N(0, 1), independent across rows, columns, steps and streams.
    """
    key = _mix(_mix(seeds * _GOLDEN + step) + _wrap(stream * _GOLDEN))  # (n_graphs,)
    column = torch.arange(n_components, device=seeds.device)
    counter = key[system, None] + (element[:, None] * n_components + column) * _GOLDEN2
    first = _mix(counter)  # (n, n_components)
    second = _mix(counter + _GOLDEN)
    radius = torch.sqrt(-2.0 * torch.log(_uniform_open(first, dtype)))
    return radius * torch.cos((2.0 * math.pi) * _uniform_open(second, dtype))


def atom_normals(seeds: torch.Tensor, step: int, stream: int, batch: torch.Tensor,
                 first_atom: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(n_atoms, 3) normals for per-atom noise; atom a of system g is keyed by its index
    within g (``a - first_atom[g]``), so adding or removing other systems leaves it unchanged.

    Args:
        seeds: (n_graphs,) int64. batch: (n_atoms,) int64. first_atom: (n_graphs,) int64
            global index of each system's first atom.
    """
    local = torch.arange(batch.shape[0], device=batch.device) - first_atom[batch]
    return system_normals(seeds, step, stream, batch, local, 3, dtype)

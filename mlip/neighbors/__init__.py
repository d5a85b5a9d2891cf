"""Neighbour lists in the ASE ``ijS`` convention on any torch device.

``D = positions[j] - positions[i] + S @ cell``; every ordered pair with ``|D| < cutoff`` is
listed (a full list); the self pair with ``S = 0`` is excluded and periodic images of an atom
itself are included. Pairs come out sorted by the centre atom ``i``; the order within one ``i``
is deterministic and the same for every backend.

Backends (both O(N) cell lists over the same bin layout, :mod:`mlip.neighbors.grid`):
``"numba"`` (compiled CPU kernel, the default for CPU tensors) and ``"torch"`` (batched pure
torch, the default on other devices). :class:`VerletList` reuses a list built with a skin and
returns each update as a frozen :class:`Neighbors` value.
"""

from mlip.neighbors.search import BACKENDS, neighbor_list
from mlip.neighbors.value import Neighbors
from mlip.neighbors.verlet import VerletList

__all__ = ["neighbor_list", "Neighbors", "VerletList", "BACKENDS"]

"""Attach an mlip potential to a LAMMPS ``fix external … pf/callback`` on every MPI rank.

LAMMPS calls :meth:`MLIPFix.callback` on each rank after its own forces; the callback reads the
rank's local and ghost atoms, evaluates them with :func:`mlip.lammps.halo.evaluate_halo` and
hands back the local forces, the total energy (reduced over the ranks) and the total virial.
Two ghost shells (:data:`GHOST_SHELLS`): "single" (the default: L·r_c + skin; the ghosts' force
contributions are sent to their owners with mpi4py, found by atom id from a table all ranks
rebuild at each neighbour-list build) and "double" (2·L·r_c + skin, no reverse communication).
A run on one rank owns the whole box and needs no halo: its atoms are evaluated as one periodic
system with LAMMPS's box (:func:`mlip.lammps.halo.evaluate_periodic`).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from ase.data import atomic_masses, atomic_numbers, chemical_symbols

from mlip.errors import ConfigError, UnknownElementError
from mlip.lammps.halo import evaluate_halo, evaluate_periodic, lammps_cell
from mlip.models import Potential
from mlip.neighbors import VerletList

__all__ = ["MLIPFix", "attach", "types_to_elements", "DEFAULT_SKIN", "MASS_TOLERANCE",
           "GHOST_SHELLS"]

#: ghost shells: name → receptive radii (L·r_c) in the ghost cutoff
GHOST_SHELLS = {"double": 2, "single": 1}

_DTYPES = {"float64": torch.float64, "float32": torch.float32}
#: LAMMPS's neighbour skin in metal units when the input sets none, Å
DEFAULT_SKIN = 2.0
#: a type's mass names an element when exactly one element's standard mass is this close, amu
MASS_TOLERANCE = 0.1
#: skin of mlip's own neighbour list on one rank (whole box), Å
VERLET_SKIN = 1.0


def types_to_elements(masses: Sequence[float] | None, n_types: int,
                      elements: Sequence[str] | None = None) -> list[int]:
    """Atomic number of each LAMMPS atom type 1..n_types.

    Args:
        masses: per-type masses, amu (index 0 unused, as LAMMPS holds them); None when unset.
        n_types: number of atom types.
        elements: one chemical symbol per type (``--elements``); given, masses are not read.

    Raises:
        ConfigError: a wrong number of symbols, an unknown symbol, or a mass that names no
            element or several (the message asks for ``--elements``).
    """
    if elements is not None:
        if len(elements) != n_types:
            raise ConfigError(f"--elements = {' '.join(elements)}: allowed one element per atom "
                              f"type, {n_types} here")
        bad = [e for e in elements if e not in atomic_numbers or e == "X"]
        if bad:
            raise ConfigError(f"--elements: {', '.join(bad)} is not a chemical symbol")
        return [atomic_numbers[e] for e in elements]
    numbers = []
    for t in range(1, n_types + 1):
        mass = None if masses is None else float(masses[t])
        if mass is None or not mass > 0:
            raise ConfigError(f"atom type {t} has no mass to tell its element; set it (mass) or "
                              "name the elements of the types with --elements")
        near = [z for z in range(1, len(chemical_symbols))
                if abs(atomic_masses[z] - mass) <= MASS_TOLERANCE]
        if len(near) != 1:
            what = ("no element" if not near
                    else "elements " + " and ".join(chemical_symbols[z] for z in near))
            raise ConfigError(f"atom type {t} has mass {mass:g} amu, which matches {what}; name "
                              "the elements of the types with --elements")
        numbers.append(near[0])
    return numbers


@dataclass
class MLIPFix:
    """The state of one rank's coupling (made by :func:`attach`; LAMMPS calls
    :meth:`callback`).

    Attributes:
        lmp: the ``lammps.lammps`` instance. model: the potential (eval mode, its device).
        fix_id: the ``fix external`` id. type_numbers: atomic number of each type (index 0
        unused). comm: the mpi4py communicator of the LAMMPS instance. skin: Å, the largest
        displacement since a neighbour build that the ghost cutoff covers is skin/2.
        ghost_cutoff: Å, the ``comm_modify cutoff`` set (2·L·r_c + skin; single: L·r_c + skin;
        0 on one rank, where LAMMPS's own ghost cutoff is left as it is).
        ghost_shell: "single" or "double" (:data:`GHOST_SHELLS`).
        whole_box: one rank owns the box: evaluate it as one periodic system (no halo).
        stats: per-call work counters (atoms and edges evaluated, local atoms and edges).
    """

    lmp: Any
    model: Potential
    fix_id: str
    type_numbers: torch.Tensor
    comm: Any
    skin: float
    ghost_cutoff: float
    ghost_shell: str = "single"
    whole_box: bool = False
    stats: dict[str, int] = field(default_factory=lambda: dict(
        calls=0, atoms_evaluated=0, edges_evaluated=0, local_atoms=0, local_edges=0))
    _reference: np.ndarray | None = None
    _owner: np.ndarray | None = None  # atom id → owning rank (single shell)
    _local_index: np.ndarray | None = None  # atom id → local index on this rank
    _verlet: VerletList | None = None  # whole box: mlip's neighbour list, reused

    def callback(self, caller: Any, step: int, nlocal: int, tag: np.ndarray, x: np.ndarray,
                 f: np.ndarray) -> None:
        """LAMMPS's ``pf/callback``: fill ``f`` (nlocal, 3) and set energy and virial.

        An error here cannot travel through LAMMPS's C frames: it is printed (with the rank)
        and the whole MPI job is aborted, so that no rank waits forever.
        """
        try:
            self._compute(nlocal, f)
        except BaseException as exc:  # noqa: BLE001 - reported, then the job is ended
            print(f"mlip lammps: error on rank {self.comm.Get_rank()}: {exc}", file=sys.stderr,
                  flush=True)
            self.comm.Abort(1)

    def _compute(self, nlocal: int, f: np.ndarray) -> None:
        if self.whole_box:
            self._compute_whole_box(nlocal, f)
            return
        lmp = self.lmp
        nall = nlocal + lmp.extract_global("nghost")
        positions = self._per_atom("x", nall, np.float64).reshape(nall, 3)
        rebuilt = lmp.extract_setting("neigh_ago") == 0
        self._check_displacement(positions[:nlocal], rebuilt)
        types = torch.from_numpy(self._per_atom("type", nall, np.int64))
        device = self.type_numbers.device
        single = self.ghost_shell == "single"
        result = evaluate_halo(self.model, torch.from_numpy(positions).to(device),
                               self.type_numbers[types.to(device)], nlocal, ghost_forces=single)
        forces = result.forces.cpu().numpy()
        if single:
            ids = self._per_atom("id", nall, np.int64)
            self._add_ghost_forces(forces, ids, nlocal, rebuilt, result)
        f[:] = forces
        self._hand_over(result, nlocal)

    def _compute_whole_box(self, nlocal: int, f: np.ndarray) -> None:
        """One rank: the local atoms are the whole box, one periodic system."""
        lmp = self.lmp
        boxlo, boxhi, xy, yz, xz, periodicity, _ = lmp.extract_box()
        lengths = np.asarray(boxhi, float) - np.asarray(boxlo, float)
        cell = lammps_cell(*lengths, xy=xy, xz=xz, yz=yz)
        device = self.type_numbers.device
        positions = self._per_atom("x", nlocal, np.float64).reshape(nlocal, 3) - boxlo
        types = torch.from_numpy(self._per_atom("type", nlocal, np.int64)).to(device)
        if self._verlet is None:
            self._verlet = VerletList(self.model.cutoff, VERLET_SKIN)
        result = evaluate_periodic(self.model, torch.from_numpy(positions).to(device),
                                   self.type_numbers[types], cell.to(device),
                                   torch.tensor([bool(p) for p in periodicity], device=device),
                                   verlet=self._verlet)
        f[:] = result.forces.cpu().numpy()
        self._hand_over(result, nlocal)

    def _hand_over(self, result: Any, nlocal: int) -> None:
        """Set the total energy and virial (reduced over the ranks) and count the work."""
        lmp = self.lmp
        totals = np.zeros(7)
        totals[0] = result.energy
        w = result.virial.cpu().numpy()
        totals[1:] = (w[0, 0], w[1, 1], w[2, 2], w[0, 1], w[0, 2], w[1, 2])  # LAMMPS order
        if not self.whole_box:
            totals = self.comm.allreduce(totals)
        # fix external takes both as the global value on every rank (not summed over ranks)
        lmp.fix_external_set_energy_global(self.fix_id, float(totals[0]))
        lmp.fix_external_set_virial_global(self.fix_id, [float(v) for v in totals[1:]])
        stats = self.stats
        stats["calls"] += 1
        stats["atoms_evaluated"] += result.atoms_evaluated
        stats["edges_evaluated"] += result.edges_evaluated
        stats["local_atoms"] += nlocal
        stats["local_edges"] += result.local_edges

    def _per_atom(self, name: str, n: int, dtype: type) -> np.ndarray:
        """A copy of the first ``n`` rows of a LAMMPS per-atom array (empty when n is 0)."""
        if n == 0:
            return np.zeros((0, 3) if name == "x" else 0, dtype=dtype)
        dim = 3 if name == "x" else 1
        return np.array(self.lmp.numpy.extract_atom(name, nelem=n, dim=dim), dtype=dtype)

    def _add_ghost_forces(self, forces: np.ndarray, ids: np.ndarray, nlocal: int,
                          rebuilt: bool, result: Any) -> None:
        """Single shell: send each ghost's force to its owner (by atom id) and add the ones
        received to ``forces`` (nlocal, 3). Collective: every rank calls it every step."""
        if rebuilt or self._owner is None:  # the same step on every rank
            every = self.comm.allgather(ids[:nlocal].astype(np.int32))
            top = max((int(t.max()) for t in every if t.size), default=0) + 1
            self._owner = np.full(top, -1, dtype=np.int32)
            for rank, owned in enumerate(every):
                self._owner[owned] = rank
            self._local_index = np.full(top, -1, dtype=np.int32)
            self._local_index[ids[:nlocal]] = np.arange(nlocal)
        ghost_ids = ids[result.ghost_index.cpu().numpy()]
        ghost_forces = result.ghost_forces.cpu().numpy()
        owner = self._owner[ghost_ids]
        outgoing = [(ghost_ids[owner == rank], ghost_forces[owner == rank])
                    for rank in range(self.comm.Get_size())]
        for received_ids, received in self.comm.alltoall(outgoing):
            np.add.at(forces, self._local_index[received_ids], received)

    def _check_displacement(self, local: np.ndarray, rebuilt: bool) -> None:
        """Refuse a step whose local atoms moved more than skin/2 since the last neighbour
        build: the ghosts would no longer hold every atom the shell must hold."""
        if rebuilt or self._reference is None or self._reference.shape != local.shape:
            self._reference = local.copy()
            return
        moved = float(np.sqrt(((local - self._reference) ** 2).sum(axis=1).max(initial=0.0)))
        if moved > 0.5 * self.skin:
            raise ConfigError(
                f"an atom moved {moved:.3f} Å since the last neighbour-list build, more than "
                f"half the skin ({self.skin:g} Å) the ghost cutoff was sized for; use "
                "'neigh_modify every 1 delay 0 check yes' (or tell mlip the skin in effect)")

    def work(self) -> dict[str, float]:
        """Redundant-work factors so far: atoms (edges) the model ran on per local atom (per
        edge of a local centre); 1 would be no redundancy."""
        s = self.stats
        totals = self.comm.allreduce(np.array([s["atoms_evaluated"], s["local_atoms"],
                                               s["edges_evaluated"], s["local_edges"]], float))
        return {"atoms": totals[0] / max(totals[1], 1.0),
                "edges": totals[2] / max(totals[3], 1.0)}


def attach(lmp: Any, model: Potential | str, fix_id: str = "mlip", *,
           device: str | torch.device = "cpu", dtype: torch.dtype | str | None = None,
           elements: Sequence[str] | None = None, skin: float = DEFAULT_SKIN,
           ghost_shell: str = "single") -> MLIPFix:
    """Make ``fix FIX_ID all external pf/callback 1 1`` of ``lmp`` apply an mlip potential.

    Call it once the box, the masses (or ``elements``) and the fix exist, before the first
    ``run`` or ``minimize``. It sets ``fix_modify FIX_ID energy yes virial yes`` (so ``pe``,
    ``press``, ``fix npt`` and ``fix box/relax`` see the potential) and, on several ranks,
    ``comm_modify cutoff`` to L·r_c + ``skin`` (L: the model's receptive layers; 2·L·r_c +
    skin for the double shell): do not lower it afterwards. On one rank the box is evaluated
    as one periodic system and LAMMPS's ghost cutoff is left as it is.

    Args:
        lmp: a ``lammps.lammps`` instance (every rank calls ``attach``).
        model: a potential, or what :func:`mlip.models.loading.resolve_model` accepts.
        fix_id: id of the ``fix external`` in pf/callback mode.
        device: torch device of this rank (``cuda:N``: pick the rank's local GPU).
        dtype: model dtype (default: the model's own).
        elements: chemical symbol of each atom type (default: from the types' masses).
        skin: the LAMMPS neighbour skin in effect, Å (``neighbor SKIN bin``; 2.0 Å is
            LAMMPS's default in metal units).
        ghost_shell: "single" (the ghosts' forces are sent to their owners; id → rank and
            id → local index tables, 8 bytes per atom of the system on every rank) or
            "double" (twice as deep, no reverse communication). Unused on one rank.

    Returns:
        the :class:`MLIPFix` (its :meth:`~MLIPFix.work` reports the redundant work).

    Raises:
        ConfigError: units other than metal, no such fix, a model without a stated
            receptive field, or types whose elements cannot be told.
        UnknownElementError: an element the model does not know.
    """
    from mlip.models.loading import resolve_model

    units = lmp.extract_global("units")
    if units != "metal":
        raise ConfigError(f"the LAMMPS input uses units {units}; mlip needs units metal "
                          "(eV, Å, ps)")
    if not lmp.has_id("fix", fix_id):
        raise ConfigError(f"the LAMMPS input has no fix {fix_id}; add 'fix {fix_id} all "
                          "external pf/callback 1 1' before the first run")
    if not skin >= 0:
        raise ConfigError(f"skin = {skin}: allowed a number >= 0 (Å)")
    if ghost_shell not in GHOST_SHELLS:
        raise ConfigError(f"ghost_shell = {ghost_shell!r}: allowed {', '.join(GHOST_SHELLS)}")
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ConfigError(f"dtype = {dtype!r}: allowed {', '.join(_DTYPES)}")
        dtype = _DTYPES[dtype]
    model = resolve_model(model, device=device, dtype=dtype)
    if model.receptive_layers is None:
        raise ConfigError(f"{type(model).__name__} does not state its receptive field "
                          "(Potential.receptive_layers), so its forces across ranks cannot be "
                          "made exact")
    n_types = lmp.extract_global("ntypes")
    masses = None if elements is not None else lmp.numpy.extract_atom("mass")
    numbers = types_to_elements(masses, n_types, elements)
    unknown = sorted(set(numbers) - set(model.species))
    if unknown:
        names = ", ".join(f"{chemical_symbols[z]} (type {numbers.index(z) + 1})"
                          for z in unknown)
        known = ", ".join(chemical_symbols[z] for z in model.species)
        raise UnknownElementError(f"the model does not know element(s) {names}; it knows "
                                  f"{known}")
    comm = _communicator(lmp)
    whole_box = comm.Get_size() == 1
    ghost = 0.0
    if not whole_box:
        ghost = GHOST_SHELLS[ghost_shell] * model.receptive_layers * model.cutoff + skin
        lmp.command(f"comm_modify cutoff {math.ceil(ghost * 1000) / 1000:.3f}")
    lmp.command(f"fix_modify {fix_id} energy yes virial yes")
    type_numbers = torch.tensor([0, *numbers], dtype=torch.long,
                                device=model.species_index.device)
    fix = MLIPFix(lmp=lmp, model=model, fix_id=fix_id, type_numbers=type_numbers,
                  comm=comm, skin=float(skin), ghost_cutoff=ghost, ghost_shell=ghost_shell,
                  whole_box=whole_box)
    lmp.set_fix_external_callback(fix_id, fix.callback, None)
    return fix


def _communicator(lmp: Any) -> Any:
    """The mpi4py communicator LAMMPS runs on (COMM_WORLD in a serial build)."""
    from mpi4py import MPI

    try:
        return lmp.get_mpi_comm() or MPI.COMM_WORLD
    except Exception:  # noqa: BLE001 - a LAMMPS build without MPI support in its module
        return MPI.COMM_WORLD

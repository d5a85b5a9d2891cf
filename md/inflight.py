"""In-flight batching of relaxations: :func:`relax_stream` relaxes any number of structures
(an iterator is read lazily) in a batch that stays under a memory budget.

A structure leaves the batch as soon as it converges, reaches its step limit or blows up, and
is yielded at once (or, with ``ordered=True``, as soon as every earlier one has been); waiting
structures take its place. Admission follows input order: the next structure enters when the
estimated memory of the batch with it stays under the budget (:class:`MemoryModel`, measured
by probing the model, :mod:`mlip.md.memory`); a structure that alone exceeds the budget still
runs, alone, with a warning (refusing it would drop a structure from a high-throughput run on
the strength of an estimate; if it really does not fit, torch raises its out-of-memory error).

Every system keeps its own optimiser state (FIRE velocities and time step, L-BFGS history, the
cell filter's log F) while it stays: systems move between batches with :mod:`mlip.md.regroup`,
bit for bit, and a newcomer starts fresh. So each structure's result is that of relaxing it
alone, up to the rounding of a batched against a single model evaluation.

Blow-ups are caught by the checks of :mod:`mlip.md.guard` with :data:`RELAX_LIMITS` (non-finite
energy, forces, stress or positions; forces above 1000 eV/Å; two atoms closer than 0.5 Å; the
volume changing by more than 50 %); the energy-jump, displacement and temperature checks of MD
do not apply (an optimiser lowers the energy by design and bounds its own steps). A failing
system goes back to its last good state, leaves the batch with status ``blown_up: <reason>``
and a warning naming its index; it is never reported as relaxed.

Host reads: a step waits for the device once, in the neighbour list. The leave flags of the
systems (one small tensor) are copied to the host without waiting and read after the next
step, which that wait has completed; a system that is to leave is held in place on the device
meanwhile (converged systems do not move; one that failed a check or made its ``steps`` moves
is put back), so reading a step late changes no result, only costs that step. On the CPU the
flags are read at once. Admissions and departures read more, once per event.
"""

from __future__ import annotations

import math
import numbers
import os
import re
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, NamedTuple

import torch
from ase import Atoms
from tqdm.auto import tqdm

from mlip.errors import ConfigError, InvalidStructureError
from mlip.md.force_field import ForceField
from mlip.md.guard import BlowUpLimits, check_step, failure_reason
from mlip.md.memory import MemoryModel, count_edges, measure_memory
from mlip.md.regroup import concat_systems, take_systems
from mlip.md.relax import OPTIMIZERS, make_optimizer
from mlip.md.state import MDState, select_systems, state_from_atoms, state_to_atoms, volume
from mlip.models import Potential
from mlip.models.loading import resolve_model
from mlip.units import parse_bytes

__all__ = ["RELAX_LIMITS", "Admission", "RelaxStream", "check_steps", "optimizer_name"]

#: Blow-up limits of a relaxation: those of MD without the energy-jump, displacement and
#: temperature checks (an optimiser lowers the energy by design and bounds its own steps), and
#: forces up to 1000 eV/Å (a rattled or generated starting structure may exceed MD's 50 eV/Å
#: and still relax: the optimiser's step limit handles it).
RELAX_LIMITS = BlowUpLimits(max_force=1000.0, max_energy_jump=math.inf,
                            max_displacement=math.inf, max_temperature_K=math.inf)

# leave codes of a system after a step (one host read of them per step)
_STAY, _CONVERGED, _MAX_STEPS, _BLOWN_UP = 0, 1, 2, 3


def check_steps(steps: int) -> None:
    """Refuse a number of moves that is not an integer >= 0."""
    if not isinstance(steps, numbers.Integral) or isinstance(steps, bool) or steps < 0:
        raise ConfigError(f"steps = {steps!r} is not allowed: an integer >= 0 (maximum moves)")


def optimizer_name(optimizer: str, relax_cell: bool) -> str:
    """The :data:`OPTIMIZERS` key of an optimiser family (``fire``, ``lbfgs``) with or without
    the cell.

    Raises:
        ConfigError: an unknown family (naming the allowed ones).
    """
    families = sorted(n for n, o in OPTIMIZERS.items() if not o.relax_cell)
    if optimizer not in families:
        raise ConfigError(f"optimizer = {optimizer!r} is not allowed: one of {families} "
                          "(relax_cell=True takes its cell variant)")
    return f"{optimizer}_cell" if relax_cell else optimizer


class Admission(NamedTuple):
    """The batch just after an admission: atoms, edges (0 without a budget), systems, the
    estimated bytes (0.0 without a budget) and the input indices of its structures."""

    atoms: int
    edges: int
    systems: int
    estimate: float
    indices: tuple[int, ...]


@dataclass
class _Batch:
    """The systems being relaxed: optimiser state; per system its input index, edges (host),
    starting volume (Å³) and the first failure of the blow-up checks (code of
    :data:`mlip.md.guard.REASONS`, 0 while healthy, and the offending value; device)."""

    state: MDState
    ids: list[int]
    edges: list[int]
    volume0: torch.Tensor
    fail_code: torch.Tensor
    fail_value: torch.Tensor


class RelaxStream(Iterator[tuple[int, Atoms]]):
    """Iterator of ``(input index, relaxed Atoms)`` built by :func:`relax_stream`.

    Attributes:
        budget: the memory budget in bytes (None: every structure in one batch).
        memory_model: the fitted estimator (None without a budget, or before the first
            structure is read).
        admitted: an :class:`Admission` (the batch just after it) per admission event.
        n_done: structures yielded so far.
        pipelined: read the leave flags a step late, without waiting for the device (on by
            default off the CPU; results do not depend on it).
    """

    def __init__(self, model: Potential | str | os.PathLike, structures: Iterable[Atoms], *,
                 fmax: float = 0.05, relax_cell: bool = False, optimizer: str = "fire",
                 steps: int = 1000, pressure_GPa: float = 0.0, lbfgs_memory: int | None = None,
                 skin: float = 1.0, device: str | torch.device = "cpu",
                 max_memory: int | float | str | None = None, ordered: bool = False,
                 limits: BlowUpLimits = RELAX_LIMITS, progress: bool = False,
                 total: int | None = None) -> None:
        self.optimizer = make_optimizer(optimizer_name(optimizer, relax_cell), fmax=fmax,
                                        pressure_GPa=pressure_GPa, memory=lbfgs_memory)
        check_steps(steps)
        self.budget = None if max_memory is None else parse_bytes(max_memory)
        self.steps, self.skin, self.device = int(steps), skin, torch.device(device)
        self.limits, self.ordered = limits, ordered
        self.relax_cell = relax_cell
        self.model = resolve_model(model, device=device)
        self.memory_model: MemoryModel | None = None
        self.admitted: list[Admission] = []
        self.n_done = 0
        self._held: dict[int, Atoms] = {}  # finished early, held for ordered output
        self.pipelined = self.device.type != "cpu"
        if total is None and hasattr(structures, "__len__"):
            total = len(structures)
        self._bar_settings = dict(total=total, disable=not progress, unit="structure",
                                  dynamic_ncols=True)
        self._source = enumerate(structures)
        self._head: tuple[int, Atoms, int] | None = None
        self._exhausted = False
        self._run = self._relax()

    def __iter__(self) -> RelaxStream:
        return self

    def __next__(self) -> tuple[int, Atoms]:
        try:
            return next(self._run)
        except StopIteration:
            if hasattr(self, "_bar"):
                self._bar.close()
            raise

    # ---------------------------------------------------------------------------- input
    def _peek(self) -> tuple[int, Atoms, int] | None:
        """The next waiting structure (index, atoms, edges), read and checked once."""
        if self._head is None and not self._exhausted:
            item = next(self._source, None)
            if item is None:
                self._exhausted = True
                return None
            index, atoms = item
            self._check_structure(index, atoms)
            if self.budget is not None and self.memory_model is None:
                self.memory_model = measure_memory(self.model, atoms, self.optimizer,
                                                   skin=self.skin, device=self.device)
            edges = 0
            if self.budget is not None:
                try:
                    edges = count_edges(atoms, self.model.cutoff)
                except InvalidStructureError as exc:
                    raise InvalidStructureError(f"structure {index}: {exc}") from None
            self._head = (index, atoms, edges)
        return self._head

    def _check_structure(self, index: int, atoms: Atoms) -> None:
        """Refuse what no relaxation can take, naming the structure's input index."""
        if not isinstance(atoms, Atoms):
            raise InvalidStructureError(f"structure {index} is a {type(atoms).__name__}, "
                                        "not an ase.Atoms")
        if len(atoms) == 0:
            raise InvalidStructureError(f"structure {index} has no atoms")
        if self.relax_cell and not atoms.pbc.all():
            raise ConfigError(f"cell relaxation needs pbc on all axes; system {index} has "
                              f"pbc={[bool(p) for p in atoms.pbc]}")

    def _admit(self, batch: _Batch | None) -> list[tuple[int, Atoms, int]]:
        """Waiting structures that fit next to ``batch`` (at least one when it is empty)."""
        atoms_n = 0 if batch is None else int(batch.state.positions.shape[0])
        edges_n = 0 if batch is None else sum(batch.edges)
        systems_n = 0 if batch is None else batch.state.n_graphs
        chosen: list[tuple[int, Atoms, int]] = []
        while (head := self._peek()) is not None:
            index, atoms, edges = head
            if self.budget is not None:
                estimate = self.memory_model.estimate(atoms_n + len(atoms), edges_n + edges,
                                                      systems_n + 1)
                if estimate > self.budget:
                    if systems_n:
                        break
                    warnings.warn(f"structure {index} ({len(atoms)} atoms, {edges} edges) alone "
                                  f"needs an estimated {estimate / 2**20:.4g} MiB, above the "
                                  f"budget of {self.budget / 2**20:.4g} MiB: it runs alone",
                                  RuntimeWarning, stacklevel=4)
            chosen.append(head)
            self._head = None
            atoms_n, edges_n, systems_n = atoms_n + len(atoms), edges_n + edges, systems_n + 1
            if self.budget is not None and estimate > self.budget:
                break
        if chosen:
            estimate = (0.0 if self.memory_model is None
                        else self.memory_model.estimate(atoms_n, edges_n, systems_n))
            indices = (() if batch is None else tuple(batch.ids)) + tuple(i for i, _, _ in chosen)
            self.admitted.append(Admission(atoms_n, edges_n, systems_n, estimate, indices))
        return chosen

    # ---------------------------------------------------------------------------- loop
    def _relax(self) -> Iterator[tuple[int, Atoms]]:
        self._bar = tqdm(**self._bar_settings)
        bound = self.optimizer
        force_field = ForceField(self.model, skin=self.skin, compute_stress=bound.needs_stress,
                                 max_atoms_per_call="auto")
        temperature_limit = self.limits.temperature_limit(None)
        batch: _Batch | None = None
        pending: tuple[torch.Tensor, Any] | None = None  # leave flags on their way to the host
        while True:
            while newcomers := self._admit(batch):  # fill the room the leavers made
                fresh = self._start(newcomers)
                fresh.state = bound.init(fresh.state, force_field)
                codes, values = check_step(fresh.state, fresh.state, fresh.state.energy,
                                           fresh.state.energy, fresh.volume0, self.limits,
                                           temperature_limit)
                fresh.fail_code, fresh.fail_value = codes, values
                fresh, done = self._leavers(fresh, self._leave_flags(fresh).tolist())
                batch = fresh if batch is None else (
                    batch if fresh is None else _concat(batch, fresh))
                for item in done:
                    yield from self._emit(*item)
            if batch is None:
                break
            self._step(batch, force_field, temperature_limit)
            if pending is not None:  # the flags of the step before, now on the host
                flags, ready = pending
                if ready is not None:
                    ready.synchronize()  # already done: this step's neighbour list read waited
                batch, done = self._leavers(batch, flags.tolist(), prefix=True)
                for item in done:
                    yield from self._emit(*item)
                pending = None
                if batch is None:
                    continue
            leave = self._leave_flags(batch)
            if self.pipelined:
                pending = (leave.to("cpu", non_blocking=True), _event(leave.device))
            else:
                batch, done = self._leavers(batch, leave.tolist())
                for item in done:
                    yield from self._emit(*item)

    def _step(self, batch: _Batch, force_field: ForceField, temperature_limit: float) -> None:
        """One optimiser step of ``batch`` (in place), then the blow-up checks: a system that
        fails (now or before) or has made its ``steps`` moves is put back where it was, so
        that its flags may reach the host a step later without changing its result."""
        prev = batch.state
        moved = self.optimizer.step(prev, force_field)
        codes, values = check_step(prev, moved, prev.energy, moved.energy, batch.volume0,
                                   self.limits, temperature_limit)
        failed_before = batch.fail_code != 0
        batch.fail_code = torch.where(failed_before, batch.fail_code, codes)
        batch.fail_value = torch.where(failed_before, batch.fail_value, values)
        move = (batch.fail_code == 0) & (prev.n_steps < self.steps)
        if not move.is_cpu or not move.numpy().all():  # on the CPU a host value, no sync
            moved = select_systems(move, moved, prev)
        batch.state = moved

    def _leave_flags(self, batch: _Batch) -> torch.Tensor:
        """(n_graphs,) int64 on the device: why each system leaves now (0: it stays)."""
        state = batch.state
        return torch.where(batch.fail_code != 0, _BLOWN_UP, torch.where(
            state.converged, _CONVERGED, torch.where(state.n_steps >= self.steps, _MAX_STEPS,
                                                     _STAY)))

    def _start(self, newcomers: list[tuple[int, Atoms, int]]) -> _Batch:
        """The starting state of the newcomers (momenta zero), on the device."""
        ids = [index for index, _, _ in newcomers]
        try:
            state = state_from_atoms([atoms for _, atoms, _ in newcomers], self.device)
        except (ConfigError, InvalidStructureError) as exc:  # name the input index
            message = re.sub(r"^structure (\d+)", lambda m: f"structure {ids[int(m[1])]}",
                             str(exc))
            raise type(exc)(message) from None
        state = state.replace(momenta=torch.zeros_like(state.momenta))
        zeros = torch.zeros(state.n_graphs, dtype=torch.long, device=self.device)
        return _Batch(state=state, ids=ids, edges=[edges for _, _, edges in newcomers],
                      volume0=volume(state.cell), fail_code=zeros,
                      fail_value=zeros.to(torch.float64))

    def _leavers(self, batch: _Batch, flags: list[int], prefix: bool = False
                 ) -> tuple[_Batch | None, list[tuple[int, Atoms]]]:
        """Split off the systems whose host ``flags`` say they leave (``prefix``: the flags
        cover only the first systems, those of the step before; the others stay); returns
        the batch left (None when empty) and the leavers as (index, Atoms) with their
        ``relax_*`` info."""
        if not prefix and len(flags) != batch.state.n_graphs:
            raise AssertionError("leave flags and batch differ in length")
        gone = [g for g, flag in enumerate(flags) if flag != _STAY]
        if not gone:
            return batch, []
        state = batch.state
        leaving = take_systems(state, gone)
        gone_index = torch.as_tensor(gone, device=state.positions.device)
        final_fmax = self.optimizer.max_force(leaving).tolist()
        n_steps = leaving.n_steps.tolist()
        failure = torch.stack([batch.fail_code.to(torch.float64), batch.fail_value]
                              ).index_select(1, gone_index).T.tolist()
        out = []
        for k, (g, frame) in enumerate(zip(gone, state_to_atoms(leaving))):
            index = batch.ids[g]
            frame.set_momenta(None)
            if flags[g] == _BLOWN_UP:
                reason = self._reason(index, n_steps[k], int(failure[k][0]), failure[k][1])
                converged, status = False, f"blown_up: {reason}"
            else:
                converged = flags[g] == _CONVERGED or final_fmax[k] < self.optimizer.fmax
                status = "converged" if converged else "max_steps"
            frame.info.update(relax_index=index, relax_converged=bool(converged),
                              relax_steps=int(n_steps[k]), relax_status=status,
                              relax_fmax=float(final_fmax[k]))
            out.append((index, frame))
        gone_set = set(gone)
        stay = [g for g in range(state.n_graphs) if g not in gone_set]
        if not stay:
            return None, out
        stay_index = torch.as_tensor(stay, device=state.positions.device)
        left = _Batch(state=take_systems(state, stay), ids=[batch.ids[g] for g in stay],
                      edges=[batch.edges[g] for g in stay],
                      volume0=batch.volume0.index_select(0, stay_index),
                      fail_code=batch.fail_code.index_select(0, stay_index),
                      fail_value=batch.fail_value.index_select(0, stay_index))
        return left, out

    def _reason(self, index: int, step: int, code: int, value: float) -> str:
        """The guard's reason for stopping structure ``index`` (also warned, naming it)."""
        reason = failure_reason(code, value, self.limits, self.limits.temperature_limit(None))
        warnings.warn(f"structure {index} blew up after {step} steps: {reason}; it leaves the "
                      "batch unrelaxed (relax_status blown_up)", RuntimeWarning, stacklevel=5)
        return reason

    def _emit(self, index: int, frame: Atoms) -> Iterator[tuple[int, Atoms]]:
        """Yield a finished structure now, or (ordered) hold it until the earlier ones are
        out (input indices are consecutive, so every held one is eventually yielded)."""
        self._bar.update(1)
        if not self.ordered:
            self.n_done += 1
            yield index, frame
            return
        self._held[index] = frame
        while self.n_done in self._held:
            self.n_done += 1
            yield self.n_done - 1, self._held.pop(self.n_done - 1)


def _concat(first: _Batch, second: _Batch) -> _Batch:
    """The systems of ``first`` then those of ``second``."""
    return _Batch(state=concat_systems(first.state, second.state), ids=first.ids + second.ids,
                  edges=first.edges + second.edges,
                  volume0=torch.cat([first.volume0, second.volume0]),
                  fail_code=torch.cat([first.fail_code, second.fail_code]),
                  fail_value=torch.cat([first.fail_value, second.fail_value]))


def _event(device: torch.device) -> Any:
    """A CUDA event recorded now on ``device`` (None on other devices)."""
    if device.type != "cuda":
        return None
    event = torch.cuda.Event()
    event.record()
    return event

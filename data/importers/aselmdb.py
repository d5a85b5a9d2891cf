"""fairchem's ASE-LMDB (``*.aselmdb``: OC20 / OMat24 test splits), read without fairchem.

The file is a single-file LMDB used as an ASE database backend: row ``id`` (1, 2, ...) is stored
under the ASCII key ``b"<id>"`` as a zlib-compressed JSON dict of the ``ase.db`` row fields
(``numbers``, ``positions``, ``cell``, ``pbc``, ``energy``, ``forces``, ``stress``, ``tags``,
``constraints``, ``key_value_pairs``, ``data``, ...); ``b"nextid"`` holds the next free id and
``b"deleted_ids"`` the ids removed since (both zlib-compressed JSON). Rows are read in id order,
each turned into ``ase.Atoms`` by ASE's own ``AtomsRow`` (labels from its single-point results,
``FixAtoms`` kept), with ``key_value_pairs`` in ``atoms.info`` so ``sid``/``fid`` become the
system and step ids.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Iterator

from ase import Atoms
from ase.db.row import AtomsRow

from mlip.data.importers.ase_formats import default_ids
from mlip.data.importers.lmdb import open_lmdb
from mlip.errors import InvalidStructureError

__all__ = ["read_aselmdb", "count_rows"]


def _decode(value: bytes, where: str):
    try:
        return json.loads(zlib.decompress(value))
    except (zlib.error, ValueError) as exc:
        raise InvalidStructureError(f"{where}: not a zlib-compressed JSON row ({exc})") from None


def _row_ids(txn, path: Path) -> list[int]:
    """Ids of the rows present: 1 .. nextid-1 without the deleted ones."""
    nextid = txn.get(b"nextid")
    nextid = 1 if nextid is None else int(_decode(nextid, f"{path} key 'nextid'"))
    deleted = txn.get(b"deleted_ids")
    deleted = set() if deleted is None else set(_decode(deleted, f"{path} key 'deleted_ids'"))
    return [i for i in range(1, nextid) if i not in deleted]


def count_rows(path: Path) -> int:
    """Rows of an ASE-LMDB."""
    env = open_lmdb(path)
    try:
        with env.begin() as txn:
            return len(_row_ids(txn, path))
    finally:
        env.close()


def read_aselmdb(path: Path, start: int = 0) -> Iterator[tuple[int, Atoms, dict]]:
    """Rows of an ASE-LMDB in id order, from row position ``start`` on.

    Raises:
        InvalidStructureError: a row cannot be decoded or is not an ASE row.
    """
    env = open_lmdb(path)
    try:
        with env.begin() as txn:
            for k, idx in enumerate(_row_ids(txn, path)[start:], start):
                where = f"{path} row {idx}"
                value = txn.get(str(idx).encode("ascii"))
                if value is None:
                    raise InvalidStructureError(f"{where}: missing (neither stored nor deleted)")
                row = _decode(value, where)
                if not isinstance(row, dict) or not {"numbers", "positions"} <= row.keys():
                    raise InvalidStructureError(f"{where}: not an ASE row ({_keys(row)})")
                atoms = _to_atoms(row, idx, where)
                yield k, atoms, default_ids(atoms, path, idx)
    finally:
        env.close()


def _to_atoms(row: dict, idx: int, where: str) -> Atoms:
    try:
        record = AtomsRow({**row, "id": idx})
        atoms = record.toatoms(add_additional_information=False)
    except (KeyError, ValueError, TypeError) as exc:
        raise InvalidStructureError(f"{where}: cannot build the structure ({exc})") from None
    atoms.info.update(record.key_value_pairs)
    return atoms


def _keys(row) -> str:
    return f"keys {sorted(row)[:12]}" if isinstance(row, dict) else type(row).__name__

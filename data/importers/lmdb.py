"""LMDB sources: recognise the file and tell its record layout from the data, not from the name.

Three layouts arrive as LMDB (all need the optional package ``lmdb``):

* ``pubchemqcr`` — PubChemQCR: 9-digit compound-id keys, gzip-compressed pickled dicts of stages.
* ``oc20-lmdb`` — OC20 S2EF/IS2RE (and OC22) LMDBs written by the OC20 preprocessing: ASCII
  integer keys, uncompressed pickles of ``torch_geometric`` ``Data`` records (and a ``length``
  key).
* ``aselmdb`` — fairchem's ASE-LMDB (``*.aselmdb``, the OC20/OMat test splits): an ASE database
  backend whose rows are zlib-compressed JSON dicts under ASCII integer ids, plus the reserved
  keys ``nextid``, ``metadata`` and ``deleted_ids``.

:func:`detect_lmdb_layout` peeks at the first record; any other layout is refused with an error
naming the key and what its value holds.
"""

from __future__ import annotations

import gzip
import json
import pickle
import zlib
from pathlib import Path

from mlip.errors import ConfigError

__all__ = ["LMDB_LAYOUTS", "is_lmdb", "open_lmdb", "detect_lmdb_layout", "RESERVED_KEYS"]

LMDB_LAYOUTS = ("pubchemqcr", "oc20-lmdb", "aselmdb")
#: Keys that hold bookkeeping, not records (ASE-LMDB: nextid/metadata/deleted_ids; OC20: length).
RESERVED_KEYS = (b"nextid", b"metadata", b"deleted_ids", b"length")
#: LMDB's meta-page magic number (little endian), 16 bytes into the data file.
_MAGIC = b"\xde\xc0\xef\xbe"


def _data_file(path: Path) -> Path:
    return path / "data.mdb" if path.is_dir() else path


def is_lmdb(path: Path) -> bool:
    """Whether ``path`` is an LMDB environment (a single-file LMDB or a folder with data.mdb)."""
    data = _data_file(path)
    if not data.is_file():
        return False
    with open(data, "rb") as fh:
        return fh.read(20)[16:20] == _MAGIC


def open_lmdb(path: Path):
    """A read-only ``lmdb.Environment`` of a single-file LMDB or an LMDB folder.

    Raises:
        ConfigError: the optional package ``lmdb`` is not installed.
    """
    try:
        import lmdb
    except ImportError:
        raise ConfigError(
            f"reading the LMDB {path} needs the optional package lmdb "
            "(pip install 'mlip[pubchemqcr]' or pip install lmdb)"
        ) from None
    return lmdb.open(
        str(path), subdir=path.is_dir(), readonly=True, lock=False, readahead=False,
        meminit=False,
    )


def first_record(path: Path) -> tuple[bytes, bytes] | None:
    """The first (key, value) of an LMDB that is not a reserved bookkeeping key; None if empty."""
    env = open_lmdb(path)
    try:
        with env.begin() as txn:
            for key, value in txn.cursor():
                if key not in RESERVED_KEYS:
                    return bytes(key), bytes(value)
    finally:
        env.close()
    return None


def detect_lmdb_layout(path: Path) -> str:
    """The layout (one of :data:`LMDB_LAYOUTS`) of an LMDB, from its first record.

    Raises:
        ConfigError: the LMDB is empty or its records are of no known layout (the message names
            the key and what its value holds).
    """
    record = first_record(path)
    if record is None:
        raise ConfigError(f"LMDB {path} holds no records")
    key, value = record
    layout, found = _classify(value)
    if layout is None:
        raise ConfigError(
            f"LMDB {path}: unknown record layout; record {key[:40]!r} holds {found}. Known "
            "layouts: PubChemQCR (gzip-compressed pickled dict of stages), OC20 (pickled "
            "torch_geometric Data), fairchem ASE-LMDB (zlib-compressed JSON rows)"
        )
    return layout


def _classify(value: bytes) -> tuple[str | None, str]:
    """(layout or None, a description of the value for error messages)."""
    if value[:2] == b"\x1f\x8b":
        try:
            inner = gzip.decompress(value)
        except (OSError, EOFError) as exc:
            return None, f"a damaged gzip stream ({exc})"
        if inner[:1] == b"\x80":
            return "pubchemqcr", "a gzip-compressed pickle"
        return None, f"gzip-compressed data starting {inner[:16]!r}"
    if value[:1] == b"\x80":
        from mlip.data.importers.oc20_lmdb import PyGRecord, safe_loads

        try:
            obj = safe_loads(value)
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
            return None, f"a pickle that cannot be read safely ({exc})"
        if isinstance(obj, PyGRecord):
            return "oc20-lmdb", "a pickled torch_geometric record"
        return None, f"a pickled {_describe(obj)}"
    if value[:1] == b"\x78":
        try:
            row = json.loads(zlib.decompress(value))
        except (zlib.error, ValueError) as exc:
            return None, f"zlib-compressed data that is not JSON ({exc})"
        if isinstance(row, dict) and {"numbers", "positions"} <= row.keys():
            return "aselmdb", "a zlib-compressed ASE row"
        return None, f"zlib-compressed JSON {_describe(row)}"
    return None, f"{len(value)} bytes starting {value[:16]!r}"


def _describe(obj: object) -> str:
    if isinstance(obj, dict):
        return f"dict with keys {sorted(map(str, obj))[:12]}"
    return type(obj).__name__

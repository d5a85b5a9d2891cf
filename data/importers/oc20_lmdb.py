"""OC20 S2EF / IS2RE LMDBs (pickled ``torch_geometric`` ``Data`` records), without torch_geometric.

The OC20 preprocessing writes one pickled ``torch_geometric.data.Data`` per ASCII integer key
(``b"0"``, ``b"1"``, ...) and the record count under ``b"length"``. The pickles are read by
:func:`safe_loads`, a restricted unpickler: every ``torch_geometric`` class (``Data``,
``DataEdgeAttr``, ``DataTensorAttr``, the storages of PyG >= 2, ...) becomes a
:class:`PyGRecord` that only collects attributes, tensors become numpy arrays
(:mod:`mlip.data.importers.torch_pickle`), a few numpy/collections builtins are allowed, and any
other global is refused — so a record can neither run code nor need torch_geometric installed.

Fields (old PyG attributes or the ``_store`` mapping of PyG >= 2; old and new key names):

* ``atomic_numbers``, ``pos`` (Å), ``cell`` (1x3x3 Å) → numbers, positions, cell, pbc all True
  (``pbc`` when the record has one);
* energy ``energy`` or ``y`` (eV), forces ``forces`` or ``force`` (eV/Å), ``stress`` (eV/Å³) when
  present — stored as found: the released OC20 LMDBs hold adsorption (referenced) energies, so
  import them with ``--energy-referencing oc20-adsorption``;
* ``tags`` (0 sub-surface, 1 surface, 2 adsorbate) kept, ``fixed`` (1 = held) → the ``fixed``
  column (an ASE ``FixAtoms`` on export);
* ``sid`` → ``system``, ``fid`` → ``step`` (else system = ``file:key``).

IS2RE records (``pos_relaxed``, ``y_init``, ``y_relaxed``, no forces) give two frames of one
system: step 0 the initial structure with ``y_init``, step 1 the relaxed structure with
``y_relaxed`` (NaN where a test split has no label). Both are DFT single points of the same
relaxation, so neither label is lost and a split by trajectory keeps the pair together.
"""

from __future__ import annotations

import functools
import io
import pickle
from pathlib import Path
from typing import Iterator

import numpy as np

from mlip.data.importers.lmdb import RESERVED_KEYS, open_lmdb
from mlip.data.importers.torch_pickle import load_storage, rebuild_tensor
from mlip.errors import InvalidStructureError

__all__ = ["PyGRecord", "safe_loads", "read_oc20_lmdb", "record_fields", "count_frames"]


class PyGRecord:
    """Stand-in for any ``torch_geometric`` class met in a pickle: it only keeps attributes.

    ``pyg_class`` is the ``module.name`` the pickle asked for.
    """

    pyg_class = "torch_geometric"

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        obj.__dict__["_args"] = args
        return obj

    def __setstate__(self, state) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)


_STANDINS: dict[str, type[PyGRecord]] = {}


def _standin(module: str, name: str) -> type[PyGRecord]:
    qualname = f"{module}.{name}"
    if qualname not in _STANDINS:
        _STANDINS[qualname] = type(name, (PyGRecord,), {"pyg_class": qualname})
    return _STANDINS[qualname]


@functools.lru_cache(maxsize=1)
def _allowed() -> dict[tuple[str, str], object]:
    import collections
    import copyreg

    allowed = {
        ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): rebuild_tensor,
        ("torch.storage", "_load_from_bytes"): load_storage,
        ("torch", "Size"): tuple,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("copyreg", "_reconstructor"): copyreg._reconstructor,
        ("builtins", "object"): object,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "complex"): complex,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = np.ndarray.__new__
        allowed[(f"{core}.multiarray", "scalar")] = _numpy_scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = _frombuffer
    return allowed


def _numpy_scalar(dtype: np.dtype, data: bytes | None = None):
    if dtype.hasobject:
        raise pickle.UnpicklingError("object numpy scalars are refused")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _frombuffer(buf: bytes, dtype: np.dtype, shape: tuple, order: str) -> np.ndarray:
    if dtype.hasobject:
        raise pickle.UnpicklingError("object numpy arrays are refused")
    array = np.frombuffer(buf, dtype=dtype)
    return array.reshape(shape, order=order) if shape else array


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module == "torch_geometric" or module.startswith("torch_geometric."):
            return _standin(module, name)
        allowed = _allowed()
        if (module, name) in allowed:
            return allowed[(module, name)]
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from an OC20 record")


def safe_loads(data: bytes):
    """Unpickle an OC20 record with torch_geometric classes replaced by :class:`PyGRecord`.

    Raises:
        pickle.UnpicklingError: the pickle names a global outside the allowed set.
    """
    return _Unpickler(io.BytesIO(data)).load()


def record_fields(record: PyGRecord) -> dict:
    """The data fields of a ``Data`` stand-in (PyG >= 2 ``_store`` mapping or old attributes)."""
    store = record.__dict__.get("_store", record.__dict__.get("_global_store"))
    if isinstance(store, PyGRecord):
        return dict(store.__dict__.get("_mapping", {}))
    return {
        key: value
        for key, value in record.__dict__.items()
        if not key.startswith("_") and value is not None
    }


def _array(value, dtype) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


def _scalar(value) -> float:
    if value is None:
        return float("nan")
    array = _array(value, np.float64)
    return float(array.reshape(-1)[0]) if array.size == 1 else float("nan")


def _id(value) -> str | int | None:
    if value is None:
        return None
    if hasattr(value, "detach") or isinstance(value, np.ndarray):
        array = _array(value, np.float64).reshape(-1)
        return int(array[0]) if array.size == 1 else None
    return value


def _frames(fields: dict, where: str) -> list[tuple[dict, dict]]:
    """(record, ids) of the frames one OC20 record holds (two for IS2RE)."""
    missing = [k for k in ("atomic_numbers", "pos") if fields.get(k) is None]
    if missing:
        raise InvalidStructureError(
            f"{where}: OC20 record lacks {missing}; it has {sorted(fields)}"
        )
    numbers = np.rint(_array(fields["atomic_numbers"], np.float64)).astype(np.int64)
    cell = fields.get("cell")
    cell = np.zeros((3, 3)) if cell is None else _array(cell, np.float64).reshape(3, 3)
    pbc = fields.get("pbc")
    pbc = np.full(3, cell.any()) if pbc is None else _array(pbc, bool).reshape(3)
    extras = {}
    if fields.get("tags") is not None:
        extras["tags"] = _array(fields["tags"], np.int8).reshape(-1)
    if fields.get("fixed") is not None:
        extras["fixed"] = (_array(fields["fixed"], np.float64).reshape(-1) != 0).astype(np.int8)
    base = {"numbers": numbers, "cell": cell, "pbc": pbc, "atom_extras": extras}
    ids = {}
    sid, fid = _id(fields.get("sid")), _id(fields.get("fid"))
    if sid is not None:
        ids["system"] = str(sid)
    if isinstance(fid, (int, np.integer)):
        ids["step"] = int(fid)
    if fields.get("pos_relaxed") is not None:  # IS2RE: initial and relaxed structure
        return [
            ({**base, "positions": _array(fields["pos"], np.float64),
              "energy": _scalar(fields.get("y_init"))}, {**ids, "step": 0}),
            ({**base, "positions": _array(fields["pos_relaxed"], np.float64),
              "energy": _scalar(fields.get("y_relaxed"))}, {**ids, "step": 1}),
        ]
    energy = next((fields[k] for k in ("energy", "y") if fields.get(k) is not None), None)
    forces = next((fields[k] for k in ("forces", "force") if fields.get(k) is not None), None)
    stress = fields.get("stress")
    record = {
        **base,
        "positions": _array(fields["pos"], np.float64),
        "energy": _scalar(energy),
        "forces": None if forces is None else _array(forces, np.float64),
        "stress": None if stress is None else _array(stress, np.float64).reshape(3, 3),
    }
    return [(record, ids)]


def _keys(txn) -> Iterator[bytes]:
    """Record keys in dataset order: 0..length-1 when a ``length`` key exists, else LMDB order."""
    length = txn.get(b"length")
    if length is not None:
        n = safe_loads(length)
        yield from (str(i).encode() for i in range(int(n)))
        return
    for key in txn.cursor().iternext(keys=True, values=False):
        if key not in RESERVED_KEYS:
            yield bytes(key)


def read_oc20_lmdb(path: Path, start: int = 0) -> Iterator[tuple[int, dict, dict]]:
    """Frames of an OC20 LMDB from flat frame index ``start`` on (records in dataset order).

    Records before ``start`` are skipped unread (every record of a file holds as many frames as
    the first one: one for S2EF, two for IS2RE).

    Raises:
        InvalidStructureError: a record is missing, unreadable, not a torch_geometric record, or
            the file mixes S2EF and IS2RE records.
    """
    env = open_lmdb(path)
    per_record = None
    try:
        with env.begin() as txn:
            for i, key in enumerate(_keys(txn)):
                if per_record is not None and (i + 1) * per_record <= start:
                    continue
                where = f"{path} record {key.decode()}"
                frames = _frames(_fields(txn.get(key), where), where)
                if per_record is None:
                    per_record = len(frames)
                    if (i + 1) * per_record <= start:
                        continue
                if len(frames) != per_record:
                    raise InvalidStructureError(
                        f"{where}: holds {len(frames)} frames where the first record held "
                        f"{per_record}; the file mixes S2EF and IS2RE records"
                    )
                for n, (frame, ids) in enumerate(frames):
                    k = i * per_record + n
                    if k >= start:
                        ids.setdefault("system", f"{path.name}:{key.decode()}")
                        yield k, frame, ids
    finally:
        env.close()


def count_frames(path: Path) -> int | None:
    """Frames of an OC20 LMDB (from its ``length`` key and first record); None without one."""
    env = open_lmdb(path)
    try:
        with env.begin() as txn:
            length = txn.get(b"length")
            if length is None:
                return None
            n = int(safe_loads(length))
            if n == 0:
                return 0
            where = f"{path} record 0"
            return n * len(_frames(_fields(txn.get(b"0"), where), where))
    finally:
        env.close()


def _fields(value: bytes | None, where: str) -> dict:
    """The fields of one pickled record."""
    if value is None:
        raise InvalidStructureError(f"{where}: missing (the length key counts more records)")
    try:
        record = safe_loads(value)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise InvalidStructureError(f"{where}: cannot read ({exc})") from None
    if not isinstance(record, PyGRecord):
        raise InvalidStructureError(
            f"{where}: holds a {type(record).__name__}, not a torch_geometric Data"
        )
    return record_fields(record)

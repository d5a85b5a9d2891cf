"""Tensors inside plain pickles (``pickle.dumps(tensor)``), rebuilt as numpy arrays without code.

A tensor pickles as ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` and
its storage as ``torch.storage._load_from_bytes(blob)``, the blob being a legacy ``torch.save``
stream: pickles of the magic number, the protocol version and the system info, a pickle whose
persistent id ``("storage", torch.<Type>Storage, key, location, numel, None)`` names the storage,
a pickle of the storage keys, then the element count (int64, little endian) and the raw bytes.

:func:`load_storage` parses that stream for the plain numeric storage types (no global other
than ``torch.<Type>Storage`` is accepted) and returns a numpy array; :func:`rebuild_tensor`
turns it into the (copied, bounds-checked) strided array. Anything else — another storage type,
a zip-format blob — falls back to ``torch.load(weights_only=True)``, which runs no code either.
Parsing directly is about 3x faster per record than the weights-only loader.
"""

from __future__ import annotations

import io
import pickle
import struct

import numpy as np

__all__ = ["load_storage", "rebuild_tensor"]

_MAGIC = 0x1950A86A20F9469CFC6C
_PROTOCOL = 1001
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _PlainUnpickler(pickle.Unpickler):
    """Builtin values only (numbers, strings, lists, dicts, tuples)."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"unexpected global {module}.{name} in a torch storage")


class _StorageUnpickler(_PlainUnpickler):
    """The storage pickle: its persistent id names the dtype, key and element count."""

    def __init__(self, file) -> None:
        super().__init__(file)
        self.storages: dict[str, tuple[np.dtype, int]] = {}

    def find_class(self, module: str, name: str):
        if module == "torch" and name in _STORAGE_DTYPES:
            return np.dtype(_STORAGE_DTYPES[name])
        return super().find_class(module, name)

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] in ("storage", b"storage")):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.80}")
        _, dtype, key, _location, numel, view = pid
        if not isinstance(dtype, np.dtype) or view is not None:
            raise pickle.UnpicklingError("storage views are not parsed directly")
        self.storages[key] = (dtype, int(numel))
        return key


def _parse_legacy(blob: bytes) -> np.ndarray:
    stream = io.BytesIO(blob)
    if _PlainUnpickler(stream).load() != _MAGIC or _PlainUnpickler(stream).load() != _PROTOCOL:
        raise ValueError("not a legacy torch.save stream")
    info = _PlainUnpickler(stream).load()
    if not (isinstance(info, dict) and info.get("little_endian", False)):
        raise ValueError("not a little-endian torch.save stream")
    unpickler = _StorageUnpickler(stream)
    key = unpickler.load()
    if _PlainUnpickler(stream).load() != [key] or key not in unpickler.storages:
        raise ValueError("not a single-storage torch.save stream")
    dtype, numel = unpickler.storages[key]
    (count,) = struct.unpack("<q", stream.read(8))
    data = stream.read(count * dtype.itemsize)
    if count != numel or len(data) != numel * dtype.itemsize:
        raise ValueError("truncated storage")
    return np.frombuffer(data, dtype=dtype)


def load_storage(blob: bytes):
    """The storage of ``torch.storage._load_from_bytes(blob)``: a 1-d numpy array when the blob
    is a plain numeric legacy stream, else the ``TypedStorage`` of a weights-only ``torch.load``.
    """
    try:
        return _parse_legacy(blob)
    except (pickle.UnpicklingError, ValueError, EOFError, struct.error, TypeError):
        import torch

        return torch.load(io.BytesIO(blob), weights_only=True, map_location="cpu")


def rebuild_tensor(storage, offset: int, size, stride, *rest):
    """``torch._utils._rebuild_tensor_v2`` (and ``_rebuild_tensor``): a numpy copy of the strided
    view of a numpy storage, or a torch tensor for a storage torch loaded.

    Raises:
        pickle.UnpicklingError: the view reaches outside its storage.
    """
    if not isinstance(storage, np.ndarray):
        import torch._utils

        return torch._utils._rebuild_tensor_v2(storage, offset, size, stride, *rest)
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) != len(stride) or min((*size, *stride, offset), default=0) < 0:
        raise pickle.UnpicklingError(f"bad tensor view: size {size}, stride {stride}")
    if 0 in size:
        return np.empty(size, dtype=storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= len(storage):
        raise pickle.UnpicklingError(
            f"tensor view (offset {offset}, size {size}, stride {stride}) exceeds its storage "
            f"of {len(storage)} elements"
        )
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=size, strides=[s * storage.itemsize for s in stride]
    )
    return np.array(view)

"""The on-disk schema of an ``mlip-store``: column names, dtypes, fill values, units, filters.

A store is a directory holding ``manifest.json`` and immutable HDF5 shards (see
``docs/store.md``). Every shard has the same columns: per-atom arrays concatenated over frames
(``/atoms/*``), per-frame arrays (``/frames/*``) and three small string tables
(``/tables/*``) that per-frame integer columns index into.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlip.errors import ConfigError

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "UNITS",
    "STRESS_CONVENTION",
    "Column",
    "ATOM_COLUMNS",
    "FRAME_COLUMNS",
    "TABLES",
    "LABEL_BITS",
    "SPLIT_CODES",
    "compression_options",
    "COMPRESSIONS",
    "DEFAULT_COMPRESSION",
]

FORMAT = "mlip-store"
FORMAT_VERSION = 1
UNITS = {
    "energy": "eV",
    "length": "Angstrom",
    "forces": "eV/Angstrom",
    "stress": "eV/Angstrom^3",
    "charge": "e",
    "dipole": "e*Angstrom",
    "magmom": "mu_B",
}
STRESS_CONVENTION = "ase: sigma = +(1/V) dE/d(strain), positive = tensile; full 3x3 rows"


@dataclass(frozen=True)
class Column:
    """One dataset of a shard.

    Attributes:
        dtype: numpy dtype on disk.
        shape: trailing shape after the frame/atom axis.
        fill: value that marks "absent" (also the HDF5 fill value).
        optional: created only when some frame of the shard carries it.
    """

    dtype: str
    shape: tuple[int, ...] = ()
    fill: float | int | bool = 0
    optional: bool = False


NAN = float("nan")

#: Per-atom columns, concatenated over the frames of a shard: (n_atoms_total, *shape).
ATOM_COLUMNS: dict[str, Column] = {
    "numbers": Column("uint8"),
    "positions": Column("float64", (3,)),
    "forces": Column("float64", (3,), NAN),
    "charges": Column("float64", (), NAN, optional=True),
    "magmoms": Column("float64", (), NAN, optional=True),
    "tags": Column("int8", (), -1, optional=True),
    "fixed": Column("int8", (), -1, optional=True),
}

#: Per-frame columns: (n_frames, *shape).
FRAME_COLUMNS: dict[str, Column] = {
    "energy": Column("float64", (), NAN),
    "cell": Column("float64", (3, 3)),
    "pbc": Column("bool", (3,), False),
    "stress": Column("float64", (3, 3), NAN),
    "weight": Column("float64", (), 1.0),
    "system": Column("int64", (), -1),
    "step": Column("int64", (), -1),
    "source": Column("int64", (), -1),
    "source_frame": Column("int64", (), -1),
    "lot": Column("int64", (), -1),
    "label_mask": Column("uint8", ()),
    "dipole": Column("float64", (3,), NAN, optional=True),
    "charge": Column("float64", (), NAN, optional=True),
    "spin": Column("float64", (), NAN, optional=True),
    "reference_energy": Column("float64", (), NAN, optional=True),
    "config_type": Column("int64", (), -1, optional=True),
}

#: String tables indexed by the frame columns of the same name (``config_type``: the frame's
#: ``info["config_type"]``, e.g. for ``data.config_type_weights``; "" when it has none).
TABLES = ("system", "source", "lot", "config_type")

#: Bits of ``/frames/label_mask``: which labels a frame carries.
LABEL_BITS = {"energy": 1, "forces": 2, "stress": 4, "charges": 8, "magmoms": 16, "dipole": 32}

#: Codes of the split sidecar ``split.npy`` (uint8 per frame).
SPLIT_CODES = {"none": 0, "train": 1, "val": 2, "test": 3}

COMPRESSIONS = ("zstd", "lz4", "gzip", "lzf", "none")
DEFAULT_COMPRESSION = "zstd"


def compression_options(name: str) -> dict:
    """Keyword arguments of ``h5py.Group.create_dataset`` for a named filter.

    Args:
        name: one of ``COMPRESSIONS``; ``zstd`` and ``lz4`` are Blosc filters from hdf5plugin
            (readers need ``import hdf5plugin``), ``gzip``/``lzf`` ship with every h5py.
    """
    if name in ("zstd", "lz4"):
        import hdf5plugin

        return dict(
            hdf5plugin.Blosc(
                cname=name, clevel=5 if name == "zstd" else 9, shuffle=hdf5plugin.Blosc.SHUFFLE
            )
        )
    if name == "gzip":
        return {"compression": "gzip", "compression_opts": 4, "shuffle": True}
    if name == "lzf":
        return {"compression": "lzf", "shuffle": True}
    if name == "none":
        return {}
    raise ConfigError(f"unknown compression {name!r}; choose one of {', '.join(COMPRESSIONS)}")


def empty_column(column: Column, length: int) -> np.ndarray:
    """An array of ``length`` rows filled with the column's "absent" value."""
    return np.full((length, *column.shape), column.fill, dtype=column.dtype)

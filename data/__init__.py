"""The snapshot store: HDF5 corpora of DFT frames, importers and streaming loaders.

Public API (see ``docs/store.md``): :class:`SnapshotStore` (read), :class:`StoreWriter`
(append), :func:`import_files`, :func:`make_split`, :func:`compute_statistics` and the loader
:func:`make_loader` / :class:`StoreDataset`.
"""

from mlip.data.dataset import StoreDataset, frames_to_batch, make_loader
from mlip.data.edges import edge_counts
from mlip.data.frames import FrameBatch, FrameBuilder
from mlip.data.importers import LabelKeys, import_files
from mlip.data.packing import GraphLoader, pack_graph, unpack_graph
from mlip.data.sampler import BlockBatchSampler
from mlip.data.splits import check_split_leakage, make_split
from mlip.data.stats import (
    DataStatistics,
    ModelStatistics,
    average_neighbors,
    compute_statistics,
    fit_reference_energies,
    force_rms,
    frame_statistics,
)
from mlip.data.store import SnapshotStore
from mlip.data.summary import export_frames, format_info, store_info
from mlip.data.writer import StoreWriter

__all__ = [
    "SnapshotStore",
    "StoreWriter",
    "FrameBatch",
    "FrameBuilder",
    "import_files",
    "LabelKeys",
    "make_split",
    "check_split_leakage",
    "compute_statistics",
    "DataStatistics",
    "ModelStatistics",
    "frame_statistics",
    "fit_reference_energies",
    "average_neighbors",
    "force_rms",
    "StoreDataset",
    "make_loader",
    "edge_counts",
    "frames_to_batch",
    "GraphLoader",
    "pack_graph",
    "unpack_graph",
    "BlockBatchSampler",
    "store_info",
    "format_info",
    "export_frames",
]

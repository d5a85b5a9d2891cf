"""One-buffer transport of an ``AtomicGraph`` between DataLoader workers and the main process.

A DataLoader worker hands each tensor of a batch to the main process through its own
shared-memory segment and file descriptor, which costs more than building the batch once
neighbour lists are fast (about a dozen segments per labelled batch, graph and ``Targets``).
:func:`pack_graph` copies every tensor into one 8-byte-aligned ``uint8`` buffer, so a batch
crosses the process boundary as one segment; :func:`unpack_graph` rebuilds the graph from views
of that buffer (no copy). :class:`GraphLoader` does the unpacking transparently.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.utils.data

from mlip.graph import AtomicGraph
from mlip.structures import Layout
from mlip.targets import LabelledBatch, Targets

__all__ = ["PackedGraph", "pack_graph", "unpack_graph", "GraphLoader"]

_ALIGN = 8  # bytes; every field starts at a multiple of the largest element size
_GRAPH_FIELDS = tuple(
    f.name
    for f in dataclasses.fields(AtomicGraph)
    if f.name not in ("cutoff", "layout")
)
_TARGET_FIELDS = tuple(f.name for f in dataclasses.fields(Targets))
_LAYOUT_TENSORS = ("batch", "n_atoms", "first_atom")
_LAYOUT_FACTS = tuple(f.name for f in dataclasses.fields(Layout) if f.name not in _LAYOUT_TENSORS)


@dataclass(frozen=True)
class PackedGraph:
    """An ``AtomicGraph`` or a ``LabelledBatch`` (graph and targets) flattened into one buffer.

    Attributes:
        buffer: (n_bytes,) uint8, every tensor's bytes at an 8-byte-aligned offset.
        layout: ``(name, dtype, shape, offset)`` per tensor; target fields are named
            ``targets.<field>``, the tensors of the graph's :class:`~mlip.structures.Layout`
            ``layout.<field>``.
        cutoff: Å, the graph's cutoff.
        facts: the host facts of the graph's layout (its non-tensor fields, in field order).
    """

    buffer: torch.Tensor
    layout: tuple[tuple[str, torch.dtype, tuple[int, ...], int], ...]
    cutoff: float
    facts: tuple


def _tensors(item: AtomicGraph | LabelledBatch) -> list[tuple[str, torch.Tensor]]:
    graph = item.graph if isinstance(item, LabelledBatch) else item
    named = [(name, getattr(graph, name)) for name in _GRAPH_FIELDS]
    named += [(f"layout.{name}", getattr(graph.layout, name)) for name in _LAYOUT_TENSORS]
    if isinstance(item, LabelledBatch):
        named += [(f"targets.{name}", getattr(item.targets, name)) for name in _TARGET_FIELDS]
    return named


def pack_graph(item: AtomicGraph | LabelledBatch) -> PackedGraph:
    """Copy a CPU graph's (and its labels') tensors into one buffer (the inverse of
    :func:`unpack_graph`)."""
    named = _tensors(item)
    graph = item.graph if isinstance(item, LabelledBatch) else item
    layout, offset = [], 0
    for name, t in named:
        layout.append((name, t.dtype, tuple(t.shape), offset))
        offset += -(-t.numel() * t.element_size() // _ALIGN) * _ALIGN
    buffer = torch.empty(offset, dtype=torch.uint8)
    for (_, t), (_, dtype, _, start) in zip(named, layout):
        n_bytes = t.numel() * t.element_size()
        buffer[start : start + n_bytes].view(dtype).copy_(t.reshape(-1))
    facts = tuple(getattr(graph.layout, name) for name in _LAYOUT_FACTS)
    return PackedGraph(buffer=buffer, layout=tuple(layout), cutoff=graph.cutoff, facts=facts)


def unpack_graph(packed: PackedGraph) -> AtomicGraph | LabelledBatch:
    """The graph (a ``LabelledBatch`` when packed with targets) held by ``packed``; its tensors
    are views of ``packed.buffer``."""
    fields = {}
    for name, dtype, shape, start in packed.layout:
        n_bytes = torch.Size(shape).numel() * dtype.itemsize
        fields[name] = packed.buffer[start : start + n_bytes].view(dtype).view(shape)
    target_values = {k[8:]: v for k, v in fields.items() if k.startswith("targets.")}
    graph_values = {k: fields[k] for k in _GRAPH_FIELDS}
    layout = Layout(**{k: fields[f"layout.{k}"] for k in _LAYOUT_TENSORS},
                    **dict(zip(_LAYOUT_FACTS, packed.facts)))
    graph = AtomicGraph(**graph_values, layout=layout, cutoff=packed.cutoff)
    return LabelledBatch(graph, Targets(**target_values)) if target_values else graph


class GraphLoader(torch.utils.data.DataLoader):
    """A DataLoader whose items may arrive as :class:`PackedGraph`; it yields ``AtomicGraph`` or
    ``LabelledBatch`` (as packed).

    Use :func:`pack_graph` as the ``collate_fn`` of a worker-backed loader.
    """

    def __iter__(self) -> Iterator[AtomicGraph | LabelledBatch]:
        for item in super().__iter__():
            yield unpack_graph(item) if isinstance(item, PackedGraph) else item

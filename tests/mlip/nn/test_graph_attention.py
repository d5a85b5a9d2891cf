"""Smooth-cutoff softmax and the equivariant graph attention layer."""

from __future__ import annotations

import torch

from mlip.nn.graph_attention import EquivariantGraphAttention, smooth_softmax
from mlip.nn.so2 import m_primary_order
from mlip.nn.wigner import WignerD, edge_rotation
from mlip.testing import random_rotation

RECEIVERS = torch.tensor([0, 0, 0, 1, 1])


def test_plain_softmax_normalises_per_receiver():
    logits = torch.randn(5, 2, dtype=torch.float64) * 30  # large logits: the max shift matters
    weights = smooth_softmax(logits, None, RECEIVERS, 3)
    assert torch.allclose(
        torch.zeros(3, 2, dtype=torch.float64).index_add(0, RECEIVERS, weights)[:2],
        torch.ones(2, 2, dtype=torch.float64),
    )


def test_entering_neighbour_changes_weights_smoothly_only_with_the_envelope():
    """Edge 2 enters node 0's neighbourhood with envelope δ → 0: with the envelope all weights
    move by O(δ); the plain softmax hands the newcomer a finite share at once."""
    logits = torch.tensor([[0.3], [-0.2], [1.5], [0.1], [0.4]], dtype=torch.float64)
    envelope = torch.tensor([0.8, 0.5, 0.0, 1.0, 0.3], dtype=torch.float64)
    before = smooth_softmax(
        logits[[0, 1, 3, 4]], envelope[[0, 1, 3, 4]], RECEIVERS[[0, 1, 3, 4]], 2
    )
    delta = 1e-7
    envelope[2] = delta
    after = smooth_softmax(logits, envelope, RECEIVERS, 2)
    assert float((after[[0, 1, 3, 4]] - before).abs().max()) < 10 * delta
    assert float(after[2]) < 10 * delta**2
    plain_before = smooth_softmax(logits[[0, 1, 3, 4]], None, RECEIVERS[[0, 1, 3, 4]], 2)
    plain_after = smooth_softmax(logits, None, RECEIVERS, 2)
    assert (
        float(plain_after[2]) > 0.3
        and float((plain_after[[0, 1]] - plain_before[[0, 1]]).abs().max()) > 0.1
    )


def test_attention_layer_is_equivariant_and_vanishes_at_zero_envelope():
    torch.manual_seed(0)
    lmax, mmax, channels = 3, 2, 4
    layer = EquivariantGraphAttention(
        channels=channels,
        lmax=lmax,
        mmax=mmax,
        edge_features=6,
        num_heads=2,
        hidden=3,
        alpha_channels=4,
        value_channels=2,
    ).double()
    wigner, rows = WignerD(lmax), torch.tensor(m_primary_order(lmax, mmax))
    edge_index = torch.tensor([[0, 0, 1, 2, 2, 3], [1, 2, 0, 0, 3, 1]])
    vectors = torch.randn(6, 3, dtype=torch.float64)
    vectors[3] = torch.tensor([0.0, -1.3, 0.0])  # an edge along -y
    features = torch.randn(6, 6, dtype=torch.float64)
    envelope = torch.rand(6, dtype=torch.float64)
    x = torch.randn(4, (lmax + 1) ** 2, channels, dtype=torch.float64)

    def run(x: torch.Tensor, vectors: torch.Tensor, envelope: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return layer(x, edge_index, wigner(edge_rotation(vectors), rows), features, envelope)

    rotation = random_rotation(4)
    d = wigner(rotation[None])[0]
    expected = torch.einsum("ij,njc->nic", d, run(x, vectors, envelope))
    rotated = run(torch.einsum("ij,njc->nic", d, x), vectors @ rotation.T, envelope)
    assert torch.allclose(rotated, expected, atol=1e-12 * float(expected.abs().max()))
    silent = run(x, vectors, torch.zeros(6, dtype=torch.float64))
    bias_only = layer.linear_out.bias.detach()
    assert torch.allclose(silent[:, 0], bias_only.expand(4, -1)) and silent[:, 1:].abs().max() == 0

"""Readouts and embeddings: identity initialisation and exact formulas."""

from __future__ import annotations

import torch

from mlip.nn.embedding import SpeciesEmbedding
from mlip.nn.readout import ScalarMLP, SpeciesWiseRescale
from mlip.testing import assert_close_ulps


def test_species_wise_rescale_starts_as_identity_and_follows_softplus():
    rescale = SpeciesWiseRescale(3).double()
    e = torch.randn(5, dtype=torch.float64)
    species = torch.tensor([0, 1, 2, 1, 0])
    assert_close_ulps(rescale(e, species), e, 2)  # |e| ~ 3: 1e-15 is one or two ulps there
    with torch.no_grad():
        rescale.log_scale[1] = 2.0
        rescale.shift[2] = 0.5
    scale = torch.nn.functional.softplus(torch.tensor(2.0, dtype=torch.float64) + rescale.offset)
    expected = torch.where(species == 1, scale * e, e) + torch.where(species == 2, 0.5, 0.0)
    assert_close_ulps(rescale(e, species), expected, 2)


def test_scalar_mlp_layout_and_final_activation():
    plain, activated = ScalarMLP([4, 8, 2]), ScalarMLP([4, 8, 2], final_activation=True)
    assert [type(m).__name__ for m in plain.net] == ["Linear", "SiLU", "Linear"]
    assert [type(m).__name__ for m in activated.net] == ["Linear", "SiLU", "Linear", "SiLU"]


def test_embedding_looks_up_rows():
    emb = SpeciesEmbedding(3, 4)
    assert torch.equal(emb(torch.tensor([2, 0])), emb.weight[[2, 0]])

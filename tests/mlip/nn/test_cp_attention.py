"""TDN's radial MLP and Gaussian basis start at a useful scale and resolution."""

from __future__ import annotations

import torch

from mlip.models.tdn import LearnableGaussianBasis
from mlip.nn.cp_attention import RadialMLP


def test_radial_weights_start_with_unit_rms():
    """The attention value is weighted by the radial weights twice: PyTorch's default init of
    the last layer (RMS ~0.3) started the attention branch ~15x below the feed-forward one."""
    torch.manual_seed(0)
    basis = LearnableGaussianBasis(cutoff=5.0, num_basis=16)
    radial = RadialMLP(16, 64, (16,))
    r = torch.linspace(0.7, 5.0, 4000)
    weights = radial(basis(r), torch.ones_like(r)).detach()
    assert 0.6 < float(weights.pow(2).mean().sqrt()) < 1.6
    assert float(radial.net[-1].bias.abs().max()) == 0.0


def test_gaussian_basis_starts_evenly_spaced_one_spacing_wide():
    """Graphormer's random init left most of the 16 Gaussians wider than half the cutoff."""
    torch.manual_seed(0)
    basis = LearnableGaussianBasis(cutoff=5.0, num_basis=16)
    torch.testing.assert_close(basis.mean.detach(), torch.linspace(0.0, 1.0, 16))
    torch.testing.assert_close(basis.std.detach(), torch.full((16,), 1.0 / 15))
    values = basis(torch.linspace(0.0, 5.0, 101)).detach()  # (101, 16)
    # each distance is resolved by a function centred within half a spacing of it
    assert bool((values.argmax(dim=1).diff() >= 0).all())
    assert int(values.argmax(dim=1).unique().numel()) == 16

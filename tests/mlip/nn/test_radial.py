"""Radial bases: closed forms, the B-spline basis against scipy, and C² vanishing at r_c."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.interpolate import BSpline

from mlip.errors import ConfigError
from mlip.nn.radial import BesselBasis, CubicBSplineBasis, GaussianBasis, SplineRadial


def test_bessel_matches_closed_form_and_is_finite_at_zero():
    basis = BesselBasis(5.0, 8).double()
    r = torch.linspace(0.1, 5.0, 50, dtype=torch.float64)
    n = np.arange(1, 9)
    rr = r.numpy()[:, None]
    expected = math.sqrt(2 / 5.0) * np.sin(n * math.pi * rr / 5.0) / rr
    np.testing.assert_allclose(basis(r).numpy(), expected, rtol=1e-12, atol=1e-12)
    limit = basis(torch.zeros(1, dtype=torch.float64))  # sin(ωr)/r → ω
    np.testing.assert_allclose(limit.numpy()[0], math.sqrt(2 / 5.0) * n * math.pi / 5.0, rtol=1e-12)


def test_gaussian_matches_closed_form():
    basis = GaussianBasis(6.0, 7).double()
    r = torch.linspace(0.0, 6.0, 13, dtype=torch.float64)
    centres = np.linspace(0, 6, 7)
    expected = np.exp(-0.5 * (r.numpy()[:, None] - centres) ** 2 / 1.0**2)
    np.testing.assert_allclose(basis(r).numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("num_basis", [4, 8, 16])
def test_bspline_basis_matches_scipy(num_basis):
    cutoff = 5.0
    h = cutoff / (num_basis - 3)
    r = torch.linspace(0.0, cutoff, 301, dtype=torch.float64)
    ours = CubicBSplineBasis(cutoff, num_basis)(r).numpy()
    for k in range(num_basis):
        knots = (k - 3 + np.arange(5)) * h
        ref = BSpline.basis_element(knots, extrapolate=False)(r.numpy())
        np.testing.assert_allclose(ours[:, k], np.nan_to_num(ref), atol=1e-13, err_msg=f"basis {k}")
    np.testing.assert_allclose(ours.sum(1), 1.0, atol=1e-13)  # partition of unity
    assert (np.count_nonzero(ours > 1e-15, axis=1) <= 4).all()  # local support


def test_spline_radial_vanishes_c2_smoothly_at_the_cutoff():
    radial = SplineRadial(4.0, num_out=3, num_basis=10, envelope_p=6).double()
    r = torch.tensor([4.0 - 1e-9, 4.0, 4.5], dtype=torch.float64, requires_grad=True)
    w = radial(r)
    d1 = torch.autograd.grad(w.sum(), r, create_graph=True)[0]
    d2 = torch.autograd.grad(d1.sum(), r)[0]
    assert w.abs().max() < 1e-12 and d1.abs().max() < 1e-10 and d2.abs().max() < 1e-6


def test_spline_radial_second_derivative_is_continuous_at_knots():
    radial = SplineRadial(5.0, num_out=2, num_basis=8).double()
    knot = 5.0 / 5 * 2  # an interior knot
    r = torch.tensor([knot - 1e-7, knot + 1e-7], dtype=torch.float64, requires_grad=True)
    d1 = torch.autograd.grad(radial(r).sum(), r, create_graph=True)[0]
    d2 = torch.autograd.grad(d1.sum(), r)[0]
    assert abs(float(d2[0] - d2[1])) < 1e-5 * float(d2.abs().max())


def test_bad_sizes_are_refused():
    with pytest.raises(ConfigError, match="num_basis >= 4, got 3"):
        CubicBSplineBasis(5.0, 3)
    with pytest.raises(ConfigError, match="num_basis >= 2, got 1"):
        GaussianBasis(5.0, 1)
    with pytest.raises(ConfigError, match="num_basis >= 1, got 0"):
        BesselBasis(5.0, 0)

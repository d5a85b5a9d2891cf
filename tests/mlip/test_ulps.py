"""assert_close_ulps: differences counted in units in the last place of the expected dtype."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlip.testing import assert_close_ulps


def test_counts_ulps_of_the_dtype_at_each_value():
    x = torch.tensor([1.0, 1000.0, -3.0e-300], dtype=torch.float64)
    two_up = torch.nextafter(torch.nextafter(x, x * 2), x * 4)
    assert_close_ulps(two_up, x, 2)
    with pytest.raises(AssertionError, match=r"\[\(0,\)\].* 2 ulps apart \(allowed 1"):
        assert_close_ulps(two_up, x, 1)
    single = x.float()[:2]
    assert_close_ulps(torch.nextafter(single, single * 2), single, 1)  # float32 spacing
    with pytest.raises(AssertionError, match="1 ulps apart"):
        assert_close_ulps(torch.nextafter(single, single * 2), single, 0)
    assert_close_ulps(np.array([2.0 ** -60]), np.array([0.0]), 1, scale=1.0 / 64)


def test_scale_sets_the_spacing_for_results_that_lost_digits():
    got, expected = np.array([1e-3 + 3e-14]), np.array([1e-3])
    with pytest.raises(AssertionError, match="ulps apart"):
        assert_close_ulps(got, expected, 4)
    assert_close_ulps(got, expected, 4, scale=100.0)


def test_nan_and_inf_must_match():
    nan, inf = float("nan"), float("inf")
    assert_close_ulps(torch.tensor([nan, inf, 1.0]), torch.tensor([nan, inf, 1.0]), 0)
    with pytest.raises(AssertionError, match="NaN in one only"):
        assert_close_ulps(torch.tensor([1.0, 2.0]), torch.tensor([1.0, nan]))
    with pytest.raises(AssertionError, match="inf ulps apart"):
        assert_close_ulps(torch.tensor([-inf]), torch.tensor([inf]))
    with pytest.raises(AssertionError, match="shape"):
        assert_close_ulps(torch.zeros(2), torch.zeros(3))

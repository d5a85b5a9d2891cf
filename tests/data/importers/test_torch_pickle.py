"""Tensors in plain pickles come back as the same numbers, as numpy arrays, without torch.load."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from mlip.data.importers.oc20_lmdb import safe_loads
from mlip.data.importers.torch_pickle import rebuild_tensor


def test_every_plain_dtype_and_view_round_trips():
    base = torch.arange(24, dtype=torch.float64).reshape(4, 6)
    tensors = {
        "float32": torch.rand(5, 3),
        "float64": base,
        "float16": torch.rand(4).half(),
        "int64": torch.arange(-3, 3),
        "int32": torch.arange(5, dtype=torch.int32),
        "int16": torch.arange(5, dtype=torch.int16),
        "int8": torch.arange(-2, 2, dtype=torch.int8),
        "uint8": torch.arange(4, dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(7),
        "empty": torch.zeros(0, 3),
        "transposed": base.t(),
        "offset slice": base[1:3, 2:5],
        "strided": base[:, ::2],
    }
    back = safe_loads(pickle.dumps(tensors, protocol=-1))
    for name, tensor in tensors.items():
        assert isinstance(back[name], np.ndarray), name
        np.testing.assert_array_equal(back[name], tensor.numpy(), err_msg=name)
        assert back[name].dtype == tensor.numpy().dtype, name


def test_other_storage_types_fall_back_to_the_weights_only_loader():
    tensor = torch.rand(3, dtype=torch.bfloat16)
    back = safe_loads(pickle.dumps(tensor, protocol=-1))
    assert isinstance(back, torch.Tensor) and torch.equal(back, tensor)


def test_a_view_outside_its_storage_is_refused():
    storage = np.arange(6.0)
    np.testing.assert_array_equal(rebuild_tensor(storage, 1, (2, 2), (3, 1)), [[1, 2], [4, 5]])
    with pytest.raises(pickle.UnpicklingError, match="exceeds its storage of 6 elements"):
        rebuild_tensor(storage, 2, (2, 2), (3, 1))
    with pytest.raises(pickle.UnpicklingError, match="bad tensor view"):
        rebuild_tensor(storage, 0, (2,), (-1,))

"""MDState.replace: the copy dataclasses.replace makes, without re-running __init__."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from ase.build import molecule

from mlip.md.nvt import NoseHooverState
from mlip.md.state import state_from_atoms


def test_replace_equals_dataclasses_replace_and_keeps_the_subclass():
    base = state_from_atoms([molecule("H2O"), molecule("CH4")])
    state = NoseHooverState(**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)},
                            eta=torch.zeros(2, 3), eta_velocity=torch.ones(2, 3),
                            eta_mass=torch.ones(2, 3))
    momenta = torch.randn_like(state.momenta)
    fast = state.replace(momenta=momenta, eta=state.eta + 1.0, step=7)
    slow = dataclasses.replace(state, momenta=momenta, eta=state.eta + 1.0, step=7)
    assert type(fast) is NoseHooverState
    for f in dataclasses.fields(state):
        assert getattr(fast, f.name) is getattr(slow, f.name) or (
            torch.equal(getattr(fast, f.name), getattr(slow, f.name))), f.name
    assert fast.momenta is momenta and fast.positions is state.positions
    assert state.step == 0 and not torch.equal(state.momenta, momenta)  # original untouched
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.step = 3
    with pytest.raises(TypeError, match=r"NoseHooverState has no field\(s\) \['etta'\]"):
        state.replace(etta=state.eta)

"""Deterministic mode: float32 training and MD repeat bit for bit on 2 CPU threads.

Without the mode, the backward of ``x[index]`` (``index_put_`` with accumulation, atomic adds
on several threads) sums rows in a varying order: float32 losses of two runs of the shipped
facet recipe differ from step 2 or 3, MD positions of 4 molecules within 30 steps. The
end-to-end tests (slow: about a minute each) need 2 threads to see that; the kernel test shows
the race in a fraction of a second, and the spy test fails on any machine if the mode is not
switched on where asked.
"""

from __future__ import annotations

import csv
from importlib import resources

import ase.io
import pytest
import torch
import yaml

from mlip.determinism import deterministic_mode
from mlip.md import make_integrator, run_md
from mlip.models import Potential, build
from mlip.train import shipped_config, train

SHORT_RUN = ["train.max_steps=5", "train.max_time_s=null", "schedule.fit_to_time=false",
             "train.progress=false", "data.max_frames=40", "device=cpu", "dtype=float32"]


@pytest.fixture()
def two_threads():
    """torch on 2 intra-op threads (the setting of the report), restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def flag_seen_by_models():
    """Whether deterministic kernels were on at each potential's forward (a global hook)."""
    seen: list[bool] = []

    def record(module: torch.nn.Module, *_) -> None:
        if isinstance(module, Potential):
            seen.append(torch.are_deterministic_algorithms_enabled())

    handle = torch.nn.modules.module.register_module_forward_hook(record)
    yield seen
    handle.remove()


def _facet_float32() -> torch.nn.Module:
    """The shipped facet recipe's model (random weights), float32."""
    hparams = dict(yaml.safe_load(shipped_config("facet").read_text())["model"])
    name = hparams.pop("name")
    torch.manual_seed(0)
    return build(name, species=[1, 6, 7, 8], cutoff=4.0, **hparams).float().eval()


def _molecules(n: int) -> list:
    path = resources.files("mlip.data.bundled").joinpath("3bpa_train_300K.xyz")
    return ase.io.read(str(path), index=f":{n}")


def test_mode_switches_deterministic_kernels_on_and_restores_them():
    assert not torch.are_deterministic_algorithms_enabled()
    with deterministic_mode(False):
        assert not torch.are_deterministic_algorithms_enabled()
    with deterministic_mode():
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert not torch.are_deterministic_algorithms_enabled()
    assert not torch.backends.cudnn.deterministic


def test_accumulating_index_backward_repeats_in_the_mode(two_threads):
    """The kernel behind the report: rows of ``x[index]``'s gradient summed in a fixed order
    (sequential index order, as one thread sums them)."""
    generator = torch.Generator().manual_seed(0)
    grad = torch.randn(60_000, 16, generator=generator)
    index = torch.randint(0, 50, (60_000,), generator=generator)
    torch.set_num_threads(1)
    serial = torch.zeros(50, 16).index_put_((index,), grad, accumulate=True)
    torch.set_num_threads(2)
    with deterministic_mode():
        for _ in range(5):
            again = torch.zeros(50, 16).index_put_((index,), grad, accumulate=True)
            assert torch.equal(again, serial)


def test_run_md_and_train_switch_the_mode_on_only_when_asked(tmp_path, flag_seen_by_models):
    model, molecules = _facet_float32(), _molecules(2)
    run_md(model, molecules, steps=2, initial_temperature_K=300.0, deterministic=True)
    assert flag_seen_by_models and all(flag_seen_by_models)
    assert not torch.are_deterministic_algorithms_enabled()
    flag_seen_by_models.clear()
    run_md(model, molecules, steps=2, initial_temperature_K=300.0)
    assert flag_seen_by_models and not any(flag_seen_by_models)
    flag_seen_by_models.clear()
    train(shipped_config("facet"), tmp_path / "run",
          [*SHORT_RUN, "train.max_steps=1", "data.max_frames=12", "deterministic=true"])
    assert flag_seen_by_models and all(flag_seen_by_models)
    assert not torch.are_deterministic_algorithms_enabled()


@pytest.mark.slow
def test_float32_md_repeats_bit_for_bit_on_two_threads(two_threads):
    model, molecules = _facet_float32(), _molecules(4)
    integrator = make_integrator("nvt_langevin", timestep_fs=0.5, temperature_K=300.0)
    first, second = (run_md(model, molecules, integrator, steps=30, initial_temperature_K=300.0,
                            seed=1, deterministic=True).state for _ in range(2))
    assert torch.equal(first.positions, second.positions)
    assert torch.equal(first.momenta, second.momenta)


@pytest.mark.slow
def test_float32_training_repeats_bit_for_bit_on_two_threads(tmp_path, two_threads):
    losses = []
    for name in ("first", "second"):
        train(shipped_config("facet"), tmp_path / name, [*SHORT_RUN, "deterministic=true"])
        with open(tmp_path / name / "steps.csv") as handle:
            losses.append([row["loss"] for row in csv.DictReader(handle)])
    assert len(losses[0]) == 5 and losses[0] == losses[1]
    first, second = (torch.load(tmp_path / name / "last.ckpt", weights_only=False)
                     for name in ("first", "second"))
    for key, value in first["model"]["state_dict"].items():
        assert torch.equal(value, second["model"]["state_dict"][key]), key

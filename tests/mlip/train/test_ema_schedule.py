import math

import pytest
import torch

from mlip.train.config import DEFAULTS, OptimizerConfig, ScheduleConfig
from mlip.train.ema import ExponentialMovingAverage
from mlip.train.schedule import LRSchedule, build_optimizer


def test_ema_follows_the_warmup_formula_and_swaps_weights_back():
    model = torch.nn.Linear(2, 1, dtype=torch.float64)
    ema = ExponentialMovingAverage(model, decay=0.99)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    d1 = min(0.99, 2 / 11)
    expected = d1 * start + (1 - d1) * 1.0
    torch.testing.assert_close(ema.shadow[0], expected, rtol=1e-14, atol=1e-15)
    with ema.applied(model):
        assert torch.equal(model.weight.detach(), ema.shadow[0])
    assert torch.equal(model.weight.detach(), torch.ones_like(start))


def _schedule(**overrides):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    return LRSchedule(
        optimizer, ScheduleConfig(**{**DEFAULTS["schedule"], **overrides}), base_lr=0.1,
        total_steps=100
    )


def test_warmup_and_cosine():
    schedule = _schedule(name="cosine", warmup_steps=10, min_lr_ratio=0.0)
    assert schedule.lr_at(0) == pytest.approx(0.01 * (0.5 * (1 + math.cos(0))))
    assert schedule.lr_at(50) == pytest.approx(0.1 * 0.5)
    assert schedule.lr_at(100) == pytest.approx(0.0, abs=1e-15)
    assert schedule.set_step(50) == schedule.optimizer.param_groups[0]["lr"]


def test_plateau_reduces_after_patience_evaluations():
    schedule = _schedule(name="plateau", plateau_patience=2, plateau_factor=0.5)
    for metric in (1.0, 2.0, 2.0):
        schedule.observe(metric)
    assert schedule.lr_at(0) == pytest.approx(0.1)
    schedule.observe(2.0)
    assert schedule.lr_at(0) == pytest.approx(0.05)


def test_weight_decay_only_on_matrices():
    model = torch.nn.Linear(3, 2)
    optimizer = build_optimizer(model, OptimizerConfig(**{**DEFAULTS["optimizer"],
                                                          "weight_decay": 0.1}))
    decays = {
        tuple(p.shape): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]
    }
    assert decays == {(2, 3): 0.1, (2,): 0.0}
    assert optimizer.param_groups[0]["amsgrad"] is True


def test_cosine_fit_follows_a_step_rate_that_changes_but_never_exceeds_the_plan():
    schedule = _schedule(name="cosine")  # planned: 100 steps
    schedule.fit_to_time(step=10, elapsed_s=1.0, budget_s=5.0)
    assert schedule.total_steps == 50
    schedule.fit_to_time(step=20, elapsed_s=3.0, budget_s=5.0)  # the machine slowed down
    assert schedule.total_steps == 33
    schedule.fit_to_time(step=40, elapsed_s=4.0, budget_s=5.0)  # and sped up again
    assert schedule.total_steps == 50
    schedule.fit_to_time(step=90, elapsed_s=4.5, budget_s=5.0)  # 100 would fit: the plan caps
    assert schedule.total_steps == 100


def test_cosine_fitted_to_a_time_budget_is_kept_in_the_state():
    schedule = _schedule(name="cosine", min_lr_ratio=0.0)
    schedule.fit_to_time(step=50, elapsed_s=10.0, budget_s=12.0)  # 60 steps fit
    assert schedule.total_steps == 60 and schedule.fitted
    assert schedule.lr_at(60) == pytest.approx(0.0, abs=1e-15)
    restored = _schedule(name="cosine", min_lr_ratio=0.0)
    restored.load_state_dict(schedule.state_dict())
    assert (restored.total_steps, restored.fitted) == (60, True)
    longer = _schedule(name="cosine")
    longer.fit_to_time(step=50, elapsed_s=10.0, budget_s=1000.0)  # never beyond the plan
    assert longer.total_steps == 100

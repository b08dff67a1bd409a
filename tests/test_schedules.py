"""Schedules: values at known points."""

from __future__ import annotations

import dataclasses

import pytest

from tmkt_cli.config import MethodConfig
from tmkt_cli.methods.schedules import (
    kd_weight,
    mix_ratio_at,
    sliding_replacement_probability,
    warmup_cosine,
)


def test_sliding_replacement_probability_is_kts_cubic_ramp():
    assert sliding_replacement_probability(0, 1000) == 0.0
    assert sliding_replacement_probability(500, 1000) == pytest.approx(0.125)
    assert sliding_replacement_probability(1000, 1000) == 1.0
    assert sliding_replacement_probability(2000, 1000) == 1.0  # capped at 1
    assert sliding_replacement_probability(5, 0) == 1.0


@pytest.mark.parametrize("schedule, progress, expected", [
    ("constant", 0.0, 0.6), ("constant", 0.7, 0.6),
    ("linear", 0.0, 0.2), ("linear", 0.5, 0.4), ("linear", 1.0, 0.6),
    ("cubic", 0.0, 0.2), ("cubic", 0.5, 0.2 + 0.4 * 0.125), ("cubic", 1.0, 0.6),
    ("step", 0.29, 0.2), ("step", 0.3, 0.6), ("step", 1.0, 0.6),
    ("linear", -1.0, 0.2), ("linear", 2.0, 0.6),  # progress is clamped to [0, 1]
])
def test_mix_ratio_schedules(schedule, progress, expected):
    method = dataclasses.replace(MethodConfig(), mix_schedule=schedule, mix_ratio_start=0.2,
                                 mix_ratio=0.6, mix_step_at=0.3)
    assert mix_ratio_at(progress, method) == pytest.approx(expected)


def test_kd_weight_is_one_then_a_steep_switch_then_zero():
    assert kd_weight(0.0, 0.5, 50.0) == 1.0  # exactly: phase I distils at full weight
    assert kd_weight(0.2, 0.5, 50.0) == 1.0
    assert kd_weight(0.5, 0.5, 50.0) == pytest.approx(0.5)
    assert kd_weight(0.55, 0.5, 50.0) == pytest.approx(1 / (1 + 2.718281828459045 ** 2.5))
    assert kd_weight(0.8, 0.5, 50.0) == 0.0  # exactly: phase II can skip the teacher
    assert kd_weight(1.0, 0.5, 50.0) == 0.0
    values = [kd_weight(i / 100, 0.4, 20.0) for i in range(101)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))  # never rises
    assert kd_weight(0.5, 0.5, 1e6) == pytest.approx(0.5)  # no overflow for steep switches
    assert kd_weight(0.6, 0.5, 1e6) == 0.0


def test_warmup_cosine():
    assert warmup_cosine(0, 100, 10, 0.0) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10, 0.0) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 10, 0.0) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10, 0.0) == pytest.approx(0.5)
    assert warmup_cosine(100, 100, 10, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(500, 100, 10, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(0, 100, 0, 0.0) == pytest.approx(1.0)

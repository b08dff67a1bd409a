"""Schedules over training: plain functions of the step or of progress in [0, 1].

``progress`` is the fraction of training done (step / total steps), as the engine gives it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tmkt_cli.config import MethodConfig


def _clamp01(x: float) -> float:
    return min(1.0, max(0.0, float(x)))


def sliding_replacement_probability(iteration: int, total_iterations: int) -> float:
    """KT's sliding replacement (He et al., AAAI 2024): ``P = min(1, (i/I)^3)``, the chance
    that a sample's whole static sequence is replaced by its event sequence at iteration i
    of I. With I <= 0 (nothing to schedule over) every sample is replaced."""
    if total_iterations <= 0:
        return 1.0
    return min(1.0, (max(0, iteration) / total_iterations) ** 3)


def mix_ratio_at(progress: float, method: MethodConfig) -> float:
    """The target mix ratio r_m of TMKT's time-step mixup at this point of training.

    Moves from ``method.mix_ratio_start`` to ``method.mix_ratio`` along
    ``method.mix_schedule``: ``constant`` (always mix_ratio), ``linear``, ``cubic`` (the
    shape of KT's sliding replacement: start + (end - start) progress^3) or ``step`` (start
    before ``method.mix_step_at``, end from there on).
    """
    start, end = float(method.mix_ratio_start), float(method.mix_ratio)
    q = _clamp01(progress)
    schedule = method.mix_schedule
    if schedule == "constant":
        return end
    if schedule == "linear":
        return start + (end - start) * q
    if schedule == "cubic":
        return start + (end - start) * q ** 3
    if schedule == "step":
        return end if q >= method.mix_step_at else start
    raise ValueError(f"unknown mix schedule {schedule!r}")


# Below this distance from 0 or 1 the KD weight is snapped to exactly 0 or 1, so phase I
# distils at full weight and phase II can skip the teacher's forward pass altogether.
KD_WEIGHT_SNAP = 1e-6


def kd_weight(progress: float, switch_at: float, steepness: float) -> float:
    """CKD's phase weight W (Ye, Qian et al., ICME 2025): 1 in phase I, a steep switch at
    ``switch_at``, 0 in phase II:

        W = 1 - sigmoid(steepness (progress - switch_at)),

    then snapped to exactly 1 or 0 within ``KD_WEIGHT_SNAP`` (with the default steepness 50
    and switch at 0.5: W = 1 up to progress 0.22, W = 0 from 0.78 on; W = 0.5 at the switch).
    """
    z = steepness * (_clamp01(progress) - switch_at)
    # 1 - sigmoid(z) = sigmoid(-z), written to avoid overflow of exp for large |z|
    w = 1.0 / (1.0 + math.exp(z)) if z < 0 else math.exp(-z) / (1.0 + math.exp(-z))
    if w > 1.0 - KD_WEIGHT_SNAP:
        return 1.0
    if w < KD_WEIGHT_SNAP:
        return 0.0
    return w


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """Learning-rate factor of optimizer step ``step`` (0-based): linear warm-up to 1 over
    ``warmup_steps`` (the first step already gets 1/warmup_steps), then a cosine from 1 down
    to ``min_ratio`` at ``total_steps``; constant ``min_ratio`` after that."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    q = _clamp01((step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * q))

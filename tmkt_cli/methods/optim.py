"""Optimizer parameter groups and the learning-rate schedules, as pure functions.

KT's code builds its optimizer and schedule with timm (main_transfer.py 555 ``create_optimizer``,
630 ``create_scheduler``). What those compute with KT's arguments is re-derived here, without
depending on timm:

* weight decay: timm's optimizer factory (``filter_bias_and_bn``, on by default) puts every
  1-D parameter and every ``.bias`` in a group without weight decay (BN weights and biases,
  linear biases, KT's per-step coefficients);
* schedule: set once per epoch (``t_in_epochs``), linear warm-up from ``warmup_lr`` over
  ``warmup_epochs`` epochs counted inside the schedule (no warm-up prefix), then either a cosine
  from the base rate at epoch 0 to ``min_lr`` at ``epochs`` (``--sched cosine``, KT's default),
  or the base rate times ``decay_rate`` every ``decay_epochs`` epochs (``--sched step``,
  run_omni.sh). timm adds ``cooldown_epochs`` at ``min_lr`` to the epoch count it returns, but
  KT's loop runs ``range(start_epoch, args.epochs)`` (main_transfer.py 823): no cooldown epoch
  is ever trained, so there is none here.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from torch import nn

from tmkt_cli.methods.schedules import warmup_cosine

if TYPE_CHECKING:
    from tmkt_cli.config import TrainConfig


def param_groups(model: nn.Module, weight_decay: float, exclude_1d: bool) -> list[dict]:
    """AdamW parameter groups of the trainable parameters of ``model``.

    ``exclude_1d``: 1-D parameters and biases get no weight decay (timm's filter, KT's
    setting); otherwise every parameter decays (one group)."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not exclude_1d:
        return [{"params": [p for _, p in params], "weight_decay": weight_decay}]
    no_decay = [p for n, p in params if p.ndim <= 1 or n.endswith(".bias")]
    decay = [p for n, p in params if not (p.ndim <= 1 or n.endswith(".bias"))]
    return [{"params": no_decay, "weight_decay": 0.0},
            {"params": decay, "weight_decay": weight_decay}]


def timm_epoch_lr(epoch: int, base_lr: float, kind: str, epochs: int, warmup_epochs: float,
                  warmup_lr: float, min_lr: float, decay_epochs: float, decay_rate: float
                  ) -> float:
    """The learning rate of epoch ``epoch`` (0-based) under timm's epoch-wise schedulers with
    KT's arguments: ``kind`` ``cosine`` or ``step`` (see the module docstring)."""
    if warmup_epochs > 0 and epoch < warmup_epochs:
        return warmup_lr + epoch * (base_lr - warmup_lr) / warmup_epochs
    if kind == "cosine":
        if epoch >= epochs:
            return min_lr
        return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * epoch / epochs))
    if kind == "step":
        return base_lr * decay_rate ** (epoch // decay_epochs)
    raise ValueError(f"unknown timm schedule {kind!r}")


def lr_factor(cfg: TrainConfig, base_lr: float, step: int, total_steps: int,
              warmup_steps: int, steps_per_epoch: int) -> float:
    """Learning-rate factor (of ``base_lr``) of optimizer step ``step`` under
    ``cfg.schedule``: ``warmup_cosine`` (tmkt's, per step: schedules.warmup_cosine) or timm's
    epoch-wise ``timm_cosine`` / ``timm_step`` (:func:`timm_epoch_lr`)."""
    if cfg.schedule == "warmup_cosine":
        return warmup_cosine(step, total_steps, warmup_steps, cfg.min_lr_ratio)
    epochs = cfg.epochs or math.ceil(total_steps / steps_per_epoch)
    warmup_epochs = warmup_steps / steps_per_epoch
    lr = timm_epoch_lr(step // steps_per_epoch, base_lr, cfg.schedule.removeprefix("timm_"),
                       epochs, warmup_epochs, cfg.warmup_lr, cfg.min_lr, cfg.decay_epochs,
                       cfg.decay_rate)
    return lr / base_lr

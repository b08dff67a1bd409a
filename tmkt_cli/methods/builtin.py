"""The methods tmkt ships, declared in the order of the tables. The maths is in losses.py,
tsm.py and schedules.py; the steps in tmkt_cli/train/tasks.py; docs/methods.md gives the
equations and why each default is what it is. CKD is not a ``method.name``: it is the distill
stage, a two-stream student with the teacher's term (``tmkt distill``)."""

from __future__ import annotations

from tmkt_cli.methods.registry import ALL_OFF, Method, register

TRANSFER_TASK = "tmkt_cli.train.tasks:SNNTransferTask"

EVENT_ONLY = register(Method(
    name="event_only", summary="the SNN on event recordings alone (TET): the baseline",
    inputs=("events",), task=TRANSFER_TASK, switches=dict(ALL_OFF)))

FINETUNE = register(Method(
    name="finetune",
    summary="static sequences for method.finetune_static_epochs of training, then events",
    inputs=("events", "static"), task=TRANSFER_TASK, switches=dict(ALL_OFF)))

KT = register(Method(
    name="kt", summary="KT: sliding replacement, CKA domain alignment, STR weights",
    inputs=("events", "static"), task=TRANSFER_TASK,
    switches=dict(ALL_OFF, sliding_replacement=True, domain_alignment=True, str_weights=True)))

# TMKT leaves the STR weights open; with them the event loss is scaled by
# 1 - sigma(eta_t) ~ 0.27 from the start, which slows the event head (docs/methods.md).
TMKT = register(Method(
    name="tmkt", summary="TMKT: time-step mixup with MAG and MRP, CKA domain alignment",
    inputs=("events", "static"), task=TRANSFER_TASK,
    switches=dict(ALL_OFF, tsm=True, mag=True, mrp=True, domain_alignment=True)))

STATIC_ONLY = register(Method(
    name="static_only",
    summary="the SNN on the static images alone (static head), tested on the static test "
            "images: what the images can teach this network",
    inputs=("image",), task="tmkt_cli.train.tasks:SNNImageTask", switches=dict(ALL_OFF),
    test_head="static"))

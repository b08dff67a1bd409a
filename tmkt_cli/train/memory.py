"""How much memory and disk a setting needs, computed from the numbers alone, before anything is
allocated: pure functions (the available memory is an argument), shared by the checks that
refuse a setting that cannot fit and by ``--dry-run``'s plan.

Frames are float32 ``[T, 2, S, S]`` per recording (two polarities); images uint8 ``[S, S, 3]``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from tmkt_cli.methods.registry import batch_streams

FLOAT32 = 4
POLARITIES = 2


def frames_bytes(time_steps: int, size: int) -> int:
    """One recording's integrated frames, ``[T, 2, S, S]`` float32."""
    return time_steps * POLARITIES * size * size * FLOAT32


def image_bytes(size: int) -> int:
    return size * size * 3


def store_bytes(recordings: int, images: int, time_steps: int, size: int) -> int:
    """An upper bound on ``dataset.h5`` (gzip usually shrinks event frames several times)."""
    return recordings * frames_bytes(time_steps, size) + images * image_bytes(size)


def prepare_bytes(time_steps: int, size: int, flush_every: int, workers: int) -> int:
    """What ``tmkt prepare`` holds in memory at once: the writer's block of ``flush_every``
    recordings plus two in flight per worker (the one being integrated, the one returned)."""
    return frames_bytes(time_steps, size) * (flush_every + 2 * max(1, workers))


def batch_input_bytes(batch_size: int, time_steps: int, size: int, streams: int = 1) -> int:
    """One training batch's input frames (``streams`` = 2 for the two-stream methods, whose
    static sequences are as large as the event ones)."""
    return batch_size * streams * frames_bytes(time_steps, size)


def optimizer_bytes(parameters: int) -> int:
    """Weights, gradients and AdamW's two moments, float32."""
    return 4 * parameters * FLOAT32


def human_bytes(n: float) -> str:
    for factor, unit in ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= factor:
            return f"{n / factor:,.1f} {unit}"
    return f"{int(n)} B"


def available_memory(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """The kernel's estimate of memory available without swapping (bytes), None when unknown."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


# --------------------------------------------------------------------------------------------
# Training memory: activations kept for backward, weights, gradients, optimizer state
# --------------------------------------------------------------------------------------------

ESTIMATE_BATCH = 2
"""Samples in the forward pass that measures what autograd keeps per sample (two, since
BatchNorm over one sample per step is undefined)."""


def saved_for_backward_bytes(forward, exclude=()) -> int:
    """Bytes of the distinct tensors autograd keeps for backward while ``forward()`` runs a
    spiking network (as kept: spikes packed to bytes, see models/neurons.py), plus those of
    the tensors ``forward()`` returns (a list; the step holds them until its loss is
    computed), counted once per storage."""
    from tmkt_cli.models.neurons import observe_saved

    storages: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        storages[s.data_ptr()] = max(storages.get(s.data_ptr(), 0), s.nbytes())

    with observe_saved(pack):
        out = forward()
    for t in out:
        pack(t)
    del out
    for t in exclude:  # held anyway (the input batch, counted apart)
        storages.pop(t.untyped_storage().data_ptr(), None)
    return sum(storages.values())


def snn_activation_bytes(model_cfg, classes: int, size: int, time_steps: int, amp: str) -> int:
    """What one sample's pass through the recipe's spiking network keeps for backward, in
    bytes: a forward at :data:`ESTIMATE_BATCH` samples on the CPU (under bf16 autocast for
    ``amp`` bf16/fp16, whose saved tensors have the same sizes), divided by the batch. Exact
    for the tensors the network itself saves; linear in the batch size."""
    import torch
    from spikingjelly.activation_based import functional

    from tmkt_cli.models import build_snn

    model = build_snn(model_cfg, classes, size, time_steps).train()
    x = torch.zeros(time_steps, ESTIMATE_BATCH, 2, size, size)
    x[:, :, :, ::7, ::5] = 1.0  # some input, so the neurons have work to record
    context = torch.autocast("cpu", dtype=torch.bfloat16) if amp != "off" \
        else contextlib.nullcontext()
    with context:
        n = saved_for_backward_bytes(lambda: [t for t in model(x, head="event")
                                              if isinstance(t, torch.Tensor)], exclude=[x])
    functional.reset_net(model)
    return n // ESTIMATE_BATCH


@dataclass
class TrainingMemory:
    """A training step's memory, by part, in bytes (one process)."""

    activations_per_stream: int
    """Per stream at the run's batch size: what autograd keeps for backward."""
    streams: int
    parameters: int
    """Number of trainable parameters."""
    inputs: int
    """The batch's input frames (all streams)."""

    @property
    def weights_and_optimizer(self) -> int:
        return optimizer_bytes(self.parameters)

    @property
    def total(self) -> int:
        return self.streams * self.activations_per_stream + self.weights_and_optimizer \
            + self.inputs


def training_memory(recipe, stage: str, classes: int = 10) -> dict[str, TrainingMemory]:
    """The recipe's training step in fp32 and bf16 (``{"fp32": ..., "bf16": ...}``) for
    train-tmkt and distill (the spiking student; a CKD teacher adds its weights and no
    activations, as it runs without gradients)."""
    from tmkt_cli.models import build_snn

    p, train = recipe.prepare, recipe.train
    streams = batch_streams(stage, recipe.method.name)
    params = sum(q.numel() for q in build_snn(recipe.model, classes, p.size,
                                              p.time_steps).parameters() if q.requires_grad)
    out = {}
    for name, amp in (("fp32", "off"), ("bf16", "bf16")):
        per_sample = snn_activation_bytes(recipe.model, classes, p.size, p.time_steps, amp)
        out[name] = TrainingMemory(per_sample * train.batch_size, streams, params,
                                   batch_input_bytes(train.batch_size, p.time_steps, p.size,
                                                     streams))
    return out


def describe_training_memory(estimates: dict[str, TrainingMemory], batch_size: int) -> str:
    """The ``--dry-run`` lines."""
    lines = [f"memory:  training step at batch {batch_size} (estimate: tensors autograd keeps, "
             f"measured per sample; tmkt_cli/train/memory.py)"]
    for name, m in estimates.items():
        lines.append(
            f"  {name}: {human_bytes(m.total)} = activations {human_bytes(m.activations_per_stream)}"
            f" x {m.streams} stream(s) + weights, gradients and AdamW state "
            f"{human_bytes(m.weights_and_optimizer)} ({m.parameters:,} parameters) + inputs "
            f"{human_bytes(m.inputs)}")
    return "\n".join(lines)

"""The training-memory estimate (tmkt_cli/train/memory.py) against a measurement on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tmkt_cli.config import ModelConfig
from tmkt_cli.train import memory

# A fresh process builds a network, then measures how much its resident memory grows while a
# forward pass at batch 32 holds its graph (what autograd keeps for backward, plus the output).
# With malloc's mmap threshold fixed at 64 KiB, large tensors are mmap'd, so freed
# temporaries leave RSS again (glibc otherwise raises the threshold as it goes, and freed
# blocks stay resident: the growth then reads 0.7-1.3x the tensors alive).
MEASURE = textwrap.dedent("""
    import gc, os, sys, torch
    torch.set_num_threads(1)
    from tmkt_cli.config import ModelConfig
    from tmkt_cli.models import build_snn
    B, T, S = 32, 8, 32
    model = build_snn(ModelConfig(backbone="digitsnet"), 10, S, T).train()
    x = torch.zeros(T, B, 2, S, S); x[:, :, :, ::7, ::5] = 1.0
    model(x[:, :2], head="event"); from spikingjelly.activation_based import functional
    functional.reset_net(model); gc.collect()
    def rss():
        return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    before = rss()
    out = model(x, head="event").logits
    print(rss() - before)
""")


def test_activation_estimate_matches_the_measured_growth_within_20_percent():
    per_sample = memory.snn_activation_bytes(ModelConfig(backbone="digitsnet"), 10, 32, 8, "off")
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    measured = int(subprocess.run([sys.executable, "-c", MEASURE], capture_output=True,
                                  text=True, check=True, env=env).stdout.split()[-1])
    estimate = 32 * per_sample
    assert 0.8 * measured <= estimate <= 1.2 * measured, (estimate, measured)


def test_bf16_keeps_less_and_totals_add_up():
    fp32 = memory.snn_activation_bytes(ModelConfig(backbone="digitsnet"), 10, 32, 8, "off")
    bf16 = memory.snn_activation_bytes(ModelConfig(backbone="digitsnet"), 10, 32, 8, "bf16")
    assert 0 < bf16 < fp32
    m = memory.TrainingMemory(activations_per_stream=100, streams=2, parameters=10, inputs=7)
    assert m.total == 200 + 4 * 10 * 4 + 7


def test_spikes_kept_as_bytes_give_the_same_gradients_and_save_memory(monkeypatch):
    import torch
    from spikingjelly.activation_based import functional

    from tmkt_cli.models import build_snn, neurons

    def grads_and_saved():
        torch.manual_seed(0)
        model = build_snn(ModelConfig(backbone="digitsnet"), 10, 32, 8).train()
        x = (torch.rand(8, 4, 2, 32, 32) < 0.2).float()
        saved = memory.saved_for_backward_bytes(lambda: [model(x, head="event").logits])
        out = model(x, head="event")
        (out.logits.square().mean() + out.features.mean()).backward()
        functional.reset_net(model)
        return [p.grad.clone() for p in model.parameters() if p.grad is not None], saved

    packed, packed_bytes = grads_and_saved()
    monkeypatch.setattr(neurons, "_register_spikes", lambda spikes: None)  # nothing packed
    plain, plain_bytes = grads_and_saved()
    assert all(torch.equal(a, b) for a, b in zip(packed, plain, strict=True))
    assert packed_bytes < 0.85 * plain_bytes

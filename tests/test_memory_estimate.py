"""The training-memory estimate (tmkt_cli/memory.py) against a measurement on the CPU."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tmkt_cli import memory
from tmkt_cli.config import ModelConfig

# A fresh process builds a network, then measures how much its resident memory grows while a
# forward pass at batch 32 holds its graph (what autograd keeps for backward, plus the output).
# Large tensors are mmap'd by malloc, so freed temporaries leave RSS again.
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


def test_activation_estimate_matches_the_measured_growth_within_25_percent():
    per_sample = memory.snn_activation_bytes(ModelConfig(backbone="digitsnet"), 10, 32, 8, "off")
    measured = int(subprocess.run([sys.executable, "-c", MEASURE], capture_output=True,
                                  text=True, check=True).stdout.split()[-1])
    estimate = 32 * per_sample
    assert 0.75 * measured <= estimate <= 1.25 * measured, (estimate, measured)


def test_bf16_keeps_less_and_totals_add_up():
    fp32 = memory.snn_activation_bytes(ModelConfig(backbone="digitsnet"), 10, 32, 8, "off")
    bf16 = memory.snn_activation_bytes(ModelConfig(backbone="digitsnet"), 10, 32, 8, "bf16")
    assert 0 < bf16 < fp32
    m = memory.TrainingMemory(activations_per_stream=100, streams=2, parameters=10, inputs=7)
    assert m.total == 200 + 4 * 10 * 4 + 7

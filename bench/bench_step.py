"""Cost of a training step: SNN against the same network as an ANN, spikingjelly's LIFNode
against tmkt's fused neuron, and the methods' real steps (tmkt and kt against event_only).

    .venv/bin/python bench/bench_step.py            # about two minutes, one thread
    .venv/bin/python bench/bench_step.py --cases digitsnet --seconds 5

The machine is shared and noisy, so every variant of a case runs once per round, in turn
(interleaved), for a minimum number of rounds and of seconds, and the table reports the
fastest time of each variant, the median over rounds of the per-round ratio and the ratio of
the fastest times. The thread count is fixed (``--threads``, default 1): torch's default of
one thread per core fights other processes on a busy machine, and a ratio measured at one
count says nothing about another.

The neuron rows time forward + loss + backward of a bare classifier (the optimizer step is the
same for every variant and would only dilute the ratios). The method rows run the task code
the engine runs (``tmkt_cli.train.tasks.SNNTransferTask.training_step`` with the recipe's method
switches, at mid-training so sliding replacement and mixup are both active) plus backward.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional, neuron
from torch import nn

from tmkt_cli.config import MethodConfig, ModelConfig, resolve_method
from tmkt_cli.models.neurons import make_surrogate
from tmkt_cli.models.snn import build_snn, build_trunk, lif_factory, relu_factory
from tmkt_cli.train.engine import StepContext
from tmkt_cli.train.tasks import SNNTransferTask

# name: (backbone, T, B, size, classes)
CASES = {
    "digitsnet": ("digitsnet", 8, 32, 32, 10),
    "vggsnn": ("vggsnn", 10, 4, 48, 101),
}
METHODS = ("event_only", "kt", "tmkt")


def spikingjelly_factory(cfg: ModelConfig):
    """spikingjelly's own LIFNode, as a plain spikingjelly network would use it."""
    def make(record_charge: bool = False) -> nn.Module:
        return neuron.LIFNode(tau=float(cfg.tau), v_threshold=float(cfg.threshold), v_reset=0.0,
                              surrogate_function=make_surrogate(cfg.surrogate,
                                                                cfg.surrogate_alpha),
                              detach_reset=cfg.detach_reset, step_mode="m")
    return make


def classifier_step(trunk: nn.Module, head: nn.Module, x: torch.Tensor, y: torch.Tensor
                    ) -> Callable[[], None]:
    """forward + CE on time-averaged logits + backward, then reset the neurons."""
    def step() -> None:
        trunk.zero_grad(set_to_none=True)
        head.zero_grad(set_to_none=True)
        logits = head(trunk(x)).mean(0)
        F.cross_entropy(logits, y).backward()
        functional.reset_net(trunk)
    return step


def method_step(method: str, cfg: ModelConfig, classes: int, size: int, batch: dict,
                optimizer: bool = False) -> Callable[[], None]:
    """One training step of ``method`` as the engine runs it (task code + backward)."""
    T = batch["events"].shape[1]
    torch.manual_seed(0)
    model = build_snn(cfg, classes, size, T)
    task = SNNTransferTask(model, resolve_method(MethodConfig(name=method)), cfg.threshold)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3) if optimizer else None
    ctx = StepContext(50, 100, 0, torch.device("cpu"), 0)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        task.training_step(batch, ctx)["loss"].backward()
        if opt is not None:
            opt.step()
    return step


def synthetic_batch(T: int, B: int, size: int, classes: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {"events": (torch.rand(B, T, 2, size, size) < 0.1).float() * 2,  # sparse counts
            "static": torch.rand(B, 2, size, size),
            "label": torch.randint(0, classes, (B,))}


def interleaved(variants: dict[str, Callable[[], None]], rounds: int, seconds: float,
                warmup: int = 2) -> dict[str, list[float]]:
    """Run every variant once per round, in turn, for at least ``rounds`` rounds and
    ``seconds`` seconds (cheap cases get many rounds, which is what tames the noise)."""
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    start = time.perf_counter()
    while len(times[next(iter(times))]) < rounds or time.perf_counter() - start < seconds:
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def ratio(times: dict[str, list[float]], a: str, b: str) -> str:
    """Median over rounds of time(a) / time(b) measured side by side, and the ratio of the
    fastest times: two estimates that agree when the noise allows a conclusion."""
    median = statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))
    return f"{median:.2f}x (fastest {min(times[a]) / min(times[b]):.2f}x)"


def run_case(name: str, rounds: int, seconds: float
             ) -> list[tuple[str, str, float, float | None, str]]:
    backbone, T, B, size, classes = CASES[name]
    cfg = ModelConfig(backbone=backbone)
    batch = synthetic_batch(T, B, size, classes)
    events, y = batch["events"].transpose(0, 1).contiguous(), batch["label"]

    variants: dict[str, Callable[[], None]] = {}
    for kind, factory in (("ann", relu_factory), ("spikingjelly", spikingjelly_factory(cfg)),
                          ("fused", lif_factory(cfg))):
        torch.manual_seed(0)
        trunk = build_trunk(backbone, factory, size)
        head = nn.Linear(trunk.out_features, classes)
        if kind == "ann":  # the ANN reads the T*B frames as one batch of images
            x, target = events.reshape(1, T * B, 2, size, size), y.repeat(T)
        else:
            x, target = events, y
        variants[kind] = classifier_step(trunk, head, x, target)
    for method in METHODS:
        variants[method] = method_step(method, cfg, classes, size, batch)

    times = interleaved(variants, rounds, seconds)
    best = {k: min(v) * 1000 for k, v in times.items()}
    shape = f"T={T} B={B} {size}x{size}, {len(times['ann'])} rounds"
    return [
        (name, f"SNN (fused LIF) / ANN on T*B, {shape}", best["fused"], best["ann"],
         ratio(times, "fused", "ann")),
        (name, "SNN (spikingjelly LIFNode) / ANN", best["spikingjelly"], best["ann"],
         ratio(times, "spikingjelly", "ann")),
        (name, "spikingjelly LIFNode / fused LIF", best["spikingjelly"], best["fused"],
         ratio(times, "spikingjelly", "fused")),
        (name, "kt step / event_only step (2 streams)", best["kt"], best["event_only"],
         ratio(times, "kt", "event_only")),
        (name, "tmkt step / event_only step (2 streams)", best["tmkt"], best["event_only"],
         ratio(times, "tmkt", "event_only")),
        (name, "tmkt step / kt step", best["tmkt"], best["kt"], ratio(times, "tmkt", "kt")),
    ]


def run_digits_training_steps(rounds: int, seconds: float
                              ) -> list[tuple[str, str, float, float | None, str]]:
    """Absolute time of whole digits training steps (with AdamW) at the recipe's T=8, B=64."""
    T, B, size, classes = 8, 64, 32, 10
    batch = synthetic_batch(T, B, size, classes)
    cfg = ModelConfig(backbone="digitsnet")
    times = interleaved({m: method_step(m, cfg, classes, size, batch, optimizer=True)
                         for m in METHODS}, rounds, seconds)
    return [("digitsnet", f"whole {m} step with AdamW, T={T} B={B}", min(times[m]) * 1000,
             None, "") for m in METHODS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3,
                        help="at least this many interleaved rounds per case")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="and at least this long per case")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (fixed)")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    load_before = os.getloadavg()[0]
    rows = []
    for name in args.cases:
        rows += run_case(name, args.rounds, args.seconds)
    if "digitsnet" in args.cases:
        rows += run_digits_training_steps(args.rounds, args.seconds)
    load_after = os.getloadavg()[0]

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}, "
          f"load average {load_before:.2f} -> {load_after:.2f}")
    print("forward + loss + backward unless said otherwise; a ms, b ms: fastest time of each; "
          "a / b: median over rounds of the side-by-side ratio (and ratio of the fastest)")
    width = max(len(r[1]) for r in rows)
    print(f"{'case':<10}  {'comparison':<{width}}  {'a ms':>8}  {'b ms':>8}  a / b")
    for case, what, a, b, r in rows:
        b_text = f"{b:8.1f}" if b is not None else " " * 8
        print(f"{case:<10}  {what:<{width}}  {a:8.1f}  {b_text}  {r}")


if __name__ == "__main__":
    main()

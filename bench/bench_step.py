"""Cost of a training step: SNN against the same network as an ANN, spikingjelly's LIFNode
against tmkt's fused neuron, and a tmkt step against an event_only step.

    .venv/bin/python bench/bench_step.py            # about two minutes on 2 cores
    .venv/bin/python bench/bench_step.py --cases digitsnet --seconds 10

The machine is shared and noisy, so every variant of a case runs once per round, in turn
(interleaved), for a minimum number of rounds and of seconds, and the table reports the
fastest time of each variant, the median over rounds of the per-round ratio and the ratio of
the fastest times. A training step here is forward + loss + backward (the
optimizer step is the same for every variant and would only dilute the ratios).
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

from tmkt_cli.config import ModelConfig
from tmkt_cli.methods.losses import domain_alignment_loss, mag_loss, mrp_loss, tet_loss
from tmkt_cli.methods.tsm import (
    event_frame_mask,
    realised_event_ratio,
    sample_truncation,
    solve_trigger_probability,
    time_step_mixup,
)
from tmkt_cli.models.neurons import make_surrogate
from tmkt_cli.models.snn import build_snn, build_trunk, lif_factory, relu_factory

# name: (backbone, T, B, size, classes)
CASES = {
    "digitsnet": ("digitsnet", 8, 32, 32, 10),
    "vggsnn": ("vggsnn", 10, 8, 48, 101),
}


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


def event_only_step(model, events, y) -> Callable[[], None]:
    def step() -> None:
        model.zero_grad(set_to_none=True)
        out = model(events, "event")
        functional.reset_net(model)
        tet_loss(out.logits, y).backward()
    return step


def tmkt_step(model, events, image, y, generator) -> Callable[[], None]:
    """Both streams and every tmkt loss, as docs/methods.md writes them."""
    T, B = events.shape[:2]
    p = solve_trigger_probability(0.5, T)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        static = image.unsqueeze(0).expand(T, *image.shape)
        mask = event_frame_mask(sample_truncation(B, T, p, generator), T)
        mixed = time_step_mixup(static, events, mask)
        out_s = model(mixed, "static")
        functional.reset_net(model)
        out_e = model(events, "event")
        functional.reset_net(model)
        loss = (tet_loss(out_s.logits, y)
                + tet_loss(out_e.logits, y, step_weights=1 - torch.sigmoid(model.eta))
                + 0.5 * domain_alignment_loss(out_s.features, out_e.features, model.eta)
                + 0.1 * mag_loss(model.mag_head(out_s.features), mask)
                + 0.1 * mrp_loss(model.mrp_head(out_s.features), realised_event_ratio(mask)))
        loss.backward()
    return step


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
    torch.manual_seed(0)
    events = (torch.rand(T, B, 2, size, size) < 0.1).float() * 2  # sparse event counts
    image = torch.rand(B, 2, size, size)
    y = torch.randint(0, classes, (B,))

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
    torch.manual_seed(0)
    model = build_snn(cfg, classes, size, T)
    variants["event_only"] = event_only_step(model, events, y)
    variants["tmkt"] = tmkt_step(model, events, image, y, torch.Generator().manual_seed(0))

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
        (name, "tmkt step / event_only step (2 streams: 2x)", best["tmkt"],
         best["event_only"], ratio(times, "tmkt", "event_only")),
    ]


def with_optimizer(step: Callable[[], None], model: nn.Module) -> Callable[[], None]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def full_step() -> None:
        step()
        optimizer.step()
    return full_step


def run_digits_training_steps(rounds: int, seconds: float
                              ) -> list[tuple[str, str, float, float | None, str]]:
    """Absolute time of whole digits training steps (with AdamW) at the recipe's T=8, B=64."""
    T, B, size, classes = 8, 64, 32, 10
    torch.manual_seed(0)
    events = (torch.rand(T, B, 2, size, size) < 0.1).float() * 2
    image = torch.rand(B, 2, size, size)
    y = torch.randint(0, classes, (B,))
    model = build_snn(ModelConfig(backbone="digitsnet"), classes, size, T)
    times = interleaved({
        "event_only": with_optimizer(event_only_step(model, events, y), model),
        "tmkt": with_optimizer(tmkt_step(model, events, image, y,
                                         torch.Generator().manual_seed(0)), model),
    }, rounds, seconds)
    return [("digitsnet", f"whole event_only step with AdamW, T={T} B={B}",
             min(times["event_only"]) * 1000, None, ""),
            ("digitsnet", f"whole tmkt step with AdamW, T={T} B={B}",
             min(times["tmkt"]) * 1000, None, "")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5,
                        help="at least this many interleaved rounds per case")
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="and at least this long per case")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    args = parser.parse_args()

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

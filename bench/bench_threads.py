"""Time of one training step at several torch thread counts, interleaved (the machine is shared
and noisy): what ``train.threads``' default rests on.

    .venv/bin/python bench/bench_threads.py                     # digits tmkt step, 1 and 2
    .venv/bin/python bench/bench_threads.py --threads 1 2 4 --seconds 60

The step is the engine's own (``tmkt_cli.train.engine.train_one_step``: forward, backward, the
non-finite check, fused AdamW) on the digits recipe's tmkt method and shapes, synthetic data.
Reports the median and fastest step per thread count and the machine's load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))


def main() -> None:
    from gpu_check import build_task, synthetic_batch

    from tmkt_cli.config import load_recipe
    from tmkt_cli.train.engine import timing_fit, train_one_step

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--seconds", type=float, default=40.0, help="at least this long in all")
    ap.add_argument("--method", default="tmkt")
    args = ap.parse_args()
    recipe = load_recipe(REPO / "recipes" / "digits" / f"{args.method}.yaml")
    p, device = recipe.prepare, torch.device("cpu")
    batch = synthetic_batch(recipe.train.batch_size, p.time_steps, p.size, 10, device)
    torch.manual_seed(0)
    task = build_task(recipe, 10, p.size, p.time_steps, device, False)
    f = timing_fit(task, recipe.train, device, 10**6)
    train_one_step(f, batch)  # warm-up
    times: dict[int, list[float]] = {n: [] for n in args.threads}
    start = time.perf_counter()
    while time.perf_counter() - start < args.seconds or min(map(len, times.values())) < 3:
        for n in args.threads:
            torch.set_num_threads(n)
            t = time.perf_counter()
            train_one_step(f, batch)
            times[n].append(time.perf_counter() - t)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"digits {args.method} step, batch {recipe.train.batch_size}, T={p.time_steps}, "
          f"{p.size}x{p.size}; {os.cpu_count()} cores, load average {load:.1f}")
    print("| threads | steps | median ms | fastest ms |\n|---|---|---|---|")
    for n, ts in times.items():
        print(f"| {n} | {len(ts)} | {1000 * statistics.median(ts):.0f} | {1000 * min(ts):.0f} |")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Gradient noise per method: the variance of mini-batch gradients over windows of steps
(`train.grad_noise_window`), read from the runs' metrics.jsonl.

TMKT's theorem claims time-step mixup lowers gradient variance against KT's whole-sequence
replacement; this prints, per (method, event fraction), the mean over seeds of each run's
mean noise-to-signal ratio (trace of the gradient covariance / squared norm of the mean
gradient) and of the raw trace, over the whole run and over its second half.

    python tools/grad_noise.py runs/data-efficiency
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import yaml


def main(root: str) -> None:
    table: dict[tuple[str, float], list[tuple[float, float, float, float]]] = defaultdict(list)
    for metrics in sorted(Path(root).rglob("metrics.jsonl")):
        folder = metrics.parent
        config = yaml.safe_load((folder / "config.yaml").read_text())
        stage = folder.name
        method = "ckd" if stage == "distill" else config["method"]["name"]
        if stage == "pretrain-ann":
            continue
        recs = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        noise = [r for r in recs if r.get("kind") == "grad_noise"]
        if not noise:
            continue
        half = noise[len(noise) // 2:]
        table[(method, config["data"]["event_fraction"])].append((
            statistics.fmean(r["grad_noise_ratio"] for r in noise),
            statistics.fmean(r["grad_noise_ratio"] for r in half),
            statistics.fmean(r["grad_noise_trace"] for r in noise),
            statistics.fmean(r["grad_noise_trace"] for r in half)))
    print("| method | events | runs | noise/signal (all) | noise/signal (2nd half) "
          "| trace (all) | trace (2nd half) |")
    print("|---|---|---|---|---|---|---|")
    for (method, fraction), rows in sorted(table.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        cols = [statistics.fmean(c) for c in zip(*rows, strict=True)]
        print(f"| {method} | {fraction:.0%} | {len(rows)} | {cols[0]:.2f} | {cols[1]:.2f} "
              f"| {cols[2]:.3g} | {cols[3]:.3g} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/data-efficiency")

#!/usr/bin/env python
"""The demo's closing table and sentence: does transfer from the images help in the setting the
demo ran? Read from the finished run folders, so the sentence always says what the table says.

For each method: top-1 on the event test split of the last checkpoint with the head it tests
with (the event head), the static head on the same events, and the image-only SNN on the test
images (what the images can teach). The sentence compares the best transfer method's event
head with event_only, and says whether the static head, reading the same events, does better.

    python scripts/demo_summary.py runs control
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

METHODS = ("event_only", "kt", "tmkt", "ckd")
# Differences smaller than this are not called a gain or a loss: the seed spread of one run on
# digits is 0.3-1.7 points (recipes/README.md).
NOISE_POINTS = 2.0


def final_eval(folder: Path) -> dict | None:
    """The last evaluation record of a complete training run, or None."""
    try:
        if json.loads((folder / "manifest.json").read_text()).get("status") != "complete":
            return None
        lines = (folder / "metrics.jsonl").read_text().splitlines()
    except (OSError, ValueError):
        return None
    evals = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("kind") == "eval":
            evals.append(record)
    return evals[-1] if evals else None


def rows(runs: Path, prefix: str, seed: int) -> dict[str, dict]:
    out = {}
    for method in (*METHODS, "static_only"):
        stage = "distill" if method == "ckd" else "train-tmkt"
        final = final_eval(runs / f"{prefix}-{method}" / f"seed{seed}" / stage)
        if final is not None:
            trains_static = method in ("kt", "tmkt", "ckd")  # event_only's static head is
            out[method] = {"event": 100 * final["acc"],  # untrained (older runs logged it)
                           "static": 100 * final["acc_static_head"]
                           if trains_static and "acc_static_head" in final else None}
    return out


def table(found: dict[str, dict]) -> str:
    lines = ["| method | event head on events | static head on events |", "|---|---|---|"]
    for method in METHODS:
        if method in found:
            r = found[method]
            static = f"{r['static']:.2f}" if r["static"] is not None else "–"
            lines.append(f"| {method} | {r['event']:.2f} | {static} |")
    if "static_only" in found:
        lines.append(f"| static_only (images only; tested on the test images) | – | "
                     f"{found['static_only']['event']:.2f} on images |")
    return "\n".join(lines)


def sentence(found: dict[str, dict], setting: str) -> str:
    if "event_only" not in found:
        return "event_only has not finished, so nothing can be compared."
    base = found["event_only"]["event"]
    transfer = {m: found[m] for m in ("kt", "tmkt", "ckd") if m in found}
    if not transfer:
        return "No transfer method has finished, so nothing can be compared."
    best = max(transfer, key=lambda m: transfer[m]["event"])
    gain = transfer[best]["event"] - base
    if gain >= NOISE_POINTS:
        verdict = (f"transfer from the images helps here: the best method, {best}, beats "
                   f"event_only by {gain:.1f} points on the head it tests with")
    elif gain <= -NOISE_POINTS:
        verdict = (f"transfer from the images hurts here: the best method, {best}, is "
                   f"{-gain:.1f} points below event_only on the head it tests with")
    else:
        verdict = (f"no transfer method moves the event head by {NOISE_POINTS:.0f} points or "
                   f"more (best: {best}, {gain:+.1f})")
    statics = {m: r["static"] for m, r in transfer.items() if r["static"] is not None}
    if statics:
        reader = max(statics, key=statics.get)
        lead = statics[reader] - max(r["event"] for r in transfer.values())
        if lead >= NOISE_POINTS:
            verdict += (f"; yet {reader}'s static head reads the same events at "
                        f"{statics[reader]:.1f}%, {lead:.1f} points above every event head: "
                        f"the trunk learned from the images, and the separate event head "
                        f"does not use it")
    return (f"In {setting}, event_only reaches {base:.1f}%: {verdict}. One seed; the "
            f"three-seed grid is in recipes/README.md.")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, help="the runs folder (paths.runs)")
    ap.add_argument("prefix", help="the recipes' name prefix, e.g. control for control-kt")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--setting", default="the positive control (one event recording per "
                                         "class, the training images)")
    args = ap.parse_args()
    found = rows(args.runs, args.prefix, args.seed)
    if not found:
        print(f"no finished {args.prefix}-* runs under {args.runs}", file=sys.stderr)
        return 2
    print(table(found))
    print()
    print(sentence(found, args.setting))
    return 0


if __name__ == "__main__":
    sys.exit(main())

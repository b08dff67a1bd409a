#!/usr/bin/env python
"""Event statistics of a dataset as tmkt reads it, before any integration into frames: events
per recording, polarity balance, events per pixel, recording length (docs/datasets.md).

Reads the recordings through the dataset registry, so it works for the emulated datasets
(digits, glyphs, images: the recipe's ``prepare.emulator`` settings apply) and for recorded
ones given their raw folder (``--set prepare.root=...``). An evenly spaced sample of
``--count`` training recordings keeps it quick.

    python tools/event_stats.py recipes/glyphs/base.yaml --count 200
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def recording_stats(events: np.ndarray, sensor_size: tuple[int, int]) -> dict:
    """The figures of one recording (EVENT_DTYPE events, sensor (height, width))."""
    height, width = sensor_size
    count = int(events.size)
    return {"events": count,
            "on_fraction": float(np.mean(events["p"] > 0)) if count else float("nan"),
            "events_per_pixel": count / float(height * width),
            "active_pixel_fraction": (np.unique(events["y"].astype(np.int64) * width
                                                + events["x"]).size / float(height * width)),
            "duration_ms": float(events["t"].max() - events["t"].min()) / 1000.0
            if count else 0.0,
            "sensor": f"{height}x{width}"}


def summarise(rows: list[dict]) -> dict:
    events = np.array([r["events"] for r in rows], dtype=np.float64)
    return {"recordings": len(rows),
            "sensor": ", ".join(sorted({r["sensor"] for r in rows})),
            "events_mean": float(events.mean()), "events_sd": float(events.std()),
            "events_median": float(np.median(events)),
            "on_fraction": float(np.nanmean([r["on_fraction"] for r in rows])),
            "events_per_pixel": float(np.mean([r["events_per_pixel"] for r in rows])),
            "active_pixel_fraction": float(np.mean([r["active_pixel_fraction"] for r in rows])),
            "duration_ms": float(np.mean([r["duration_ms"] for r in rows]))}


def markdown_row(name: str, s: dict) -> str:
    return (f"| {name} | {s['recordings']} | {s['sensor']} | {s['events_mean']:,.0f} "
            f"(sd {s['events_sd']:,.0f}, median {s['events_median']:,.0f}) | "
            f"{s['on_fraction']:.1%} | {s['events_per_pixel']:.2f} | "
            f"{s['active_pixel_fraction']:.0%} | {s['duration_ms']:.0f} |")


HEADER = ("| dataset | recordings | sensor | events per recording | ON share | events per "
          "pixel | pixels with an event | length (ms) |\n|---|---|---|---|---|---|---|---|")


def main() -> int:
    from pathlib import Path

    from tmkt_cli.config import load_recipe
    from tmkt_cli.data import sources

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe", help="a recipe whose prepare section names the dataset")
    ap.add_argument("--count", type=int, default=200, help="training recordings sampled")
    ap.add_argument("--set", dest="sets", action="append", default=[],
                    help="recipe override (repeatable)")
    args = ap.parse_args()

    recipe = load_recipe(args.recipe, args.sets)
    cfg = recipe.prepare
    data = sources.get(cfg.dataset)(Path(cfg.root) if cfg.root else None, cfg)
    picks = np.unique(np.linspace(0, len(data.train) - 1, args.count).round().astype(int))
    rows = [recording_stats(*data.train[i].load()) for i in picks]
    print(HEADER)
    print(markdown_row(cfg.dataset, summarise(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

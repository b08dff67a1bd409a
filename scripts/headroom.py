#!/usr/bin/env python
"""The headroom measure: is there anything for transfer to recover in this setting? Taken
before any transfer method runs (issue 14).

For a dataset recipe folder (base.yaml, event_only.yaml, static_only.yaml, ckd.yaml) and a
list of event fractions, runs through the real CLI, one process at a time with one thread:

(a) event_only trained on that fraction of the event training recordings, tested on events;
(b) what the images can teach: the same SNN trained on every static training image
    (``method.name: static_only``), tested on the static test images. Beside it, for
    reference, the CKD teacher (an ANN of the same backbone, ``tmkt pretrain-ann``) on the
    test images;
(c) event_only on every event recording, tested on events (what more events would give).

A setting is informative when (b) and (c) both stand well above (a). The accuracies are
top-1 of the last checkpoint on the prepared dataset's test split (nothing is chosen by
them: the checkpoint is the last, and no setting of a transfer method is involved). Every run
is a normal run folder, so a second call resumes or only reads, and prints the Markdown table.

    python scripts/headroom.py recipes/glyphs --fractions 0.01 0.05
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_efficiency import tmkt  # noqa: E402  (the same subprocess helper as the sweep)

TEACHER = "teacher"
STATIC_ONLY = "static_only"


def fraction_tag(fraction: float) -> str:
    return f"f{round(fraction * 1000):04d}"


def event_only_eval(root: Path, fraction: float, seed: int) -> Path:
    return root / fraction_tag(fraction) / "event_only" / f"seed{seed}" / "eval" / "eval.json"


def teacher_eval(root: Path, seed: int) -> Path:
    return root / TEACHER / f"seed{seed}" / "eval-pretrain-ann" / "eval.json"


def static_only_eval(root: Path, seed: int) -> Path:
    """The image-only SNN's final figures: its manifest's test top-1 on the test images."""
    return root / STATIC_ONLY / f"seed{seed}" / "train-tmkt" / "manifest.json"


def manifest_top1(path: Path) -> float | None:
    try:
        return 100.0 * float(json.loads(path.read_text())["metrics"]["test_acc"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def top1(path: Path) -> float | None:
    """Top-1 in percent from an eval.json, or None where the run has not finished."""
    try:
        return 100.0 * float(json.loads(path.read_text())["top1"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def headroom_rows(root: Path, fractions: list[float], seed: int) -> list[dict]:
    """One row per fraction: (a), (b), the ANN on images, (c) and the two gaps (None where
    missing)."""
    teacher = top1(teacher_eval(root, seed))
    images = manifest_top1(static_only_eval(root, seed))
    everything = top1(event_only_eval(root, 1.0, seed))
    rows = []
    for fraction in fractions:
        scarce = top1(event_only_eval(root, fraction, seed))
        rows.append({"fraction": fraction, "event_only": scarce, "snn_images": images,
                     "ann_images": teacher, "event_only_all": everything,
                     "images_gap": None if None in (scarce, images) else images - scarce,
                     "events_gap": None if None in (scarce, everything)
                     else everything - scarce})
    return rows


def _cell(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def markdown_table(rows: list[dict], train_counts: dict[float, int] | None = None) -> str:
    counts = train_counts or {}
    lines = ["| event recordings | (a) event_only on events | (b) the SNN on images | "
             "ANN teacher on images | (c) event_only on all recordings | (b) - (a) | "
             "(c) - (a) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        what = f"{r['fraction']:.0%}" if r["fraction"] >= 0.01 else f"{r['fraction']:.1%}"
        if r["fraction"] in counts:
            what += f" ({counts[r['fraction']]:,})"
        lines.append(f"| {what} | {_cell(r['event_only'])} | {_cell(r['snn_images'])} | "
                     f"{_cell(r['ann_images'])} | "
                     f"{_cell(r['event_only_all'])} | {_cell(r['images_gap'], True)} | "
                     f"{_cell(r['events_gap'], True)} |")
    return "\n".join(lines)


def train_recordings(root: Path, fraction: float) -> int | None:
    """How many event recordings the event_only run trained on, from train-tmkt's log line
    ``train-tmkt: method event_only, 40/4314 event training recordings``."""
    try:
        text = (root / "logs" / f"event_only-{fraction_tag(fraction)}.log").read_text()
    except OSError:
        return None
    found = re.findall(r"(\d+)/\d+ event training recordings", text)
    return int(found[-1]) if found else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipes", help="folder with base.yaml, event_only.yaml and ckd.yaml")
    ap.add_argument("--fractions", nargs="+", type=float, default=[0.01, 0.05])
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--runs", default="", help="root of the run folders "
                                               "(default runs/headroom/<recipe folder name>)")
    ap.add_argument("--set", dest="sets", action="append", default=[],
                    help="extra recipe override for every stage (repeatable)")
    ap.add_argument("--table-only", action="store_true",
                    help="run nothing; print the table from the run folders there are")
    args = ap.parse_args()

    recipes = Path(args.recipes)
    root = Path(args.runs or Path("runs") / "headroom" / recipes.name)
    logs = root / "logs"
    extra = [x for s in args.sets for x in ("--set", s)]
    fractions = sorted(set(args.fractions))

    def step(label: str, *cmd: str) -> None:
        rc, seconds = tmkt(*cmd, *extra, log=logs / f"{label}.log")
        print(f"{'done' if rc == 0 else 'FAILED'}  {label}  {seconds:6.0f} s", flush=True)
        if rc:
            raise SystemExit(f"{label} failed: see {logs / (label + '.log')}")

    if not args.table_only:
        seed = ["--set", f"seed={args.seed}"]
        step("prepare", "prepare", str(recipes / "base.yaml"))
        teacher = ["--set", f"paths.runs={root}", "--set", f"name={TEACHER}", *seed]
        step("teacher", "pretrain-ann", str(recipes / "ckd.yaml"), *teacher)
        step("teacher-eval", "eval", str(recipes / "ckd.yaml"), *teacher,
             "--set", "eval.source=pretrain-ann")
        step(STATIC_ONLY, "train-tmkt", str(recipes / "static_only.yaml"),
             "--set", f"paths.runs={root}", "--set", f"name={STATIC_ONLY}", *seed)
        for fraction in [*fractions, 1.0] if 1.0 not in fractions else fractions:
            run = ["--set", f"paths.runs={root / fraction_tag(fraction)}",
                   "--set", "name=event_only",
                   "--set", f"data.event_fraction={fraction}", *seed]
            label = f"event_only-{fraction_tag(fraction)}"
            step(label, "train-tmkt", str(recipes / "event_only.yaml"), *run)
            step(f"{label}-eval", "eval", str(recipes / "event_only.yaml"), *run)

    rows = headroom_rows(root, fractions, args.seed)
    counts = {f: n for f in fractions
              if (n := train_recordings(root, f)) is not None}
    print(f"\nheadroom of {recipes} (seed {args.seed}, last checkpoints, test split; runs in "
          f"{root})\n")
    print(markdown_table(rows, counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())

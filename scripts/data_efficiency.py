#!/usr/bin/env python
"""The data-efficiency experiment: test accuracy against the fraction of event training
recordings, per method, over seeds (the figure KT published for N-Caltech101).

Runs every (method, fraction, seed) of a recipe folder as ordinary tmkt stages, several at a
time with one thread each (two processes on two cores beat one process with two threads), then
gathers them with `tmkt report`. Each fraction is a variant run of the method's recipe, so it
gets its own folder without any path built here (`<runs>/<name>/event_fraction-0.05/seed42/`,
tmkt_cli/variants.py). Every run is a normal run folder, so the sweep resumes after a kill and
a second call only reports.

    python scripts/data_efficiency.py --fractions 0.05 0.2 1.0 --seeds 42 1024 90210 --jobs 2
    python scripts/data_efficiency.py --recipes recipes/control --fractions 0.001 \
        --methods event_only kt kt:model.heads=shared event_only:method.equal_compute=true

A method is a recipe file's name, optionally with overrides that make a variant of it (each
variant is its own run folder). `scripts/benchmark_tables.py` turns the runs into tables
and learning curves.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

TRAIN_METHODS = ("event_only", "finetune", "kt", "tmkt", "static_only")
NOT_RUNS = ("logs", "report", "teacher")  # the CKD teachers are inputs, not results


def tmkt(*args: str, log: Path) -> tuple[int, float]:
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    t0 = time.time()
    with open(log, "a") as f:
        f.write(f"$ tmkt {' '.join(args)}\n")
        f.flush()
        rc = subprocess.run([sys.executable, "-m", "tmkt_cli", *args], stdout=f, stderr=f,
                            env=env).returncode
    return rc, time.time() - t0


def parse_method(spec: str) -> tuple[str, list[str]]:
    """``kt`` -> ("kt", []); ``kt:model.heads=shared,model.test_head=static`` -> the recipe
    file's name and the overrides that make this variant of it (its own variant folder)."""
    method, _, rest = spec.partition(":")
    return method, [o for o in rest.split(",") if o]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", default="recipes/digits", help="folder of <method>.yaml")
    ap.add_argument("--methods", nargs="+", default=["event_only", "kt", "tmkt"],
                    help="recipe file names, each optionally with overrides of its own: "
                         "kt:model.heads=shared,model.test_head=static")
    ap.add_argument("--fractions", nargs="+", type=float, default=[0.05, 0.2, 1.0])
    ap.add_argument("--seeds", nargs="+", type=int, default=[42, 1024, 90210])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--runs", default="runs/data-efficiency", help="root of the run folders")
    ap.add_argument("--set", dest="sets", action="append", default=[],
                    help="extra recipe override for every run (repeatable)")
    args = ap.parse_args()

    root = Path(args.runs)
    recipes = Path(args.recipes)
    unknown = [m for m in args.methods if parse_method(m)[0] not in (*TRAIN_METHODS, "ckd")]
    if unknown:  # before anything runs, not half way through the grid
        ap.error(f"unknown method {', '.join(unknown)}: expected "
                 f"{', '.join((*TRAIN_METHODS, 'ckd'))}")
    extra = [x for s in args.sets for x in ("--set", s)]
    base = recipes / "base.yaml"
    print(f"prepare: {base}")
    rc, _ = tmkt("prepare", str(base), *extra, log=root / "logs" / "prepare.log")
    if rc:
        print(f"prepare failed: see {root / 'logs' / 'prepare.log'}")
        return rc

    def teacher(seed: int) -> tuple[str, int, float]:
        recipe = str(recipes / "ckd.yaml")
        sets = ["--set", f"paths.runs={root}", "--set", "name=teacher", "--set", f"seed={seed}"]
        rc, dt = tmkt("pretrain-ann", recipe, *sets, *extra,
                      log=root / "logs" / f"teacher-s{seed}.log")
        return f"teacher seed {seed}", rc, dt

    def job(spec: str, fraction: float, seed: int) -> tuple[str, int, float]:
        method, overrides = parse_method(spec)
        recipe = str(recipes / f"{method}.yaml")
        sets = ["--set", f"paths.runs={root}", "--set", f"seed={seed}",
                "--set", f"data.event_fraction={fraction}",
                *[x for o in overrides for x in ("--set", o)]]
        tag = re.sub(r"[^A-Za-z0-9_.-]+", "_", spec)  # a variant's log is its own
        log = root / "logs" / f"{tag}-f{round(fraction * 1000):04d}-s{seed}.log"
        if method == "ckd":
            sets += ["--set", f"distill.teacher={root}/teacher/seed{seed}/pretrain-ann"]
            rc, dt = tmkt("distill", recipe, *sets, *extra, log=log)
        elif method in TRAIN_METHODS:
            rc, dt = tmkt("train-tmkt", recipe, *sets, *extra, log=log)
        else:
            raise SystemExit(f"unknown method {method!r}")
        return f"{spec:10s} {fraction:6.1%} seed {seed}", rc, dt

    failures = 0
    with ThreadPoolExecutor(args.jobs) as pool:
        if any(parse_method(m)[0] == "ckd" for m in args.methods):
            for name, rc, dt in pool.map(teacher, args.seeds):
                print(f"{'done' if rc == 0 else 'FAILED'}  {name}  {dt:6.0f} s", flush=True)
                failures += rc != 0
        # seeds outermost: a grid stopped half way has every setting at the first seeds
        grid = [(m, f, s) for s in args.seeds for f in args.fractions for m in args.methods]
        for name, rc, dt in pool.map(lambda a: job(*a), grid):
            print(f"{'done' if rc == 0 else 'FAILED'}  {name}  {dt:6.0f} s", flush=True)
            failures += rc != 0
    runs = [p for p in sorted(root.iterdir()) if p.is_dir() and p.name not in NOT_RUNS]
    report = ["report", *map(str, runs), "--out", str(root / "report")]
    subprocess.run([sys.executable, "-m", "tmkt_cli", *report])
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""`make bench`: every benchmark, each printing ratios measured in one run.

    python bench/run_all.py            # frames, readers, training step, prepare at 5% scale
    python bench/run_all.py --full     # prepare on the full N-Caltech101-sized tree (~5 min)

The figures and what they mean are in docs/performance.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="prepare at full N-Caltech101 size")
    args = ap.parse_args()
    runs = [["bench_frames.py"], ["bench_readers.py"], ["bench_step.py"],
            ["bench_prepare.py", "--scale", "1.0" if args.full else "0.05"]]
    failed = 0
    for cmd in runs:
        print(f"\n$ python bench/{' '.join(cmd)}", flush=True)
        failed |= subprocess.run([sys.executable, str(HERE / cmd[0]), *cmd[1:]]).returncode
    return failed


if __name__ == "__main__":
    sys.exit(main())

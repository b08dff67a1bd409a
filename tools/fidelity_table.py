#!/usr/bin/env python
"""The table of docs/methods.md "What each switch does on digits", from the runs that
``tools/fidelity_digits.sh VARIANT SEED...`` left in ``runs/fidelity/kt-VARIANT/seedS``:
top-1 of the last checkpoint on the event test split, mean +- sample sd over the seeds, and
the difference against ``default`` (tmkt's defaults), paired by seed with a 95% interval.

    python tools/fidelity_table.py [runs/fidelity]
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def results(root: Path) -> dict[str, dict[int, float]]:
    """variant -> seed -> top-1 (%) of every complete run."""
    out: dict[str, dict[int, float]] = {}
    for manifest in sorted(root.glob("kt-*/seed*/train-tmkt/manifest.json")):
        data = json.loads(manifest.read_text())
        if data.get("status") != "complete":
            continue
        variant = manifest.parents[2].name.removeprefix("kt-")
        seed = int(manifest.parents[1].name.removeprefix("seed"))
        out.setdefault(variant, {})[seed] = 100 * float(data["metrics"]["test_acc"])
    return out


def table(found: dict[str, dict[int, float]]) -> str:
    """Markdown: each variant's per-seed top-1, mean ± sd, and its difference from
    ``default`` paired by seed with a 95% t interval and the words it allows."""
    from tmkt_cli.analysis.stats import paired_interval, verdict

    base = found.get("default")
    lines = ["| variant | seeds | top-1 (%) per seed | mean ± sd | against default, paired by "
             "seed [95% interval] |", "|---|---|---|---|---|"]
    for variant in ["default", *sorted(v for v in found if v != "default")]:
        if variant not in found:
            continue
        per_seed = found[variant]
        values = [per_seed[s] for s in sorted(per_seed)]
        mean = statistics.fmean(values)
        sd = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
        diff = "-"
        if variant != "default" and base is not None:
            iv = paired_interval(per_seed, base)
            diff = f"{iv.text(2)}, {verdict(iv).replace('no difference detected', 'not detected')}"
        lines.append(f"| {variant} | {', '.join(map(str, sorted(per_seed)))} | "
                     f"{', '.join(f'{v:.2f}' for v in values)} | {mean:.2f}{sd} | {diff} |")
    return "\n".join(lines)


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/fidelity")
    found = results(root)
    if not found:
        print(f"no finished runs under {root}", file=sys.stderr)
        return 2
    print(table(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())

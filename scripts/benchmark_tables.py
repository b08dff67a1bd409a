#!/usr/bin/env python
"""The transfer benchmark's tables and figures from finished run folders (issue 14).

Reads every training run under the given roots (``scripts/data_efficiency.py`` puts them at
``<root>/<name>/<variant>/seed<seed>/train-tmkt``; CKD students at ``.../distill``) and writes
Markdown tables and PNGs:

* accuracy against the fraction of event recordings: top-1 of the last checkpoint on the event
  test split, mean +- standard deviation over seeds (the run's test head);
* the heads: the event head and the static head on the same events, and the head a
  validation split chooses, with its test top-1, two ways: one choice per method and fraction
  (the higher mean validation top-1 over the seeds) and each run's own: no choice here reads
  the test split;
* gradient shares: each loss term's share of the trunk gradient, at the first measured step
  and averaged over the run (``train.grad_share_every``);
* CKA between the two streams' features, first and last training records, on batches of
  one size (:func:`full_batch_cka`);
* learning curves: test top-1 of both heads against the step, mean over seeds;
* data efficiency (when the runs span more than one fraction): test top-1, and the paired
  difference from event_only, against the fraction of event recordings.

    python scripts/benchmark_tables.py runs/benchmark/control --out docs/benchmark/control
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

STAGES = ("train-tmkt", "distill")


def read_jsonl(path: Path) -> list[dict]:
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a line cut by a kill
    return out


def label(stage: str, cfg: dict) -> str:
    """The method's name in the tables: the method, then what makes this variant of it."""
    method = cfg.get("method", {})
    model = cfg.get("model", {})
    name = "ckd" if stage == "distill" else method.get("name", "?")
    if method.get("equal_compute") and name == "event_only":
        name += " (equal compute)"
    if model.get("heads", "separate") != "separate":
        name += f", heads {model['heads']}"
    if model.get("test_head", "event") != "event" and name != "static_only":
        name += f", test head {model['test_head']}"
    return name


def collect(roots: list[Path]) -> list[dict]:
    """One record per complete training run (static_only once per seed: it reads no event
    recording, so its runs at several fractions are the same computation)."""
    runs = []
    static_seeds: set[int] = set()
    for root in roots:
        for manifest_path in sorted(root.rglob("manifest.json")):
            folder = manifest_path.parent
            if folder.name not in STAGES:
                continue
            manifest = json.loads(manifest_path.read_text())
            if manifest.get("status") != "complete":
                continue
            cfg = manifest.get("stage_config", {})
            records = read_jsonl(folder / "metrics.jsonl")
            evals = [r for r in records if r.get("kind") == "eval"]
            if not evals:
                continue
            method = label(folder.name, cfg)
            if method == "static_only":
                if int(cfg.get("seed", 0)) in static_seeds:
                    continue
                static_seeds.add(int(cfg.get("seed", 0)))
            runs.append({
                "folder": folder, "method": method,
                "fraction": float(cfg.get("data", {}).get("event_fraction", 1.0)),
                "seed": int(cfg.get("seed", 0)),
                "test_head": cfg.get("model", {}).get("test_head", "event"),
                "final": evals[-1], "evals": evals,
                "train": [r for r in records if r.get("kind") == "train"],
                "shares": [r for r in records if r.get("kind") == "grad_share"],
                "event_train_samples": manifest.get("metrics", {}).get("event_train_samples"),
            })
            runs[-1]["cka"] = full_batch_cka(runs[-1]["train"], runs[-1]["event_train_samples"],
                                             cfg.get("train", {}))
    return runs


def full_batch_cka(train: list[dict], n: int | None, train_cfg: dict) -> list[dict]:
    """The training records' CKA on batches of one size: the size most records were measured
    on (the larger one on a tie), usually a full batch. Linear CKA is measured on the training
    batch and is biased upwards on few samples (kt on digits at 5%, seed 42: 196 recordings in
    batches of 64, the last of 4 samples; CKA 0.91-0.99 on it against 0.48-0.72 on full
    batches over the first 400 steps: the saw-tooth of the first curves), so records on other
    sizes are left out. Each record gets its ``batch`` size (None when unknown)."""
    from collections import Counter

    from tmkt_cli.data.sampling import batches_per_epoch

    batch = int(train_cfg.get("batch_size", 0))
    records = [{"step": r["step"], "cka": r["cka"], "batch": None} for r in train if "cka" in r]
    per_epoch = batches_per_epoch(n, batch, bool(train_cfg.get("drop_last", False))) \
        if n and batch else 0
    if not records or per_epoch == 0:
        return records
    for r in records:  # step counts from 1: the step-th batch of the run
        r["batch"] = min(batch, n - ((r["step"] - 1) % per_epoch) * batch)
    counts = Counter(r["batch"] for r in records)
    size = max(counts, key=lambda b: (counts[b], b))
    return [r for r in records if r["batch"] == size]


def mean_sd(values: list[float]) -> str:
    if not values:
        return "–"
    values = [100 * v for v in values]
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.2f} ± {sd:.2f} (n={len(values)})"


def by(runs: list[dict], *keys: str) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        groups[tuple(r[k] for k in keys)].append(r)
    return groups


def fraction_name(f: float) -> str:
    return f"{f:.0%}" if f >= 0.01 else f"{f:.1%}"


def order(methods) -> list[str]:
    first = ["event_only", "event_only (equal compute)", "kt", "tmkt", "ckd"]
    return sorted(methods, key=lambda m: (first.index(m) if m in first else len(first), m))


TWO_HEADED = ("kt", "tmkt", "ckd")  # the methods that train both heads


def head_accuracy(run: dict, head: str, split: str = "") -> float | None:
    """Top-1 of ``head`` at the last evaluation (``split`` "val_" for validation); None for a
    head the method does not train."""
    final = run["final"]
    if head != run["test_head"] and not run["method"].startswith(TWO_HEADED):
        return None
    if head == run["test_head"]:
        return final.get(f"{split}acc")
    return final.get(f"{split}acc_{head}_head")


def accuracy_table(runs: list[dict]) -> str:
    fractions = sorted({r["fraction"] for r in runs if r["method"] != "static_only"})
    methods = order({r["method"] for r in runs if r["method"] != "static_only"})
    groups = by(runs, "method", "fraction")
    lines = ["| method | " + " | ".join(fraction_name(f) for f in fractions) + " |",
             "|---|" + "---|" * len(fractions)]
    for m in methods:
        cells = [mean_sd([r["final"]["acc"] for r in groups.get((m, f), [])])
                 for f in fractions]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    static = [r["final"]["acc"] for r in runs if r["method"] == "static_only"]
    if static:
        lines.append("")
        lines.append(f"static_only (the SNN on every image, tested on the test images): "
                     f"{mean_sd(static)}")
    return "\n".join(lines)


def paired_diffs(runs: list[dict], method: str, base: str) -> dict[float, list[float]]:
    """Per fraction, ``method`` minus ``base`` seed by seed, in points, over the seeds both
    have (the event subset is drawn from the seed, so the same recordings)."""
    base_acc = {(r["fraction"], r["seed"]): r["final"]["acc"] for r in runs
                if r["method"] == base}
    diffs: dict[float, list[float]] = defaultdict(list)
    for r in runs:
        if r["method"] == method and (r["fraction"], r["seed"]) in base_acc:
            diffs[r["fraction"]].append(
                100 * (r["final"]["acc"] - base_acc[(r["fraction"], r["seed"])]))
    return diffs


def paired_cells(runs: list[dict], method: str, base: str, fractions: list[float]) -> list[str]:
    """``method`` minus ``base`` at each fraction (:func:`paired_diffs`): "mean ± sd (n=..)"
    ("–" where no seed pairs)."""
    diffs = paired_diffs(runs, method, base)
    cells = []
    for f in fractions:
        values = diffs.get(f, [])
        if not values:
            cells.append("–")
            continue
        sd = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
        cells.append(f"{statistics.fmean(values):+.2f}{sd} (n={len(values)})")
    return cells


def paired_table(runs: list[dict]) -> str:
    """Each method minus event_only at the same fraction and seed (the same event subset:
    the subset is drawn from the seed), in points: mean +- sd over the seeds both have.
    The spread between seeds of one method is mostly which recordings the subset holds; the
    paired difference removes it."""
    fractions = sorted({r["fraction"] for r in runs if r["method"] != "static_only"})
    methods = [m for m in order({r["method"] for r in runs})
               if m not in ("event_only", "static_only")]
    lines = ["| method - event_only (points) | " + " | ".join(fraction_name(f) for f in fractions)
             + " |", "|---|" + "---|" * len(fractions)]
    for m in methods:
        lines.append(f"| {m} | " + " | ".join(paired_cells(runs, m, "event_only", fractions))
                     + " |")
    return "\n".join(lines)


def tmkt_vs_kt_table(runs: list[dict]) -> str:
    """TMKT minus KT with the same output layout (``model.heads``), fraction and seed: the
    comparison the TMKT paper makes, in points."""
    fractions = sorted({r["fraction"] for r in runs if r["method"] != "static_only"})
    methods = {r["method"] for r in runs}
    lines = ["| layout: tmkt - kt (points) | " + " | ".join(fraction_name(f) for f in fractions)
             + " |", "|---|" + "---|" * len(fractions)]
    for m in order(methods):
        if not m.startswith("tmkt"):
            continue
        base = "kt" + m[len("tmkt"):]
        if base in methods:
            layout = m[len("tmkt, "):] if m != "tmkt" else "heads separate"
            lines.append(f"| {layout} | " + " | ".join(paired_cells(runs, m, base, fractions))
                         + " |")
    return "\n".join(lines) if len(lines) > 2 else "(no tmkt and kt runs with the same heads)"


def headroom_table(runs: list[dict]) -> str:
    """(a) event_only on each fraction, (b) the SNN on the images (static_only), (c)
    event_only on every recording: the headroom measure (scripts/headroom.py) over seeds."""
    images = [100 * r["final"]["acc"] for r in runs if r["method"] == "static_only"]
    groups = by([r for r in runs if r["method"] == "event_only"], "fraction")
    everything = [100 * r["final"]["acc"] for r in groups.get((1.0,), [])]
    if not groups:
        return "(no event_only runs)"
    b = statistics.fmean(images) if images else None
    c = statistics.fmean(everything) if everything else None
    lines = ["| event recordings | (a) event_only on events | (b) the SNN on images | "
             "(c) event_only on every recording | (b) - (a) | (c) - (a) |",
             "|---|---|---|---|---|---|"]
    for (f,) in sorted(groups):
        if f >= 1.0:
            continue  # (c) itself
        a = statistics.fmean(100 * r["final"]["acc"] for r in groups[(f,)])
        lines.append(f"| {fraction_name(f)} | {mean_sd([r['final']['acc'] for r in groups[(f,)]])}"
                     f" | {mean_sd([x / 100 for x in images])} | "
                     f"{mean_sd([x / 100 for x in everything])} | "
                     f"{f'{b - a:+.1f}' if b is not None else '–'} | "
                     f"{f'{c - a:+.1f}' if c is not None else '–'} |")
    return "\n".join(lines)


def heads_table(runs: list[dict]) -> str:
    """Both heads on the test events, and two ways of choosing one on validation: the head
    with the higher mean validation top-1 over the seeds (one choice per method and fraction),
    and each run's own choice (what a user with one run would do; a tie keeps the event
    head, the reference's)."""
    lines = ["| method | events | event head on events | static head on events | "
             "head chosen on validation | its test top-1 | each run's own choice | "
             "its test top-1 |", "|---|---|---|---|---|---|---|---|"]
    groups = by([r for r in runs if r["method"] != "static_only"], "method", "fraction")
    for (m, f) in sorted(groups, key=lambda k: (k[1], order({k[0] for k in groups}).index(k[0]))):
        rs = groups[(m, f)]
        cells = {}
        for head in ("event", "static"):
            test = [a for r in rs if (a := head_accuracy(r, head)) is not None]
            val = [a for r in rs if (a := head_accuracy(r, head, "val_")) is not None]
            cells[head] = (test, val)
        chosen = max((h for h in cells if cells[h][1]),
                     key=lambda h: statistics.fmean(cells[h][1]), default=None)
        own = [c for r in rs if (c := run_choice(r)) is not None]
        statics = sum(head == "static" for head, _ in own)
        own_cell = (f"static on {statics} of {len(own)}" if statics else "event") if own else "–"
        lines.append(f"| {m} | {fraction_name(f)} | {mean_sd(cells['event'][0])} | "
                     f"{mean_sd(cells['static'][0])} | {chosen or '–'} | "
                     f"{mean_sd(cells[chosen][0]) if chosen else '–'} | {own_cell} | "
                     f"{mean_sd([a for _, a in own]) if own else '–'} |")
    return "\n".join(lines)


def run_choice(run: dict) -> tuple[str, float] | None:
    """The head this run's validation top-1 prefers (the event head on a tie) and its test
    top-1; None when the run logged no validation figure."""
    heads = [(h, v) for h in ("event", "static")
             if (v := head_accuracy(run, h, "val_")) is not None]
    if not heads:
        return None
    head = max(heads, key=lambda hv: hv[1])[0]  # max keeps the first on a tie: event
    test = head_accuracy(run, head)
    return (head, test) if test is not None else None


def shares_table(runs: list[dict]) -> str:
    terms = ("event", "static", "da", "mag", "mrp", "kd")
    lines = ["| method | events | " + " | ".join(terms) + " |", "|---|---|" + "---|" * len(terms)]
    groups = by([r for r in runs if r["shares"]], "method", "fraction")
    for (m, f) in sorted(groups, key=lambda k: (k[1], k[0])):
        cells = []
        for t in terms:
            first = [r["shares"][0][f"share_{t}"] for r in groups[(m, f)]
                     if f"share_{t}" in r["shares"][0]]
            mean = [statistics.fmean(s[f"share_{t}"] for s in r["shares"] if f"share_{t}" in s)
                    for r in groups[(m, f)] if f"share_{t}" in r["shares"][0]]
            cells.append(f"{statistics.fmean(first):.2f} / {statistics.fmean(mean):.2f}"
                         if first else "–")
        lines.append(f"| {m} | {fraction_name(f)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cka_table(runs: list[dict]) -> str:
    lines = ["| method | events | CKA, first record | CKA, last 5 records | measured on batches of |",
             "|---|---|---|---|---|"]
    groups = by([r for r in runs if r.get("cka")], "method", "fraction")
    for (m, f) in sorted(groups, key=lambda k: (k[1], k[0])):
        first, last, sizes = [], [], set()
        for r in groups[(m, f)]:
            values = [t["cka"] for t in r["cka"]]
            first.append(values[0])
            last.append(statistics.fmean(values[-5:]))
            sizes |= {t["batch"] for t in r["cka"]}
        batches = ", ".join("–" if b is None else str(b)
                            for b in sorted(sizes, key=lambda b: (b is None, b or 0)))
        lines.append(f"| {m} | {fraction_name(f)} | {statistics.fmean(first):.3f} | "
                     f"{statistics.fmean(last):.3f} | {batches} |")
    return "\n".join(lines)


def mean_series(records: list[list[dict]], key: str) -> tuple[list[int], list[float]]:
    """(steps, mean of ``key`` over the runs at each step) from each run's records."""
    at: dict[int, list[float]] = defaultdict(list)
    for run_records in records:
        for r in run_records:
            if r.get(key) is not None:
                at[r["step"]].append(r[key])
    steps = sorted(at)
    return steps, [statistics.fmean(at[s]) for s in steps]


def efficiency_series(runs: list[dict], paired: bool = False) -> dict[str, list[tuple]]:
    """Per method, (fraction, mean, sd, n) of the test top-1 in points over seeds, fractions
    in order; with ``paired``, of the difference from event_only on the same fraction and seed
    (:func:`paired_diffs`; event_only itself left out)."""
    out: dict[str, list[tuple]] = {}
    groups = by([r for r in runs if r["method"] != "static_only"], "method", "fraction")
    for m in order({m for m, _ in groups}):
        if paired and m == "event_only":
            continue
        diffs = paired_diffs(runs, m, "event_only") if paired else {}
        points = []
        for f in sorted(f for mm, f in groups if mm == m):
            values = diffs.get(f, []) if paired else [100 * r["final"]["acc"]
                                                       for r in groups[(m, f)]]
            if values:
                sd = statistics.stdev(values) if len(values) > 1 else 0.0
                points.append((f, statistics.fmean(values), sd, len(values)))
        if points:
            out[m] = points
    return out


def plot_efficiency(runs: list[dict], path: Path, title: str) -> None:
    """Top-1 on the event test split against the fraction of event recordings (left), and
    each method's paired difference from event_only (right), mean +- sd over seeds; the SNN on
    the images (static_only, the headroom's (b)) as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (abs_ax, diff_ax) = plt.subplots(1, 2, figsize=(12.0, 4.6))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    absolute = efficiency_series(runs)
    fractions = sorted({f for points in absolute.values() for f, *_ in points})
    style = {m: (colours[i % len(colours)], "--" if "heads" in m else "-")
             for i, m in enumerate(absolute)}
    for ax, series in ((abs_ax, absolute), (diff_ax, efficiency_series(runs, paired=True))):
        for i, (m, points) in enumerate(series.items()):
            colour, line = style[m]
            nudge = 1.0 + 0.025 * (i - len(series) / 2)  # error bars side by side
            ax.errorbar([f * nudge for f, *_ in points], [y for _, y, _, _ in points],
                        yerr=[sd for _, _, sd, _ in points], fmt="o" + line, color=colour,
                        capsize=3, markersize=4, label=m)
        ax.set_xscale("log")
        ax.set_xticks(fractions, [fraction_name(f) for f in fractions])
        ax.minorticks_off()
        ax.set_xlabel("fraction of the event training recordings")
        ax.grid(alpha=0.3)
    static = [100 * r["final"]["acc"] for r in runs if r["method"] == "static_only"]
    if static:
        abs_ax.axhline(statistics.fmean(static), color="grey", linestyle=":",
                       label="static_only on the test images")
    diff_ax.axhline(0.0, color="black", linewidth=0.8)
    abs_ax.set_ylabel("top-1 on the event test split (%)")
    diff_ax.set_ylabel("minus event_only on the same recordings (points)")
    abs_ax.legend(fontsize=7)
    fig.suptitle(f"{title}: last checkpoint, mean ± sd over seeds")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_curves(runs: list[dict], path: Path, title: str) -> None:
    """Per fraction (columns): test top-1 of both heads, CKA between the streams, and the
    event loss's share of the trunk gradient, against the step, mean over seeds (rows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fractions = sorted({r["fraction"] for r in runs if r["method"] != "static_only"})
    fig, axes = plt.subplots(3, len(fractions), figsize=(4.2 * len(fractions), 9.0),
                             squeeze=False, sharey="row", sharex="col")
    groups = by(runs, "method", "fraction")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    methods = order({r["method"] for r in runs if r["method"] != "static_only"})
    labelled: set[str] = set()
    for col, f in enumerate(fractions):
        acc_ax, cka_ax, share_ax = axes[0][col], axes[1][col], axes[2][col]
        for i, m in enumerate(methods):
            rs = groups.get((m, f))
            if not rs:
                continue
            colour = colours[i % len(colours)]
            label = None if m in labelled else m  # once, in the first column it appears in
            labelled.add(m)
            steps, ys = mean_series([r["evals"] for r in rs], "acc")
            acc_ax.plot(steps, [100 * y for y in ys], "-", color=colour, marker=".", label=label)
            if m.startswith(TWO_HEADED) and rs[0]["test_head"] == "event":
                steps, ys = mean_series([r["evals"] for r in rs], "acc_static_head")
                if steps:
                    acc_ax.plot(steps, [100 * y for y in ys], ":", color=colour, marker=".")
            steps, ys = mean_series([r["cka"] for r in rs], "cka")
            if steps:
                cka_ax.plot(steps, ys, "-", color=colour)
            steps, ys = mean_series([r["shares"] for r in rs], "share_event")
            if steps:
                share_ax.plot(steps, ys, "-", color=colour, marker=".")
        acc_ax.set_title(f"{fraction_name(f)} of the event recordings")
        share_ax.set_xlabel("optimizer step")
        for ax in (acc_ax, cka_ax, share_ax):
            ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test top-1 on events (%)\nsolid: the head it tests with;\n"
                          "dotted: the static head")
    axes[1][0].set_ylabel("CKA, static vs event\nfeatures (training batches)")
    axes[2][0].set_ylabel("event loss's share of\nthe trunk gradient")
    fig.suptitle(f"{title} (mean over seeds)")
    fig.tight_layout()
    fig.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("roots", nargs="+", type=Path, help="roots of the run folders")
    ap.add_argument("--out", type=Path, required=True, help="folder for tables.md and PNGs")
    ap.add_argument("--title", default="", help="figure title")
    args = ap.parse_args()
    runs = collect(args.roots)
    if not runs:
        print(f"no finished training runs under {', '.join(map(str, args.roots))}",
              file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    sections = [
        ("Headroom: (a) event_only on the fraction, (b) the SNN on images, (c) every recording",
         headroom_table(runs)),
        ("Top-1 on the event test split (last checkpoint, the run's test head)",
         accuracy_table(runs)),
        ("Against event_only, paired by seed (the same event recordings)",
         paired_table(runs)),
        ("TMKT against KT, paired by seed (the same recordings, the same heads)",
         tmkt_vs_kt_table(runs)),
        ("Heads: both heads on the same events; the head a validation split chooses",
         heads_table(runs)),
        ("Share of the trunk gradient per loss term (first measured step / mean over the run)",
         shares_table(runs)),
        ("CKA between the static and event features", cka_table(runs)),
    ]
    text = "\n\n".join(f"### {title}\n\n{table}" for title, table in sections) + "\n"
    (args.out / "tables.md").write_text(text)
    title = args.title or (str(args.roots[0]) if len(args.roots) == 1 else args.out.name)
    plot_curves(runs, args.out / "curves.png", title)
    print(text)
    print(f"tables: {args.out / 'tables.md'}; learning curves: {args.out / 'curves.png'}")
    if len({r["fraction"] for r in runs if r["method"] != "static_only"}) > 1:
        plot_efficiency(runs, args.out / "efficiency.png", title)
        print(f"top-1 against the fraction of event recordings: {args.out / 'efficiency.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

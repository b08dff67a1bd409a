"""The demo's closing table and paragraph: which output layout transfers, and how TMKT, KT and
CKD compare with event_only, for the runs of one setting and one seed.

Read from the per-run table (``runs.csv``, :mod:`tmkt_cli.results.benchmark`), so the paragraph says
what the table says: every sentence is built from the numbers it prints. A two-head run's
number is the head its own validation split chose (``chosen_test``, the rule of
``model.test_head: validation``), with both heads beside it. One seed gives no interval, so
the paragraph describes differences and points to the five-seed intervals instead of calling
anything ahead.
"""

from __future__ import annotations

TRANSFER = ("kt", "tmkt", "ckd")
PAPER, SHARED = "separate", "shared"
LAYOUT_NAMES = {PAPER: "the papers' separate heads", SHARED: "one shared head"}


def pick(rows: list[dict], seed: int | None = None) -> dict[tuple[str, str], dict]:
    """{(method, layout): row} of one seed (the lowest when ``seed`` is None); event_only's
    layout is "". Image-only runs (static_only, teacher) are keyed by their method."""
    seeds = sorted({r["seed"] for r in rows})
    seed = seeds[0] if seed is None and seeds else seed
    out = {}
    for r in rows:
        if r["seed"] != seed:
            continue
        layout = r["heads"] if r["method"] in TRANSFER else ""
        out[(r["method"], layout)] = r
    return out


def _cell(row: dict | None) -> str:
    if row is None or row.get("chosen_test") is None:
        return "–"
    if row.get("test_static") is None:  # one head
        return f"{row['chosen_test']:.2f}"
    return (f"**{row['chosen_test']:.2f}** ({row['chosen_head']}; event "
            f"{row['test_event']:.2f}, static {row['test_static']:.2f})")


def table(runs: dict[tuple[str, str], dict]) -> str:
    """Markdown: one row per method, the two layouts side by side."""
    lines = ["| method | two heads (the papers' layout) | one shared head (recommended) |",
             "|---|---|---|"]
    base = runs.get(("event_only", ""))
    if base is not None:
        lines.append(f"| event_only (one head) | {_cell(base)} | {_cell(base)} |")
    for m in TRANSFER:
        if (m, PAPER) in runs or (m, SHARED) in runs:
            lines.append(f"| {m} | {_cell(runs.get((m, PAPER)))} | "
                         f"{_cell(runs.get((m, SHARED)))} |")
    for m in ("static_only", "teacher"):
        r = runs.get((m, ""))
        if r is not None and r.get("chosen_test") is not None:
            what = "the SNN" if m == "static_only" else "the ANN teacher"
            lines.append(f"| {m} ({what} on the images; tested on the test images) | "
                         f"{r['chosen_test']:.2f} | |")
    lines.append("")
    lines.append("Bold: the run's number, the head its own validation split chose (event or "
                 "static), with both heads' test top-1 beside it.")
    return "\n".join(lines)


def _gains(runs: dict, layout: str, base: float) -> dict[str, float]:
    return {m: runs[(m, layout)]["chosen_test"] - base for m in TRANSFER
            if (m, layout) in runs and runs[(m, layout)].get("chosen_test") is not None}


def _list(gains: dict[str, float]) -> str:
    return ", ".join(f"{m} {g:+.1f}" for m, g in gains.items())


def paragraph(runs: dict[tuple[str, str], dict], setting: str, seed: int,
              evidence: str) -> str:
    """The closing paragraph, from the table's numbers only."""
    base_row = runs.get(("event_only", ""))
    if base_row is None or base_row.get("chosen_test") is None:
        return "event_only has not finished, so nothing can be compared."
    base = base_row["chosen_test"]
    paper, shared = _gains(runs, PAPER, base), _gains(runs, SHARED, base)
    if not paper and not shared:
        return "No transfer method has finished, so nothing can be compared."
    out = [f"In {setting}, event_only reaches {base:.1f}%."]
    for layout, gains in ((SHARED, shared), (PAPER, paper)):
        if gains:
            out.append(f"With {LAYOUT_NAMES[layout]}, the transfer methods score "
                       f"{_list(gains)} points against it.")
    both = [m for m in TRANSFER if m in paper and m in shared]
    if both:
        better = [m for m in both if shared[m] > paper[m]]
        which = ("one shared head transfers more for every method"
                 if len(better) == len(both) else
                 "the papers' separate heads transfer more for every method" if not better
                 else f"one shared head transfers more for {', '.join(better)}")
        out.append(f"So on this seed {which}.")
    for layout, gains in ((SHARED, shared), (PAPER, paper)):
        if "tmkt" in gains and "kt" in gains:
            d = gains["tmkt"] - gains["kt"]
            out.append(f"TMKT is {abs(d):.1f} points {'above' if d >= 0 else 'below'} KT "
                       f"with {LAYOUT_NAMES[layout]}.")
    chose_static = [m for m in TRANSFER if (m, PAPER) in runs
                    and runs[(m, PAPER)].get("chosen_head") == "static"]
    if chose_static:
        out.append(f"With separate heads, the validation split chose the static head for "
                   f"{', '.join(chose_static)}: the head trained on images read these events "
                   f"better than the head trained on them.")
    out.append(f"This is one seed ({seed}), so it gives no interval and no difference here is "
               f"a finding on its own. {evidence}")
    return " ".join(out)


def evidence(rows: list[dict], setting: str, fraction: float | None, source: str) -> str:
    """What the multi-seed table says about the same comparisons, with n and 95% intervals
    (paired by seed), or where to find it when the table has no such runs."""
    from tmkt_cli.analysis.stats import paired_interval, verdict

    cell = [r for r in rows if r["setting"] == setting
            and (fraction is None or r["fraction"] == fraction)]

    def by_seed(method: str, layout: str) -> dict[int, float]:
        return {r["seed"]: r["chosen_test"] for r in cell if r["method"] == method
                and (r["heads"] == layout or not layout) and r.get("chosen_test") is not None}

    base = by_seed("event_only", "")
    groups = {"One shared head against two": [
        (m, paired_interval(by_seed(m, SHARED), by_seed(m, PAPER))) for m in TRANSFER],
        "TMKT against KT": [(f"with {LAYOUT_NAMES[layout]}",
                             paired_interval(by_seed("tmkt", layout), by_seed("kt", layout)))
                            for layout in (SHARED, PAPER)],
        "Against event_only, one shared head": [
            (m, paired_interval(by_seed(m, SHARED), base)) for m in TRANSFER],
        "Against event_only, two heads": [
            (m, paired_interval(by_seed(m, PAPER), base)) for m in TRANSFER]}
    parts = []
    for title, items in groups.items():
        said = [f"{what} {iv.text()}, {verdict(iv)}" for what, iv in items if iv.n >= 2]
        if said:
            parts.append(f"{title}: " + "; ".join(said))
    if not parts:
        return f"The multi-seed intervals are in {source}."
    n = max(len(by_seed(m, layout)) for m in TRANSFER for layout in (SHARED, PAPER))
    return (f"Over {n} seeds ({source}; mean paired difference in points [95% interval]): "
            + ". ".join(parts) + ".")

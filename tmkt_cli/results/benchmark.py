"""The transfer benchmark as data: one row per finished training run (``runs.csv``), the
learning curves in long form (``curves.csv``), and every table and figure of the benchmark
rendered from ``runs.csv`` alone, so that what the docs quote can be regenerated from the
shipped CSV.

* ``tmkt report RUN...`` writes ``runs.csv`` and ``curves.csv`` beside ``report.md``
  (:func:`rows_from_records`, :func:`write_run_tables`);
* ``tmkt report --table runs.csv --out DIR`` renders ``tables.md``, ``efficiency.png`` and
  ``curves.png`` from them (:func:`make_tables`);
* ``tmkt report --table runs.csv --docs FILE...`` rewrites the generated blocks of Markdown
  files, ``<!-- tmkt:begin NAME -->`` ... ``<!-- tmkt:end NAME -->``, with the current
  rendering of table NAME (:func:`block_names`); ``--check-docs`` lists the stale ones.

Which head counts: a two-head run's figure (``chosen_test``) is the head the validation rule
picks (:func:`tmkt_cli.analysis.heads.choose_head` with ``"validation"``), whatever the run's
own ``model.test_head``: the benchmark's stated rule, so the test split never chooses.
Intervals are 95% Student t over seeds, differences paired by seed
(:mod:`tmkt_cli.analysis.stats`). No torch here (report.py imports this module).
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

from tmkt_cli.analysis import style
from tmkt_cli.analysis.heads import choose_head
from tmkt_cli.analysis.stats import (
    Interval,
    mean_interval,
    paired_interval,
    pooled_paired_interval,
    verdict,
)
from tmkt_cli.errors import TmktError
from tmkt_cli.methods.registry import METHODS
from tmkt_cli.runs.artifacts import write_bytes, write_text

RUNS_CSV = "runs.csv"
CURVES_CSV = "curves.csv"
TABLES_MD = "tables.md"
EFFICIENCY_PNG = "efficiency.png"
CURVES_PNG = "curves.png"

HEADS = ("event", "static")
TWO_STREAM = (*(m.name for m in METHODS.values() if m.trains_both_heads), "ckd")
"""Methods that train an event and a static stream (two heads unless ``heads: shared``): kt,
tmkt (their declarations, tmkt_cli/methods/builtin.py) and the CKD student."""
IMAGE_ONLY = (*(m.name for m in METHODS.values() if m.on_images), "teacher")
"""Runs tested on the test images, not on events: never compared with the event runs."""
TWO_HEAD_LAYOUTS = ("separate", "residual")
METHOD_ORDER = ("event_only", "finetune", "kt", "tmkt", "ckd", "static_only", "teacher")
LAYOUT_ORDER = ("", "separate", "residual", "shared")
SHARE_TERMS = ("event", "static", "da", "mag", "mrp", "kd")
SPLITS = ("train", "val", "test")

COLUMNS = ("setting", "dataset", "fraction", "subset_draw", "method", "heads", "variant",
           "seed", "steps", "event_train_samples", "test_event", "test_static", "val_event",
           "val_static", "test_head", "chosen_head", "chosen_test", "wall_s", "revision",
           "config_hash", "run")
CKA_COLUMNS = ("cka_first", "cka_last")
CURVE_COLUMNS = ("run", "step", "split", "head", "acc")

_INTEGER = ("seed", "steps", "event_train_samples")
_PERCENT = ("test_event", "test_static", "val_event", "val_static", "chosen_test")


# --------------------------------------------------------------------------------------------
# Which heads a run has, and which one counts
# --------------------------------------------------------------------------------------------

def head_layout(method: str, heads: str) -> tuple[str, ...]:
    """The heads a run predicts with: both for a two-stream method with two output layers,
    the static one for runs on images, the event one otherwise (event_only, finetune, and
    ``heads: shared``, where one layer serves both streams)."""
    if method in IMAGE_ONLY:
        return ("static",)
    if method in TWO_STREAM and heads in TWO_HEAD_LAYOUTS:
        return HEADS
    return ("event",)


def head_figures(method: str, heads: str, test_head: str, record: dict
                 ) -> dict[str, float | None]:
    """Each head's top-1 (fraction) on the test and validation splits from one ``eval``
    record of metrics.jsonl: ``test_event``, ``test_static``, ``val_event``, ``val_static``
    (None where the run has no such head or split).

    ``acc`` is the test head's and ``acc_<other>_head`` the other's; the test head is the one
    ``model.test_head`` names, or with ``test_head: validation`` the one the record's
    ``head`` says the rule chose at that evaluation."""
    layout = head_layout(method, heads)
    if record.get("head") in HEADS:
        test_head = record["head"]
    out: dict[str, float | None] = {}
    for split, prefix in (("test", ""), ("val", "val_")):
        for head in HEADS:
            value = _head_value(record, head, prefix, layout, test_head) \
                if head in layout else None
            out[f"{split}_{head}"] = value
    return out


def _head_value(record: dict, head: str, prefix: str, layout: tuple[str, ...],
                test_head: str) -> float | None:
    explicit = record.get(f"{prefix}acc_{head}_head")
    if isinstance(explicit, int | float):
        return float(explicit)
    # A one-head run's `acc` is its head whatever test_head says (an event_only run still
    # logs its untrained static layer as acc_static_head: not a head it has).
    if len(layout) == 1 or test_head == head:
        value = record.get(f"{prefix}acc")
        return float(value) if isinstance(value, int | float) else None
    return None


def chosen_head(method: str, heads: str, figures: dict[str, float | None]) -> str:
    """The head the benchmark reads: the validation rule's for two heads, else the only one."""
    layout = head_layout(method, heads)
    if len(layout) == 1:
        return layout[0]
    return choose_head("validation", figures["val_event"], figures["val_static"])


def run_method(stage: str, recipe: dict) -> str:
    """``method.name``; ``ckd`` for a distill student, ``teacher`` for an ANN teacher."""
    if stage == "pretrain-ann":
        return "teacher"
    if stage == "distill":
        return "ckd"
    return str((recipe.get("method") or {}).get("name", "?"))


def record_heads(record) -> tuple[dict[str, float | None], str] | None:
    """(head figures, chosen head) of a report RunRecord from its last eval record; None
    when the run logged no evaluation."""
    if record.last_eval is None:
        return None
    method = run_method(record.stage, record.recipe)
    model = record.recipe.get("model") or {}
    heads, test_head = str(model.get("heads", "separate")), str(model.get("test_head", "event"))
    figures = head_figures(method, heads, test_head, record.last_eval)
    return figures, chosen_head(method, heads, figures)


# --------------------------------------------------------------------------------------------
# Run folders -> rows (strings, as runs.csv holds them)
# --------------------------------------------------------------------------------------------

def _text(value, digits: int) -> str:
    if value is None or not isinstance(value, int | float) or math.isnan(value):
        return ""
    return f"{value:.{digits}f}"


def _percent(value: float | None) -> str:
    return "" if value is None else _text(100 * value, 2)


def last_eval(records: list[dict]) -> dict | None:
    evals = [r for r in records if r.get("kind") == "eval"]
    return evals[-1] if evals else None


def grad_share_means(records: list[dict]) -> dict[str, float]:
    """Each loss term's share of the trunk gradient, averaged over the run: the ``grad_share``
    records the engine writes, or the ``share_*`` keys of train records in logs without
    them."""
    measured = [r for r in records if r.get("kind") == "grad_share"] or \
        [r for r in records if r.get("kind") == "train"]
    values: dict[str, list[float]] = defaultdict(list)
    for r in measured:
        for key, value in r.items():
            if key.startswith("share_") and isinstance(value, int | float):
                values[key].append(float(value))
    return {key: sum(v) / len(v) for key, v in values.items()}


def full_batch_cka(train: list[dict], n: int | None, batch_size: int, drop_last: bool
                   ) -> list[tuple[int, float]]:
    """(step, cka) of the train records measured on batches of one size: the size most
    records fell on (the larger on a tie), usually a full batch. Linear CKA is measured on
    the training batch and is biased upwards on few samples (kt on digits at 5%, seed 42:
    CKA 0.91-0.99 on an epoch's last batch of 4 against 0.48-0.72 on full batches), so
    records on other sizes are left out. All records when the sizes cannot be known."""
    from tmkt_cli.data.sampling import batches_per_epoch

    records = [(int(r["step"]), float(r["cka"])) for r in train
               if isinstance(r.get("cka"), int | float) and isinstance(r.get("step"), int)]
    per_epoch = batches_per_epoch(n, batch_size, drop_last) if n and batch_size > 0 else 0
    if not records or per_epoch == 0:
        return records
    # step counts from 1: the step-th batch of the run
    sizes = [min(batch_size, n - ((step - 1) % per_epoch) * batch_size) for step, _ in records]
    counts = Counter(sizes)
    size = max(counts, key=lambda b: (counts[b], b))
    return [rec for rec, b in zip(records, sizes, strict=True) if b == size]


def _identity_cells(record, method: str) -> dict[str, str]:
    recipe = record.recipe
    teacher = method == "teacher"
    data, model = recipe.get("data") or {}, recipe.get("model") or {}
    variant = str(recipe.get("variant") or "")
    fraction = data.get("event_fraction", 1.0)
    return {
        "setting": record.name.split("-", 1)[0],
        "dataset": str((recipe.get("prepare") or {}).get("dataset", record.dataset)),
        # a teacher trains on the images: no event fraction, no subset
        "fraction": "" if teacher else f"{float(fraction):g}",
        "subset_draw": "" if teacher else str(data.get("subset_draw", "independent")),
        "method": method,
        "heads": "" if teacher else str(model.get("heads", "separate")),
        "variant": "" if variant == "auto" else variant,
        "seed": str(int(record.seed)),
    }


def _result_cells(method: str, recipe: dict, final: dict) -> dict[str, str]:
    model = recipe.get("model") or {}
    teacher = method == "teacher"
    heads, test_head = str(model.get("heads", "separate")), str(model.get("test_head", "event"))
    figures = head_figures(method, heads, test_head, final)
    head = chosen_head(method, heads, figures)
    return {**{k: _percent(v) for k, v in figures.items()},
            "test_head": "" if teacher else test_head,
            "chosen_head": head, "chosen_test": _percent(figures[f"test_{head}"])}


def _provenance_cells(manifest: dict, run: str) -> dict[str, str]:
    revision = str(manifest.get("git_revision") or "")
    # keep the mark of uncommitted changes: such a run's code is not the revision's
    short = revision[:7] + ("-dirty" if revision.endswith("-dirty") else "")
    return {"wall_s": _text((manifest.get("timings") or {}).get("seconds"), 1),
            "revision": short, "config_hash": str(manifest.get("config_hash") or ""),
            "run": run}


def _training_cells(records: list[dict], recipe: dict, samples: int | None) -> dict[str, str]:
    train = recipe.get("train") or {}
    cka = full_batch_cka([r for r in records if r.get("kind") == "train"], samples,
                         int(train.get("batch_size") or 0), bool(train.get("drop_last")))
    shares = {k: _text(v, 4) for k, v in grad_share_means(records).items()}
    return {**shares, "cka_first": _text(cka[0][1], 4) if cka else "",
            "cka_last": _text(cka[-1][1], 4) if cka else ""}


def run_row(record, records: list[dict], run: str) -> dict[str, str]:
    """One runs.csv row from a report RunRecord (:func:`tmkt_cli.results.report.collect_runs`) and its
    metrics.jsonl records. Raises TmktError for a run that logged no evaluation."""
    method = run_method(record.stage, record.recipe)
    final = last_eval(records)
    if final is None and isinstance(record.metrics.get("test_acc"), int | float):
        final = {"acc": record.metrics["test_acc"]}  # the manifest keeps the last test top-1
    if final is None:
        raise TmktError("no evaluation in metrics.jsonl or the manifest")
    metrics = record.metrics
    samples = metrics.get("event_train_samples")
    return {**_identity_cells(record, method),
            "steps": _text(metrics.get("steps"), 0),
            "event_train_samples": "" if method == "teacher" else _text(samples, 0),
            **_result_cells(method, record.recipe, final),
            **_provenance_cells(record.manifest, run),
            **_training_cells(records, record.recipe, samples if isinstance(samples, int)
                              else None)}


def curve_rows(row: dict[str, str], records: list[dict]) -> list[dict[str, str]]:
    """curves.csv rows of one run: every eval record's heads on the test and validation
    splits, and the training batches' top-1 of each stream from the train records."""
    method, heads = row["method"], row["heads"]
    layout = head_layout(method, heads)
    out = []
    for rec in records:
        step = rec.get("step")
        if not isinstance(step, int):
            continue
        if rec.get("kind") == "eval":
            figures = head_figures(method, heads, row["test_head"], rec)
            points = [(split, head, figures[f"{split}_{head}"])
                      for split in ("val", "test") for head in HEADS]
        elif rec.get("kind") == "train":
            # `acc` is the event stream's (the images' for a run on images), `acc_static`
            # the static stream's through its own head
            points = [("train", layout[0], rec.get("acc"))]
            if len(layout) == 2:
                points.append(("train", "static", rec.get("acc_static")))
        else:
            continue
        out += [{"run": row["run"], "step": str(step), "split": split, "head": head,
                 "acc": _percent(float(acc))}
                for split, head, acc in points if isinstance(acc, int | float)]
    return out


def relative_run(folder: Path, base: Path) -> str:
    try:
        return Path(os.path.relpath(Path(folder).resolve(), base)).as_posix()
    except ValueError:  # another drive (Windows)
        return Path(folder).as_posix()


def common_base(paths: list[Path], folders: list[Path]) -> Path:
    """The folder run paths are written relative to: the one holding every path given, moved
    up while it is a run folder itself (so a run folder given alone is named by its stage)."""
    resolved = [Path(p).resolve() for p in paths] or [Path.cwd()]
    base = Path(os.path.commonpath(resolved))
    runs = {Path(f).resolve() for f in folders}
    while base in runs and base.parent != base:
        base = base.parent
    return base


def rows_from_records(records: list, base: Path
                      ) -> tuple[list[dict[str, str]], list[dict[str, str]],
                                 list[tuple[Path, str]]]:
    """(runs.csv rows, curves.csv rows, skipped (folder, why)) for report RunRecords; a run
    whose log cannot be read is skipped with the reason, never a traceback."""
    from tmkt_cli.runs.runlog import read_metrics

    rows, curves, skipped = [], [], []
    for record in records:
        try:
            records_of_run = read_metrics(record.folder)
            row = run_row(record, records_of_run, relative_run(record.folder, base))
            curves += curve_rows(row, records_of_run)
        except (TmktError, OSError, UnicodeDecodeError, ValueError, TypeError, KeyError,
                AttributeError) as e:  # one damaged folder must not hide the others
            skipped.append((record.folder, f"not in runs.csv: {e}"))
            continue
        rows.append(row)
    return sort_rows(rows), sorted(curves, key=_curve_order), skipped


def _order(value: str, order: tuple[str, ...]) -> int:
    return order.index(value) if value in order else len(order)


def _row_order(row: dict) -> tuple:
    fraction = row["fraction"]
    fraction = -1.0 if fraction in ("", None) else float(fraction)
    return (row["setting"], row["dataset"], fraction, row["subset_draw"],
            _order(row["method"], METHOD_ORDER), row["method"],
            _order(row["heads"], LAYOUT_ORDER), row["variant"], int(row["seed"]), row["run"])


def _curve_order(row: dict) -> tuple:
    return (row["run"], int(row["step"]), _order(row["split"], SPLITS), row["head"])


def sort_rows(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=_row_order)


# --------------------------------------------------------------------------------------------
# CSV files
# --------------------------------------------------------------------------------------------

def share_columns(rows: list[dict]) -> list[str]:
    """The known loss terms always (a stable schema), then any other term the runs logged."""
    known = [f"share_{t}" for t in SHARE_TERMS]
    extra = sorted({k for r in rows for k in r if k.startswith("share_")} - set(known))
    return known + extra


def csv_text(rows: list[dict], columns: Iterable[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\n",
                            extrasaction="ignore", restval="")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def write_run_tables(rows: list[dict], curves: list[dict], out: Path) -> tuple[Path, Path]:
    """runs.csv and curves.csv in ``out``."""
    runs_path, curves_path = Path(out) / RUNS_CSV, Path(out) / CURVES_CSV
    columns = [*COLUMNS, *share_columns(rows), *CKA_COLUMNS]
    write_text(runs_path, csv_text(rows, columns))
    write_text(curves_path, csv_text(curves, CURVE_COLUMNS))
    return runs_path, curves_path


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TmktError(f"{path}: not found (--table takes a runs.csv written by tmkt "
                        f"report)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise TmktError(f"{path}: cannot read it ({type(e).__name__})") from None
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:
        raise TmktError(f"{path}: no column {', '.join(missing)} (not a {Path(path).name} "
                        f"written by tmkt report?)")
    return list(reader)


def _typed(value: str, column: str, where: str):
    if column in _INTEGER or column == "step":
        return int(value) if value != "" else None
    if column in (*_PERCENT, "fraction", "wall_s", "acc", *CKA_COLUMNS) or \
            column.startswith("share_"):
        return float(value) if value != "" else None
    return value


def parse_rows(raw: list[dict[str, str]], source: str) -> list[dict]:
    """CSV strings -> numbers where a column holds numbers (None where empty); a bad value is
    one error line naming the row and column."""
    rows = []
    for i, r in enumerate(raw, start=2):  # line 1 is the header
        try:
            rows.append({k: _typed(v if v is not None else "", k, source)
                         for k, v in r.items() if k is not None})
        except ValueError:
            bad = next(k for k, v in r.items() if k is not None and _is_bad(v, k))
            raise TmktError(f"{source}: line {i}: column {bad}: {r[bad]!r} is not a "
                            f"number") from None
    return rows


def _is_bad(value: str, column: str) -> bool:
    try:
        _typed(value or "", column, "")
    except ValueError:
        return True
    return False


class Runs(list):
    """runs.csv's rows, with the per-recording predictions written beside it when there
    (``predictions``: what :func:`tmkt_cli.results.predictions.read_predictions` returns, or None)."""

    predictions = None


def read_runs(path: Path) -> Runs:
    from tmkt_cli.results.predictions import read_predictions

    rows = Runs(parse_rows(_read_csv(path, COLUMNS), str(path)))
    for i, row in enumerate(rows, start=2):
        if row["seed"] is None:
            raise TmktError(f"{path}: line {i}: no seed")
    rows.predictions = read_predictions(Path(path).parent)
    return rows


def read_curves(path: Path) -> list[dict]:
    return parse_rows(_read_csv(path, CURVE_COLUMNS), str(path))


# --------------------------------------------------------------------------------------------
# Grouping: a table cell is (setting's) fraction and subset draw; a line is what was run
# --------------------------------------------------------------------------------------------

PLACED_BY_COLUMNS = ("event_fraction", "heads", "subset_draw")
"""Variant keys the tables already show as columns (the variant folder names them too)."""


def variant_extra(variant: str) -> str:
    """What makes a run a variant beyond its fraction, heads and draw (e.g.
    ``equal_compute-true``), from its variant folder name (tmkt_cli/config/variants.py)."""
    parts = [p for p in (variant or "").split("+")
             if p and p.partition("-")[0].rsplit(".", 1)[-1] not in PLACED_BY_COLUMNS]
    return "+".join(parts)


def line_of(row: dict) -> tuple[str, str, str]:
    """(method, heads, variant extra); heads is '' for a method that has one head anyway."""
    heads = row["heads"] if row["method"] in TWO_STREAM else ""
    return row["method"], heads or "", variant_extra(row["variant"])


def cell_of(row: dict) -> tuple[float, str]:
    return row["fraction"], row["subset_draw"] or ""


def grouped(rows: list[dict]) -> dict[tuple, dict[int, dict]]:
    """(cell, line) -> seed -> row, in a stable order; where a seed has several rows (the
    same run under two roots) the first in runs.csv's order counts."""
    out: dict[tuple, dict[int, dict]] = {}
    for row in sort_rows(rows):
        out.setdefault((cell_of(row), line_of(row)), {}).setdefault(row["seed"], row)
    return dict(sorted(out.items(), key=lambda kv: _group_order(kv[0])))


def _group_order(key: tuple) -> tuple:
    (fraction, draw), (method, heads, extra) = key
    return (fraction if fraction is not None else -1.0, draw, _order(method, METHOD_ORDER),
            method, _order(heads, LAYOUT_ORDER), extra)


def values(runs: dict[int, dict], column: str) -> dict[int, float]:
    """seed -> the column's value, over the seeds that have one."""
    return {seed: row[column] for seed, row in runs.items() if row.get(column) is not None}


def settings(rows: list[dict]) -> list[str]:
    """Settings with event runs (a teacher named ``teacher`` is no setting of its own)."""
    return sorted({r["setting"] for r in rows if r["method"] != "teacher"})


def setting_rows(rows: list[dict], setting: str) -> list[dict]:
    return [r for r in rows if r["setting"] == setting and r["method"] != "teacher"]


def draws_vary(rows: list[dict]) -> bool:
    return len({r["subset_draw"] for r in rows if r["method"] not in IMAGE_ONLY}) > 1


# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------

def markdown(header: Iterable[str], body: list[list[str]], empty: str) -> str:
    """A Markdown table, or the one line ``empty`` says when there is nothing to show."""
    if not body:
        return empty
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |"
              for row in body]
    return "\n".join(lines)


def fraction_text(fraction: float | None) -> str:
    return "–" if fraction is None else f"{100 * fraction:g}%"


def cell_text(cell: tuple[float, str], show_draw: bool) -> str:
    return fraction_text(cell[0]) + (f" ({cell[1]})" if show_draw else "")


def method_text(line: tuple[str, str, str]) -> str:
    method, _, extra = line
    text = "static_only (on the test images)" if method == "static_only" else method
    return text + (f" ({extra})" if extra else "")


def heads_text(line: tuple[str, str, str]) -> str:
    return line[1] or "one head"


def accuracy_text(iv: Interval) -> str:
    """``74.09 [56.58, 91.60] (n=3)``: mean, 95% interval, seeds."""
    return "–" if iv.n == 0 else f"{iv.text(2, signed=False)} (n={iv.n})"


def mean_text(by_seed: dict[int, float] | None) -> str:
    if not by_seed:
        return "–"
    return f"{sum(by_seed.values()) / len(by_seed):.2f}"


def difference_text(iv: Interval) -> str:
    return "–" if iv.n == 0 else iv.text(2)


# --------------------------------------------------------------------------------------------
# Tables (pure: rows of runs.csv in, Markdown out)
# --------------------------------------------------------------------------------------------

BASELINE = ("event_only", "", "")


def accuracy_table(rows: list[dict], setting: str) -> str:
    """Top-1 per fraction and what was run: the head the benchmark reads (``chosen_test``),
    mean [95% interval] (n), and each head's mean beside it."""
    mine = setting_rows(rows, setting)
    show_draw = draws_vary(mine)
    body = []
    for (cell, line), runs in grouped(mine).items():
        body.append([method_text(line), heads_text(line), cell_text(cell, show_draw),
                     accuracy_text(mean_interval(values(runs, "chosen_test").values())),
                     mean_text(values(runs, "test_event")),
                     mean_text(values(runs, "test_static"))])
    return markdown(("method", "heads", "events", "top-1, the head the rule picks",
                     "event head", "static head"), body, "(no runs)")


def _paired_rows(groups: dict, base_of: Callable, show_draw: bool,
                 keep: Callable) -> tuple[list[list[str]], list[tuple[dict, dict]]]:
    """One row per (cell, line) that ``keep`` accepts and whose ``base_of(line)`` ran on the
    same cell: the difference in chosen_test paired by seed, its interval and verdict."""
    body, pairs = [], []
    for (cell, line), runs in groups.items():
        base = groups.get((cell, base_of(line)))
        if not keep(line) or base is None or base_of(line) == line:
            continue
        a, b = values(runs, "chosen_test"), values(base, "chosen_test")
        iv = paired_interval(a, b)
        if iv.n == 0:
            continue
        pairs.append((a, b))
        body.append([method_text(line), heads_text(line), cell_text(cell, show_draw),
                     difference_text(iv), verdict(iv)])
    return body, pairs


def paired_table(rows: list[dict], setting: str) -> str:
    """Each variant minus event_only on the same fraction and seed (the same recordings)."""
    mine = setting_rows(rows, setting)
    body, _ = _paired_rows(grouped(mine), lambda line: BASELINE, draws_vary(mine),
                           lambda line: line[0] not in IMAGE_ONLY)
    return markdown(("method", "heads", "events", "minus event_only (points)", "verdict"),
                    body, "(no run paired with event_only on the same fraction and seed)")


def tmkt_vs_kt_table(rows: list[dict], setting: str) -> str:
    """tmkt minus kt with the same heads, fraction and seed; then, per layout run at more than
    one fraction, one comparison pooled over them (every seed of every fraction is one paired
    difference)."""
    mine = setting_rows(rows, setting)
    groups = grouped(mine)
    body, _ = _paired_rows(groups, lambda line: ("kt", *line[1:]), draws_vary(mine),
                           lambda line: line[0] == "tmkt")
    for layout in sorted({line[1] for _, line in groups if line[0] == "tmkt"},
                         key=lambda h: _order(h, LAYOUT_ORDER)):
        pairs = [(values(runs, "chosen_test"), values(groups[(cell, ("kt", *line[1:]))],
                                                      "chosen_test"))
                 for (cell, line), runs in groups.items()
                 if line[0] == "tmkt" and line[1] == layout
                 and (cell, ("kt", *line[1:])) in groups]
        pooled = pooled_paired_interval(pairs)
        if pooled.n and len(pairs) > 1:  # one cell alone is its own row above
            body.append(["tmkt, pooled", heads_text(("tmkt", layout, "")),
                         "every fraction above", difference_text(pooled), verdict(pooled)])
    return markdown(("method", "heads", "events", "tmkt minus kt (points)", "verdict"), body,
                    "(no tmkt and kt runs with the same heads on the same seed)")


def layouts_table(rows: list[dict], setting: str) -> str:
    """Shared (and residual) heads minus separate heads, per method, paired by seed."""
    mine = setting_rows(rows, setting)
    body, _ = _paired_rows(grouped(mine), lambda line: (line[0], "separate", line[2]),
                           draws_vary(mine), lambda line: line[0] in TWO_STREAM)
    return markdown(("method", "heads", "events", "minus separate heads (points)",
                     "verdict"), body, "(no shared or residual heads beside separate ones)")


def heads_table(rows: list[dict], setting: str) -> str:
    """Two-head runs: each head's test top-1, what the validation rule chose on how many
    seeds, and the choice minus the head that is better on test over the seeds (what
    choosing on the test split, which the rule never does, would have added)."""
    mine = setting_rows(rows, setting)
    show_draw = draws_vary(mine)
    body = []
    for (cell, line), runs in grouped(mine).items():
        if line[1] not in TWO_HEAD_LAYOUTS:
            continue
        event, static = values(runs, "test_event"), values(runs, "test_static")
        event_iv, static_iv = mean_interval(event.values()), mean_interval(static.values())
        better = "static" if static_iv.n and static_iv.mean > event_iv.mean else "event"
        cost = paired_interval(values(runs, "chosen_test"),
                               static if better == "static" else event)
        picks = Counter(r["chosen_head"] for r in runs.values())
        body.append([method_text(line), heads_text(line), cell_text(cell, show_draw),
                     accuracy_text(event_iv), accuracy_text(static_iv),
                     f"static on {picks['static']} of {sum(picks.values())}",
                     f"{difference_text(cost)} ({better})"])
    return markdown(("method", "heads", "events", "event head", "static head",
                     "validation chose", "chosen minus the better head on test (points)"),
                    body, "(no two-head runs)")


def reference_runs(rows: list[dict], setting: str, dataset: str, method: str,
                   fraction: float | None = None) -> dict[int, float]:
    """seed -> chosen_test of the plain ``method`` runs on ``dataset`` (at ``fraction`` when
    given). The headroom's (b) and (c) are the same computation for every setting on one
    dataset (static_only reads no event recording; every recording is every recording), so
    they come from the setting's own runs where it has them, else from another setting on
    the same dataset (the control reads the digits store); one run per seed."""
    found = [r for r in rows if r["dataset"] == dataset and line_of(r) == (method, "", "")
             and (fraction is None or r["fraction"] == fraction)
             and r["chosen_test"] is not None]
    out: dict[int, float] = {}
    for r in sorted(found, key=lambda r: (r["setting"] != setting, _row_order(r))):
        out.setdefault(r["seed"], r["chosen_test"])
    return out


def _gap(high: dict[int, float], low: dict[int, float]) -> str:
    """``high`` minus ``low``, paired by seed, with its 95% interval and verdict; the plain
    difference of the means where fewer than two seeds pair."""
    iv = paired_interval(high, low)
    if iv.n >= 2:
        return f"{difference_text(iv)}, {verdict(iv)}"
    if not high or not low:
        return "–"
    return (f"{statistics.fmean(high.values()) - statistics.fmean(low.values()):+.2f} "
            f"(unpaired means)")


def headroom_table(rows: list[dict], setting: str) -> str:
    """Is there anything for transfer to recover? (a) event_only on each fraction, (b) the
    SNN on the images alone (static_only, on the test images), (c) event_only on every
    recording; a setting is informative when (b) and (c) both stand well above (a)."""
    mine = setting_rows(rows, setting)
    show_draw = draws_vary(mine)
    body = []
    for (cell, line), runs in grouped(mine).items():
        if line != BASELINE or cell[0] is None or cell[0] >= 1.0:
            continue
        dataset = next(iter(runs.values()))["dataset"]
        by_seed = values(runs, "chosen_test")
        images = reference_runs(rows, setting, dataset, "static_only")
        every = reference_runs(rows, setting, dataset, "event_only", 1.0)
        body.append([cell_text(cell, show_draw), accuracy_text(mean_interval(by_seed.values())),
                     accuracy_text(mean_interval(images.values())),
                     accuracy_text(mean_interval(every.values())),
                     _gap(images, by_seed), _gap(every, by_seed)])
    return markdown(("events", "(a) event_only on events", "(b) the SNN on images",
                     "(c) event_only on every recording", "(b) - (a)", "(c) - (a)"), body,
                    "(no event_only runs on part of the recordings)")


def teachers_table(rows: list[dict]) -> str:
    """The ANN teachers' top-1 on the test images, per setting and dataset."""
    by_setting: dict[tuple[str, str], dict[int, float]] = {}
    for r in sort_rows([r for r in rows if r["method"] == "teacher"]):
        if r["chosen_test"] is not None:
            by_setting.setdefault((r["setting"], r["dataset"]), {}).setdefault(
                r["seed"], r["chosen_test"])
    body = [[setting, dataset, accuracy_text(mean_interval(seeds.values()))]
            for (setting, dataset), seeds in sorted(by_setting.items())]
    return markdown(("setting", "dataset", "teacher top-1 on the test images"), body,
                    "(no teachers)")


def shares_table(rows: list[dict], setting: str) -> str:
    """Each loss term's share of the trunk gradient, averaged over the run, mean over seeds."""
    mine = setting_rows(rows, setting)
    terms = [c for c in share_columns(mine) if any(r.get(c) is not None for r in mine)]
    show_draw = draws_vary(mine)
    body = []
    for (cell, line), runs in grouped(mine).items():
        per_term = [values(runs, term) for term in terms]
        if any(per_term):
            body.append([method_text(line), heads_text(line), cell_text(cell, show_draw),
                         *(mean_text(v) for v in per_term),
                         str(max(len(v) for v in per_term))])
    return markdown(("method", "heads", "events", *(t[len("share_"):] for t in terms), "n"),
                    body, "(no gradient shares logged: train.grad_share_every)")


def cka_table(rows: list[dict], setting: str) -> str:
    """CKA between the two streams' features, first and last record on full batches."""
    mine = setting_rows(rows, setting)
    show_draw = draws_vary(mine)
    body = []
    for (cell, line), runs in grouped(mine).items():
        first, last = values(runs, "cka_first"), values(runs, "cka_last")
        if first and last:
            body.append([method_text(line), heads_text(line), cell_text(cell, show_draw),
                         f"{sum(first.values()) / len(first):.3f}",
                         f"{sum(last.values()) / len(last):.3f}", str(len(first))])
    return markdown(("method", "heads", "events", "CKA, first record", "CKA, last record",
                     "n"), body, "(no CKA logged)")


def comparisons(groups: dict) -> list[tuple[str, tuple, tuple, tuple]]:
    """(what, cell, line a, line b) of the comparisons the docs lead with, per cell: each
    transfer method and layout against event_only, shared against separate heads, tmkt
    against kt with the same heads."""
    out = []
    for cell, line in groups:
        method, heads, extra = line
        if method not in TWO_STREAM or extra:
            continue
        if (cell, BASELINE) in groups:
            out.append((f"{method}, {heads} heads, minus event_only", cell, line, BASELINE))
        if heads == "shared" and (cell, (method, "separate", "")) in groups:
            out.append((f"{method}: shared minus separate heads", cell, line,
                        (method, "separate", "")))
        if method == "tmkt" and (cell, ("kt", heads, "")) in groups:
            out.append((f"tmkt minus kt, {heads} heads", cell, line, ("kt", heads, "")))
    return out


def bootstrap_table(rows: list[dict], setting: str) -> str:
    """The comparisons of :func:`comparisons` on the seed-mean top-1, with a 95% interval
    from resampling the test split's source images (tmkt_cli/results/predictions.py): how much each
    difference would move on another test set, given these seeds."""
    from tmkt_cli.results.predictions import bootstrap_difference

    found = getattr(rows, "predictions", None)
    if found is None:
        return "(no per-recording predictions beside runs.csv: run tmkt eval on the runs)"
    preds, tests = found
    mine = setting_rows(rows, setting)
    groups, body = grouped(mine), []
    for what, cell, a, b in comparisons(groups):
        dataset = next(iter(groups[(cell, a)].values()))["dataset"]
        result = bootstrap_difference(groups[(cell, a)], groups[(cell, b)], preds,
                                      tests.get(dataset, (None, None)))
        if result is None:
            continue
        iv, seeds = result
        body.append([what, cell_text(cell, draws_vary(mine)), str(seeds), difference_text(iv),
                     str(iv.n), verdict(iv).replace(f"(n = {iv.n})", f"({iv.n} images)")])
    return markdown(("comparison", "events", "seeds", "difference of the seed-mean top-1 "
                     "(points) [95% bootstrap over source images]", "source images",
                     "verdict"), body, "(no evaluated runs to compare)")


def findings_text(rows: list[dict], setting: str) -> str:
    """The comparisons the prose quotes, one paragraph per fraction: mean paired difference
    over seeds with its 95% t interval, n and the words the interval allows."""
    from tmkt_cli.results.summary import evidence

    mine = setting_rows(rows, setting)
    # a fraction with event_only alone (a headroom run) has nothing to compare
    fractions = sorted({r["fraction"] for r in mine if r["method"] in TWO_STREAM
                        and r["fraction"] is not None})
    paragraphs = [f"- **{fraction_text(f)} of the event recordings.** "
                  + evidence(mine, setting, f, "runs.csv") for f in fractions]
    return "\n".join(paragraphs) if paragraphs else "(no runs)"


SETTING_TABLES: dict[str, tuple[str, Callable[[list[dict], str], str]]] = {
    "findings": ("What the intervals say, per fraction", findings_text),
    "accuracy": ("Top-1 on the event test split, last checkpoint", accuracy_table),
    "paired": ("Against event_only, paired by seed (the same event recordings)",
               paired_table),
    "tmkt-vs-kt": ("TMKT against KT with the same heads, paired by seed", tmkt_vs_kt_table),
    "layouts": ("Shared and residual heads against separate heads, paired by seed",
                layouts_table),
    "heads": ("The two heads, and the head the validation split picks", heads_table),
    "headroom": ("Headroom: (a) event_only on the fraction, (b) the SNN on images, "
                 "(c) every recording", headroom_table),
    "shares": ("Share of the trunk gradient per loss term, mean over the run", shares_table),
    "cka": ("CKA between the static and event features (training batches of one size)",
            cka_table),
    "bootstrap": ("The same comparisons over test recordings: a bootstrap of source images",
                  bootstrap_table),
}
"""Table id -> (title, renderer) of the tables each setting gets; block ``SETTING/ID``."""
TEACHERS = "teachers"


def block_names(rows: list[dict]) -> list[str]:
    """Every block name a Markdown file may hold for these rows."""
    return [f"{s}/{t}" for s in settings(rows) for t in SETTING_TABLES] + [TEACHERS]


def render_table(name: str, rows: list[dict]) -> str:
    """Table ``name`` (``SETTING/TABLE`` or ``teachers``) rendered from runs.csv rows."""
    if name == TEACHERS:
        return teachers_table(rows)
    setting, _, table_id = name.partition("/")
    if table_id not in SETTING_TABLES:
        raise TmktError(f"unknown table '{name}': expected SETTING/TABLE with TABLE one of "
                        f"{', '.join(SETTING_TABLES)}, or {TEACHERS}")
    known = settings(rows)
    if setting not in known:
        raise TmktError(f"unknown table '{name}': the runs have no setting '{setting}' "
                        f"(settings: {', '.join(known) or 'none'})")
    return SETTING_TABLES[table_id][1](rows, setting)


INTRO = (
    "Top-1 (%) of the last checkpoint on the event test split (static_only and the teachers: "
    "on the test images). A two-head run counts with the head its validation split picks "
    "(the event head on a tie or without a validation split); the test split never chooses. "
    "`mean [low, high] (n=seeds)`: 95% Student t interval over seeds; differences are paired "
    "by seed (the same event recordings), and say ahead or behind only where their interval "
    "excludes zero. The name in brackets after a title is the table's block name for "
    "`tmkt report --table runs.csv --docs FILE...`.")


def tables_markdown(rows: list[dict], source: str, figure_lines: list[str]) -> str:
    """tables.md: every setting's tables, the teachers, the figures (no date: the same
    runs.csv renders the same bytes)."""
    lines = ["# The transfer benchmark", "",
             f"Rendered by `tmkt report --table` from {source} ({len(rows)} runs). " + INTRO,
             ""]
    for setting in settings(rows):
        lines += [f"## {setting}", ""]
        for table_id, (title, render) in SETTING_TABLES.items():
            lines += [f"### {title} (`{setting}/{table_id}`)", "", render(rows, setting), ""]
    lines += [f"## Teachers (`{TEACHERS}`)", "", teachers_table(rows), ""]
    if figure_lines:
        lines += ["## Figures", "", *figure_lines, ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Figures: the one style of every tmkt figure (tmkt_cli/analysis/style.py): one colour per
# method, one marker and line style per heads layout, n in every label, 95% intervals
# --------------------------------------------------------------------------------------------

def line_label(key: tuple[tuple[str, str, str], str], show_draw: bool,
               counts: list[int]) -> str:
    """``kt, shared heads (n = 3)``; n is the seeds behind each point (a range if they
    vary)."""
    (method, heads, extra), draw = key
    return style.series_label(style.line_name(method, heads, extra,
                                              draw if show_draw else ""), counts)


def efficiency_series(rows: list[dict], setting: str
                      ) -> dict[tuple[tuple[str, str, str], str], dict[float, Interval]]:
    """(line, draw) -> fraction -> chosen_test over seeds, for the setting's event runs."""
    out: dict = defaultdict(dict)
    for (cell, line), runs in grouped(setting_rows(rows, setting)).items():
        if line[0] in IMAGE_ONLY or cell[0] is None:
            continue
        iv = mean_interval(values(runs, "chosen_test").values())
        if iv.n:
            out[(line, cell[1])][cell[0]] = iv
    return dict(out)


EFFICIENCY_TITLE = ("Last checkpoint, the head the validation rule picks: mean and "
                    f"{style.INTERVAL} (bars; n in the legend, one seed: no bar)")
IMAGES_NOTE = "; dotted: the SNN on the test images"
"""Added to the title only where a panel draws the static_only line."""


def efficiency_figure(rows: list[dict]):
    """(figure or None, notes): chosen_test against the fraction of event recordings, one
    panel per setting run at several fractions, mean with its 95% interval; the SNN on the
    images as a dotted line. Settings at a single fraction are left out, and the notes say
    so in one line."""
    from tmkt_cli.analysis import plotting

    series = {setting: efficiency_series(rows, setting) for setting in settings(rows)}
    drawn, notes = plotting.split_single_fraction(
        {setting: {f for points in lines.values() for f in points}
         for setting, lines in series.items()}, EFFICIENCY_PNG, "settings")
    if not drawn:
        return None, notes
    counts: dict = defaultdict(list)
    for setting in drawn:
        for key, points in series[setting].items():
            counts[key] += [iv.n for iv in points.values()]
    show_draw = draws_vary(rows)
    panels = {setting: [plotting.Series(line_label(key, show_draw, counts[key]),
                                        style.line_style(*key[0]), points)
                        for key, points in series[setting].items()] for setting in drawn}
    references = {setting: _images_line(rows, setting) for setting in drawn}
    title = EFFICIENCY_TITLE + (IMAGES_NOTE if any(references.values()) else "")
    return plotting.data_efficiency_figure(panels, references, title), notes


def _images_line(rows: list[dict], setting: str) -> list:
    """The SNN on the images (static_only on the test images): the headroom's (b)."""
    from tmkt_cli.analysis.plotting import Reference

    mine = setting_rows(rows, setting)
    images = reference_runs(rows, setting, mine[0]["dataset"], "static_only") if mine else {}
    if not images:
        return []
    look = {"color": style.method_colour("static_only"), "linestyle": ":"}
    return [Reference(style.series_label("static_only on the test images", [len(images)]),
                      sum(images.values()) / len(images), look)]


def curve_panels(rows: list[dict], curves: list[dict]) -> dict:
    """(setting, cell) -> (line, draw) -> run row's run -> (row, {"val" | "train": {step:
    top-1 of the head the rule picked for that run}}), for the event runs."""
    panels: dict = defaultdict(lambda: defaultdict(dict))
    by_run = {}
    for row in sort_rows([r for r in rows if r["method"] not in IMAGE_ONLY]):
        by_run[row["run"]] = (row, {"val": {}, "train": {}})
        panels[(row["setting"], cell_of(row))][(line_of(row), row["subset_draw"] or "")][
            row["run"]] = by_run[row["run"]]
    for c in curves:
        row, series = by_run.get(c["run"], (None, None))
        if row is not None and c["split"] in series and c["head"] == row["chosen_head"] \
                and c["acc"] is not None:
            series[c["split"]][c["step"]] = c["acc"]
    return {k: dict(v) for k, v in sorted(panels.items(), key=lambda kv: (
        kv[0][0], kv[0][1][0] if kv[0][1][0] is not None else -1.0, kv[0][1][1]))}


def _draw_curves(ax, lines: dict, labels: dict, handles: dict) -> None:
    """Each line's train and validation curves (mean, 95% band over seeds) and its test
    top-1 as one point at the last step."""
    from tmkt_cli.analysis import plotting

    for key, runs in sorted(lines.items(), key=lambda kv: _group_order(((0.0, ""), kv[0][0]))):
        look = style.line_style(*key[0])
        for kind in ("train", "val"):
            per_step: dict[int, list[float]] = defaultdict(list)
            for _, series in runs.values():
                for step, acc in series[kind].items():
                    per_step[step].append(acc)
            if per_step:
                plotting.draw_band(ax, plotting.Band.over_seeds(per_step), look, kind)
        steps = [s for _, series in runs.values() for s in series["val"]]
        last = max([*steps, *(row["steps"] or 0 for row, _ in runs.values())], default=0)
        plotting.draw_point(ax, last, mean_interval(row["chosen_test"] for row, _ in
                                                    runs.values()), look)
        handles.setdefault(labels[key], style.proxy(look))


CURVES_TITLE = ("Learning curves of the head the validation rule picks: validation (thick) "
                f"and train (thin) top-1, mean and {style.INTERVAL} (band); test top-1 only "
                "at the end (point)")


def curves_figure(rows: list[dict], curves: list[dict]):
    """Learning curves per setting and fraction: the validation (and train, where logged)
    top-1 of the head the rule picks, mean over seeds with its 95% band; the test top-1
    only as the final point. None when there are no event runs."""

    panels = curve_panels(rows, curves)
    if not panels:
        return None
    counts: dict = defaultdict(list)
    for lines in panels.values():
        for key, runs in lines.items():
            counts[key].append(len(runs))
    show_draw = draws_vary(rows)
    labels = {key: line_label(key, show_draw, n) for key, n in counts.items()}
    fig, axes = style.panel_grid(len(panels), 2.3, extra_height=style.legend_room(
        [*set(labels.values()), *style.curve_kinds()]))
    handles: dict = {}
    for ax, ((setting, cell), lines) in zip(axes, panels.items(), strict=True):
        _draw_curves(ax, lines, labels, handles)
        ax.set(title=f"{setting}: {cell_text(cell, show_draw)} of the recordings",
               xlabel="optimizer step", ylabel="top-1 (%)")
        style.style_axes(ax)
        style.clip_percent(ax)
    style.suptitle(fig, CURVES_TITLE)
    style.figure_legend(fig, {**handles, **style.curve_kinds()})
    return fig


# --------------------------------------------------------------------------------------------
# tmkt report --table: tables.md and the figures; --docs: the generated blocks of Markdown
# --------------------------------------------------------------------------------------------

def make_tables(table: Path, out: Path, ui) -> list[Path]:
    """Render every table and figure from ``table`` (a runs.csv; curves.csv beside it, when
    there) into ``out``; returns the files written."""
    from tmkt_cli.analysis import plotting

    table, out = Path(table), Path(out)
    rows = read_runs(table)
    if not rows:
        raise TmktError(f"{table}: holds no runs")
    written, figure_lines = [], []
    fig, notes = efficiency_figure(rows)
    if fig is not None:
        written.append(plotting.save_png(fig, out / EFFICIENCY_PNG))
        figure_lines.append(f"- top-1 against the fraction of event recordings: "
                            f"[{EFFICIENCY_PNG}]({EFFICIENCY_PNG})")
    else:  # a figure of an earlier rendering would disagree with these tables
        (out / EFFICIENCY_PNG).unlink(missing_ok=True)
    figure_lines += [f"- {note}" for note in notes]
    curves_path = table.parent / CURVES_CSV
    fig = curves_figure(rows, read_curves(curves_path)) if curves_path.is_file() else None
    if fig is not None:
        written.append(plotting.save_png(fig, out / CURVES_PNG))
        figure_lines.append(f"- learning curves: [{CURVES_PNG}]({CURVES_PNG})")
    else:
        figure_lines.append(f"- {CURVES_PNG} is not drawn: no {CURVES_CSV} beside {table.name}")
    markdown_path = out / TABLES_MD
    write_text(markdown_path, tables_markdown(rows, table.name, figure_lines))
    ui.print(f"tables:  {markdown_path}")
    for path in written:
        ui.print(f"figure:  {path}")
    for note in notes:
        ui.print(note)
    return [markdown_path, *written]


BEGIN = re.compile(r"<!-- tmkt:begin (\S+) -->")


def find_blocks(text: str, source: str) -> list[tuple[str, int, int]]:
    """(name, start, end) of each generated block's body: what lies between its begin and
    end markers."""
    blocks, pos = [], 0
    while (match := BEGIN.search(text, pos)) is not None:
        name = match.group(1)
        end_marker = f"<!-- tmkt:end {name} -->"
        end = text.find(end_marker, match.end())
        if end < 0:
            raise TmktError(f"{source}: block '{name}' has no end marker '{end_marker}'")
        blocks.append((name, match.end(), end))
        pos = end + len(end_marker)
    return blocks


def refreshed(text: str, source: str, rows: list[dict]) -> tuple[str, list[str]]:
    """(``text`` with every block's body replaced by its current rendering, the names of the
    blocks that changed); nothing outside the blocks changes."""
    parts, stale, pos = [], [], 0
    for name, start, end in find_blocks(text, source):
        try:
            body = "\n" + render_table(name, rows) + "\n"
        except TmktError as e:
            raise TmktError(f"{source}: {e}") from None
        parts += [text[pos:start], body]
        pos = end
        if text[start:end] != body:
            stale.append(name)
    parts.append(text[pos:])
    return "".join(parts), stale


def update_docs(table: Path, files: list[Path], ui, check: bool) -> list[str]:
    """Rewrite (or with ``check`` only list) the stale generated blocks of ``files`` against
    ``table``; returns ``FILE: NAME`` of each stale block. Every file is read and rendered
    before any is written, so an unknown block leaves all of them as they were."""
    if not files:
        raise TmktError("--docs and --check-docs take the Markdown files to rewrite or check: "
                        "tmkt report --table runs.csv --docs README.md ...")
    rows = read_runs(Path(table))
    updates, stale, blocks = [], [], 0
    for path in map(Path, files):
        try:
            text = path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            raise TmktError(f"{path}: not found (a FILE of tmkt report --docs)") from None
        except (OSError, UnicodeDecodeError) as e:
            raise TmktError(f"{path}: cannot read it ({type(e).__name__})") from None
        blocks += len(find_blocks(text, str(path)))
        new, changed = refreshed(text, str(path), rows)
        stale += [f"{path}: {name}" for name in changed]
        if changed:
            updates.append((path, new))
    for line in stale:
        ui.print(f"{'stale' if check else 'rewritten'}: {line}")
    if not check:
        for path, new in updates:
            write_bytes(path, new.encode("utf-8"))
    ui.print(f"{len(stale)} of {blocks} generated blocks in {len(files)} files "
             f"{'stale' if check else 'rewritten'} against {table}")
    return stale

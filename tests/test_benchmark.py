"""tmkt_cli/results/benchmark.py: run folders -> runs.csv and curves.csv, the benchmark's tables and
figures from runs.csv (`tmkt report --table`), and the generated blocks of the docs
(`--docs`, `--check-docs`). Run folders and CSVs are small fakes written here, in the layout
and record format the engine writes (the grid itself takes hours)."""

from __future__ import annotations

import json
import math
import statistics
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from support.scripts import load_script
from typer.testing import CliRunner

from tmkt_cli.analysis import style
from tmkt_cli.cli import app
from tmkt_cli.results import benchmark, report

ROOT = Path(__file__).resolve().parents[1]
T_975_1, T_975_2, T_975_5 = 12.706205, 4.302653, 2.570582  # Student t quantiles, 1/2/5 df


# --------------------------------------------------------------------------------------------
# Fake run folders
# --------------------------------------------------------------------------------------------

def fake_run(root: Path, name: str, seed: int, final: dict, *, method: str = "event_only",
             stage: str = "train-tmkt", fraction: float = 0.01, heads: str = "separate",
             test_head: str = "event", variant: str = "", status: str = "complete",
             subset_draw: str | None = "nested", records: list[dict] = (),
             evals: list[dict] = ()) -> Path:
    """A training run folder as the engine leaves it: manifest.json, config.yaml and
    metrics.jsonl (``records`` first, then ``evals`` and the final eval record)."""
    folder = root / name / variant / f"seed{seed}" / stage
    folder.mkdir(parents=True)
    data = {"event_fraction": fraction, **({"subset_draw": subset_draw} if subset_draw else {})}
    recipe = {"name": name, "variant": variant, "seed": seed, "prepare": {"dataset": "digits"},
              "data": data, "model": {"heads": heads, "test_head": test_head},
              "method": {"name": method}, "train": {"batch_size": 64, "drop_last": True}}
    (folder / "config.yaml").write_text(yaml.safe_dump(recipe))
    manifest = {"tool": "tmkt", "schema": 1, "stage": stage, "status": status,
                "config_hash": f"{name}-{variant}-{seed}", "inputs": {},
                "stage_config": {k: v for k, v in recipe.items() if k != "name"},
                "outputs": {"metrics": {"path": "metrics.jsonl", "bytes": 1, "sha256": ""}},
                "output_hash": f"{folder}", "git_revision": "0123456789abcdef",
                "timings": {"seconds": 12.345},
                "metrics": {"steps": 600, "event_train_samples": 40, "test_acc": final["acc"]}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    lines = [*records, *({"kind": "eval", **e} for e in evals),
             {"kind": "eval", "step": 600, **final}]
    (folder / "metrics.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n{cut by a kill")
    return folder


@pytest.fixture()
def grid(tmp_path) -> Path:
    """A small grid under runs/: event_only, kt with two heads (each head form of the eval
    record), kt with shared heads, a teacher, and three folders that cannot be rows."""
    runs = tmp_path / "runs"
    fake_run(runs, "digits-event_only", 1, {"acc": 0.60, "val_acc": 0.61,
                                            "acc_static_head": 0.10},  # untrained: no head
             records=[{"kind": "grad_share", "step": 1, "share_event": 1.0}])
    fake_run(runs, "digits-kt", 1,
             {"acc": 0.62, "acc_static_head": 0.80, "val_acc": 0.55,
              "val_acc_static_head": 0.70},
             method="kt", records=[
                 {"kind": "train", "step": 10, "loss": 1.0, "acc": 0.5, "acc_static": 0.6,
                  "cka": 0.4},
                 {"kind": "grad_share", "step": 1, "share_event": 0.2, "share_static": 0.5,
                  "share_da": 0.3},
                 {"kind": "grad_share", "step": 51, "share_event": 0.4, "share_static": 0.4,
                  "share_da": 0.2},
                 {"kind": "train", "step": 20, "loss": 0.5, "cka": 0.9}],
             evals=[{"step": 300, "acc": 0.5, "acc_static_head": 0.6, "val_acc": 0.45,
                     "val_acc_static_head": 0.50}])
    # test_head: validation: both heads named, `acc` is the chosen one (the static head)
    fake_run(runs, "digits-kt", 2,
             {"acc": 0.84, "acc_event_head": 0.66, "acc_static_head": 0.84, "val_acc": 0.75,
              "val_acc_event_head": 0.70, "val_acc_static_head": 0.75},
             method="kt", test_head="validation", variant="test_head-validation")
    # test_head: static: `acc` is the static head, the event head named
    fake_run(runs, "digits-kt", 3, {"acc": 0.70, "acc_event_head": 0.72, "val_acc": 0.60,
                                    "val_acc_event_head": 0.65},
             method="kt", test_head="static", variant="test_head-static")
    fake_run(runs, "digits-kt", 1, {"acc": 0.75, "acc_static_head": 0.75, "val_acc": 0.7},
             method="kt", heads="shared", variant="heads-shared", subset_draw=None)
    fake_run(runs, "teacher", 1, {"acc": 0.96, "val_acc": 0.97}, stage="pretrain-ann")
    fake_run(runs, "digits-tmkt", 1, {"acc": 0.9}, method="tmkt", status="running")
    broken = fake_run(runs, "digits-tmkt", 2, {"acc": 0.9}, method="tmkt")
    (broken / "manifest.json").write_text("{not json")
    no_config = fake_run(runs, "digits-tmkt", 3, {"acc": 0.9}, method="tmkt")
    (no_config / "config.yaml").unlink()
    return runs


def test_one_row_per_finished_run_with_each_head_from_the_last_eval(grid):
    rows, curves, skipped = report.rows_from_run_folders([grid])
    assert list(rows[0])[:len(benchmark.COLUMNS)] == list(benchmark.COLUMNS)
    by_run = {r["run"]: r for r in rows}
    assert sorted(by_run) == [
        "digits-event_only/seed1/train-tmkt", "digits-kt/heads-shared/seed1/train-tmkt",
        "digits-kt/seed1/train-tmkt", "digits-kt/test_head-static/seed3/train-tmkt",
        "digits-kt/test_head-validation/seed2/train-tmkt", "teacher/seed1/pretrain-ann"]
    event_only = by_run["digits-event_only/seed1/train-tmkt"]
    assert {k: event_only[k] for k in ("setting", "dataset", "fraction", "subset_draw",
                                       "method", "heads", "variant", "seed", "steps",
                                       "event_train_samples")} == {
        "setting": "digits", "dataset": "digits", "fraction": "0.01", "subset_draw": "nested",
        "method": "event_only", "heads": "separate", "variant": "", "seed": "1",
        "steps": "600", "event_train_samples": "40"}
    # one head: the static layer it logs is no head of its
    assert (event_only["test_event"], event_only["test_static"], event_only["val_event"],
            event_only["chosen_head"], event_only["chosen_test"]) == (
        "60.00", "", "61.00", "event", "60.00")
    assert (event_only["wall_s"], event_only["revision"]) == ("12.3", "0123456")
    kt = by_run["digits-kt/seed1/train-tmkt"]
    assert [kt[k] for k in ("test_event", "test_static", "val_event", "val_static",
                            "test_head", "chosen_head", "chosen_test")] == [
        "62.00", "80.00", "55.00", "70.00", "event", "static", "80.00"]
    # the mean share over the run's grad_share records; CKA's first and last train records
    assert (kt["share_event"], kt["share_static"], kt["share_da"], kt.get("share_kd", "")) == (
        "0.3000", "0.4500", "0.2500", "")
    assert (kt["cka_first"], kt["cka_last"]) == ("0.4000", "0.9000")
    explicit = by_run["digits-kt/test_head-validation/seed2/train-tmkt"]
    assert [explicit[k] for k in ("test_event", "test_static", "val_event", "val_static",
                                  "test_head", "chosen_head", "chosen_test", "variant")] == [
        "66.00", "84.00", "70.00", "75.00", "validation", "static", "84.00",
        "test_head-validation"]
    static_form = by_run["digits-kt/test_head-static/seed3/train-tmkt"]
    # the rule, not the run's test_head: validation prefers the event head here
    assert [static_form[k] for k in ("test_event", "test_static", "chosen_head",
                                     "chosen_test")] == ["72.00", "70.00", "event", "72.00"]
    shared = by_run["digits-kt/heads-shared/seed1/train-tmkt"]
    assert (shared["test_event"], shared["test_static"], shared["chosen_test"],
            shared["subset_draw"]) == ("75.00", "", "75.00", "independent")  # older run
    teacher = by_run["teacher/seed1/pretrain-ann"]
    assert (teacher["method"], teacher["fraction"], teacher["test_static"],
            teacher["chosen_test"], teacher["setting"]) == ("teacher", "", "96.00", "96.00",
                                                            "teacher")
    reasons = " ".join(f"{folder}: {why}" for folder, why in skipped)
    assert "seed1/train-tmkt: train-tmkt run is running" in reasons
    assert "seed2/train-tmkt/manifest.json: manifest is not valid JSON" in reasons
    assert "seed3/train-tmkt/config.yaml: cannot read the run's config" in reasons
    kt_curves = [c for c in curves if c["run"] == "digits-kt/seed1/train-tmkt"]
    assert kt_curves[:4] == [
        {"run": "digits-kt/seed1/train-tmkt", "step": "10", "split": "train", "head": "event",
         "acc": "50.00"},
        {"run": "digits-kt/seed1/train-tmkt", "step": "10", "split": "train",
         "head": "static", "acc": "60.00"},
        {"run": "digits-kt/seed1/train-tmkt", "step": "300", "split": "val", "head": "event",
         "acc": "45.00"},
        {"run": "digits-kt/seed1/train-tmkt", "step": "300", "split": "val",
         "head": "static", "acc": "50.00"}]
    assert {(c["split"], c["head"], c["acc"]) for c in kt_curves if c["step"] == "600"} == {
        ("val", "event", "55.00"), ("val", "static", "70.00"), ("test", "event", "62.00"),
        ("test", "static", "80.00")}


def test_report_writes_the_csvs_and_a_damaged_folder_is_a_warning_line(grid, tmp_path):
    out = tmp_path / "report"
    res = CliRunner().invoke(app, ["report", str(grid), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output and "skipped" in res.output
    rows = benchmark.read_runs(out / "runs.csv")
    assert len(rows) == 6 and rows[0]["seed"] == 1 and isinstance(rows[0]["fraction"], float)
    header = (out / "runs.csv").read_text().splitlines()[0].split(",")
    assert header == [*benchmark.COLUMNS, *(f"share_{t}" for t in benchmark.SHARE_TERMS),
                      "cka_first", "cka_last"]
    assert (out / "curves.csv").read_text().startswith("run,step,split,head,acc\n")
    assert "[runs.csv](runs.csv)" in (out / "report.md").read_text()
    # the report's top-1 of a two-head run is the head the validation rule picks
    summary = json.loads((out / "summary.json").read_text())
    kt = next(r for g in summary["groups"] for r in g["runs"]
              if r["folder"].endswith("digits-kt/seed1/train-tmkt"))
    assert (kt["top1"], kt["chosen_head"]) == (pytest.approx(0.80), "static")
    group = next(g for g in summary["groups"]
                 if g["runs"][0]["folder"].endswith("digits-kt/seed1/train-tmkt"))
    assert group["event_head"]["mean"] == pytest.approx(0.62)
    assert group["static_head"]["mean"] == pytest.approx(0.80)
    # a second call writes the same bytes: the rows are sorted
    first = (out / "runs.csv").read_bytes()
    assert CliRunner().invoke(app, ["report", str(grid), "--out", str(out)]).exit_code == 0
    assert (out / "runs.csv").read_bytes() == first


def test_full_batch_cka_compares_batches_of_one_size():
    """100 samples in batches of 32: 4 batches an epoch, the 4th holding 4 samples. Linear CKA
    on 4 samples is biased upwards, so steps 4, 8, 12, ... are not compared with the rest."""
    train = [{"kind": "train", "step": s, "cka": 0.99 if s % 4 == 0 else 0.5}
             for s in range(1, 21)]
    kept = benchmark.full_batch_cka(train, 100, 32, False)
    assert [s for s, _ in kept] == [s for s in range(1, 21) if s % 4]
    assert {c for _, c in kept} == {0.5}
    assert len(benchmark.full_batch_cka(train, 100, 32, True)) == 20  # drop_last: all full
    assert len(benchmark.full_batch_cka(train, 97, 32, False)) == 20  # a batch of 1 is dropped
    assert len(benchmark.full_batch_cka(train, None, 32, False)) == 20  # unknown: all kept


def test_heads_of_each_run_layout():
    two = benchmark.head_figures("tmkt", "residual", "event",
                                 {"acc": 0.5, "acc_static_head": 0.6})
    assert two == {"test_event": 0.5, "test_static": 0.6, "val_event": None,
                   "val_static": None}
    assert benchmark.chosen_head("tmkt", "residual", two) == "event"  # no validation split
    one = benchmark.head_figures("tmkt", "shared", "event",
                                 {"acc": 0.7, "acc_static_head": 0.7, "val_acc": 0.6})
    assert one == {"test_event": 0.7, "test_static": None, "val_event": 0.6,
                   "val_static": None}
    # model.test_head: validation, as the engine logs it: `acc` is the head it chose (`head`)
    ruled = benchmark.head_figures("kt", "separate", "validation", {
        "acc": 0.76, "acc_event_head": 0.62, "head": "static", "val_acc": 0.81,
        "val_acc_event_head": 0.60})
    assert ruled == {"test_event": 0.62, "test_static": 0.76, "val_event": 0.60,
                     "val_static": 0.81}
    assert benchmark.chosen_head("kt", "separate", ruled) == "static"
    images = benchmark.head_figures("static_only", "separate", "static", {"acc": 0.9})
    assert images["test_static"] == 0.9 and images["test_event"] is None
    assert benchmark.variant_extra("event_fraction-0.02+equal_compute-true+heads-shared") \
        == "equal_compute-true"


# --------------------------------------------------------------------------------------------
# Tables from a fixture runs.csv
# --------------------------------------------------------------------------------------------

def row(setting: str, method: str, fraction: float | None, seed: int, chosen: float, *,
        heads: str = "separate", event: float | None = None, static: float | None = None,
        val_event: float | None = None, val_static: float | None = None, head: str = "event",
        variant: str = "", shares: dict | None = None, cka: tuple = ()) -> dict[str, str]:
    def pct(v):
        return "" if v is None else f"{v:.2f}"

    one_head = method not in benchmark.TWO_STREAM or heads == "shared"
    if one_head and method not in benchmark.IMAGE_ONLY and event is None:
        event = chosen
    if method in benchmark.IMAGE_ONLY:
        static, head = chosen, "static"
    return {"setting": setting, "dataset": "digits",
            "fraction": "" if fraction is None else f"{fraction:g}", "subset_draw": "nested",
            "method": method, "heads": heads, "variant": variant, "seed": str(seed),
            "steps": "600", "event_train_samples": "40", "test_event": pct(event),
            "test_static": pct(static), "val_event": pct(val_event),
            "val_static": pct(val_static), "test_head": "event", "chosen_head": head,
            "chosen_test": pct(chosen), "wall_s": "10.0", "revision": "0123456",
            "config_hash": "h", "run": f"{setting}-{method}/{heads}{variant}/{fraction}/{seed}",
            **{f"share_{k}": f"{v:.4f}" for k, v in (shares or {}).items()},
            **({"cka_first": f"{cka[0]:.4f}", "cka_last": f"{cka[1]:.4f}"} if cka else {})}


def fixture_rows() -> list[dict[str, str]]:
    rows = []
    for seed, (base, scarce_static) in enumerate([(60, 95), (61, 96), (64, 97)], start=1):
        rows.append(row("digits", "event_only", 0.01, seed, base))
        rows.append(row("digits", "static_only", 0.01, seed, scarce_static))
    # kt, two heads: validation picks static, static, event
    for seed, (ev, st, v_ev, v_st) in enumerate([(61, 64, 50, 55), (62, 66, 50, 55),
                                                 (70, 69, 60, 55)], start=1):
        head = "static" if v_st > v_ev else "event"
        rows.append(row("digits", "kt", 0.01, seed, st if head == "static" else ev,
                        event=ev, static=st, val_event=v_ev, val_static=v_st, head=head,
                        shares={"event": 0.1 * seed, "static": 0.5}, cka=(0.4 + seed / 10,
                                                                           0.9)))
    for seed, (shared_kt, shared_tmkt, tmkt_static) in enumerate(
            [(69, 70, 66), (72, 73, 67), (77, 78, 68)], start=1):
        rows.append(row("digits", "kt", 0.01, seed, shared_kt, heads="shared",
                        variant="heads-shared"))
        rows.append(row("digits", "tmkt", 0.01, seed, shared_tmkt, heads="shared",
                        variant="heads-shared"))
        rows.append(row("digits", "tmkt", 0.01, seed, tmkt_static, event=60,
                        static=tmkt_static, val_event=10, val_static=20, head="static"))
    for seed, value in ((1, 80), (2, 81)):  # 5%: event_only alone
        rows.append(row("digits", "event_only", 0.05, seed, value))
    for seed, value in ((1, 85), (2, 86)):  # 20%: tmkt shared skips 5%
        rows.append(row("digits", "event_only", 0.2, seed, value))
        rows.append(row("digits", "tmkt", 0.2, seed, value + 2, heads="shared",
                        variant="heads-shared"))
    for seed, value in ((1, 90), (2, 91)):
        rows.append(row("digits", "event_only", 1.0, seed, value))
    rows += [row("teacher", "teacher", None, 1, 96), row("teacher", "teacher", None, 2, 97)]
    rows += [row("control", "event_only", 0.001, 1, 50), row("control", "event_only", 0.001,
                                                             2, 52)]
    return rows


@pytest.fixture()
def table(tmp_path) -> Path:
    """runs.csv (and curves.csv) beside each other, as tmkt report writes them."""
    rows = fixture_rows()
    curves = [{"run": r["run"], "step": str(step), "split": split, "head": r["chosen_head"],
               "acc": f"{float(r['chosen_test']) - (600 - step) / 20:.2f}"}
              for r in rows for step in (200, 400, 600) for split in ("val", "test")]
    benchmark.write_run_tables(rows, curves, tmp_path / "bench")
    return tmp_path / "bench" / "runs.csv"


def interval(values: list[float], t: float) -> tuple[float, float, float]:
    """By hand: mean and its Student t interval."""
    mean = statistics.fmean(values)
    half = t * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def table_line(text: str, *first_cells: str) -> str:
    start = "| " + " | ".join(first_cells) + " |"
    found = [line for line in text.splitlines() if line.startswith(start)]
    assert len(found) == 1, (start, text)
    return found[0]


def test_accuracy_and_paired_cells(table):
    rows = benchmark.read_runs(table)
    accuracy = benchmark.render_table("digits/accuracy", rows)
    mean, low, high = interval([64, 66, 70], T_975_2)  # kt's chosen heads: static, static, event
    assert table_line(accuracy, "kt", "separate", "1%") == \
        f"| kt | separate | 1% | {mean:.2f} [{low:.2f}, {high:.2f}] (n=3) | 64.33 | 66.33 |"
    assert table_line(accuracy, "event_only", "one head", "5%") == \
        "| event_only | one head | 5% | 80.50 [74.15, 86.85] (n=2) | 80.50 | – |"
    assert 80.5 + T_975_1 * statistics.stdev([80, 81]) / math.sqrt(2) == pytest.approx(86.853,
                                                                                        abs=1e-3)
    paired = benchmark.render_table("digits/paired", rows)
    # kt minus event_only seed by seed: 64-60, 66-61, 70-64 = 4, 5, 6: mean 5, sd 1
    half = T_975_2 * 1 / math.sqrt(3)
    assert table_line(paired, "kt", "separate", "1%") == \
        f"| kt | separate | 1% | +5.00 [+{5 - half:.2f}, +{5 + half:.2f}] | ahead (n = 3) |"
    # tmkt separate minus event_only: 6, 6, 4: mean 5.33, sd 1.15: the interval excludes 0
    assert table_line(paired, "tmkt", "separate", "1%").endswith("| ahead (n = 3) |")
    assert "static_only" not in paired  # tested on images: not an event comparison
    assert "0.1%" not in paired and "control" not in paired


def test_tmkt_against_kt_per_layout_and_pooled(table):
    text = benchmark.render_table("digits/tmkt-vs-kt", benchmark.read_runs(table))
    # separate: 66-64, 67-66, 68-70 = 2, 1, -2; shared: 70-69, 73-72, 78-77 = 1, 1, 1
    mean, low, high = interval([2, 1, -2], T_975_2)
    assert table_line(text, "tmkt", "separate", "1%") == \
        f"| tmkt | separate | 1% | +{mean:.2f} [{low:.2f}, +{high:.2f}] | " \
        f"no difference detected (n = 3) |"
    assert table_line(text, "tmkt", "shared", "1%") == \
        "| tmkt | shared | 1% | +1.00 [+1.00, +1.00] | ahead (n = 3) |"
    assert "20%" not in text  # no kt at 20% to pair with
    assert "pooled" not in text  # each layout has one fraction with both: its row says it


def test_tmkt_against_kt_pooled_over_fractions_per_layout(tmp_path):
    rows = [row("digits", m, f, s, v + (1 if m == "tmkt" else 0) + s, heads="shared")
            for f, seeds in ((0.01, (1, 2, 3)), (0.05, (1, 2))) for s in seeds
            for m, v in (("kt", 70), ("tmkt", 70 + 2 * f * 100))]
    rows += [row("digits", "event_only", 0.01, 1, 60)]
    benchmark.write_run_tables(rows, [], tmp_path)
    text = benchmark.render_table("digits/tmkt-vs-kt", benchmark.read_runs(tmp_path / "runs.csv"))
    # tmkt minus kt: 1 + 2 = 3 at 1% (three seeds), 1 + 10 = 11 at 5% (two seeds); a seed is
    # one replicate: seeds 1 and 2 average 3 and 11 to 7, seed 3 has 3
    mean, low, high = interval([7, 7, 3], T_975_2)
    assert table_line(text, "tmkt, pooled") == \
        f"| tmkt, pooled | shared | every fraction above | +{mean:.2f} [{low:.2f}, " \
        f"+{high:.2f}] | no difference detected (n = 3) |"


def test_layouts_heads_and_headroom(table):
    rows = benchmark.read_runs(table)
    layouts = benchmark.render_table("digits/layouts", rows)
    # kt shared minus separate: 69-64, 72-66, 77-70 = 5, 6, 7
    half = T_975_2 / math.sqrt(3)
    assert table_line(layouts, "kt", "shared", "1%") == \
        f"| kt | shared | 1% | +6.00 [+{6 - half:.2f}, +{6 + half:.2f}] | ahead (n = 3) |"
    heads = benchmark.render_table("digits/heads", rows)
    # better on test over the seeds: static (66.33 > 64.33); chosen minus static: 0, 0, +1
    mean, low, high = interval([0, 0, 1], T_975_2)
    line = table_line(heads, "kt", "separate", "1%")
    assert "| static on 2 of 3 |" in line
    assert line.endswith(f"| +{mean:.2f} [{low:.2f}, +{high:.2f}] (static) |")
    assert "shared" not in heads  # one head: nothing to choose
    headroom = benchmark.render_table("digits/headroom", rows)
    # paired by seed: (a) 60, 61, 64; (b) static_only 95, 96, 97; (c) event_only at 100%:
    # 90, 91 (seeds 1 and 2) -> (b) - (a) = 35, 35, 33; (c) - (a) = 30, 30
    mean, low, high = interval([35, 35, 33], T_975_2)
    assert table_line(headroom, "1%").endswith(
        f"| +{mean:.2f} [+{low:.2f}, +{high:.2f}], ahead (n = 3) | "
        f"+30.00 [+30.00, +30.00], ahead (n = 2) |")
    # 5%: event_only 80, 81 (seeds 1, 2) -> (b) - (a) = 15, 15; (c) - (a) = 10, 10
    assert table_line(headroom, "5%").endswith(
        "| +15.00 [+15.00, +15.00], ahead (n = 2) | +10.00 [+10.00, +10.00], ahead (n = 2) |")
    assert "100%" not in headroom
    # the control has no static_only or 100% run of its own: the digits ones (same dataset);
    # (a) 50, 52 -> (b) - (a) = 45, 44; (c) - (a) = 40, 39
    control = benchmark.render_table("control/headroom", rows)
    mean, low, high = interval([45, 44], T_975_1)
    assert f"| +{mean:.2f} [+{low:.2f}, +{high:.2f}], ahead (n = 2) | " in \
        table_line(control, "0.1%")
    teachers = benchmark.render_table("teachers", rows)
    assert "| teacher | digits | 96.50 [" in teachers and "(n=2) |" in teachers
    shares = benchmark.render_table("digits/shares", rows)
    assert table_line(shares, "kt", "separate", "1%") == \
        "| kt | separate | 1% | 0.20 | 0.50 | 3 |"  # only the terms logged get columns
    cka = benchmark.render_table("digits/cka", rows)
    assert table_line(cka, "kt", "separate", "1%") == "| kt | separate | 1% | 0.600 | 0.900 | 3 |"


def test_a_bad_table_is_one_error_line(tmp_path):
    bad = tmp_path / "runs.csv"
    bad.write_text("setting,seed\ndigits,1\n")
    res = CliRunner().invoke(app, ["report", "--table", str(bad), "--out", str(tmp_path)])
    assert res.exit_code == 2 and "no column dataset" in res.output
    assert "Traceback" not in res.output
    rows = fixture_rows()
    rows[0]["chosen_test"] = "sixty"
    (tmp_path / "b").mkdir()
    benchmark.write_run_tables(rows, [], tmp_path / "b")
    res = CliRunner().invoke(app, ["report", "--table", str(tmp_path / "b" / "runs.csv")])
    assert res.exit_code == 2 and "line 2: column chosen_test: 'sixty' is not a number" in \
        res.output


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------

def png_width(path: Path) -> int:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">I", data[16:20])[0]


def lines_by_label(fig) -> dict[str, object]:
    legend = fig.legends[0]
    return {text.get_text(): handle for text, handle in
            zip(legend.get_texts(), legend.legend_handles, strict=True)}


def test_table_command_writes_tables_and_readable_figures(table, tmp_path):
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["report", "--table", str(table), "--out", str(out)])
    assert res.exit_code == 0, res.output
    text = (out / "tables.md").read_text()
    for name in benchmark.block_names(benchmark.read_runs(table)):
        assert f"(`{name}`)" in text
    assert "leaves out the settings run at a single fraction: control (0.1%)" in text
    for png in ("efficiency.png", "curves.png"):
        assert 900 <= png_width(out / png) <= 1100
    # the same table renders the same bytes
    before = (out / "tables.md").read_bytes()
    assert CliRunner().invoke(app, ["report", "--table", str(table), "--out",
                                    str(out)]).exit_code == 0
    assert (out / "tables.md").read_bytes() == before


def test_one_colour_per_method_n_in_legends_and_gaps_where_not_run(table):
    rows = benchmark.read_runs(table)
    efficiency, notes = benchmark.efficiency_figure(rows)
    curves = benchmark.curves_figure(rows, benchmark.read_curves(table.parent / "curves.csv"))
    kinds = set(style.curve_kinds())  # what thick, thin and the end point mean: no series
    for fig in (efficiency, curves):
        labels = {k: v for k, v in lines_by_label(fig).items() if k not in kinds}
        assert all(text.get_fontsize() >= 8 for text in fig.legends[0].get_texts())
        assert all("(n = " in label for label in labels)
        colours = {label.split(",")[0].split(" ")[0]: handle.get_color()
                   for label, handle in labels.items()}
        assert colours["kt"] == style.METHOD_COLOURS["kt"]
        assert colours["tmkt"] == style.METHOD_COLOURS["tmkt"]
        assert colours["event_only"] == style.METHOD_COLOURS["event_only"]
    assert "tmkt, shared heads (n = 2-3)" in lines_by_label(efficiency)  # 3 seeds at 1%, 2 at 20%
    assert "kt, separate heads (n = 3)" in lines_by_label(curves)
    # shared and separate heads of one method: one colour, two markers
    labels = lines_by_label(efficiency)
    assert labels["kt, shared heads (n = 3)"].get_marker() != \
        labels["kt, separate heads (n = 3)"].get_marker()
    # tmkt shared ran at 1% and 20%, not at 5%: no line is drawn across 5%
    ax = efficiency.axes[0]
    tmkt_shared = [line for line in ax.get_lines()
                   if line.get_color() == style.METHOD_COLOURS["tmkt"]
                   and line.get_linestyle() == "--"]
    assert len(tmkt_shared) == 1
    y = list(tmkt_shared[0].get_ydata())
    assert len(y) == 4 and math.isnan(y[1]) and not math.isnan(y[0]) and not math.isnan(y[2])
    assert notes == ["efficiency.png leaves out the settings run at a single fraction: "
                     "control (0.1%)"]


def test_a_single_fraction_draws_no_efficiency_figure(tmp_path):
    rows = [r for r in fixture_rows() if r["fraction"] in ("0.01", "")]
    benchmark.write_run_tables(rows, [], tmp_path / "one")
    out = tmp_path / "out"
    (out / "efficiency.png").parent.mkdir()
    (out / "efficiency.png").write_bytes(b"an earlier rendering")
    res = CliRunner().invoke(app, ["report", "--table", str(tmp_path / "one" / "runs.csv"),
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert not (out / "efficiency.png").exists()
    notes = [line for line in (out / "tables.md").read_text().splitlines()
             if "efficiency.png" in line]
    assert notes == ["- efficiency.png is not drawn: the runs are at a single fraction of the "
                     "event recordings: digits (1%)"]


# --------------------------------------------------------------------------------------------
# Generated blocks of the docs
# --------------------------------------------------------------------------------------------

DOC = """# Results

Prose before, kept byte for byte.\r
<!-- tmkt:begin digits/paired -->
| an old | table |
<!-- tmkt:end digits/paired -->
Between the blocks.
<!-- tmkt:begin teachers -->
<!-- tmkt:end teachers -->
After.
"""


def test_docs_blocks_are_rewritten_in_place_and_checked(table, tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_bytes(DOC.encode())
    check = ["report", "--table", str(table), "--check-docs", str(doc)]
    res = CliRunner().invoke(app, check)
    assert res.exit_code == 1, res.output
    assert f"stale: {doc}: digits/paired" in res.output and f"{doc}: teachers" in res.output
    assert doc.read_bytes() == DOC.encode()  # checking writes nothing
    res = CliRunner().invoke(app, ["report", "--table", str(table), "--docs", str(doc)])
    assert res.exit_code == 0, res.output
    rows = benchmark.read_runs(table)
    expected = DOC.replace("| an old | table |\n",
                           benchmark.render_table("digits/paired", rows) + "\n").replace(
        "<!-- tmkt:begin teachers -->\n",
        "<!-- tmkt:begin teachers -->\n" + benchmark.render_table("teachers", rows) + "\n")
    assert doc.read_bytes() == expected.encode()
    res = CliRunner().invoke(app, check)
    assert res.exit_code == 0 and "0 of 2 generated blocks" in res.output


@pytest.mark.parametrize(("block", "says"), [
    ("digits/nope", "unknown table 'digits/nope': expected SETTING/TABLE with TABLE one of"),
    ("glyphs/paired", "the runs have no setting 'glyphs' (settings: control, digits)"),
])
def test_an_unknown_block_is_one_error_line(table, tmp_path, block, says):
    doc = tmp_path / "doc.md"
    text = f"<!-- tmkt:begin teachers -->\n<!-- tmkt:end teachers -->\n" \
           f"<!-- tmkt:begin {block} -->\n<!-- tmkt:end {block} -->\n"
    doc.write_text(text)
    res = CliRunner().invoke(app, ["report", "--table", str(table), "--docs", str(doc)])
    assert res.exit_code == 2
    assert res.output.strip().count("\n") == 0 and says in res.output
    assert doc.read_text() == text  # nothing written, not even the good block
    doc.write_text("<!-- tmkt:begin teachers -->\n")
    res = CliRunner().invoke(app, ["report", "--table", str(table), "--check-docs", str(doc)])
    assert res.exit_code == 2 and "has no end marker" in res.output
    res = CliRunner().invoke(app, ["report", "--check-docs", str(doc)])
    assert res.exit_code == 2 and "need --table" in res.output


COMMITTED_TABLE = ROOT / "docs" / "benchmark" / "runs.csv"


@pytest.mark.skipif(not COMMITTED_TABLE.is_file(), reason="docs/benchmark/runs.csv not there yet")
def test_committed_docs_match_the_committed_table():
    """Every result the docs quote inside a generated block is what runs.csv renders now."""
    docs = [ROOT / "README.md", ROOT / "recipes" / "README.md", ROOT / "docs" / "methods.md"]
    res = CliRunner().invoke(app, ["report", "--table", str(COMMITTED_TABLE), "--check-docs",
                                   *map(str, docs)])
    assert res.exit_code == 0, res.output


def test_benchmark_imports_no_torch():
    code = "import sys, tmkt_cli.results.benchmark; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_make_tables_from_python(table, tmp_path):
    written = benchmark.make_tables(table, tmp_path / "t", Console(quiet=True))
    assert [p.name for p in written] == ["tables.md", "efficiency.png", "curves.png"]


# --------------------------------------------------------------------------------------------
# Scripts that read run folders themselves (moved here with the benchmark tables' tests)
# --------------------------------------------------------------------------------------------

def test_fidelity_table(tmp_path):
    ft = load_script("fidelity_table")
    for variant, seed, acc, status in (("default", 1, 0.80, "complete"),
                                       ("default", 2, 0.82, "complete"),
                                       ("norm", 1, 0.85, "complete"),
                                       ("norm", 2, 0.99, "running")):
        folder = tmp_path / f"kt-{variant}" / f"seed{seed}" / "train-tmkt"
        folder.mkdir(parents=True)
        (folder / "manifest.json").write_text(json.dumps(
            {"status": status, "metrics": {"test_acc": acc}}))
    found = ft.results(tmp_path)
    assert found == {"default": {1: pytest.approx(80.0), 2: pytest.approx(82.0)},
                     "norm": {1: pytest.approx(85.0)}}  # the unfinished run is left out
    lines = ft.table(found).splitlines()
    assert lines[2] == "| default | 1, 2 | 80.00, 82.00 | 81.00 ± 1.41 | - |"
    # paired by seed: only seed 1 has both, so one difference and no interval
    assert lines[3] == "| norm | 1 | 85.00 | 85.00 | +5.00, n = 1: no interval |"
    found["bins"] = {1: 81.0, 2: 84.0}  # +1 and +2: mean 1.5, sd 0.71, t(1) 12.71
    assert ft.table(found).splitlines()[3] == \
        "| bins | 1, 2 | 81.00, 84.00 | 82.50 ± 2.12 | +1.50 [-4.85, +7.85], not detected (n = 2) |"


def test_findings_and_bootstrap_blocks(tmp_path):
    """findings: the comparisons in words that follow their intervals; bootstrap: the same
    comparisons over test recordings, from the predictions beside runs.csv."""
    from tmkt_cli.results import predictions

    rows = []
    for seed in (1, 2, 3):
        rows.append(row("control", "event_only", 0.001, seed, 50 + seed))
        rows.append(row("control", "kt", 0.001, seed, 70 + seed, heads="shared"))
        rows.append(row("control", "kt", 0.001, seed, 60 + 2 * seed, event=55,
                        static=60 + 2 * seed, val_event=1, val_static=2, head="static"))
    benchmark.write_run_tables(rows, [], tmp_path)
    loaded = benchmark.read_runs(tmp_path / "runs.csv")
    text = benchmark.render_table("control/findings", loaded)
    assert text.startswith("- **0.1% of the event recordings.** Over 3 seeds")
    assert "One shared head against two: kt +" in text and "ahead (n = 3)" in text
    assert benchmark.render_table("control/bootstrap", loaded).startswith("(no per-recording")
    # predictions: 4 test recordings from 2 source images; event_only right on the first two,
    # kt (either layout) on all four
    labels, groups = [0, 1, 1, 0], [0, 0, 1, 1]
    lines = ["run,head,pred"]
    for r in rows:
        good = r["method"] == "kt"
        lines.append(f"{r['run']},{r['chosen_head']},0 1 {'1 0' if good else '0 1'}")
    import gzip
    (tmp_path / predictions.PREDICTIONS_GZ).write_bytes(gzip.compress(
        ("\n".join(lines) + "\n").encode()))
    (tmp_path / predictions.TEST_RECORDINGS).write_text(
        "dataset,index,label,image_index\n" + "".join(
            f"digits,{i},{y},{g}\n" for i, (y, g) in enumerate(zip(labels, groups,
                                                                   strict=True))))
    boot = benchmark.render_table("control/bootstrap", benchmark.read_runs(tmp_path / "runs.csv"))
    # per source image, kt minus event_only is 0 (image 0) and +100 (image 1): resampling two
    # images gives 0, 50 or 100 with chances 1/4, 1/2, 1/4, so the interval spans 0
    assert table_line(boot, "kt, shared heads, minus event_only") == \
        "| kt, shared heads, minus event_only | 0.1% | 3 | +50.00 [+0.00, +100.00] | 2 | " \
        "no difference detected (2 images) |"
    same = table_line(boot, "kt: shared minus separate heads")  # both right everywhere
    assert same.split(" | ")[3] == "+0.00 [+0.00, +0.00]"

"""scripts/benchmark_tables.py: the benchmark's tables from run folders (fake ones here, in the
layout and record format the engine writes; the grid itself takes hours)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from support.scripts import load_script


@pytest.fixture(scope="module")
def bt():
    return load_script("benchmark_tables")


def fake_run(root: Path, method: str, fraction: float, seed: int, final: dict, *,
             heads: str = "separate", stage: str = "train-tmkt", status: str = "complete",
             shares: list[dict] = (), cka: list[float] = ()) -> Path:
    folder = root / f"x-{method}" / f"f{fraction}-{heads}" / f"seed{seed}" / stage
    folder.mkdir(parents=True)
    cfg = {"seed": seed, "data": {"event_fraction": fraction},
           "model": {"heads": heads, "test_head": "event"}, "method": {"name": method}}
    (folder / "manifest.json").write_text(json.dumps({"status": status, "stage_config": cfg,
                                                      "metrics": {}}))
    records = [{"kind": "train", "step": 10 * (i + 1), "loss": 1.0, "cka": c}
               for i, c in enumerate(cka)]
    records += [{"kind": "grad_share", "step": 50 * i + 1, **s} for i, s in enumerate(shares)]
    records += [{"kind": "eval", "step": 50, **{k: v / 2 for k, v in final.items()}},
                {"kind": "eval", "step": 100, **final}]
    (folder / "metrics.jsonl").write_text("\n".join(map(json.dumps, records)) + "\n{cut")
    return folder


def test_tables_from_run_folders(bt, tmp_path):
    fake_run(tmp_path, "event_only", 0.01, 1, {"acc": 0.60, "val_acc": 0.61},
             shares=[{"share_event": 1.0}])
    fake_run(tmp_path, "event_only", 0.01, 2, {"acc": 0.64, "val_acc": 0.65},
             shares=[{"share_event": 1.0}])
    for seed, (event, static) in enumerate([(0.62, 0.80), (0.66, 0.84)], start=1):
        fake_run(tmp_path, "kt", 0.01, seed,
                 {"acc": event, "acc_static_head": static, "val_acc": event - 0.01,
                  "val_acc_static_head": static - 0.01},
                 shares=[{"share_event": 0.2, "share_static": 0.5, "share_da": 0.3},
                         {"share_event": 0.4, "share_static": 0.4, "share_da": 0.2}],
                 cka=[0.2, 0.5, 0.6])
    fake_run(tmp_path, "kt", 0.01, 3, {"acc": 0.99}, status="running")  # not counted
    runs = bt.collect([tmp_path])
    assert len(runs) == 4
    table = bt.accuracy_table(runs).splitlines()
    assert table[0] == "| method | 1% |"
    assert table[2] == "| event_only | 62.00 ± 2.83 (n=2) |"
    assert table[3] == "| kt | 64.00 ± 2.83 (n=2) |"
    paired = bt.paired_table(runs).splitlines()
    assert paired[2] == "| kt | +2.00 ± 0.00 (n=2) |"  # 62-60 and 66-64, seed by seed
    assert bt.tmkt_vs_kt_table(runs).startswith("(no tmkt")  # nothing to compare with
    heads = bt.heads_table(runs)
    # validation prefers the static head for kt: its test top-1 is reported, chosen on val
    assert "| kt | 1% | 64.00 ± 2.83 (n=2) | 82.00 ± 2.83 (n=2) | static | 82.00 ± 2.83 (n=2) " \
        "| static on 2 of 2 | 82.00 ± 2.83 (n=2) |" in heads
    assert "| event_only | 1% | 62.00 ± 2.83 (n=2) | – | event | 62.00 ± 2.83 (n=2) | event " \
        "| 62.00 ± 2.83 (n=2) |" in heads
    room = bt.headroom_table(runs + [
        {"method": "static_only", "fraction": 0.01, "final": {"acc": 0.90}},
        {"method": "event_only", "fraction": 1.0, "final": {"acc": 0.80}}])
    assert "| 1% | 62.00 ± 2.83 (n=2) | 90.00 ± 0.00 (n=1) | 80.00 ± 0.00 (n=1) | +28.0 | " \
        "+18.0 |" in room
    shares = bt.shares_table(runs)
    assert "| kt | 1% | 0.20 / 0.30 | 0.50 / 0.45 | 0.30 / 0.25 | – | – | – |" in shares
    assert "| event_only | 1% | 1.00 / 1.00 | – |" in shares
    assert "| kt | 1% | 0.200 | 0.433 | – |" in bt.cka_table(runs)


def test_each_run_may_choose_another_head_than_the_seeds_mean(bt, tmp_path):
    # seed 1's validation prefers the event head, seed 2's the static one; over both seeds
    # the event head is ahead on validation (0.60 against 0.59), so the two choices differ
    for seed, (event, static, val_event, val_static) in enumerate(
            [(0.70, 0.65, 0.70, 0.60), (0.55, 0.60, 0.50, 0.58)], start=1):
        fake_run(tmp_path, "tmkt", 0.05, seed,
                 {"acc": event, "acc_static_head": static, "val_acc": val_event,
                  "val_acc_static_head": val_static})
    fake_run(tmp_path, "tmkt", 0.2, 1, {"acc": 0.8, "acc_static_head": 0.7, "val_acc": 0.5,
                                        "val_acc_static_head": 0.5})  # a tie keeps the event head
    heads = bt.heads_table(bt.collect([tmp_path]))
    assert "| tmkt | 5% | 62.50 ± 10.61 (n=2) | 62.50 ± 3.54 (n=2) | event | " \
        "62.50 ± 10.61 (n=2) | static on 1 of 2 | 65.00 ± 7.07 (n=2) |" in heads
    assert "| tmkt | 20% | 80.00 ± 0.00 (n=1) | 70.00 ± 0.00 (n=1) | event | " \
        "80.00 ± 0.00 (n=1) | event | 80.00 ± 0.00 (n=1) |" in heads


def test_static_only_counts_once_per_seed_and_full_data_is_no_headroom_row(bt, tmp_path):
    for fraction in (0.05, 1.0):  # the same computation: the fraction plays no part
        fake_run(tmp_path, "static_only", fraction, 1, {"acc": 0.9})
        fake_run(tmp_path, "event_only", fraction, 1, {"acc": fraction})
    runs = bt.collect([tmp_path])
    assert [r["method"] for r in runs].count("static_only") == 1
    rows = bt.headroom_table(runs).splitlines()[2:]
    assert len(rows) == 1 and rows[0].startswith("| 5% | 5.00")


def test_labels_name_the_variant(bt):
    assert bt.label("train-tmkt", {"method": {"name": "event_only", "equal_compute": True}}) \
        == "event_only (equal compute)"
    assert bt.label("train-tmkt", {"method": {"name": "tmkt"},
                                   "model": {"heads": "shared"}}) == "tmkt, heads shared"
    assert bt.label("distill", {"method": {"name": "tmkt"}}) == "ckd"


def test_script_writes_tables_and_curves(bt, tmp_path, monkeypatch):
    fake_run(tmp_path / "runs", "event_only", 0.05, 1, {"acc": 0.5, "val_acc": 0.5})
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["benchmark_tables.py", str(tmp_path / "runs"),
                                      "--out", str(out)])
    assert bt.main() == 0
    assert (out / "curves.png").stat().st_size > 0
    assert not (out / "efficiency.png").exists()  # one fraction: nothing to draw against
    fake_run(tmp_path / "runs", "event_only", 1.0, 1, {"acc": 0.7, "val_acc": 0.7})
    assert bt.main() == 0
    assert (out / "efficiency.png").stat().st_size > 0
    assert "| event_only | 50.00 ± 0.00 (n=1) |" in (out / "tables.md").read_text()
    monkeypatch.setattr(sys, "argv", ["benchmark_tables.py", str(tmp_path / "empty"),
                                      "--out", str(out)])
    assert bt.main() == 2


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
    assert lines[3] == "| norm | 1 | 85.00 | 85.00 | +4.00 |"


def test_demo_summary_sentence_matches_its_table(tmp_path):
    ds = load_script("demo_summary")

    def run(method, final, stage="train-tmkt"):
        folder = tmp_path / f"control-{method}" / "seed42" / stage
        folder.mkdir(parents=True)
        (folder / "manifest.json").write_text(json.dumps({"status": "complete"}))
        (folder / "metrics.jsonl").write_text(json.dumps({"kind": "eval", **final}) + "\n")

    run("event_only", {"acc": 0.55, "acc_static_head": 0.10})  # untrained head: not shown
    run("kt", {"acc": 0.56, "acc_static_head": 0.80})
    run("ckd", {"acc": 0.60, "acc_static_head": 0.70}, stage="distill")
    found = ds.rows(tmp_path, "control", 42)
    table = ds.table(found)
    assert "| event_only | 55.00 | – |" in table and "| ckd | 60.00 | 70.00 |" in table
    text = ds.sentence(found, "the control")
    assert "event_only reaches 55.0%" in text
    assert "the best method, ckd, beats event_only by 5.0 points" in text
    assert "kt's static head reads the same events at 80.0%, 20.0 points above" in text
    found["ckd"]["event"] = 56.0  # within the noise: neither a gain nor a loss
    assert "no transfer method moves the event head by 2 points" in ds.sentence(found, "x")
    assert ds.sentence({}, "x").startswith("event_only has not finished")


def test_cka_is_compared_on_batches_of_one_size(bt):
    """100 samples in batches of 32: 4 batches an epoch, the 4th holding 4 samples. Linear CKA
    on 4 samples is biased upwards, so steps 4, 8, 12, ... are not compared with the rest."""
    train = [{"kind": "train", "step": s, "cka": 0.99 if s % 4 == 0 else 0.5}
             for s in range(1, 21)]
    kept = bt.full_batch_cka(train, 100, {"batch_size": 32})
    assert [r["step"] for r in kept] == [s for s in range(1, 21) if s % 4]
    assert {r["cka"] for r in kept} == {0.5} and {r["batch"] for r in kept} == {32}
    # drop_last: 3 full batches an epoch, nothing left out
    assert len(bt.full_batch_cka(train, 100, {"batch_size": 32, "drop_last": True})) == 20
    # a last batch of one sample is always dropped (96 + 1): 3 batches an epoch, all full
    assert len(bt.full_batch_cka(train, 97, {"batch_size": 32})) == 20
    # fewer samples than a batch: every batch is the whole subset
    assert {r["batch"] for r in bt.full_batch_cka(train, 10, {"batch_size": 32})} == {10}
    assert len(bt.full_batch_cka(train, None, {"batch_size": 32})) == 20
    # logged every 10 steps with 2 batches an epoch (78 = 64 + 14): every record falls on the
    # small batch; they are kept (comparable with each other) and say their size
    every_10 = [{"kind": "train", "step": s, "cka": 0.9} for s in range(10, 101, 10)]
    kept = bt.full_batch_cka(every_10, 78, {"batch_size": 64})
    assert len(kept) == 10 and {r["batch"] for r in kept} == {14}


def test_efficiency_series_are_per_method_over_fractions_and_paired_by_seed(bt, tmp_path):
    for seed, (base, kt) in enumerate([(0.50, 0.55), (0.60, 0.61)], start=1):
        fake_run(tmp_path, "event_only", 0.05, seed, {"acc": base})
        fake_run(tmp_path, "kt", 0.05, seed, {"acc": kt})
    fake_run(tmp_path, "event_only", 1.0, 1, {"acc": 0.9})
    fake_run(tmp_path, "kt", 1.0, 2, {"acc": 0.8})  # no event_only on seed 2 at 100%
    fake_run(tmp_path, "static_only", 0.05, 1, {"acc": 0.95})
    runs = bt.collect([tmp_path])
    absolute = bt.efficiency_series(runs)
    assert list(absolute) == ["event_only", "kt"]  # static_only is a line, not a series
    assert absolute["event_only"] == [(0.05, pytest.approx(55.0), pytest.approx(7.0711, abs=1e-4),
                                       2), (1.0, pytest.approx(90.0), 0.0, 1)]
    paired = bt.efficiency_series(runs, paired=True)
    assert list(paired) == ["kt"]
    # +5 and +1 on the same recordings; at 100% nothing to pair with, so no point
    assert paired["kt"] == [(0.05, pytest.approx(3.0), pytest.approx(2.8284, abs=1e-4), 2)]


def test_tmkt_is_compared_with_kt_of_the_same_heads_on_the_same_seed(bt, tmp_path):
    for seed, (kt, tmkt, kt_shared, tmkt_shared) in enumerate(
            [(0.60, 0.62, 0.70, 0.75), (0.70, 0.71, 0.80, 0.83)], start=1):
        fake_run(tmp_path, "kt", 0.01, seed, {"acc": kt})
        fake_run(tmp_path, "tmkt", 0.01, seed, {"acc": tmkt})
        fake_run(tmp_path, "kt", 0.01, seed, {"acc": kt_shared}, heads="shared")
        fake_run(tmp_path, "tmkt", 0.01, seed, {"acc": tmkt_shared}, heads="shared")
    fake_run(tmp_path, "tmkt", 0.01, 1, {"acc": 0.9}, heads="residual")  # no kt to pair with
    lines = bt.tmkt_vs_kt_table(bt.collect([tmp_path])).splitlines()
    assert lines[2:] == ["| heads separate | +1.50 ± 0.71 (n=2) |",
                         "| heads shared | +4.00 ± 1.41 (n=2) |"]

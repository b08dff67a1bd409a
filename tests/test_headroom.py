"""scripts/headroom.py: its table from run folders (fake ones here: the measure itself runs the
real CLI and takes minutes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.scripts import load_script


@pytest.fixture(scope="module")
def headroom():
    return load_script("headroom")


def fake_eval(path: Path, top1: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"top1": top1, "top5": 1.0}))


def fake_static_only(path: Path, test_acc: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"status": "complete", "metrics": {"test_acc": test_acc}}))


def test_table_from_run_folders(headroom, tmp_path):
    fake_eval(headroom.teacher_eval(tmp_path, 42), 0.961)
    fake_static_only(headroom.static_only_eval(tmp_path, 42), 0.945)
    fake_eval(headroom.event_only_eval(tmp_path, 1.0, 42), 0.910)
    fake_eval(headroom.event_only_eval(tmp_path, 0.01, 42), 0.837)
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "event_only-f0010.log").write_text(
        "$ tmkt train-tmkt ...\ntrain-tmkt: method event_only, 40/4314 event training "
        "recordings (1%), 1077 test, 10 classes, T=8, 32x32\n")
    rows = headroom.headroom_rows(tmp_path, [0.01, 0.05], 42)
    assert rows[0]["event_only"] == pytest.approx(83.7)
    assert rows[0]["images_gap"] == pytest.approx(94.5 - 83.7)  # the SNN on images, not the ANN
    assert rows[0]["events_gap"] == pytest.approx(91.0 - 83.7)
    assert rows[1]["event_only"] is None and rows[1]["images_gap"] is None  # not run yet
    counts = {0.01: headroom.train_recordings(tmp_path, 0.01)}
    assert counts[0.01] == 40 and headroom.train_recordings(tmp_path, 0.05) is None
    table = headroom.markdown_table(rows, counts).splitlines()
    assert table[0].startswith("| event recordings | (a) event_only on events | (b) the SNN on")
    assert table[2] == "| 1% (40) | 83.7 | 94.5 | 96.1 | 91.0 | +10.8 | +7.3 |"
    assert table[3] == "| 5% | – | 94.5 | 96.1 | 91.0 | – | – |"


def test_other_seed_and_damaged_eval_read_as_missing(headroom, tmp_path):
    fake_eval(headroom.event_only_eval(tmp_path, 0.02, 42), 0.5)
    broken = headroom.event_only_eval(tmp_path, 0.02, 7)
    broken.parent.mkdir(parents=True)
    broken.write_text("{not json")
    assert headroom.headroom_rows(tmp_path, [0.02], 7)[0]["event_only"] is None
    assert headroom.headroom_rows(tmp_path, [0.02], 42)[0]["event_only"] == pytest.approx(50.0)
    assert headroom.fraction_tag(0.001) == "f0001" and headroom.fraction_tag(1.0) == "f1000"

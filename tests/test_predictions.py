"""Per-recording predictions gathered beside runs.csv, and the bootstrap over source images
(tmkt_cli/results/predictions.py)."""

import numpy as np
import pytest

from tmkt_cli.errors import TmktError
from tmkt_cli.results import predictions


def eval_folder(base, run, pred_event, pred_static=None, labels=(0, 1, 1, 0),
                groups=(0, 0, 1, 1)):
    folder = base / run
    folder.mkdir(parents=True)
    eval_dir = folder.parent / ("eval-distill" if folder.name == "distill" else "eval")
    eval_dir.mkdir()
    heads = ["event"] + (["static"] if pred_static is not None else [])
    lines = ["index,label,image_index," + ",".join(f"pred_{h}" for h in heads)]
    for i, (y, g) in enumerate(zip(labels, groups, strict=True)):
        cells = [pred_event[i]] + ([pred_static[i]] if pred_static is not None else [])
        lines.append(",".join(map(str, (i, y, g, *cells))))
    (eval_dir / "predictions.csv").write_text("\n".join(lines) + "\n")
    return folder


def row(run, seed, method="kt", head="event", dataset="digits"):
    return {"run": run, "seed": seed, "method": method, "chosen_head": head, "dataset": dataset}


def test_gathered_predictions_round_trip_byte_stable(tmp_path):
    eval_folder(tmp_path, "a/seed1/train-tmkt", (0, 1, 0, 0), (0, 1, 1, 0))
    eval_folder(tmp_path, "b/seed1/train-tmkt", (1, 1, 1, 1))
    eval_folder(tmp_path, "s/seed1/distill", (0, 0, 0, 0))  # a CKD student: eval-distill/
    rows = [row("a/seed1/train-tmkt", 1), row("b/seed1/train-tmkt", 1, "event_only"),
            row("s/seed1/distill", 1, "ckd"),
            row("c/seed1/train-tmkt", 1)]  # not evaluated: left out
    out = tmp_path / "out"
    out.mkdir()
    written = predictions.write_predictions(rows, tmp_path, out)
    assert [p.name for p in written] == ["predictions.csv.gz", "test_recordings.csv"]
    first = (out / "predictions.csv.gz").read_bytes()
    predictions.write_predictions(rows, tmp_path, out)
    assert (out / "predictions.csv.gz").read_bytes() == first  # no timestamp inside
    preds, tests = predictions.read_predictions(out)
    assert set(preds) == {("a/seed1/train-tmkt", "event"), ("a/seed1/train-tmkt", "static"),
                          ("b/seed1/train-tmkt", "event"), ("s/seed1/distill", "event")}
    np.testing.assert_array_equal(preds[("a/seed1/train-tmkt", "static")], [0, 1, 1, 0])
    np.testing.assert_array_equal(tests["digits"][0], [0, 1, 1, 0])
    np.testing.assert_array_equal(tests["digits"][1], [0, 0, 1, 1])
    assert predictions.write_predictions([rows[3]], tmp_path, tmp_path / "none") == []
    assert predictions.read_predictions(tmp_path / "none") is None
    (out / "predictions.csv.gz").write_bytes(b"not gzip")
    with pytest.raises(TmktError, match="not a gzip file"):
        predictions.read_predictions(out)


def test_the_bootstrap_reads_each_runs_chosen_head_over_paired_seeds():
    labels, groups = np.array([0, 1, 1, 0]), np.array([0, 0, 1, 1])
    preds = {("a1", "static"): np.array([0, 1, 1, 0]),  # all right
             ("a1", "event"): np.array([1, 0, 0, 1]),   # all wrong: not the chosen head
             ("a2", "static"): np.array([0, 1, 0, 0]),
             ("b1", "event"): np.array([0, 0, 0, 0]),
             ("b2", "event"): np.array([0, 0, 0, 0]),
             ("b3", "event"): np.array([0, 1, 1, 0])}
    a = {1: {"run": "a1", "chosen_head": "static"}, 2: {"run": "a2", "chosen_head": "static"}}
    b = {1: {"run": "b1", "chosen_head": "event"}, 2: {"run": "b2", "chosen_head": "event"},
         3: {"run": "b3", "chosen_head": "event"}}
    iv, seeds = predictions.bootstrap_difference(a, b, preds, (labels, groups))
    assert seeds == 2  # seed 3 has no partner
    # a's seed-mean hits: 1, 1, 0.5, 1 (mean 0.875); b's: 1, 0, 0, 1 (mean 0.5)
    assert iv.mean == pytest.approx(37.5) and iv.n == 2
    assert iv.low <= iv.mean <= iv.high
    missing = {1: {"run": "zz", "chosen_head": "event"}}
    assert predictions.bootstrap_difference(missing, b, preds, (labels, groups)) is None

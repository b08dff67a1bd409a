"""The validation split (``data.val_fraction``) and how each reported checkpoint was chosen."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_eval import make_prepared_dataset, toy_recipe_file
from typer.testing import CliRunner

from tmkt_cli.artifacts import read_manifest
from tmkt_cli.cli import app
from tmkt_cli.data.loaders import validation_split

runner = CliRunner()


def test_validation_split_keeps_each_images_recordings_together():
    labels = np.repeat(np.arange(3), 12)            # 3 classes x 12 recordings
    groups = np.arange(36) // 3                      # 3 recordings per source image
    groups[30:] = -1                                 # some recordings without an image
    train, val = validation_split(labels, groups, 0.25, seed=5)
    assert np.intersect1d(train, val).size == 0
    assert np.union1d(train, val).tolist() == list(range(36))
    for g in np.unique(groups[groups >= 0]):  # no image on both sides
        members = np.flatnonzero(groups == g)
        assert np.isin(members, val).all() or not np.isin(members, val).any()
    for c in range(3):  # per class: round(0.25 x 4 groups) = 1 group (or 2 lone recordings)
        assert 1 <= np.isin(np.flatnonzero(labels == c), val).sum() <= 3
    again = validation_split(labels, groups, 0.25, seed=5)
    assert np.array_equal(again[1], val)  # a pure function of the seed
    assert not np.array_equal(validation_split(labels, groups, 0.25, seed=6)[1], val)
    assert validation_split(labels, groups, 0.0, seed=5)[1].size == 0


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("world")
    make_prepared_dataset(tmp / "prepared", n_train=16, n_test=6)
    return tmp


STEPS = ["--set", "train.epochs=0", "--set", "train.max_steps=4", "--set",
         "train.batch_size=4", "--set", "train.warmup_steps=1", "--set", "train.device=cpu",
         "--set", "train.eval_every_steps=2", "--set", "method.name=event_only"]


def test_best_is_chosen_on_validation_and_each_figure_is_labelled(world):
    recipe = toy_recipe_file(world, "toy-val")
    res = runner.invoke(app, ["train-tmkt", str(recipe), "--set", "data.val_fraction=0.25",
                              *STEPS])
    assert res.exit_code == 0, res.output
    folder = world / "runs" / "toy-val" / "seed42" / "train-tmkt"
    m = read_manifest(folder)["metrics"]
    assert m["best_chosen_on"] == "validation" and m["val_samples"] == 4
    assert m["event_train_samples"] == 12  # the held-out recordings are not trained on
    assert m["best_val_acc"] is not None and m["best_test_acc"] is not None
    assert (folder / "best.pt").is_file() and (folder / "best_test.pt").is_file()
    chosen = {}
    for which in ("last", "best", "best_test"):
        res = runner.invoke(app, ["eval", str(recipe), "--set", f"eval.checkpoint={which}"])
        assert res.exit_code == 0, res.output
        name = "eval" if which == "last" else f"eval-{which.replace('_', '-')}"
        report = json.loads((folder.parent / name / "eval.json").read_text())
        chosen[which] = report["source"]["chosen"]
    assert chosen == {"last": "last", "best": "best on validation",
                      "best_test": "best on test (optimistic)"}
    # the report prints all three, and its eval columns stay those of the last checkpoint
    from rich.console import Console

    from tmkt_cli import report
    out = world / "report"
    report.make_report([world / "runs" / "toy-val"], out, Console(width=250))
    summary = json.loads((out / "summary.json").read_text())
    (group,) = summary["groups"]
    (run,) = group["runs"]
    assert run["top1"] == m["test_acc"] and run["best_val"] == m["best_acc"]
    assert run["best_test"] == m["best_test_acc"]
    last_eval = json.loads((folder.parent / "eval" / "eval.json").read_text())
    assert run["top5"] == last_eval["top5"]


def test_without_validation_best_is_the_best_on_test(world):
    recipe = toy_recipe_file(world, "toy-noval")
    res = runner.invoke(app, ["train-tmkt", str(recipe), *STEPS])
    assert res.exit_code == 0, res.output
    folder = world / "runs" / "toy-noval" / "seed42" / "train-tmkt"
    m = read_manifest(folder)["metrics"]
    assert m["best_chosen_on"] == "test" and m["best_test_acc"] == m["best_acc"]
    assert not (folder / "best_test.pt").exists()
    res = runner.invoke(app, ["eval", str(recipe), "--set", "eval.checkpoint=best"])
    assert res.exit_code == 0, res.output
    report = json.loads((folder.parent / "eval-best" / "eval.json").read_text())
    assert report["source"]["chosen"] == "best on test (optimistic)"

"""The validation split (``data.val_fraction``) and how each reported checkpoint was chosen."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_eval import make_prepared_dataset, toy_recipe_file
from typer.testing import CliRunner

from tmkt_cli.cli import app
from tmkt_cli.data.loaders import held_out_images, validation_split
from tmkt_cli.runs.artifacts import read_manifest

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

    from tmkt_cli.results import report
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


def test_held_out_images_are_the_sources_of_the_held_out_recordings():
    image_index = np.array([4, 4, 0, 1, -1, 2, 3, 3])
    assert held_out_images(image_index, np.array([0, 4, 6])).tolist() == [3, 4]
    assert held_out_images(image_index, np.array([], dtype=np.int64)).size == 0


def _held_out(recipe_path, *overrides):
    from tmkt_cli.config import load_recipe
    from tmkt_cli.data.store import open_dataset
    from tmkt_cli.stages.shared import validation_split_of

    recipe = load_recipe(recipe_path, list(overrides))
    with open_dataset(recipe.dataset_dir() / "dataset.h5") as info:
        return validation_split_of(recipe, info)


def test_no_stream_trains_on_the_held_out_recordings_images(world, monkeypatch):
    """With a validation split, the static stream (pairing by class draws any training image
    of the class) never draws the source image of a held-out recording: otherwise the static
    head would have seen the validation recordings' own pictures."""
    from tmkt_cli.data import loaders

    recipe = toy_recipe_file(world, "toy-val-kt")
    split = _held_out(recipe, "data.val_fraction=0.25")
    assert split.images.size == 4 and split.recordings.size == 4
    drawn = []
    getitem = loaders.EventDataset.__getitem__

    def spy(self, key):
        item = getitem(self, key)
        if "static_index" in item:
            drawn.append(item["static_index"])
        return item

    monkeypatch.setattr(loaders.EventDataset, "__getitem__", spy)
    res = runner.invoke(app, ["train-tmkt", str(recipe), "--set", "data.val_fraction=0.25",
                              *STEPS, "--set", "method.name=kt", "--set", "train.max_steps=8"])
    assert res.exit_code == 0, res.output
    assert len(drawn) >= 8 * 4
    assert not np.isin(drawn, split.images).any()
    # the other training images are all still drawn from (16 images, 12 left)
    assert set(drawn) == set(np.setdiff1d(np.arange(16), split.images).tolist())


def test_static_only_and_the_teacher_validate_on_the_held_out_images(world):
    split = _held_out(toy_recipe_file(world, "toy-val-static"), "data.val_fraction=0.25")
    recipe = toy_recipe_file(world, "toy-val-static")
    res = runner.invoke(app, ["train-tmkt", str(recipe), "--set", "data.val_fraction=0.25",
                              *STEPS, "--set", "method.name=static_only", "--set",
                              "model.test_head=static"])
    assert res.exit_code == 0, res.output
    m = read_manifest(world / "runs" / "toy-val-static" / "seed42" / "train-tmkt")["metrics"]
    assert m["best_chosen_on"] == "validation" and m["val_samples"] == split.images.size == 4
    res = runner.invoke(app, ["pretrain-ann", str(recipe), "--set", "data.val_fraction=0.25",
                              "--set", "pretrain_ann.train.max_steps=2", "--set",
                              "pretrain_ann.train.epochs=0", "--set",
                              "pretrain_ann.train.batch_size=4", "--set",
                              "pretrain_ann.train.device=cpu"])
    assert res.exit_code == 0, res.output
    m = read_manifest(world / "runs" / "toy-val-static" / "seed42" / "pretrain-ann")["metrics"]
    assert m["train_images"] == 12 and m["val_images"] == 4
    assert m["best_chosen_on"] == "validation"

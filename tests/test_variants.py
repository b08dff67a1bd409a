"""Variant runs: `--set` overrides that change what training computes put the run in its own
folder, named after them, so a sweep needs no hand-built paths and a variant is never refused
in (or mixed into) the recipe's own run."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_eval import make_prepared_dataset, toy_recipe_file
from typer.testing import CliRunner

from tmkt_cli.cli import app
from tmkt_cli.config import load_recipe
from tmkt_cli.errors import TmktError

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "recipes" / "digits" / "tmkt.yaml"


def folder(*overrides: str) -> str:
    return str(load_recipe(RECIPE, list(overrides)).stage_dir("train-tmkt"))


def test_the_recipe_itself_has_no_variant():
    assert folder() == "runs/digits-tmkt/seed42/train-tmkt"
    assert folder("seed=7") == "runs/digits-tmkt/seed7/train-tmkt"  # seed: its own level


def test_a_variant_is_named_after_its_overrides_whatever_their_spelling():
    assert folder("data.event_fraction=0.05") == \
        "runs/digits-tmkt/event_fraction-0.05/seed42/train-tmkt"
    assert folder("data.event_fraction=.05") == folder("data.event_fraction=0.05")
    assert folder("method.mix_ratio=0.8", "data.event_fraction=0.05") == \
        folder("data.event_fraction=0.05", "method.mix_ratio=0.8") == \
        "runs/digits-tmkt/event_fraction-0.05+mix_ratio-0.8/seed42/train-tmkt"
    # a leaf shared by two sections keeps its section
    assert folder("train.lr=0.01") == "runs/digits-tmkt/train.lr-0.01/seed42/train-tmkt"


def test_what_is_no_variant():
    plain = folder()
    assert folder("data.event_fraction=0.2") == plain        # the recipe's own value
    assert folder("data.num_workers=2") == plain             # volatile: how, not what
    assert folder("eval.checkpoint=best", "cam.kind=sam") == plain  # looking at the run
    assert folder("paths.runs=runs") == plain


def test_placed_by_hand():
    assert folder("name=mine", "train.lr=0.01") == "runs/mine/seed42/train-tmkt"
    assert folder("variant=lr-sweep", "train.lr=0.01") == \
        "runs/digits-tmkt/lr-sweep/seed42/train-tmkt"
    assert folder("variant=", "train.lr=0.01") == "runs/digits-tmkt/seed42/train-tmkt"
    with pytest.raises(TmktError, match="'variant': must be a plain folder name"):
        load_recipe(RECIPE, ["variant=a/b"])


def test_a_long_variant_stays_readable_and_unique():
    many = [f"method.{k}={v}" for k, v in (("mix_ratio", 0.7), ("mag_weight", 0.3),
                                           ("mrp_weight", 0.3), ("da_weight", 0.9),
                                           ("tet_lambda", 0.01), ("mix_ratio_start", 0.1))]
    name = Path(folder(*many)).parent.parent.name
    assert len(name) <= 96 and name.startswith("method.da_weight-0.9+mag_weight-0.3+")
    assert name != Path(folder(*many[:-1], "method.mix_ratio_start=0.2")).parent.parent.name


def test_variants_that_read_alike_never_share_a_folder():
    """Issue 29: 0.1234567 and 0.1234568 both read 0.123457, prepare.root a/b and a_b both read
    a_b: where the readable name drops something, a hash of the exact values is appended."""
    a, b = folder("data.event_fraction=0.1234567"), folder("data.event_fraction=0.1234568")
    assert a != b and "event_fraction-0.123457-" in a and "event_fraction-0.123457-" in b
    assert folder("data.event_fraction=0.1234567") == a  # still the same folder each time
    slash, underscore = folder("prepare.root=a/b"), folder("prepare.root=a_b")
    assert slash != underscore and "root-a_b/" in underscore and "root-a_b-" in slash
    assert folder("data.event_fraction=0.05").endswith("/event_fraction-0.05/seed42/train-tmkt")


def test_variant_runs_sit_beside_the_recipes_own_run(tmp_path):
    """Through the CLI: the recipe's run, then a variant; neither refuses the other, and
    eval with the same --set finds the variant's run."""
    make_prepared_dataset(tmp_path / "prepared", n_train=12, n_test=6)
    recipe = toy_recipe_file(tmp_path, "toy")
    recipe.write_text(recipe.read_text().replace("variant: ''\n", ""))
    steps = ["--set", "train.epochs=0", "--set", "train.max_steps=2", "--set",
             "train.batch_size=4", "--set", "train.device=cpu"]
    runner = CliRunner()
    base = runner.invoke(app, ["train-tmkt", str(recipe), *steps])
    assert base.exit_code == 0, base.output
    variant = ["--set", "train.lr=0.01"]
    res = runner.invoke(app, ["train-tmkt", str(recipe), *steps, *variant])
    assert res.exit_code == 0, res.output
    runs = tmp_path / "runs" / "toy"
    # the steps are a variant too (train.device is volatile: no part of it)
    name = "train.batch_size-4+train.epochs-0+train.max_steps-2"
    assert (runs / name / "seed42" / "train-tmkt" / "manifest.json").is_file()
    assert (runs / name.replace("epochs-0+", "epochs-0+train.lr-0.01+") / "seed42" / "train-tmkt" / "manifest.json").is_file()
    res = runner.invoke(app, ["eval", str(recipe), *steps, *variant])
    assert res.exit_code == 0, res.output
    assert (runs / name.replace("epochs-0+", "epochs-0+train.lr-0.01+") / "seed42" / "eval" / "eval.json").is_file()

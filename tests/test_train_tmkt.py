"""train-tmkt, pretrain-ann and distill end to end on a tiny prepared dataset: every method,
ablation switches, resume equality, the CKD teacher's checks."""

from __future__ import annotations

import re

import pytest
import torch
from test_eval import CLASSES, SIZE, T, make_prepared_dataset, toy_recipe_file
from typer.testing import CliRunner

from tmkt_cli.cli import app
from tmkt_cli.config import load_recipe
from tmkt_cli.runs.artifacts import read_manifest
from tmkt_cli.stages.train_tmkt import equal_compute_train_config
from tmkt_cli.train import engine

STEPS = ["--set", "train.epochs=0", "--set", "train.max_steps=4", "--set",
         "train.batch_size=4", "--set", "train.warmup_steps=1", "--set", "train.device=cpu",
         "--set", "train.log_every_steps=1", "--set", "data.crop_padding=1"]
runner = CliRunner()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("world")
    make_prepared_dataset(tmp / "prepared", n_train=12, n_test=6)
    return tmp


def tmkt(*args: str):
    res = runner.invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return res


def train_records(folder):
    return [r for r in engine.read_metrics(folder) if r["kind"] == "train"]


@pytest.mark.parametrize("method,expected_logs", [
    ("event_only", {"loss", "acc"}),
    ("finetune", {"loss", "acc"}),
    ("kt", {"loss_static", "loss_event", "loss_da", "cka", "replace_p", "acc_static"}),
    ("tmkt", {"loss_da", "loss_mag", "loss_mrp", "mix_ratio", "cka"}),
])
def test_every_method_trains_end_to_end(world, method, expected_logs):
    recipe = toy_recipe_file(world, f"toy-{method}")
    tmkt("train-tmkt", str(recipe), "--set", f"method.name={method}", *STEPS)
    folder = world / "runs" / f"toy-{method}" / "seed42" / "train-tmkt"
    m = read_manifest(folder)
    assert m["status"] == "complete" and m["metrics"]["steps"] == 4
    assert 0.0 <= m["metrics"]["test_acc"] <= 1.0
    records = train_records(folder)
    assert len(records) == 4 and expected_logs <= set(records[-1])
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    # a rerun with the same command does nothing
    assert "up to date" in tmkt("train-tmkt", str(recipe), "--set", f"method.name={method}",
                                *STEPS).output


def test_finetune_switches_from_static_to_events(world, monkeypatch):
    """Phase 1 feeds the static partner, phase 2 the events (checked on what the net sees)."""
    from tmkt_cli.train import tasks

    seen = []
    original = tasks.SNNTransferTask._forward

    def spy(self, x, head):
        seen.append(bool((x[0] == x[-1]).all()))  # a static sequence repeats one image
        return original(self, x, head)

    monkeypatch.setattr(tasks.SNNTransferTask, "_forward", spy)
    recipe = toy_recipe_file(world, "toy-ft-spy")
    tmkt("train-tmkt", str(recipe), "--set", "method.name=finetune",
         "--set", "method.finetune_static_epochs=0.5", *STEPS)
    training = seen[:4]  # then evaluation passes
    assert training[:2] == [True, True] and training[2:] == [False, False]


def test_ablation_switches_change_the_step(world):
    recipe = toy_recipe_file(world, "toy-abl")
    tmkt("train-tmkt", str(recipe), "--set", "method.name=tmkt", "--set", "method.mag=false",
         "--set", "method.domain_alignment=false", *STEPS)
    last = train_records(world / "runs" / "toy-abl" / "seed42" / "train-tmkt")[-1]
    assert "loss_mag" not in last and "loss_da" not in last and "loss_mrp" in last


def test_event_fraction_selects_a_stratified_subset(world):
    recipe = toy_recipe_file(world, "toy-frac")
    tmkt("train-tmkt", str(recipe), "--set", "data.event_fraction=0.5", *STEPS)
    m = read_manifest(world / "runs" / "toy-frac" / "seed42" / "train-tmkt")
    assert m["metrics"]["event_train_samples"] == 6


def test_resume_after_stop_is_bitwise_equal(world, monkeypatch):
    """A tmkt run stopped after step 2 (as a signal would) and run again ends with exactly
    the weights of an uninterrupted run."""
    from tmkt_cli.errors import EXIT_REQUEUE

    args = ["--set", "method.name=tmkt", *STEPS]
    tmkt("train-tmkt", str(toy_recipe_file(world, "toy-ref")), *args)
    calls = {"n": 0}
    real_fit = engine.fit

    def stop_after_two(*a, **kw):
        def poll():
            calls["n"] += 1
            return calls["n"] == 2
        return real_fit(*a, **{**kw, "on_stop_poll": poll})

    recipe = toy_recipe_file(world, "toy-stop")
    monkeypatch.setattr(engine, "fit", stop_after_two)
    res = runner.invoke(app, ["train-tmkt", str(recipe), *args])
    assert res.exit_code == EXIT_REQUEUE, res.output
    folder = world / "runs" / "toy-stop" / "seed42" / "train-tmkt"
    assert read_manifest(folder)["status"] == "interrupted"
    monkeypatch.setattr(engine, "fit", real_fit)
    assert "resuming" in tmkt("train-tmkt", str(recipe), *args).output
    a = engine.load_checkpoint(folder / engine.LAST)["model"]
    b = engine.load_checkpoint(world / "runs" / "toy-ref" / "seed42" / "train-tmkt" /
                               engine.LAST)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_equal_compute_doubles_the_event_batch_at_the_same_lr(tmp_path):
    r = load_recipe(None, ["method.name=event_only", "method.equal_compute=true",
                           "train.batch_size=60", "train.lr=5e-3"])
    cfg = equal_compute_train_config(r)
    assert cfg.batch_size == 120 and not cfg.lr_scaling
    assert cfg.lr == pytest.approx(engine.lr_for(r.train))
    r2 = load_recipe(None, ["method.name=tmkt", "method.equal_compute=true"])
    assert equal_compute_train_config(r2) is r2.train


# -- CKD ----------------------------------------------------------------------------------------

TEACHER = ["--set", "pretrain_ann.backbone=digitsnet", "--set", "pretrain_ann.train.epochs=0",
           "--set", "pretrain_ann.train.max_steps=3", "--set", "pretrain_ann.train.batch_size=4",
           "--set", "pretrain_ann.train.device=cpu", "--set", "pretrain_ann.train.warmup_steps=1"]


def test_pretrain_then_distill(world):
    recipe = toy_recipe_file(world, "toy-ckd")
    tmkt("pretrain-ann", str(recipe), *TEACHER)
    teacher = world / "runs" / "toy-ckd" / "seed42" / "pretrain-ann"
    before = engine.load_checkpoint(teacher / engine.LAST)["model"]
    tmkt("distill", str(recipe), *STEPS, *TEACHER, "--set", "distill.switch_at=0.5",
         "--set", "distill.steepness=200")
    folder = world / "runs" / "toy-ckd" / "seed42" / "distill"
    m = read_manifest(folder)
    assert m["status"] == "complete" and m["inputs"]["teacher"]["path"] == str(teacher)
    records = train_records(folder)
    # W is 1 in phase I (KD computed), exactly 0 in phase II (teacher skipped)
    assert records[0]["kd_w"] == 1.0 and "loss_kd" in records[0]
    assert records[-1]["kd_w"] == 0.0 and "loss_kd" not in records[-1]
    after = engine.load_checkpoint(teacher / engine.LAST)["model"]
    assert all(torch.equal(before[k], after[k]) for k in before)  # the teacher is untouched


def test_teacher_is_frozen_during_a_step(world):
    from tmkt_cli.config import MethodConfig
    from tmkt_cli.models import build_ann, build_snn
    from tmkt_cli.train.engine import StepContext
    from tmkt_cli.train.tasks import SNNTransferTask, Teacher

    r = load_recipe(None, ["model.backbone=digitsnet"])
    teacher = build_ann("digitsnet", len(CLASSES), SIZE)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    task = SNNTransferTask(build_snn(r.model, len(CLASSES), SIZE, T),
                           MethodConfig(name="kt", sliding_replacement=True, tsm=False,
                                        mag=False, mrp=False, domain_alignment=True,
                                        str_weights=True), 0.5,
                           teacher=Teacher(teacher, 4.0, 1.0, 0.5, 50.0))
    batch = {"events": torch.rand(4, T, 2, SIZE, SIZE), "label": torch.arange(4) % 3,
             "static": torch.rand(4, 2, SIZE, SIZE)}
    out = task.training_step(batch, StepContext(0, 10, 0, torch.device("cpu"), 1))
    out["loss"].backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert not teacher.training


@pytest.mark.parametrize("case", ["missing", "incomplete", "other-classes", "changed"])
def test_distill_refuses_a_bad_teacher(world, case):
    recipe = toy_recipe_file(world, f"toy-bad-{case}")
    folder = world / "runs" / f"toy-bad-{case}" / "seed42" / "pretrain-ann"
    if case == "incomplete":
        from tmkt_cli.runs.artifacts import open_stage
        run = open_stage(folder, "pretrain-ann", "", {}, "h", {})
        run.start()
        run.release()
        pattern = "is running, not complete"
    elif case == "other-classes":
        other = world / "other"
        make_prepared_dataset(other / "prepared", classes=["p", "q"], n_train=4, n_test=2)
        other_recipe = toy_recipe_file(other, "toy-other")
        tmkt("pretrain-ann", str(other_recipe), *TEACHER)
        pattern = r"the teacher does not fit this dataset: it has \d+ classes \(dataset: \d+\)"
        folder = other / "runs" / "toy-other" / "seed42" / "pretrain-ann"
    elif case == "changed":  # one bit of the finished teacher's last.pt flipped, size kept
        tmkt("pretrain-ann", str(recipe), *TEACHER)
        data = bytearray((folder / "last.pt").read_bytes())
        data[-100] ^= 0x40
        (folder / "last.pt").write_bytes(bytes(data))
        pattern = r"last\.pt: not the file its run recorded \(sha256 "
    else:
        pattern = r"not found \(from recipe key distill\.teacher\)"
    res = runner.invoke(app, ["distill", str(recipe), *STEPS, "--set",
                              f"distill.teacher={folder}"])
    assert res.exit_code == 2, res.output
    assert len([ln for ln in res.output.splitlines() if ln.strip()]) == 1
    assert re.search(pattern, res.output), res.output



def test_a_method_declared_in_one_module_trains(world):
    """Adding a method is one module (tests/support/toy_method.py): once it registers, recipes
    accept its name, train-tmkt builds its task, and its step is what trains."""
    from support.toy_method import ToyTask

    recipe = toy_recipe_file(world, "toy-own-method")
    ToyTask.steps = 0
    tmkt("train-tmkt", str(recipe), "--set", "method.name=toy", *STEPS)
    folder = world / "runs" / "toy-own-method" / "seed42" / "train-tmkt"
    assert read_manifest(folder)["status"] == "complete"
    assert ToyTask.steps == 4
    records = train_records(folder)
    assert len(records) == 4 and "toy_loss" in records[-1] and "loss_event" not in records[-1]


def test_an_unregistered_method_is_one_line_naming_the_choices(world):
    recipe = toy_recipe_file(world, "toy-typo")
    res = runner.invoke(app, ["train-tmkt", str(recipe), "--set", "method.name=tmtk", *STEPS])
    assert res.exit_code == 2
    assert "method.name" in res.output and "did you mean 'tmkt'?" in res.output


def test_eval_of_a_recipe_finds_its_one_variant_run_or_lists_several(world):
    """Issue 29: a smoke run trained with --set flags lands in a variant folder, and `tmkt eval
    RECIPE` found it only when given the same flags again."""
    recipe = toy_recipe_file(world, "toy-eval-variant")
    recipe.write_text(recipe.read_text().replace("variant: ''\n", ""))  # variant: auto
    tmkt("train-tmkt", str(recipe), *STEPS)
    res = tmkt("eval", str(recipe))
    assert "own run is not there; evaluating its variant run" in res.output
    variant = next((world / "runs" / "toy-eval-variant").glob("*/seed42/train-tmkt"))
    assert read_manifest(variant.parent / "eval")["status"] == "complete"
    tmkt("train-tmkt", str(recipe), *STEPS, "--set", "train.lr=0.002")
    res = runner.invoke(app, ["eval", str(recipe)])
    assert res.exit_code == 2 and "2 finished variant runs" in res.output, res.output

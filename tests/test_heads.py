"""The output heads (``model.heads``, ``model.test_head``), the static head's accuracy logged
beside the test head's, the per-loss-term gradient shares on the trunk, and the image-only
SNN (``method.name: static_only``): what the transfer benchmark reads (issue 14)."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from test_eval import CLASSES, SIZE, T, make_prepared_dataset, toy_recipe_file
from typer.testing import CliRunner

from tmkt_cli.cli import app
from tmkt_cli.config import ModelConfig
from tmkt_cli.models import build_snn
from tmkt_cli.models.snn import ResidualHead
from tmkt_cli.runs.artifacts import read_manifest
from tmkt_cli.runs.checkpoints import load_model
from tmkt_cli.runs.runlog import read_metrics
from tmkt_cli.train.engine import StepContext, evaluate_classifier
from tmkt_cli.train.tasks import SNNTransferTask

STEPS = ["--set", "train.epochs=0", "--set", "train.max_steps=4", "--set",
         "train.batch_size=4", "--set", "train.warmup_steps=1", "--set", "train.device=cpu",
         "--set", "train.log_every_steps=1", "--set", "train.eval_every_steps=2"]
runner = CliRunner()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("world")
    make_prepared_dataset(tmp / "prepared", n_train=12, n_test=6)
    return tmp


def tmkt(*args: str, code: int = 0):
    res = runner.invoke(app, list(args))
    assert res.exit_code == code, res.output
    return res


def snn(**model) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_snn(ModelConfig(backbone="digitsnet", **model), len(CLASSES), SIZE, T)


def events(batch: int = 3) -> torch.Tensor:
    return torch.rand(T, batch, 2, SIZE, SIZE, generator=torch.Generator().manual_seed(1)) * 3


# --------------------------------------------------------------------------------------------
# model.heads, model.test_head
# --------------------------------------------------------------------------------------------

def test_separate_heads_are_the_default_and_unchanged():
    model = snn()
    assert model.heads["static"] is not model.heads["event"]
    torch.manual_seed(0)  # the separate layout draws the same initial weights as before
    again = build_snn(ModelConfig(backbone="digitsnet", heads="separate"), len(CLASSES), SIZE, T)
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_shared_heads_are_one_layer():
    model = snn(heads="shared")
    assert model.heads["static"] is model.heads["event"]
    assert list(model.predict_heads(events())) == ["event"]  # one head, one entry


def test_residual_head_starts_as_the_static_head_and_stays_tied_to_it():
    model = snn(heads="residual")
    assert isinstance(model.heads["event"], ResidualHead)
    x = events()
    both = model.predict_heads(x)
    torch.testing.assert_close(both["event"], both["static"], rtol=0, atol=0)
    # the event loss trains the static head's weights too (tied), and the correction
    out = model(x, "event")
    out.logits.sum().backward()
    assert model.heads["static"].weight.grad.abs().sum() > 0
    assert model.heads["event"].delta.weight.grad.abs().sum() > 0
    # counted once: static layer + correction of the same size
    k, f = len(CLASSES), model.trunk.out_features
    assert model.parameter_counts()["heads"] == 2 * (k * f + k)


@pytest.mark.parametrize("test_head", ["event", "static"])
def test_predict_uses_the_test_head(test_head):
    model = snn(test_head=test_head)
    x = events()
    both = model.predict_heads(x)
    assert list(both)[0] == test_head and set(both) == {"event", "static"}
    torch.testing.assert_close(model.predict(x), both[test_head], rtol=0, atol=0)
    direct = model(x, test_head).logits.mean(0)  # the same trunk pass, the named head
    torch.testing.assert_close(both[test_head], direct)


def test_evaluate_classifier_reports_the_other_heads_accuracy():
    logits_a = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
    logits_b = torch.tensor([[0.0, 2.0], [0.0, 2.0], [0.0, 2.0]])
    batch = {"label": torch.tensor([0, 1, 1])}
    metrics = evaluate_classifier(lambda b: {"event": logits_a, "static": logits_b},
                                  [batch], torch.device("cpu"))
    assert metrics["acc"] == pytest.approx(2 / 3)
    assert metrics["acc_static_head"] == pytest.approx(2 / 3)
    only = evaluate_classifier(lambda b: logits_b, [batch], torch.device("cpu"))
    assert only["acc"] == pytest.approx(2 / 3) and "acc_static_head" not in only


# --------------------------------------------------------------------------------------------
# Gradient shares
# --------------------------------------------------------------------------------------------

def _batch():
    g = torch.Generator().manual_seed(3)
    return {"events": torch.rand(4, T, 2, SIZE, SIZE, generator=g) * 3,
            "static": torch.rand(4, 2, SIZE, SIZE, generator=g),
            "label": torch.tensor([0, 1, 2, 0])}


@pytest.mark.parametrize("method", ["event_only", "kt", "tmkt"])
def test_grad_shares_are_each_terms_trunk_gradient(method):
    from tmkt_cli.config import MethodConfig, resolve_method

    m = resolve_method(MethodConfig(name=method))
    model = snn()
    task = SNNTransferTask(model, m, threshold=0.5)
    ctx = StepContext(3, 10, 0, torch.device("cpu"), 0, grad_shares=True)
    out = task.training_step(_batch(), ctx)
    shares = {k[6:]: float(v) for k, v in out.items() if k.startswith("share_")}
    expected = {"event_only": {"event"}, "kt": {"static", "event", "da"},
                "tmkt": {"static", "event", "da", "mag", "mrp"}}[method]
    assert set(shares) == expected
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-6)
    # the step's own gradient is what it is without the measurement
    out["loss"].backward()
    with_shares = [p.grad.clone() for p in model.trunk.parameters()]
    model.zero_grad(set_to_none=True)
    plain = task.training_step(_batch(), StepContext(3, 10, 0, torch.device("cpu"), 0))
    assert not any(k.startswith("share_") for k in plain)
    plain["loss"].backward()
    for a, p in zip(with_shares, model.trunk.parameters(), strict=True):
        assert torch.equal(a, p.grad)
    if method == "event_only":  # one term: its norm is the whole trunk gradient's
        norm = torch.stack([p.grad.pow(2).sum() for p in model.trunk.parameters()]).sum().sqrt()
        assert float(out["gradnorm_event"]) == pytest.approx(float(norm), rel=1e-5)


def test_grad_shares_are_logged_and_leave_training_unchanged(world):
    recipe = toy_recipe_file(world, "toy-shares")
    tmkt("train-tmkt", str(recipe), "--set", "method.name=tmkt", *STEPS)
    folder = world / "runs" / "toy-shares" / "seed42" / "train-tmkt"
    plain = torch.load(folder / "last.pt", weights_only=False)["model"]
    tmkt("train-tmkt", str(recipe), "--set", "method.name=tmkt", *STEPS,
         "--set", "train.grad_share_every=2", "--set", "paths.runs=" + str(world / "shares"))
    shared_folder = world / "shares" / "toy-shares" / "seed42" / "train-tmkt"
    measured = torch.load(shared_folder / "last.pt", weights_only=False)["model"]
    for k in plain:
        assert torch.equal(plain[k], measured[k]), k
    records = [r for r in read_metrics(shared_folder) if r["kind"] == "grad_share"]
    assert [r["step"] for r in records] == [1, 3]  # measured at steps 0 and 2 (0-based)
    for r in records:
        assert sum(v for k, v in r.items() if k.startswith("share_")) == pytest.approx(1.0)
    evals = [r for r in read_metrics(shared_folder) if r["kind"] == "eval"]
    assert evals and all(0.0 <= r["acc_static_head"] <= 1.0 for r in evals)


def test_event_only_logs_no_static_head(world):
    recipe = toy_recipe_file(world, "toy-one-head")
    tmkt("train-tmkt", str(recipe), "--set", "method.name=event_only", *STEPS)
    folder = world / "runs" / "toy-one-head" / "seed42" / "train-tmkt"
    evals = [r for r in read_metrics(folder) if r["kind"] == "eval"]
    assert evals and not any("acc_static_head" in r for r in evals)  # it never trains


def test_validation_logs_both_heads(world):
    recipe = toy_recipe_file(world, "toy-val-heads")
    tmkt("train-tmkt", str(recipe), "--set", "method.name=kt", *STEPS,
         "--set", "data.val_fraction=0.34")
    folder = world / "runs" / "toy-val-heads" / "seed42" / "train-tmkt"
    evals = [r for r in read_metrics(folder) if r["kind"] == "eval"]
    assert evals and all({"val_acc", "val_acc_static_head", "acc_static_head"} <= set(r)
                         for r in evals)


def test_the_validation_rule_reports_the_head_validation_chose_everywhere(world):
    """model.test_head: validation changes no weight, and the chosen head is the run's
    number in every place: the eval records, the manifest, the done line, the checkpoint
    (load_model predicts with it) and tmkt eval."""
    recipe = toy_recipe_file(world, "toy-rule")
    common = ("--set", "method.name=kt", *STEPS, "--set", "data.val_fraction=0.34")
    tmkt("train-tmkt", str(recipe), *common, "--set", "paths.runs=" + str(world / "fixed"))
    res = tmkt("train-tmkt", str(recipe), *common, "--set", "model.test_head=validation")
    fixed = world / "fixed" / "toy-rule" / "seed42" / "train-tmkt"
    folder = world / "runs" / "toy-rule" / "seed42" / "train-tmkt"
    a = torch.load(fixed / "last.pt", weights_only=False)["model"]
    b = torch.load(folder / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # the rule only reads
    plain = [r for r in read_metrics(fixed) if r["kind"] == "eval"][-1]
    last = [r for r in read_metrics(folder) if r["kind"] == "eval"][-1]
    val = {"event": plain["val_acc"], "static": plain["val_acc_static_head"]}
    test = {"event": plain["acc"], "static": plain["acc_static_head"]}
    head = "static" if val["static"] > val["event"] else "event"
    other = "event" if head == "static" else "static"
    assert last["head"] == head
    assert last["acc"] == test[head] and last[f"acc_{other}_head"] == test[other]
    assert last["val_acc"] == val[head] and last[f"val_acc_{other}_head"] == val[other]
    metrics = read_manifest(folder)["metrics"]
    assert metrics["test_acc"] == test[head] and metrics["test_head"] == head
    assert metrics["head_rule"] == "validation"
    assert metrics["heads"] == {h: {"test": test[h], "val": val[h]} for h in test}
    assert f"({head} head, chosen on validation; {other} head" in " ".join(res.output.split())
    assert load_model(folder).test_head == head
    assert torch.load(folder / "model.pt", weights_only=False)["loop"]["head"] == head
    out = tmkt("eval", str(recipe), "--set", "method.name=kt", *STEPS,
               "--set", "data.val_fraction=0.34", "--set", "model.test_head=validation")
    report = json.loads((world / "runs" / "toy-rule" / "seed42" / "eval" / "eval.json")
                        .read_text())
    assert report["test_head"] == head and report["top1"] == pytest.approx(test[head])
    assert report["heads"][other] == pytest.approx(test[other])
    assert f"top-1 ({head} head)" in out.output
    # tmkt report's per-run table reads the same head off the run's own log
    tmkt("report", str(world / "runs" / "toy-rule"), "--out", str(world / "rule-report"))
    row = next(csv.DictReader((world / "rule-report" / "runs.csv").open()))
    assert row["chosen_head"] == head and row["test_head"] == "validation"
    assert float(row["chosen_test"]) == pytest.approx(100 * test[head], abs=0.006)
    assert float(row[f"test_{other}"]) == pytest.approx(100 * test[other], abs=0.006)
    assert float(row[f"val_{head}"]) == pytest.approx(100 * val[head], abs=0.006)


def test_the_validation_rule_without_a_validation_split_keeps_the_event_head(world):
    recipe = toy_recipe_file(world, "toy-rule-noval")
    res = tmkt("train-tmkt", str(recipe), "--set", "method.name=tmkt", *STEPS,
               "--set", "model.test_head=validation")
    folder = world / "runs" / "toy-rule-noval" / "seed42" / "train-tmkt"
    assert read_manifest(folder)["metrics"]["test_head"] == "event"
    assert "no validation split: the event head" in " ".join(res.output.split())
    assert load_model(folder).test_head == "event"


def test_the_validation_rule_leaves_a_one_head_run_alone(world):
    recipe = toy_recipe_file(world, "toy-rule-one")
    tmkt("train-tmkt", str(recipe), "--set", "method.name=event_only", *STEPS,
         "--set", "data.val_fraction=0.34", "--set", "model.test_head=validation")
    folder = world / "runs" / "toy-rule-one" / "seed42" / "train-tmkt"
    evals = [r for r in read_metrics(folder) if r["kind"] == "eval"]
    assert evals and not any("head" in r or "acc_static_head" in r for r in evals)
    metrics = read_manifest(folder)["metrics"]
    assert metrics["test_head"] == "event" and "heads" not in metrics


# --------------------------------------------------------------------------------------------
# static_only
# --------------------------------------------------------------------------------------------

def test_static_only_trains_on_images_and_tests_on_images(world):
    recipe = toy_recipe_file(world, "toy-static")
    tmkt("train-tmkt", str(recipe), "--set", "method.name=static_only",
         "--set", "model.test_head=static", *STEPS)
    folder = world / "runs" / "toy-static" / "seed42" / "train-tmkt"
    m = read_manifest(folder)
    assert m["status"] == "complete" and 0.0 <= m["metrics"]["test_acc"] <= 1.0
    evals = [r for r in read_metrics(folder) if r["kind"] == "eval"]
    assert evals[-1]["samples"] == 6.0  # the toy store's 6 test images
    trained = load_model(folder)
    assert trained.test_head == "static"
    # the event head never trained: static_only touches only the trunk and the static head
    from tmkt_cli.train.runtime import seed_everything

    seed_everything(42)  # the recipe's seed: the initial weights the run started from
    fresh = build_snn(ModelConfig(backbone="digitsnet", test_head="static"), len(CLASSES),
                      SIZE, T)
    assert torch.equal(trained.heads["event"].weight, fresh.heads["event"].weight)
    assert not torch.equal(trained.heads["static"].weight, fresh.heads["static"].weight)


def test_static_only_needs_the_static_test_head(world):
    recipe = toy_recipe_file(world, "toy-static-bad")
    res = tmkt("train-tmkt", str(recipe), "--set", "method.name=static_only", *STEPS, code=2)
    assert "model.test_head: static" in res.output
    assert not (world / "runs" / "toy-static-bad" / "seed42" / "train-tmkt"
                / "last.pt").exists()

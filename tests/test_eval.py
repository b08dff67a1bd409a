"""tmkt eval: metric maths against hand-computed values, accuracy against time steps, firing
rates and synaptic operations on a hand-checkable network, checkpoint checks, and one run of
the stage on a tiny prepared dataset (an untrained digitsnet: only the bookkeeping is tested).

The helpers at the top (a tiny prepared dataset, a fake finished training run) are shared by
test_cam.py and test_report.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from tmkt_cli.analysis import metrics
from tmkt_cli.analysis.energy import (
    ActivityMonitor,
    conv2d_synaptic_ops,
    energy_estimate,
    linear_synaptic_ops,
)
from tmkt_cli.config import Recipe, config_hash, dump_yaml, load_recipe, stage_config
from tmkt_cli.errors import TmktError
from tmkt_cli.runs.artifacts import open_stage, read_manifest
from tmkt_cli.train import engine

CLASSES = ["zero", "one", "two"]
T, SIZE = 4, 16
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------

def make_prepared_dataset(folder: Path, n_train: int = 6, n_test: int = 6,
                          classes: list[str] = CLASSES, seed: int = 0) -> Path:
    """A complete ``prepare`` run folder with a tiny dataset.h5: Poisson event frames that
    differ by class (so a model can tell them apart) and one image per recording."""
    from tmkt_cli.data.store import DatasetWriter, SplitPlan, StoreHeader

    rng = np.random.default_rng(seed)
    k = len(classes)
    plans = {split: SplitPlan(labels=np.arange(n) % k, sources=[f"{split}/{i}" for i in range(n)],
                              image_index=np.arange(n), image_labels=np.arange(n) % k,
                              image_sources=[f"{split}/img{i}" for i in range(n)])
             for split, n in (("train", n_train), ("test", n_test))}
    header = StoreHeader(dataset="toy", classes=list(classes), time_steps=T, size=SIZE,
                         split_by="time", prepare_config="toy: 1\n", config_hash="toy")
    run = open_stage(folder, "prepare", "prepare: toy\n",
                     {"prepare": {"dataset": "toy", "time_steps": T, "size": SIZE}}, "toyhash")
    with run:
        run.start()
        with DatasetWriter(folder / "dataset.h5", header, plans) as writer:
            for split, plan in plans.items():
                for label in plan.labels:
                    rate = np.zeros((T, 2, SIZE, SIZE), np.float32) + 0.1
                    rate[:, label % 2, 4 * label:4 * label + 6, :] += 1.5  # a class stripe
                    frames = rng.poisson(rate).astype(np.float32)
                    writer.add_recording(split, frames, int(frames.sum()), 0, (SIZE, SIZE))
                for _ in range(plan.images):
                    writer.add_image(split, rng.integers(0, 256, (SIZE, SIZE, 3), np.uint8))
            writer.finish()
        run.complete({"dataset": "dataset.h5"})
    return folder


def toy_recipe_file(tmp: Path, name: str = "toy-tmkt") -> Path:
    """A recipe for the tiny dataset and a digitsnet, in ``tmp``."""
    path = tmp / f"{name}.yaml"
    # variant "": the tests' --set overrides keep the run at runs/<name>/seed<seed>/
    path.write_text(f"name: {name}\nvariant: ''\npaths:\n  runs: {tmp}/runs\n"
                    f"  dataset: {tmp}/prepared\n"
                    f"prepare:\n  time_steps: {T}\n  size: {SIZE}\nmodel:\n"
                    f"  backbone: digitsnet\neval:\n  batch_size: 4\n")
    return path


def toy_recipe(tmp: Path, name: str = "toy-tmkt", *overrides: str) -> Recipe:
    return load_recipe(toy_recipe_file(tmp, name), list(overrides))


def fake_training_run(recipe: Recipe, stage: str = "train-tmkt", *, model_info: dict | None = None,
                      model: nn.Module | None = None, metrics_records: list[dict] = (),
                      final: dict | None = None, torch_seed: int = 0) -> Path:
    """A finished training run folder (as the engine leaves it) holding an untrained network:
    last.pt, best.pt, metrics.jsonl and a complete manifest."""
    from tmkt_cli.models import build_ann, build_snn
    from tmkt_cli.runs.checkpoints import ann_model_info, snn_model_info
    from tmkt_cli.stages.shared import dataset_input

    torch.manual_seed(torch_seed)
    if model is None:
        if stage == "pretrain-ann":
            model = build_ann(recipe.pretrain_ann.backbone, len(CLASSES), SIZE)
        else:
            model = calibrated(build_snn(recipe.model, len(CLASSES), SIZE, T),
                               recipe.dataset_dir() / "dataset.h5", recipe)
    if model_info is None:
        model_info = (ann_model_info(recipe.pretrain_ann.backbone, CLASSES, SIZE)
                      if stage == "pretrain-ann"
                      else snn_model_info(recipe, CLASSES, SIZE, T))
    folder = recipe.stage_dir(stage)
    ds = dataset_input(recipe)
    cfg = stage_config(recipe, stage)
    run = open_stage(folder, stage, dump_yaml(recipe), cfg, config_hash(cfg),
                     {"dataset": {"path": str(ds.folder), "hash": ds.output_hash}})
    with run:
        run.start()
        state = {"format": engine.CHECKPOINT_FORMAT, "version": engine.CHECKPOINT_VERSION,
                 "stage": stage, "model_info": model_info, "model": model.state_dict(),
                 "loop": {"epoch": 2, "step": 6}}
        engine.save_checkpoint(folder / engine.LAST, state)
        engine.save_checkpoint(folder / engine.BEST, state)
        (folder / engine.METRICS).write_text("".join(json.dumps(r) + "\n"
                                                     for r in metrics_records))
        run.complete({"checkpoint": engine.LAST, "best": engine.BEST,
                      "metrics": engine.METRICS},
                     final if final is not None else {"test_acc": 0.5, "best_acc": 0.5})
    return folder


def calibrated(model: nn.Module, h5: Path, recipe: Recipe) -> nn.Module:
    """An untrained SNN whose BatchNorm statistics are those of the training recordings, so
    every layer fires (with the initial statistics the deeper layers stay almost silent)."""
    from spikingjelly.activation_based import functional

    from tmkt_cli.data.loaders import EventDataset

    train = EventDataset(h5, "train", recipe.data, seed=0, augment=False, with_static=False)
    x = torch.stack([train[i]["events"] for i in range(len(train))]).transpose(0, 1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the calibration pass
    model.train()
    with torch.no_grad():
        model(x, head="event")
    functional.reset_net(model)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    return model.eval()


def assert_png(path: Path) -> np.ndarray:
    """A valid PNG that matplotlib reads back; returns the pixels."""
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 50 and pixels.shape[1] > 50
    return pixels


@pytest.fixture(scope="module")
def toy_world(tmp_path_factory) -> Path:
    """A prepared tiny dataset and a finished train-tmkt run of an untrained digitsnet."""
    tmp = tmp_path_factory.mktemp("eval")
    make_prepared_dataset(tmp / "prepared")
    fake_training_run(toy_recipe(tmp))
    return tmp


# --------------------------------------------------------------------------------------------
# Metric maths
# --------------------------------------------------------------------------------------------

def test_topk_confusion_and_per_class_by_hand():
    logits = np.array([[3.0, 1.0, 2.0],    # true 0: rank 0
                       [3.0, 1.0, 2.0],    # true 1: rank 2
                       [0.5, 0.5, 0.1],    # true 1: tie with class 0, lower index wins: rank 1
                       [0.0, 0.0, 0.0]])   # true 2: three-way tie: rank 2
    labels = np.array([0, 1, 1, 2])
    assert metrics.class_ranks(logits, labels).tolist() == [0, 2, 1, 2]
    assert metrics.topk_hits(logits, labels, 1).tolist() == [True, False, False, False]
    assert metrics.topk_hits(logits, labels, 2).tolist() == [True, False, True, False]
    predictions = logits.argmax(1)  # [0, 0, 0, 0]: ties break the same way
    confusion = metrics.confusion_matrix(labels, predictions, 3)
    assert confusion.tolist() == [[1, 0, 0], [2, 0, 0], [1, 0, 0]]
    per_class = metrics.per_class_accuracy(confusion)
    assert per_class.tolist() == [1.0, 0.0, 0.0]
    assert np.isnan(metrics.per_class_accuracy(np.zeros((2, 2)))).all()  # no samples: NaN


def test_tally_sums_batches_like_one_pass():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 10, 6))
    labels = rng.integers(0, 6, 10)
    whole = metrics.ClassificationTally(6, 3)
    whole.update(logits, labels)
    split = metrics.ClassificationTally(6, 3)
    split.update(logits[:, :4], labels[:4])
    split.update(logits[:, 4:], labels[4:])
    names = [f"c{i}" for i in range(6)]
    a, b = whole.summary(names), split.summary(names)
    assert a["confusion"] == b["confusion"] and a["top1"] == b["top1"]
    assert a["accuracy_vs_time_steps"] == b["accuracy_vs_time_steps"]
    assert a["loss"] == pytest.approx(b["loss"])
    final = logits.mean(0)
    assert a["top1"] == pytest.approx((final.argmax(1) == labels).mean())
    expected_loss = np.mean(np.log(np.exp(final).sum(1)) - final[np.arange(10), labels])
    assert a["loss"] == pytest.approx(expected_loss)
    assert a["top5"] == pytest.approx(metrics.topk_hits(final, labels, 5).mean())
    assert a["accuracy_vs_time_steps"][-1] == a["top1"]


def test_accuracy_vs_time_steps_by_hand():
    # sample 0 (label 0): step logits favour 1, then 0, then 0 -> wrong, right, right
    # sample 1 (label 1): favour 1, then strongly 0, then 1     -> right, wrong, wrong
    step_logits = np.array([[[0.0, 1.0], [0.0, 1.0]],
                            [[2.0, 0.0], [3.0, 0.0]],
                            [[2.0, 0.0], [0.0, 0.5]]])
    labels = np.array([0, 1])
    cum = metrics.cumulative_mean_logits(step_logits)
    assert cum[1, 1].tolist() == [1.5, 0.5] and cum[2, 1] == pytest.approx([1.0, 0.5])
    assert metrics.time_step_hits(step_logits, labels).tolist() == [1, 1, 1]
    assert metrics.accuracy_vs_time_steps(step_logits, labels).tolist() == [0.5, 0.5, 0.5]
    # each prefix of the cumulative mean is the mean of that prefix alone
    for t in range(1, 4):
        assert np.allclose(cum[t - 1], step_logits[:t].mean(0))


def test_snn_is_causal_so_prefix_predictions_need_one_pass():
    """The premise of the bookkeeping: step t of a pass over all T frames equals step t of a
    pass over the first t frames, so cumulative means are the predictions from t frames."""
    from spikingjelly.activation_based import functional

    from tmkt_cli.config import ModelConfig
    from tmkt_cli.models import build_snn

    torch.manual_seed(0)
    model = build_snn(ModelConfig(backbone="digitsnet"), 3, SIZE, T).eval()
    x = torch.rand(T, 2, 2, SIZE, SIZE) * 2
    with torch.no_grad():
        full = model(x, head="event").logits
        functional.reset_net(model)
        for t in (1, 2, 3):
            prefix = model(x[:t], head="event").logits
            functional.reset_net(model)
            assert torch.allclose(prefix, full[:t], atol=1e-6)


def test_seed_stats():
    s = metrics.seed_stats([0.9, 0.8, None, 1.0])
    assert (s.mean, s.n) == (pytest.approx(0.9), 3)
    assert s.std == pytest.approx(0.1)  # sample std (ddof=1)
    assert s.format() == "90.00 ± 10.00"
    one = metrics.seed_stats([0.5])
    assert one.n == 1 and np.isnan(one.std) and one.format() == "50.00"
    assert metrics.seed_stats([]).format() == "–"


# --------------------------------------------------------------------------------------------
# Firing rates, synaptic operations, energy
# --------------------------------------------------------------------------------------------

class Threshold(nn.Module):
    """A stand-in spiking layer: spike where the input exceeds 0.5."""

    def forward(self, x):
        return (x > 0.5).float()


class HandNet(nn.Module):
    """[T, B, 1, 4, 4] -> conv1x1 (weight 1) -> spikes -> conv3x3 1->4 (weights 1, pad 1)
    -> spikes -> linear 64 -> 3."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 1, 1, bias=False)
        self.lif1 = Threshold()
        self.conv2 = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.lif2 = Threshold()
        self.fc = nn.Linear(64, 3)
        nn.init.ones_(self.conv1.weight)
        nn.init.ones_(self.conv2.weight)

    def spiking_layers(self):
        return [("lif1", self.lif1), ("lif2", self.lif2)]

    def forward(self, x):
        t, b = x.shape[:2]
        s1 = self.lif1(self.conv1(x.flatten(0, 1)).view(t, b, 1, 4, 4))
        s2 = self.lif2(self.conv2(s1.flatten(0, 1)).view(t, b, 4, 4, 4))
        return self.fc(s2.flatten(2))


def test_firing_rates_and_synaptic_ops_by_hand():
    # Spikes at a corner (0,0), inside (1,1) and on an edge (0,2) of a 4x4 map.
    frame = torch.zeros(1, 4, 4)
    for y, x in ((0, 0), (1, 1), (0, 2)):
        frame[0, y, x] = 1.0
    x = frame.expand(2, 3, 1, 4, 4).clone()  # T=2 steps, B=3 identical samples
    x[:, :, 0, 3, 3] = 0.3                   # analog input below threshold: no spike
    net = HandNet()
    with torch.no_grad(), ActivityMonitor(net, net.spiking_layers()) as monitor:
        net(x)
    rates = {r["layer"]: r for r in monitor.firing_rates()}
    assert rates["lif1"]["neurons"] == 16 and rates["lif1"]["firing_rate"] == 3 / 16
    # lif2 fires wherever a 3x3 neighbourhood holds a spike: rows 0-1 (8) + row 2 cols 0-2
    # (3) = 11 positions, in each of the 4 channels.
    assert rates["lif2"]["neurons"] == 64 and rates["lif2"]["firing_rate"] == 44 / 64
    ops = monitor.operations(samples=3, time_steps=2)
    layers = {r["layer"]: r for r in ops["layers"]}
    assert [r["layer"] for r in ops["layers"]] == ["conv1", "conv2", "fc"]
    # conv1 reads the analog input: its dense MACs, 16 per step
    assert layers["conv1"]["kind"] == "mac" and layers["conv1"]["ops"] == 16 * 2
    assert layers["conv1"]["input_density"] == 4 / 16
    # conv2: fan-out of a spike = 4 channels x the 3x3 positions it reaches:
    # corner 4, inside 9, edge 6 -> (4 + 9 + 6) x 4 = 76 per step
    assert layers["conv2"]["kind"] == "ac" and layers["conv2"]["ops"] == 76 * 2
    assert layers["conv2"]["dense_macs"] == 16 * 4 * 9 * 2
    # fc: 44 spikes x 3 outputs per step
    assert layers["fc"]["ops"] == 44 * 3 * 2 and layers["fc"]["dense_macs"] == 64 * 3 * 2
    assert ops["ac_ops"] == (76 + 132) * 2 and ops["mac_ops"] == 32
    assert ops["ann_macs"] == 16 + 576 + 192  # one frame, dense
    energy = energy_estimate(ops["ac_ops"], ops["mac_ops"], ops["ann_macs"], 0.9, 4.6)
    assert energy["snn_pj"] == pytest.approx(416 * 0.9 + 32 * 4.6)
    assert energy["ann_pj"] == pytest.approx(784 * 4.6)
    # an ANN: every layer dense
    dense = monitor.operations(samples=3, time_steps=2, spiking=False)
    assert dense["ac_ops"] == 0 and dense["mac_ops"] == (16 + 576 + 192) * 2


@pytest.mark.parametrize("stride,padding,dilation,groups", [(1, 1, 1, 1), (2, 1, 1, 1),
                                                             (1, 0, 2, 1), (2, 2, 1, 2)])
def test_conv_synaptic_ops_match_brute_force(stride, padding, dilation, groups):
    conv = nn.Conv2d(4, 6, 3, stride=stride, padding=padding, dilation=dilation,
                     groups=groups)
    g = torch.Generator().manual_seed(1)
    spikes = (torch.rand(2, 4, 7, 9, generator=g) < 0.3).float()
    # Brute force: for every output, count the non-zero inputs of its group in its field.
    brute = 0.0
    per_group_in, per_group_out = 4 // groups, 6 // groups
    for k in range(groups):
        chunk = spikes[:, k * per_group_in:(k + 1) * per_group_in]
        cols = torch.nn.functional.unfold(chunk, 3, dilation=dilation, padding=padding,
                                          stride=stride)  # [N, C*9, L]
        brute += float(cols.sum()) * per_group_out
    assert conv2d_synaptic_ops(spikes, conv) == brute
    linear = nn.Linear(5, 7)
    assert linear_synaptic_ops(torch.tensor([[0.0, 1.0, 0.0, 1.0, 1.0]]), linear) == 21


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------

def test_checkpoint_mismatches_name_what_differs():
    from tmkt_cli.runs.checkpoints import checkpoint_mismatches

    expected = {"kind": "snn", "backbone": "digitsnet",
                "model": {"backbone": "digitsnet", "tau": 2.0}, "classes": CLASSES,
                "size": 16, "time_steps": 4}
    same = dict(expected)
    assert checkpoint_mismatches(same, expected) == []
    other = {**expected, "backbone": "scnn", "classes": CLASSES + ["three"], "size": 32}
    diffs = checkpoint_mismatches(other, expected)
    assert diffs == ["backbone 'scnn' (recipe: 'digitsnet')", "4 classes (dataset: 3)",
                     "32px inputs (dataset: 16px)"]
    renamed = {**expected, "classes": ["zero", "uno", "two"],
               "model": {"backbone": "digitsnet", "tau": 3.0}}
    assert checkpoint_mismatches(renamed, expected) == [
        "model.tau 3.0 (recipe: 2.0)", "other class names (class 1: 'uno', dataset: 'one')"]
    older = {**expected, "model": {"backbone": "digitsnet"}}  # a schema without tau
    assert checkpoint_mismatches(older, expected) == []
    assert checkpoint_mismatches({"kind": "ann"}, expected) == [
        "an ANN model (expected an SNN)"]


@pytest.mark.parametrize("case", ["backbone", "classes"])
def test_mismatched_checkpoint_is_one_line_error(tmp_path, case):
    from tmkt_cli.cli import app
    from tmkt_cli.config import ModelConfig
    from tmkt_cli.models import build_snn
    from tmkt_cli.runs.checkpoints import snn_model_info

    make_prepared_dataset(tmp_path / "prepared")
    recipe = toy_recipe(tmp_path, "toy-mismatch")
    if case == "backbone":
        other = load_recipe(None, ["model.backbone=scnn"])
        model = build_snn(ModelConfig(backbone="scnn"), len(CLASSES), SIZE, T)
        info = snn_model_info(other, CLASSES, SIZE, T)
    else:
        model = build_snn(recipe.model, 5, SIZE, T)
        info = snn_model_info(recipe, [f"c{i}" for i in range(5)], SIZE, T)
    folder = fake_training_run(recipe, model=model, model_info=info)
    res = CliRunner().invoke(app, ["eval", str(toy_recipe_file(tmp_path, recipe.name))])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    error = [ln for ln in lines if ln.startswith("error:")]
    assert len(error) == 1 and "Traceback" not in res.output
    assert str(folder / "last.pt") in error[0]
    assert ("backbone 'scnn' (recipe: 'digitsnet')" in error[0] if case == "backbone"
            else "5 classes (dataset: 3)" in error[0])


def test_missing_source_run_names_the_key(tmp_path):
    from rich.console import Console

    from tmkt_cli.stages import evaluate
    from tmkt_cli.stages.common import execute

    make_prepared_dataset(tmp_path / "prepared")
    recipe = toy_recipe(tmp_path, "toy-none")
    with pytest.raises(TmktError, match=r"train-tmkt: not found \(from recipe key "
                                        r"eval.source\); run `tmkt train-tmkt RECIPE` first"):
        execute("eval", recipe, evaluate.folder(recipe), evaluate.inputs, evaluate.run,
                Console(quiet=True))


# --------------------------------------------------------------------------------------------
# The stage, end to end
# --------------------------------------------------------------------------------------------

def _run_eval(recipe: Recipe):
    from rich.console import Console

    from tmkt_cli.stages import evaluate
    from tmkt_cli.stages.common import execute

    console = Console(record=True, width=140)
    execute("eval", recipe, evaluate.folder(recipe), evaluate.inputs, evaluate.run, console)
    return evaluate.folder(recipe), console.export_text()


def test_eval_stage_end_to_end(toy_world):
    from spikingjelly.activation_based import functional

    from tmkt_cli.data.loaders import EventDataset
    from tmkt_cli.models import build_snn

    recipe = toy_recipe(toy_world)
    folder, text = _run_eval(recipe)
    report = json.loads((folder / "eval.json").read_text())
    # per-recording results live in predictions.csv only (eval.json once held them as the
    # truncated text of numpy arrays)
    assert not {"labels", "predictions"} & set(report)
    assert (folder / "predictions.csv").is_file()

    # The same numbers computed directly from the checkpoint, without the stage.
    state = engine.load_checkpoint(recipe.stage_dir("train-tmkt") / "last.pt")
    model = build_snn(recipe.model, 3, SIZE, T).eval()
    model.load_state_dict(state["model"])
    test = EventDataset(toy_world / "prepared" / "dataset.h5", "test", recipe.data,
                        seed=recipe.seed, augment=False, with_static=False)
    x = torch.stack([test[i]["events"] for i in range(len(test))]).transpose(0, 1)
    labels = np.array([int(test[i]["label"]) for i in range(len(test))])
    with torch.no_grad():
        step_logits = model(x, head="event").logits.numpy()
    functional.reset_net(model)
    final = step_logits.mean(0)
    assert report["samples"] == 6
    assert report["top1"] == pytest.approx((final.argmax(1) == labels).mean())
    assert report["accuracy_vs_time_steps"] == pytest.approx(
        metrics.accuracy_vs_time_steps(step_logits, labels).tolist())
    assert np.array(report["confusion"]).sum() == 6
    assert report["top5"] == 1.0  # 3 classes
    assert set(report["per_class"]) == set(CLASSES)

    # Activity: every spiking layer of the network, rates in [0, 1]
    assert [r["layer"] for r in report["firing_rates"]] == [n for n, _ in model.spiking_layers()]
    assert all(0 <= r["firing_rate"] <= 1 for r in report["firing_rates"])
    assert all(r["firing_rate"] > 0.01 for r in report["firing_rates"])  # calibrated
    ops = report["operations"]
    assert ops["layers"][0]["kind"] == "mac" and ops["layers"][0]["layer"].endswith("conv1.0")
    assert all(r["kind"] == "ac" for r in ops["layers"][1:])
    # the first layer's dense MACs: outputs x inputs per output, at every step
    first = model.trunk.layers.conv1[0]
    outputs = first(torch.zeros(1, 2, SIZE, SIZE)).numel()
    assert ops["mac_ops"] == outputs * 2 * 9 * T
    energy = report["energy"]
    assert energy["energy_ac_pj"] == 0.9 and energy["energy_mac_pj"] == 4.6
    assert "Horowitz" in energy["source"]
    assert energy["snn_pj"] == pytest.approx(ops["ac_ops"] * 0.9 + ops["mac_ops"] * 4.6)
    assert report["throughput"]["samples_per_s"] > 0
    assert report["source"]["which"] == "last" and report["source"]["epoch"] == 2

    for name in ("confusion.png", "accuracy_vs_time_steps.png", "firing_rates.png"):
        assert_png(folder / name)
    manifest = read_manifest(folder)
    assert manifest["status"] == "complete"
    assert set(manifest["outputs"]) == {"eval", "confusion", "accuracy_vs_time_steps",
                                        "firing_rates", "predictions"}
    assert manifest["metrics"]["top1"] == report["top1"]
    # per-recording predictions of both heads (tmkt trains both), for grouped bootstraps;
    # the other head is read off the same trunk pass and counted in no operation
    rows = (folder / "predictions.csv").read_text().splitlines()
    assert rows[0] == "index,label,image_index,pred_event,pred_static"
    table = np.array([[int(v) for v in r.split(",")] for r in rows[1:]])
    np.testing.assert_array_equal(table[:, 0], np.arange(6))
    np.testing.assert_array_equal(table[:, 1], labels)
    np.testing.assert_array_equal(table[:, 3], final.argmax(1))
    with torch.no_grad():
        static = model(x, head="static").logits.numpy().mean(0)
    functional.reset_net(model)
    np.testing.assert_array_equal(table[:, 4], static.argmax(1))
    assert report["heads"]["static"] == pytest.approx((static.argmax(1) == labels).mean())
    assert report["test_head"] == "event" and report["heads"]["event"] == report["top1"]
    assert not any(r["layer"].startswith("heads.static") for r in ops["layers"])
    assert "top-1, static head" in text
    assert "top-1" in text and "accuracy after t time steps" in text and "lif1" in text
    # every count says its unit: the SNN's over its T steps, the ANN's over one frame
    assert f"synaptic ops (AC) / sample, {T} steps" in text
    assert "ANN MACs / sample, one frame" in text
    assert f"synaptic layers (per sample, summed over {T} steps)" in text
    # a second run is up to date
    _, again = _run_eval(recipe)
    assert "up to date" in again


def test_eval_of_ann_teacher(toy_world):
    recipe = toy_recipe(toy_world, "toy-ckd", "eval.source=pretrain-ann",
                        "pretrain_ann.backbone=resnet18")
    fake_training_run(recipe, "pretrain-ann")
    folder, text = _run_eval(recipe)
    report = json.loads((folder / "eval.json").read_text())
    assert report["source"]["kind"] == "ann" and report["samples"] == 6
    assert "accuracy_vs_time_steps" not in report and "firing_rates" not in report
    ops = report["operations"]
    assert ops["ac_ops"] == 0 and ops["mac_ops"] == ops["ann_macs"] > 0
    assert report["energy"]["ann_pj"] == pytest.approx(ops["ann_macs"] * 4.6)
    assert_png(folder / "confusion.png")
    assert not (folder / "firing_rates.png").exists()


def test_eval_of_a_run_folder_or_a_checkpoint_file(tmp_path):
    """`tmkt eval RUN_FOLDER` / `tmkt eval RUN_FOLDER/best.pt`: no recipe needed, the run can
    have been moved, and each checkpoint's evaluation sits beside the run in its own folder."""
    import shutil

    from typer.testing import CliRunner

    from tmkt_cli.cli import app

    make_prepared_dataset(tmp_path / "prepared")
    trained = fake_training_run(toy_recipe(tmp_path))
    moved = tmp_path / "elsewhere" / "toy" / "seed42" / "train-tmkt"
    shutil.copytree(trained, moved)
    runner = CliRunner()
    res = runner.invoke(app, ["eval", str(moved)])
    assert res.exit_code == 0, res.output
    last = json.loads((moved.parent / "eval" / "eval.json").read_text())
    res = runner.invoke(app, ["eval", str(moved / "best.pt")])
    assert res.exit_code == 0, res.output
    best = json.loads((moved.parent / "eval-best" / "eval.json").read_text())
    assert last["source"]["which"] == "last" and best["source"]["which"] == "best"
    assert Path(best["source"]["checkpoint"]).resolve() == (moved / "best.pt").resolve()
    assert not (trained.parent / "eval").exists()  # the original stays untouched

    for target, message in ((tmp_path / "prepared", "a prepare run; eval reads a training run"),
                            (tmp_path / "nowhere.pt", "checkpoint not found")):
        res = runner.invoke(app, ["eval", str(target)])
        assert res.exit_code == 2 and message in res.output, res.output
    loose = tmp_path / "loose" / "last.pt"
    loose.parent.mkdir()
    shutil.copy(moved / "last.pt", loose)
    res = runner.invoke(app, ["eval", str(loose)])
    assert res.exit_code == 2 and "not a tmkt run folder" in res.output


def test_progress_bar_on_a_terminal_only():
    from rich.console import Console

    from tmkt_cli.train.progress import track

    terminal = Console(force_terminal=True, record=True, width=80)
    assert list(track(range(5), 5, terminal, "eval: test split")) == list(range(5))
    assert "eval: test split" in terminal.export_text()
    piped = Console(force_terminal=False, record=True, width=80)
    assert list(track(iter("ab"), 2, piped, "cam")) == ["a", "b"]
    assert piped.export_text() == ""


def test_eval_refuses_another_dataset_at_the_runs_dataset_path(tmp_path, monkeypatch):
    """Issue 27: a run trained on the default relative prepared/ path, evaluated from another
    folder whose prepared/ holds another dataset, used it and exited 0. The run's recorded
    dataset hash decides, not the path: another dataset is refused, the run and its dataset
    moved together still work."""
    import shutil

    from typer.testing import CliRunner

    from tmkt_cli.cli import app

    make_prepared_dataset(tmp_path / "prepared")
    trained = fake_training_run(toy_recipe(tmp_path))
    other = tmp_path / "other"
    make_prepared_dataset(other / "prepared", n_test=4, seed=3)  # same path, other content
    runner = CliRunner()
    res = runner.invoke(app, ["eval", str(trained), "--set",
                              f"paths.dataset={other / 'prepared'}"])
    assert res.exit_code == 2, res.output
    assert "not the prepared dataset" in res.output and "was trained on" in res.output
    assert not (trained.parent / "eval").exists()
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path / "prepared", moved / "prepared")
    shutil.copytree(trained, moved / "toy" / "seed42" / "train-tmkt")
    res = runner.invoke(app, ["eval", str(moved / "toy" / "seed42" / "train-tmkt"), "--set",
                              f"paths.dataset={moved / 'prepared'}"])
    assert res.exit_code == 0, res.output


def test_figure_format_on_an_up_to_date_eval_redraws_from_eval_json(tmp_path, monkeypatch):
    """Issue 29: --figure-format wrote nothing on an up-to-date stage. The vector files are
    drawn from eval.json; nothing is recomputed and the recorded PNGs stay as they were."""
    from typer.testing import CliRunner

    from tmkt_cli.cli import app

    monkeypatch.setenv("TMKT_FIGURE_FORMATS", "")
    make_prepared_dataset(tmp_path / "prepared")
    trained = fake_training_run(toy_recipe(tmp_path))
    runner = CliRunner()
    assert runner.invoke(app, ["eval", str(trained)]).exit_code == 0
    folder = trained.parent / "eval"
    pngs = {p.name: p.read_bytes() for p in folder.glob("*.png")}
    res = runner.invoke(app, ["eval", str(trained), "--figure-format", "pdf"])
    assert res.exit_code == 0 and "up to date" in res.output, res.output
    assert "redrew 3 figure file(s) from eval.json" in res.output
    for name in pngs:
        assert (folder / name).read_bytes() == pngs[name]
        assert (folder / name).with_suffix(".pdf").read_bytes().startswith(b"%PDF")
    monkeypatch.setenv("TMKT_FIGURE_FORMATS", "")
    res = runner.invoke(app, ["eval", str(trained)])
    assert "up to date" in res.output and "redrew" not in res.output


def test_a_moved_project_is_evaluated_from_anywhere(tmp_path, monkeypatch):
    """Issue 27: a run records its dataset by path and hash; with the default relative paths,
    a project moved or copied whole and evaluated from another folder finds its dataset beside
    the run's ancestors, and the hash (not the path) decides it is the right one."""
    import shutil

    from typer.testing import CliRunner

    from tmkt_cli.cli import app

    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    make_prepared_dataset(project / "prepared")
    recipe_file = project / "toy.yaml"
    recipe_file.write_text(f"name: toy\npaths:\n  runs: runs\n  dataset: prepared\n"
                           f"prepare:\n  time_steps: {T}\n  size: {SIZE}\nmodel:\n"
                           f"  backbone: digitsnet\neval:\n  batch_size: 4\n")
    fake_training_run(load_recipe(recipe_file))
    moved = tmp_path / "archive" / "project-copy"
    shutil.copytree(project, moved)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    res = CliRunner().invoke(app, ["eval", str(moved / "runs" / "toy" / "seed42" /
                                               "train-tmkt")])
    assert res.exit_code == 0, res.output
    assert read_manifest(moved / "runs" / "toy" / "seed42" / "eval")["inputs"]["dataset"][
        "path"] == str((moved / "prepared").resolve())

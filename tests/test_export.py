"""tmkt export and tmkt predict: the plain-op network equals tmkt's on every backbone, the
exported TorchScript and ONNX files give tmkt's logits (to 1e-5) on the test split through the
head the run reports and run without tmkt or spikingjelly, and raw N-MNIST recordings written
in the real format get from `tmkt predict` the classes `tmkt eval` gives them."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from support import event_writers as writers
from test_eval import CLASSES, SIZE, T, make_prepared_dataset, toy_recipe_file
from typer.testing import CliRunner

from tmkt_cli.cli import app
from tmkt_cli.config import ModelConfig
from tmkt_cli.data.formats import make_events
from tmkt_cli.data.store import open_dataset
from tmkt_cli.models import build_snn
from tmkt_cli.models.plain import PlainLIF, plain_network
from tmkt_cli.runs.checkpoints import load_checkpoint, load_model

STEPS = ["--set", "train.epochs=0", "--set", "train.max_steps=6", "--set",
         "train.batch_size=4", "--set", "train.warmup_steps=1", "--set", "train.device=cpu",
         "--set", "train.log_every_steps=1", "--set", "train.eval_every_steps=3",
         "--set", "train.lr_scaling=false"]
runner = CliRunner()
# torch 2.13 marks TorchScript deprecated; it is what `--format torchscript` writes
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")


def tmkt(*args: str, code: int = 0):
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == code, res.output
    return res


def one_line_error(*args: str, message: str) -> None:
    res = tmkt(*args, code=2)
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], res.output


# --------------------------------------------------------------------------------------------
# The plain-op network
# --------------------------------------------------------------------------------------------

def firing(model: torch.nn.Module, x: torch.Tensor) -> list[float]:
    """The firing rate of every PlainLIF of ``model`` on ``x``."""
    rates = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: rates.append(float(out.mean())))
             for m in model.modules() if isinstance(m, PlainLIF)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return rates


@pytest.mark.parametrize("backbone,size,model", [
    ("digitsnet", 16, {}),
    ("digitsnet", 16, {"norm": "per_step", "fire": "gt", "heads": "residual", "tau": 1.5}),
    ("digitsnet", 16, {"test_head": "static", "threshold": 0.3}),
    ("scnn", 28, {"heads": "shared"}),
    ("scnn_kt", 28, {}),
    ("resnet18", 8, {}),
    ("resnet18_kt", 8, {"norm": "per_step"}),
])
def test_plain_network_computes_predict_bitwise(backbone, size, model):
    torch.manual_seed(0)
    snn = build_snn(ModelConfig(backbone=backbone, **model), 3, size, T)
    for m in snn.modules():  # statistics that make every layer fire
        if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.05, 0.3)
    snn.eval()
    x = torch.poisson(torch.full((T, 5, 2, size, size), 1.5),
                      generator=torch.Generator().manual_seed(1))
    plain = plain_network(snn)
    assert all(rate > 0 for rate in firing(plain, x))
    with torch.no_grad():
        got = plain(x)
    torch.testing.assert_close(got, snn.predict(x), rtol=0, atol=0)
    # what the export saves: scripted, any batch size
    scripted = torch.jit.script(plain)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x[:, :2]), snn.predict(x[:, :2]), rtol=0, atol=0)


# --------------------------------------------------------------------------------------------
# Trained runs exported to both formats, against tmkt on the test split
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("export")
    make_prepared_dataset(tmp / "prepared", n_train=12, n_test=10)
    return tmp


def split_frames(world: Path) -> torch.Tensor:
    with open_dataset(world / "prepared") as ds:
        return torch.from_numpy(ds.split("test")["frames"][()]).transpose(0, 1).contiguous()


def train(world: Path, name: str, *overrides: str) -> Path:
    recipe = toy_recipe_file(world, name)
    tmkt("train-tmkt", recipe, "--set", "method.name=kt", *STEPS, *overrides)
    return world / "runs" / name / "seed42" / "train-tmkt"


# Runs the TorchScript file in a fresh interpreter where tmkt and spikingjelly cannot be
# imported: the export must be self-contained.
WITHOUT_TMKT = """
import sys, importlib.abc
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tmkt_cli", "spikingjelly"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Refuse())
import numpy as np, torch
model = torch.jit.load(sys.argv[1])
x = torch.from_numpy(np.load(sys.argv[2]))
with torch.no_grad():
    np.save(sys.argv[3], model(x).numpy())
assert not any(m.startswith(("tmkt_cli", "spikingjelly")) for m in sys.modules)
"""


@pytest.mark.parametrize("heads,rule", [("separate", "validation"), ("shared", "validation"),
                                        ("separate", "static")])
def test_exported_logits_equal_tmkt_through_the_reported_head(world, heads, rule, tmp_path):
    import onnxruntime

    # threshold 0.15: every layer fires (about a quarter of the neuron-steps) after 6 steps
    folder = train(world, f"toy-export-{heads}-{rule}", "--set", f"model.heads={heads}",
                   "--set", "data.val_fraction=0.34", "--set", f"model.test_head={rule}",
                   "--set", "model.threshold=0.15")
    for fmt in ("torchscript", "onnx"):
        tmkt("export", folder, "--format", fmt)
    out = folder.parent / "export"
    card = json.loads((out / "model-card.json").read_text())
    model = load_model(folder)
    # the head the rule chose at the last evaluation (validation, two heads), else the rule's
    chosen = load_checkpoint(folder / "model.pt")["loop"]["head"] or \
        ("event" if rule == "validation" else rule)
    assert card["network"]["head"] == model.test_head == chosen
    assert card["network"]["head_rule"] == rule
    assert card["classes"] == CLASSES and card["input"]["shape"] == [T, "batch", 2, SIZE, SIZE]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert card["run"]["config_hash"] == manifest["config_hash"]
    assert card["accuracy"]["top1"] == pytest.approx(manifest["metrics"]["test_acc"])
    assert set(card["files"]) == {"torchscript", "onnx"}
    assert all(c["checked"] and c["passed"] for c in card["checks"].values())

    x = split_frames(world)
    expected = model.predict(x).numpy()
    assert min(firing(plain_network(model), x)) > 0.05
    np.save(tmp_path / "x.npy", x.numpy())
    subprocess.run([sys.executable, "-c", WITHOUT_TMKT, str(out / "model.torchscript.pt"),
                    str(tmp_path / "x.npy"), str(tmp_path / "y.npy")], check=True)
    scripted = np.load(tmp_path / "y.npy")
    session = onnxruntime.InferenceSession(str(out / "model.onnx"),
                                           providers=["CPUExecutionProvider"])
    onnx = np.concatenate([session.run(None, {"events": x[:, i:i + 3].numpy()})[0]
                           for i in range(0, x.shape[1], 3)])  # batches of another size
    for got in (scripted, onnx):
        assert got.shape == (x.shape[1], len(CLASSES))
        assert np.abs(got - expected).max() <= 1e-5
    if heads == "separate":  # the head matters: the other one gives other logits
        other = model.predict_heads(x)["static" if chosen == "event" else "event"].numpy()
        assert np.abs(other - expected).max() > 1e-2


@pytest.fixture(scope="module")
def event_only(world) -> Path:
    return train(world, "toy-export-event-only", "--set", "method.name=event_only")


def test_an_export_folder_holds_one_checkpoints_models(event_only, tmp_path):
    out = tmp_path / "exp"
    tmkt("export", event_only, "--format", "onnx", "--out", out)
    tmkt("export", event_only, "--out", out)
    card = json.loads((out / "model-card.json").read_text())
    assert set(card["files"]) == set(card["checks"]) == {"onnx", "torchscript"}
    # another checkpoint (last.pt: the same weights, another file) replaces them both
    tmkt("export", event_only / "last.pt", "--out", out)
    card = json.loads((out / "model-card.json").read_text())
    assert card["run"]["checkpoint"] == "last.pt" and set(card["files"]) == {"torchscript"}
    assert not (out / "model.onnx").exists()


def test_export_errors_are_one_line(world, event_only, tmp_path):
    folder = event_only
    one_line_error("export", folder, "--format", "tflite", message="--format: expected")
    one_line_error("export", tmp_path / "nowhere", message="not found")
    one_line_error("export", world / "prepared", message="holds a 'prepare' run")
    one_line_error("export", folder / "other.pt", message="not a checkpoint a run writes")
    # the toy dataset is not made of files tmkt reads: export works, predict says why not
    tmkt("export", folder, "--out", tmp_path / "exp")
    card = json.loads((tmp_path / "exp" / "model-card.json").read_text())
    assert card["integration"]["reader"] is None
    recording = tmp_path / "r.bin"
    writers.write_atis_bin(recording, make_events([0, 5], [1, 2], [1, 2], [0, 1]))
    one_line_error("predict", tmp_path / "exp", recording, message="has no recording files")
    (tmp_path / "exp" / "model-card.json").unlink()
    one_line_error("predict", tmp_path / "exp", recording, message="but no model-card.json")


# --------------------------------------------------------------------------------------------
# Raw recordings: N-MNIST .bin written in the real format, prepared, trained, evaluated
# --------------------------------------------------------------------------------------------

DIGITS = ("0", "1", "2")


def digit_events(digit: int, seed: int) -> np.ndarray:
    """A 34x34 ATIS recording whose events fill a band of rows that depends on the digit."""
    rng = np.random.default_rng(seed)
    n = 400
    t = np.sort(rng.integers(0, 200_000, n))
    y = rng.integers(10 * digit, 10 * digit + 12, n)
    return make_events(t, rng.integers(0, 34, n), y, rng.integers(0, 2, n))


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture(scope="module")
def nmnist_world(tmp_path_factory) -> Path:
    """Raw N-MNIST (3 digits, 4 training and 3 test recordings each, and MNIST idx files),
    prepared, trained a few steps, evaluated, and exported to both formats."""
    tmp = tmp_path_factory.mktemp("nmnist")
    raw = tmp / "raw"
    for split, count in (("Train", 4), ("Test", 3)):
        for d in DIGITS:
            (raw / split / d).mkdir(parents=True)
            for k in range(count):
                writers.write_atis_bin(raw / split / d / f"{k:05d}.bin",
                                       digit_events(int(d), 100 * int(d) + k + 7 * len(split)))
    for prefix in ("train", "t10k"):
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(idx_bytes(np.full((3, 28, 28), 9)))
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_bytes(np.arange(3)))
    tmkt("prepare", "nmnist", "--root", raw, "--out", tmp / "prepared", "-T", T,
         "--size", SIZE)
    recipe = tmp / "nmnist.yaml"
    recipe.write_text(f"name: nmnist-toy\nvariant: ''\npaths:\n  runs: {tmp}/runs\n"
                      f"  dataset: {tmp}/prepared\nprepare:\n  dataset: nmnist\n"
                      f"  time_steps: {T}\n  size: {SIZE}\nmodel:\n  backbone: digitsnet\n"
                      f"eval:\n  batch_size: 4\n")
    # 12 steps at threshold 0.15: a network that tells some digits apart, not all
    tmkt("train-tmkt", recipe, "--set", "method.name=event_only", *STEPS,
         "--set", "train.max_steps=12", "--set", "model.threshold=0.15")
    run = tmp / "runs" / "nmnist-toy" / "seed42" / "train-tmkt"
    tmkt("eval", run)
    tmkt("export", run)
    tmkt("export", run, "--format", "onnx", "--out", tmp / "onnx-only")
    return tmp


def test_predict_integrates_raw_recordings_as_prepare_did(nmnist_world):
    from tmkt_cli.stages.export import integrated

    card = json.loads((nmnist_world / "runs/nmnist-toy/seed42/export/model-card.json")
                      .read_text())
    settings = card["integration"]
    assert settings["dataset"] == "nmnist" and settings["reader"]["format"] == "atis"
    assert settings["reader"]["sensor_size"] == [34, 34]
    assert (settings["split_by"], settings["sensor_extent"]) == ("time", "declared")
    with open_dataset(nmnist_world / "prepared") as ds:
        sources, frames = ds.sources("test"), ds.split("test")["frames"][()]
    for source, stored in zip(sources, frames, strict=True):
        assert np.array_equal(integrated(nmnist_world / "raw" / source, card), stored)


@pytest.mark.parametrize("model", ["runs/nmnist-toy/seed42/train-tmkt",
                                   "runs/nmnist-toy/seed42/export", "onnx-only"])
def test_predict_gives_the_classes_eval_gives(nmnist_world, model):
    run = nmnist_world / "runs" / "nmnist-toy" / "seed42"
    rows = list(csv.DictReader(io.StringIO((run / "eval" / "predictions.csv").read_text())))
    head = json.loads((run / "eval" / "eval.json").read_text())["test_head"]
    with open_dataset(nmnist_world / "prepared") as ds:
        sources = ds.sources("test")
    files = [nmnist_world / "raw" / s for s in sources]
    res = tmkt("predict", nmnist_world / model, *files, "--json")
    records = [json.loads(line) for line in res.stdout.strip().splitlines()]
    assert [r["file"] for r in records] == [str(f) for f in files]
    assert [r["index"] for r in records] == [int(r[f"pred_{head}"]) for r in rows]
    assert len({r["index"] for r in records}) > 1  # not a network that answers one class
    for r in records:
        assert r["class"] == DIGITS[r["index"]]
        assert sum(r["probabilities"].values()) == pytest.approx(1.0)
        assert r["probability"] == max(r["probabilities"].values())
    table = tmkt("predict", nmnist_world / model, files[0]).stdout
    assert str(files[0]) in table and records[0]["class"] in table


def test_predict_errors_are_one_line(nmnist_world, tmp_path):
    export = nmnist_world / "runs" / "nmnist-toy" / "seed42" / "export"
    good = nmnist_world / "raw" / "Test" / "0" / "00000.bin"
    one_line_error("predict", export, tmp_path / "missing.bin", message="file not found")
    other = tmp_path / "recording.aedat"
    writers.write_aedat2(other, make_events([0, 1], [1, 2], [1, 2], [0, 1]))
    one_line_error("predict", export, good, other, message="not a ATIS .bin recording")
    damaged = tmp_path / "damaged.bin"
    damaged.write_bytes(good.read_bytes()[:-2])
    one_line_error("predict", export, damaged, message="damaged.bin")
    one_line_error("predict", nmnist_world / "prepared", good, message="holds a 'prepare' run")
    one_line_error("predict", tmp_path, good, message="neither a training run folder")
    (tmp_path / "model.onnx").write_bytes((nmnist_world / "onnx-only" / "model.onnx")
                                          .read_bytes())
    one_line_error("predict", tmp_path, good, message="but no model-card.json")
    (tmp_path / "model-card.json").write_text((export / "model-card.json").read_text())
    (tmp_path / "model.torchscript.pt").write_bytes(b"another model")
    one_line_error("predict", tmp_path, good, message="not the file its card describes")

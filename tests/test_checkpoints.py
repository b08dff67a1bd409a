"""The trained checkpoint: weights-only files beside the resumable state, and load_model used
from outside a run (a notebook, another program) with no recipe."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from test_eval import CLASSES, SIZE, T, make_prepared_dataset, toy_recipe_file
from typer.testing import CliRunner

from tmkt_cli.cli import app
from tmkt_cli.errors import TmktError
from tmkt_cli.runs import checkpoints
from tmkt_cli.runs.artifacts import read_manifest

STEPS = ["--set", "train.epochs=0", "--set", "train.max_steps=3", "--set",
         "train.batch_size=4", "--set", "train.warmup_steps=1", "--set", "train.device=cpu",
         "--set", "train.eval_every_steps=2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ckpt")
    make_prepared_dataset(tmp / "prepared", n_train=12, n_test=6)
    res = CliRunner().invoke(app, ["train-tmkt", str(toy_recipe_file(tmp, "toy-tmkt")),
                                   *STEPS])
    assert res.exit_code == 0, res.output
    return tmp / "runs" / "toy-tmkt" / "seed42" / "train-tmkt"


def test_weights_only_files_beside_the_resumable_state(trained):
    last = checkpoints.load_checkpoint(trained / checkpoints.LAST)
    assert set(checkpoints.TRAINING_STATE) <= set(last)
    for name in (checkpoints.BEST, checkpoints.MODEL):
        state = checkpoints.load_checkpoint(trained / name)
        assert not set(checkpoints.TRAINING_STATE) & set(state), name
        assert state["model_info"] == last["model_info"]
    model = checkpoints.load_checkpoint(trained / checkpoints.MODEL)["model"]
    assert all(torch.equal(model[k], last["model"][k]) for k in last["model"])
    assert (trained / checkpoints.MODEL).stat().st_size < (trained / checkpoints.LAST).stat().st_size
    assert set(read_manifest(trained)["outputs"]) >= {"checkpoint", "best", "model"}


def test_load_model_from_outside_a_run(trained, tmp_path):
    """A fresh interpreter in another folder: no recipe, no prepared dataset, just the file."""
    code = f"""
import torch
from tmkt_cli.runs.checkpoints import load_model
for source in ({str(trained)!r}, {str(trained / 'best.pt')!r}):
    model = load_model(source)
    assert not model.training
    x = torch.ones({T}, 2, 2, {SIZE}, {SIZE})
    with torch.no_grad():
        a, b = model.predict(x), model.predict(x)
    assert a.shape == (2, {len(CLASSES)}) and torch.equal(a, b)  # neurons reset between calls
    assert model.tmkt_info["classes"] == {CLASSES!r}
print("ok")
"""
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


def test_load_model_refuses_what_is_not_a_model(trained, tmp_path):
    with pytest.raises(TmktError, match="not found"):
        checkpoints.load_model(tmp_path / "missing.pt")
    with pytest.raises(TmktError, match="which='latest'"):
        checkpoints.load_model(trained, which="latest")
    junk = tmp_path / "junk.pt"
    torch.save({"weights": torch.zeros(2)}, junk)
    with pytest.raises(TmktError, match="not a tmkt checkpoint"):
        checkpoints.load_model(junk)


def tampered(trained, tmp_path, edit) -> str:
    """A copy of the run's model.pt that ``edit(state)`` changed by hand."""
    state = torch.load(trained / checkpoints.MODEL, weights_only=True)
    edit(state)
    path = tmp_path / "tampered.pt"
    torch.save(state, path)
    return str(path)


def info_set(key, value):
    return lambda state: state["model_info"].__setitem__(key, value)


def info_del(key):
    return lambda state: state["model_info"].pop(key)


@pytest.mark.parametrize("edit,pattern", [
    (info_set("num_classes", -3), r"model_info\.num_classes is -3, expected a positive integer"),
    (info_set("num_classes", 0), r"model_info\.num_classes is 0"),
    (info_set("time_steps", 2.5), r"model_info\.time_steps is 2\.5, expected a positive integer"),
    (info_set("time_steps", "8"), r"model_info\.time_steps is '8'"),
    (info_set("size", True), r"model_info\.size is True"),
    (info_del("num_classes"), r"model_info\.num_classes is missing"),
    (info_del("time_steps"), r"model_info\.time_steps is missing"),
    (info_del("backbone"), r"model_info\.backbone is None, expected a backbone name"),
    (info_set("classes", ["a"]), r"model_info\.classes does not list num_classes=3"),
    (info_set("model", ["x"]), r"model_info\.model is a list"),
    (lambda s: s["model_info"]["model"].__setitem__("tau", "abc"),
     r"model_info\.model: recipe key 'model\.tau': expected a number"),
    (lambda s: s["model_info"]["model"].__setitem__("backbone", "nonet"),
     r"model_info: recipe key 'model\.backbone': unknown backbone 'nonet'"),
    (lambda s: s.pop("model"), r"holds no weights \(no 'model' state dict\)"),
    (lambda s: s.__setitem__("model", {"x": torch.zeros(1)}), r"weights do not fit"),
    (lambda s: s.__setitem__("model_info", [1, 2]), r"model_info kind None"),
    (lambda s: s.__setitem__("loop", {"head": "sideways"}), r"loop\.head 'sideways'"),
], ids=["negative-classes", "zero-classes", "float-T", "text-T", "bool-size",
        "no-num-classes", "no-T", "no-backbone", "classes-of-another-length",
        "model-section-a-list", "model-value-of-another-type", "unknown-backbone",
        "no-weights", "weights-of-another-net", "model-info-a-list", "unknown-head"])
def test_load_model_refuses_a_tampered_checkpoint_naming_the_file(trained, tmp_path, edit,
                                                                  pattern):
    """A hand-edited or damaged model_info is one TmktError naming the file and the entry,
    never a bare RuntimeError or ValueError from the network's constructor."""
    path = tampered(trained, tmp_path, edit)
    with pytest.raises(TmktError, match=pattern) as e:
        checkpoints.load_model(path)
    assert str(e.value).startswith(f"{path}: ")


def flipped(path, offset: int = -100) -> None:
    """One bit of ``path`` flipped, its size kept (a weight's exponent bit, a disk error)."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["model.pt", "best.pt", "last.pt"])
def test_a_checkpoint_that_changed_after_its_run_completed_is_refused(trained, tmp_path, name):
    """load_model, eval and cam verify a checkpoint against the sha256 its run's manifest
    recorded: one flipped bit, or the same file of another seed, is refused naming it."""
    import shutil

    run = tmp_path / "copy" / "seed42" / "train-tmkt"
    shutil.copytree(trained, run)
    assert checkpoints.verify_checkpoint(run / name)
    flipped(run / name)
    with pytest.raises(TmktError, match=rf"{name}: not the file its run recorded \(sha256 "):
        checkpoints.load_model(run / name)
    if name != "model.pt":  # eval reads last.pt for model.pt (the same weights)
        res = CliRunner().invoke(app, ["eval", str(run / name)])
        assert res.exit_code == 2 and "not the file its run recorded" in res.output, res.output


def test_a_checkpoint_copied_from_another_run_is_refused(trained, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    shutil.copy(run / "last.pt", run / "model.pt")  # another step's weights, another size
    with pytest.raises(TmktError, match=r"model\.pt: not the file its run recorded \(\d+ "
                                        r"bytes; its manifest\.json says \d+ bytes\)"):
        checkpoints.load_model(run)


def test_load_model_says_when_there_is_nothing_to_verify_against(trained, tmp_path):
    import shutil

    loose = tmp_path / "loose.pt"
    shutil.copy(trained / "model.pt", loose)
    with pytest.warns(UserWarning, match="not verified"):
        checkpoints.load_model(loose)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        checkpoints.load_model(trained)  # verified: no warning

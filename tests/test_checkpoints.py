"""The trained checkpoint: weights-only files beside the resumable state, and load_model used
from outside a run (a notebook, another program) with no recipe."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from test_eval import CLASSES, SIZE, T, make_prepared_dataset, toy_recipe_file
from typer.testing import CliRunner

from tmkt_cli import checkpoints
from tmkt_cli.artifacts import read_manifest
from tmkt_cli.cli import app
from tmkt_cli.errors import TmktError

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
from tmkt_cli.checkpoints import load_model
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

"""Kill-safety at every write: a SIGKILL right after each rename that puts a finished file (or
a manifest) in place, for every stage, and then the same command again must end complete and
equal to an uninterrupted run; a third run says "up to date".

Every file tmkt writes with a final name goes through ``os.replace`` (``artifacts.atomic_path``
and the HDF5 writer's final rename), so a driver that wraps ``os.replace`` and calls
``os._exit`` after the k-th successful rename kills the process exactly between write k and
write k+1 (no ``finally``, no ``atexit``: what SIGKILL does). The uninterrupted run, with the
same wrapper counting, gives the list of writes; k runs over all of them.

The full set (every write of prepare, pretrain-ann, distill, train-tmkt, eval and cam) is
marked ``faults``; ``make test`` runs a representative subset: train-tmkt killed between the
final ``last.pt`` and ``best.pt`` (the bug of issue 15) and between its two last writes, eval
between ``eval.json`` and its manifest.

The second half checks "up to date" against outputs removed or changed after completion
(in process, through the CLI).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_eval import make_prepared_dataset
from typer.testing import CliRunner

from tmkt_cli.cli import app
from tmkt_cli.runs.artifacts import read_manifest, verify_outputs
from tmkt_cli.train import engine

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
KILLED = 137

DRIVER = """\
import os, sys
after = int(os.environ.get("KILL_AFTER_RENAME", "0"))
log = os.environ.get("RENAME_LOG")
real_replace = os.replace
count = 0
def replace(src, dst, *args, **kwargs):
    global count
    real_replace(src, dst, *args, **kwargs)
    count += 1
    if log:
        with open(log, "a") as f:
            f.write(os.fspath(dst) + "\\n")
    if count == after:
        os._exit(137)
os.replace = replace
sys.argv = ["tmkt", *sys.argv[1:]]
from tmkt_cli.cli import main
main()
"""

RECIPE = """\
name: kp
paths:
  runs: {runs}
  dataset: {prepared}
model:
  backbone: digitsnet
data:
  crop_padding: 1
  val_fraction: 0.34
train:
  epochs: 2
  batch_size: 3
  lr: 1.0e-3
  lr_scaling: false
  warmup_steps: 1
  log_every_steps: 1
  device: cpu
pretrain_ann:
  backbone: digitsnet
  train:
    epochs: 2
    batch_size: 3
    lr: 1.0e-3
    lr_scaling: false
    warmup_steps: 1
    device: cpu
distill:
  switch_at: 0.5
eval:
  batch_size: 4
cam:
  samples: [0, 1]
"""
PREPARE = ["prepare", "digits", "-T", "2", "--size", "8",
           "-s", "prepare.emulator.canvas=10", "-s", "prepare.emulator.image_size=8",
           "-s", "prepare.emulator.duration_ms=20", "-s", "prepare.emulator.sample_rate_hz=500",
           "-s", "prepare.flush_every=16"]
UPSTREAM = {"pretrain-ann": [], "train-tmkt": [], "distill": ["pretrain-ann"],
            "eval": ["train-tmkt"], "cam": ["train-tmkt"]}


def driver(tmp: Path, args: list[str], kill_after: int = 0, log: Path | None = None
           ) -> subprocess.CompletedProcess:
    tmp.mkdir(parents=True, exist_ok=True)
    script = tmp / "driver.py"
    if not script.exists():
        script.write_text(DRIVER)
    env = {**ENV, "KILL_AFTER_RENAME": str(kill_after)}
    if log is not None:
        env["RENAME_LOG"] = str(log)
    return subprocess.run([sys.executable, str(script), *args], env=env, cwd=tmp,
                          capture_output=True, text=True, timeout=600)


class World:
    """A tiny prepared dataset, the recipe, and one uninterrupted run of each stage (with
    the list of renames each made)."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        make_prepared_dataset(tmp / "prepared", n_train=6, n_test=4)
        self.recipe = tmp / "kp.yaml"
        self.recipe.write_text(RECIPE.format(runs=tmp / "runs", prepared=tmp / "prepared"))
        self.writes: dict[str, list[str]] = {}

    def args(self, stage: str, runs: Path) -> list[str]:
        if stage == "prepare":
            return [*PREPARE, "--out", str(runs / "prepared")]
        return [stage, str(self.recipe), "--set", f"paths.runs={runs}"]

    def folder(self, stage: str, runs: Path) -> Path:
        return runs / "prepared" if stage == "prepare" else runs / "kp" / "seed42" / stage

    def reference(self, stage: str) -> Path:
        """The uninterrupted run of ``stage`` (made on first use, upstream first)."""
        runs = self.tmp / "runs"
        folder = self.folder(stage, runs)
        if stage not in self.writes:
            for up in UPSTREAM.get(stage, []):
                self.reference(up)
            log = self.tmp / f"{stage}.writes"
            result = driver(self.tmp, self.args(stage, runs), log=log)
            assert result.returncode == 0, result.stderr
            self.writes[stage] = log.read_text().splitlines()
        return folder

    def fresh_runs(self, stage: str, where: Path) -> Path:
        """A runs folder holding copies of ``stage``'s upstream runs and nothing else."""
        runs = where / "runs"
        for up in UPSTREAM.get(stage, []):
            shutil.copytree(self.folder(up, self.tmp / "runs"), self.folder(up, runs))
        return runs


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return World(tmp_path_factory.mktemp("kill-points"))


# --------------------------------------------------------------------------------------------
# What "equal to the uninterrupted run" means per stage
# --------------------------------------------------------------------------------------------

def same_checkpoint(a: Path, b: Path) -> None:
    ours, theirs = engine.load_checkpoint(a), engine.load_checkpoint(b)
    assert ours["model"].keys() == theirs["model"].keys()
    for name in ours["model"]:
        assert torch.equal(ours["model"][name], theirs["model"][name]), (a, name)
    assert ours["loop"] == theirs["loop"], a


def same_training(folder: Path, reference: Path) -> None:
    same_checkpoint(folder / engine.LAST, reference / engine.LAST)
    same_checkpoint(folder / engine.BEST, reference / engine.BEST)
    # the recipe holds out a validation split, so best_test.pt is a file of its own
    same_checkpoint(folder / engine.BEST_TEST, reference / engine.BEST_TEST)
    outputs = read_manifest(folder)["outputs"]
    assert outputs["best_test"]["path"] == engine.BEST_TEST
    ours = [(r["kind"], r["step"]) for r in engine.read_metrics(folder)]
    assert ours == [(r["kind"], r["step"]) for r in engine.read_metrics(reference)]
    assert read_manifest(folder)["metrics"] == read_manifest(reference)["metrics"]


def same_eval(folder: Path, reference: Path) -> None:
    ours, theirs = (json.loads((f / "eval.json").read_text()) for f in (folder, reference))
    for key in ("top1", "top5", "loss", "per_class", "confusion", "accuracy_vs_time_steps",
                "firing_rates", "operations", "samples"):
        assert ours[key] == theirs[key], key


def same_cam(folder: Path, reference: Path) -> None:
    with np.load(folder / "maps.npz") as ours, np.load(reference / "maps.npz") as theirs:
        assert sorted(ours.files) == sorted(theirs.files)
        for name in ours.files:
            assert np.array_equal(ours[name], theirs[name]), name


def same_dataset(folder: Path, reference: Path) -> None:
    from tmkt_cli.data.store import iter_arrays

    for (name, a), (_, b) in zip(iter_arrays(folder / "dataset.h5"),
                                 iter_arrays(reference / "dataset.h5"), strict=True):
        assert np.array_equal(a, b), name
    assert read_manifest(folder)["outputs"]["dataset"]["sha256"] == \
        read_manifest(reference)["outputs"]["dataset"]["sha256"]


SAME = {"prepare": same_dataset, "pretrain-ann": same_training, "distill": same_training,
        "train-tmkt": same_training, "eval": same_eval, "cam": same_cam}


def kill_after_write(world: World, stage: str, k: int, where: Path) -> None:
    """Kill ``stage`` right after its k-th rename, run it again, compare, run a third time."""
    reference = world.reference(stage)
    runs = world.fresh_runs(stage, where)
    folder = world.folder(stage, runs)
    killed = driver(where, world.args(stage, runs), kill_after=k)
    assert killed.returncode == KILLED, (k, killed.stderr[-2000:])
    again = driver(where, world.args(stage, runs))
    assert again.returncode == 0, (k, again.stderr[-3000:])
    assert "Traceback" not in again.stderr
    manifest = read_manifest(folder)
    assert manifest["status"] == "complete"
    assert verify_outputs(folder, manifest, full=True) == {}
    SAME[stage](folder, reference)
    third = driver(where, world.args(stage, runs))
    assert third.returncode == 0 and "up to date" in third.stderr, third.stderr


def write_index(world: World, stage: str, name: str, occurrence: int = -1) -> int:
    """The 1-based index of a write of ``name`` in the uninterrupted run (the last by
    default)."""
    world.reference(stage)
    hits = [i + 1 for i, path in enumerate(world.writes[stage]) if Path(path).name == name]
    return hits[occurrence]


# --------------------------------------------------------------------------------------------
# The fast subset (make test)
# --------------------------------------------------------------------------------------------

def test_train_killed_between_last_and_best(world, tmp_path):
    """The bug of issue 15: killed after last.pt, before best.pt of the same evaluation (the
    first evaluation always improves, so its pair is there whatever the accuracies)."""
    world.reference("train-tmkt")
    names = [Path(p).name for p in world.writes["train-tmkt"]]
    k = next(i + 1 for i in range(len(names) - 1)
             if names[i:i + 2] == [engine.LAST, engine.BEST])
    kill_after_write(world, "train-tmkt", k, tmp_path)


def test_train_killed_between_best_and_best_test_at_the_last_step(world, tmp_path):
    """Issue 27: a kill after best.pt, before best_test.pt of the last evaluation left an older
    best_test.pt under a manifest that said complete."""
    world.reference("train-tmkt")
    names = [Path(p).name for p in world.writes["train-tmkt"]]
    k = max(i + 1 for i in range(len(names) - 1)
            if names[i:i + 2] == [engine.BEST, engine.BEST_TEST])
    kill_after_write(world, "train-tmkt", k, tmp_path)


def test_train_killed_before_its_manifest_says_complete(world, tmp_path):
    world.reference("train-tmkt")
    kill_after_write(world, "train-tmkt", len(world.writes["train-tmkt"]) - 1, tmp_path)


def test_eval_killed_between_eval_json_and_manifest(world, tmp_path):
    kill_after_write(world, "eval", write_index(world, "eval", "eval.json"), tmp_path)


# --------------------------------------------------------------------------------------------
# The full set (make test-faults): every write of every stage
# --------------------------------------------------------------------------------------------

@pytest.mark.faults
@pytest.mark.parametrize("stage", ["prepare", "pretrain-ann", "distill", "train-tmkt", "eval",
                                   "cam"])
def test_every_write_of_every_stage(world, stage, tmp_path):
    world.reference(stage)
    writes = world.writes[stage]
    assert writes and Path(writes[-1]).name == "manifest.json"
    for k in range(1, len(writes)):  # the last write is the complete manifest: nothing after
        kill_after_write(world, stage, k, tmp_path / f"k{k}")


# --------------------------------------------------------------------------------------------
# "Up to date" verifies the outputs
# --------------------------------------------------------------------------------------------

runner = CliRunner()


def run_cli(*args: str):
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output, result.output
    return result


def copy_of(world: World, stage: str, where: Path) -> tuple[Path, list[str]]:
    world.reference(stage)
    runs = where / "runs"
    for s in [*UPSTREAM.get(stage, []), stage]:
        shutil.copytree(world.folder(s, world.tmp / "runs"), world.folder(s, runs))
    return world.folder(stage, runs), world.args(stage, runs)


@pytest.mark.parametrize("damage", ["delete-best", "delete-last", "truncate-last",
                                    "same-size-other-best", "delete-best-test"])
def test_damaged_training_output_is_not_up_to_date(world, tmp_path, damage):
    folder, args = copy_of(world, "train-tmkt", tmp_path)
    reference = world.reference("train-tmkt")
    if damage == "delete-best":
        (folder / engine.BEST).unlink()
    elif damage == "delete-last":
        (folder / engine.LAST).unlink()
    elif damage == "delete-best-test":  # rebuilt, never pointed at best.pt
        (folder / engine.BEST_TEST).unlink()
    elif damage == "truncate-last":
        data = (folder / engine.LAST).read_bytes()
        (folder / engine.LAST).write_bytes(data[: len(data) // 2])
    else:  # same size, other bytes: only the hash tells
        data = bytearray((folder / engine.BEST).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (folder / engine.BEST).write_bytes(bytes(data))
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    assert "it said complete, but" in result.output and "up to date" not in result.output
    same_training(folder, reference)
    manifest = read_manifest(folder)
    assert manifest["status"] == "complete" and verify_outputs(folder, manifest, True) == {}
    assert "up to date" in run_cli(*args).output


def test_deleted_eval_json_is_written_again(world, tmp_path):
    folder, args = copy_of(world, "eval", tmp_path)
    (folder / "eval.json").unlink()
    result = run_cli(*args)
    assert result.exit_code == 0 and "eval.json is missing" in result.output, result.output
    same_eval(folder, world.reference("eval"))


def test_verify_rehashes_large_outputs(world, tmp_path, monkeypatch):
    """Above SMALL_FILE_BYTES only the size is checked, unless --verify."""
    from tmkt_cli.runs import artifacts

    folder, args = copy_of(world, "train-tmkt", tmp_path)
    data = bytearray((folder / engine.LAST).read_bytes())
    data[-100] ^= 0x01
    (folder / engine.LAST).write_bytes(bytes(data))
    monkeypatch.setattr(artifacts, "SMALL_FILE_BYTES", 16)
    assert "up to date" in run_cli(*args).output
    result = run_cli(*args, "--verify")
    assert "has another content than recorded" in result.output, result.output
    same_training(folder, world.reference("train-tmkt"))

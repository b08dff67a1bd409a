"""Bad input through the real command line: every mistake a user can make with a file, a
folder, a recipe or a run gets one line naming what and where, exit code 2 and no traceback.

One table, one test: each case builds its tiny bad input in ``tmp_path`` (event files in the
real formats through ``tmkt_cli.data.events``, images, recipes, run folders made with the
helpers of test_eval.py), runs a ``tmkt`` command in-process through typer's runner and
checks the single ``error:`` line against the case's pattern.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import re
import shutil
import sys
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from tmkt_cli.artifacts import read_manifest, write_json
from tmkt_cli.cli import app
from tmkt_cli.data import events as ev

sys.path.insert(0, str(Path(__file__).parent))
from test_eval import (  # noqa: E402
    SIZE,
    T,
    fake_training_run,
    make_prepared_dataset,
    toy_recipe,
    toy_recipe_file,
)

REPO = Path(__file__).resolve().parent.parent
DIGITS_RECIPE = str(REPO / "recipes" / "digits" / "tmkt.yaml")
TINY_PREPARE = ["-T", "2", "--size", "8"]
"""Recorded datasets: T and S as small as they go, so a case that gets past its error runs
in a blink (and the test says so)."""
TINY_EMULATOR = [*TINY_PREPARE, "-s", "prepare.emulator.canvas=10",
                 "-s", "prepare.emulator.image_size=8", "-s", "prepare.emulator.duration_ms=20",
                 "-s", "prepare.emulator.sample_rate_hz=500"]


# --------------------------------------------------------------------------------------------
# Tiny raw trees in the real formats
# --------------------------------------------------------------------------------------------

def tagged_events(tag: int, n: int = 6) -> np.ndarray:
    return ev.make_events(np.arange(n) * 1000, np.full(n, tag % 30), np.arange(n) % 30,
                          np.arange(n) % 2)


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def jpeg_bytes(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (8, 8), value).save(buffer, format="JPEG")
    return buffer.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def tar_gz_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def write_files(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def nmnist_files() -> dict[str, bytes]:
    """N-MNIST digits 0 and 1, two recordings each per split, and the four MNIST idx files."""
    files = {f"{split}/{digit}/{k:05d}.bin": ev.encode_atis_bin(tagged_events(10 * digit + k))
             for split in ("Train", "Test") for digit in (0, 1) for k in (1, 2)}
    images = np.arange(4)[:, None, None] * np.ones((4, 28, 28))
    for prefix in ("train", "t10k"):
        files[f"{prefix}-images-idx3-ubyte"] = idx_bytes(images)
        files[f"{prefix}-labels-idx1-ubyte"] = idx_bytes(np.array([0, 1, 0, 1]))
    return files


def ncaltech_files(classes=("ant", "bee"), count: int = 3) -> dict[str, bytes]:
    files = {}
    for c, name in enumerate(classes):
        for k in range(1, count + 1):
            files[f"Caltech101/{name}/image_{k:04d}.bin"] = ev.encode_atis_bin(
                tagged_events(10 * c + k))
            files[f"101_ObjectCategories/{name}/image_{k:04d}.jpg"] = jpeg_bytes(20 * k)
    return files


def dvsgesture_files() -> dict[str, bytes]:
    return {f"{folder}/{user}/{label}.npy": ev.encode_dvsgesture_npy(tagged_events(label))
            for folder, user in (("ibmGestureTrain", "user01_led"),
                                 ("ibmGestureTest", "user24_led"))
            for label in (0, 1)}


def image_files(per_class: int = 3) -> dict[str, bytes]:
    files = {}
    for c, name in enumerate(("cat", "dog")):
        for i in range(per_class):
            buffer = io.BytesIO()
            Image.new("RGB", (12, 9), (40 * i, 90 * c, 200)).save(buffer, format="PNG")
            files[f"{name}/img{i}.png"] = buffer.getvalue()
    return files


def cut(data: bytes, keep: int) -> bytes:
    return data[:keep]


# --------------------------------------------------------------------------------------------
# Runs: a tiny prepared dataset and finished (fake) runs, shared by the cases
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """``prepared/`` (a tiny dataset.h5) and a finished train-tmkt run of a digitsnet for the
    recipe ``toy-tmkt.yaml``."""
    tmp = tmp_path_factory.mktemp("bad-input")
    make_prepared_dataset(tmp / "prepared")
    fake_training_run(toy_recipe(tmp))
    return tmp


def recipe_in(world: Path, name: str) -> Path:
    """A recipe of the toy world under a new name (so its runs get their own folders)."""
    return toy_recipe_file(world, name)


def prepared_copy(world: Path, tmp: Path, edit: Callable[[Path], None]) -> Path:
    """A copy of the prepared dataset folder whose dataset.h5 ``edit`` changes; the manifest is
    made to agree with the new file's size, as if the file had been put there whole."""
    folder = tmp / "prepared-edited"
    shutil.copytree(world / "prepared", folder, ignore=shutil.ignore_patterns(".lock"))
    h5 = folder / "dataset.h5"
    edit(h5)
    manifest = read_manifest(folder)
    manifest["outputs"]["dataset"]["size"] = h5.stat().st_size
    write_json(folder / "manifest.json", manifest)
    return folder


def set_attr(name: str, value) -> Callable[[Path], None]:
    def edit(h5: Path) -> None:
        import h5py
        with h5py.File(h5, "r+") as f:
            f.attrs[name] = value
    return edit


def other_tool_file(h5: Path) -> None:
    import h5py
    h5.unlink()
    with h5py.File(h5, "w") as f:
        f.attrs["tool"] = "tonic"
        f.create_dataset("events", data=np.zeros((4, 4)))


def truncate_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def run_with_status(world: Path, name: str, stage: str, status: str) -> Path:
    """A finished fake run of ``stage`` whose manifest then says ``status``."""
    recipe = toy_recipe(world, name)
    folder = fake_training_run(recipe, stage)
    manifest = read_manifest(folder)
    manifest["status"] = status
    write_json(folder / "manifest.json", manifest)
    return folder


class CodeRunner:
    """An object whose unpickling would run a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def evil_pickle(path: Path, marker: Path) -> Path:
    import torch
    torch.save({"format": "tmkt-checkpoint", "version": 1, "model": CodeRunner(marker)}, path)
    return path


def tamper_checkpoint(world: Path, name: str, write: Callable[[Path], None]) -> None:
    """Replace the last.pt of a finished run (and its manifest entry, so only the contents
    give it away)."""
    folder = fake_training_run(toy_recipe(world, name))
    write(folder / "last.pt")
    manifest = read_manifest(folder)
    manifest["outputs"]["checkpoint"]["size"] = (folder / "last.pt").stat().st_size
    write_json(folder / "manifest.json", manifest)


# --------------------------------------------------------------------------------------------
# The cases
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Path, Path], list[str]]
    """(tmp_path, world) -> the tmkt arguments."""
    pattern: str
    """A regex the one error line must match (searched)."""
    untouched: str = ""
    """A folder (relative to the case's folder) the refused command must not have created."""


def prepare(dataset: str, files: dict[str, bytes], *extra: str) -> Callable:
    def build(tmp: Path, _world: Path) -> list[str]:
        write_files(tmp / "raw", files)
        return ["prepare", dataset, "--root", str(tmp / "raw"), "--out", str(tmp / "out"),
                *(TINY_EMULATOR if dataset == "images" else TINY_PREPARE), *extra]
    return build


def recipe_text(text: str, command: str = "train-tmkt") -> Callable:
    def build(tmp: Path, _world: Path) -> list[str]:
        path = tmp / "recipe.yaml"
        path.write_text(text)
        return [command, str(path)]
    return build


def recipe_bytes(data: bytes) -> Callable:
    def build(tmp: Path, _world: Path) -> list[str]:
        path = tmp / "recipe.yaml"
        path.write_bytes(data)
        return ["train-tmkt", str(path)]
    return build


def cli(*args: str) -> Callable:
    return lambda tmp, _world: [a.replace("{tmp}", str(tmp)) for a in args]


def nmnist_with(**changes: bytes | None) -> dict[str, bytes]:
    files = nmnist_files()
    for name, data in changes.items():
        name = name.replace("__", "/").replace("_bin", ".bin")
        if data is None:
            files.pop(name)
        else:
            files[name] = data
    return files


GOOD_ATIS = ev.encode_atis_bin(tagged_events(3))


def ncaltech_with(files: dict[str, bytes]) -> dict[str, bytes]:
    return {**ncaltech_files(), **files}


def ncaltech_zipped(members: dict[str, bytes]) -> dict[str, bytes]:
    """Recordings as Caltech101.zip (the release's archive) plus extra members."""
    recordings = {k: v for k, v in ncaltech_files().items() if k.startswith("Caltech101/")}
    images = {k: v for k, v in ncaltech_files().items() if not k.startswith("Caltech101/")}
    return {"Caltech101.zip": zip_bytes({**recordings, **members}), **images}


def eval_world(name: str, *overrides: str, stage: str = "eval",
               prepare_run: Callable[[Path, str], None] | None = None) -> Callable:
    def build(tmp: Path, world: Path) -> list[str]:
        if prepare_run is not None:
            prepare_run(world, name)
        sets = [x for o in overrides for x in ("--set", o.replace("{tmp}", str(tmp)))]
        return [stage, str(recipe_in(world, name)), *sets]
    return build


def other_class_count(world: Path, name: str) -> None:
    from tmkt_cli.models import build_snn
    from tmkt_cli.checkpoints import snn_model_info

    recipe = toy_recipe(world, name)
    classes = [f"c{i}" for i in range(5)]
    fake_training_run(recipe, model=build_snn(recipe.model, 5, SIZE, T),
                      model_info=snn_model_info(recipe, classes, SIZE, T))


def teacher_with_status(status: str) -> Callable:
    def build(tmp: Path, world: Path) -> list[str]:
        name = f"teacher-{status}"
        folder = run_with_status(world, name, "pretrain-ann", status)
        return ["distill", str(recipe_in(world, f"student-{status}")),
                "--set", f"distill.teacher={folder}"]
    return build


def teacher_of_other_stage(tmp: Path, world: Path) -> list[str]:
    folder = run_with_status(world, "not-a-teacher", "train-tmkt", "complete")
    return ["distill", str(recipe_in(world, "student-wrong")), "--set",
            f"distill.teacher={folder}"]


def dataset_edited(edit: Callable[[Path], None]) -> Callable:
    def build(tmp: Path, world: Path) -> list[str]:
        folder = prepared_copy(world, tmp, edit)
        return ["train-tmkt", str(recipe_in(world, f"ds-{tmp.name[:40]}")),
                "--set", f"paths.dataset={folder}", "--set", f"paths.runs={tmp}/runs"]
    return build


def dataset_is_a_bare_h5(tmp: Path, world: Path) -> list[str]:
    h5 = tmp / "elsewhere.h5"
    shutil.copy(world / "prepared" / "dataset.h5", h5)
    return ["train-tmkt", str(recipe_in(world, "ds-bare")), "--set", f"paths.dataset={h5}",
            "--set", f"paths.runs={tmp}/runs"]


def checkpoint_replaced(write: Callable[[Path], None], name: str) -> Callable:
    def build(tmp: Path, world: Path) -> list[str]:
        tamper_checkpoint(world, name, write)
        return ["eval", str(recipe_in(world, name))]
    return build


def evil_checkpoint(path: Path) -> None:
    evil_pickle(path, path.parent / "PWNED")


def init_weights_evil(tmp: Path, world: Path) -> list[str]:
    path = evil_pickle(tmp / "imagenet.pt", tmp / "PWNED")
    return ["pretrain-ann", str(recipe_in(world, "teacher-init")), "--set",
            f"pretrain_ann.init_weights={path}", "--set", f"paths.runs={tmp}/runs"]


def cifar_batches(**replace: bytes) -> dict[str, bytes]:
    """The six CIFAR-10 python batches, two cat images each."""
    batch = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [3, 3]},
                         protocol=2)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    return {f"cifar-10-batches-py/{n}": replace.get(n, batch) for n in names}


def cifar10dvs_evil_batch(tmp: Path, _world: Path) -> list[str]:
    files = {"cat/cifar10_cat_0.aedat": ev.encode_aedat2(tagged_events(1)),
             "cat/cifar10_cat_1.aedat": ev.encode_aedat2(tagged_events(2)),
             **cifar_batches(data_batch_1=pickle.dumps({b"data": CodeRunner(tmp / "PWNED")},
                                                       protocol=2))}
    write_files(tmp / "raw", files)
    return ["prepare", "cifar10dvs", "--root", str(tmp / "raw"), "--out", str(tmp / "out"),
            *TINY_PREPARE]


CASES = [
    # -- event files: corrupt, truncated, empty, wrongly named -------------------------------
    Case("nmnist-truncated-bin",
         prepare("nmnist", nmnist_with(Train__1__00002_bin=cut(GOOD_ATIS, 17))),
         r"Train/1/00002\.bin: 17 bytes is not a multiple of 5"),
    Case("nmnist-empty-bin", prepare("nmnist", nmnist_with(Test__0__00001_bin=b"")),
         r"Test/0/00001\.bin: empty file"),
    Case("nmnist-digit-folder-misnamed",
         prepare("nmnist", nmnist_with(Train__seven__00001_bin=GOOD_ATIS)),
         r"folder\(s\) seven in \S+/Train are not digits 0-9"),
    Case("nmnist-no-mnist-images",
         prepare("nmnist", nmnist_with(**{"train-images-idx3-ubyte": None})),
         r"nmnist: no MNIST idx files \(train-images-idx3-ubyte\[\.gz\]\)"),
    Case("nmnist-idx-not-idx",
         prepare("nmnist", nmnist_with(**{"t10k-labels-idx1-ubyte": b"\x1f\x8b garbage"})),
         r"t10k-labels-idx1-ubyte: (damaged|not an unsigned-byte idx)"),
    Case("nmnist-idx-gz-corrupt",
         prepare("nmnist", {**nmnist_with(**{"train-labels-idx1-ubyte": None}),
                            "train-labels-idx1-ubyte.gz": gzip.compress(b"x" * 50)[:20]}),
         r"train-labels-idx1-ubyte\.gz: damaged gzip data"),
    Case("ncaltech101-empty-bin",
         prepare("ncaltech101", ncaltech_with({"Caltech101/bee/image_0002.bin": b""})),
         r"Caltech101/bee/image_0002\.bin: empty file"),
    Case("ncaltech101-truncated-member-in-zip",
         prepare("ncaltech101", ncaltech_zipped(
             {"Caltech101/ant/image_0001.bin": cut(GOOD_ATIS, 12)})),
         r"Caltech101\.zip!Caltech101/ant/image_0001\.bin: 12 bytes is not a multiple of 5"),
    Case("ncaltech101-wrong-extension",
         prepare("ncaltech101", {k.replace(".bin", ".dat"): v
                                 for k, v in ncaltech_files().items()}),
         r"ncaltech101: no <class>/\*\.bin recordings in \S+/Caltech101"),
    Case("ncaltech101-class-without-images",
         prepare("ncaltech101", {k: v for k, v in ncaltech_files(("ant", "bee", "cow")).items()
                                 if "101_ObjectCategories/cow" not in k}),
         r"no Caltech101 images for class\(es\) cow in \S+/101_ObjectCategories"),
    Case("ncaltech101-no-recordings",
         prepare("ncaltech101", {k: v for k, v in ncaltech_files().items()
                                 if not k.startswith("Caltech101/")}),
         r"ncaltech101: no N-Caltech101 recordings in \S+/raw"),
    Case("ncaltech101-zip-not-a-zip",
         prepare("ncaltech101", {"Caltech101.zip": b"PK\x03\x04 not really a zip",
                                 **{k: v for k, v in ncaltech_files().items()
                                    if not k.startswith("Caltech101/")}}),
         r"Caltech101\.zip: not a readable zip archive"),
    Case("dvsgesture-npy-corrupt",
         prepare("dvsgesture", {**dvsgesture_files(),
                                "ibmGestureTrain/user01_led/1.npy": b"\x93NUMPY garbage"}),
         r"ibmGestureTrain/user01_led/1\.npy: not a (numeric|readable) \.npy"),
    Case("dvsgesture-label-misnamed",
         prepare("dvsgesture", {**dvsgesture_files(),
                                "ibmGestureTrain/user01_led/twelve.npy": ev.encode_dvsgesture_npy(
                                    tagged_events(1))}),
         r"user01_led/twelve\.npy: the file name must be a class index 0-10"),
    Case("cifar10dvs-aedat-not-aedat",
         prepare("cifar10dvs", {"cat/cifar10_cat_0.aedat": b"hello, not events\r\n" * 8,
                                "cat/cifar10_cat_1.aedat": ev.encode_aedat2(tagged_events(1)),
                                **cifar_batches()}),
         r"cat/cifar10_cat_0\.aedat: no '#!AER-DAT' version line"),
    # -- images -------------------------------------------------------------------------------
    Case("images-png-does-not-decode",
         prepare("images", {**image_files(), "dog/img1.png": b"\x89PNG\r\n\x1a\n broken"}),
         r"dog/img1\.png: cannot decode the image"),
    Case("images-empty-png",
         prepare("images", {**image_files(), "cat/img2.png": b""}),
         r"cat/img2\.png: cannot decode the image"),
    Case("images-class-folder-without-images",
         prepare("images", {**image_files(), "emu/readme.txt": b"no pictures here"}),
         r"emu: no images"),
    Case("images-root-missing", cli("prepare", "images", "--root", "{tmp}/absent",
                                    "--out", "{tmp}/out"),
         r"absent: not found \(from recipe key 'prepare\.root'\)", untouched="out"),
    Case("prepare-unknown-dataset", cli("prepare", "mnits", "--out", "{tmp}/out"),
         r"prepare\.dataset: unknown dataset 'mnits' \(known: .*\); did you mean 'nmnist'\?",
         untouched="out"),
    # -- archives that try to escape, pickles that would run code ----------------------------
    Case("zip-member-escapes-with-dotdot",
         prepare("ncaltech101", ncaltech_zipped({"../../evil.bin": GOOD_ATIS})),
         r"Caltech101\.zip: refusing member '\.\./\.\./evil\.bin'"),
    Case("tar-member-is-absolute",
         prepare("ncaltech101", {**{k: v for k, v in ncaltech_files().items()
                                    if not k.startswith("101_")},
                                 "101_ObjectCategories.tar.gz": tar_gz_bytes(
                                     {**{k: v for k, v in ncaltech_files().items()
                                         if k.startswith("101_")},
                                      "/etc/evil.jpg": jpeg_bytes(1)})}),
         r"101_ObjectCategories\.tar\.gz: refusing member '/etc/evil\.jpg'"),
    Case("cifar-batch-pickle-runs-code", cifar10dvs_evil_batch,
         r"data_batch_1: refused: the pickle asks to load (posix|os)\.system"),
    Case("checkpoint-pickle-runs-code", checkpoint_replaced(evil_checkpoint, "evil-ckpt"),
         r"last\.pt: refused to load: the file holds Python objects that would run code"),
    Case("init-weights-pickle-runs-code", init_weights_evil,
         r"imagenet\.pt: refused to load: the file holds Python objects that would run code "
         r"\(recipe key pretrain_ann\.init_weights\)"),
    # -- recipes ------------------------------------------------------------------------------
    Case("recipe-malformed-yaml", recipe_text("train:\n  epochs: [3,\n"),
         r"recipe \S+recipe\.yaml \(line \d+, column \d+\): not valid YAML"),
    Case("recipe-empty", recipe_text(""), r"recipe \S+recipe\.yaml is empty"),
    Case("recipe-top-level-list", recipe_text("- train\n- epochs\n"),
         r"recipe \S+recipe\.yaml: expected a mapping of keys at the top, got list"),
    Case("recipe-not-text", recipe_bytes(b"\xff\xfe\x00\x81binary"),
         r"recipe \S+recipe\.yaml: not a text file"),
    Case("recipe-python-tag", recipe_text(
        "name: !!python/object/apply:os.system ['touch PWNED']\n"),
        r"not valid YAML: could not determine a constructor for the tag "
        r"'tag:yaml\.org,2002:python/object/apply:os\.system'"),
    Case("recipe-wrong-type", recipe_text("train:\n  epochs: three\n"),
         r"recipe key 'train\.epochs': expected an integer, got 'three'"),
    Case("recipe-section-not-a-mapping", recipe_text("train: 5\n"),
         r"recipe key 'train': expected a mapping of keys, got 5"),
    Case("recipe-unknown-key", recipe_text("train:\n  epoch: 3\n"),
         r"unknown recipe key 'train\.epoch'; did you mean 'train\.epochs'\?"),
    Case("recipe-unknown-section", recipe_text("trian:\n  epochs: 3\n"),
         r"unknown recipe key 'trian'; did you mean 'train\."),
    Case("recipe-base-missing", recipe_text("base: nowhere.yaml\n"),
         r"recipe key 'base' in \S+recipe\.yaml: file not found: \S+nowhere\.yaml"),
    Case("recipe-is-a-folder", cli("train-tmkt", "{tmp}"),
         r"recipe is a folder, expected a YAML file"),
    Case("time-steps-zero", cli("prepare", "digits", "-T", "0", "--out", "{tmp}/out"),
         r"recipe key 'prepare\.time_steps': expected a value >= 1, got 0", untouched="out"),
    Case("resize-to-zero", cli("prepare", "digits", "--size", "0", "--out", "{tmp}/out"),
         r"recipe key 'prepare\.size': expected a value >= 1, got 0", untouched="out"),
    Case("negative-learning-rate", recipe_text("train:\n  lr: -0.01\n"),
         r"recipe key 'train\.lr': expected a value > 0, got -0\.01"),
    Case("emulator-image-larger-than-canvas",
         cli("prepare", "digits", "--out", "{tmp}/out", "-s", "prepare.emulator.image_size=40"),
         r"prepare\.emulator\.image_size.*prepare\.emulator\.canvas"),
    Case("set-without-value", cli("train-tmkt", DIGITS_RECIPE, "--set", "train.lr"),
         r"--set 'train\.lr': expected KEY=VALUE"),
    Case("set-python-tag-is-a-string",
         cli("train-tmkt", DIGITS_RECIPE, "--set", "seed=!!python/object/apply:os.getpid []"),
         r"recipe key 'seed': expected an integer, got '!!python/object/apply:os\.getpid \[\]'"),
    # -- checkpoints and runs -----------------------------------------------------------------
    Case("checkpoint-of-another-backbone", eval_world("toy-tmkt", "model.backbone=scnn"),
         r"last\.pt: the checkpoint does not match .*backbone 'digitsnet' \(recipe: 'scnn'\)"),
    Case("checkpoint-of-another-class-count",
         eval_world("five-classes", prepare_run=other_class_count),
         r"last\.pt: the checkpoint does not match .*5 classes \(dataset: 3\)"),
    Case("checkpoint-not-a-checkpoint",
         checkpoint_replaced(lambda p: p.write_bytes(b"PK\x03\x04" + b"\0" * 64), "junk-ckpt"),
         r"last\.pt: not a readable checkpoint"),
    Case("eval-without-training-run", eval_world("never-trained"),
         r"never-trained/seed42/train-tmkt: not found \(from recipe key eval\.source\)"),
    Case("teacher-still-running", teacher_with_status("running"),
         r"teacher-running/seed42/pretrain-ann: the pretrain-ann run is running, not complete "
         r"\(from recipe key distill\.teacher\)"),
    Case("teacher-failed", teacher_with_status("failed"),
         r"the pretrain-ann run is failed, not complete \(from recipe key distill\.teacher\)"),
    Case("teacher-is-another-stage", teacher_of_other_stage,
         r"holds a 'train-tmkt' run, expected pretrain-ann \(from recipe key distill\.teacher\)"),
    Case("teacher-folder-missing",
         eval_world("student-alone", "distill.teacher={tmp}/no-teacher", stage="distill"),
         r"no-teacher: not found \(from recipe key distill\.teacher\)"),
    # -- prepared datasets (paths.dataset) ----------------------------------------------------
    Case("dataset-older-schema", dataset_edited(set_attr("schema_version", 0)),
         r"dataset\.h5: written with an older dataset schema \(v0; this tmkt reads v1\)"),
    Case("dataset-from-another-tool", dataset_edited(other_tool_file),
         r"dataset\.h5: not a tmkt prepared dataset \(written by 'tonic'\)"),
    Case("dataset-truncated", dataset_edited(truncate_half),
         r"dataset\.h5: not a readable HDF5 file"),
    Case("dataset-not-marked-complete", dataset_edited(set_attr("complete", False)),
         r"dataset\.h5: incomplete prepared dataset"),
    Case("dataset-path-is-a-bare-h5", dataset_is_a_bare_h5,
         r"elsewhere\.h5: no manifest\.json, not a tmkt run folder \(from recipe key "
         r"paths\.dataset\)"),
]


def test_there_are_at_least_30_cases():
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_is_one_line_exit_2(case, tmp_path, world, monkeypatch):
    # Relative defaults (runs/, prepared/) and anything a refused file would have run
    # (`touch PWNED`) land in tmp_path, never in the checkout.
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "case"
    work.mkdir()
    args = case.build(work, world)
    result = CliRunner().invoke(app, args)
    output = result.output
    assert "Traceback" not in output, output
    assert result.exit_code == 2, (result.exit_code, output, result.exception)
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert re.search(case.pattern, errors[0]), errors[0]
    if case.untouched:
        assert not (work / case.untouched).exists(), "a refused command made its folder"
    # nothing that would have run code did
    assert not list(tmp_path.rglob("PWNED")) and not list(world.rglob("PWNED"))

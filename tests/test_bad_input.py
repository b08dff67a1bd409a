"""Bad input through the real command line: every mistake a user can make with a file, a
folder, a recipe or a run gets one line naming what and where, exit code 2 and no traceback.

One table, one test: each case builds its tiny bad input in ``tmp_path`` (event files in the
real formats through ``tests/support/event_writers.py``, images, recipes, run folders made with the
helpers of test_eval.py), runs a ``tmkt`` command in-process through typer's runner and
checks the single ``error:`` line against the case's pattern.
"""

from __future__ import annotations

import gzip
import io
import json
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
from support import event_writers as writers
from typer.testing import CliRunner

from tmkt_cli.cli import app
from tmkt_cli.data import formats as ev
from tmkt_cli.runs.artifacts import file_hash, read_manifest, write_json

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


def zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def zip_with_symlink(members: dict[str, bytes], link: str, target: str) -> bytes:
    """A zip whose member ``link`` is stored as a Unix symbolic link to ``target``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        info = zipfile.ZipInfo(link)
        info.external_attr = 0o120777 << 16
        archive.writestr(info, target)
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
    files = {f"{split}/{digit}/{k:05d}.bin": writers.encode_atis_bin(tagged_events(10 * digit + k))
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
            files[f"Caltech101/{name}/image_{k:04d}.bin"] = writers.encode_atis_bin(
                tagged_events(10 * c + k))
            files[f"101_ObjectCategories/{name}/image_{k:04d}.jpg"] = jpeg_bytes(20 * k)
    return files


def dvsgesture_files() -> dict[str, bytes]:
    return {f"{folder}/{user}/{label}.npy": writers.encode_dvsgesture_npy(tagged_events(label))
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
    manifest["outputs"]["checkpoint"]["sha256"] = file_hash(folder / "last.pt")
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


GOOD_ATIS = writers.encode_atis_bin(tagged_events(3))


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
    from tmkt_cli.runs.checkpoints import snn_model_info

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
    files = {"cat/cifar10_cat_0.aedat": writers.encode_aedat2(tagged_events(1)),
             "cat/cifar10_cat_1.aedat": writers.encode_aedat2(tagged_events(2)),
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
                                "ibmGestureTrain/user01_led/twelve.npy": writers.encode_dvsgesture_npy(
                                    tagged_events(1))}),
         r"user01_led/twelve\.npy: the file name must be a class index 0-10"),
    Case("cifar10dvs-aedat-not-aedat",
         prepare("cifar10dvs", {"cat/cifar10_cat_0.aedat": b"hello, not events\r\n" * 8,
                                "cat/cifar10_cat_1.aedat": writers.encode_aedat2(tagged_events(1)),
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


# --------------------------------------------------------------------------------------------
# Round two (issue 15): resource bombs, paths, overflow, strict YAML, hand-edited manifests,
# damaged datasets and checkpoints, planted links, event files that lie
# --------------------------------------------------------------------------------------------

ALIAS_BOMB = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n"
    for i in range(8))
"""A 9x9 "billion laughs": 9**9 strings once the aliases are expanded."""


def toy_run_edited(edit_manifest: Callable[[dict], None] | None = None,
                   edit_folder: Callable[[Path], None] | None = None,
                   command: str = "eval") -> Callable:
    """A finished fake train-tmkt run whose manifest (or folder) is then edited by hand; the
    command reads it (eval: as its upstream; train-tmkt: as its own run)."""
    def build(tmp: Path, world: Path) -> list[str]:
        name = f"hand-{tmp.parent.name[-30:]}"
        folder = fake_training_run(toy_recipe(world, name))
        if edit_manifest is not None:
            manifest = json.loads((folder / "manifest.json").read_text())
            edit_manifest(manifest)
            (folder / "manifest.json").write_text(json.dumps(manifest))
        if edit_folder is not None:
            edit_folder(folder)
        return [command, str(recipe_in(world, name))]
    return build


def setter(path: str, value) -> Callable[[dict], None]:
    def edit(manifest: dict) -> None:
        node = manifest
        *parents, leaf = path.split(".")
        for part in parents:
            node = node[part]
        if value is DELETE:
            del node[leaf]
        else:
            node[leaf] = value
    return edit


DELETE = object()


def running_with_last(write: Callable[[Path], None]) -> Callable[[Path], None]:
    """The run is unfinished (so train-tmkt resumes it) and its last.pt is replaced."""
    def edit(folder: Path) -> None:
        manifest = read_manifest(folder)
        manifest["status"] = "running"
        write_json(folder / "manifest.json", manifest)
        write(folder / "last.pt")
    return edit


def checkpoint_edited(**changes) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        import torch
        state = torch.load(path, weights_only=True)
        for key, value in changes.items():
            if isinstance(value, dict):
                state[key] = {**state[key], **value}
            else:
                state[key] = value
        torch.save(state, path)
    return write


def planted_link(name: str) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        outside = folder.parent / f"outside-{name}"
        outside.mkdir(exist_ok=True)
        manifest = read_manifest(folder)
        manifest["status"] = "interrupted"
        write_json(folder / "manifest.json", manifest)
        (folder / name).symlink_to(outside, target_is_directory=True)
    return edit


def h5_edit(split: str, name: str, change: Callable[[np.ndarray], np.ndarray]
            ) -> Callable[[Path], None]:
    """Rewrite /split/name through ``change`` (dtype and all)."""
    def edit(h5: Path) -> None:
        import h5py
        with h5py.File(h5, "r+") as f:
            data = change(f[split][name][()])
            del f[split][name]
            f[split].create_dataset(name, data=data)
    return edit


def frames_set(value: float) -> Callable[[Path], None]:
    def edit(h5: Path) -> None:
        import h5py
        with h5py.File(h5, "r+") as f:
            frames = f["train"]["frames"]
            sample = frames[1]
            sample[0, 0, 0, 0] = value
            frames[1] = sample
    return edit


def flip_chunk_bytes(row: int) -> Callable[[Path], None]:
    """Flip bytes in the middle of the gzip chunk holding train frames row ``row``."""
    def edit(h5: Path) -> None:
        import h5py
        with h5py.File(h5, "r") as f:
            info = f["train"]["frames"].id.get_chunk_info(row)
        data = bytearray(h5.read_bytes())
        for i in range(8):
            data[info.byte_offset + info.size // 2 + i] ^= 0xFF
        h5.write_bytes(bytes(data))
    return edit


def dataset_edited_with(edit: Callable[[Path], None], *extra: str) -> Callable:
    def build(tmp: Path, world: Path) -> list[str]:
        args = dataset_edited(edit)(tmp, world)
        return [*args, *[x for o in extra for x in ("--set", o)]]
    return build


def aedat2_words(words: list[tuple[int, int]]) -> bytes:
    return b"#!AER-DAT2.0\r\n" + np.array(words, ">u4").tobytes()


def cifar10dvs_with(first: bytes) -> dict[str, bytes]:
    return {"cat/cifar10_cat_0.aedat": first,
            "cat/cifar10_cat_1.aedat": writers.encode_aedat2(tagged_events(2)), **cifar_batches()}


def gesture_npy(rows: list[list[float]]) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.array(rows, np.float64).reshape(-1, 4))
    return buffer.getvalue()


def tar_with_link(kind: bytes) -> bytes:
    """A tar.gz of N-Caltech101 images plus one member that is a (sym or hard) link."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in ncaltech_files().items():
            if name.startswith("101_"):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("101_ObjectCategories/ant/image_0009.jpg")
        link.type = kind
        link.linkname = "/etc/passwd"
        archive.addfile(link)
    return buffer.getvalue()


def file_at(relative: str, *args: str) -> Callable:
    """Make ``relative`` a plain file, then run ``args`` ({tmp} replaced)."""
    def build(tmp: Path, _world: Path) -> list[str]:
        (tmp / relative).write_text("a file, not a folder")
        return [a.replace("{tmp}", str(tmp)) for a in args]
    return build


def recipe_pair(base_text: str, text: str) -> Callable:
    def build(tmp: Path, _world: Path) -> list[str]:
        (tmp / "base.yaml").write_text(base_text)
        (tmp / "recipe.yaml").write_text(text)
        return ["train-tmkt", str(tmp / "recipe.yaml")]
    return build


LONG = "n" * 300
TOY = "toy-tmkt.yaml"


def toy(*args: str) -> Callable:
    """A command on the toy world's recipe (its own name: runs go to their own folders)."""
    def build(tmp: Path, world: Path) -> list[str]:
        recipe = recipe_in(world, f"toy-{tmp.parent.name[-30:]}")
        return [a.replace("{recipe}", str(recipe)).replace("{tmp}", str(tmp)) for a in args]
    return build


CASES += [
    # -- resource bombs, refused before anything is allocated or made --------------------------
    Case("recipe-alias-bomb", recipe_text(ALIAS_BOMB),
         r"recipe \S+recipe\.yaml: not valid YAML: its aliases expand to more than 100,000 "
         r"values"),
    Case("set-alias-bomb", cli("train-tmkt", DIGITS_RECIPE, "--set",
                               "method.name=" + ALIAS_BOMB.replace("\n", ", ").join("{}")),
         r"--set method\.name: the value its aliases expand to more than 100,000 values"),
    Case("prepare-size-200000", cli("prepare", "digits", "--size", "200000",
                                    "--out", "{tmp}/out"),
         r"prepare\.time_steps=\d+ and prepare\.size=200000: one recording's frames take "
         r"[\d.,]+ TiB .* needed, .* of memory available", untouched="out"),
    Case("prepare-time-steps-500000000", cli("prepare", "digits", "-T", "500000000",
                                             "--out", "{tmp}/out"),
         r"prepare\.time_steps=500000000 .* needed, .* of memory available", untouched="out"),
    Case("prepare-flush-every-huge", cli("prepare", "digits", "--size", "256", "--out",
                                         "{tmp}/out", "-s", "prepare.flush_every=100000000"),
         r"prepare\.flush_every \+ 2 x prepare\.workers\): .* needed", untouched="out"),
    Case("train-batch-size-huge", toy("train-tmkt", "{recipe}", "--set",
                                      "train.batch_size=1000000000"),
         r"train\.batch_size=1000000000 at T=\d+, \d+x\d+ px: a batch's input frames alone "
         r"take .* needed"),
    # -- values that overflow, or are not numbers ----------------------------------------------
    Case("set-seed-overflows", cli("train-tmkt", DIGITS_RECIPE, "--set",
                                   "seed=99999999999999999999999", "--set",
                                   "paths.runs={tmp}/runs"),
         r"recipe key 'seed': 99999999999999999999999 does not fit in a 64-bit integer",
         untouched="runs"),
    Case("recipe-seed-overflows", recipe_text("seed: 123456789012345678901234567890\n"),
         r"recipe key 'seed': \d+ does not fit in a 64-bit integer"),
    Case("set-negative-epochs-overflow", cli("train-tmkt", DIGITS_RECIPE, "--set",
                                             "train.epochs=-99999999999999999999"),
         r"recipe key 'train\.epochs': -99999999999999999999 does not fit in a 64-bit"),
    Case("time-steps-option-overflows", cli("prepare", "digits", "-T",
                                            "99999999999999999999999", "--out", "{tmp}/out"),
         r"recipe key 'prepare\.time_steps': \d+ does not fit in a 64-bit integer",
         untouched="out"),
    Case("learning-rate-nan", recipe_text("train:\n  lr: .nan\n"),
         r"recipe key 'train\.lr': expected a finite number, got nan"),
    Case("learning-rate-inf", recipe_text("train:\n  lr: .inf\n"),
         r"recipe key 'train\.lr': expected a finite number, got inf"),
    # -- recipes: duplicate keys -----------------------------------------------------------------
    Case("recipe-two-train-sections",
         recipe_text("train:\n  epochs: 3\nseed: 1\ntrain:\n  lr: 0.1\n"),
         r"recipe \S+recipe\.yaml \(line 4, column 1\): not valid YAML: duplicate key 'train' "
         r"\(lines 1 and 4\)"),
    Case("recipe-two-seed-lines", recipe_text("seed: 1\nname: x\nseed: 2\n"),
         r"duplicate key 'seed' \(lines 1 and 3\)"),
    Case("recipe-duplicate-nested-key",
         recipe_text("train:\n  epochs: 3\n  lr: 0.1\n  epochs: 5\n"),
         r"duplicate key 'epochs' \(lines 2 and 4\)"),
    Case("recipe-base-has-duplicate-keys",
         recipe_pair("model:\n  backbone: scnn\n  backbone: digitsnet\n", "base: base.yaml\n"),
         r"recipe \S+base\.yaml \(line 3, column 3\): not valid YAML: duplicate key 'backbone' "
         r"\(lines 2 and 3\)"),
    # -- paths and names -------------------------------------------------------------------------
    Case("name-with-nul-byte", cli("train-tmkt", DIGITS_RECIPE, "--set", "name=a\0b"),
         r"recipe key 'name': contains a NUL byte"),
    Case("runs-with-nul-byte", cli("train-tmkt", DIGITS_RECIPE, "--set",
                                   "paths.runs={tmp}/ru\0ns"),
         r"recipe key 'paths\.runs': contains a NUL byte"),
    Case("out-with-nul-byte", cli("prepare", "digits", "--out", "{tmp}/o\0ut"),
         r"recipe key 'paths\.dataset': contains a NUL byte"),
    Case("name-300-characters", cli("train-tmkt", DIGITS_RECIPE, "--set", f"name={LONG}"),
         r"recipe key 'name': a folder name of 300 bytes \(the file system allows 255\)"),
    Case("runs-300-character-folder", cli("train-tmkt", DIGITS_RECIPE, "--set",
                                          f"paths.runs={{tmp}}/{LONG}"),
         r"recipe key 'paths\.runs': a folder name of 300 bytes"),
    Case("out-300-character-folder", cli("prepare", "digits", "--out", f"{{tmp}}/{LONG}"),
         r"recipe key 'paths\.dataset': a folder name of 300 bytes"),
    Case("runs-path-too-long", cli("train-tmkt", DIGITS_RECIPE, "--set",
                                   "paths.runs={tmp}/" + "/".join(["d" * 200] * 20)),
         r"recipe key 'paths\.runs': a path of \d+ bytes \(at most 3584\)"),
    Case("runs-is-a-file", file_at("runs", "train-tmkt", DIGITS_RECIPE, "--set",
                                   "paths.runs={tmp}/runs"),
         r"\S+/runs: is a file, so \S+ cannot be made \(from recipe key paths\.runs\)"),
    Case("out-is-a-file", file_at("out", "prepare", "digits", "--out", "{tmp}/out"),
         r"\S+/out: is a file, so \S+/out cannot be made \(from recipe key paths\.dataset\)"),
    Case("out-under-a-file", file_at("out", "prepare", "digits", "--out", "{tmp}/out/ds"),
         r"\S+/out: is a file, so \S+/out/ds cannot be made \(from recipe key paths\.dataset\)"),
    # -- hand-edited manifests -------------------------------------------------------------------
    Case("manifest-inputs-null", toy_run_edited(setter("inputs", None)),
         r"manifest\.json: field 'inputs' is NoneType, expected a mapping"),
    Case("manifest-outputs-list", toy_run_edited(setter("outputs", [])),
         r"manifest\.json: field 'outputs' is list, expected a mapping"),
    Case("manifest-timings-string", toy_run_edited(setter("timings", "x")),
         r"manifest\.json: field 'timings' is str, expected a mapping"),
    Case("manifest-output-without-path", toy_run_edited(setter("outputs.checkpoint.path",
                                                               DELETE)),
         r"manifest\.json: output 'checkpoint' has no valid relative 'path'"),
    Case("manifest-output-path-escapes", toy_run_edited(setter("outputs.best.path",
                                                               "../../../etc/passwd")),
         r"manifest\.json: output 'best' has no valid relative 'path'"),
    Case("manifest-complete-without-outputs", toy_run_edited(setter("outputs", {})),
         r"manifest\.json: says complete but lists no outputs"),
    Case("manifest-input-not-a-mapping", toy_run_edited(setter("inputs", {"dataset": 7})),
         r"manifest\.json: input 'dataset' is not a mapping"),
    Case("manifest-edited-own-run", toy_run_edited(setter("inputs", None),
                                                   command="train-tmkt"),
         r"manifest\.json: field 'inputs' is NoneType, expected a mapping"),
    Case("manifest-newer-schema", toy_run_edited(setter("schema", 2)),
         r"manifest\.json: manifest schema 2, this tmkt reads 1"),
    Case("manifest-not-json", toy_run_edited(edit_folder=lambda f: (
        f / "manifest.json").write_text("{ not json")),
        r"manifest\.json: manifest is not valid JSON"),
    Case("upstream-best-deleted", toy_run_edited(edit_folder=lambda f: (
        f / "best.pt").unlink()),
        r"output 'best' is not what its run recorded \(best\.pt is missing"),
    # -- checkpoints: another model or config on resume, an old version -----------------------
    Case("resume-last-of-another-model", toy_run_edited(
        edit_folder=running_with_last(checkpoint_edited(model_info={"backbone": "scnn"})),
        command="train-tmkt"),
        r"last\.pt: the checkpoint to resume from holds another model \(kind snn, backbone "
        r"scnn.*; run with --resume never to start this run again"),
    Case("resume-last-of-another-config", toy_run_edited(
        edit_folder=running_with_last(checkpoint_edited(config_hash="0123456789abcdef")),
        command="train-tmkt"),
        r"last\.pt: the checkpoint to resume from was made with another config \(hash "
        r"0123456789abcdef.*run with --resume never"),
    Case("checkpoint-older-version",
         checkpoint_replaced(checkpoint_edited(version=0), "old-ckpt"),
         r"last\.pt: checkpoint version 0 is not supported \(this tmkt reads version 1\)"),
    # -- symbolic links planted in a run folder --------------------------------------------------
    Case("tensorboard-link-planted", toy_run_edited(edit_folder=planted_link("tensorboard"),
                                                    command="train-tmkt"),
         r"tensorboard: a symbolic link \(to \S+outside-tensorboard\) inside a run folder"),
    Case("checkpoint-link-planted", toy_run_edited(edit_folder=lambda f: (
        (f / "last.pt").unlink(), (f / "last.pt").symlink_to(f.parent / "elsewhere.pt")),
        command="train-tmkt"),
        r"last\.pt: a symbolic link \(to \S+elsewhere\.pt\) inside a run folder"),
    # -- damaged prepared datasets -----------------------------------------------------------------
    Case("dataset-label-out-of-range", dataset_edited(h5_edit("train", "labels",
                                                              lambda a: a + 7)),
         r"dataset\.h5: damaged prepared dataset \(/train/labels\[0\] is 7, outside 0\.\.2 "
         r"classes"),
    Case("dataset-negative-label", dataset_edited(h5_edit("test", "labels", lambda a: -a - 1)),
         r"dataset\.h5: damaged prepared dataset \(/test/labels\[0\] is -1, outside 0\.\.2"),
    Case("dataset-labels-wrong-dtype", dataset_edited(h5_edit("train", "labels",
                                                              lambda a: a.astype(np.float32))),
         r"dataset\.h5: damaged prepared dataset \(/train/labels has dtype float32, expected "
         r"integers\)"),
    Case("dataset-frames-wrong-dtype", dataset_edited(h5_edit("train", "frames",
                                                              lambda a: a.astype(np.float64))),
         r"dataset\.h5: damaged prepared dataset \(/train/frames has dtype float64, expected "
         r"float32\)"),
    Case("dataset-images-wrong-dtype", dataset_edited(h5_edit("test", "images",
                                                              lambda a: a.astype(np.int16))),
         r"dataset\.h5: damaged prepared dataset \(/test/images has dtype int16, expected "
         r"uint8\)"),
    Case("dataset-image-index-out-of-range", dataset_edited(h5_edit(
        "train", "image_index", lambda a: a + 100)),
        r"dataset\.h5: damaged prepared dataset \(/train/image_index\[0\] is 100, outside "
        r"0\.\.5 images"),
    Case("dataset-newer-schema", dataset_edited(set_attr("schema_version", 9)),
         r"dataset\.h5: written with a newer dataset schema \(v9; this tmkt reads v1\)"),
    Case("dataset-nan-frames", dataset_edited_with(frames_set(np.nan),
                                                   "train.device=cpu"),
         r"non-finite input \('events' holds NaN or inf, sample\(s\) \[1\]\) at step \d+ "
         r"\(epoch \d+\); stopped before the update"),
    Case("dataset-inf-frames", dataset_edited_with(frames_set(np.inf), "train.device=cpu",
                                                   "data.in_memory=true"),
         r"non-finite input \('events' holds NaN or inf, sample\(s\) \[1\]\) at step \d+ "
         r"\(epoch \d+\); stopped before the update"),
    Case("dataset-flipped-chunk-in-memory", dataset_edited_with(
        flip_chunk_bytes(2), "data.in_memory=true"),
        r"dataset\.h5: cannot read /train/frames\[2\] .*the file is damaged"),
    Case("dataset-flipped-chunk-lazy", dataset_edited_with(
        flip_chunk_bytes(2), "train.device=cpu"),
        r"dataset\.h5: cannot read /?train/frames\[2\]"),
    # -- event files that lie ----------------------------------------------------------------------
    Case("nmnist-only-overflow-markers", prepare("nmnist", nmnist_with(
        Train__1__00002_bin=b"\x00\xf0\x00\x00\x00" * 4)),
        r"Train/1/00002\.bin: 4 time-overflow/special record\(s\) and no event"),
    Case("cifar10dvs-only-special-events", prepare("cifar10dvs", cifar10dvs_with(
        aedat2_words([(1 << 15, 10), (1 << 15, 20)]))),
        r"cifar10_cat_0\.aedat: 2 time-overflow/special record\(s\) and no event"),
    Case("cifar10dvs-header-without-events", prepare("cifar10dvs", cifar10dvs_with(
        aedat2_words([])[:14])),
        r"cifar10_cat_0\.aedat: a header and no event; not a recording"),
    Case("dvsgesture-no-events", prepare("dvsgesture", {
        **dvsgesture_files(), "ibmGestureTrain/user01_led/1.npy": gesture_npy(
            np.zeros((0, 4)).tolist())}),
        r"user01_led/1\.npy: a header and no event; not a recording"),
    Case("cifar10dvs-timestamps-in-nanoseconds", prepare("cifar10dvs", cifar10dvs_with(
        aedat2_words([(2, 0), (4, 4_000_000_000)]))),
        r"cifar10_cat_0\.aedat: the timestamps span 4,000 s, more than the 3,600 s"),
    Case("cifar10dvs-aedat4-under-aedat", prepare("cifar10dvs", cifar10dvs_with(
        writers.encode_aedat4(tagged_events(1)))),
        r"cifar10_cat_0\.aedat: AEDAT version 4\.0, expected 2\.0"),
    Case("dvsgesture-nan-timestamp", prepare("dvsgesture", {
        **dvsgesture_files(),
        "ibmGestureTrain/user01_led/1.npy": gesture_npy([[1, 1, 1, 0.0], [2, 2, 0, np.nan]])}),
        r"user01_led/1\.npy: 1 timestamp\(s\) are NaN or infinite \(first at event 1\)"),
    Case("dvsgesture-microseconds-as-milliseconds", prepare("dvsgesture", {
        **dvsgesture_files(),
        "ibmGestureTrain/user01_led/1.npy": gesture_npy([[1, 1, 1, 0.0],
                                                         [2, 2, 0, 6_000_000.0]])}),
        r"user01_led/1\.npy: the timestamps span 6,000 s, more than the 3,600 s"),
    Case("dvsgesture-negative-timestamp", prepare("dvsgesture", {
        **dvsgesture_files(),
        "ibmGestureTrain/user01_led/1.npy": gesture_npy([[1, 1, 1, -5.0], [2, 2, 0, 1.0]])}),
        r"user01_led/1\.npy: negative timestamp -5000 µs"),
    Case("zip-member-bomb", prepare("ncaltech101", {
        **ncaltech_zipped({}),
        "Caltech101.zip": zip_bytes({**{k: v for k, v in ncaltech_files().items()
                                        if k.startswith("Caltech101/")},
                                     "Caltech101/ant/image_0009.bin": b"\0" * (4 << 20)},
                                    zipfile.ZIP_DEFLATED)}),
        r"Caltech101\.zip: refusing member 'Caltech101/ant/image_0009\.bin': it expands from "
        r"[\d,]+ to 4,194,304 bytes \(a zip bomb\?\)"),
    Case("zip-member-is-a-symlink", prepare("ncaltech101", {
        **ncaltech_zipped({}),
        "Caltech101.zip": zip_with_symlink({k: v for k, v in ncaltech_files().items()
                                            if k.startswith("Caltech101/")},
                                           "Caltech101/ant/image_0009.bin", "/etc/hosts")}),
        r"Caltech101\.zip: refusing member 'Caltech101/ant/image_0009\.bin': a link, not a "
        r"file"),
    Case("dataset-train-labels-two-columns", dataset_edited(h5_edit(
        "train", "labels", lambda a: np.stack([a, a], 1))),
        r"dataset\.h5: damaged prepared dataset \(/train/labels has shape \(\d+, 2\), "
        r"expected \(\d+,\)\)"),
    Case("dataset-image-labels-two-columns", dataset_edited(h5_edit(
        "train", "image_labels", lambda a: np.stack([a, a], 1))),
        r"dataset\.h5: damaged prepared dataset \(/train/image_labels has shape "
        r"\(\d+, 2\), expected \(\d+,\)\)"),
    Case("tar-member-is-a-symlink", prepare("ncaltech101", {
        **{k: v for k, v in ncaltech_files().items() if not k.startswith("101_")},
        "101_ObjectCategories.tar.gz": tar_with_link(tarfile.SYMTYPE)}),
        r"101_ObjectCategories\.tar\.gz: refusing member '101_ObjectCategories/ant/"
        r"image_0009\.jpg': a link \(to '/etc/passwd'\)"),
    Case("tar-member-is-a-hard-link", prepare("ncaltech101", {
        **{k: v for k, v in ncaltech_files().items() if not k.startswith("101_")},
        "101_ObjectCategories.tar.gz": tar_with_link(tarfile.LNKTYPE)}),
        r"refusing member '101_ObjectCategories/ant/image_0009\.jpg': a link"),
]


# --------------------------------------------------------------------------------------------
# Round three (issue 27): overrides that meant something else, errors that echoed a file,
# tampered checkpoints
# --------------------------------------------------------------------------------------------

SECRET = "s3cr3t-h4sh"
"""Text of a file that is no recipe: no error line may echo it."""
PASSWORD_DATABASE = (f"root:$6${SECRET}$abc:19000:0:99999:7:::\n"
                     "daemon:*:19000:0:99999:7:::\n")
"""Lines of a shadow password file: YAML reads each as a key with no value."""


def checkpoint_info_without(key: str) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        import torch
        state = torch.load(path, weights_only=True)
        state["model_info"].pop(key)
        torch.save(state, path)
    return write


CASES += [
    # -- a section given a value: merged when a mapping, else refused --------------------------
    Case("set-section-to-null", cli("train-tmkt", DIGITS_RECIPE, "--set", "train=null"),
         r"--set 'train=null': 'train' is a section; set its keys \(--set train\.KEY=VALUE\) "
         r"or merge a mapping into it \(--set 'train=\{KEY: VALUE\}'\)"),
    Case("set-nested-section-to-a-number",
         cli("prepare", "digits", "--out", "{tmp}/out", "--set", "prepare.emulator=5"),
         r"'prepare\.emulator' is a section; set its keys \(--set prepare\.emulator\.KEY=",
         untouched="out"),
    # -- a file that is no recipe is named, never echoed ----------------------------------------
    Case("recipe-is-a-password-database", recipe_text(PASSWORD_DATABASE),
         r"recipe \S+recipe\.yaml: not a tmkt recipe \(a key at the top is not a key name but "
         r"a text of \d+ characters\)$"),
    Case("recipe-nested-key-from-another-file", recipe_text(f"train:\n  '{SECRET}:x': 1\n"),
         r"recipe \S+recipe\.yaml: not a tmkt recipe \(a key in section 'train' is not a key "
         r"name but a text of 13 characters\)$"),
    Case("set-key-that-is-not-a-name",
         cli("train-tmkt", DIGITS_RECIPE, "--set", f"train={{'{SECRET}': 1}}"),
         r"recipe section 'train': a key that is not a key name \(a text of 11 characters\)"),
    Case("recipe-duplicate-key-from-another-file",
         recipe_text(f"'{SECRET}:1': a\n'{SECRET}:1': b\n"),
         r"not valid YAML: duplicate key \(lines 1 and 2\)$"),
    Case("recipe-tag-too-long-to-show", recipe_text(f"name: !<{SECRET}{'x' * 200}> a\n"),
         r"\(line 1, column 7\): not valid YAML: could not determine a constructor for the tag "
         r"\(a token too long to show\)$"),
    # -- a tampered checkpoint is refused in one line naming the file ---------------------------
    Case("checkpoint-negative-class-count",
         checkpoint_replaced(checkpoint_edited(model_info={"num_classes": -3}), "neg-classes"),
         r"last\.pt: model_info\.num_classes is -3, expected a positive integer"),
    Case("checkpoint-without-class-count",
         checkpoint_replaced(checkpoint_info_without("num_classes"), "no-classes"),
         r"last\.pt: model_info\.num_classes is missing, expected a positive integer"),
    Case("checkpoint-model-info-a-list",
         checkpoint_replaced(checkpoint_edited(model_info=[1, 2]), "info-list"),
         r"last\.pt: not the checkpoint of a tmkt network \(model_info kind None\)"),
]


# --------------------------------------------------------------------------------------------
# Round four (issue 27): checkpoints and datasets changed after a run completed, another
# dataset or other prepare settings where a run reads its data, report and landscape on what
# is not a run, options given values they do not take, damaged archives
# --------------------------------------------------------------------------------------------

CHANGED = (r"not the file its run recorded \(sha256 [0-9a-f]{12}; its manifest\.json says "
           r"sha256 [0-9a-f]{12}\): replaced or damaged after the run completed; rerun the "
           r"stage to write it again$")
"""A checkpoint of the same size whose content is not the one its run recorded."""


def finished_run(tmp: Path, world: Path, name: str, torch_seed: int = 0,
                 stage: str = "train-tmkt", dataset: Path | None = None) -> Path:
    """A finished fake run under ``tmp/runs`` (trained on the world's dataset, or on
    ``dataset``) with every checkpoint a real run lists, each in its manifest: last.pt,
    best.pt, best_test.pt and model.pt."""
    from tmkt_cli.runs.checkpoints import write_model_file

    sets = [f"paths.runs={tmp}/runs"] + ([f"paths.dataset={dataset}"] if dataset else [])
    folder = fake_training_run(toy_recipe(world, name, *sets), stage, torch_seed=torch_seed)
    write_model_file(folder)
    shutil.copy(folder / "best.pt", folder / "best_test.pt")
    manifest = read_manifest(folder)
    for key, file in (("model", "model.pt"), ("best_test", "best_test.pt")):
        manifest["outputs"][key] = {"path": file, "sha256": file_hash(folder / file),
                                    "size": (folder / file).stat().st_size}
    write_json(folder / "manifest.json", manifest)
    return folder


def flip_bit(path: Path) -> None:
    """One bit in the middle of ``path`` flipped, its size kept (a disk error, a bad copy)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def after_completion(file: str, change: str, *args: str) -> Callable:
    """A finished run whose ``file`` then changed (``flip``: one bit; ``copy``: the same file
    of another run, of another seed's weights), read by ``args`` ({run}: the run folder,
    {tmp}: the case's folder)."""
    def build(tmp: Path, world: Path) -> list[str]:
        run = finished_run(tmp, world, "changed")
        if change == "flip":
            flip_bit(run / file)
        else:
            other = finished_run(tmp, world, "changed-other", torch_seed=1)
            shutil.copy(other / file, run / file)
        (tmp / "recording.bin").write_bytes(GOOD_ATIS)
        return [a.replace("{run}", str(run)).replace("{tmp}", str(tmp)) for a in args]
    return build


def teacher_changed_after_completion(tmp: Path, world: Path) -> list[str]:
    teacher = finished_run(tmp, world, "changed-teacher", stage="pretrain-ann")
    flip_bit(teacher / "last.pt")
    return ["distill", str(recipe_in(world, "student-of-changed")), "--set",
            f"distill.teacher={teacher}", "--set", f"paths.runs={tmp}/runs"]


def another_dataset(*args: str, in_place: bool = False) -> Callable:
    """A finished run, and another prepared dataset ({other}) of the same classes and shape
    (other recordings); ``in_place``: that dataset now sits where the run's own was."""
    def build(tmp: Path, world: Path) -> list[str]:
        name = "other-dataset"
        own = None
        if in_place:
            own = tmp / "prepared"
            shutil.copytree(world / "prepared", own, ignore=shutil.ignore_patterns(".lock"))
        run = finished_run(tmp, world, name, dataset=own)
        other = make_prepared_dataset(tmp / "other", n_test=4, seed=3)
        if in_place:
            shutil.rmtree(own)
            shutil.copytree(other, own, ignore=shutil.ignore_patterns(".lock"))
        recipe = toy_recipe_file(world, name)
        return [a.replace("{run}", str(run)).replace("{other}", str(other))
                .replace("{recipe}", str(recipe)).replace("{tmp}", str(tmp)) for a in args]
    return build


def moved_beside_another_dataset(tmp: Path, world: Path) -> list[str]:
    """A run that recorded the default relative ``prepared`` path, evaluated from a folder
    whose ``prepared/`` is another dataset."""
    run = finished_run(tmp, world, "moved-run")
    manifest = read_manifest(run)
    manifest["inputs"]["dataset"]["path"] = "prepared"
    write_json(run / "manifest.json", manifest)
    make_prepared_dataset(Path("prepared"), n_test=4, seed=5)  # the current folder's
    return ["eval", str(run)]


def default_dataset_prepared_with(command: str, *recorded: str, given: tuple[str, ...] = ()
                                  ) -> Callable:
    """The default dataset folder (prepared/<dataset>-T<T>-<size>px, under the current
    folder) prepared with ``recorded`` settings; ``command`` runs the recipe with ``given``."""
    def build(tmp: Path, world: Path) -> list[str]:
        from tmkt_cli.config import load_recipe, stage_config

        path = tmp / "toy.yaml"
        path.write_text(f"name: toy\nvariant: ''\npaths:\n  runs: {tmp}/runs\n"
                        f"prepare:\n  time_steps: {T}\n  size: {SIZE}\nmodel:\n"
                        f"  backbone: digitsnet\neval:\n  batch_size: 4\n")
        made = load_recipe(path, list(recorded))
        folder = made.dataset_dir()
        shutil.copytree(world / "prepared", folder, ignore=shutil.ignore_patterns(".lock"))
        manifest = read_manifest(folder)
        manifest["stage_config"] = stage_config(made, "prepare")
        write_json(folder / "manifest.json", manifest)
        if command == "eval":  # eval looks for the run before it reads the dataset
            fake_training_run(made)
        return [command, str(path), *[x for s in given for x in ("--set", s)]]
    return build


def edited_dataset_read_by(command: str, edit: Callable[[Path], None], *extra: str,
                           manifest_agrees: bool = True) -> Callable:
    """A copy of the prepared dataset changed by ``edit`` (its manifest made to agree, unless
    not ``manifest_agrees``), read by ``command``: train-tmkt or pretrain-ann of the toy
    recipe, or eval or cam of a finished run trained on the dataset before it changed."""
    def build(tmp: Path, world: Path) -> list[str]:
        if manifest_agrees:
            folder = prepared_copy(world, tmp, edit)
        else:
            folder = tmp / "prepared-edited"
            shutil.copytree(world / "prepared", folder, ignore=shutil.ignore_patterns(".lock"))
            edit(folder / "dataset.h5")
        sets = ["--set", f"paths.dataset={folder}", "--set", f"paths.runs={tmp}/runs",
                *[x for o in extra for x in ("--set", o)]]
        name = "dataset-edited"
        if command in ("eval", "cam"):
            return [command, str(finished_run(tmp, world, name)), *sets]
        return [command, str(recipe_in(world, name)), *sets]
    return build


def h5_delete(path: str) -> Callable[[Path], None]:
    def edit(h5: Path) -> None:
        import h5py
        with h5py.File(h5, "r+") as f:
            del f[path]
    return edit


def run_of_stage(stage: str, *args: str, copy: tuple[str, str] | None = None) -> Callable:
    """A finished fake run of ``stage`` ({run}), read by ``args``; ``copy``: (a file of the
    run, another name in it) copied first."""
    def build(tmp: Path, world: Path) -> list[str]:
        run = finished_run(tmp, world, f"of-{stage}", stage=stage)
        if copy is not None:
            shutil.copy(run / copy[0], run / copy[1])
        return [a.replace("{run}", str(run)).replace("{tmp}", str(tmp)) for a in args]
    return build


def in_world(*args: str) -> Callable:
    """``args`` with {prepared} (the world's prepared dataset folder), {tmp} replaced."""
    def build(tmp: Path, world: Path) -> list[str]:
        return [a.replace("{prepared}", str(world / "prepared")).replace("{tmp}", str(tmp))
                for a in args]
    return build


def landscape_of_a_folder_without_manifest(tmp: Path, _world: Path) -> list[str]:
    """A folder that looks like a run (a seed folder, a last.pt) but has no manifest."""
    folder = tmp / "runs" / "toy" / "seed42" / "train-tmkt"
    folder.mkdir(parents=True)
    (folder / "last.pt").write_bytes(b"not a checkpoint")
    return ["landscape", str(folder), "--out", str(tmp / "out")]


def report_of_runs_with_out(out: str) -> Callable:
    """report of a finished run, --out naming a file (or a path under one)."""
    def build(tmp: Path, world: Path) -> list[str]:
        run = finished_run(tmp, world, "reported")
        (tmp / "notes.txt").write_text("a file the user keeps")
        return ["report", str(run.parent.parent), "--out", str(tmp / out)]
    return build


def landscape_with_out(out: str) -> Callable:
    """landscape of a finished run, --out naming a file (or a path under one)."""
    def build(tmp: Path, world: Path) -> list[str]:
        run = finished_run(tmp, world, "landscaped")
        (tmp / "notes.txt").write_text("a file the user keeps")
        return ["landscape", str(run), "--out", str(tmp / out)]
    return build


def gzip_cut(data: bytes) -> bytes:
    """A gzip stream cut in its middle (a download that stopped)."""
    return data[: len(data) // 2]


def gzip_flipped(data: bytes) -> bytes:
    """A gzip stream with bytes of its compressed data flipped."""
    damaged = bytearray(data)
    for i in range(len(damaged) // 2, len(damaged) // 2 + 8):
        damaged[i] ^= 0xFF
    return bytes(damaged)


def gesture_tar_gz(members: dict[str, bytes], link: bytes | None = None) -> bytes:
    """A tar.gz of ``members``, plus a (sym or hard) ``link`` member named like a recording
    that points out of the tree."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        if link is not None:
            info = tarfile.TarInfo("ibmGestureTrain/user01_led/2.npy")
            info.type = link
            info.linkname = "../../../../home/user/.ssh/id_rsa"
            archive.addfile(info)
    return buffer.getvalue()


def dvsgesture_archived(train: bytes) -> dict[str, bytes]:
    """DVS-Gesture with its training recordings as ibmGestureTrain.tar.gz (``train``)."""
    return {k: v for k, v in dvsgesture_files().items() if k.startswith("ibmGestureTest/")} | {
        "ibmGestureTrain.tar.gz": train}


GESTURE_TRAIN = {k: v for k, v in dvsgesture_files().items() if k.startswith("ibmGestureTrain/")}


def nmnist_zipped(train: bytes) -> dict[str, bytes]:
    """N-MNIST with its training recordings as train.zip (``train``)."""
    return {k: v for k, v in nmnist_files().items() if not k.startswith("Train/")} | {
        "train.zip": train}


NMNIST_TRAIN_ZIP = zip_bytes({k: v for k, v in nmnist_files().items()
                              if k.startswith("Train/")})


def zip_member_damaged(data: bytes) -> bytes:
    """A zip whose first member's compressed bytes are flipped (its directory intact)."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = archive.infolist()[0]
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    damaged = bytearray(data)
    for i in range(start, start + min(8, info.compress_size)):
        damaged[i] ^= 0xFF
    return bytes(damaged)


NMNIST_TRAIN_ZIP_DEFLATED = zip_bytes({k: v for k, v in nmnist_files().items()
                                       if k.startswith("Train/")}, zipfile.ZIP_DEFLATED)


def ncaltech_images_as(name: str, data: bytes) -> dict[str, bytes]:
    return {**{k: v for k, v in ncaltech_files().items() if not k.startswith("101_")},
            name: data}


NCALTECH_IMAGES_TAR = tar_gz_bytes({k: v for k, v in ncaltech_files().items()
                                    if k.startswith("101_")})


def h5_edit_root(name: str, change: Callable[[np.ndarray], np.ndarray]
                 ) -> Callable[[Path], None]:
    """Rewrite the dataset /name through ``change``."""
    def edit(h5: Path) -> None:
        import h5py
        with h5py.File(h5, "r+") as f:
            data = change(f[name][()])
            del f[name]
            f.create_dataset(name, data=data)
    return edit


CASES += [
    # -- a checkpoint changed after its run completed: one bit, or another run's file ----------
    Case("eval-run-last-bit-flipped", after_completion("last.pt", "flip", "eval", "{run}"),
         r"last\.pt: " + CHANGED),
    Case("eval-best-bit-flipped", after_completion("best.pt", "flip", "eval", "{run}/best.pt"),
         r"best\.pt: " + CHANGED),
    Case("eval-best-test-bit-flipped", after_completion("best_test.pt", "flip", "eval",
                                                        "{run}/best_test.pt"),
         r"best_test\.pt: " + CHANGED),
    Case("eval-model-pt-whose-last-flipped", after_completion("last.pt", "flip", "eval",
                                                              "{run}/model.pt"),
         r"last\.pt: " + CHANGED),
    Case("eval-run-last-from-another-run", after_completion("last.pt", "copy", "eval", "{run}"),
         r"last\.pt: " + CHANGED),
    Case("eval-best-from-another-run", after_completion("best.pt", "copy", "eval",
                                                        "{run}/best.pt"),
         r"best\.pt: " + CHANGED),
    Case("eval-best-test-from-another-run", after_completion("best_test.pt", "copy", "eval",
                                                             "{run}/best_test.pt"),
         r"best_test\.pt: " + CHANGED),
    Case("cam-run-last-bit-flipped", after_completion("last.pt", "flip", "cam", "{run}"),
         r"last\.pt: " + CHANGED),
    Case("cam-best-bit-flipped", after_completion("best.pt", "flip", "cam", "{run}/best.pt"),
         r"best\.pt: " + CHANGED),
    Case("cam-model-pt-whose-last-flipped", after_completion("last.pt", "flip", "cam",
                                                             "{run}/model.pt"),
         r"last\.pt: " + CHANGED),
    Case("cam-run-last-from-another-run", after_completion("last.pt", "copy", "cam", "{run}"),
         r"last\.pt: " + CHANGED),
    Case("export-model-bit-flipped", after_completion("model.pt", "flip", "export", "{run}",
                                                      "--format", "torchscript"),
         r"model\.pt: " + CHANGED),
    Case("export-best-bit-flipped", after_completion("best.pt", "flip", "export",
                                                     "{run}/best.pt", "--format", "torchscript"),
         r"best\.pt: " + CHANGED),
    Case("export-best-test-bit-flipped", after_completion(
        "best_test.pt", "flip", "export", "{run}/best_test.pt", "--format", "torchscript"),
        r"best_test\.pt: " + CHANGED),
    Case("export-last-from-another-run", after_completion(
        "last.pt", "copy", "export", "{run}/last.pt", "--format", "torchscript"),
        r"last\.pt: " + CHANGED),
    Case("export-model-from-another-run", after_completion(
        "model.pt", "copy", "export", "{run}", "--format", "torchscript", "--out", "{tmp}/exp"),
        r"model\.pt: " + CHANGED),
    Case("predict-model-bit-flipped", after_completion("model.pt", "flip", "predict", "{run}",
                                                       "{tmp}/recording.bin"),
         r"model\.pt: " + CHANGED),
    Case("predict-best-bit-flipped", after_completion("best.pt", "flip", "predict",
                                                      "{run}/best.pt", "{tmp}/recording.bin"),
         r"best\.pt: " + CHANGED),
    Case("predict-model-from-another-run", after_completion(
        "model.pt", "copy", "predict", "{run}", "{tmp}/recording.bin"),
        r"model\.pt: " + CHANGED),
    Case("landscape-last-bit-flipped", after_completion(
        "last.pt", "flip", "landscape", "{run}", "--out", "{tmp}/landscape", "--grid", "2",
        "--samples", "2"),
        r"last\.pt: " + CHANGED),
    Case("teacher-last-bit-flipped", teacher_changed_after_completion,
         r"last\.pt: " + CHANGED),
    # -- another prepared dataset where the run's was --------------------------------------------
    Case("eval-run-another-dataset-set", another_dataset("eval", "{run}", "--set",
                                                         "paths.dataset={other}"),
         r"other: not the prepared dataset \S+train-tmkt was trained on \(hash [0-9a-f]+; "
         r"the run read [0-9a-f]+ at \S+\); set paths\.dataset to that dataset$"),
    Case("eval-run-dataset-replaced-in-place", another_dataset("eval", "{run}", in_place=True),
         r"prepared: not the prepared dataset \S+train-tmkt was trained on"),
    Case("eval-best-another-dataset", another_dataset("eval", "{run}/best.pt", "--set",
                                                      "paths.dataset={other}"),
         r"other: not the prepared dataset \S+train-tmkt was trained on"),
    Case("cam-run-another-dataset-set", another_dataset("cam", "{run}", "--set",
                                                        "paths.dataset={other}"),
         r"other: not the prepared dataset \S+train-tmkt was trained on"),
    Case("cam-run-dataset-replaced-in-place", another_dataset("cam", "{run}", in_place=True),
         r"prepared: not the prepared dataset \S+train-tmkt was trained on"),
    Case("eval-recipe-another-dataset", another_dataset(
        "eval", "{recipe}", "--set", "paths.runs={tmp}/runs", "--set", "paths.dataset={other}"),
        r"other: not the prepared dataset \S+train-tmkt was trained on"),
    Case("eval-moved-run-beside-another-dataset", moved_beside_another_dataset,
         r"prepared: not the prepared dataset \S+train-tmkt was trained on"),
    # -- the default dataset folder, prepared with other settings than the recipe's ------------
    Case("train-contrast-threshold-not-prepared", default_dataset_prepared_with(
        "train-tmkt", given=("prepare.emulator.contrast_threshold=0.3",)),
        r"prepared/digits-T4-16px: prepared with other settings than this recipe's "
        r"\(prepare\.emulator\.contrast_threshold 0\.2 \(recipe: 0\.3\)\); prepare this "
        r"recipe's dataset into a folder of its own"),
    Case("train-dataset-prepared-with-more-noise", default_dataset_prepared_with(
        "train-tmkt", "prepare.emulator.noise_rate_hz=5"),
        r"prepared/digits-T4-16px: prepared with other settings than this recipe's "
        r"\(prepare\.emulator\.noise_rate_hz 5\.0 \(recipe: 0\.5\)\)"),
    Case("pretrain-saccades-not-prepared", default_dataset_prepared_with(
        "pretrain-ann", given=("prepare.emulator.saccades=5",)),
        r"prepared with other settings than this recipe's \(prepare\.emulator\.saccades 3 "
        r"\(recipe: 5\)\)"),
    Case("distill-split-by-not-prepared", default_dataset_prepared_with(
        "distill", given=("prepare.split_by=number",)),
        r"prepared with other settings than this recipe's \(prepare\.split_by 'time' "
        r"\(recipe: 'number'\)\)"),
    Case("eval-duration-not-prepared", default_dataset_prepared_with(
        "eval", given=("prepare.emulator.duration_ms=100",)),
        r"prepared with other settings than this recipe's \(prepare\.emulator\.duration_ms "
        r"300\.0 \(recipe: 100\.0\)\)"),
    Case("cam-amplitude-not-prepared", default_dataset_prepared_with(
        "cam", given=("prepare.emulator.amplitude_px=4",)),
        r"prepared with other settings than this recipe's \(prepare\.emulator\.amplitude_px "
        r"2\.5 \(recipe: 4\.0\)\)"),
    Case("train-four-settings-not-prepared", default_dataset_prepared_with(
        "train-tmkt", given=("prepare.emulator.saccades=4", "prepare.emulator.noise_rate_hz=2",
                             "prepare.emulator.refractory_ms=3",
                             "prepare.emulator.hot_pixel_fraction=0.1")),
        r"\(prepare\.emulator\.hot_pixel_fraction 0\.0 \(recipe: 0\.1\); prepare\.emulator\."
        r"noise_rate_hz 0\.5 \(recipe: 2\.0\); prepare\.emulator\.refractory_ms 1\.0 "
        r"\(recipe: 3\.0\); and 1 more\)"),
    # -- prepared datasets of the wrong dtype, shape or labels, in each split and stage ---------
    Case("train-test-frames-float16", edited_dataset_read_by(
        "train-tmkt", h5_edit("test", "frames", lambda a: a.astype(np.float16))),
        r"dataset\.h5: damaged prepared dataset \(/test/frames has dtype float16, expected "
        r"float32\)"),
    Case("train-frames-one-time-step-short", edited_dataset_read_by(
        "train-tmkt", h5_edit("train", "frames", lambda a: a[:, 1:])),
        r"dataset\.h5: damaged prepared dataset \(/train/frames has shape \(6, 3, 2, 16, 16\), "
        r"expected \(6, 4, 2, 16, 16\)\)"),
    Case("train-classes-list-shortened", edited_dataset_read_by(
        "train-tmkt", h5_edit_root("classes", lambda a: a[:2])),
        r"dataset\.h5: damaged prepared dataset \(/train/labels\[2\] is 2, outside 0\.\.1 "
        r"classes; 2 such row\(s\)\)"),
    Case("train-event-counts-short", edited_dataset_read_by(
        "train-tmkt", h5_edit("train", "event_counts", lambda a: a[:-1])),
        r"dataset\.h5: damaged prepared dataset \(/train/event_counts has shape \(5,\), "
        r"expected \(6,\)\)"),
    Case("train-no-test-split", edited_dataset_read_by("train-tmkt", h5_delete("test")),
         r"dataset\.h5: damaged prepared dataset \(no /test group\)"),
    Case("eval-train-frames-int16", edited_dataset_read_by(
        "eval", h5_edit("train", "frames", lambda a: a.astype(np.int16))),
        r"dataset\.h5: damaged prepared dataset \(/train/frames has dtype int16, expected "
        r"float32\)"),
    Case("eval-test-frames-smaller", edited_dataset_read_by(
        "eval", h5_edit("test", "frames", lambda a: a[..., :8, :8])),
        r"dataset\.h5: damaged prepared dataset \(/test/frames has shape \(6, 4, 2, 8, 8\), "
        r"expected \(6, 4, 2, 16, 16\)\)"),
    Case("eval-test-label-out-of-range", edited_dataset_read_by(
        "eval", h5_edit("test", "labels", lambda a: a + 3)),
        r"dataset\.h5: damaged prepared dataset \(/test/labels\[0\] is 3, outside 0\.\.2 "
        r"classes"),
    Case("eval-test-image-labels-float", edited_dataset_read_by(
        "eval", h5_edit("test", "image_labels", lambda a: a.astype(np.float64))),
        r"dataset\.h5: damaged prepared dataset \(/test/image_labels has dtype float64, "
        r"expected integers\)"),
    Case("eval-dataset-class-names-renamed", edited_dataset_read_by(
        "eval", h5_edit_root("classes", lambda a: np.arange(len(a)))),
        r"train-tmkt/last\.pt: the checkpoint does not match this recipe and dataset "
        r"\(eval\.source=train-tmkt\): it holds other class names \(class 0: 'zero', dataset: "
        r"'0'\)$"),
    Case("train-dataset-edited-without-its-manifest", edited_dataset_read_by(
        "train-tmkt", set_attr("note", "relabelled by hand " * 100), manifest_agrees=False),
        r"prepared-edited: output 'dataset' is not what its run recorded \(dataset\.h5 has \d+ "
        r"bytes, the manifest says \d+; from recipe key paths\.dataset\); run that stage again "
        r"to repair it$"),
    Case("eval-test-lacks-frames", edited_dataset_read_by("eval", h5_delete("test/frames")),
         r"dataset\.h5: damaged prepared dataset \(/test lacks frames\)"),
    Case("cam-test-frames-float64", edited_dataset_read_by(
        "cam", h5_edit("test", "frames", lambda a: a.astype(np.float64))),
        r"dataset\.h5: damaged prepared dataset \(/test/frames has dtype float64, expected "
        r"float32\)"),
    Case("cam-test-labels-one-short", edited_dataset_read_by(
        "cam", h5_edit("test", "labels", lambda a: a[:-1])),
        r"dataset\.h5: damaged prepared dataset \(/test/frames has shape \(6, 4, 2, 16, 16\), "
        r"expected \(5, 4, 2, 16, 16\)\)"),
    Case("cam-test-image-index-below-missing", edited_dataset_read_by(
        "cam", h5_edit("test", "image_index", lambda a: a - 9)),
        r"dataset\.h5: damaged prepared dataset \(/test/image_index\[0\] is -9, outside 0\.\.5 "
        r"images; 6 such row\(s\)\)"),
    Case("pretrain-train-images-float32", edited_dataset_read_by(
        "pretrain-ann", h5_edit("train", "images", lambda a: a.astype(np.float32))),
        r"dataset\.h5: damaged prepared dataset \(/train/images has dtype float32, expected "
        r"uint8\)"),
    Case("pretrain-images-grey", edited_dataset_read_by(
        "pretrain-ann", h5_edit("train", "images", lambda a: a[..., 0])),
        r"dataset\.h5: damaged prepared dataset \(/train/images has shape \(6, 16, 16\), "
        r"expected \(6, 16, 16, 3\)\)"),
    Case("pretrain-image-label-out-of-range", edited_dataset_read_by(
        "pretrain-ann", h5_edit("train", "image_labels", lambda a: a + 10)),
        r"dataset\.h5: damaged prepared dataset \(/train/image_labels\[0\] is 10, outside "
        r"0\.\.2 classes; 6 such row\(s\)\)"),
    Case("pretrain-test-images-int8", edited_dataset_read_by(
        "pretrain-ann", h5_edit("test", "images", lambda a: a.astype(np.int8))),
        r"dataset\.h5: damaged prepared dataset \(/test/images has dtype int8, expected "
        r"uint8\); prepare it again$"),
    # -- report and landscape on what is not a run, --out naming a file -----------------------
    Case("report-out-is-a-file", report_of_runs_with_out("notes.txt"),
         r"--out \S+/notes\.txt: \S+/notes\.txt is a file, not a folder; name a folder for "
         r"the output$"),
    Case("report-out-under-a-file", report_of_runs_with_out("notes.txt/report"),
         r"--out \S+/notes\.txt/report: \S+/notes\.txt is a file, not a folder"),
    Case("landscape-out-is-a-file", landscape_with_out("notes.txt"),
         r"--out \S+/notes\.txt: \S+/notes\.txt is a file, not a folder; name a folder for "
         r"the output$"),
    Case("landscape-out-under-a-file", landscape_with_out("notes.txt/landscape"),
         r"--out \S+/notes\.txt/landscape: \S+/notes\.txt is a file, not a folder"),
    Case("report-of-a-folder-without-runs", cli("report", "{tmp}", "--out", "{tmp}/report"),
         r"no finished train-tmkt, distill or pretrain-ann runs under \S+/case$",
         untouched="report"),
    Case("report-of-a-missing-folder", cli("report", "{tmp}/nowhere", "--out", "{tmp}/report"),
         r"nowhere: not found \(a RUN argument of tmkt report\)$", untouched="report"),
    Case("report-table-missing", cli("report", "--table", "{tmp}/runs.csv", "--out",
                                     "{tmp}/report"),
         r"runs\.csv: not found \(--table takes a runs\.csv written by tmkt report\)$",
         untouched="report"),
    Case("report-docs-without-table", cli("report", "--docs", "README.md"),
         r"--docs and --check-docs need --table PATH/runs\.csv"),
    Case("landscape-of-a-folder-without-manifest", landscape_of_a_folder_without_manifest,
         r"seed42/train-tmkt: no manifest\.json, not a tmkt run folder \(from tmkt "
         r"landscape RUN\)$"),
    Case("landscape-of-a-prepare-folder", in_world("landscape", "{prepared}", "--out",
                                                   "{tmp}/out"),
         r"prepared: holds a 'prepare' run, expected train-tmkt or distill or pretrain-ann "
         r"\(from tmkt landscape RUN\)$"),
    Case("landscape-of-a-missing-folder", cli("landscape", "{tmp}/nowhere", "--out",
                                              "{tmp}/out"),
         r"nowhere: not found \(from tmkt landscape RUN\)$"),
    # -- options given a value they do not take ----------------------------------------------
    Case("eval-figure-format-gif", cli("eval", DIGITS_RECIPE, "--figure-format", "gif"),
         r"--figure-format: 'gif' is not one of pdf, svg$"),
    Case("cam-figure-format-gif", cli("cam", DIGITS_RECIPE, "--figure-format", "gif"),
         r"--figure-format: 'gif' is not one of pdf, svg$"),
    Case("report-figure-format-gif", cli("report", "{tmp}", "--figure-format", "gif"),
         r"--figure-format: 'gif' is not one of pdf, svg$"),
    Case("landscape-figure-format-gif", cli("landscape", "{tmp}", "--figure-format", "gif"),
         r"--figure-format: 'gif' is not one of pdf, svg$"),
    Case("figure-format-png-before-the-command", cli("--figure-format", "png", "eval",
                                                     DIGITS_RECIPE),
         r"--figure-format: 'png' is not one of pdf, svg$"),
    Case("export-format-upper-case", cli("export", "{tmp}", "--format", "TorchScript"),
         r"--format: expected torchscript or onnx, got 'TorchScript'$"),
    Case("resume-sometimes", cli("train-tmkt", DIGITS_RECIPE, "--resume", "sometimes"),
         r"--resume: expected auto or never, got 'sometimes'$"),
    Case("resume-empty", cli("eval", DIGITS_RECIPE, "--resume", ""),
         r"--resume: expected auto or never, got ''$"),
    Case("resume-yes", cli("cam", DIGITS_RECIPE, "--resume", "yes"),
         r"--resume: expected auto or never, got 'yes'$"),
    Case("resume-upper-case", cli("pretrain-ann", DIGITS_RECIPE, "--resume", "NEVER"),
         r"--resume: expected auto or never, got 'NEVER'$"),
    # -- --set: unknown keys, wrong types, out of range, in every section ----------------------
    Case("set-unknown-data-key", cli("train-tmkt", DIGITS_RECIPE, "--set",
                                     "data.event_fraktion=0.5"),
         r"unknown recipe key 'data\.event_fraktion'; did you mean 'data\.event_fraction'\?$"),
    Case("set-unknown-model-key", cli("train-tmkt", DIGITS_RECIPE, "--set",
                                      "model.backbon=scnn"),
         r"unknown recipe key 'model\.backbon'; did you mean 'model\.backbone'\?$"),
    Case("set-unknown-train-key", cli("train-tmkt", DIGITS_RECIPE, "--set",
                                      "train.learning_rate=0.1"),
         r"unknown recipe key 'train\.learning_rate'; did you mean 'train\.decay_rate'\?$"),
    Case("set-unknown-method-key", cli("train-tmkt", DIGITS_RECIPE, "--set",
                                       "method.mixratio=0.3"),
         r"unknown recipe key 'method\.mixratio'; did you mean 'method\.mix_ratio'\?$"),
    Case("set-unknown-eval-key", cli("eval", DIGITS_RECIPE, "--set", "eval.batchsize=8"),
         r"unknown recipe key 'eval\.batchsize'; did you mean 'eval\.batch_size'\?$"),
    Case("set-unknown-cam-key", cli("cam", DIGITS_RECIPE, "--set", "cam.sample=3"),
         r"unknown recipe key 'cam\.sample'; did you mean 'cam\.samples'\?$"),
    Case("set-unknown-emulator-key", cli("prepare", "digits", "--out", "{tmp}/out", "--set",
                                         "prepare.emulator.contrast=0.3"),
         r"unknown recipe key 'prepare\.emulator\.contrast'; did you mean "
         r"'prepare\.emulator\.canvas'\?$", untouched="out"),
    Case("set-data-fraction-not-a-number", cli("train-tmkt", DIGITS_RECIPE, "--set",
                                               "data.event_fraction=half"),
         r"recipe key 'data\.event_fraction': expected a number, got 'half'$"),
    Case("set-model-tau-not-a-number", cli("train-tmkt", DIGITS_RECIPE, "--set",
                                           "model.tau=fast"),
         r"recipe key 'model\.tau': expected a number, got 'fast'$"),
    Case("set-batch-size-a-fraction", cli("train-tmkt", DIGITS_RECIPE, "--set",
                                          "train.batch_size=1.5"),
         r"recipe key 'train\.batch_size': expected an integer, got 1\.5$"),
    Case("set-method-switch-not-a-boolean", cli("train-tmkt", DIGITS_RECIPE, "--set",
                                                "method.tsm=maybe"),
         r"recipe key 'method\.tsm': expected bool \| null, got 'maybe'$"),
    Case("set-eval-batch-size-a-word", cli("eval", DIGITS_RECIPE, "--set",
                                           "eval.batch_size=many"),
         r"recipe key 'eval\.batch_size': expected an integer, got 'many'$"),
    Case("set-cam-samples-not-a-list", cli("cam", DIGITS_RECIPE, "--set", "cam.samples=first"),
         r"recipe key 'cam\.samples': expected a list, got 'first'$"),
    Case("set-emulator-canvas-a-word", cli("prepare", "digits", "--out", "{tmp}/out", "--set",
                                           "prepare.emulator.canvas=big"),
         r"recipe key 'prepare\.emulator\.canvas': expected an integer, got 'big'$",
         untouched="out"),
    Case("set-data-fraction-zero", cli("train-tmkt", DIGITS_RECIPE, "--set",
                                       "data.event_fraction=0"),
         r"recipe key 'data\.event_fraction': expected a value > 0, got 0\.0$"),
    Case("set-data-fraction-above-one", cli("train-tmkt", DIGITS_RECIPE, "--set",
                                            "data.event_fraction=1.5"),
         r"recipe key 'data\.event_fraction': expected a value <= 1, got 1\.5$"),
    Case("set-model-tau-one", cli("train-tmkt", DIGITS_RECIPE, "--set", "model.tau=1"),
         r"recipe key 'model\.tau': expected a value > 1, got 1\.0$"),
    Case("set-batch-size-zero", cli("train-tmkt", DIGITS_RECIPE, "--set",
                                    "train.batch_size=0"),
         r"recipe key 'train\.batch_size': expected a value >= 1, got 0$"),
    Case("set-method-mix-ratio-above-one", cli("train-tmkt", DIGITS_RECIPE, "--set",
                                               "method.mix_ratio=2"),
         r"recipe key 'method\.mix_ratio': expected a value <= 1, got 2\.0$"),
    Case("set-eval-batch-size-zero", cli("eval", DIGITS_RECIPE, "--set", "eval.batch_size=0"),
         r"recipe key 'eval\.batch_size': expected a value >= 1, got 0$"),
    Case("set-cam-max-classes-zero", cli("cam", DIGITS_RECIPE, "--set", "cam.max_classes=0"),
         r"recipe key 'cam\.max_classes': expected a value >= 1, got 0$"),
    Case("set-emulator-duration-zero", cli("prepare", "digits", "--out", "{tmp}/out", "--set",
                                           "prepare.emulator.duration_ms=0"),
         r"recipe key 'prepare\.emulator\.duration_ms': expected a value > 0, got 0\.0$",
         untouched="out"),
    Case("set-emulator-keep-fraction-above-one", cli(
        "prepare", "digits", "--out", "{tmp}/out", "--set",
        "prepare.emulator.event_keep_fraction=1.2"),
        r"recipe key 'prepare\.emulator\.event_keep_fraction': expected a value <= 1, "
        r"got 1\.2$", untouched="out"),
    Case("set-val-fraction-one", cli("train-tmkt", DIGITS_RECIPE, "--set",
                                     "data.val_fraction=1"),
         r"recipe key 'data\.val_fraction': expected a value < 1, got 1\.0$"),
    Case("set-method-name-misspelt", cli("train-tmkt", DIGITS_RECIPE, "--set",
                                         "method.name=tmtk"),
         r"recipe key 'method\.name': expected one of 'event_only', 'finetune', 'kt', "
         r"'tmkt', 'static_only', got 'tmtk'; did you mean 'tmkt'\?$"),
    Case("set-method-name-upper-case", cli("train-tmkt", DIGITS_RECIPE, "--set",
                                           "method.name=KT"),
         r"recipe key 'method\.name': expected one of 'event_only', .*, got 'KT'$"),
    Case("set-method-name-empty", cli("train-tmkt", DIGITS_RECIPE, "--set", "method.name="),
         r"recipe key 'method\.name': expected one of 'event_only', .*, got ''$"),
    Case("set-conv-init-xavier", cli("train-tmkt", DIGITS_RECIPE, "--set",
                                     "model.conv_init=xavier"),
         r"recipe key 'model\.conv_init': expected one of 'kaiming_fan_out', "
         r"'torch_default', got 'xavier'$"),
    Case("set-rotation-interpolation-bicubic", cli("train-tmkt", DIGITS_RECIPE, "--set",
                                                   "data.rotation_interpolation=bicubic"),
         r"recipe key 'data\.rotation_interpolation': expected one of 'bilinear', "
         r"'nearest', got 'bicubic'$"),
    Case("set-unknown-backbone", toy("train-tmkt", "{recipe}", "--set",
                                     "model.backbone=resnet9000"),
         r"recipe key 'model\.backbone': unknown backbone 'resnet9000'; expected one of "
         r"digitsnet, resnet18, "),
    # -- cam of what it does not explain ---------------------------------------------------------
    Case("cam-of-a-pretrain-ann-run", run_of_stage("pretrain-ann", "cam", "{run}"),
         r"pretrain-ann: a pretrain-ann run; cam explains an SNN \(train-tmkt, distill\)$"),
    Case("cam-of-best-test", run_of_stage("train-tmkt", "cam", "{run}/best_test.pt"),
         r"best_test\.pt: cam reads last\.pt, model\.pt or best\.pt of a run$"),
    Case("cam-of-a-prepare-folder", in_world("cam", "{prepared}"),
         r"prepared: a prepare run; cam reads a training run \(train-tmkt, distill, "
         r"pretrain-ann\)$"),
    Case("cam-of-another-checkpoint-name", run_of_stage("train-tmkt", "cam", "{run}/epoch3.pt",
                                                        copy=("last.pt", "epoch3.pt")),
         r"epoch3\.pt: not a checkpoint a run writes \(last\.pt, model\.pt, best\.pt, "
         r"best_test\.pt\); give cam its run folder$"),
    Case("eval-of-a-prepare-folder", in_world("eval", "{prepared}"),
         r"prepared: a prepare run; eval reads a training run \(train-tmkt, distill, "
         r"pretrain-ann\)$"),
    Case("predict-with-a-prepare-folder", in_world("predict", "{prepared}", "{tmp}/a.bin"),
         r"prepared: holds a 'prepare' run, expected train-tmkt or distill \(from tmkt "
         r"predict RUN_OR_EXPORT\)$"),
    Case("export-of-a-pretrain-ann-run", run_of_stage("pretrain-ann", "export", "{run}"),
         r"pretrain-ann: holds a 'pretrain-ann' run, expected train-tmkt or distill \(from "
         r"tmkt export RUN\)$"),
    # -- archives: damaged gzip, cut zips, members that are links ------------------------------
    Case("dvsgesture-tar-gz-cut", prepare("dvsgesture", dvsgesture_archived(
        gzip_cut(gesture_tar_gz(GESTURE_TRAIN)))),
        r"ibmGestureTrain\.tar\.gz: damaged compressed data \(Compressed file ended before "
        r"the end-of-stream marker was reached\)$"),
    Case("dvsgesture-tar-gz-flipped", prepare("dvsgesture", dvsgesture_archived(
        gzip_flipped(gesture_tar_gz(GESTURE_TRAIN)))),
        r"ibmGestureTrain\.tar\.gz: damaged compressed data \(Error -3 while "
        r"decompressing data"),
    Case("dvsgesture-tar-gz-member-is-a-symlink", prepare("dvsgesture", dvsgesture_archived(
        gesture_tar_gz(GESTURE_TRAIN, link=tarfile.SYMTYPE))),
        r"ibmGestureTrain\.tar\.gz: refusing member 'ibmGestureTrain/user01_led/2\.npy': "
        r"a link \(to '\.\./\.\./\.\./\.\./home/user/\.ssh/id_rsa'\), not a file; tmkt reads "
        r"no links in archives$"),
    Case("dvsgesture-tar-gz-member-is-a-hard-link", prepare("dvsgesture", dvsgesture_archived(
        gesture_tar_gz(GESTURE_TRAIN, link=tarfile.LNKTYPE))),
        r"ibmGestureTrain\.tar\.gz: refusing member 'ibmGestureTrain/user01_led/2\.npy': "
        r"a link \(to '\.\./\.\./\.\./\.\./home/user/\.ssh/id_rsa'\)"),
    Case("nmnist-train-zip-cut", prepare("nmnist", nmnist_zipped(NMNIST_TRAIN_ZIP[:-30])),
         r"train\.zip: not a readable zip archive \(File is not a zip file\)$"),
    Case("nmnist-train-zip-member-damaged", prepare("nmnist", nmnist_zipped(
        zip_member_damaged(NMNIST_TRAIN_ZIP_DEFLATED))),
        r"train\.zip!Train/0/00001\.bin: damaged member \(Error -3 while decompressing data"),
    Case("ncaltech101-images-tar-gz-cut", prepare("ncaltech101", ncaltech_images_as(
        "101_ObjectCategories.tar.gz", gzip_cut(NCALTECH_IMAGES_TAR))),
        r"101_ObjectCategories\.tar\.gz: damaged compressed data \(Compressed file ended "
        r"before the end-of-stream marker was reached\)$"),
    Case("ncaltech101-images-gz-not-a-tar", prepare("ncaltech101", ncaltech_images_as(
        "101_ObjectCategories.tar.gz", gzip.compress(b"not a tar archive" * 40))),
        r"101_ObjectCategories\.tar\.gz: not a readable zip or tar archive \(invalid "
        r"header\)$"),
    Case("cifar10-python-tar-gz-cut", prepare("cifar10dvs", {
        "cat/cifar10_cat_0.aedat": writers.encode_aedat2(tagged_events(1)),
        "cat/cifar10_cat_1.aedat": writers.encode_aedat2(tagged_events(2)),
        "cifar-10-python.tar.gz": gzip_cut(tar_gz_bytes(cifar_batches()))}),
        r"cifar-10-python\.tar\.gz: damaged compressed data \(Compressed file ended before "
        r"the end-of-stream marker was reached\)$"),
]


def test_an_error_names_a_file_it_cannot_read_and_never_echoes_it(tmp_path, monkeypatch):
    """No error line quotes what it failed to read: a password database, a file of another
    format, keys and tags from one; the system's own files too, where they can be read."""
    monkeypatch.chdir(tmp_path)
    files = {"shadow": PASSWORD_DATABASE,
             "passwd": f"root:x:0:0:{SECRET}: admin:/root:/bin/bash\n",
             "nested": f"train:\n  '{SECRET}:x': 1\n",
             "duplicate": f"'{SECRET}:1': a\n'{SECRET}:1': b\n",
             "tag": f"name: !<{SECRET}{'x' * 200}> a\n"}
    paths = [tmp_path / name for name in files]
    for path, text in zip(paths, files.values(), strict=True):
        path.write_text(text)
    system = [Path(p) for p in ("/etc/passwd", "/etc/shadow", "/etc/group")
              if os.access(p, os.R_OK)]
    for path in paths + system:
        result = CliRunner().invoke(app, ["train-tmkt", str(path), "--dry-run"])
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert result.exit_code == 2 and len(errors) == 1, result.output
        assert str(path) in errors[0] and "Traceback" not in result.output
        assert SECRET not in result.output, result.output
        if path in system:  # neither its first entry nor that entry's name
            first = path.read_text(errors="replace").splitlines()[0]
            said = errors[0].replace(str(path), "")
            assert first not in said and first.split(":")[0] not in said, errors[0]


def test_there_are_at_least_200_cases():
    """Issue 27 asks for at least 200 CLI cases in all, each its own mistake (unique ids)."""
    assert len(CASES) >= 200 and len({c.id for c in CASES}) == len(CASES)


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

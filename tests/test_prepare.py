"""``tmkt prepare`` end to end on tiny emulator settings: CLI, up to date, dry run, workers,
kill and resume, the ``images`` dataset and the errors a user can cause."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits
from typer.testing import CliRunner

from tmkt_cli.cli import app
from tmkt_cli.config import DataConfig
from tmkt_cli.data.loaders import EventDataset
from tmkt_cli.data.store import FILENAME, iter_arrays, open_dataset, recompute_content_hash

REPO = Path(__file__).resolve().parent.parent
TMKT = [sys.executable, "-m", "tmkt_cli"]
TINY = ["-T", "4", "--size", "8",
        "-s", "prepare.emulator.recordings_per_image=1",
        "-s", "prepare.emulator.canvas=10", "-s", "prepare.emulator.image_size=8",
        "-s", "prepare.emulator.duration_ms=20", "-s", "prepare.emulator.sample_rate_hz=500",
        "-s", "prepare.emulator.amplitude_px=1.0", "-s", "prepare.flush_every=16"]


def tmkt(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*TMKT, *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def same_arrays(a: Path, b: Path) -> bool:
    left, right = dict(iter_arrays(a)), dict(iter_arrays(b))
    return left.keys() == right.keys() and all(np.array_equal(left[k], right[k]) for k in left)


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    """``tmkt prepare digits`` from the command line, one worker."""
    out = tmp_path_factory.mktemp("digits") / "ds"
    proc = tmkt("prepare", "digits", *TINY, "--out", str(out))
    assert "starting in" in proc.stderr and "1797 recordings" in proc.stderr
    return out


def test_cli_end_to_end(digits):
    with open_dataset(digits) as ds:
        assert ds.dataset == "digits" and ds.classes == [str(c) for c in range(10)]
        assert ds.time_steps == 4 and ds.size == 8 and ds.sensor_sizes == [(10, 10)]
        train, test = ds.split("train"), ds.split("test")
        assert train["frames"].shape[1:] == (4, 2, 8, 8) and train["images"].shape[1:] == (8, 8, 3)
        n_train, n_test = train["labels"].shape[0], test["labels"].shape[0]
        assert n_train + n_test == 1797 and abs(n_test - 0.2 * 1797) < 10
        # per class, the first 80% by index train: the train sources come first per class
        labels = np.concatenate([ds.labels("train"), ds.labels("test")])
        assert np.bincount(labels).tolist() == np.bincount(load_digits().target).tolist()
        assert (ds.image_index("train") == np.arange(n_train)).all()  # own image, one each
        assert (train["event_counts"][()] > 0).all() and not train["dropped_events"][()].any()
        assert ds.info["class_names"]["3"] == "3" and "emulator" in ds.info
        assert "prepare:" in ds.prepare_config and ds.content_hash
    manifest = json.loads((digits / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    out = manifest["outputs"]["dataset"]
    assert out["path"] == FILENAME and out["sha256"] == open_dataset(digits).content_hash
    assert recompute_content_hash(digits / FILENAME) == out["sha256"]
    m = manifest["metrics"]
    with open_dataset(digits) as ds:
        total = sum(int(ds.split(s)["event_counts"][()].sum()) for s in ("train", "test"))
    assert m["events"] == total and m["dropped_events"] == 0 and m["recordings"] == 1797
    assert m["raw"] == {"root": None}


def test_rerun_is_up_to_date_and_dry_run_writes_nothing(digits, tmp_path):
    proc = tmkt("prepare", "digits", *TINY, "--out", str(digits))
    assert "up to date" in proc.stderr
    fresh = tmp_path / "never"
    res = invoke("prepare", "digits", *TINY, "--out", str(fresh), "--dry-run")
    assert res.exit_code == 0, res.output
    assert "starting in" in res.output and not fresh.exists()
    res = invoke("prepare", "digits", *TINY, "--out", str(digits), "--dry-run")
    assert "up to date" in res.output


def test_two_workers_write_the_same_arrays(digits, tmp_path):
    out = tmp_path / "w2"
    res = invoke("prepare", "digits", *TINY, "--out", str(out), "--workers", "2")
    assert res.exit_code == 0, res.output
    assert same_arrays(digits / FILENAME, out / FILENAME)
    assert open_dataset(out).content_hash == open_dataset(digits).content_hash
    # uninterrupted runs write the very same bytes (no timestamps, volatile keys left out)
    assert (digits / FILENAME).read_bytes() == (out / FILENAME).read_bytes()


def test_sigkill_then_rerun_resumes_to_the_same_file(digits, tmp_path):
    out = tmp_path / "killed"
    partial = out / (FILENAME + ".partial")
    proc = subprocess.Popen([*TMKT, "prepare", "digits", *TINY, "--out", str(out)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    # half the finished file's size: well past the creation of the file (which already holds
    # the sources and labels) and the first committed blocks
    halfway = (digits / FILENAME).stat().st_size // 2
    deadline = time.time() + 60
    while not (partial.exists() and partial.stat().st_size > halfway):
        assert proc.poll() is None and time.time() < deadline, "prepare ended before the kill"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / FILENAME).exists()
    status = json.loads((out / "manifest.json").read_text())["status"]
    assert status == "running"  # what a SIGKILL leaves
    rerun = tmkt("prepare", "digits", *TINY, "--out", str(out))
    resumed = re.search(r"resuming \S+ after (\d+) committed samples", rerun.stderr)
    assert resumed and int(resumed.group(1)) > 0, rerun.stderr
    assert same_arrays(digits / FILENAME, out / FILENAME)
    assert open_dataset(out).content_hash == open_dataset(digits).content_hash


def write_image_folder(root: Path, per_class=(5, 4, 2)) -> None:
    rng = np.random.default_rng(0)
    for c, n in zip(("cat", "dog", "emu"), per_class, strict=True):
        (root / c).mkdir(parents=True)
        for i in range(n):
            pixels = rng.integers(0, 256, (12 + i, 9, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / c / f"img{i:02d}.png")
        (root / c / "notes.txt").write_text("not an image")


def test_images_dataset(tmp_path):
    root = tmp_path / "raw"
    write_image_folder(root)
    out = tmp_path / "ds"
    res = invoke("prepare", "images", "--root", str(root), *TINY, "--out", str(out),
                 "-s", "prepare.emulator.recordings_per_image=2")
    assert res.exit_code == 0, res.output
    with open_dataset(out) as ds:
        assert ds.classes == ["cat", "dog", "emu"]
        # per class round(0.8 n) train, at least one test: 4+3+1 train, 1+1+1 test
        assert ds.split("train")["image_labels"][()].tolist() == [0] * 4 + [1] * 3 + [2]
        assert ds.split("test")["image_sources"].asstr()[()].tolist() == [
            "cat/img04.png", "dog/img03.png", "emu/img01.png"]
        assert ds.sources("train")[:3] == ["cat/img00.png#rec0", "cat/img00.png#rec1",
                                           "cat/img01.png#rec0"]
        assert ds.image_index("train").tolist() == np.repeat(np.arange(8), 2).tolist()
        assert ds.labels("test").tolist() == [0, 0, 1, 1, 2, 2]
    paired = EventDataset(out, "test", DataConfig(pairing="instance"), seed=0, augment=False,
                          with_static=True)
    assert [paired[i]["static_index"] for i in range(6)] == [0, 0, 1, 1, 2, 2]
    manifest = json.loads((out / "manifest.json").read_text())
    raw = manifest["metrics"]["raw"]
    assert raw["root"] == str(root.resolve()) and raw["files"] == 14 and raw["listing_hash"]


def test_user_errors_are_one_line(tmp_path):
    res = invoke("prepare", "images", "--out", str(tmp_path / "a"))
    assert res.exit_code == 2 and "prepare.root" in res.output and "Traceback" not in res.output
    res = invoke("prepare", "images", "--root", str(tmp_path / "absent"),
                 "--out", str(tmp_path / "b"))
    assert res.exit_code == 2 and "absent: not found (from recipe key 'prepare.root')" \
        in res.output
    res = invoke("prepare", "digits", "--out", str(tmp_path / "c"),
                 "-s", "prepare.emulator.image_size=40")
    assert res.exit_code == 2 and "prepare.emulator.image_size" in res.output \
        and "prepare.emulator.canvas" in res.output
    root = tmp_path / "raw"
    write_image_folder(root)
    (root / "dog" / "img01.png").write_bytes(b"\x89PNG but not really")
    res = invoke("prepare", "images", "--root", str(root), *TINY, "--out", str(tmp_path / "d"))
    assert res.exit_code == 2 and "dog/img01.png: cannot decode the image" in res.output
    empty = tmp_path / "empty"
    (empty / "cls").mkdir(parents=True)
    res = invoke("prepare", "images", "--root", str(empty), "--out", str(tmp_path / "e"))
    assert res.exit_code == 2 and "cls: no images" in res.output


def test_replaced_raw_files_make_a_finished_prepare_refuse(tmp_path):
    """The raw root's listing is an input: changing it is refused like a changed config."""
    from PIL import Image
    from typer.testing import CliRunner

    from tmkt_cli.cli import app

    root = tmp_path / "imgs"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (40 * i, 90, 200)).save(root / c / f"{i}.png")
    args = ["prepare", "images", "--root", str(root), "--out", str(tmp_path / "out"),
            "--time-steps", "2", "--size", "8", "--set", "prepare.emulator.duration_ms=20",
            "--set", "prepare.emulator.canvas=12", "--set", "prepare.emulator.image_size=8"]
    runner = CliRunner()
    assert runner.invoke(app, args).exit_code == 0
    assert "up to date" in runner.invoke(app, args).output
    Image.new("RGB", (9, 9)).save(root / "a" / "extra.png")
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "inputs changed (raw)" in res.output


def test_prepare_warns_of_recordings_without_events_and_events_off_the_sensor(tmp_path):
    """Issue 27: recordings that integrate to nothing (a wrong time unit, an empty file) and
    events dropped outside the sensor trained silently; prepare now says so, with counts."""
    from tmkt_cli.stages.prepare import plausibility_warnings

    res = invoke("prepare", "digits", *TINY, "--out", str(tmp_path / "blank"),
                 "-s", "prepare.emulator.contrast_threshold=50",
                 "-s", "prepare.emulator.noise_rate_hz=0")
    assert res.exit_code == 0, res.output
    assert "warning:" in res.output and "have no event in their frames" in res.output
    splits = {"train": {"recordings": 10, "empty_recordings": 0},
              "test": {"recordings": 4, "empty_recordings": 1}}
    assert plausibility_warnings({"events": 96, "dropped_events": 4, "splits": splits}) == [
        "1 recording(s) have no event in their frames (1 of 4 in test): a wrong time unit or "
        "empty files? They train as blank samples; dataset.h5's /<split>/sources names them "
        "(event_counts 0)"]
    splits["test"]["empty_recordings"] = 0
    assert plausibility_warnings({"events": 96, "dropped_events": 4, "splits": splits}) == []
    (dropped,) = plausibility_warnings({"events": 90, "dropped_events": 10, "splits": splits})
    assert dropped.startswith("10% of the events fell outside the sensor (10 of 100)")


def test_a_recipe_with_other_prepare_settings_refuses_the_default_dataset(tmp_path,
                                                                          monkeypatch):
    """Issue 27: `--set prepare.emulator.*` changed the run folder's name but not the default
    dataset path, so training read a dataset prepared with other settings."""
    monkeypatch.chdir(tmp_path)
    res = invoke("prepare", "digits", *TINY)
    assert res.exit_code == 0, res.output
    same = ["-s", "prepare.time_steps=4", "-s", "prepare.size=8", *TINY[4:]]
    ok = invoke("train-tmkt", "digits/tmkt", *same, "--dry-run")
    assert ok.exit_code == 0 and "reads:   dataset=prepared/digits-T4-8px" in ok.output, \
        ok.output
    other = invoke("train-tmkt", "digits/tmkt", *same,
                   "-s", "prepare.emulator.contrast_threshold=0.3", "--dry-run")
    assert "prepared with other settings than this recipe's (prepare.emulator." \
           "contrast_threshold 0.2 (recipe: 0.3))" in other.output, other.output
    # a dataset path given by hand is the user's choice
    mine = invoke("train-tmkt", "digits/tmkt", *same, "-s",
                  "prepare.emulator.contrast_threshold=0.3", "-s",
                  "paths.dataset=prepared/digits-T4-8px", "--dry-run")
    assert "reads:   dataset=prepared/digits-T4-8px" in mine.output, mine.output

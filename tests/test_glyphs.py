"""The embedded ``glyphs`` dataset: deterministic drawings from matplotlib's fonts, classes and
the by-drawer split as documented, and ``tmkt prepare glyphs`` end to end at tiny settings."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest

from tmkt_cli.config import PrepareConfig
from tmkt_cli.data import sources
from tmkt_cli.data.datasets import glyphs
from tmkt_cli.data.store import open_dataset

REPO = Path(__file__).resolve().parent.parent

KNOWN_DRAWING = {"3.11.2": "129ee7b3d4d8511916493e7a5a9b4480b6fba350d6b3d7d45ab0ccb94783067b"}
"""sha256 of drawer 5's 'A', per matplotlib version it was checked on (matplotlib bundles its
FreeType, so one version rasterises the same bytes everywhere)."""


def test_a_drawing_is_a_pure_function_of_character_and_drawer():
    first = glyphs.draw("A", 5)
    glyphs.glyph_bitmap.cache_clear()
    again = glyphs.draw("A", 5)
    assert first.dtype == np.uint8 and first.shape == (glyphs.IMAGE_SIZE, glyphs.IMAGE_SIZE)
    assert first.tobytes() == again.tobytes()
    assert glyphs.draw("A", 6).tobytes() != first.tobytes()
    assert glyphs.draw("B", 5).tobytes() != first.tobytes()
    # light ink on darker paper: the brightest pixels are the glyph's
    assert first.max() > 150 and np.median(first) < first.max() - 60


def test_a_fresh_process_draws_the_same_bytes():
    code = ("import hashlib; from tmkt_cli.data.datasets.glyphs import draw; "
            "print(hashlib.sha256(draw('A', 5).tobytes()).hexdigest())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    here = hashlib.sha256(glyphs.draw("A", 5).tobytes()).hexdigest()
    assert out.stdout.strip() == here
    if matplotlib.__version__ in KNOWN_DRAWING:
        assert here == KNOWN_DRAWING[matplotlib.__version__]


def test_every_font_has_every_character():
    for font_file in glyphs.FONT_FILES:
        for character in glyphs.CHARACTERS:
            ink = glyphs.glyph_bitmap(font_file, character)
            assert ink.shape[0] > 10 and ink.max() > 0.5, (font_file, character)


def test_classes_and_split_by_drawer():
    data = sources.get("glyphs")(None, PrepareConfig(dataset="glyphs"))
    assert data.classes == list(glyphs.CHARACTERS) and len(data.classes) == 36
    assert len(data.train_images) == 36 * 48 and len(data.test_images) == 36 * 16
    assert len(data.train) == len(data.train_images)  # one recording per image by default

    def drawers(images):
        return {int(item.source.rsplit("drawer", 1)[1]) for item in images}

    train, test = drawers(data.train_images), drawers(data.test_images)
    assert not train & test and len(train | test) == glyphs.DRAWERS
    assert test == {d for d in range(glyphs.DRAWERS) if d % 4 == glyphs.TEST_HAND}
    for split in (data.train_images, data.test_images):
        counts = np.bincount([item.label for item in split], minlength=36)
        assert (counts == counts[0]).all()
    recording = data.test[7]
    assert data.test_images[recording.image_index].source == recording.source.split("#")[0]
    info = data.info
    assert info["matplotlib"] == matplotlib.__version__
    assert set(info["fonts_sha256"]) == set(glyphs.FONT_FILES)
    assert all(len(h) == 64 for h in info["fonts_sha256"].values())


TINY = ["-T", "2", "--size", "8",
        "-s", "prepare.emulator.recordings_per_image=1",
        "-s", "prepare.emulator.canvas=10", "-s", "prepare.emulator.image_size=8",
        "-s", "prepare.emulator.sensor_size=6", "-s", "prepare.emulator.hot_pixel_fraction=0",
        "-s", "prepare.emulator.duration_ms=10", "-s", "prepare.emulator.sample_rate_hz=400",
        "-s", "prepare.emulator.amplitude_px=1.0", "-s", "prepare.flush_every=256"]


def test_prepare_glyphs_end_to_end(tmp_path):
    out = tmp_path / "glyphs"
    proc = subprocess.run([sys.executable, "-m", "tmkt_cli", "prepare", "glyphs", *TINY,
                           "--out", str(out)], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    with open_dataset(out) as ds:
        assert ds.dataset == "glyphs" and ds.classes == list(glyphs.CHARACTERS)
        assert ds.time_steps == 2 and ds.size == 8
        assert set(ds.info["fonts_sha256"]) == set(glyphs.FONT_FILES)
        assert ds.info["emulator"]["sensor_size"] == 6
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"


@pytest.mark.parametrize("bad", ["prepare.emulator.sensor_size=11"])
def test_prepare_refuses_a_sensor_finer_than_the_canvas(tmp_path, bad):
    proc = subprocess.run([sys.executable, "-m", "tmkt_cli", "prepare", "glyphs", *TINY,
                           "-s", bad, "--out", str(tmp_path / "x")], capture_output=True,
                          text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2
    error = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert len(error) == 1 and "sensor_size" in error[0]
    assert not (tmp_path / "x" / "dataset.h5").exists()

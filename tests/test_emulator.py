"""tmkt's event-camera emulator (tmkt_cli/data/emulator.py), on tiny settings."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from tmkt_cli.config import EmulatorConfig
from tmkt_cli.data.emulator import (
    contrast_events,
    emulate,
    grey_scene,
    render_shifted,
    saccade_path,
)
from tmkt_cli.data.sources import EVENT_DTYPE

TINY = EmulatorConfig(canvas=20, image_size=12, duration_ms=60.0, saccades=3,
                      amplitude_px=1.5, sample_rate_hz=1000.0, noise_rate_hz=0.0)


def square_image(size: int = 12, side: int = 6) -> np.ndarray:
    img = np.zeros((size, size, 3), dtype=np.uint8)
    lo = (size - side) // 2
    img[lo:lo + side, lo:lo + side] = 255
    return img


def test_same_stream_same_recording_and_streams_differ():
    img = square_image()
    a, sensor = emulate(img, TINY, image_id=3, recording=1)
    b, _ = emulate(img, TINY, image_id=3, recording=1)
    assert sensor == (20, 20) and a.dtype == EVENT_DTYPE
    assert a.tobytes() == b.tobytes()
    other_recording, _ = emulate(img, TINY, image_id=3, recording=2)
    other_image, _ = emulate(img, TINY, image_id=4, recording=1)
    other_seed, _ = emulate(img, dataclasses.replace(TINY, seed=9), image_id=3, recording=1)
    for other in (other_recording, other_image, other_seed):
        assert other.tobytes() != a.tobytes()


def test_events_are_sorted_inside_the_sensor_and_the_recording():
    ev, (h, w) = emulate(square_image(), dataclasses.replace(TINY, noise_rate_hz=20.0), 0, 0)
    assert ev.size > 100
    assert (np.diff(ev["t"]) >= 0).all()
    assert ev["t"].min() >= 0 and ev["t"].max() <= TINY.duration_ms * 1000
    assert ev["x"].min() >= 0 and ev["x"].max() < w and ev["y"].min() >= 0 and ev["y"].max() < h
    assert set(np.unique(ev["p"]).tolist()) == {0, 1}


def test_events_fall_on_edges_with_both_polarities():
    cfg = TINY
    ev, _ = emulate(square_image(), cfg, 0, 0)
    scene = grey_scene(square_image(), cfg.canvas, cfg.image_size)
    gradient = np.hypot(ndimage.sobel(scene, 0), ndimage.sobel(scene, 1)) > 0.1
    # the image moves by up to amplitude (+ the half-pixel start offset): edges sweep that far
    reach = int(np.ceil(cfg.amplitude_px + 0.5))
    near_edge = ndimage.binary_dilation(gradient, iterations=reach)
    assert near_edge.mean() < 0.6  # the test means something: most pixels are far from edges
    on_edge = near_edge[ev["y"], ev["x"]]
    assert on_edge.mean() > 0.97
    assert 0.3 < ev["p"].mean() < 0.7
    # the flat inside of the square and the far background never fire
    quiet = ~ndimage.binary_dilation(gradient, iterations=reach + 1)
    assert not quiet[ev["y"], ev["x"]].any()


def test_polarity_follows_the_motion():
    # a bright bar moving right: its leading (right) edge brightens pixels (ON), its trailing
    # (left) edge darkens them (OFF)
    scene = np.zeros((5, 30))
    scene[:, 8:14] = 1.0
    times = np.linspace(0, 0.01, 11)
    frames = render_shifted(scene, np.linspace(0, 5, 11), np.zeros(11))
    ev = contrast_events(np.log(frames + 0.2), times, np.full((5, 30), 0.2), 0.0)
    on, off = ev[ev["p"] == 1], ev[ev["p"] == 0]
    assert on.size and off.size
    assert on["x"].min() >= 13 and off["x"].max() <= 13


def test_several_thresholds_in_one_sample_fire_several_events_inside_it():
    logs = np.array([[[0.0]], [[1.0]]])  # one pixel, a jump of 1.0 = 5 thresholds of 0.2
    times = np.array([0.0, 0.001])
    ev = contrast_events(logs, times, np.full((1, 1), 0.2), refractory_s=0.0)
    assert ev.size == 5 and (ev["p"] == 1).all()
    assert (np.diff(ev["t"]) > 0).all() and ev["t"].min() > 0 and ev["t"].max() <= 1000
    # with a refractory period longer than the sample only the first crossing fires, and the
    # reference still moves past all five: nothing is stored for later
    logs3 = np.array([[[0.0]], [[1.0]], [[1.0]]])
    ev = contrast_events(logs3, np.array([0.0, 0.001, 0.002]), np.full((1, 1), 0.2), 0.005)
    assert ev.size == 1 and ev["t"][0] == 200
    # a fall fires OFF events
    ev = contrast_events(np.array([[[0.0]], [[-0.45]]]), times, np.full((1, 1), 0.2), 0.0)
    assert ev.size == 2 and (ev["p"] == 0).all()


def test_refractory_period_is_respected():
    cfg = dataclasses.replace(TINY, refractory_ms=2.0)
    ev, (h, w) = emulate(square_image(), cfg, 1, 0)
    pixel = ev["y"].astype(np.int64) * w + ev["x"]
    order = np.lexsort((ev["t"], pixel))
    same = np.diff(pixel[order]) == 0
    gaps = np.diff(ev["t"][order])[same]
    # times are floored to microseconds, so a gap can look 1 us short
    assert gaps.size and gaps.min() >= 2000 - 1


def test_noise_rate_on_a_blank_image():
    cfg = dataclasses.replace(TINY, noise_rate_hz=25.0, duration_ms=500.0, sample_rate_hz=200.0)
    ev, (h, w) = emulate(np.zeros((8, 8, 3), dtype=np.uint8), cfg, 0, 0)
    expected = 25.0 * h * w * 0.5  # 5,000
    assert abs(ev.size - expected) < 5 * np.sqrt(expected)
    assert abs(ev["p"].mean() - 0.5) < 0.05
    # spread over the whole sensor and the whole recording
    assert np.unique(ev["y"] * w + ev["x"]).size > 0.9 * h * w
    assert ev["t"].max() > 0.95 * 500_000


def test_saccade_path_is_out_and_back():
    times = np.linspace(0, 0.3, 301)
    dx, dy = saccade_path(times, 0.3, 3, 2.5, 0.0, (0.25, -0.25))
    reach = np.hypot(dx - 0.25, dy + 0.25)
    assert reach.max() == pytest.approx(2.5)
    for boundary in (0, 100, 200, 300):  # back at the start offset between saccades
        assert reach[boundary] == pytest.approx(0.0, abs=1e-9)
    assert reach[50] == pytest.approx(2.5) and reach[150] == pytest.approx(2.5)


def test_render_shifted_moves_content_and_fills_black():
    scene = np.zeros((6, 6))
    scene[2, 2] = 1.0
    frames = render_shifted(scene, np.array([0.0, 1.0, 0.5, -3.0]), np.array([0.0, 0.0, 0.0, 0]))
    assert frames[0, 2, 2] == 1.0 and frames[1, 2, 3] == 1.0
    assert frames[2, 2, 2] == pytest.approx(0.5) and frames[2, 2, 3] == pytest.approx(0.5)
    assert frames[3].sum() == 0.0  # moved out of the scene

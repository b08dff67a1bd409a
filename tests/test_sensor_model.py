"""The emulator's sensor options (a coarser pixel array, missed events, hot pixels, a fixed
threshold pattern): each does what it says, and with all of them off a recording is exactly
what the emulator made before they existed."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

from tmkt_cli.config import EmulatorConfig
from tmkt_cli.data.datasets.synthetic import DigitImage, check_emulator
from tmkt_cli.data.emulator import (
    DARK_LEVEL,
    MIN_THRESHOLD_FRACTION,
    area_matrix,
    contrast_events,
    emulate,
    grey_scene,
    noise_events,
    pixel_thresholds,
    recording_rng,
    render_shifted,
    saccade_path,
)
from tmkt_cli.errors import TmktError

sys.path.insert(0, str(Path(__file__).parent))
from test_emulator import TINY, square_image  # noqa: E402  (the same tiny sensor and image)


def emulate_before_the_sensor_options(rgb: np.ndarray, cfg: EmulatorConfig, image_id: int,
                                      recording: int) -> np.ndarray:
    """``emulate`` as it was before the sensor options (commit 1db9fb0), step by step from the
    same building blocks: the reference the defaults must reproduce byte for byte."""
    rng = recording_rng(cfg.seed, image_id, recording)
    sensor = (cfg.canvas, cfg.canvas)
    duration_s = cfg.duration_ms / 1000.0
    thresholds = np.maximum(rng.normal(cfg.contrast_threshold, cfg.threshold_sigma, sensor),
                            MIN_THRESHOLD_FRACTION * cfg.contrast_threshold)
    start_angle = rng.uniform(0.0, 2.0 * np.pi)
    offset = (rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5))
    scene = grey_scene(rgb, cfg.canvas, cfg.image_size)
    samples = max(2, int(round(duration_s * cfg.sample_rate_hz)) + 1)
    times = np.linspace(0.0, duration_s, samples)
    dx, dy = saccade_path(times, duration_s, cfg.saccades, cfg.amplitude_px, start_angle,
                          offset)
    block = max(1, (1 << 15) // scene.size)
    log_blocks = (np.log(render_shifted(scene, dx[i:i + block], dy[i:i + block])
                         + np.float32(DARK_LEVEL)) for i in range(0, samples, block))
    signal = contrast_events(log_blocks, times, thresholds, cfg.refractory_ms / 1000.0)
    noise = noise_events(rng, cfg.noise_rate_hz, duration_s, sensor)
    events = np.concatenate([signal, noise])
    return events[np.argsort(events["t"], kind="stable")]


@pytest.mark.parametrize("image_id", [0, 7, 1796])
def test_defaults_leave_digit_recordings_byte_identical(image_id):
    cfg = EmulatorConfig()  # the digits recipes' emulator: every sensor option off
    image = DigitImage(image_id)()
    for recording in range(2):
        events, sensor = emulate(image, cfg, image_id, recording)
        reference = emulate_before_the_sensor_options(image, cfg, image_id, recording)
        assert sensor == (34, 34) and events.size > 1000
        assert events.tobytes() == reference.tobytes()


def test_area_matrix_averages_and_keeps_the_mean():
    pool = area_matrix(34, 17)
    assert pool.shape == (17, 34)
    np.testing.assert_allclose(pool.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(pool[0, :2], 0.5)  # an exact 2:1 ratio pairs the pixels
    uneven = area_matrix(34, 24)
    np.testing.assert_allclose(uneven.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(uneven.sum(axis=0).sum(), 24.0, rtol=1e-6)


def test_coarser_sensor_gives_the_coarser_size_and_fewer_events():
    fine, fine_size = emulate(square_image(), TINY, 0, 0)
    coarse, coarse_size = emulate(square_image(), dataclasses.replace(TINY, sensor_size=10),
                                  0, 0)
    assert fine_size == (20, 20) and coarse_size == (10, 10)
    assert coarse["x"].max() < 10 and coarse["y"].max() < 10
    assert 0 < coarse.size < fine.size
    same, same_size = emulate(square_image(), dataclasses.replace(TINY, sensor_size=20), 0, 0)
    assert same_size == fine_size and same.tobytes() == fine.tobytes()


def test_sensor_larger_than_the_canvas_is_refused():
    with pytest.raises(TmktError, match="sensor_size"):
        check_emulator(dataclasses.replace(TINY, sensor_size=21))


def test_event_keep_fraction_drops_signal_events_at_its_rate():
    full, _ = emulate(square_image(), TINY, 0, 0)
    kept, _ = emulate(square_image(), dataclasses.replace(TINY, event_keep_fraction=0.3), 0, 0)
    assert full.size > 500
    # the same recording, thinned: every kept event is one of the full recording's events
    assert np.isin(kept.view(np.void), full.view(np.void)).all()
    share = kept.size / full.size
    assert abs(share - 0.3) < 4 * np.sqrt(0.3 * 0.7 / full.size)


def test_hot_pixels_fire_at_their_rate_in_the_same_places():
    cfg = dataclasses.replace(TINY, duration_ms=500.0, sample_rate_hz=100.0,
                              hot_pixel_fraction=0.02, hot_pixel_rate_hz=40.0)
    blank = np.zeros((12, 12, 3), dtype=np.uint8)  # no signal: every event is a hot pixel's
    recordings = [emulate(blank, cfg, image_id=i, recording=0)[0] for i in range(20)]
    places = [set(zip(ev["y"].tolist(), ev["x"].tolist(), strict=True)) for ev in recordings]
    hot = set.union(*places)
    assert len(hot) == round(0.02 * 20 * 20) == 8
    assert all(p <= hot for p in places)
    counts = np.array([ev.size for ev in recordings])
    expected = 8 * 40.0 * 0.5  # hot pixels x rate x duration, per recording
    assert abs(counts.mean() - expected) < 4 * np.sqrt(expected / len(counts))
    for y, x in hot:  # each hot pixel keeps one polarity
        polarity = {int(p) for ev in recordings for p in ev["p"][(ev["y"] == y) & (ev["x"] == x)]}
        assert len(polarity) == 1
    other_chip = emulate(blank, dataclasses.replace(cfg, seed=1), 0, 0)[0]
    assert set(zip(other_chip["y"].tolist(), other_chip["x"].tolist(), strict=True)) - hot


def test_fixed_pattern_draws_the_thresholds_once_per_sensor():
    cfg = dataclasses.replace(TINY, threshold_sigma=0.05)
    per_recording = [pixel_thresholds(cfg, recording_rng(0, i, 0), (20, 20)) for i in range(2)]
    assert not np.array_equal(*per_recording)
    fixed = dataclasses.replace(cfg, fixed_pattern=True)
    per_sensor = [pixel_thresholds(fixed, recording_rng(0, i, 0), (20, 20)) for i in range(2)]
    assert np.array_equal(*per_sensor)
    assert abs(per_sensor[0].std() - 0.05) < 0.01 and abs(per_sensor[0].mean() - 0.2) < 0.01
    # the recording's own later draws (saccade start, noise) do not depend on the option
    a, _ = emulate(square_image(), dataclasses.replace(cfg, threshold_sigma=0.0), 0, 0)
    b, _ = emulate(square_image(), dataclasses.replace(fixed, threshold_sigma=0.0), 0, 0)
    assert a.tobytes() == b.tobytes()

"""tmkt's event-camera emulator: a static image moved along saccades in front of a DVS model.

Recordings such as N-MNIST and N-Caltech101 were made by moving a sensor in front of a still
image on a monitor, in a few quick out-and-back eye movements (saccades). This module does the
same in software, so any folder of images (and the embedded sklearn digits) becomes an event
dataset with an index-aligned image per recording. docs/emulator.md describes the model and its
settings; in short, for one recording:

1. The image is turned to grey (ITU-R 601 luma), resized to ``image_size`` and centred on a black
   ``canvas x canvas`` scene.
2. The scene moves along ``saccades`` triangular out-and-back movements of ``amplitude_px``
   pixels, in directions spread evenly around a random start angle, from a random sub-pixel
   start offset. It is rendered ``sample_rate_hz`` times per second with bilinear sub-pixel
   shifts.
3. Each pixel compares its log intensity ``log(I + DARK_LEVEL)`` with a reference level and
   fires an event each time the difference crosses its own contrast threshold (drawn once per
   recording from a normal distribution). Between two samples the log intensity is taken to
   move linearly, which gives every crossing a time inside the sample and lets one sample fire
   several events when the change spans several thresholds.
4. After an event a pixel is refractory for ``refractory_ms``: crossings inside that window are
   not emitted, but the reference still moves past them (a real pixel is held in reset, so the
   change that happens meanwhile is lost rather than stored).
5. Background events arrive at ``noise_rate_hz`` per pixel (a Poisson process), at uniform
   random places and times with random polarity.

Options that make the event view poorer than the image, as in real recordings (all off by
default, leaving recordings exactly as without them): a pixel array coarser than the canvas
(``sensor_size``: each sensor pixel averages the canvas area it covers), signal events dropped
at random (``event_keep_fraction``), hot pixels (``hot_pixel_fraction`` of the pixels, the same
in every recording, firing at ``hot_pixel_rate_hz``), and threshold mismatch fixed per sensor
rather than per recording (``fixed_pattern``).

Every random draw of recording ``k`` of image ``i`` comes from the stream
``SeedSequence([seed, i, k])``, and what belongs to the sensor rather than to a recording (hot
pixels, a fixed threshold pattern) from ``SeedSequence([seed, SENSOR_STREAM])``, so a recording
is a pure function of (image, settings, i, k): the same in any worker process and in any order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from tmkt_cli.config import EmulatorConfig
from tmkt_cli.data.frames import resize_image
from tmkt_cli.data.sources import EVENT_DTYPE

DARK_LEVEL = 0.2
"""Added to the intensity (0 black, 1 white) before the log. A monitor's black is not black,
and a sensor's log response flattens in the dark: with 0.2 a black-to-white edge is a log
change of log(6) = 1.8, about 9 thresholds of 0.2. It sets the event count: with the default
settings a digit recording has about 5,700 events (N-MNIST has about 4,000)."""

MIN_THRESHOLD_FRACTION = 0.25
"""Per-pixel thresholds are clipped below at this fraction of the mean, so a wide
``threshold_sigma`` cannot give a pixel a zero or negative threshold (which would fire without
end)."""

RENDER_BLOCK_PIXELS = 1 << 15
"""Samples are rendered in blocks of at most this many pixel values. Small blocks keep every
temporary array in memory the allocator reuses; multi-MB temporaries land on fresh pages each
time, and their page faults cost more than the arithmetic (measured: 3x slower per recording)."""

LUMA = np.array([0.299, 0.587, 0.114])

SENSOR_STREAM = 2**63 - 1
"""Second word of the sensor's random stream ``(seed, SENSOR_STREAM)``: it cannot collide with
a recording's stream ``(seed, i, k)``, which has three words."""


def recording_rng(seed: int, image_id: int, recording: int) -> np.random.Generator:
    """The random stream of recording ``recording`` of image ``image_id``."""
    return np.random.default_rng(np.random.SeedSequence(
        [seed % 2**64, image_id % 2**64, recording % 2**64]))


def grey_scene(rgb: np.ndarray, canvas: int, image_size: int) -> np.ndarray:
    """The image as grey intensities in [0, 1], resized and centred on a black canvas."""
    if image_size > canvas:
        raise ValueError(f"image_size {image_size} is larger than the canvas {canvas}")
    grey = resize_image(rgb, image_size).astype(np.float64) @ LUMA / 255.0
    scene = np.zeros((canvas, canvas))
    top = (canvas - image_size) // 2
    scene[top:top + image_size, top:top + image_size] = grey
    return scene


def saccade_path(times_s: np.ndarray, duration_s: float, saccades: int, amplitude_px: float,
                 start_angle: float, offset_px: tuple[float, float]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Displacement (dx, dy) of the scene at each time.

    The recording is cut into ``saccades`` equal parts; in part ``j`` the scene moves out along
    direction ``start_angle + 2 pi j / saccades`` to ``amplitude_px`` and back at constant
    speed (a triangular displacement profile), so it is at the start offset between saccades.
    """
    progress = np.clip(times_s / duration_s, 0.0, 1.0) * saccades
    which = np.minimum(progress.astype(np.int64), saccades - 1)
    phase = progress - which
    reach = amplitude_px * (1.0 - np.abs(2.0 * phase - 1.0))
    angle = start_angle + 2.0 * np.pi * which / saccades
    return offset_px[0] + reach * np.cos(angle), offset_px[1] + reach * np.sin(angle)


def render_shifted(scene: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """``float32 [len(dx), H, W]`` views of ``scene`` moved by (dx, dy) pixels with bilinear
    sub-pixel interpolation; what moves in from outside the scene is black.

    The shift is the same for every pixel of a sample, so bilinear interpolation splits into
    a horizontal then a vertical pass, each a blend of two integer-shifted copies. float32
    halves the memory traffic; intensities need no more precision.
    """
    height, width = scene.shape
    margin = int(math.ceil(max(np.abs(dx).max(initial=0.0), np.abs(dy).max(initial=0.0)))) + 2
    padded = np.pad(scene, margin).astype(np.float32)
    # Output pixel (y, x) reads the scene at (y - dy, x - dx), i.e. padded (y, x) + margin - d.
    source_y, source_x = margin - dy, margin - dx
    row, col = np.floor(source_y).astype(np.int64), np.floor(source_x).astype(np.int64)
    weight_y = (source_y - row).astype(np.float32)[:, None, None]
    weight_x = (source_x - col).astype(np.float32)[:, None, None]
    # Every horizontal integer shift of the padded scene, cropped to the output width.
    column_shifts = np.ascontiguousarray(
        np.lib.stride_tricks.sliding_window_view(padded, width, axis=1).transpose(1, 0, 2))
    left, right = column_shifts[col], column_shifts[col + 1]  # [S, padded height, W]
    right -= left
    right *= weight_x
    left += right
    rows = left[np.arange(dx.size)[:, None], row[:, None] + np.arange(height + 1)]
    upper, lower = rows[:, :-1], rows[:, 1:]
    out = lower - upper
    out *= weight_y
    out += upper
    return out


def contrast_events(log_frames: np.ndarray | Iterable[np.ndarray], times_s: np.ndarray,
                    thresholds: np.ndarray, refractory_s: float) -> np.ndarray:
    """DVS events from log intensities sampled at ``times_s``: the stateful core, a loop over
    samples vectorised over pixels.

    ``log_frames`` is ``[S, H, W]``, or an iterable of consecutive blocks ``[s_i, H, W]`` whose
    lengths add up to S (so long recordings need not be held in memory at once);
    ``thresholds`` is ``[H, W]``. Returns EVENT_DTYPE events in time order (ties in pixel
    order).
    """
    blocks = [log_frames] if isinstance(log_frames, np.ndarray) else log_frames
    width = thresholds.shape[1]
    threshold = thresholds.ravel().astype(np.float64)
    inverse_threshold = 1.0 / threshold
    reference = ready_at = previous_frame = None
    chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    n = 0
    for block in blocks:
        for current in block.reshape(block.shape[0], -1):
            if previous_frame is None:  # the first sample only sets the reference
                reference = current.astype(np.float64)
                ready_at = np.full(reference.size, -np.inf)
                previous_frame, n = current, 1
                continue
            # Most pixels are quiet in most samples: find the firing ones with few whole-frame
            # operations, then work on those alone.
            delta = current - reference
            ratio = np.abs(delta)
            ratio *= inverse_threshold
            firing = np.flatnonzero(ratio >= 1.0)
            if firing.size:
                chunks += _crossing_events(
                    firing, ratio[firing].astype(np.int64), delta[firing],
                    previous_frame[firing], current[firing], reference, threshold,
                    ready_at, times_s[n - 1], times_s[n], refractory_s)
            previous_frame, n = current, n + 1
    if not chunks:
        return np.empty(0, dtype=EVENT_DTYPE)
    when = np.concatenate([c[0] for c in chunks])
    pixel = np.concatenate([c[1] for c in chunks])
    on = np.concatenate([c[2] for c in chunks])
    events = np.empty(when.size, dtype=EVENT_DTYPE)
    events["t"] = np.floor(when * 1e6).astype(np.int64)
    events["y"], events["x"] = np.divmod(pixel, width)
    events["p"] = on
    return events[np.argsort(events["t"], kind="stable")]


def _crossing_events(firing: np.ndarray, count: np.ndarray, delta: np.ndarray,
                     previous: np.ndarray, current: np.ndarray, reference: np.ndarray,
                     threshold: np.ndarray, ready_at: np.ndarray, t_prev: float,
                     t_now: float, refractory_s: float
                     ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Events of the pixels ``firing`` (``count`` crossings each, in the direction of
    ``delta``) between two samples; updates ``reference`` and ``ready_at`` (end of each
    pixel's refractory period) in place."""
    level_step = np.copysign(threshold[firing], delta)
    on = delta > 0
    start = reference[firing]
    change = current - previous
    if not change.all():
        # A crossing with no change in this sample can only come from rounding in the
        # reference; it is placed at the sample's start.
        change[change == 0.0] = np.inf
    to_seconds = (t_now - t_prev) / change
    out = []
    # Crossing j (1-based) of a pixel: where the log intensity, moving linearly between the
    # samples, reaches reference + j * step. Loop over j (rarely more than a few), vectorised
    # over pixels.
    for j in range(1, int(count.max()) + 1):
        if j == 1:
            pixels, step, begin, prev, scale, up = (
                firing, level_step, start, previous, to_seconds, on)
        else:
            live = count >= j
            pixels, step, begin, prev, scale, up = (
                firing[live], level_step[live], start[live], previous[live], to_seconds[live],
                on[live])
        offset = begin + j * step - prev
        offset *= scale
        when = np.clip(offset, 0.0, t_now - t_prev, out=offset)
        when += t_prev
        emit = when >= ready_at[pixels]
        if emit.all():
            ready_at[pixels] = when + refractory_s
            out.append((when, pixels, up))
        elif emit.any():
            fired = pixels[emit]
            ready_at[fired] = when[emit] + refractory_s
            out.append((when[emit], fired, up[emit]))
    # The reference moves past every crossing, emitted or suppressed by the refractory.
    reference[firing] = start + count * level_step
    return out


def noise_events(rng: np.random.Generator, rate_hz: float, duration_s: float,
                 sensor_size: tuple[int, int]) -> np.ndarray:
    """Background events: Poisson in number, uniform in place and time, random polarity."""
    height, width = sensor_size
    count = int(rng.poisson(rate_hz * height * width * duration_s)) if rate_hz > 0 else 0
    events = np.empty(count, dtype=EVENT_DTYPE)
    events["t"] = rng.integers(0, max(1, int(duration_s * 1e6)), count)
    events["x"] = rng.integers(0, width, count)
    events["y"] = rng.integers(0, height, count)
    events["p"] = rng.integers(0, 2, count)
    return events


def area_matrix(fine: int, coarse: int) -> np.ndarray:
    """``[coarse, fine]`` weights that average a line of ``fine`` pixels into ``coarse``
    pixels: row ``j`` holds the overlap of coarse pixel ``j`` with each fine pixel, divided
    by the coarse pixel's width (each row sums to 1)."""
    edges = np.linspace(0.0, fine, coarse + 1)
    left = np.maximum(edges[:-1, None], np.arange(fine)[None, :])
    right = np.minimum(edges[1:, None], np.arange(fine)[None, :] + 1.0)
    return (np.clip(right - left, 0.0, None) * (coarse / fine)).astype(np.float32)


def sensor_rng(seed: int) -> np.random.Generator:
    """The random stream of what belongs to the sensor, the same in every recording."""
    return np.random.default_rng(np.random.SeedSequence([seed % 2**64, SENSOR_STREAM]))


def hot_pixel_events(cfg: EmulatorConfig, rng: np.random.Generator, duration_s: float,
                     sensor_size: tuple[int, int]) -> np.ndarray:
    """Events of the sensor's hot pixels: which pixels and their polarity come from the
    sensor's stream (the same in every recording), the Poisson firing times from ``rng``."""
    height, width = sensor_size
    chip = sensor_rng(cfg.seed)
    chip.normal(size=sensor_size)  # the threshold pattern's draw comes first in this stream
    hot_count = int(round(cfg.hot_pixel_fraction * height * width))
    if hot_count == 0 or cfg.hot_pixel_rate_hz <= 0:
        return np.empty(0, dtype=EVENT_DTYPE)
    pixels = chip.choice(height * width, size=hot_count, replace=False)
    polarity = chip.integers(0, 2, hot_count)
    counts = rng.poisson(cfg.hot_pixel_rate_hz * duration_s, hot_count)
    which = np.repeat(np.arange(hot_count), counts)
    events = np.empty(which.size, dtype=EVENT_DTYPE)
    events["t"] = rng.integers(0, max(1, int(duration_s * 1e6)), which.size)
    events["y"], events["x"] = np.divmod(pixels[which], width)
    events["p"] = polarity[which]
    return events


def pixel_thresholds(cfg: EmulatorConfig, rng: np.random.Generator,
                     sensor_size: tuple[int, int]) -> np.ndarray:
    """Each pixel's contrast threshold: normal around ``contrast_threshold``, clipped below.
    Drawn from the recording's stream, or with ``fixed_pattern`` from the sensor's (the
    recording's stream still makes its draw, so the later draws do not depend on it)."""
    standard = rng.normal(0.0, 1.0, sensor_size)
    if cfg.fixed_pattern:
        standard = sensor_rng(cfg.seed).normal(0.0, 1.0, sensor_size)
    return np.maximum(cfg.contrast_threshold + cfg.threshold_sigma * standard,
                      MIN_THRESHOLD_FRACTION * cfg.contrast_threshold)


def emulate(rgb: np.ndarray, cfg: EmulatorConfig, image_id: int, recording: int
            ) -> tuple[np.ndarray, tuple[int, int]]:
    """One recording of an image: ``(events with EVENT_DTYPE sorted by time, (H, W))``.

    ``rgb`` is uint8 ``[H, W, 3]`` (or grey ``[H, W]``); ``image_id`` and ``recording`` select
    the random stream ``(cfg.seed, image_id, recording)``.
    """
    rng = recording_rng(cfg.seed, image_id, recording)
    side = cfg.sensor_size or cfg.canvas
    if side > cfg.canvas:
        raise ValueError(f"sensor_size {side} is larger than the canvas {cfg.canvas}")
    sensor = (side, side)
    duration_s = cfg.duration_ms / 1000.0
    # The draws happen in a fixed order; changing it changes every recording.
    thresholds = pixel_thresholds(cfg, rng, sensor)
    start_angle = rng.uniform(0.0, 2.0 * np.pi)
    offset = (rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5))

    scene = grey_scene(rgb, cfg.canvas, cfg.image_size)
    samples = max(2, int(round(duration_s * cfg.sample_rate_hz)) + 1)
    times = np.linspace(0.0, duration_s, samples)
    dx, dy = saccade_path(times, duration_s, cfg.saccades, cfg.amplitude_px, start_angle,
                          offset)
    block = max(1, RENDER_BLOCK_PIXELS // scene.size)
    if side == cfg.canvas:
        frames = (render_shifted(scene, dx[i:i + block], dy[i:i + block])
                  for i in range(0, samples, block))
    else:
        pool = area_matrix(cfg.canvas, side)
        frames = (pool @ render_shifted(scene, dx[i:i + block], dy[i:i + block]) @ pool.T
                  for i in range(0, samples, block))
    log_blocks = (np.log(frame + np.float32(DARK_LEVEL)) for frame in frames)
    signal = contrast_events(log_blocks, times, thresholds, cfg.refractory_ms / 1000.0)
    noise = noise_events(rng, cfg.noise_rate_hz, duration_s, sensor)
    parts = [signal, noise]
    if cfg.event_keep_fraction < 1.0:
        parts[0] = signal[rng.random(signal.size) < cfg.event_keep_fraction]
    if cfg.hot_pixel_fraction > 0:
        parts.append(hot_pixel_events(cfg, rng, duration_s, sensor))
    events = np.concatenate(parts)
    return events[np.argsort(events["t"], kind="stable")], sensor

"""Event integration into frames and the bilinear resizes (tmkt_cli/data/frames.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tmkt_cli.data.frames import (
    count_outside_sensor,
    events_to_frames,
    resize_frames,
    resize_image,
)
from tmkt_cli.data.sources import EVENT_DTYPE


def make_events(t, x, y, p) -> np.ndarray:
    ev = np.empty(len(t), dtype=EVENT_DTYPE)
    ev["t"], ev["x"], ev["y"], ev["p"] = t, x, y, p
    return ev


def random_events(n: int, sensor=(5, 9), seed=0, span=10_000, outside=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h, w = sensor
    ev = make_events(np.sort(rng.integers(0, span, n)), rng.integers(0, w, n),
                     rng.integers(0, h, n), rng.integers(0, 2, n))
    if outside:
        bad = rng.choice(n, outside, replace=False)
        kinds = np.arange(outside) % 5
        ev["x"][bad[kinds == 0]] = w           # one past the right edge
        ev["x"][bad[kinds == 1]] = -1
        ev["y"][bad[kinds == 2]] = h
        ev["y"][bad[kinds == 3]] = -3
        ev["p"][bad[kinds == 4]] = 2           # not a polarity
    return ev


def reference_frames(ev, sensor, T, split_by):
    """The binning rules, written the slow and obvious way."""
    h, w = sensor
    keep = ((ev["x"] >= 0) & (ev["x"] < w) & (ev["y"] >= 0) & (ev["y"] < h)
            & ((ev["p"] == 0) | (ev["p"] == 1)))
    ev = ev[keep]
    out = np.zeros((T, 2, h, w), dtype=np.int64)
    if ev.size == 0:
        return out
    if split_by == "time":
        t0, t1 = int(ev["t"].min()), int(ev["t"].max())
        bins = [(int(t) - t0) * T // (t1 - t0 + 1) for t in ev["t"]]
    else:
        order = np.argsort(ev["t"], kind="stable")
        bins = np.empty(ev.size, dtype=np.int64)
        bins[order] = np.arange(ev.size) * T // ev.size
    for b, e in zip(bins, ev, strict=True):
        out[b, e["p"], e["y"], e["x"]] += 1
    return out


@pytest.mark.parametrize("split_by", ["time", "number"])
@pytest.mark.parametrize("sensor", [(5, 9), (9, 5), (1, 1), (4, 4)])
def test_matches_the_rules_and_keeps_every_inside_event(split_by, sensor):
    ev = random_events(500, sensor, seed=sum(sensor), outside=25)
    frames, dropped = events_to_frames(ev, sensor, 7, split_by, return_dropped=True)
    assert frames.dtype == np.uint32 and frames.shape == (7, 2, *sensor)
    assert dropped == 25 == count_outside_sensor(ev, sensor)
    assert frames.sum() == 500 - 25
    np.testing.assert_array_equal(frames, reference_frames(ev, sensor, 7, split_by))


def test_time_bins_edges_and_last_event():
    # t0 = 0, t1 = 99: D = 100, T = 4, bins start at 25, 50, 75
    ev = make_events([0, 24, 25, 49, 50, 74, 75, 99], [0] * 8, [0] * 8, [1] * 8)
    frames = events_to_frames(ev, (1, 1), 4, "time")
    np.testing.assert_array_equal(frames[:, 1, 0, 0], [2, 2, 2, 2])
    # a span that T does not divide: D = 10, T = 3 -> starts at ceil(10/3)=4, ceil(20/3)=7
    ev = make_events(np.arange(10) + 1000, [0] * 10, [0] * 10, [0] * 10)
    frames = events_to_frames(ev, (1, 1), 3, "time")
    np.testing.assert_array_equal(frames[:, 0, 0, 0], [4, 3, 3])


def test_time_bins_may_be_empty_and_nothing_is_lost():
    ev = make_events([0, 1, 2, 1000], [0, 1, 2, 3], [0, 0, 0, 0], [0, 1, 0, 1])
    frames = events_to_frames(ev, (1, 4), 5, "time")
    assert frames.reshape(5, -1).sum(axis=1).tolist() == [3, 0, 0, 0, 1]


@pytest.mark.parametrize("n,T", [(10, 4), (7, 7), (3, 5), (1000, 9), (11, 3)])
def test_number_bins_differ_by_at_most_one(n, T):
    ev = random_events(n, (3, 3), seed=n)
    sizes = events_to_frames(ev, (3, 3), T, "number").reshape(T, -1).sum(axis=1)
    assert sizes.sum() == n
    assert set(sizes.tolist()) <= {n // T, -(-n // T)}


def test_empty_single_and_no_overflow():
    empty = np.empty(0, dtype=EVENT_DTYPE)
    for split_by in ("time", "number"):
        frames, dropped = events_to_frames(empty, (3, 4), 5, split_by, return_dropped=True)
        assert frames.shape == (5, 2, 3, 4) and not frames.any() and dropped == 0
        one = events_to_frames(make_events([123], [3], [2], [1]), (3, 4), 5, split_by)
        assert one[0, 1, 2, 3] == 1 and one.sum() == 1
    # tonic's int16 counts wrap past 32,767 events on one pixel; these do not
    n = 70_000
    many = make_events(np.arange(n), np.zeros(n), np.zeros(n), np.ones(n))
    assert events_to_frames(many, (1, 1), 1)[0, 1, 0, 0] == n


def test_only_outside_events_give_zeros():
    ev = make_events([5, 6], [10, -1], [0, 0], [0, 1])
    frames, dropped = events_to_frames(ev, (2, 2), 3, return_dropped=True)
    assert dropped == 2 and not frames.any()


@pytest.mark.parametrize("split_by", ["time", "number", "time_fork"])
@pytest.mark.parametrize("outside", [0, 1])
def test_whole_recording_and_frame_by_frame_counting_agree(split_by, outside, monkeypatch):
    """Small recordings are counted in one bincount, large ones frame by frame: both give the
    rules' frames, and both fall back to the general path for an event outside the sensor."""
    import tmkt_cli.data.frames as frames_module

    ev = random_events(3000, (6, 11), seed=5, span=4000, outside=outside)
    results = []
    for threshold in (0, 10**9):  # frame by frame, then whole recording
        monkeypatch.setattr(frames_module, "WHOLE_RECORDING_EVENTS", threshold)
        results.append(events_to_frames(ev, (6, 11), 7, split_by, return_dropped=True))
    (by_frame, dropped_a), (whole, dropped_b) = results
    assert dropped_a == dropped_b == outside
    np.testing.assert_array_equal(by_frame, whole)
    if split_by != "time_fork":
        np.testing.assert_array_equal(whole, reference_frames(ev, (6, 11), 7, split_by))


@pytest.mark.parametrize("split_by", ["time", "number", "time_fork"])
@pytest.mark.parametrize("threshold", [0, 10**9])  # frame by frame, whole recording
@pytest.mark.parametrize("outside", [0, 1])
def test_an_origin_counts_like_shifted_events(split_by, threshold, outside, monkeypatch):
    import tmkt_cli.data.frames as frames_module

    monkeypatch.setattr(frames_module, "WHOLE_RECORDING_EVENTS", threshold)
    ev = random_events(3000, (6, 11), seed=7, span=4000, outside=outside)
    moved = ev.copy()
    moved["x"] += 5
    moved["y"] -= 3
    shifted = events_to_frames(moved, (6, 11), 7, split_by, origin=(-3, 5),
                               return_dropped=True)
    plain = events_to_frames(ev, (6, 11), 7, split_by, return_dropped=True)
    np.testing.assert_array_equal(shifted[0], plain[0])
    assert shifted[1] == plain[1] == outside


@pytest.mark.parametrize("split_by", ["time", "number"])
def test_unsorted_timestamps_bin_like_sorted_ones(split_by):
    ev = random_events(2000, (6, 11), seed=3)
    ev["t"] = np.arange(ev.size) * 7  # distinct times: the rank order is unambiguous
    shuffled = ev[np.random.default_rng(1).permutation(ev.size)]
    np.testing.assert_array_equal(events_to_frames(shuffled, (6, 11), 6, split_by),
                                  events_to_frames(ev, (6, 11), 6, split_by))


def test_huge_timestamps_do_not_overflow():
    # a damaged file can hold absurd times; bin starts are computed with Python integers
    t = np.array([0, 2**62, 2**62 + 5, 2**61], dtype=np.int64)
    ev = make_events(t, [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0])
    frames = events_to_frames(ev, (1, 1), 10, "time")
    assert frames.sum() == 4 and frames[0].sum() == 1 and frames[-1].sum() == 2


def test_non_square_sensor_orientation():
    ev = make_events([0, 1], [6, 0], [2, 0], [1, 0])  # x along the width
    frames = events_to_frames(ev, (3, 7), 1)
    assert frames[0, 1, 2, 6] == 1 and frames[0, 0, 0, 0] == 1
    assert events_to_frames(make_events([0], [3], [6], [0]), (3, 7), 1).sum() == 0


def test_input_validation():
    ev = random_events(5)
    with pytest.raises(ValueError, match="split_by"):
        events_to_frames(ev, (5, 9), 2, "space")
    with pytest.raises(ValueError, match="time_steps"):
        events_to_frames(ev, (5, 9), 0)
    floats = np.zeros(2, dtype=[("t", "f8"), ("x", "i4"), ("y", "i4"), ("p", "i1")])
    with pytest.raises(ValueError, match="integers"):
        events_to_frames(floats, (5, 9), 2)


@pytest.mark.parametrize("shape,size", [((10, 2, 180, 240), 48), ((3, 2, 34, 34), 48),
                                        ((2, 2, 5, 9), 4), ((1, 2, 48, 48), 48),
                                        ((4, 2, 7, 3), 11), ((2, 2, 1, 1), 3)])
def test_resize_matches_torch_interpolate(shape, size):
    counts = np.random.default_rng(0).integers(0, 50, shape).astype(np.uint32)
    ours = resize_frames(counts, size)
    theirs = F.interpolate(torch.from_numpy(counts.astype(np.float32)), size=(size, size),
                           mode="bilinear", align_corners=False).numpy()
    assert ours.dtype == np.float32 and ours.shape == (*shape[:2], size, size)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-4)


def test_resize_is_deterministic():
    counts = np.random.default_rng(1).integers(0, 9, (5, 2, 33, 47)).astype(np.uint32)
    a, b = resize_frames(counts, 48), resize_frames(counts.copy(), 48)
    assert a.tobytes() == b.tobytes()


def test_resize_image():
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (30, 20, 3), dtype=np.uint8)
    out = resize_image(rgb, 16)
    assert out.dtype == np.uint8 and out.shape == (16, 16, 3)
    grey = resize_image(rgb[:, :, 0], 16)
    assert grey.shape == (16, 16, 3) and (grey[..., 0] == grey[..., 2]).all()
    flat = np.full((9, 13, 3), 77, dtype=np.uint8)
    assert (resize_image(flat, 5) == 77).all()
    square = rgb[:16, :16]
    np.testing.assert_array_equal(resize_image(square, 16), square)
    with pytest.raises(ValueError, match="uint8"):
        resize_image(rgb.astype(np.float32), 8)


def test_frames_match_tonic_the_reference():
    """tonic's ToFrame is the reference (tmkt's integration is 11-12x faster, see
    docs/performance.md): equal counts by event number; by time equal except the events tonic
    drops after its last whole time bin, which tmkt keeps in the last frame."""
    import tonic.transforms

    rng = np.random.default_rng(0)
    height, width, steps, n = 20, 30, 5, 5000
    events = np.empty(n, EVENT_DTYPE)
    events["t"] = np.sort(rng.integers(0, 100_000, n))
    events["x"], events["y"] = rng.integers(0, width, n), rng.integers(0, height, n)
    events["p"] = rng.integers(0, 2, n)
    theirs_in = np.empty(n, dtype=[("x", int), ("y", int), ("t", int), ("p", bool)])
    for key in "xytp":
        theirs_in[key] = events[key]
    sensor = (width, height, 2)
    ours = events_to_frames(events, (height, width), steps, "number")
    theirs = tonic.transforms.ToFrame(sensor_size=sensor, n_event_bins=steps)(theirs_in)
    np.testing.assert_array_equal(ours, theirs)
    ours = events_to_frames(events, (height, width), steps, "time").astype(np.int64)
    theirs = tonic.transforms.ToFrame(sensor_size=sensor, n_time_bins=steps)(theirs_in)
    np.testing.assert_array_equal(ours[:-1], theirs[:-1])
    assert (ours[-1] >= theirs[-1]).all() and ours.sum() == n

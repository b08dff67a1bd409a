"""Event recordings to count frames, and the bilinear resizes applied before storage.

Pure functions on numpy arrays; nothing here keeps state.

Integration (:func:`events_to_frames`) turns a structured event array (fields ``t``, ``x``,
``y``, ``p``; see :data:`tmkt_cli.data.sources.EVENT_DTYPE`) into counts ``[T, 2, H, W]``
(frame, polarity, row, column). Its rules, which docs/artifacts.md repeats:

* Events outside the declared sensor (``x`` not in ``[0, W)``, ``y`` not in ``[0, H)``, or a
  polarity other than 0 or 1) are dropped before anything else and counted; the time span and
  the event ranks below are those of the kept events.
* With an ``origin`` ``(y0, x0)`` the coordinates are ``x - x0`` and ``y - y0`` for all of the
  above and below (prepare's ``observed_shifted`` extent); the events are not copied for it.
* ``split_by="time"``: with ``t0``/``t1`` the first and last kept timestamps (integer
  microseconds) and ``D = t1 - t0 + 1``, an event goes to frame ``floor((t - t0) * T / D)``.
  Each microsecond tick is read as the interval ``[t, t + 1)``, so the span ``[t0, t1 + 1)`` is
  cut into T bins of equal length ``D / T``; the last event lands in frame ``T - 1`` and an event
  exactly on a bin edge goes to the later bin. Timestamps need not be sorted (binning is by
  value). Bins may be empty (a pause in the recording); nothing is dropped.
* ``split_by="number"``: events are ranked by time (a stable sort, so equal timestamps keep
  their order in the array) and the event of rank ``r`` goes to frame ``floor(r * T / N)``:
  every frame holds ``floor(N / T)`` or ``ceil(N / T)`` events (sizes differ by at most one,
  the larger ones spread evenly; frame k starts at rank ``ceil(k * N / T)``). With fewer
  events than frames some frames stay empty.
* ``split_by="time_fork"``: the time slicer of the tonic fork KT reads events with
  (FloyedShen/tonic ``functional/slicing.py`` ``slice_by_time_bins``): windows of length
  ``w = t_last // T`` (the last timestamp itself, not the span) starting at the first
  timestamp ``t0``; frame k holds the events with ``t0 + k w <= t < t0 + (k + 1) w``. Events
  at or after ``t0 + T w`` are in no frame (not counted as dropped: with ``t0 = 0`` the last
  timestamp's events); with ``t0 > 0`` the windows reach past the last event and the last
  frames can stay empty.
* An empty recording gives all-zero frames; a single event lands in frame 0.
* Counts are uint32: a pixel cannot receive more events than a recording holds, and no
  recording that fits in memory holds 2**32 events (tonic's int16 counts overflow at 32,767).

The resize (:func:`resize_frames`) reproduces ``torch.nn.functional.interpolate(mode="bilinear")``
without antialiasing, with ``align_corners`` False (torch's default, tmkt's default) or True
(what KT's code applies to event frames: datasets.py, e.g. lines 1275, 1290, 1295).
"""

from __future__ import annotations

import bisect
from typing import Literal

import numpy as np

SplitBy = Literal["time", "number", "time_fork"]


# --------------------------------------------------------------------------------------------
# Integration
# --------------------------------------------------------------------------------------------

def events_to_frames(events: np.ndarray, sensor_size: tuple[int, int], time_steps: int,
                     split_by: SplitBy = "time", *, origin: tuple[int, int] = (0, 0),
                     return_dropped: bool = False) -> np.ndarray | tuple[np.ndarray, int]:
    """Count events into ``uint32 [time_steps, 2, H, W]`` frames (rules in the module doc).

    ``sensor_size`` is ``(height, width)``. ``origin`` ``(y0, x0)`` is subtracted from every
    event's coordinates before anything else (a window of the sensor starting there, as
    prepare's ``observed_shifted`` extent asks), without copying the events. With
    ``return_dropped`` the result is ``(frames, dropped)``, ``dropped`` being the number of
    events outside the sensor.
    """
    height, width = (int(s) for s in sensor_size)
    if height < 1 or width < 1:
        raise ValueError(f"sensor size must be positive, got {sensor_size}")
    if time_steps < 1:
        raise ValueError(f"time_steps must be >= 1, got {time_steps}")
    if split_by not in ("time", "number", "time_fork"):
        raise ValueError(f"split_by must be 'time', 'number' or 'time_fork', got {split_by!r}")
    if events.dtype.names is None or not {"t", "x", "y", "p"} <= set(events.dtype.names):
        raise ValueError(f"events need fields t, x, y, p; got dtype {events.dtype}")
    if events.size and events.dtype["t"].kind not in "iu":
        raise ValueError(f"timestamps must be integers (microseconds), got {events.dtype['t']}")

    plane = 2 * height * width
    frames = np.zeros((time_steps, plane), dtype=np.uint32)
    dropped = 0
    y0, x0 = (int(o) for o in origin)
    if events.size and not _count_clean_sorted(events, height, width, split_by, frames,
                                               (y0, x0)):
        # Not the common case (sorted and all inside): drop what is outside, then bin.
        frames[:] = 0
        if y0 or x0:
            events = events.copy()
            events["x"] -= x0
            events["y"] -= y0
        inside = _inside_sensor(events, height, width)
        if inside is not None:
            dropped = int(events.size - np.count_nonzero(inside))
            events = events[inside]
        if events.size:
            t = events["t"]
            if split_by == "time_fork" and not _is_sorted(t):
                events = events[np.argsort(t, kind="stable")]
                t = events["t"]
            if _is_sorted(t):
                _count_segments(events, _edges(t, time_steps, split_by), height, width, frames)
            else:
                frame_index = (_time_bins_unsorted(t, time_steps) if split_by == "time"
                               else _rank_bins_unsorted(t, time_steps))
                flat = frame_index.astype(np.int64)
                flat *= plane
                flat += _plane_position(events, height, width)
                frames = np.bincount(flat, minlength=frames.size).astype(np.uint32)
    frames = frames.reshape(time_steps, 2, height, width)
    return (frames, dropped) if return_dropped else frames


def integrate_events(events: np.ndarray, sensor_size: tuple[int, int], time_steps: int,
                     size: int, split_by: SplitBy = "time", align_corners: bool = False,
                     sensor_extent: str = "declared"
                     ) -> tuple[np.ndarray, int, tuple[int, int]]:
    """One recording as ``tmkt prepare`` stores it: the frame extent
    (:func:`sensor_window`), the counts (:func:`events_to_frames`), resized to ``float32
    [T, 2, size, size]`` (:func:`resize_frames`). Returns ``(frames, dropped, extent)``.
    ``tmkt predict`` integrates raw recordings through the same function, so a model sees
    what it was trained on."""
    extent, origin = sensor_window(events, (int(sensor_size[0]), int(sensor_size[1])),
                                   sensor_extent)
    counts, dropped = events_to_frames(events, extent, time_steps, split_by, origin=origin,
                                       return_dropped=True)
    return resize_frames(counts, size, align_corners), dropped, extent


def sensor_window(events: np.ndarray, sensor: tuple[int, int], mode: str
                  ) -> tuple[tuple[int, int], tuple[int, int]]:
    """The frame extent of a recording (``prepare.sensor_extent``) as ``(height, width)`` and
    the origin ``(y0, x0)`` it starts at: the declared sensor (``declared``), the events' own
    extent ``(max y + 1, max x + 1)`` (``observed``: tonic's ToFrame without a sensor size,
    FloyedShen/tonic functional/to_frame.py 51-58), or that extent after shifting x and y to
    start at 0 (``observed_shifted``: the fork's N-Caltech101 reader, datasets/ncaltech101.py
    186-187, then ToFrame without a sensor size). The shift is left to ``events_to_frames``
    (its ``origin``): copying and shifting the events took 1.4 ms of a recording's ~11."""
    if mode == "declared" or events.size == 0:
        return sensor, (0, 0)
    if mode not in ("observed", "observed_shifted"):
        raise ValueError(f"unknown sensor extent {mode!r}")
    x, y = events["x"], events["y"]
    if mode == "observed":
        return (int(y.max()) + 1, int(x.max()) + 1), (0, 0)
    y0, x0 = int(y.min()), int(x.min())
    return (int(y.max()) - y0 + 1, int(x.max()) - x0 + 1), (y0, x0)


def _edges(t_sorted: np.ndarray, time_steps: int, split_by: SplitBy) -> list[int]:
    """Where each frame's events start in a sorted recording (and where the last ends)."""
    if split_by == "time_fork":
        return _fork_time_edges(t_sorted, time_steps)
    return (_time_edges(t_sorted, time_steps) if split_by == "time"
            else _rank_edges(t_sorted.size, time_steps))


def _count_segments(events: np.ndarray, edges: list[int], height: int, width: int,
                    frames: np.ndarray) -> None:
    """Count each frame's contiguous slice of a sorted, in-sensor recording with one bincount
    into a cache-sized output. Slice by slice, every temporary stays small: allocations of
    several MB land on fresh pages, whose faults cost more than the counting itself."""
    for k in range(frames.shape[0]):
        if edges[k + 1] > edges[k]:
            segment = events[edges[k]:edges[k + 1]]
            frames[k] = np.bincount(_plane_position(segment, height, width),
                                    minlength=frames.shape[1])


WHOLE_RECORDING_EVENTS = 20_000
"""Below this many events a recording is counted in one bincount over all frames: per-frame
work is then mostly Python call overhead (ten or so numpy calls per frame). Measured with
bench/bench_frames.py: 20% faster at 10k events, 10-20% slower at 30k."""


CHUNK_EVENTS = 131_072
"""Consecutive frames are counted together while they hold at most this many events: the
fields are copied out and indexed once per chunk (fewer numpy calls than frame by frame)
while every temporary stays under about 1 MB (larger ones land on fresh pages, whose faults
cost more than the counting; measured with bench/bench_frames.py)."""


def _count_clean_sorted(events: np.ndarray, height: int, width: int, split_by: SplitBy,
                        frames: np.ndarray, origin: tuple[int, int]) -> bool:
    """The fast path, for a recording that is sorted with every event inside the sensor
    (every real one): frame edges are found assuming that, and each chunk of frames is
    checked just before it is counted. Returns False, with ``frames`` partly written, as
    soon as a chunk breaks the assumption.

    Each chunk's fields are first copied out of the structured array: one strided pass per
    field, after which the checks and the index arithmetic run on small contiguous arrays
    (reading packed, unaligned fields directly is about 4x slower per pass). Each frame is
    then one bincount into a cache-sized output.
    """
    if events.size < WHOLE_RECORDING_EVENTS:
        return _count_whole(events, height, width, split_by, frames, origin)
    if split_by == "time_fork" and not _is_sorted(events["t"]):
        return False  # the fork's windows need not cover every event: check the whole order
    time_steps, plane = frames.shape
    edges = _edges(events["t"], time_steps, split_by)
    small = plane < 2**31
    previous_last = None
    first = 0
    while first < time_steps:
        last = first + 1  # frames first..last-1 make this chunk
        while last < time_steps and edges[last + 1] - edges[first] <= CHUNK_EVENTS:
            last += 1
        start, stop = edges[first], edges[last]
        if stop > start:
            chunk = events[start:stop]
            t = chunk["t"].copy()
            # Sorted chunks that join in order make a sorted recording, which validates the
            # edges found by bisection.
            if (previous_last is not None and t[0] < previous_last) or not _is_sorted(t):
                return False
            previous_last = t[-1]
            index_dtype = np.int32 if small and chunk.dtype["x"].itemsize <= 4 else np.int64
            x = chunk["x"].astype(index_dtype)
            y = chunk["y"].astype(index_dtype)
            if origin != (0, 0):
                y -= origin[0]
                x -= origin[1]
            position = chunk["p"].astype(index_dtype)
            if (_as_unsigned(x).max() >= width or _as_unsigned(y).max() >= height
                    or _as_unsigned(position).max() > 1):
                return False
            position *= height
            position += y
            position *= width
            position += x
            for k in range(first, last):
                if edges[k + 1] > edges[k]:
                    frames[k] = np.bincount(position[edges[k] - start:edges[k + 1] - start],
                                            minlength=plane)
        first = last
    return True


def _count_whole(events: np.ndarray, height: int, width: int, split_by: SplitBy,
                 frames: np.ndarray, origin: tuple[int, int]) -> bool:
    """:func:`_count_clean_sorted` for a small recording: one index over every frame."""
    t = events["t"]
    if not _is_sorted(t):
        return False
    position = _checked_plane_position(events, height, width, origin)
    if position is None:
        return False
    time_steps, plane = frames.shape
    edges = _edges(t, time_steps, split_by)
    if time_steps * plane >= 2**31:
        position = position.astype(np.int64)
    for k in range(1, time_steps):
        position[edges[k]:edges[k + 1]] += k * plane
    counted = position[:edges[-1]]  # the fork's windows may leave the last events out
    frames.reshape(-1)[:] = np.bincount(counted, minlength=frames.size)
    return True


def _checked_plane_position(events: np.ndarray, height: int, width: int,
                            origin: tuple[int, int]) -> np.ndarray | None:
    """:func:`_plane_position` of the coordinates relative to ``origin``, or None when an
    event lies outside the sensor."""
    x, y = events["x"], events["y"]
    if origin != (0, 0):
        y, x = y - origin[0], x - origin[1]
    # Viewing signed coordinates as unsigned maps negatives to huge values, so one max()
    # checks both bounds.
    if (_as_unsigned(x).max() >= width or _as_unsigned(y).max() >= height
            or _as_unsigned(events["p"]).max() > 1):
        return None
    position = events["p"].astype(np.int32 if 2 * height * width < 2**31 else np.int64)
    position *= height
    position += y
    position *= width
    position += x
    return position


def count_outside_sensor(events: np.ndarray, sensor_size: tuple[int, int]) -> int:
    """Events ``events_to_frames`` would drop for this sensor."""
    inside = _inside_sensor(events, int(sensor_size[0]), int(sensor_size[1]))
    return 0 if inside is None else int(events.size - np.count_nonzero(inside))


def _inside_sensor(events: np.ndarray, height: int, width: int) -> np.ndarray | None:
    """Mask of events inside the sensor, or None when all are (the common case, found with
    three reductions and no temporary arrays)."""
    if events.size == 0:
        return None
    x, y, p = events["x"], events["y"], events["p"]
    # Viewing signed coordinates as unsigned maps negatives to huge values, so one max()
    # checks both bounds.
    if (_as_unsigned(x).max() < width and _as_unsigned(y).max() < height
            and _as_unsigned(p).max() <= 1):
        return None
    return ((x >= 0) & (x < width) & (y >= 0) & (y < height) & ((p == 0) | (p == 1)))


def _plane_position(events: np.ndarray, height: int, width: int) -> np.ndarray:
    """Index of each event inside one frame: polarity plane, then row, then column."""
    # int32 suffices for any sensor that exists (2 * H * W < 2**31) and halves memory traffic.
    dtype = np.int32 if 2 * height * width < 2**31 else np.int64
    position = events["p"].astype(dtype)
    position *= height
    position += events["y"]
    position *= width
    position += events["x"]
    return position


def _as_unsigned(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "u":
        return values
    return values.view(values.dtype.str.replace("i", "u"))


def _is_sorted(t: np.ndarray, block: int = 1 << 15) -> bool:
    # Checked in blocks so the boolean temporaries stay small (see events_to_frames).
    for start in range(0, t.size - 1, block):
        stop = min(start + block, t.size - 1)
        if not np.all(t[start + 1:stop + 1] >= t[start:stop]):
            return False
    return True


def _time_bin_starts(t0: int, t1: int, time_steps: int) -> np.ndarray:
    """First timestamp of frames 1..T-1: the smallest integer t with (t - t0) * T >= k * D.

    Python integers keep ``k * D`` exact for any span."""
    span = t1 - t0 + 1
    return np.array([t0 + -(-k * span // time_steps) for k in range(1, time_steps)],
                    dtype=np.int64)


def _time_edges(t_sorted: np.ndarray, time_steps: int) -> list[int]:
    starts = _time_bin_starts(int(t_sorted[0]), int(t_sorted[-1]), time_steps)
    # bisect probes ~20 elements per edge; np.searchsorted would first copy the strided
    # field into a contiguous array.
    inner = [bisect.bisect_left(t_sorted, int(start)) for start in starts]
    return [0, *inner, int(t_sorted.size)]


def _fork_time_edges(t_sorted: np.ndarray, time_steps: int) -> list[int]:
    """Edges of the fork's windows [t0 + k w, t0 + (k + 1) w), w = t_last // T (module doc)."""
    t0, window = int(t_sorted[0]), int(t_sorted[-1]) // time_steps
    return [bisect.bisect_left(t_sorted, t0 + k * window) for k in range(time_steps + 1)]


def _rank_edges(n: int, time_steps: int) -> list[int]:
    # rank r goes to floor(r * T / N), so frame k starts at rank ceil(k * N / T).
    return [-(-k * n // time_steps) for k in range(time_steps + 1)]


def _time_bins_unsorted(t: np.ndarray, time_steps: int) -> np.ndarray:
    starts = _time_bin_starts(int(t.min()), int(t.max()), time_steps)
    # The number of frame starts at or before t is t's frame: exact, with no products
    # that could overflow int64 for a corrupt, huge timestamp.
    return np.searchsorted(starts, t, side="right")


def _rank_bins_unsorted(t: np.ndarray, time_steps: int) -> np.ndarray:
    order = np.argsort(t, kind="stable")
    frame_of_rank = np.arange(t.size, dtype=np.int64)
    frame_of_rank *= time_steps
    frame_of_rank //= t.size
    frame_index = np.empty(t.size, dtype=np.int64)
    frame_index[order] = frame_of_rank
    return frame_index


# --------------------------------------------------------------------------------------------
# Resizing
# --------------------------------------------------------------------------------------------

def bilinear_weights(in_size: int, out_size: int, align_corners: bool = False
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of a 1-D bilinear resize without antialiasing, as torch
    computes them: half-pixel centres (``align_corners`` False) or corner pixels mapped onto
    corner pixels (True: source = i (in - 1) / (out - 1)).

    Returns ``(lower, upper, lower_weight, upper_weight)``, each of length ``out_size``.
    """
    if align_corners:
        scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        source = np.arange(out_size, dtype=np.float64) * scale
    else:
        scale = in_size / out_size
        source = (np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5
        source = np.maximum(source, 0.0)  # torch clamps negative source coordinates to 0
    lower = np.minimum(source.astype(np.int64), in_size - 1)
    upper = np.minimum(lower + 1, in_size - 1)
    upper_weight = source - lower
    return lower, upper, 1.0 - upper_weight, upper_weight


def resize_frames(frames: np.ndarray, size: int, align_corners: bool = False) -> np.ndarray:
    """Resize ``[..., H, W]`` frames to ``float32 [..., size, size]`` (bilinear, no
    antialiasing: torch's ``F.interpolate`` semantics with this ``align_corners``).

    Computed in float64 with elementwise numpy only (no BLAS), so the result is bitwise the
    same in any process and for any thread count.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    height, width = frames.shape[-2:]
    if (height, width) == (size, size):
        return frames.astype(np.float32)
    rows_lo, rows_hi, rows_wlo, rows_whi = bilinear_weights(height, size, align_corners)
    cols_lo, cols_hi, cols_wlo, cols_whi = bilinear_weights(width, size, align_corners)
    # Gather the needed rows before converting to float: when shrinking, a float copy of the
    # whole input would be the biggest array of the whole computation.
    rows = (frames[..., rows_lo, :] * rows_wlo[:, None]
            + frames[..., rows_hi, :] * rows_whi[:, None])
    out = rows[..., cols_lo] * cols_wlo + rows[..., cols_hi] * cols_whi
    return out.astype(np.float32)


def resize_image(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize an RGB image to ``uint8 [size, size, 3]`` (PIL's bilinear filter, which
    antialiases when shrinking, like torchvision's ``Resize`` on a PIL image).

    Grey ``[H, W]`` or ``[H, W, 1]`` input is repeated to three channels; an alpha channel is
    dropped.
    """
    from PIL import Image

    image = np.asarray(rgb)
    if image.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected an [H, W, 3] image, got shape {image.shape}")
    image = np.ascontiguousarray(image[:, :, :3])
    if image.shape[:2] == (size, size):
        return image.copy()
    resized = Image.fromarray(image).resize((size, size), Image.BILINEAR)
    return np.asarray(resized, dtype=np.uint8).copy()

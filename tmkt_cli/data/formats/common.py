"""What every event-format reader shares: the event array, the sensor size, and reading a
path or the bytes of an archive member."""

from __future__ import annotations

import os

import numpy as np

from tmkt_cli.data.archives import read_file
from tmkt_cli.data.sources import EVENT_DTYPE

EventSource = str | os.PathLike | bytes | bytearray | memoryview
"""A file path, or the file's whole contents."""


def make_events(t, x, y, p) -> np.ndarray:
    """Build an :data:`EVENT_DTYPE` array from four equally long columns."""
    t = np.asarray(t)
    events = np.empty(t.shape[0], dtype=EVENT_DTYPE)
    events["t"], events["x"], events["y"], events["p"] = t, x, y, p
    return events


def infer_sensor_size(events: np.ndarray) -> tuple[int, int]:
    """(height, width) just large enough to hold every event; (1, 1) with no events, since an
    empty recording integrates to all-zero frames whatever the size."""
    if events.size == 0:
        return (1, 1)
    return (max(int(events["y"].max()) + 1, 1), max(int(events["x"].max()) + 1, 1))


def is_bytes(source: EventSource) -> bool:
    return isinstance(source, bytes | bytearray | memoryview)


def source_label(source: EventSource, name: str | None) -> str:
    """How errors name the file: ``name``, else the path, else ``<bytes>``."""
    if name:
        return name
    return "<bytes>" if is_bytes(source) else str(source)


def read_source(source: EventSource, label: str) -> bytes | memoryview:
    """The whole file: the bytes given, or the file read (one clear error when unreadable)."""
    if is_bytes(source):
        return memoryview(source).cast("B")
    return read_file(source, label, "an event file")

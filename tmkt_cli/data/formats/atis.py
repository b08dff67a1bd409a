"""ATIS ``.bin`` (N-MNIST, N-Caltech101): 5 bytes per event, see :func:`read_atis_bin`."""

from __future__ import annotations

import numpy as np

from tmkt_cli.data import validate
from tmkt_cli.data.formats.common import (
    EventSource,
    infer_sensor_size,
    make_events,
    read_source,
    source_label,
)
from tmkt_cli.errors import TmktError

ATIS_BYTES_PER_EVENT = 5
ATIS_OVERFLOW_Y = 240
"""An event with this y is not an event but a time-overflow marker."""
ATIS_OVERFLOW_INCREMENT_US = 2**13
"""What each overflow marker adds to every later timestamp (the N-MNIST reference reader)."""
ATIS_TIME_BITS = 23


def read_atis_bin(source: EventSource, *, sensor_size: tuple[int, int] | None = None,
                  name: str | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """Read an ATIS ``.bin`` recording.

    Each event is 5 bytes: x, y, then polarity in bit 7 of byte 2 and a 23-bit time in
    microseconds in the rest of bytes 2-4 (big-endian). An event with y == 240 is a
    time-overflow marker: every later event gets 2**13 µs more per marker seen, and the marker
    itself is dropped. ``sensor_size`` (height, width) is returned as given; without it the
    size is inferred from the largest coordinates (N-Caltech101 recordings differ in size).
    """
    label = source_label(source, name)
    raw = np.frombuffer(read_source(source, label), dtype=np.uint8)
    if raw.size == 0:
        raise TmktError(f"{label}: empty file, expected ATIS events of 5 bytes each")
    if raw.size % ATIS_BYTES_PER_EVENT:
        raise TmktError(f"{label}: {raw.size} bytes is not a multiple of 5: the file is "
                        f"truncated or not an ATIS .bin recording")
    records = raw.reshape(-1, ATIS_BYTES_PER_EVENT)
    y = records[:, 1]
    is_marker = y == ATIS_OVERFLOW_Y
    t = ((records[:, 2].astype(np.int64) & 0x7F) << 16
         | records[:, 3].astype(np.int64) << 8
         | records[:, 4].astype(np.int64))
    # The count of markers up to and including each position is the number of overflows that
    # happened before that event (a marker's own time is dropped with it).
    t += np.cumsum(is_marker, dtype=np.int64) * ATIS_OVERFLOW_INCREMENT_US
    keep = ~is_marker
    validate.check_has_events(int(keep.sum()), int(is_marker.sum()), label)
    validate.check_time_span(t[keep], label)
    events = make_events(t[keep], records[keep, 0], y[keep], records[keep, 2] >> 7)
    return events, (tuple(sensor_size) if sensor_size else infer_sensor_size(events))

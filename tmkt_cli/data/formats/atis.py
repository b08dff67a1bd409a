"""ATIS ``.bin`` (N-MNIST, N-Caltech101): 5 bytes per event, see :func:`read_atis_bin`."""

from __future__ import annotations

import numpy as np

from tmkt_cli.data import validate
from tmkt_cli.data.formats.common import (
    EventSource,
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


ATIS_RECORD = np.dtype({"names": ["x", "word"], "formats": ["u1", ">u4"], "offsets": [0, 1],
                        "itemsize": ATIS_BYTES_PER_EVENT})
"""One event: x in byte 0; y, polarity and time in the big-endian 32-bit word of bytes 1-4
(y in bits 24-31, polarity in bit 23, time in bits 0-22)."""


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
    data = read_source(source, label)
    size = len(data)
    if size == 0:
        raise TmktError(f"{label}: empty file, expected ATIS events of 5 bytes each")
    if size % ATIS_BYTES_PER_EVENT:
        raise TmktError(f"{label}: {size} bytes is not a multiple of 5: the file is "
                        f"truncated or not an ATIS .bin recording")
    records = np.frombuffer(data, dtype=ATIS_RECORD)
    # Bytes 1-4 read as one big-endian word: a single pass decodes y, polarity and time
    # (reading the bytes one by one and widening each to int64 took 2.4x as long).
    word = records["word"].astype(np.uint32)
    y = word >> 24
    is_marker = y == ATIS_OVERFLOW_Y
    markers = int(np.count_nonzero(is_marker))
    polarity = word >> 23
    polarity &= 1
    word &= (1 << ATIS_TIME_BITS) - 1
    x = records["x"]
    if markers:
        # The count of markers up to and including each position is the number of overflows
        # that happened before that event (a marker's own time is dropped with it).
        t = word.astype(np.int64)
        t += np.cumsum(is_marker, dtype=np.int64) * ATIS_OVERFLOW_INCREMENT_US
        keep = ~is_marker
        t, x, y, polarity = t[keep], x[keep], y[keep], polarity[keep]
    else:
        t = word
    validate.check_has_events(t.size, markers, label)
    validate.check_time_span(t, label)
    events = make_events(t, x, y, polarity)
    if sensor_size:
        return events, tuple(sensor_size)
    # infer_sensor_size(events), from the unpacked columns: two fast passes instead of two
    # over the packed event records (the recording is not empty, checked above).
    return events, (int(y.max()) + 1, int(x.max()) + 1)

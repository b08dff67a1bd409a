"""AEDAT 2.0 as a DVS128 writes it (the original CIFAR10-DVS release), see :func:`read_aedat2`."""

from __future__ import annotations

import re

import numpy as np

from tmkt_cli.data import validate
from tmkt_cli.data.formats.common import (
    EventSource,
    make_events,
    read_source,
    source_label,
)
from tmkt_cli.errors import TmktError

DVS128_SENSOR_SIZE = (128, 128)
DVS128_SPECIAL_EVENT_BIT = 1 << 15
"""jAER marks external-input (non-pixel) events of a DVS128 with this address bit."""


def read_aedat2(source: EventSource, *, name: str | None = None
                ) -> tuple[np.ndarray, tuple[int, int]]:
    """Read a DVS128 AEDAT 2.0 file (the original CIFAR10-DVS release).

    After the ``#`` header lines come big-endian pairs of 32-bit address and 32-bit timestamp
    (µs). The address layout is jAER's DVS128 one: bit 0 polarity (0 is ON), bits 1-7 the
    column and bits 8-14 the row, both counted from the opposite corner; bit 15 flags
    external (non-pixel) events, which are dropped. Coordinates come back with the origin at
    the top-left as in an image: x = 127 - bits 1-7, y = 127 - bits 8-14, p = 1 - bit 0.
    Timestamps are kept as recorded (absolute, not shifted to 0).
    """
    label = source_label(source, name)
    data = bytes(read_source(source, label))
    if not data:
        raise TmktError(f"{label}: empty file, expected an AEDAT 2.0 recording")
    body_start, version = _skip_aedat_header(data, label)
    if version is None:
        raise TmktError(f"{label}: no '#!AER-DAT' version line: not an AEDAT file")
    if not version.startswith("2."):
        raise TmktError(f"{label}: AEDAT version {version}, expected 2.0 (the original "
                        f"CIFAR10-DVS release); other versions are not supported")
    body = memoryview(data)[body_start:]
    if len(body) % 8:
        raise TmktError(f"{label}: {len(body)} bytes of events is not a multiple of 8: "
                        f"the file is truncated")
    words = np.frombuffer(body, dtype=">u4").reshape(-1, 2)
    address = words[:, 0].astype(np.int64)
    timestamp = words[:, 1].astype(np.int64)
    pixel = (address & DVS128_SPECIAL_EVENT_BIT) == 0
    address, timestamp = address[pixel], timestamp[pixel]
    validate.check_has_events(int(pixel.sum()), int((~pixel).sum()), label)
    validate.check_time_span(timestamp, label)
    events = make_events(timestamp,
                         127 - ((address >> 1) & 0x7F),
                         127 - ((address >> 8) & 0x7F),
                         1 - (address & 1))
    return events, DVS128_SENSOR_SIZE


def _skip_aedat_header(data: bytes, label: str) -> tuple[int, str | None]:
    """Offset of the first event byte and the version named by '#!AER-DAT<version>'."""
    position, version = 0, None
    # A DVS128 address never sets its top byte, so event data cannot start with '#'.
    while position < len(data) and data[position] == ord("#"):
        end = data.find(b"\n", position)
        if end < 0:
            raise TmktError(f"{label}: the header never ends: the file is truncated")
        line = data[position:end].strip()
        match = re.match(rb"#!AER-DAT(\d+(?:\.\d+)?)", line)
        if match:
            version = match.group(1).decode("ascii")
        position = end + 1
    return position, version

"""Writers of the event formats tmkt reads: tests and benchmarks make files in the real
formats with them. They are not part of tmkt (a user never writes these files with tmkt) and
raise ``ValueError`` for events a format cannot hold (a caller's bug).

Importable from the tests (``tests/`` is on pytest's path) and from ``bench/`` scripts, which
put ``tests/`` on ``sys.path`` first.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from tmkt_cli.data.formats.aedat2 import DVS128_SENSOR_SIZE  # noqa: F401  (for callers)
from tmkt_cli.data.formats.aedat4 import (
    _AEDAT4_EVENTS_ID,
    AEDAT4_COMPRESSIONS,
    AEDAT4_EVENT_LAYOUT,
    AEDAT4_MAGIC,
    DAVIS346_SENSOR_SIZE,
)
from tmkt_cli.data.formats.atis import (
    ATIS_BYTES_PER_EVENT,
    ATIS_OVERFLOW_INCREMENT_US,
    ATIS_OVERFLOW_Y,
    ATIS_TIME_BITS,
)

_AEDAT2_HEADER = (
    b"#!AER-DAT2.0\r\n"
    b"# This is a raw AE data file - do not edit\r\n"
    b"# Data format is int32 address, int32 timestamp (8 bytes total), repeated for each event\r\n"
    b"# Timestamps tick is 1 us\r\n"
)


def encode_atis_bin(events: np.ndarray) -> bytes:
    """The ATIS ``.bin`` bytes of ``events``, with overflow markers inserted wherever a time
    does not fit in 23 bits. Times must not decrease once a marker was needed."""
    t = np.asarray(events["t"], dtype=np.int64)
    x, y, p = (np.asarray(events[k], dtype=np.int64) for k in ("x", "y", "p"))
    if t.size and (t.min() < 0 or x.min() < 0 or x.max() > 255 or y.min() < 0 or y.max() > 255):
        raise ValueError("ATIS events need t >= 0 and x, y in 0..255")
    if np.any(y == ATIS_OVERFLOW_Y):
        raise ValueError("y == 240 is the ATIS overflow marker and cannot be an event")
    if np.any((p != 0) & (p != 1)):
        raise ValueError("ATIS polarity must be 0 or 1")
    limit = (1 << ATIS_TIME_BITS) - 1
    needed = np.maximum(0, -(-(t - limit) // ATIS_OVERFLOW_INCREMENT_US))  # ceil division
    markers_before = np.maximum.accumulate(needed) if t.size else needed
    stored_t = t - markers_before * ATIS_OVERFLOW_INCREMENT_US
    if np.any(stored_t < 0):
        raise ValueError("times decrease after an overflow: not encodable as ATIS .bin")
    # Every row that is not an event is a marker: the markers an event needs sit just before
    # it, so event i lands at row i + (markers before it).
    event_rows = np.arange(t.size) + markers_before
    rows = t.size + (int(markers_before[-1]) if t.size else 0)
    out = np.zeros((rows, ATIS_BYTES_PER_EVENT), dtype=np.uint8)
    out[:, 1] = ATIS_OVERFLOW_Y
    out[event_rows, 0] = x
    out[event_rows, 1] = y
    out[event_rows, 2] = (p << 7) | (stored_t >> 16)
    out[event_rows, 3] = (stored_t >> 8) & 0xFF
    out[event_rows, 4] = stored_t & 0xFF
    return out.tobytes()


def write_atis_bin(path: str | os.PathLike, events: np.ndarray) -> None:
    """Write ``events`` as an ATIS ``.bin`` file (see :func:`encode_atis_bin`)."""
    Path(path).write_bytes(encode_atis_bin(events))


def encode_aedat2(events: np.ndarray) -> bytes:
    """The AEDAT 2.0 bytes (DVS128 layout, see :func:`read_aedat2`) of ``events``."""
    x, y, p, t = (np.asarray(events[k], dtype=np.int64) for k in ("x", "y", "p", "t"))
    if x.size and (min(x.min(), y.min()) < 0 or max(x.max(), y.max()) > 127):
        raise ValueError("DVS128 coordinates must be in 0..127")
    if np.any((p != 0) & (p != 1)):
        raise ValueError("polarity must be 0 or 1")
    if t.size and (t.min() < 0 or t.max() >= 2**32):
        raise ValueError("AEDAT 2.0 timestamps must fit in 32 unsigned bits")
    address = ((127 - y) << 8) | ((127 - x) << 1) | (1 - p)
    words = np.empty((x.size, 2), dtype=">u4")
    words[:, 0], words[:, 1] = address, t
    return _AEDAT2_HEADER + words.tobytes()


def write_aedat2(path: str | os.PathLike, events: np.ndarray) -> None:
    """Write ``events`` as an AEDAT 2.0 file (see :func:`encode_aedat2`)."""
    Path(path).write_bytes(encode_aedat2(events))


def write_cep_mat(path: str | os.PathLike, events: np.ndarray, *,
                  sensor_size: tuple[int, int] | None = None, hdf5: bool = False) -> None:
    """Write ``events`` as a CEP-DVS ``.mat`` file (p as -1/1, column vectors as MATLAB
    saves them); ``hdf5`` writes the v7.3 layout (an HDF5 file behind a 512-byte header)."""
    columns = {
        "x": np.asarray(events["x"], dtype=np.float64),
        "y": np.asarray(events["y"], dtype=np.float64),
        "ts": np.asarray(events["t"], dtype=np.float64),
        "p": np.where(np.asarray(events["p"]) > 0, 1.0, -1.0),
    }
    if sensor_size is not None:
        columns["height"] = np.array([[float(sensor_size[0])]])
        columns["width"] = np.array([[float(sensor_size[1])]])
    if not hdf5:
        import scipy.io

        scipy.io.savemat(str(path), {k: v.reshape(-1, 1) if v.ndim == 1 else v
                                     for k, v in columns.items()})
        return
    import h5py

    with h5py.File(path, "w", userblock_size=512) as f:
        for key, value in columns.items():
            # MATLAB stores an N x 1 column as a 1 x N HDF5 dataset (column-major order).
            f.create_dataset(key, data=value.reshape(1, -1))
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created by: tmkt HDF5 schema 1.00 ."
    with open(path, "r+b") as f:
        f.write(header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM")


def encode_dvsgesture_npy(events: np.ndarray, dtype: np.dtype | type = np.float64) -> bytes:
    """The ``.npy`` bytes of ``events`` in tonic's DVS-Gesture layout (t rounded to ms)."""
    array = np.column_stack([events["x"], events["y"], events["p"],
                             np.rint(np.asarray(events["t"]) / 1000)]).astype(dtype)
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def write_dvsgesture_npy(path: str | os.PathLike, events: np.ndarray,
                         dtype: np.dtype | type = np.float64) -> None:
    """Write ``events`` as a tonic DVS-Gesture ``.npy`` sample."""
    Path(path).write_bytes(encode_dvsgesture_npy(events, dtype))


def encode_aedat4(events: np.ndarray, *, sensor_size: tuple[int, int] = DAVIS346_SENSOR_SIZE,
                  compression: str = "lz4", events_per_packet: int = 4096,
                  other_events: np.ndarray | None = None,
                  data_table: bytes | None = None) -> bytes:
    """The AEDAT 4.0 bytes of ``events`` as DV writes them (see :func:`read_aedat4`).

    ``compression``: "none", "lz4"/"lz4_high" (tmkt's LZ4 frame encoder) or
    "zstd"/"zstd_high" (needs the ``zstandard`` package). ``other_events`` adds a second event
    stream (id 0, named "other"; the main stream, "events", then gets id 1) whose packets are
    interleaved with the main ones. ``data_table`` bytes are placed where the header's
    data-table position points (readers stop there; tmkt never reads the table itself).
    """
    if compression not in AEDAT4_COMPRESSIONS:
        raise ValueError(f"compression must be one of {AEDAT4_COMPRESSIONS}")
    if events_per_packet < 1:
        raise ValueError("events_per_packet must be >= 1")
    streams = [("events", events)] if other_events is None \
        else [("other", other_events), ("events", events)]
    nodes = []
    for stream_id, (stream_name, _) in enumerate(streams):
        nodes.append(
            f'<node name="{stream_id}" path="/mainloop/output_file/outInfo/{stream_id}/">'
            f'<attr key="compression" type="string">{compression.upper()}</attr>'
            f'<attr key="originalModuleName" type="string">capture</attr>'
            f'<attr key="originalOutputName" type="string">{stream_name}</attr>'
            f'<attr key="typeIdentifier" type="string">EVTS</attr>'
            f'<node name="info" path="/mainloop/output_file/outInfo/{stream_id}/info/">'
            f'<attr key="sizeX" type="int">{int(sensor_size[1])}</attr>'
            f'<attr key="sizeY" type="int">{int(sensor_size[0])}</attr>'
            f'<attr key="source" type="string">DAVIS346</attr></node></node>')
    description = ('<dv version="2.0"><node name="outInfo" path="/mainloop/output_file/'
                   'outInfo/">' + "".join(nodes) + "</node></dv>")
    compress = _aedat4_compressor(compression)
    per_stream = []
    for stream_id, (_, stream_events) in enumerate(streams):
        raw = _aedat4_packed_events(stream_events, sensor_size)
        chunks = [raw[i:i + events_per_packet] for i in range(0, raw.size, events_per_packet)]
        per_stream.append([(stream_id, compress(_aedat4_packet_flatbuffer(c))) for c in chunks])
    packets = bytearray()
    for round_ in range(max(len(p) for p in per_stream)):
        for stream_packets in per_stream:
            if round_ < len(stream_packets):
                stream_id, body = stream_packets[round_]
                packets += stream_id.to_bytes(4, "little") + len(body).to_bytes(4, "little")
                packets += body

    def file_bytes(table_position: int) -> bytes:
        header = _aedat4_ioheader_flatbuffer(AEDAT4_COMPRESSIONS.index(compression),
                                             table_position, description.encode("utf-8"))
        return AEDAT4_MAGIC + len(header).to_bytes(4, "little") + header + packets

    if data_table is None:
        return file_bytes(-1)
    # The header's length does not depend on the position's value, so one pass sizes it.
    position = len(file_bytes(0))
    return file_bytes(position) + data_table


def write_aedat4(path: str | os.PathLike, events: np.ndarray, **options) -> None:
    """Write ``events`` as an AEDAT 4.0 file (options of :func:`encode_aedat4`)."""
    Path(path).write_bytes(encode_aedat4(events, **options))


def _aedat4_packed_events(events: np.ndarray, sensor_size: tuple[int, int]) -> np.ndarray:
    x, y, p = (np.asarray(events[k], dtype=np.int64) for k in ("x", "y", "p"))
    if x.size and (min(x.min(), y.min()) < 0 or x.max() >= sensor_size[1]
                   or y.max() >= sensor_size[0]):
        raise ValueError(f"coordinates must lie on the {sensor_size[0]} x {sensor_size[1]} "
                         f"sensor")
    if np.any((p != 0) & (p != 1)):
        raise ValueError("polarity must be 0 or 1")
    raw = np.zeros(x.size, AEDAT4_EVENT_LAYOUT)
    raw["t"], raw["x"], raw["y"], raw["on"] = events["t"], x, y, p
    return raw


def _aedat4_packet_flatbuffer(raw: np.ndarray) -> bytes:
    """A size-prefixed EventPacket flatbuffer: size, root offset, "EVTS", vtable, table, then
    the vector of events at an 8-byte aligned position."""
    body = bytearray()
    body += (16).to_bytes(4, "little")                         # 4: root offset -> table at 20
    body += _AEDAT4_EVENTS_ID                                  # 8: identifier
    body += b"\x06\x00\x08\x00\x04\x00\x00\x00"                # 12: vtable (6, 8, field 0 at 4)
    body += (8).to_bytes(4, "little", signed=True)             # 20: table: vtable at 20 - 8
    body += (4).to_bytes(4, "little")                          # 24: field 0 -> vector at 28
    body += raw.size.to_bytes(4, "little") + raw.tobytes()     # 28: length, events from 32
    return len(body).to_bytes(4, "little") + bytes(body)


def _aedat4_ioheader_flatbuffer(compression: int, data_table_position: int,
                                description: bytes) -> bytes:
    """The IOHeader table; the data-table position is left out when it is the default -1, as
    a flatbuffers builder does."""
    has_table = data_table_position != -1
    out = bytearray()
    out += (16).to_bytes(4, "little")                          # 0: root offset -> table at 16
    out += (10).to_bytes(2, "little") + (20).to_bytes(2, "little")   # 4: vtable
    out += (4).to_bytes(2, "little") + (8 if has_table else 0).to_bytes(2, "little")
    out += (16).to_bytes(2, "little") + b"\x00\x00"
    out += (12).to_bytes(4, "little", signed=True)             # 16: table: vtable at 16 - 12
    out += compression.to_bytes(4, "little", signed=True)      # 20: compression
    out += data_table_position.to_bytes(8, "little", signed=True) if has_table else bytes(8)
    out += (4).to_bytes(4, "little")                           # 32: description -> 36
    out += len(description).to_bytes(4, "little") + description + b"\x00"
    out += bytes(-len(out) % 8)
    return bytes(out)


def _aedat4_compressor(compression: str):
    if compression == "none":
        return bytes
    if compression in ("lz4", "lz4_high"):
        return lz4_frame_compress
    try:
        import zstandard
    except ImportError:
        raise ValueError("writing ZSTD packets needs the zstandard package") from None
    return zstandard.ZstdCompressor().compress


def lz4_frame_compress(data: bytes) -> bytes:
    """One LZ4 frame, as DV writes each AEDAT 4.0 packet (the ``lz4`` package)."""
    import lz4.frame

    return lz4.frame.compress(bytes(data))

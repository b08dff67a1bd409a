"""AEDAT 4.0 (N-Omniglot: DV recordings of a DAVIS346), see :func:`read_aedat4`."""

from __future__ import annotations

import re

import numpy as np

from tmkt_cli.data.formats.common import (
    EventSource,
    infer_sensor_size,
    make_events,
    read_source,
    source_label,
)
from tmkt_cli.errors import TmktError, first_line

# # Layout (iniVation's DV, as read by dv-python and the `aedat` crate):
#
#   "#!AER-DAT4.0\r\n"
#   uint32 LE n, then n bytes: an IOHeader flatbuffer (compression code, data-table position,
#     and an XML description naming each output stream: id, typeIdentifier, sizeX/sizeY)
#   packets up to the data-table position (or the end of the file):
#     int32 LE stream id, int32 LE size, then `size` bytes: one size-prefixed flatbuffer,
#     compressed as a whole (one LZ4 frame or one ZSTD frame per packet) unless compression is
#     NONE. An event packet ("EVTS") is a table whose field 0 is a vector of 16-byte structs
#     (int64 timestamp in µs, int16 x, int16 y, bool polarity, 3 bytes of padding).
#   the data table ("FTAB", an index of the packets; not needed and not read here)
#
# Only packets of the event stream are decompressed; frames, IMU samples and triggers a
# DAVIS346 also records are skipped by their size.
AEDAT4_MAGIC = b"#!AER-DAT4.0\r\n"
AEDAT4_COMPRESSIONS = ("none", "lz4", "lz4_high", "zstd", "zstd_high")
"""The IOHeader's compression codes 0-4, in order."""
AEDAT4_EVENT_LAYOUT = np.dtype({"names": ["t", "x", "y", "on"],
                                "formats": ["<i8", "<i2", "<i2", "u1"],
                                "offsets": [0, 8, 10, 12], "itemsize": 16})
"""One element of an event packet: the flatbuffers struct Event, padded to 16 bytes."""
DAVIS346_SENSOR_SIZE = (260, 346)
"""(height, width) of the DAVIS346 that recorded N-Omniglot."""
_AEDAT4_EVENTS_ID = b"EVTS"


def read_aedat4(source: EventSource, *, name: str | None = None
                ) -> tuple[np.ndarray, tuple[int, int]]:
    """Read the polarity events of an AEDAT 4.0 file (layout in the comment above).

    The event stream is the one named ``events`` (DV's name for a camera's event output),
    else the ``EVTS`` stream with the lowest id. Timestamps are kept as recorded (absolute
    µs), coordinates as the camera gives them (origin at the top-left), ``p`` = 1 for ON.
    The sensor size is the stream's sizeY x sizeX, else inferred from the coordinates.
    Packets may be uncompressed, LZ4 (the ``lz4`` package) or ZSTD (``zstandard``).
    """
    label = source_label(source, name)
    data = read_source(source, label)
    _check_aedat4_magic(data, label)
    header_end, compression, data_table_position, description = _aedat4_header(data, label)
    stream_id, sensor_size = _aedat4_event_stream(description, label)
    end = _aedat4_packets_end(data, header_end, data_table_position, label)
    chunks = _aedat4_event_chunks(data, header_end, end, stream_id, compression, label)
    raw = np.concatenate(chunks) if chunks else np.zeros(0, AEDAT4_EVENT_LAYOUT)
    events = make_events(raw["t"], raw["x"], raw["y"], raw["on"] != 0)
    return events, (sensor_size if sensor_size else infer_sensor_size(events))


def _check_aedat4_magic(data, label: str) -> None:
    """Fail unless the file starts with the AEDAT 4.0 line (naming other versions found)."""
    if len(data) == 0:
        raise TmktError(f"{label}: empty file, expected an AEDAT 4.0 recording")
    head = bytes(data[:len(AEDAT4_MAGIC)])
    if head != AEDAT4_MAGIC:
        found = re.match(rb"#!AER-DAT(\d+(?:\.\d+)?)", head)
        if found:
            raise TmktError(f"{label}: AEDAT version {found.group(1).decode()}, expected 4.0 "
                            f"(N-Omniglot's DV recordings)")
        raise TmktError(f"{label}: no '#!AER-DAT4.0' line: not an AEDAT 4.0 file")


def _aedat4_header(data, label: str) -> tuple[int, str, int, str]:
    """(where the header ends, compression name, data-table position, stream description
    XML) from the IOHeader after the magic line."""
    position = len(AEDAT4_MAGIC)
    if len(data) < position + 4:
        raise TmktError(f"{label}: the AEDAT 4.0 header is cut short: the file is truncated")
    header_length = _le_int(data, position, 4, label, "AEDAT 4.0 header")
    header_end = position + 4 + header_length
    if header_end > len(data):
        raise TmktError(f"{label}: the AEDAT 4.0 header claims {header_length} bytes but the "
                        f"file has {len(data) - position - 4} left: the file is truncated")
    header = _Flatbuffer(bytes(data[position + 4:header_end]), 0, label, "AEDAT 4.0 header")
    table = header.root()
    compression_code = header.scalar(table, 0, 4, default=0)
    data_table_position = header.scalar(table, 1, 8, default=-1)
    description = header.string(table, 2)
    if description is None:
        raise TmktError(f"{label}: the AEDAT 4.0 header has no stream description")
    if not 0 <= compression_code < len(AEDAT4_COMPRESSIONS):
        raise TmktError(f"{label}: unknown AEDAT 4.0 compression code {compression_code}")
    compression = AEDAT4_COMPRESSIONS[compression_code]
    return header_end, compression, data_table_position, description


def _aedat4_packets_end(data, header_end: int, data_table_position: int, label: str) -> int:
    """The byte where the packets end: the data table, else the end of the file."""
    # A position <= 0 means no data table (a recording that was not closed cleanly).
    end = len(data) if data_table_position <= 0 else data_table_position
    if end < header_end:
        raise TmktError(f"{label}: damaged AEDAT 4.0 header (data table at byte {end}, "
                        f"inside the header)")
    if end > len(data):
        raise TmktError(f"{label}: the packets should end at byte {end} but the file has "
                        f"{len(data)} bytes: the file is truncated")
    return end


def _aedat4_event_chunks(data, start: int, end: int, stream_id: int, compression: str,
                         label: str) -> list[np.ndarray]:
    """The events of each packet of the event stream between ``start`` and ``end``, in file
    order; other streams' packets are skipped by their size."""
    chunks = []
    position = start
    while position < end:
        if position + 8 > end:
            raise TmktError(f"{label}: a packet header at byte {position} is cut short: the "
                            f"file is truncated")
        packet_stream = _le_int(data, position, 4, label, "packet header", signed=True)
        size = _le_int(data, position + 4, 4, label, "packet header", signed=True)
        body = position + 8
        if size < 0 or body + size > end:
            raise TmktError(f"{label}: the packet at byte {position} claims {size} bytes but "
                            f"{end - body} are left: the file is truncated or damaged")
        if packet_stream == stream_id:
            packet = _aedat4_decompress(data[body:body + size], compression,
                                        f"{label} (packet at byte {position})")
            chunks.append(_aedat4_event_packet(packet, label, position))
        position = body + size
    return chunks


def _le_int(data, position: int, width: int, label: str, what: str, *,
            signed: bool = False) -> int:
    if position < 0 or position + width > len(data):
        raise TmktError(f"{label}: damaged {what} (byte {position} is outside its "
                        f"{len(data)} bytes)")
    return int.from_bytes(data[position:position + width], "little", signed=signed)


class _Flatbuffer:
    """Bounds-checked reads of one flatbuffer whose root offset sits at ``base``."""

    def __init__(self, data: bytes, base: int, label: str, what: str):
        self.data, self.base, self.label, self.what = data, base, label, what

    def _int(self, position: int, width: int, signed: bool = False) -> int:
        return _le_int(self.data, position, width, self.label, self.what, signed=signed)

    def root(self) -> int:
        return self.base + self._int(self.base, 4)

    def field(self, table: int, index: int) -> int | None:
        """Position of field ``index`` of the table at ``table``, None when absent."""
        vtable = table - self._int(table, 4, signed=True)
        vtable_size = self._int(vtable, 2)
        slot = 4 + 2 * index
        if slot + 2 > vtable_size:
            return None
        offset = self._int(vtable + slot, 2)
        return table + offset if offset else None

    def scalar(self, table: int, index: int, width: int, default: int) -> int:
        at = self.field(table, index)
        return default if at is None else self._int(at, width, signed=True)

    def target(self, table: int, index: int) -> int | None:
        """Where an offset field (vector, string) points, None when absent."""
        at = self.field(table, index)
        return None if at is None else at + self._int(at, 4)

    def string(self, table: int, index: int) -> str | None:
        at = self.target(table, index)
        if at is None:
            return None
        length = self._int(at, 4)
        if at + 4 + length > len(self.data):
            raise TmktError(f"{self.label}: damaged {self.what} (a string runs past its end)")
        try:
            return self.data[at + 4:at + 4 + length].decode("utf-8")
        except UnicodeDecodeError:
            raise TmktError(f"{self.label}: damaged {self.what} (a string is not UTF-8)"
                            ) from None


def _aedat4_event_stream(description: str, label: str
                         ) -> tuple[int, tuple[int, int] | None]:
    """(stream id, sensor size or None) of the event stream named in the XML description."""
    from xml.etree import ElementTree

    try:
        root = ElementTree.fromstring(description)
    except ElementTree.ParseError as e:
        raise TmktError(f"{label}: damaged AEDAT 4.0 header (the stream description is not "
                        f"XML: {e})") from None
    streams = []
    for node in root.iter("node"):
        attributes = {a.get("key"): (a.text or "").strip() for a in node.findall("attr")}
        if attributes.get("typeIdentifier") != "EVTS":
            continue
        try:
            stream_id = int(node.get("name", ""))
        except ValueError:
            raise TmktError(f"{label}: an event stream in the AEDAT 4.0 header has no numeric "
                            f"id ({node.get('name')!r})") from None
        size = None
        for info in node.findall("node"):
            if info.get("name") == "info":
                values = {a.get("key"): (a.text or "").strip() for a in info.findall("attr")}
                if values.get("sizeX", "").isdigit() and values.get("sizeY", "").isdigit():
                    size = (int(values["sizeY"]), int(values["sizeX"]))
        streams.append((attributes.get("originalOutputName") != "events", stream_id, size))
    if not streams:
        raise TmktError(f"{label}: the AEDAT 4.0 file has no event (EVTS) stream")
    _, stream_id, size = min(streams, key=lambda s: (s[0], s[1]))
    return stream_id, size


def _aedat4_event_packet(packet: bytes, label: str, where: int) -> np.ndarray:
    """The events of one decompressed, size-prefixed EventPacket flatbuffer."""
    what = f"event packet at byte {where}"
    if len(packet) < 12 or packet[8:12] != _AEDAT4_EVENTS_ID:
        raise TmktError(f"{label}: damaged {what} (no 'EVTS' flatbuffer identifier)")
    if _le_int(packet, 0, 4, label, what) + 4 > len(packet):
        raise TmktError(f"{label}: damaged {what} (its size prefix exceeds the packet)")
    flat = _Flatbuffer(packet, 4, label, what)
    vector = flat.target(flat.root(), 0)
    if vector is None:
        return np.zeros(0, AEDAT4_EVENT_LAYOUT)
    count = flat._int(vector, 4)
    start = vector + 4
    if start + count * AEDAT4_EVENT_LAYOUT.itemsize > len(packet):
        raise TmktError(f"{label}: damaged {what} (it claims {count} events, more than its "
                        f"{len(packet)} bytes hold)")
    return np.frombuffer(packet, AEDAT4_EVENT_LAYOUT, count=count, offset=start)


def _aedat4_decompress(body, compression: str, label: str) -> bytes:
    if compression == "none":
        return bytes(body)
    if compression in ("lz4", "lz4_high"):
        return lz4_frame_decompress(body, name=label)
    try:
        import zstandard
    except ImportError:
        raise TmktError(f"{label}: the packets are ZSTD-compressed, which tmkt reads with the "
                        f"'zstandard' package, a dependency missing from this environment "
                        f"(pip install zstandard)") from None
    try:
        return zstandard.ZstdDecompressor().decompressobj().decompress(bytes(body))
    except Exception as e:  # zstandard.ZstdError, and anything a damaged frame provokes
        raise TmktError(f"{label}: damaged ZSTD data ({first_line(e)})") from None


def lz4_frame_decompress(data, *, name: str | None = None) -> bytes:
    """Decode LZ4 frames with the ``lz4`` package (one frame per AEDAT 4.0 packet as DV writes
    them; further frames are decoded too and skippable frames skipped)."""
    import lz4.frame

    label = name or "<bytes>"
    data = bytes(data)
    out, position = [], 0
    while position < len(data):
        try:
            chunk, used = lz4.frame.decompress(data[position:], return_bytes_read=True)
        except Exception as e:  # lz4 raises RuntimeError on damaged or truncated frames
            raise TmktError(f"{label}: damaged LZ4 data ({first_line(e)})") from None
        if used <= 0:
            raise TmktError(f"{label}: damaged LZ4 data (a frame of no bytes at {position})")
        out.append(chunk)
        position += used
    return b"".join(out)

"""Readers (and writers) of the event formats the recorded datasets ship in.

Every reader takes a path or the file's bytes (an archive member read in memory) and returns
``(events, sensor_size)``: a structured array with :data:`EVENT_DTYPE` in file order and the
sensor size as ``(height, width)``. Polarity 1 is an ON event (brightness went up) in every
format. Pure numpy, no per-event Python loop.

A file a user points tmkt at can be damaged; every such problem is a :class:`TmktError` whose
one line names the file. The writers exist so tests and benchmarks can make files in the real
formats; they raise ``ValueError`` for events a format cannot hold (a caller's bug, not a
user's).

Formats:

- ATIS ``.bin`` (N-MNIST, N-Caltech101): 5 bytes per event, see :func:`read_atis_bin`.
- AEDAT 2.0 (the original CIFAR10-DVS release, a DVS128): see :func:`read_aedat2`.
- CEP-DVS ``.mat`` (MATLAB v5 or v7.3/HDF5): fields x, y, ts, p, see :func:`read_cep_mat`.
- DVS-Gesture as tonic stores it: one ``.npy`` per sample, see :func:`read_dvsgesture_npy`.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np

from tmkt_cli.data.sources import EVENT_DTYPE
from tmkt_cli.errors import TmktError

EventSource = str | os.PathLike | bytes | bytearray | memoryview
"""A file path, or the file's whole contents."""

# ATIS .bin ------------------------------------------------------------------------------------
ATIS_BYTES_PER_EVENT = 5
ATIS_OVERFLOW_Y = 240
"""An event with this y is not an event but a time-overflow marker."""
ATIS_OVERFLOW_INCREMENT_US = 2**13
"""What each overflow marker adds to every later timestamp (the N-MNIST reference reader)."""
ATIS_TIME_BITS = 23

# AEDAT 2.0 / DVS128 ---------------------------------------------------------------------------
DVS128_SENSOR_SIZE = (128, 128)
DVS128_SPECIAL_EVENT_BIT = 1 << 15
"""jAER marks external-input (non-pixel) events of a DVS128 with this address bit."""
_AEDAT2_HEADER = (
    b"#!AER-DAT2.0\r\n"
    b"# This is a raw AE data file - do not edit\r\n"
    b"# Data format is int32 address, int32 timestamp (8 bytes total), repeated for each event\r\n"
    b"# Timestamps tick is 1 us\r\n"
)

# DVS-Gesture (tonic's preprocessed npy) --------------------------------------------------------
DVSGESTURE_SENSOR_SIZE = (128, 128)

# CEP-DVS .mat ----------------------------------------------------------------------------------
CEP_FIELDS = ("x", "y", "ts", "p")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------

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


def _is_bytes(source: EventSource) -> bool:
    return isinstance(source, bytes | bytearray | memoryview)


def _label(source: EventSource, name: str | None) -> str:
    if name:
        return name
    return "<bytes>" if _is_bytes(source) else str(source)


def _read_all(source: EventSource, label: str) -> bytes | memoryview:
    if _is_bytes(source):
        return memoryview(source).cast("B")
    try:
        return Path(source).read_bytes()
    except FileNotFoundError:
        raise TmktError(f"{label}: file not found") from None
    except IsADirectoryError:
        raise TmktError(f"{label}: is a folder, expected an event file") from None
    except PermissionError:
        raise TmktError(f"{label}: permission denied") from None


# --------------------------------------------------------------------------------------------
# ATIS .bin (N-MNIST, N-Caltech101)
# --------------------------------------------------------------------------------------------

def read_atis_bin(source: EventSource, *, sensor_size: tuple[int, int] | None = None,
                  name: str | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """Read an ATIS ``.bin`` recording.

    Each event is 5 bytes: x, y, then polarity in bit 7 of byte 2 and a 23-bit time in
    microseconds in the rest of bytes 2-4 (big-endian). An event with y == 240 is a
    time-overflow marker: every later event gets 2**13 µs more per marker seen, and the marker
    itself is dropped. ``sensor_size`` (height, width) is returned as given; without it the
    size is inferred from the largest coordinates (N-Caltech101 recordings differ in size).
    """
    label = _label(source, name)
    raw = np.frombuffer(_read_all(source, label), dtype=np.uint8)
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
    events = make_events(t[keep], records[keep, 0], y[keep], records[keep, 2] >> 7)
    return events, (tuple(sensor_size) if sensor_size else infer_sensor_size(events))


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


# --------------------------------------------------------------------------------------------
# AEDAT 2.0 (original CIFAR10-DVS release, DVS128)
# --------------------------------------------------------------------------------------------

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
    label = _label(source, name)
    data = bytes(_read_all(source, label))
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


# --------------------------------------------------------------------------------------------
# CEP-DVS .mat
# --------------------------------------------------------------------------------------------

def read_cep_mat(source: EventSource, *, name: str | None = None
                 ) -> tuple[np.ndarray, tuple[int, int]]:
    """Read a CEP-DVS ``.mat`` recording: variables x, y, ts (µs), p (-1 OFF, 1 ON).

    MATLAB v5 files go through scipy, v7.3 (HDF5) files through h5py. The sensor size is the
    file's ``height`` and ``width`` variables when it has both, else inferred from the largest
    coordinates (CEP-DVS recordings differ in size).
    """
    label = _label(source, name)
    data = bytes(_read_all(source, label))
    if not data:
        raise TmktError(f"{label}: empty file, expected a CEP-DVS .mat recording")
    is_hdf5 = (data[:10] == b"MATLAB 7.3" or data.startswith(_HDF5_SIGNATURE)
               or data[512:520] == _HDF5_SIGNATURE)
    variables = _read_mat_hdf5(data, label) if is_hdf5 else _read_mat_v5(data, label)
    missing = [f for f in CEP_FIELDS if f not in variables]
    if missing:
        raise TmktError(f"{label}: missing variable(s) {', '.join(missing)}; a CEP-DVS "
                        f"recording has {', '.join(CEP_FIELDS)}")
    columns = {}
    for field in CEP_FIELDS:
        column = np.asarray(variables[field]).ravel()
        if column.size and not np.issubdtype(column.dtype, np.number):
            raise TmktError(f"{label}: variable '{field}' is not numeric ({column.dtype})")
        columns[field] = column
    lengths = {f: c.size for f, c in columns.items()}
    if len(set(lengths.values())) > 1:
        raise TmktError(f"{label}: x, y, ts, p differ in length "
                        f"({', '.join(f'{f}={n}' for f, n in lengths.items())})")
    events = make_events(np.rint(columns["ts"]).astype(np.int64),
                         np.rint(columns["x"]).astype(np.int64),
                         np.rint(columns["y"]).astype(np.int64),
                         columns["p"] > 0)
    if "height" in variables and "width" in variables:
        size = (int(np.asarray(variables["height"]).ravel()[0]),
                int(np.asarray(variables["width"]).ravel()[0]))
        return events, size
    return events, infer_sensor_size(events)


_CEP_OPTIONAL = ("height", "width")


def _read_mat_v5(data: bytes, label: str) -> dict:
    import scipy.io

    try:
        return scipy.io.loadmat(io.BytesIO(data), variable_names=CEP_FIELDS + _CEP_OPTIONAL)
    except NotImplementedError:  # scipy's answer to v7.3 files it was not told about
        return _read_mat_hdf5(data, label)
    except Exception as e:  # scipy raises a zoo of types on damaged files
        raise TmktError(f"{label}: not a readable .mat file ({type(e).__name__}: "
                        f"{_first_line(e)})") from None


def _read_mat_hdf5(data: bytes, label: str) -> dict:
    import h5py

    try:
        with h5py.File(io.BytesIO(data), "r") as f:
            return {k: np.asarray(f[k]) for k in CEP_FIELDS + _CEP_OPTIONAL
                    if k in f and isinstance(f[k], h5py.Dataset)}
    except OSError as e:
        raise TmktError(f"{label}: not a readable MATLAB v7.3 (HDF5) file "
                        f"({_first_line(e)})") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "no detail"


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


# --------------------------------------------------------------------------------------------
# DVS-Gesture, tonic's preprocessed npy
# --------------------------------------------------------------------------------------------

def read_dvsgesture_npy(source: EventSource, *, name: str | None = None
                        ) -> tuple[np.ndarray, tuple[int, int]]:
    """Read one DVS-Gesture sample as tonic stores it: an ``[N, 4]`` array with columns x, y,
    p, t, where t is in milliseconds (converted to µs here, as tonic does). 128 x 128."""
    label = _label(source, name)
    data = bytes(_read_all(source, label))
    if not data:
        raise TmktError(f"{label}: empty file, expected a DVS-Gesture .npy sample")
    try:
        # allow_pickle=False: an .npy that needs pickle is not a sample and could run code.
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as e:
        raise TmktError(f"{label}: not a numeric .npy array ({_first_line(e)})") from None
    except (OSError, EOFError) as e:
        raise TmktError(f"{label}: not a readable .npy file ({_first_line(e)})") from None
    if not isinstance(array, np.ndarray) or array.ndim != 2 or array.shape[1] != 4:
        shape = getattr(array, "shape", "?")
        raise TmktError(f"{label}: expected an [N, 4] array (x, y, p, t in ms), got shape "
                        f"{shape}")
    if not np.issubdtype(array.dtype, np.number):
        raise TmktError(f"{label}: expected numbers, got dtype {array.dtype}")
    events = make_events(np.rint(array[:, 3].astype(np.float64) * 1000).astype(np.int64),
                         array[:, 0], array[:, 1], array[:, 2] != 0)
    return events, DVSGESTURE_SENSOR_SIZE


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

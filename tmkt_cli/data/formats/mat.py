"""CEP-DVS ``.mat`` recordings (MATLAB v5 or v7.3/HDF5): fields x, y, ts, p, see
:func:`read_cep_mat`."""

from __future__ import annotations

import io

import numpy as np

from tmkt_cli.data.formats.common import (
    EventSource,
    infer_sensor_size,
    make_events,
    read_source,
    source_label,
)
from tmkt_cli.errors import TmktError, first_line

CEP_FIELDS = ("x", "y", "ts", "p")
_CEP_OPTIONAL = ("height", "width")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def read_cep_mat(source: EventSource, *, name: str | None = None
                 ) -> tuple[np.ndarray, tuple[int, int]]:
    """Read a CEP-DVS ``.mat`` recording: variables x, y, ts (µs), p (-1 OFF, 1 ON).

    MATLAB v5 files go through scipy, v7.3 (HDF5) files through h5py. The sensor size is the
    file's ``height`` and ``width`` variables when it has both, else inferred from the largest
    coordinates (CEP-DVS recordings differ in size).
    """
    label = source_label(source, name)
    data = bytes(read_source(source, label))
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


def _read_mat_v5(data: bytes, label: str) -> dict:
    import scipy.io

    try:
        return scipy.io.loadmat(io.BytesIO(data), variable_names=CEP_FIELDS + _CEP_OPTIONAL)
    except NotImplementedError:  # scipy's answer to v7.3 files it was not told about
        return _read_mat_hdf5(data, label)
    except Exception as e:  # scipy raises a zoo of types on damaged files
        raise TmktError(f"{label}: not a readable .mat file ({type(e).__name__}: "
                        f"{first_line(e)})") from None


def _read_mat_hdf5(data: bytes, label: str) -> dict:
    import h5py

    try:
        with h5py.File(io.BytesIO(data), "r") as f:
            return {k: np.asarray(f[k]) for k in CEP_FIELDS + _CEP_OPTIONAL
                    if k in f and isinstance(f[k], h5py.Dataset)}
    except OSError as e:
        raise TmktError(f"{label}: not a readable MATLAB v7.3 (HDF5) file "
                        f"({first_line(e)})") from None

"""DVS-Gesture as tonic stores it: one ``.npy`` per sample, see :func:`read_dvsgesture_npy`."""

from __future__ import annotations

import io

import numpy as np

from tmkt_cli.data import validate
from tmkt_cli.data.formats.common import (
    EventSource,
    make_events,
    read_source,
    source_label,
)
from tmkt_cli.errors import TmktError, first_line

DVSGESTURE_SENSOR_SIZE = (128, 128)


def read_dvsgesture_npy(source: EventSource, *, name: str | None = None
                        ) -> tuple[np.ndarray, tuple[int, int]]:
    """Read one DVS-Gesture sample as tonic stores it: an ``[N, 4]`` array with columns x, y,
    p, t, where t is in milliseconds (converted to µs here, as tonic does). 128 x 128."""
    label = source_label(source, name)
    data = bytes(read_source(source, label))
    if not data:
        raise TmktError(f"{label}: empty file, expected a DVS-Gesture .npy sample")
    try:
        # allow_pickle=False: an .npy that needs pickle is not a sample and could run code.
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as e:
        raise TmktError(f"{label}: not a numeric .npy array ({first_line(e)})") from None
    except (OSError, EOFError) as e:
        raise TmktError(f"{label}: not a readable .npy file ({first_line(e)})") from None
    if not isinstance(array, np.ndarray) or array.ndim != 2 or array.shape[1] != 4:
        shape = getattr(array, "shape", "?")
        raise TmktError(f"{label}: expected an [N, 4] array (x, y, p, t in ms), got shape "
                        f"{shape}")
    if not np.issubdtype(array.dtype, np.number):
        raise TmktError(f"{label}: expected numbers, got dtype {array.dtype}")
    validate.check_has_events(array.shape[0], 0, label)
    validate.check_finite_times(array[:, 3].astype(np.float64), label)
    validate.check_time_span(array[:, 3].astype(np.float64) * 1000, label)
    events = make_events(np.rint(array[:, 3].astype(np.float64) * 1000).astype(np.int64),
                         array[:, 0], array[:, 1], array[:, 2] != 0)
    return events, DVSGESTURE_SENSOR_SIZE

"""One raw recording read on its own, outside its dataset: what ``tmkt predict`` reads.

A prepared dataset records the dataset it came from (``prepare.dataset``); this module says
which file format that dataset's recordings are in and which sensor size its source declares
for them, so a model card can carry it and a recording given to ``tmkt predict`` is read as
``tmkt prepare`` read the dataset's own (the same reader, the same declared size). Datasets
without one file per recording (the emulated ones, N-Omniglot's long recordings cut per
character) have no entry: their models take frames, not files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tmkt_cli.data.datasets.nmnist import NMNIST_SENSOR_SIZE
from tmkt_cli.errors import TmktError

FORMATS: dict[str, tuple[tuple[str, ...], str]] = {
    "atis": ((".bin",), "ATIS .bin"),
    "aedat2": ((".aedat",), "AEDAT 2.0"),
    "cep_mat": ((".mat",), "CEP-DVS .mat"),
    "dvsgesture_npy": ((".npy",), "DVS-Gesture .npy"),
}
"""Format name -> (file suffixes, what the format is called in messages)."""

DATASET_READERS: dict[str, dict] = {
    # The format and declared sensor size of each dataset's source module
    # (tmkt_cli/data/datasets/): None lets the reader give the size (its header or the
    # largest coordinates + 1), as the source's loader does.
    "nmnist": {"format": "atis", "sensor_size": list(NMNIST_SENSOR_SIZE)},
    "ncaltech101": {"format": "atis", "sensor_size": None},
    "cifar10dvs": {"format": "aedat2", "sensor_size": None},
    "cepdvs": {"format": "cep_mat", "sensor_size": None},
    "dvsgesture": {"format": "dvsgesture_npy", "sensor_size": None},
}


def reader_of(dataset: str) -> dict | None:
    """The model card's ``reader`` entry for recordings of ``dataset`` (format, suffixes,
    declared sensor size), or None when its recordings are not files tmkt can read alone."""
    entry = DATASET_READERS.get(dataset)
    if entry is None:
        return None
    suffixes, title = FORMATS[entry["format"]]
    return {**entry, "suffixes": list(suffixes), "title": title}


def read_recording(path: Path, reader: dict) -> tuple[np.ndarray, tuple[int, int]]:
    """``(events, sensor size)`` of the file at ``path`` in the reader's format; a missing
    file, another format or a damaged file is one :class:`TmktError` naming the file."""
    from tmkt_cli.data import formats

    if reader.get("format") not in FORMATS:
        raise TmktError(f"the model card names format {reader.get('format')!r}; this tmkt "
                        f"reads {', '.join(FORMATS)}")
    suffixes, title = FORMATS[reader["format"]]
    if not path.exists():
        raise TmktError(f"{path}: file not found")
    if not path.name.lower().endswith(suffixes):
        raise TmktError(f"{path}: not a {title} recording ({'/'.join(suffixes)}), the format "
                        f"this model's dataset was prepared from")
    size = reader.get("sensor_size")
    if reader["format"] == "atis":
        return formats.read_atis_bin(path, sensor_size=tuple(size) if size else None,
                                     name=str(path))
    read = {"aedat2": formats.read_aedat2, "cep_mat": formats.read_cep_mat,
            "dvsgesture_npy": formats.read_dvsgesture_npy}[reader["format"]]
    events, sensor = read(path, name=str(path))
    return events, (tuple(size) if size else sensor)

"""The dataset registry: what ``tmkt prepare NAME`` knows how to read.

A source turns a raw-data location into a :class:`SourceData`: the class list, the train and
test recordings (each a picklable loader, so a process pool can read them), and the paired
images. It reads nothing heavy itself: loading happens in ``prepare``'s workers.

Event arrays everywhere in tmkt use :data:`EVENT_DTYPE`: ``t`` in microseconds (int64),
``x``/``y`` pixel coordinates (int32, x along the width), ``p`` polarity in {0, 1} (int8).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

EVENT_DTYPE = np.dtype([("t", "<i8"), ("x", "<i4"), ("y", "<i4"), ("p", "i1")])


@dataclass(frozen=True)
class Recording:
    """One event recording of a split."""

    source: str
    """Where it came from (path relative to the raw root, or archive member), stored in HDF5."""
    label: int
    load: Callable[[], tuple[np.ndarray, tuple[int, int]]]
    """Picklable; returns (events with EVENT_DTYPE, sensor size (height, width))."""
    image_index: int = -1
    """Index of this recording's own image in the split's image list (instance pairing),
    or -1 when the dataset has none."""


@dataclass(frozen=True)
class ImageItem:
    """One static image of a split."""

    source: str
    label: int
    load: Callable[[], np.ndarray]
    """Picklable; returns uint8 RGB [H, W, 3] (grey images repeated to 3 channels)."""


@dataclass
class SourceData:
    classes: list[str]
    train: list[Recording]
    test: list[Recording]
    train_images: list[ImageItem] = field(default_factory=list)
    test_images: list[ImageItem] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    """Facts recorded in the HDF5 attributes and the manifest (class mapping, citation...)."""


# name -> function(root: Path | None, cfg: PrepareConfig) -> SourceData
SourceFn = Callable[[Path | None, object], SourceData]
_REGISTRY: dict[str, SourceFn] = {}


def register(name: str):
    def deco(fn: SourceFn) -> SourceFn:
        _REGISTRY[name] = fn
        return fn
    return deco


def names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def get(name: str) -> SourceFn:
    from tmkt_cli.errors import TmktError

    _load_builtin()
    if name not in _REGISTRY:
        import difflib
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise TmktError(f"prepare.dataset: unknown dataset {name!r} "
                        f"(known: {', '.join(sorted(_REGISTRY))}){hint}")
    return _REGISTRY[name]


def _load_builtin() -> None:
    # Importing the modules registers their sources.
    import importlib

    for name in ("synthetic", "glyphs", "ncaltech101", "cepdvs", "cifar10dvs", "nmnist",
                 "dvsgesture", "nomniglot"):
        module = f"tmkt_cli.data.datasets.{name}"
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise

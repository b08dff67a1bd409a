"""DVS-Gesture as tonic releases it (no static images).

The layout, class list, split and pairing rules, and the reasons behind them, are in
docs/datasets.md."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from tmkt_cli.data.datasets.recorded import (
    DatasetFacts,
    find_files,
    first_existing,
    layout_error,
    load_dvsgesture_recording,
    natural_key,
    releases_archives,
    require_root,
)
from tmkt_cli.data.sources import Recording, SourceData, register
from tmkt_cli.errors import TmktError

DVSGESTURE = DatasetFacts(
    "dvsgesture", "DVS-Gesture",
    "https://research.ibm.com/interactive/dvsgesture/ (tonic's preprocessed npy release: "
    "tonic.datasets.DVSGesture)",
    "amir2017low",
    "ibmGestureTrain/<user>_<lighting>/<label>.npy and ibmGestureTest/... "
    "(or ibmGestureTrain.tar.gz, ibmGestureTest.tar.gz)")


# --------------------------------------------------------------------------------------------
# DVS-Gesture (tonic's preprocessed release)
# --------------------------------------------------------------------------------------------

DVSGESTURE_CLASSES = (
    "Hand clapping", "Right hand wave", "Left hand wave", "Right arm cw", "Right arm ccw",
    "Left arm cw", "Left arm ccw", "Arm roll", "Air drums", "Air guitar", "Other gestures",
)
"""tonic's class names; a sample's file name is its index in this list."""
DVSGESTURE_SPLIT_CANDIDATES = {
    "train": ("ibmGestureTrain", "ibmGestureTrain.tar.gz", "DVSGesture/ibmGestureTrain",
              "DVSGesture/ibmGestureTrain.tar.gz"),
    "test": ("ibmGestureTest", "ibmGestureTest.tar.gz", "DVSGesture/ibmGestureTest",
             "DVSGesture/ibmGestureTest.tar.gz"),
}


@register("dvsgesture")
@releases_archives
def dvsgesture(root: Path | None, cfg: object = None) -> SourceData:
    """DVS-Gesture as tonic stores it: its own train/test users, no static images."""
    facts = DVSGESTURE
    root = require_root(root, facts)
    splits: dict[str, list[Recording]] = {}
    for split_name, candidates in DVSGESTURE_SPLIT_CANDIDATES.items():
        container = first_existing(root, candidates)
        if container is None:
            raise layout_error(facts, f"no {candidates[0]}/ folder or {candidates[1]} in {root}")
        files = sorted(find_files(container, root, (".npy",)),
                       key=lambda f: (natural_key(f.folder), natural_key(f.name)))
        if not files:
            raise layout_error(facts, f"no <user>_<lighting>/<label>.npy samples in {container}")
        items = []
        for found in files:
            if not found.stem.isdigit() or int(found.stem) >= len(DVSGESTURE_CLASSES):
                raise TmktError(f"{found.ref}: the file name must be a class index 0-"
                                f"{len(DVSGESTURE_CLASSES) - 1} (tonic's layout)")
            items.append(Recording(found.source, int(found.stem),
                                   partial(load_dvsgesture_recording, found.ref)))
        splits[split_name] = items
    return SourceData(
        classes=list(DVSGESTURE_CLASSES), train=splits["train"], test=splits["test"],
        info={
            "dataset": facts.title, "citation": facts.citation, "url": facts.url,
            "split": "the release's own train/test users",
            "static_images": "none: DVS-Gesture has no static partner",
            "sensor_size": "128 x 128",
            "time_resolution": "1 ms (tonic's preprocessing), stored in µs",
        })

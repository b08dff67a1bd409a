"""CIFAR10-DVS (event recordings of CIFAR-10 images), paired with CIFAR-10's images.

The layout, class list, split and pairing rules, and the reasons behind them, are in
docs/datasets.md."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path

from tmkt_cli.data.datasets.recorded import (
    TRAIN_FRACTION,
    DatasetFacts,
    FoundFile,
    find_files,
    first_existing,
    group_by_folder,
    layout_error,
    load_aedat2_recording,
    load_cifar_image,
    prefer_extracted,
    read_cifar_batch,
    releases_archives,
    require_root,
    split_first_fraction,
)
from tmkt_cli.data.sources import ImageItem, Recording, SourceData, register
from tmkt_cli.errors import TmktError

CIFAR10DVS = DatasetFacts(
    "cifar10dvs", "CIFAR10-DVS",
    "https://figshare.com/articles/dataset/CIFAR10-DVS_New/4724671 and CIFAR-10 at "
    "https://www.cs.toronto.edu/~kriz/cifar.html",
    "li2017cifar10",
    "<class>/*.aedat (or <class>.zip) beside cifar-10-batches-py/ (or cifar-10-python.tar.gz)")


# --------------------------------------------------------------------------------------------
# CIFAR10-DVS (+ CIFAR-10 images)
# --------------------------------------------------------------------------------------------

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
"""CIFAR-10's label order (label i of a batch is CIFAR10_CLASSES[i])."""
CIFAR10_IMAGE_CANDIDATES = ("cifar-10-batches-py", "cifar-10-python.tar.gz")
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"


@register("cifar10dvs")
@releases_archives
def cifar10dvs(root: Path | None, cfg: object = None) -> SourceData:
    """CIFAR10-DVS recordings (90/10 per class) with CIFAR-10's own train/test images."""
    facts = CIFAR10DVS
    root = require_root(root, facts)
    recordings = _find_recordings(root, facts)
    classes = sorted(recordings)
    batches = _find_cifar10_batches(root, facts)
    train, test = _split_recordings(recordings, classes)
    return SourceData(
        classes=classes, train=train, test=test,
        train_images=_image_items(batches, CIFAR10_TRAIN_BATCHES, classes),
        test_images=_image_items(batches, (CIFAR10_TEST_BATCH,), classes),
        info={
            "dataset": facts.title, "citation": facts.citation, "url": facts.url,
            "split": "per class, files sorted by name with numbers compared as numbers: first "
                     "round(0.9 n) train, rest test; images: CIFAR-10's own train/test batches",
            "instance_pairing": "unavailable: the release does not say which CIFAR-10 image "
                                "each recording shows",
            "sensor_size": "128 x 128 (DVS128)",
            "address_decoding": "jAER DVS128: x = 127 - bits 1-7, y = 127 - bits 8-14, "
                                "p = 1 - bit 0 (ON = 1)",
        })


def _find_recordings(root: Path, facts: DatasetFacts) -> dict[str, list[FoundFile]]:
    """The .aedat recordings of each CIFAR-10 class folder (or <class>.zip) in the release."""
    class_zips = tuple(f"{c}.zip" for c in CIFAR10_CLASSES)
    recordings = group_by_folder(prefer_extracted(
        find_files(root, root, (".aedat",), descend_into=class_zips)))
    if not recordings:
        raise layout_error(facts, f"no <class>/*.aedat recordings in {root}")
    unknown = sorted(set(recordings) - set(CIFAR10_CLASSES))
    if unknown:
        raise layout_error(facts, f"folder(s) {', '.join(unknown)} in {root} hold .aedat files "
                                  f"but are not CIFAR-10 classes")
    return recordings


def _find_cifar10_batches(root: Path, facts: DatasetFacts) -> dict[str, FoundFile]:
    """The CIFAR-10 python batch files by name; all five train batches and the test batch."""
    images_at = first_existing(root, CIFAR10_IMAGE_CANDIDATES)
    if images_at is None:
        raise layout_error(facts, f"no CIFAR-10 python batches in {root}")
    batches = {f.name: f for f in find_files(images_at, root, CIFAR10_TRAIN_BATCHES
                                             + (CIFAR10_TEST_BATCH,))}
    missing = [b for b in CIFAR10_TRAIN_BATCHES + (CIFAR10_TEST_BATCH,) if b not in batches]
    if missing:
        raise layout_error(facts, f"CIFAR-10 batch file(s) {', '.join(missing)} missing in "
                                  f"{images_at}")
    return batches


def _split_recordings(recordings: dict[str, list[FoundFile]], classes: list[str]
                      ) -> tuple[list[Recording], list[Recording]]:
    """(train, test) recordings: per class, the first TRAIN_FRACTION train, the rest test."""
    train, test = [], []
    for label, name in enumerate(classes):
        first, rest = split_first_fraction(recordings[name], TRAIN_FRACTION)
        train += [Recording(f.source, label, partial(load_aedat2_recording, f.ref))
                  for f in first]
        test += [Recording(f.source, label, partial(load_aedat2_recording, f.ref))
                 for f in rest]
    return train, test


def _image_items(batches: dict[str, FoundFile], batch_names: Sequence[str], classes: list[str]
                 ) -> list[ImageItem]:
    """The images of the given batches whose class has recordings, labelled as in ``classes``."""
    items = []
    for batch_name in batch_names:
        found = batches[batch_name]
        # Labels are read here, in the main process; pixels later, in the workers.
        _, labels = read_cifar_batch(found.ref.read_bytes(), str(found.ref))
        for row, cifar_label in enumerate(labels):
            if not 0 <= cifar_label < len(CIFAR10_CLASSES):
                raise TmktError(f"{found.ref}: label {cifar_label} at row {row} is not a "
                                f"CIFAR-10 class")
            name = CIFAR10_CLASSES[cifar_label]
            if name in classes:
                items.append(ImageItem(f"{found.source}#{row}", classes.index(name),
                                       partial(load_cifar_image, found.ref, row)))
    return items

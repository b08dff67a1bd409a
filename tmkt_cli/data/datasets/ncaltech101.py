"""N-Caltech101 (event recordings of Caltech101 images), paired with the Caltech101 images.

The layout, class list, split and pairing rules, and the reasons behind them, are in
docs/datasets.md."""

from __future__ import annotations

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
    load_atis_recording,
    load_image_file,
    releases_archives,
    require_root,
    split_first_fraction,
)
from tmkt_cli.data.sources import ImageItem, Recording, SourceData, register

NCALTECH101 = DatasetFacts(
    "ncaltech101", "N-Caltech101",
    "https://www.garrickorchard.com/datasets/n-caltech101 and Caltech101 images at "
    "https://data.caltech.edu/records/mzrjq-6wc02",
    "orchard2015converting",
    "Caltech101/<class>/*.bin (or Caltech101.zip or N-Caltech101-archive.zip) beside "
    "101_ObjectCategories/<class>/*.jpg (or 101_ObjectCategories.tar.gz or caltech-101.zip)")


# --------------------------------------------------------------------------------------------
# N-Caltech101 (+ Caltech101 images)
# --------------------------------------------------------------------------------------------

NCALTECH_EVENT_CANDIDATES = ("Caltech101", "Caltech101.zip", "N-Caltech101-archive.zip")
CALTECH_IMAGE_CANDIDATES = ("101_ObjectCategories", "101_ObjectCategories.tar.gz",
                            "caltech-101.zip", "caltech-101/101_ObjectCategories",
                            "caltech-101/101_ObjectCategories.tar.gz",
                            "caltech101/101_ObjectCategories")


@register("ncaltech101")
@releases_archives
def ncaltech101(root: Path | None, cfg: object = None) -> SourceData:
    """N-Caltech101 recordings with Caltech101 images; classes line up by folder name."""
    facts = NCALTECH101
    root = require_root(root, facts)
    events_at, recordings = _find_recordings(root, facts)
    images_at, images = _find_images(root, facts)
    # The recordings define the classes (BACKGROUND_Google kept, Faces absent); a stock
    # Caltech101 folder also has Faces, which has no recordings and is dropped.
    classes = sorted(recordings)
    missing = [c for c in classes if c not in images]
    if missing:
        raise layout_error(facts, f"no Caltech101 images for class(es) {', '.join(missing)} "
                                  f"in {images_at}")
    dropped = sorted(set(images) - set(classes))
    train, test, train_images, test_images = _split_pairs(recordings, images, classes)

    train_positions = _own_image_positions(train, train_images)
    test_positions = _own_image_positions(test, test_images)
    # Pair by instance only when every recording finds its image: a partial pairing would
    # silently mix instance and class pairing.
    paired = -1 not in train_positions + test_positions
    if not paired:
        train_positions, test_positions = [-1] * len(train), [-1] * len(test)

    train_items = _recording_items(train, train_positions)
    test_items = _recording_items(test, test_positions)
    return SourceData(
        classes=classes, train=train_items, test=test_items,
        train_images=_image_items(train_images), test_images=_image_items(test_images),
        info={
            "dataset": facts.title, "citation": facts.citation, "url": facts.url,
            "events_from": events_at.name, "images_from": images_at.name,
            "image_classes_dropped": dropped,
            "class_mapping": "classes are the recording folders (BACKGROUND_Google kept, Faces "
                             "absent, Faces_easy present); Caltech101 image folders are matched "
                             "by name and the others dropped",
            "split": "per class, files sorted by name: first round(0.9 n) train, rest test "
                     "(recordings and images alike)",
            "sensor_size": "per recording: largest coordinate + 1 (origin kept, no shift)",
            "instance_pairing": ("by file name (image_NNNN.bin <-> image_NNNN.jpg)" if paired
                                 else "unavailable: some recordings have no image of the "
                                      "same name in the same split"),
        })


def _find_recordings(root: Path, facts: DatasetFacts
                     ) -> tuple[Path, dict[str, list[FoundFile]]]:
    """(where the recordings are, the .bin recordings of each class folder)."""
    events_at = first_existing(root, NCALTECH_EVENT_CANDIDATES)
    if events_at is None:
        raise layout_error(facts, f"no N-Caltech101 recordings in {root}")
    recordings = group_by_folder(find_files(events_at, root, (".bin",),
                                            descend_into=("Caltech101.zip",)))
    if not recordings:
        raise layout_error(facts, f"no <class>/*.bin recordings in {events_at}")
    return events_at, recordings


def _find_images(root: Path, facts: DatasetFacts) -> tuple[Path, dict[str, list[FoundFile]]]:
    """(where the Caltech101 images are, the .jpg images of each class folder)."""
    images_at = first_existing(root, CALTECH_IMAGE_CANDIDATES)
    if images_at is None:
        raise layout_error(facts, f"no Caltech101 images in {root}")
    images = group_by_folder(find_files(images_at, root, (".jpg", ".jpeg"),
                                        descend_into=("101_ObjectCategories.tar.gz",)))
    return images_at, images


def _split_pairs(recordings: dict[str, list[FoundFile]], images: dict[str, list[FoundFile]],
                 classes: list[str]) -> tuple[list, list, list, list]:
    """(label, file) pairs of the train and test recordings, then of the train and test images:
    per class, the first TRAIN_FRACTION train, the rest test."""
    train, test, train_images, test_images = [], [], [], []
    for label, name in enumerate(classes):
        rec_train, rec_test = split_first_fraction(recordings[name], TRAIN_FRACTION)
        img_train, img_test = split_first_fraction(images[name], TRAIN_FRACTION)
        train += [(label, f) for f in rec_train]
        test += [(label, f) for f in rec_test]
        train_images += [(label, f) for f in img_train]
        test_images += [(label, f) for f in img_test]
    return train, test, train_images, test_images


def _image_items(pairs):
    """Image items of (label, file) pairs, in order."""
    return [ImageItem(f.source, label, partial(load_image_file, f.ref)) for label, f in pairs]


def _own_image_positions(pairs, image_pairs) -> list[int]:
    """Position in ``image_pairs`` of each recording's own image, -1 where there is none."""
    # N-Caltech101 converted each Caltech101 image under the same name
    # (image_0001.jpg -> image_0001.bin), so a recording's own image is found by name.
    position = {(label, f.stem): i for i, (label, f) in enumerate(image_pairs)}
    return [position.get((label, f.stem), -1) for label, f in pairs]


def _recording_items(pairs, positions) -> list[Recording]:
    """Recording items of (label, file) pairs, each pointing at its image position."""
    return [Recording(f.source, label, partial(load_atis_recording, f.ref),
                      image_index=position)
            for (label, f), position in zip(pairs, positions, strict=True)]

"""CEP-DVS (event recordings of CIFAR-100 superclass images), paired with its own images.

The layout, class list, split and pairing rules, and the reasons behind them, are in
docs/datasets.md."""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from functools import partial
from pathlib import Path

from tmkt_cli.data.datasets.recorded import (
    DatasetFacts,
    FoundFile,
    find_files,
    layout_error,
    load_cep_recording,
    load_image_file,
    releases_archives,
    require_root,
)
from tmkt_cli.data.sources import ImageItem, Recording, SourceData, register
from tmkt_cli.errors import TmktError

CEPDVS = DatasetFacts(
    "cepdvs", "CEP-DVS",
    "no public download known to tmkt: the KT authors (Brain-Cog-Lab/Transfer-for-DVS) used it",
    "he2024efficient",
    "pathFile.csv, data/MAT/**/<index>.mat and data/img/<index>.<png|jpg>")


# --------------------------------------------------------------------------------------------
# CEP-DVS
# --------------------------------------------------------------------------------------------

CIFAR100_SUPERCLASSES = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates", "people",
    "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2",
)
"""The 20 CEP-DVS classes in CIFAR-100's coarse-label order (the KT code's order too)."""
CEPDVS_TRAIN_PER_CLASS = 250
CEPDVS_TEST_PER_CLASS = 100
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


@register("cepdvs")
@releases_archives
def cepdvs(root: Path | None, cfg: object = None) -> SourceData:
    """CEP-DVS: first 250 recordings of each class train, next 100 test."""
    return cepdvs_source(root, train_per_class=CEPDVS_TRAIN_PER_CLASS,
                         test_per_class=CEPDVS_TEST_PER_CLASS)


def cepdvs_source(root: Path | None, *, train_per_class: int, test_per_class: int
                  ) -> SourceData:
    """CEP-DVS with the given per-class split sizes (the registered source uses 250/100).

    Dataset index i is row i of pathFile.csv (after its header), recording data/MAT/**/i.mat
    and image data/img/i.<ext>. Each recording points at its own image by that true index.
    """
    facts = CEPDVS
    root = require_root(root, facts)
    csv_path = root / "pathFile.csv"
    if not csv_path.is_file():
        raise layout_error(facts, f"no pathFile.csv in {root}")
    labels_by_index = read_cepdvs_labels(csv_path)
    mat_folder = root / "data" / "MAT"
    image_folder = root / "data" / "img"
    recordings, images = _find_cepdvs_files(root, mat_folder, image_folder, facts)
    by_class = _indices_by_class(recordings, images, labels_by_index, csv_path, image_folder)
    classes = [c for c in CIFAR100_SUPERCLASSES if c in by_class]
    needed = train_per_class + test_per_class
    _check_class_sizes(by_class, classes, mat_folder, train_per_class, test_per_class)

    train, train_images = _split_items(
        classes, {c: by_class[c][:train_per_class] for c in classes}, recordings, images)
    test, test_images = _split_items(
        classes, {c: by_class[c][train_per_class:needed] for c in classes}, recordings, images)
    return SourceData(
        classes=classes, train=train, test=test,
        train_images=train_images, test_images=test_images,
        info={
            "dataset": facts.title, "citation": facts.citation,
            "split": f"per class, by dataset index: first {train_per_class} train, next "
                     f"{test_per_class} test, the rest unused",
            "instance_pairing": "by true dataset index (recording i <-> data/img/i)",
            "sensor_size": "per recording: the file's height/width, else largest coordinate + 1",
            "unused_recordings": sum(len(v) - needed for v in by_class.values()),
        })


def _find_cepdvs_files(root: Path, mat_folder: Path, image_folder: Path, facts: DatasetFacts
                       ) -> tuple[dict[int, FoundFile], dict[int, FoundFile]]:
    """(recordings, images) of the release, each by dataset index."""
    for folder in (mat_folder, image_folder):
        if not folder.is_dir():
            raise layout_error(facts, f"no folder {folder}")
    recordings = _files_by_index(find_files(mat_folder, root, (".mat",)), facts)
    images = _files_by_index(find_files(image_folder, root, IMAGE_SUFFIXES), facts)
    if not recordings:
        raise layout_error(facts, f"no <index>.mat recordings under {mat_folder}")
    return recordings, images


def _indices_by_class(recordings: dict[int, FoundFile], images: dict[int, FoundFile],
                      labels_by_index: list[str], csv_path: Path, image_folder: Path
                      ) -> dict[str, list[int]]:
    """The dataset indices of each class's recordings, ascending; each must have a label row
    and an image."""
    by_class: dict[str, list[int]] = defaultdict(list)
    for index in sorted(recordings):
        if index >= len(labels_by_index):
            raise TmktError(f"{recordings[index].ref}: index {index} has no row in {csv_path} "
                            f"({len(labels_by_index)} rows)")
        if index not in images:
            raise TmktError(f"{recordings[index].ref}: no image {image_folder}/{index}.<png|jpg> "
                            f"for this recording (CEP-DVS images are index-aligned)")
        by_class[labels_by_index[index]].append(index)
    return by_class


def _check_class_sizes(by_class: dict[str, list[int]], classes: list[str], mat_folder: Path,
                       train_per_class: int, test_per_class: int) -> None:
    """Fail unless every class has enough recordings for the split."""
    needed = train_per_class + test_per_class
    for name in classes:
        if len(by_class[name]) < needed:
            raise TmktError(f"cepdvs: class {name} has {len(by_class[name])} recordings under "
                            f"{mat_folder}; the split needs {needed} (first {train_per_class} "
                            f"train, next {test_per_class} test)")


def _split_items(classes: list[str], indices_per_class: dict[str, list[int]],
                 recordings: dict[int, FoundFile], images: dict[int, FoundFile]
                 ) -> tuple[list[Recording], list[ImageItem]]:
    """One split's recordings and images, class by class, each recording paired with its own
    image."""
    recording_items, image_items = [], []
    for label, name in enumerate(classes):
        for index in indices_per_class[name]:
            # The split's image list holds each recording's own image at the same
            # position, so image_index is a position in that list (never a dataset index).
            image_items.append(ImageItem(images[index].source, label,
                                         partial(load_image_file, images[index].ref)))
            recording_items.append(Recording(
                recordings[index].source, label,
                partial(load_cep_recording, recordings[index].ref),
                image_index=len(image_items) - 1))
    return recording_items, image_items


def read_cepdvs_labels(csv_path: Path) -> list[str]:
    """The superclass name of each data row of pathFile.csv, in row order.

    The exact columns of pathFile.csv are not documented; the KT code takes the fifth
    whitespace-separated token of a line. Here a row's label is the one CIFAR-100 superclass
    name among its tokens (the fifth token breaks a tie). A first line naming no superclass
    is a header.
    """
    try:
        text = csv_path.read_text(encoding="utf-8-sig", errors="strict")
    except UnicodeDecodeError:
        raise TmktError(f"{csv_path}: not a text file") from None
    lines = [line for line in text.splitlines() if line.strip()]
    known = set(CIFAR100_SUPERCLASSES)
    labels: list[str] = []
    for number, line in enumerate(lines, start=1):
        tokens = [t for row in csv.reader([line]) for cell in row
                  for t in re.split(r"[\s/\\]+", cell) if t]
        found = sorted({t for t in tokens if t in known})
        if not found and number == 1:
            continue  # the header
        if len(found) > 1:
            whitespace_tokens = line.split()
            fifth = whitespace_tokens[4] if len(whitespace_tokens) > 4 else None
            found = [fifth] if fifth in found else found
        if len(found) != 1:
            what = "no CIFAR-100 superclass name" if not found else f"several ({', '.join(found)})"
            raise TmktError(f"{csv_path}: line {number} has {what}; each row must name one of "
                            f"the 20 superclasses (e.g. aquatic_mammals)")
        labels.append(found[0])
    if not labels:
        raise TmktError(f"{csv_path}: no data rows")
    return labels


def _files_by_index(files: list[FoundFile], facts: DatasetFacts) -> dict[int, FoundFile]:
    by_index: dict[int, FoundFile] = {}
    for found in files:
        if not found.stem.isdigit():
            raise layout_error(facts, f"{found.ref}: file name is not a dataset index")
        index = int(found.stem)
        if index in by_index:
            raise TmktError(f"{found.ref}: dataset index {index} appears twice (also "
                            f"{by_index[index].ref})")
        by_index[index] = found
    return by_index

"""N-MNIST (event recordings of MNIST digits), paired with the MNIST images.

The layout, class list, split and pairing rules, and the reasons behind them, are in
docs/datasets.md."""

from __future__ import annotations

import gzip
from functools import partial
from pathlib import Path

import numpy as np

from tmkt_cli.data.archives import (
    FileRef,
)
from tmkt_cli.data.datasets.recorded import (
    DatasetFacts,
    FoundFile,
    find_files,
    first_existing,
    group_by_folder,
    layout_error,
    load_atis_recording,
    load_mnist_image,
    read_idx,
    releases_archives,
    require_root,
)
from tmkt_cli.data.sources import ImageItem, Recording, SourceData, register
from tmkt_cli.errors import TmktError

NMNIST = DatasetFacts(
    "nmnist", "N-MNIST",
    "https://www.garrickorchard.com/datasets/n-mnist and MNIST at "
    "http://yann.lecun.com/exdb/mnist/",
    "orchard2015converting",
    "Train/<digit>/*.bin and Test/<digit>/*.bin (or train.zip, test.zip) beside the MNIST idx "
    "files (train-images-idx3-ubyte[.gz] ...)")


# --------------------------------------------------------------------------------------------
# N-MNIST (+ MNIST images)
# --------------------------------------------------------------------------------------------

NMNIST_SENSOR_SIZE = (34, 34)
NMNIST_SPLIT_CANDIDATES = {
    "train": ("Train", "train.zip", "NMNIST/Train", "NMNIST/train.zip"),
    "test": ("Test", "test.zip", "NMNIST/Test", "NMNIST/test.zip"),
}
MNIST_FOLDER_CANDIDATES = ("", "MNIST/raw", "mnist", "MNIST")
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@register("nmnist")
@releases_archives
def nmnist(root: Path | None, cfg: object = None) -> SourceData:
    """N-MNIST recordings (its own Train/Test) with MNIST images (train / t10k)."""
    facts = NMNIST
    root = require_root(root, facts)
    per_split = {split_name: _recordings_by_digit(root, candidates, facts)
                 for split_name, candidates in NMNIST_SPLIT_CANDIDATES.items()}
    classes = sorted(set(per_split["train"]) | set(per_split["test"]), key=int)

    mnist_folder = next((root / c for c in MNIST_FOLDER_CANDIDATES
                         if _idx_file(root / c, MNIST_FILES["train"][0]) is not None), None)
    if mnist_folder is None:
        raise layout_error(facts, f"no MNIST idx files (train-images-idx3-ubyte[.gz]) in {root}")
    return SourceData(
        classes=classes, train=_recordings(per_split["train"], classes),
        test=_recordings(per_split["test"], classes),
        train_images=_images(MNIST_FILES["train"], mnist_folder, root, classes, facts),
        test_images=_images(MNIST_FILES["test"], mnist_folder, root, classes, facts),
        info={
            "dataset": facts.title, "citation": facts.citation, "url": facts.url,
            "split": "N-MNIST's own Train/Test; images: MNIST train / t10k",
            "instance_pairing": "unavailable: N-MNIST file names are not documented as MNIST "
                                "indices",
            "sensor_size": "34 x 34",
        })


def _recordings_by_digit(root: Path, candidates: tuple[str, ...], facts: DatasetFacts
                         ) -> dict[str, list[FoundFile]]:
    """The .bin recordings of each <digit> folder of one split (its first existing candidate)."""
    container = first_existing(root, candidates)
    if container is None:
        raise layout_error(facts, f"no {candidates[0]}/ folder or {candidates[1]} in {root}")
    groups = group_by_folder(find_files(container, root, (".bin",)))
    bad = sorted(g for g in groups if not (g.isdigit() and len(g) == 1))
    if bad:
        raise layout_error(facts, f"folder(s) {', '.join(bad)} in {container} are not "
                                  f"digits 0-9")
    if not groups:
        raise layout_error(facts, f"no <digit>/*.bin recordings in {container}")
    return groups


def _recordings(groups: dict[str, list[FoundFile]], classes: list[str]) -> list[Recording]:
    """Recording items of one split, digit by digit."""
    return [Recording(f.source, classes.index(digit),
                      partial(load_atis_recording, f.ref, NMNIST_SENSOR_SIZE))
            for digit, files in sorted(groups.items())
            for f in files]


def _images(file_names: tuple[str, str], mnist_folder: Path, root: Path, classes: list[str],
            facts: DatasetFacts) -> list[ImageItem]:
    """Image items of one MNIST split (its images and labels idx files), in file order."""
    image_name, label_name = file_names
    image_path = _idx_file(mnist_folder, image_name)
    label_path = _idx_file(mnist_folder, label_name)
    for name, path in ((image_name, image_path), (label_name, label_path)):
        if path is None:
            raise layout_error(facts, f"MNIST file {name}[.gz] missing in {mnist_folder}")
    labels = read_idx(label_path.read_bytes(), str(label_path))
    image_header = read_idx_shape(image_path)
    if len(image_header) != 3:
        raise TmktError(f"{image_path}: expected images [N, rows, columns], the idx header "
                        f"says {list(image_header)}")
    if labels.ndim != 1 or image_header[0] != labels.shape[0]:
        raise TmktError(f"{label_path}: {labels.shape[0]} labels for {image_header[0]} "
                        f"images in {image_path}")
    source = image_path.relative_to(root).as_posix()
    ref = FileRef(str(image_path))
    return [ImageItem(f"{source}#{i}", classes.index(str(digit)),
                      partial(load_mnist_image, ref, i))
            for i, digit in enumerate(labels.tolist()) if str(digit) in classes]


def _idx_file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_idx_shape(path: Path) -> tuple[int, ...]:
    """The shape an idx file declares, reading only its header (gzip or not)."""
    try:
        with open(path, "rb") as probe:
            compressed = probe.read(2) == b"\x1f\x8b"
        with (gzip.open if compressed else open)(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[:2] != b"\x00\x00" or head[2] != 0x08:
                raise TmktError(f"{path}: not an unsigned-byte idx file (bad magic number)")
            dims = f.read(4 * head[3])
    except (OSError, EOFError) as e:
        raise TmktError(f"{path}: damaged file ({e})") from None
    if len(dims) != 4 * head[3]:
        raise TmktError(f"{path}: truncated idx header")
    return tuple(int(v) for v in np.frombuffer(dims, ">u4"))

"""Event datasets made by tmkt's emulator from still images (see docs/emulator.md).

- ``digits``: scikit-learn's ``load_digits`` (1,797 real 8x8 handwritten digits, 10 classes,
  shipped inside scikit-learn: no download). Per class, the first 80% by index train and the
  rest test.
- ``images``: any folder with one subfolder of images per class (``prepare.root``), decoded with
  PIL. Per class, the first 80% of the files by sorted name train and the rest test.

Each image gives ``prepare.emulator.recordings_per_image`` recordings; recording ``k`` of image
``i`` (``i`` counts images over the whole dataset, classes in sorted order) uses the random
stream ``(emulator.seed, i, k)``. Every recording's ``image_index`` points at its own image in
the split's image list, so instance pairing is exact. Images are stored as RGB (grey digits
repeated to three channels).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from tmkt_cli.config import EmulatorConfig, PrepareConfig
from tmkt_cli.data.sources import ImageItem, Recording, SourceData, register
from tmkt_cli.errors import TmktError

TRAIN_FRACTION = 0.8
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                  ".pgm", ".pbm")


def train_count(n: int, fraction: float = TRAIN_FRACTION) -> int:
    """How many of a class's ``n`` items train: ``round(fraction * n)``, but at least one
    train and one test item whenever the class has two."""
    if n <= 1:
        return n
    return min(max(round(fraction * n), 1), n - 1)


# --------------------------------------------------------------------------------------------
# Picklable loaders (prepare's worker processes call them)
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DigitImage:
    """Image ``index`` of scikit-learn's digits as uint8 RGB (values 0..16 scaled to 0..255)."""

    index: int

    def __call__(self) -> np.ndarray:
        grey = _digit_images()[self.index]
        return np.repeat(grey[:, :, None], 3, axis=2)


@cache
def _digit_images() -> np.ndarray:
    from sklearn.datasets import load_digits

    images = load_digits().images  # float 0..16, [1797, 8, 8]
    return np.round(images * (255.0 / 16.0)).astype(np.uint8)


@dataclass(frozen=True)
class FileImage:
    """An image file decoded with PIL to uint8 RGB."""

    path: str

    def __call__(self) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(self.path) as image:
                return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise TmktError(f"{self.path}: cannot decode the image ({e})") from None


@dataclass(frozen=True)
class EmulatedRecording:
    """Recording ``recording`` of an image, made by the emulator when called."""

    image: Callable[[], np.ndarray]
    image_id: int
    recording: int
    emulator: EmulatorConfig

    def __call__(self) -> tuple[np.ndarray, tuple[int, int]]:
        from tmkt_cli.data.emulator import emulate

        return emulate(self.image(), self.emulator, self.image_id, self.recording)


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------

def check_emulator(cfg: EmulatorConfig) -> None:
    if cfg.image_size > cfg.canvas:
        raise TmktError(f"recipe key 'prepare.emulator.image_size' ({cfg.image_size}) is larger "
                        f"than 'prepare.emulator.canvas' ({cfg.canvas}): the image must fit on "
                        f"the sensor")
    if cfg.sensor_size > cfg.canvas:
        raise TmktError(f"recipe key 'prepare.emulator.sensor_size' ({cfg.sensor_size}) is "
                        f"larger than 'prepare.emulator.canvas' ({cfg.canvas}): the pixel array "
                        f"can only be as fine as the canvas")


def emulated_source(classes: list[str], images: list[tuple[str, int, Callable[[], np.ndarray]]],
                    cfg: PrepareConfig, info: dict,
                    train_fraction: float = TRAIN_FRACTION) -> SourceData:
    """Split ``images`` (source, label, picklable loader; in dataset order) per class, the
    first ``train_fraction`` of each class training, and attach ``recordings_per_image``
    emulated recordings to each."""
    check_emulator(cfg.emulator)
    per_class: dict[int, list[int]] = {}
    for image_id, (_, label, _) in enumerate(images):
        per_class.setdefault(label, []).append(image_id)
    in_train = np.zeros(len(images), dtype=bool)
    for ids in per_class.values():
        in_train[ids[:train_count(len(ids), train_fraction)]] = True

    data = SourceData(classes=classes, train=[], test=[], info=info)
    for image_id, (source, label, load) in enumerate(images):
        split_images, split_recordings = ((data.train_images, data.train) if in_train[image_id]
                                          else (data.test_images, data.test))
        position = len(split_images)
        split_images.append(ImageItem(source=source, label=label, load=load))
        for k in range(cfg.emulator.recordings_per_image):
            split_recordings.append(Recording(
                source=f"{source}#rec{k}", label=label,
                load=EmulatedRecording(load, image_id, k, cfg.emulator), image_index=position))
    return data


def emulation_info(cfg: PrepareConfig) -> dict:
    return {"emulator": dataclasses.asdict(cfg.emulator),
            "split": f"per class, the first {TRAIN_FRACTION:.0%} of the images train",
            "recordings_per_image": cfg.emulator.recordings_per_image}


@register("digits")
def digits(root: Path | None, cfg: PrepareConfig) -> SourceData:
    """scikit-learn's 8x8 handwritten digits, emulated (``root`` is not used)."""
    from sklearn import __version__ as sklearn_version
    from sklearn.datasets import load_digits

    labels = load_digits().target
    classes = [str(c) for c in range(10)]
    images = [(f"digits/{i:04d}", int(label), DigitImage(i)) for i, label in enumerate(labels)]
    info = {"source": "scikit-learn load_digits (UCI optical recognition of handwritten "
                      "digits, 8x8, 1,797 images)",
            "scikit_learn": sklearn_version,
            "class_names": {i: c for i, c in enumerate(classes)},
            **emulation_info(cfg)}
    return emulated_source(classes, images, cfg, info)


@register("images")
def images(root: Path | None, cfg: PrepareConfig) -> SourceData:
    """A folder of class subfolders of images, emulated."""
    if root is None:
        raise TmktError("recipe key 'prepare.root' is empty: the 'images' dataset needs a "
                        "folder with one subfolder of images per class (--root FOLDER)")
    if not root.is_dir():
        raise TmktError(f"{root}: expected a folder with one subfolder of images per class "
                        f"(from recipe key 'prepare.root')")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise TmktError(f"{root}: no class subfolders (from recipe key 'prepare.root')")
    classes, items = [], []
    for label, folder in enumerate(class_dirs):
        files = sorted(p for p in folder.iterdir()
                       if p.is_file() and not p.name.startswith(".")
                       and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise TmktError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in this class "
                            f"folder")
        classes.append(folder.name)
        items += [(str(f.relative_to(root)), label, FileImage(str(f))) for f in files]
    info = {"source": f"image folder {root}",
            "class_names": {i: c for i, c in enumerate(classes)},
            **emulation_info(cfg)}
    return emulated_source(classes, items, cfg, info)

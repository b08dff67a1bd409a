"""torch Datasets over a prepared ``dataset.h5``: event samples with their static partners, and
the images alone (for the ANN teacher).

Imported lazily by the training stages (it imports torch).

**Keys and randomness.** ``dataset[key]`` takes ``(position, sample_seed)`` (what the engine's
:class:`tmkt_cli.data.sampling.KeyedBatchSampler` yields) or a plain ``position`` (then
``sample_seed = position``). Positions run over ``0..len(dataset)-1`` as for any torch Dataset;
with ``indices`` given, position ``i`` reads row ``indices[i]`` of the split, and the returned
``index`` is always that row. Every random draw of a sample (its augmentation, its static
partner, the partner's augmentation) comes from its own stream
``SeedSequence([seed, sample_seed, purpose])``: a pure function of the key, identical in any
worker process and after a resume.

**Pairing.** ``pairing: class`` draws, for every access, a random image of the sample's class
from the *training* images (``/train/images``; ``static_index`` indexes them), whatever split
the event sample comes from, except the rows in ``exclude_images`` (with a validation split,
the held-out recordings' source images: :func:`held_out_images`). ``pairing: instance``
returns the recording's own image from its split's images (``/<split>/images[image_index]``;
``static_index`` is that row). Two reproductions of the KT code draw from the test images too
(:func:`class_partner_pools`, :func:`position_as_index_pools`): ``pairing_one_past`` and
``pairing: position_as_index``. Their ``static_index`` runs over the training images, then
the test images (row ``M + r`` is ``/test/images[r]``, M the number of training images).

**Memory.** Only labels and pairing indices are read at construction. Frames and images are
read per access through an HDF5 handle opened on first use in each process (h5py handles do
not survive a fork), unless ``in_memory``, which reads the needed rows once at construction
(before DataLoader workers fork, so they share those pages).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tmkt_cli.config import DataConfig
from tmkt_cli.data.store import SPLITS, open_dataset, read_row
from tmkt_cli.errors import TmktError

# Separate random streams per purpose, so e.g. turning the static partner on does not change
# the events' augmentation.
_EVENT_AUGMENT, _PARTNER, _STATIC_AUGMENT, _SUBSET = 0xA06E, 0xA1B2, 0xA5A7, 0x5B5E

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _stream(seed: int, sample_seed: int, purpose: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(
        [seed % 2**64, sample_seed % 2**64, purpose]))


def _parse_key(key: Any) -> tuple[int, int]:
    if isinstance(key, tuple | list):
        position, sample_seed = key
        return int(position), int(sample_seed)
    return int(key), int(key)


# --------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------

def validation_split(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(training positions, validation positions) of a split: per class, ``round(fraction *
    n)`` of its n groups (recordings sharing a source image; a group index < 0 is a recording
    of its own) go to validation, at least one when the class has two groups or more, chosen
    by a seeded permutation. The recordings of one image never straddle the two parts."""
    labels, groups = np.asarray(labels), np.asarray(groups).copy()
    alone = groups < 0
    groups[alone] = -1 - np.flatnonzero(alone)  # a unique group for each lone recording
    val = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        ids = np.unique(groups[members])
        n_val = int(round(fraction * ids.size))
        if fraction > 0 and ids.size > 1:
            n_val = min(max(n_val, 1), ids.size - 1)
        rng = np.random.default_rng([seed, 0x7A1, int(c)])
        chosen = rng.permutation(ids)[:n_val]
        val.append(members[np.isin(groups[members], chosen)])
    val_positions = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    train_positions = np.setdiff1d(np.arange(labels.size), val_positions)
    return train_positions.astype(np.int64), val_positions.astype(np.int64)


def held_out_images(image_index: np.ndarray, held_out: np.ndarray) -> np.ndarray:
    """Sorted rows of ``/train/images`` that are the source images of the held-out (validation)
    recordings ``held_out`` (positions into ``image_index``, the recordings' source rows; < 0:
    none). Training must not see them either: a static stream paired by class draws any
    training image of the class, and would otherwise train on the validation recordings' own
    pictures."""
    rows = np.asarray(image_index)[np.asarray(held_out, dtype=np.int64)]
    return np.unique(rows[rows >= 0]).astype(np.int64)


def event_subset(labels: np.ndarray, fraction: float, seed: int,
                 draw: str = "nested") -> np.ndarray:
    """Sorted indices of a stratified subset: ``round(fraction * n_c)`` items of each class
    ``c`` (at least one, at most all), chosen at random from ``seed``.

    Each class draws from its own stream (seed, class), so one class's draw does not depend on
    the others. ``nested``: the first items of one random order of the class, so a smaller
    fraction's subset is part of every larger one at the same seed (a curve across fractions
    then adds recordings instead of redrawing them). ``independent``: a fresh draw per size
    (numpy's ``choice`` without replacement; subsets of two fractions share few recordings).
    """
    if not 0 < fraction <= 1:
        raise TmktError(f"recipe key 'data.event_fraction': expected a value in (0, 1], "
                        f"got {fraction}")
    if draw not in ("nested", "independent"):
        raise TmktError(f"recipe key 'data.subset_draw': expected nested or independent, "
                        f"got {draw!r}")
    labels = np.asarray(labels)
    if fraction == 1:
        return np.arange(labels.size, dtype=np.int64)
    chosen = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        take = min(members.size, max(1, round(fraction * members.size)))
        rng = np.random.default_rng(np.random.SeedSequence([seed % 2**64, _SUBSET, int(c)]))
        chosen.append(rng.permutation(members)[:take] if draw == "nested"
                      else rng.choice(members, size=take, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def class_partner_pools(train_image_labels: np.ndarray, test_image_labels: np.ndarray,
                        classes, pairable: np.ndarray, *, one_past: bool = False
                        ) -> dict[int, np.ndarray]:
    """The partners ``pairing: class`` draws from, per class in ``classes``: the ``pairable``
    rows of ``/train/images`` of that class. With ``one_past``, also the class's first test
    image, as ``M + row`` (M training images): KT's N-Caltech101 draw, ``torch.randint(begin,
    end + 1)`` over its image list, where ``end`` is one past the class's training images
    (main_transfer.py 927-928; begin and end from datasets.py 512-515) and a class's images
    are consecutive, in the order both splits take them (the test images follow the training
    ones)."""
    train_image_labels = np.asarray(train_image_labels)
    test_image_labels = np.asarray(test_image_labels)
    pairable = np.asarray(pairable, dtype=np.int64)
    pools = {}
    for c in classes:
        rows = pairable[train_image_labels[pairable] == c]
        if one_past:
            first_test = np.flatnonzero(test_image_labels == c)[:1]
            rows = np.concatenate([rows, train_image_labels.size + first_test])
        pools[int(c)] = rows.astype(np.int64)
    return pools


def dataset_index_of(source: str) -> int | None:
    """The dataset index an image's file name states (``data/img/123.png`` -> 123), or
    None."""
    stem = source.replace("!", "/").rsplit("/", 1)[-1].split(".", 1)[0]
    return int(stem) if stem.isdigit() else None


def position_as_index_pools(train_image_labels: np.ndarray, train_indices: np.ndarray,
                            test_indices: np.ndarray, classes, pairable: np.ndarray
                            ) -> dict[int, np.ndarray]:
    """The partners of ``pairing: position_as_index`` per class in ``classes``: KT's CEP-DVS
    pairing re-derived in this store's terms. KT lists, per class, the positions of its images
    in the training image list ordered by dataset index (datasets.py 1527-1540:
    ``np.argwhere(targets[train_sample_index] == i)``), draws one (main_transfer.py 936-939)
    and reads it as a dataset index into all images (946-947; the image list is every image in
    dataset-index order, datasets.py 1473, 1521-1525; main_transfer.py 704). The pool of a
    class is the stored images whose dataset index (``train_indices``, ``test_indices``, from
    their file names) is such a position: a training image as its row, a test image as ``M +
    row``. Positions naming an image the store does not hold (CEP-DVS's recordings past the
    split's 350 per class) cannot be drawn; training rows not in ``pairable`` are left out."""
    train_image_labels = np.asarray(train_image_labels)
    train_indices = np.asarray(train_indices, dtype=np.int64)
    test_indices = np.asarray(test_indices, dtype=np.int64)
    m = train_indices.size
    order = np.argsort(train_indices, kind="stable")  # KT's train_sample_index is ascending
    stored = {int(d): row for row, d in enumerate(train_indices)}
    stored.update({int(d): m + row for row, d in enumerate(test_indices)})
    allowed = set(np.asarray(pairable, dtype=np.int64).tolist()) | set(range(
        m, m + test_indices.size))
    pools = {}
    for c in classes:
        positions = np.flatnonzero(train_image_labels[order] == c)
        ids = [stored[int(p)] for p in positions if int(p) in stored]
        pools[int(c)] = np.array([i for i in ids if i in allowed], dtype=np.int64)
    return pools


def rgb_planes(image: np.ndarray) -> np.ndarray:
    """uint8 RGB ``[H, W, 3]`` to ``float32 [3, H, W]`` in [0, 1] (a colour teacher's input)."""
    return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / 255.0


def static_from_image(image: np.ndarray, mode: str) -> np.ndarray:
    """uint8 RGB ``[H, W, 3]`` to the network's static input ``float32 [2, H, W]`` in [0, 1]:
    the HSV V channel (``max(R, G, B)``, KT's choice) or grey (ITU-R 601 luma), repeated to
    the two polarity channels."""
    rgb = image.astype(np.float32) / 255.0
    if mode == "v":
        plane = rgb.max(axis=2)
    elif mode == "grey":
        plane = rgb @ LUMA
    else:
        raise TmktError(f"recipe key 'data.static_input': expected 'v' or 'grey', got {mode!r}")
    return np.repeat(plane[None], 2, axis=0)


def augment_planes(planes: np.ndarray, rng: np.random.Generator, *, crop_padding: int,
                   hflip: bool, rotation: float,
                   rotation_interpolation: str = "bilinear") -> np.ndarray:
    """One random transform applied alike to every plane of ``[..., H, W]`` (all T frames and
    both polarities of a recording): a crop of the zero-padded planes (a shift of up to
    ``crop_padding`` pixels), a horizontal flip with probability 1/2, and a rotation by an
    angle uniform in ``[-rotation, rotation]`` degrees about the centre (counter-clockwise for
    a positive angle, as torchvision's; ``rotation_interpolation`` bilinear or nearest, zeros
    outside).

    The draws happen in a fixed order whether or not a transform is enabled, so enabling one
    does not change the others.
    """
    shift_y, shift_x = rng.integers(-crop_padding, crop_padding + 1, size=2) \
        if crop_padding else (0, 0)
    flip = bool(rng.integers(0, 2)) if hflip else False
    angle = float(rng.uniform(-rotation, rotation)) if rotation else 0.0
    out = planes
    if shift_y or shift_x:
        out = _shift(out, int(shift_y), int(shift_x))
    if flip:
        out = out[..., ::-1]
    if angle:
        out = _rotate(out, angle, rotation_interpolation)
    return np.ascontiguousarray(out, dtype=np.float32)


def _shift(planes: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Content moved by (dy, dx) with zeros coming in: a random crop of the padded planes."""
    height, width = planes.shape[-2:]
    out = np.zeros_like(planes)
    src_y = slice(max(0, -dy), min(height, height - dy))
    dst_y = slice(max(0, dy), min(height, height + dy))
    src_x = slice(max(0, -dx), min(width, width - dx))
    dst_x = slice(max(0, dx), min(width, width + dx))
    out[..., dst_y, dst_x] = planes[..., src_y, src_x]
    return out


def _rotate(planes: np.ndarray, degrees: float, mode: str = "bilinear") -> np.ndarray:
    shape = planes.shape
    height, width = shape[-2:]
    x = torch.from_numpy(np.ascontiguousarray(planes, dtype=np.float32)).reshape(
        1, -1, height, width)
    theta = np.deg2rad(degrees)
    cos, sin = np.cos(theta), np.sin(theta)
    # affine_grid maps output to input coordinates in [-1, 1]; for non-square planes the
    # aspect ratio is folded in so the rotation is a true rotation in pixel space.
    aspect = width / height
    matrix = torch.tensor([[cos, -sin / aspect, 0.0], [sin * aspect, cos, 0.0]],
                          dtype=torch.float32)[None]
    grid = F.affine_grid(matrix, list(x.shape), align_corners=False)
    rotated = F.grid_sample(x, grid, mode=mode, padding_mode="zeros",
                            align_corners=False)
    return rotated.reshape(shape).numpy()


# --------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------

def read_rows(dataset, rows: np.ndarray, path: Path) -> np.ndarray:
    """``dataset[rows]`` in one HDF5 read of just those rows (h5py wants them increasing
    and unique, so they are read sorted and put back in order); when that read fails, row by
    row so the error names the damaged row."""
    rows = np.asarray(rows, dtype=np.int64)
    unique, order = np.unique(rows, return_inverse=True)
    if unique.size == 0:
        return np.zeros((0, *dataset.shape[1:]), dataset.dtype)
    try:  # most rows wanted: one contiguous read beats h5py's point selection
        block = dataset[()][unique] if 2 * unique.size >= dataset.shape[0] else dataset[unique]
    except (OSError, ValueError):
        block = np.stack([read_row(dataset, int(r), path) for r in unique])
    return block[order.reshape(-1)]


def _strings(dataset) -> list[str]:
    return [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in dataset[()]]


class _LazyFile:
    """An h5py handle opened on first use in each process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle = None
        self._pid = None

    def get(self):
        if self._handle is None or self._pid != os.getpid():
            import h5py

            # A handle inherited through fork must not be used (nor closed) here.
            self._handle = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._handle

    def read(self, name: str, row: int) -> np.ndarray:
        try:
            return self.get()[name][row]
        except OSError as e:
            raise TmktError(f"{self.path}: cannot read /{name}[{row}] ({e}); the file may be "
                            f"damaged: prepare it again") from None

    def __getstate__(self) -> dict:
        return {"path": self.path, "_handle": None, "_pid": None}


def _check_split(path: Path, split: str) -> None:
    if split not in SPLITS:
        raise TmktError(f"{path}: no split {split!r} (splits: {', '.join(SPLITS)})")


def _rows(indices, n: int, path: Path, split: str) -> np.ndarray:
    if indices is None:
        return np.arange(n, dtype=np.int64)
    rows = np.asarray(indices, dtype=np.int64).ravel()
    if rows.size and (rows.min() < 0 or rows.max() >= n):
        raise ValueError(f"{path} /{split}: indices outside 0..{n - 1}")  # a caller's bug
    return rows


class EventDataset(torch.utils.data.Dataset):
    """Event samples of one split: ``{"events": float32 [T, 2, H, W], "label": int64,
    "index": row}``, plus ``"static": float32 [2, H, W]`` and ``"static_index"`` with
    ``with_static`` (see the module doc for keys, pairing and randomness)."""

    def __init__(self, path: str | Path, split: str, cfg: DataConfig, *, seed: int,
                 augment: bool, with_static: bool, indices=None,
                 teacher_rgb: bool = False, exclude_images=None) -> None:
        self.path = Path(path)
        _check_split(self.path, split)
        self.split, self.cfg, self.seed = split, cfg, seed
        self.teacher_rgb = teacher_rgb and with_static  # adds "static_rgb" [3, H, W]
        self.augment, self.with_static = augment, with_static
        with open_dataset(self.path) as ds:
            self.path = ds.path
            self.classes = ds.classes
            self.time_steps, self.size = ds.time_steps, ds.size
            split_labels = ds.labels(split)
            self.rows = _rows(indices, split_labels.size, self.path, split)
            self.labels = split_labels[self.rows]
            self.partner_image_index = ds.image_index(split)[self.rows]
            train_image_labels = ds.image_labels("train")
            self._train_images = int(train_image_labels.size)
            # rows ``pairing: class`` may draw: every training image but those held out
            pairable = np.setdiff1d(np.arange(train_image_labels.size),
                                    np.asarray(exclude_images if exclude_images is not None
                                               else [], dtype=np.int64))
            self.class_images = self._partner_pools(ds, train_image_labels, pairable) \
                if with_static else {}
            if with_static:
                self._check_pairing()
            self._frames = self._images = None
            self._image_slot = None
            if cfg.in_memory:
                self._frames = read_rows(ds.split(split)["frames"], self.rows, self.path)
                if with_static:
                    used = np.unique(np.concatenate(
                        [*self.class_images.values(), np.zeros(0, np.int64)])
                        if cfg.pairing != "instance" else self.partner_image_index)
                    self._images = self._read_partners(ds, used)
                    self._image_slot = np.full(
                        train_image_labels.size + ds.image_labels("test").size, -1, np.int64)
                    self._image_slot[used] = np.arange(used.size)
        self._file = _LazyFile(self.path)

    def _partner_pools(self, ds, train_image_labels: np.ndarray, pairable: np.ndarray
                       ) -> dict[int, np.ndarray]:
        """Per class of this split's samples, the partner ids a drawing pairing draws from
        (none for ``instance``)."""
        cfg, classes = self.cfg, np.unique(self.labels)
        if cfg.pairing_one_past and cfg.pairing != "class":
            raise TmktError(f"recipe key 'data.pairing_one_past' applies to pairing: class, "
                            f"not {cfg.pairing}")
        if cfg.pairing == "class":
            return class_partner_pools(train_image_labels, ds.image_labels("test"), classes,
                                       pairable, one_past=cfg.pairing_one_past)
        if cfg.pairing == "position_as_index":
            sources = {s: _strings(ds.split(s)["image_sources"]) for s in SPLITS}
            indices = {s: [dataset_index_of(x) for x in sources[s]] for s in SPLITS}
            unnamed = [x for s in SPLITS
                       for x, d in zip(sources[s], indices[s], strict=True) if d is None]
            if unnamed:
                raise TmktError(f"{self.path}: data.pairing = position_as_index reads each "
                                f"image's dataset index from its file name (CEP-DVS's "
                                f"data/img/<index>.png), and {unnamed[0]} states none")
            return position_as_index_pools(train_image_labels, indices["train"],
                                           indices["test"], classes, pairable)
        return {}

    def _partner_location(self, image_id: int) -> tuple[str, int]:
        """(split, row) of a partner id (module doc, "Pairing")."""
        if self.cfg.pairing == "instance":
            return self.split, image_id
        if image_id < self._train_images:
            return "train", image_id
        return "test", image_id - self._train_images

    def _read_partners(self, ds, ids: np.ndarray) -> np.ndarray:
        """The images of sorted unique partner ids, in that order."""
        located = [self._partner_location(int(i)) for i in ids]
        blocks = [read_rows(ds.split(split)["images"],
                            np.array([r for s, r in located if s == split], np.int64), self.path)
                  for split in SPLITS]
        order = np.argsort([SPLITS.index(s) for s, _ in located], kind="stable")
        out = np.empty((len(ids), *blocks[0].shape[1:]), blocks[0].dtype)
        out[order] = np.concatenate(blocks)
        return out

    def _check_pairing(self) -> None:
        if self.cfg.pairing != "instance":
            missing = sorted(c for c, pool in self.class_images.items() if pool.size == 0)
            if missing:
                names = ", ".join(self.classes[c] for c in missing[:5])
                what = "training image" if self.cfg.pairing == "class" else "image"
                raise TmktError(f"{self.path}: data.pairing = {self.cfg.pairing}, but "
                                f"class(es) {names} have no {what} to pair with")
        elif (self.partner_image_index < 0).any():
            raise TmktError(f"{self.path}: data.pairing = instance, but this dataset has no "
                            f"image of its own for {int((self.partner_image_index < 0).sum())} "
                            f"{self.split} recordings; use pairing: class")

    def __len__(self) -> int:
        return int(self.rows.size)

    def __getitem__(self, key) -> dict[str, Any]:
        position, sample_seed = _parse_key(key)
        row = int(self.rows[position])
        label = int(self.labels[position])
        frames = self._frames[position] if self._frames is not None \
            else self._file.read(f"{self.split}/frames", row)
        if self.augment:
            frames = self._augment(frames, _stream(self.seed, sample_seed, _EVENT_AUGMENT))
        out = {"events": torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32)),
               "label": torch.tensor(label, dtype=torch.int64), "index": row}
        if self.with_static:
            if self.cfg.pairing != "instance":
                candidates = self.class_images[label]
                rng = _stream(self.seed, sample_seed, _PARTNER)
                image_row = int(candidates[rng.integers(candidates.size)])
            else:
                image_row = int(self.partner_image_index[position])
            if self._images is not None:
                image = self._images[self._image_slot[image_row]]
            else:
                image_split, row = self._partner_location(image_row)
                image = self._file.read(f"{image_split}/images", row)
            static = static_from_image(image, self.cfg.static_input)
            if self.augment and self.cfg.augment_static:
                static = self._augment(static, _stream(self.seed, sample_seed, _STATIC_AUGMENT))
            out["static"] = torch.from_numpy(np.ascontiguousarray(static))
            out["static_index"] = image_row
            if self.teacher_rgb:  # the same image in colour, with the same augmentation draw
                colour = rgb_planes(image)
                if self.augment and self.cfg.augment_static:
                    colour = self._augment(colour,
                                           _stream(self.seed, sample_seed, _STATIC_AUGMENT))
                out["static_rgb"] = torch.from_numpy(np.ascontiguousarray(colour))
        return out

    def _augment(self, planes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return augment_planes(planes, rng, crop_padding=self.cfg.crop_padding,
                              hflip=self.cfg.hflip, rotation=self.cfg.rotation,
                              rotation_interpolation=self.cfg.rotation_interpolation)


class ImageDataset(torch.utils.data.Dataset):
    """The static images of one split, for the ANN teacher: ``{"image": float32 [2, H, W],
    "label": int64, "index": row}`` (converted per ``cfg.static_input``; augmented like the
    event samples when ``augment``)."""

    def __init__(self, path: str | Path, split: str, cfg: DataConfig, *, seed: int = 0,
                 augment: bool = False, indices=None, rgb: bool = False) -> None:
        self.path = Path(path)
        _check_split(self.path, split)
        self.split, self.cfg, self.seed, self.augment = split, cfg, seed, augment
        self.rgb = rgb  # colour [3, H, W] instead of the static input's 2 planes
        with open_dataset(self.path) as ds:
            self.path = ds.path
            self.classes = ds.classes
            self.size = ds.size
            split_labels = ds.image_labels(split)
            self.rows = _rows(indices, split_labels.size, self.path, split)
            self.labels = split_labels[self.rows]
            self._images = read_rows(ds.split(split)["images"], self.rows, self.path) \
                if cfg.in_memory else None
        self._file = _LazyFile(self.path)

    def __len__(self) -> int:
        return int(self.rows.size)

    def __getitem__(self, key) -> dict[str, Any]:
        position, sample_seed = _parse_key(key)
        row = int(self.rows[position])
        image = self._images[position] if self._images is not None \
            else self._file.read(f"{self.split}/images", row)
        planes = rgb_planes(image) if self.rgb else static_from_image(image,
                                                                       self.cfg.static_input)
        if self.augment:
            planes = augment_planes(planes, _stream(self.seed, sample_seed, _STATIC_AUGMENT),
                                    crop_padding=self.cfg.crop_padding, hflip=self.cfg.hflip,
                                    rotation=self.cfg.rotation,
                                    rotation_interpolation=self.cfg.rotation_interpolation)
        return {"image": torch.from_numpy(np.ascontiguousarray(planes)),
                "label": torch.tensor(int(self.labels[position]), dtype=torch.int64),
                "index": row}

"""Recorded event datasets for ``tmkt prepare``: their layouts, class lists, splits, pairing.

Each source below turns ``prepare.root`` (a folder holding the dataset's files, extracted or
as the original archives) into a :class:`SourceData`. Building it only lists files and reads
labels; the recordings and images are read later by picklable loaders (``functools.partial``
of the module-level ``load_*`` functions), each in a ``prepare`` worker process.

docs/datasets.md has, per dataset, the expected layout, where it is published, the citation,
and the reasons behind the class list, split and pairing rules implemented here.

Orders are deterministic: folders and files are sorted by name with numbers compared as
numbers ('cifar10_cat_2' before 'cifar10_cat_10'), so a split never depends on the order a
file system lists entries in.
"""

from __future__ import annotations

import csv
import functools
import gzip
import io
import pickle
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath

import numpy as np

from tmkt_cli.data.archives import (
    MEMBER_SEPARATOR,
    FileRef,
    archive_stem,
    clear_cache,
    is_archive_name,
    list_members,
)
from tmkt_cli.data.formats import (
    read_aedat2,
    read_atis_bin,
    read_cep_mat,
    read_dvsgesture_npy,
)
from tmkt_cli.data.sources import ImageItem, Recording, SourceData, register
from tmkt_cli.errors import TmktError

# --------------------------------------------------------------------------------------------
# What each dataset is: where it is published, how to cite it, what the root must hold
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetFacts:
    name: str
    """Registry name (prepare.dataset)."""
    title: str
    url: str
    """Where the event data (and its static partner) is published."""
    citation: str
    """BibTeX key of the dataset paper (full entries in docs/datasets.md)."""
    layout: str
    """The expected contents of prepare.root, in one line."""


NCALTECH101 = DatasetFacts(
    "ncaltech101", "N-Caltech101",
    "https://www.garrickorchard.com/datasets/n-caltech101 and Caltech101 images at "
    "https://data.caltech.edu/records/mzrjq-6wc02",
    "orchard2015converting",
    "Caltech101/<class>/*.bin (or Caltech101.zip or N-Caltech101-archive.zip) beside "
    "101_ObjectCategories/<class>/*.jpg (or 101_ObjectCategories.tar.gz or caltech-101.zip)")
CEPDVS = DatasetFacts(
    "cepdvs", "CEP-DVS",
    "no public download known to tmkt: the KT authors (Brain-Cog-Lab/Transfer-for-DVS) used it",
    "he2024efficient",
    "pathFile.csv, data/MAT/**/<index>.mat and data/img/<index>.<png|jpg>")
CIFAR10DVS = DatasetFacts(
    "cifar10dvs", "CIFAR10-DVS",
    "https://figshare.com/articles/dataset/CIFAR10-DVS_New/4724671 and CIFAR-10 at "
    "https://www.cs.toronto.edu/~kriz/cifar.html",
    "li2017cifar10",
    "<class>/*.aedat (or <class>.zip) beside cifar-10-batches-py/ (or cifar-10-python.tar.gz)")
NMNIST = DatasetFacts(
    "nmnist", "N-MNIST",
    "https://www.garrickorchard.com/datasets/n-mnist and MNIST at "
    "http://yann.lecun.com/exdb/mnist/",
    "orchard2015converting",
    "Train/<digit>/*.bin and Test/<digit>/*.bin (or train.zip, test.zip) beside the MNIST idx "
    "files (train-images-idx3-ubyte[.gz] ...)")
DVSGESTURE = DatasetFacts(
    "dvsgesture", "DVS-Gesture",
    "https://research.ibm.com/interactive/dvsgesture/ (tonic's preprocessed npy release: "
    "tonic.datasets.DVSGesture)",
    "amir2017low",
    "ibmGestureTrain/<user>_<lighting>/<label>.npy and ibmGestureTest/... "
    "(or ibmGestureTrain.tar.gz, ibmGestureTest.tar.gz)")


def layout_error(facts: DatasetFacts, problem: str) -> TmktError:
    """The one-line error for a root that does not hold what the dataset needs."""
    return TmktError(f"{facts.name}: {problem} (expected {facts.layout}; data: {facts.url}; "
                     f"cite {facts.citation}; see docs/datasets.md)")


def require_root(root: Path | None, facts: DatasetFacts) -> Path:
    """``prepare.root`` must be an existing folder."""
    if root is None or not str(root):
        raise layout_error(facts, "prepare.root is empty: it must name the folder holding "
                                  "the raw data")
    root = Path(root)
    if not root.exists():
        raise layout_error(facts, f"prepare.root {root} does not exist")
    if not root.is_dir():
        raise layout_error(facts, f"prepare.root {root} is a file; point it at the folder "
                                  f"that holds it")
    # Absolute, so the loaders still find their files if a worker runs elsewhere.
    return root.absolute()


# --------------------------------------------------------------------------------------------
# Finding files in folders and archives
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FoundFile:
    """A data file found under the root, on disk or inside an archive."""

    source: str
    """Path relative to the root; '!' steps into an archive ('Caltech101.zip!Caltech101/...')."""
    folder: str
    """Name of the folder holding the file; the archive's stem at an archive's top level."""
    ref: FileRef

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def stem(self) -> str:
        return self.name.split(".", 1)[0]


def natural_key(text: str) -> list:
    """Sort key comparing digit runs as numbers: 'img_2' < 'img_10'."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _is_junk(name: str) -> bool:
    # macOS zips carry '__MACOSX/' copies and '._name' resource forks of every file.
    return "__MACOSX" in name.split("/") or PurePosixPath(name).name.startswith("._")


def find_files(container: Path, root: Path, suffixes: Sequence[str],
               descend_into: Iterable[str] = ()) -> list[FoundFile]:
    """Every file under ``container`` (a folder or an archive) whose name ends with one of
    ``suffixes``. Archives met on the way are entered only when their file name is in
    ``descend_into`` (so an annotation archive beside the data is never mistaken for it)."""
    suffixes = tuple(s.lower() for s in suffixes)
    descend = frozenset(descend_into)
    found: list[FoundFile] = []
    if container.is_dir():
        for path in sorted(container.rglob("*")):
            if not path.is_file() or _is_junk(path.relative_to(container).as_posix()):
                continue
            source = path.relative_to(root).as_posix()
            if path.name.lower().endswith(suffixes):
                found.append(FoundFile(source, path.parent.name, FileRef(str(path))))
            elif path.name in descend and is_archive_name(path.name):
                found += _find_in_archive(FileRef(str(path)), source, suffixes, descend)
    elif container.is_file():
        source = container.relative_to(root).as_posix()
        found += _find_in_archive(FileRef(str(container)), source, suffixes, descend)
    return found


def _find_in_archive(archive: FileRef, source: str, suffixes: tuple[str, ...],
                     descend: frozenset[str]) -> list[FoundFile]:
    found: list[FoundFile] = []
    for member in list_members(archive.path, archive.members):
        if _is_junk(member):
            continue
        member_path = PurePosixPath(member)
        member_source = f"{source}{MEMBER_SEPARATOR}{member}"
        if member_path.name.lower().endswith(suffixes):
            parent = member_path.parent.name or archive_stem(archive.name)
            found.append(FoundFile(member_source, parent, archive.child(member)))
        elif member_path.name in descend and is_archive_name(member_path.name):
            found += _find_in_archive(archive.child(member), member_source, suffixes, descend)
    return found


def first_existing(root: Path, candidates: Sequence[str]) -> Path | None:
    """The first of ``candidates`` (paths relative to ``root``) that exists."""
    for candidate in candidates:
        path = root / candidate
        if path.exists():
            return path
    return None


def group_by_folder(files: Iterable[FoundFile]) -> dict[str, list[FoundFile]]:
    """Files per folder name, each list sorted by file name (numbers as numbers)."""
    groups: dict[str, list[FoundFile]] = defaultdict(list)
    for found in files:
        groups[found.folder].append(found)
    return {folder: sorted(items, key=lambda f: (natural_key(f.name), f.source))
            for folder, items in groups.items()}


def prefer_extracted(files: Iterable[FoundFile]) -> list[FoundFile]:
    """One file per (folder, name). A root holding a dataset both extracted and as its
    archives lists every file twice; the extracted copy is kept (it reads faster)."""
    chosen: dict[tuple[str, str], FoundFile] = {}
    for found in files:
        key = (found.folder, found.name)
        if key not in chosen or (chosen[key].ref.in_archive and not found.ref.in_archive):
            chosen[key] = found
    return list(chosen.values())


def releases_archives(source_fn):
    """Close the archives a source opened to list them: the workers reopen what they read,
    and a decompressed .tar.gz should not stay in the main process's memory."""
    @functools.wraps(source_fn)
    def wrapper(*args, **kwargs):
        try:
            return source_fn(*args, **kwargs)
        finally:
            clear_cache()
    return wrapper


def split_first_fraction(items: Sequence, fraction: float) -> tuple[list, list]:
    """The first ``round(fraction * n)`` items and the rest. Python's round (halves to even)
    is what the KT code used for N-Caltech101, so the counts match its split exactly."""
    n_first = round(fraction * len(items))
    return list(items[:n_first]), list(items[n_first:])


# --------------------------------------------------------------------------------------------
# Loaders (module level so functools.partial of them pickles into worker processes)
# --------------------------------------------------------------------------------------------


def _read_args(ref: FileRef) -> tuple[object, str]:
    """What to hand a reader: a plain file's path (read directly), or a member's bytes."""
    if ref.in_archive:
        return ref.read_bytes(), str(ref)
    return ref.path, ref.path


def load_atis_recording(ref: FileRef, sensor_size: tuple[int, int] | None = None
                        ) -> tuple[np.ndarray, tuple[int, int]]:
    """An ATIS .bin recording; without ``sensor_size``, sized to its largest coordinates."""
    source, name = _read_args(ref)
    return read_atis_bin(source, sensor_size=sensor_size, name=name)


def load_aedat2_recording(ref: FileRef) -> tuple[np.ndarray, tuple[int, int]]:
    source, name = _read_args(ref)
    return read_aedat2(source, name=name)


def load_cep_recording(ref: FileRef) -> tuple[np.ndarray, tuple[int, int]]:
    source, name = _read_args(ref)
    return read_cep_mat(source, name=name)


def load_dvsgesture_recording(ref: FileRef) -> tuple[np.ndarray, tuple[int, int]]:
    source, name = _read_args(ref)
    return read_dvsgesture_npy(source, name=name)


def load_image_file(ref: FileRef) -> np.ndarray:
    """An image file (JPEG, PNG...) as uint8 RGB [H, W, 3]; grey images become 3 channels."""
    from PIL import Image, UnidentifiedImageError

    data = ref.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise TmktError(f"{ref}: not a readable image ({e})") from None


def load_cifar_image(ref: FileRef, row: int) -> np.ndarray:
    """Row ``row`` of a CIFAR-10 python batch as uint8 RGB [32, 32, 3]."""
    data, _ = _cifar_batch(ref)
    return data[row].reshape(3, 32, 32).transpose(1, 2, 0).copy()


def load_mnist_image(ref: FileRef, index: int) -> np.ndarray:
    """Image ``index`` of an MNIST idx image file as uint8 RGB [28, 28, 3]."""
    grey = _idx_array(ref)[index]
    return np.repeat(grey[:, :, None], 3, axis=2)


# Whole-file caches used by the loaders: a worker decodes each batch or idx file once.
@functools.lru_cache(maxsize=8)
def _cifar_batch(ref: FileRef) -> tuple[np.ndarray, list[int]]:
    return read_cifar_batch(ref.read_bytes(), str(ref))


@functools.lru_cache(maxsize=4)
def _idx_array(ref: FileRef) -> np.ndarray:
    return read_idx(ref.read_bytes(), str(ref))


# --------------------------------------------------------------------------------------------
# Static-image files: CIFAR-10 batches (pickles) and MNIST idx
# --------------------------------------------------------------------------------------------


def _numpy_multiarray():
    # numpy 2 moved numpy.core to numpy._core; pickles name either.
    core = getattr(np, "_core", None)
    return core.multiarray if core is not None else np.core.multiarray


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR-10 batch and nothing else.

    A pickle can call any importable function while loading, so a crafted "batch" could run
    code. A batch only needs to rebuild numpy arrays: every other global is refused.
    """

    def find_class(self, module: str, name: str):
        multiarray = _numpy_multiarray()
        allowed = {
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("numpy.core.multiarray", "_reconstruct"): multiarray._reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): multiarray._reconstruct,
            ("numpy.core.multiarray", "scalar"): multiarray.scalar,
            ("numpy._core.multiarray", "scalar"): multiarray.scalar,
            # Python 3 protocol-2 pickles spell bytes as _codecs.encode(text, 'latin1').
            ("_codecs", "encode"): __import__("codecs").encode,
        }
        if (module, name) not in allowed:
            raise _RefusedGlobal(f"{module}.{name}")
        return allowed[(module, name)]


class _RefusedGlobal(pickle.UnpicklingError):
    pass


def read_cifar_batch(data: bytes, label: str) -> tuple[np.ndarray, list[int]]:
    """A CIFAR-10 python batch: (uint8 [N, 3072] in R, G, B planes, labels)."""
    try:
        batch = _CifarUnpickler(io.BytesIO(data), encoding="bytes").load()
    except _RefusedGlobal as e:
        raise TmktError(f"{label}: refused: the pickle asks to load {e}, which a CIFAR-10 "
                        f"batch never needs (the file may be malicious)") from None
    except Exception as e:  # a damaged pickle fails in many ways
        raise TmktError(f"{label}: not a CIFAR-10 python batch ({type(e).__name__}: {e})"
                        ) from None
    if not isinstance(batch, dict):
        raise TmktError(f"{label}: not a CIFAR-10 python batch (no dictionary inside)")
    # Original batches are Python 2 pickles: their keys come back as bytes.
    entries = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    images, labels = entries.get("data"), entries.get("labels")
    if not isinstance(images, np.ndarray) or labels is None:
        raise TmktError(f"{label}: not a CIFAR-10 python batch (no 'data' array or 'labels')")
    labels = [int(v) for v in labels]
    if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != 3072 \
            or images.shape[0] != len(labels):
        raise TmktError(f"{label}: expected uint8 data [N, 3072] and N labels, got "
                        f"{images.dtype} {list(images.shape)} and {len(labels)} labels")
    return images, labels


def read_idx(data: bytes, label: str) -> np.ndarray:
    """An MNIST idx file (gzip-compressed or not) as a uint8 array of its stated shape."""
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise TmktError(f"{label}: damaged gzip data ({e})") from None
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise TmktError(f"{label}: not an unsigned-byte idx file (bad magic number)")
    n_dims = data[3]
    header = 4 + 4 * n_dims
    if len(data) < header:
        raise TmktError(f"{label}: truncated idx header")
    shape = tuple(int(v) for v in np.frombuffer(data, ">u4", count=n_dims, offset=4))
    expected = int(np.prod(shape))
    if len(data) - header != expected:
        raise TmktError(f"{label}: idx header says {shape} ({expected} bytes) but the file "
                        f"holds {len(data) - header}: truncated or damaged")
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


# --------------------------------------------------------------------------------------------
# N-Caltech101 (+ Caltech101 images)
# --------------------------------------------------------------------------------------------

NCALTECH_EVENT_CANDIDATES = ("Caltech101", "Caltech101.zip", "N-Caltech101-archive.zip")
CALTECH_IMAGE_CANDIDATES = ("101_ObjectCategories", "101_ObjectCategories.tar.gz",
                            "caltech-101.zip", "caltech-101/101_ObjectCategories",
                            "caltech-101/101_ObjectCategories.tar.gz",
                            "caltech101/101_ObjectCategories")
TRAIN_FRACTION = 0.9


@register("ncaltech101")
@releases_archives
def ncaltech101(root: Path | None, cfg: object = None) -> SourceData:
    """N-Caltech101 recordings with Caltech101 images; classes line up by folder name."""
    facts = NCALTECH101
    root = require_root(root, facts)
    events_at = first_existing(root, NCALTECH_EVENT_CANDIDATES)
    if events_at is None:
        raise layout_error(facts, f"no N-Caltech101 recordings in {root}")
    recordings = group_by_folder(find_files(events_at, root, (".bin",),
                                            descend_into=("Caltech101.zip",)))
    if not recordings:
        raise layout_error(facts, f"no <class>/*.bin recordings in {events_at}")
    images_at = first_existing(root, CALTECH_IMAGE_CANDIDATES)
    if images_at is None:
        raise layout_error(facts, f"no Caltech101 images in {root}")
    images = group_by_folder(find_files(images_at, root, (".jpg", ".jpeg"),
                                        descend_into=("101_ObjectCategories.tar.gz",)))
    # The recordings define the classes (BACKGROUND_Google kept, Faces absent); a stock
    # Caltech101 folder also has Faces, which has no recordings and is dropped.
    classes = sorted(recordings)
    missing = [c for c in classes if c not in images]
    if missing:
        raise layout_error(facts, f"no Caltech101 images for class(es) {', '.join(missing)} "
                                  f"in {images_at}")
    dropped = sorted(set(images) - set(classes))

    train, test, train_images, test_images = [], [], [], []
    for label, name in enumerate(classes):
        rec_train, rec_test = split_first_fraction(recordings[name], TRAIN_FRACTION)
        img_train, img_test = split_first_fraction(images[name], TRAIN_FRACTION)
        train += [(label, f) for f in rec_train]
        test += [(label, f) for f in rec_test]
        train_images += [(label, f) for f in img_train]
        test_images += [(label, f) for f in img_test]

    def image_items(pairs):
        return [ImageItem(f.source, label, partial(load_image_file, f.ref)) for label, f in pairs]

    def own_image_positions(pairs, image_pairs) -> list[int]:
        # N-Caltech101 converted each Caltech101 image under the same name
        # (image_0001.jpg -> image_0001.bin), so a recording's own image is found by name.
        position = {(label, f.stem): i for i, (label, f) in enumerate(image_pairs)}
        return [position.get((label, f.stem), -1) for label, f in pairs]

    train_positions = own_image_positions(train, train_images)
    test_positions = own_image_positions(test, test_images)
    # Pair by instance only when every recording finds its image: a partial pairing would
    # silently mix instance and class pairing.
    paired = -1 not in train_positions + test_positions
    if not paired:
        train_positions, test_positions = [-1] * len(train), [-1] * len(test)

    def recording_items(pairs, positions) -> list[Recording]:
        return [Recording(f.source, label, partial(load_atis_recording, f.ref),
                          image_index=position)
                for (label, f), position in zip(pairs, positions, strict=True)]

    train_items = recording_items(train, train_positions)
    test_items = recording_items(test, test_positions)
    return SourceData(
        classes=classes, train=train_items, test=test_items,
        train_images=image_items(train_images), test_images=image_items(test_images),
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
    for folder in (mat_folder, image_folder):
        if not folder.is_dir():
            raise layout_error(facts, f"no folder {folder}")
    recordings = _files_by_index(find_files(mat_folder, root, (".mat",)), facts)
    images = _files_by_index(find_files(image_folder, root, IMAGE_SUFFIXES), facts)
    if not recordings:
        raise layout_error(facts, f"no <index>.mat recordings under {mat_folder}")

    by_class: dict[str, list[int]] = defaultdict(list)
    for index in sorted(recordings):
        if index >= len(labels_by_index):
            raise TmktError(f"{recordings[index].ref}: index {index} has no row in {csv_path} "
                            f"({len(labels_by_index)} rows)")
        if index not in images:
            raise TmktError(f"{recordings[index].ref}: no image {image_folder}/{index}.<png|jpg> "
                            f"for this recording (CEP-DVS images are index-aligned)")
        by_class[labels_by_index[index]].append(index)
    classes = [c for c in CIFAR100_SUPERCLASSES if c in by_class]
    needed = train_per_class + test_per_class
    for name in classes:
        if len(by_class[name]) < needed:
            raise TmktError(f"cepdvs: class {name} has {len(by_class[name])} recordings under "
                            f"{mat_folder}; the split needs {needed} (first {train_per_class} "
                            f"train, next {test_per_class} test)")

    def split(indices_per_class: dict[str, list[int]]) -> tuple[list[Recording], list[ImageItem]]:
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

    train, train_images = split({c: by_class[c][:train_per_class] for c in classes})
    test, test_images = split({c: by_class[c][train_per_class:needed] for c in classes})
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
    class_zips = tuple(f"{c}.zip" for c in CIFAR10_CLASSES)
    recordings = group_by_folder(prefer_extracted(
        find_files(root, root, (".aedat",), descend_into=class_zips)))
    if not recordings:
        raise layout_error(facts, f"no <class>/*.aedat recordings in {root}")
    unknown = sorted(set(recordings) - set(CIFAR10_CLASSES))
    if unknown:
        raise layout_error(facts, f"folder(s) {', '.join(unknown)} in {root} hold .aedat files "
                                  f"but are not CIFAR-10 classes")
    classes = sorted(recordings)
    images_at = first_existing(root, CIFAR10_IMAGE_CANDIDATES)
    if images_at is None:
        raise layout_error(facts, f"no CIFAR-10 python batches in {root}")
    batches = {f.name: f for f in find_files(images_at, root, CIFAR10_TRAIN_BATCHES
                                             + (CIFAR10_TEST_BATCH,))}
    missing = [b for b in CIFAR10_TRAIN_BATCHES + (CIFAR10_TEST_BATCH,) if b not in batches]
    if missing:
        raise layout_error(facts, f"CIFAR-10 batch file(s) {', '.join(missing)} missing in "
                                  f"{images_at}")

    def image_items(batch_names: Sequence[str]) -> list[ImageItem]:
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

    train, test = [], []
    for label, name in enumerate(classes):
        first, rest = split_first_fraction(recordings[name], TRAIN_FRACTION)
        train += [Recording(f.source, label, partial(load_aedat2_recording, f.ref))
                  for f in first]
        test += [Recording(f.source, label, partial(load_aedat2_recording, f.ref))
                 for f in rest]
    return SourceData(
        classes=classes, train=train, test=test,
        train_images=image_items(CIFAR10_TRAIN_BATCHES),
        test_images=image_items((CIFAR10_TEST_BATCH,)),
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
    per_split: dict[str, dict[str, list[FoundFile]]] = {}
    for split_name, candidates in NMNIST_SPLIT_CANDIDATES.items():
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
        per_split[split_name] = groups
    classes = sorted(set(per_split["train"]) | set(per_split["test"]), key=int)

    mnist_folder = next((root / c for c in MNIST_FOLDER_CANDIDATES
                         if _idx_file(root / c, MNIST_FILES["train"][0]) is not None), None)
    if mnist_folder is None:
        raise layout_error(facts, f"no MNIST idx files (train-images-idx3-ubyte[.gz]) in {root}")

    def recordings(split_name: str) -> list[Recording]:
        return [Recording(f.source, classes.index(digit),
                          partial(load_atis_recording, f.ref, NMNIST_SENSOR_SIZE))
                for digit, files in sorted(per_split[split_name].items())
                for f in files]

    def images(split_name: str) -> list[ImageItem]:
        image_name, label_name = MNIST_FILES[split_name]
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

    return SourceData(
        classes=classes, train=recordings("train"), test=recordings("test"),
        train_images=images("train"), test_images=images("test"),
        info={
            "dataset": facts.title, "citation": facts.citation, "url": facts.url,
            "split": "N-MNIST's own Train/Test; images: MNIST train / t10k",
            "instance_pairing": "unavailable: N-MNIST file names are not documented as MNIST "
                                "indices",
            "sensor_size": "34 x 34",
        })


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

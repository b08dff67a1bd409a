"""What the recorded event datasets share: their facts card, finding files in folders and
archives, and the picklable loaders of recordings and images.

Each recorded dataset has its own module (``ncaltech101``, ``cepdvs``, ``cifar10dvs``,
``nmnist``, ``dvsgesture``, ``nomniglot``); each turns ``prepare.root`` (a folder holding the dataset's files, extracted or
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

import functools
import gzip
import io
import pickle
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
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

    def __post_init__(self) -> None:
        KNOWN[self.name] = self  # what `tmkt datasets` lists


KNOWN: dict[str, DatasetFacts] = {}
"""Every recorded dataset's facts, by registry name."""


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


def read_args(ref: FileRef) -> tuple[object, str]:
    """What to hand a reader: a plain file's path (read directly), or a member's bytes."""
    if ref.in_archive:
        return ref.read_bytes(), str(ref)
    return ref.path, ref.path


def load_atis_recording(ref: FileRef, sensor_size: tuple[int, int] | None = None
                        ) -> tuple[np.ndarray, tuple[int, int]]:
    """An ATIS .bin recording; without ``sensor_size``, sized to its largest coordinates."""
    source, name = read_args(ref)
    return read_atis_bin(source, sensor_size=sensor_size, name=name)


def load_aedat2_recording(ref: FileRef) -> tuple[np.ndarray, tuple[int, int]]:
    source, name = read_args(ref)
    return read_aedat2(source, name=name)


def load_cep_recording(ref: FileRef) -> tuple[np.ndarray, tuple[int, int]]:
    source, name = read_args(ref)
    return read_cep_mat(source, name=name)


def load_dvsgesture_recording(ref: FileRef) -> tuple[np.ndarray, tuple[int, int]]:
    source, name = read_args(ref)
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


TRAIN_FRACTION = 0.9
"""Share of each class's recordings in the training split, for datasets that ship no split of
their own (N-Caltech101, CIFAR10-DVS)."""

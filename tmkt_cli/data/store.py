"""The prepared dataset: one HDF5 file, ``dataset.h5``, written by ``tmkt prepare``.

docs/artifacts.md ("The prepared dataset") describes the layout; :data:`SCHEMA_VERSION` changes
whenever it does. In short::

    /                 attributes: schema_version, tool, tmkt_version, dataset, time_steps, size,
                      split_by, prepare_config (YAML), config_hash, info (JSON), sensor_sizes
                      (JSON), complete, content_hash
    /classes          str [C]
    /train, /test     frames float32 [N, T, 2, S, S]   one sample per chunk, gzip level 1
                      labels int64 [N]; sources str [N]; image_index int64 [N] (-1: none)
                      event_counts int64 [N]; dropped_events int64 [N]; sensor_size int32 [N, 2]
                      images uint8 [M, S, S, 3]; image_labels int64 [M]; image_sources str [M]

**Kill-safe writing.** :class:`DatasetWriter` writes ``dataset.h5.partial`` and renames it to
``dataset.h5`` only when complete, so a file with the final name is always whole. Everything
known before the heavy work (labels, sources, pairing indices) is written when the file is
created. Samples are then appended in order and committed in blocks: the block's data is
flushed, then the split's ``committed_*`` attribute is advanced and flushed again. So the
committed count never covers data that has not reached the file, whatever moment a SIGKILL
arrives. A rerun copies the committed samples into a fresh file, checking each against the
split's hash chain, and continues after them; it never writes into the killed file, whose
HDF5 metadata may be half-flushed (:meth:`DatasetWriter._copy_committed` says why). A partial
that fails the check is started again. Process kills are covered; a power cut is not (HDF5
does not fsync on flush).

**Content hash.** While writing, each split keeps a hash chain over its samples
(``chain = sha256(chain + sha256(sample))``), stored beside the committed count, so a resumed
run finishes with the same hash as an uninterrupted one without rereading the file.
:func:`content_hash` combines the chains with the metadata arrays; :func:`recompute_content_hash`
reads a whole file to check it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tmkt_cli import __version__
from tmkt_cli.errors import TmktError, disk_full, first_line

SCHEMA_VERSION = 1
TOOL = "tmkt"
FILENAME = "dataset.h5"
PARTIAL_SUFFIX = ".partial"
COPY_SUFFIX = ".copy"
"""A resumed partial's committed samples are copied into ``dataset.h5.partial.copy``, which
then replaces the partial (:meth:`DatasetWriter._copy_committed`)."""
"""Unfinished files are ``dataset.h5.partial``. Not a ``.tmp-`` name: the run folder's start
deletes those, and this one must survive to be resumed."""
SPLITS = ("train", "test")
KINDS = ("recordings", "images")
GZIP_LEVEL = 1
COMPRESSION = {"compression": "gzip", "compression_opts": GZIP_LEVEL}
"""gzip level 1, chosen by measurement (bench/bench_prepare.py --compression, figures and
command in docs/performance.md): on frames of the synthetic N-Caltech101 tree zlib level 1
costs 70% of level 4's CPU (1.2 against 1.75 ms per sample) for a file 6-7% larger, and a
sample reads as fast whatever the level. Compression was the largest single cost of prepare after integration and
resize; the file is written once and read every epoch at the same speed, so the CPU is worth
more than the 7%. Stores written at level 4 (before this choice) read the same and keep their
content hash: the hash covers the decoded float32 frames, not the compressed bytes, and any
gzip reader decodes any level. A gzip (zlib) stream carries an Adler-32 checksum, so a damaged
chunk is a read error, not silent garbage. Frames are compressed by prepare's workers
(:func:`pack_recording`) and written as ready-made chunks, so the single writing process does
not become the bottleneck."""
EMPTY_CHAIN = "0" * 64
STATIC = {"track_times": False}
"""No creation times in the object headers: an uninterrupted prepare writes the same bytes
for any worker count and on any day."""
SPACE_MARGIN = 4 << 20
"""Free bytes every write leaves for HDF5's own metadata. The writer checks the free space
before each block rather than waiting for the error: after a write fails inside HDF5, h5py
crashes (segfault) when the file's objects are freed (h5py issue #914)."""


# --------------------------------------------------------------------------------------------
# What a writer is asked to write
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SplitPlan:
    """The metadata of one split, known before any recording is read."""

    labels: np.ndarray
    sources: list[str]
    image_index: np.ndarray
    image_labels: np.ndarray
    image_sources: list[str]

    @property
    def recordings(self) -> int:
        return len(self.labels)

    @property
    def images(self) -> int:
        return len(self.image_labels)


@dataclass(frozen=True)
class StoreHeader:
    """File-level facts written as root attributes."""

    dataset: str
    classes: list[str]
    time_steps: int
    size: int
    split_by: str
    prepare_config: str
    config_hash: str
    info: dict = field(default_factory=dict)
    raw: dict = field(default_factory=dict)
    """Where the raw data is and a hash of its listing: a partial file made from other raw
    files is not resumed."""


def _sha(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.hexdigest()


def recording_digest(frames: np.ndarray, event_count: int, dropped: int,
                     sensor_size: tuple[int, int]) -> bytes:
    head = np.array([event_count, dropped, *sensor_size], dtype="<i8").tobytes()
    return hashlib.sha256(head + np.ascontiguousarray(frames, dtype="<f4").tobytes()).digest()


def image_digest(image: np.ndarray) -> bytes:
    return hashlib.sha256(np.ascontiguousarray(image, dtype=np.uint8).tobytes()).digest()


@dataclass(frozen=True)
class PackedRecording:
    """One recording ready to be written: its frames as a compressed HDF5 chunk, and the
    digest of what it holds."""

    chunk: bytes
    digest: bytes
    frames_shape: tuple[int, ...]
    event_count: int
    dropped: int
    sensor_size: tuple[int, int]


def pack_recording(frames: np.ndarray, event_count: int, dropped: int,
                   sensor_size: tuple[int, int]) -> PackedRecording:
    """Compress a recording's frames into the chunk the ``frames`` dataset's gzip filter would
    have made (a zlib stream of the little-endian float32 bytes). Pure and picklable: runs in
    prepare's worker processes."""
    data = np.ascontiguousarray(frames, dtype="<f4")
    sensor = (int(sensor_size[0]), int(sensor_size[1]))
    return PackedRecording(chunk=zlib.compress(data.tobytes(), GZIP_LEVEL),
                           digest=recording_digest(data, int(event_count), int(dropped), sensor),
                           frames_shape=data.shape, event_count=int(event_count),
                           dropped=int(dropped), sensor_size=sensor)


def extend_chain(chain: str, digest: bytes) -> str:
    return _sha(bytes.fromhex(chain), digest)


def _strings_digest(values: list[str]) -> bytes:
    return hashlib.sha256("\0".join(values).encode("utf-8")).digest()


def content_hash(header_facts: dict, plans: dict[str, SplitPlan],
                 chains: dict[str, dict[str, str]]) -> str:
    """The dataset's content hash: metadata arrays, class list and the sample chains."""
    h = hashlib.sha256(json.dumps(header_facts, sort_keys=True).encode())
    for split in SPLITS:
        plan = plans[split]
        for part in (np.ascontiguousarray(plan.labels, "<i8").tobytes(),
                     _strings_digest(plan.sources),
                     np.ascontiguousarray(plan.image_index, "<i8").tobytes(),
                     np.ascontiguousarray(plan.image_labels, "<i8").tobytes(),
                     _strings_digest(plan.image_sources),
                     bytes.fromhex(chains[split]["recordings"]),
                     bytes.fromhex(chains[split]["images"])):
            h.update(hashlib.sha256(part).digest())
    return h.hexdigest()


def _header_facts(classes: list[str], time_steps: int, size: int, split_by: str) -> dict:
    return {"schema_version": SCHEMA_VERSION, "classes": list(classes), "time_steps": time_steps,
            "size": size, "split_by": split_by}


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------

def _h5py():
    import h5py

    return h5py


class DatasetWriter:
    """Writes ``dataset.h5`` through ``dataset.h5.partial``, resuming a partial file that was
    started with the same header and plans.

    Use :meth:`add_recording` / :meth:`add_image` in order (starting at :meth:`committed`),
    then :meth:`finish`.
    """

    def __init__(self, path: str | Path, header: StoreHeader, plans: dict[str, SplitPlan], *,
                 flush_every: int = 64, log: Callable[[str], None] = lambda _msg: None) -> None:
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + PARTIAL_SUFFIX)
        self.header = header
        self.plans = plans
        self.flush_every = max(1, flush_every)
        self._pending: dict[tuple[str, str], list] = {}
        self._file = None
        self._file = self._open_or_create(log)
        self._chains = {s: {k: self._group(s).attrs[f"chain_{k}"].decode() for k in KINDS}
                        for s in SPLITS}
        self._next = {(s, k): self.committed(s, k) for s in SPLITS for k in KINDS}
        self._sensor_sizes: set[tuple[int, int]] = set()

    # -- file life ---------------------------------------------------------------------------
    def _open_or_create(self, log: Callable[[str], None]):
        h5py = _h5py()
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        copy = self.partial.with_name(self.partial.name + COPY_SUFFIX)
        if self.partial.exists():
            reason = self._copy_committed(copy)
            if reason is None:
                os.replace(copy, self.partial)
                f = h5py.File(self.partial, "r+")
                done = sum(int(f[s].attrs[f"committed_{k}"]) for s in SPLITS for k in KINDS)
                log(f"resuming {self.partial} after {done} committed samples (checked against "
                    f"their hash chains and copied into a fresh file)")
                return f
            log(f"{self.partial}: {reason}; starting it again")
            self.partial.unlink()
        copy.unlink(missing_ok=True)
        self._check_space(sum(_metadata_bytes(plan) for plan in self.plans.values()))
        with self._disk_full_is_one_line():
            return self._create(self.partial)

    def _copy_committed(self, copy: Path) -> str | None:
        """Copy the committed samples of the partial file into a new file at ``copy``, each
        checked against the split's hash chain. Returns why the partial cannot be resumed, or
        None once ``copy`` holds them.

        Why copy rather than reopen the partial for writing: HDF5 is not crash-consistent. A
        kill inside a flush can leave a chunk indexed while the superblock still holds the old
        end-of-allocation address, and writing that chunk again then fails ("addr overflow":
        CI, and tests/test_store.py builds the state). Nothing is ever written into a killed
        file; the copy is created whole (a kill during it leaves the partial as it was)."""
        h5py = _h5py()
        try:
            old = h5py.File(self.partial, "r")
        except OSError as e:
            return f"unreadable ({first_line(e)})"
        with old:
            reason = self._mismatch(old)
            if reason is not None:
                return reason
            self._check_space(self.partial.stat().st_size)
            try:
                with self._disk_full_is_one_line(), self._create(copy) as new:
                    for split in SPLITS:
                        _copy_split(old[split], new[split])
            except (OSError, ValueError, KeyError, zlib.error) as e:
                copy.unlink(missing_ok=True)
                return f"damaged ({first_line(e)})"
            except BaseException:
                copy.unlink(missing_ok=True)
                raise
        return None

    # -- a full disk -------------------------------------------------------------------------
    def _space_error(self, reason: str, detail: str = "") -> TmktError:
        return TmktError(f"{self.partial}: {reason} while writing the prepared dataset{detail}; "
                         f"{self.path.name} was not written: free some space and run the same "
                         f"command to resume after the committed samples")

    def _check_space(self, need: int) -> None:
        free = shutil.disk_usage(self.partial.parent).free
        if free < need + SPACE_MARGIN:
            raise self._space_error("no space left on device", f" ({free / 1e6:.1f} MB free, "
                                    f"{(need + SPACE_MARGIN) / 1e6:.1f} MB needed)")

    @contextlib.contextmanager
    def _disk_full_is_one_line(self) -> Iterator[None]:
        """The error HDF5 raises when the disk fills anyway (another process took the space)."""
        try:
            yield
            return
        except (OSError, RuntimeError) as e:
            reason = disk_full(e)
            if reason is None:
                raise
        raise self._space_error(reason)

    def _mismatch(self, f) -> str | None:
        """Why a partial file cannot be resumed (None when it can)."""
        try:
            a = f.attrs
            if a.get("tool") != TOOL or int(a.get("schema_version", -1)) != SCHEMA_VERSION:
                return "written by another tool or schema"
            if a.get("config_hash") != self.header.config_hash:
                return "made with another configuration"
            if a.get("raw") != _json(self.header.raw):
                return "made from other raw files"
            for split in SPLITS:
                plan, g = self.plans[split], f[split]
                if (g["labels"].shape[0] != plan.recordings
                        or g["image_labels"].shape[0] != plan.images
                        or not np.array_equal(g["labels"][()], plan.labels)
                        or not np.array_equal(g["image_index"][()], plan.image_index)
                        or not np.array_equal(g["image_labels"][()], plan.image_labels)
                        or _read_strings(g["sources"]) != list(plan.sources)
                        or _read_strings(g["image_sources"]) != list(plan.image_sources)):
                    return f"its {split} split lists other recordings or images"
                for kind in KINDS:
                    int(g.attrs[f"committed_{kind}"])
                    bytes.fromhex(g.attrs[f"chain_{kind}"].decode())
        except (KeyError, ValueError, TypeError, OSError) as e:
            return f"damaged ({first_line(e)})"
        return None

    def _create(self, path: Path):
        h5py = _h5py()
        f = h5py.File(path, "w")
        h = self.header
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["tool"] = TOOL
        f.attrs["tmkt_version"] = __version__
        f.attrs["dataset"] = h.dataset
        f.attrs["time_steps"] = h.time_steps
        f.attrs["size"] = h.size
        f.attrs["split_by"] = h.split_by
        f.attrs["prepare_config"] = h.prepare_config
        f.attrs["config_hash"] = h.config_hash
        f.attrs["info"] = _json(h.info)
        f.attrs["raw"] = _json(h.raw)
        # Finish-time attributes exist from the start with fixed sizes, so finishing only
        # overwrites them in place.
        f.attrs["complete"] = False
        f.attrs["content_hash"] = np.bytes_(EMPTY_CHAIN)
        strings = h5py.string_dtype()
        f.create_dataset("classes", data=np.array(h.classes, dtype=object), dtype=strings,
                         **STATIC)
        t, s = h.time_steps, h.size
        for split in SPLITS:
            plan, g = self.plans[split], f.create_group(split)
            n, m = plan.recordings, plan.images
            _create_samples(g, "frames", (n, t, 2, s, s), np.float32)
            g.create_dataset("labels", data=np.asarray(plan.labels, dtype=np.int64),
                             **STATIC)
            g.create_dataset("sources", data=np.array(plan.sources, dtype=object),
                             dtype=strings, **STATIC)
            g.create_dataset("image_index", data=np.asarray(plan.image_index, dtype=np.int64),
                             **STATIC)
            g.create_dataset("event_counts", shape=(n,), dtype=np.int64, fillvalue=-1, **STATIC)
            g.create_dataset("dropped_events", shape=(n,), dtype=np.int64, fillvalue=-1,
                             **STATIC)
            g.create_dataset("sensor_size", shape=(n, 2), dtype=np.int32, **STATIC)
            _create_samples(g, "images", (m, s, s, 3), np.uint8)
            g.create_dataset("image_labels", data=np.asarray(plan.image_labels, dtype=np.int64),
                             **STATIC)
            g.create_dataset("image_sources", data=np.array(plan.image_sources, dtype=object),
                             dtype=strings, **STATIC)
            for kind in KINDS:
                g.attrs[f"committed_{kind}"] = np.int64(0)
                g.attrs[f"chain_{kind}"] = np.bytes_(EMPTY_CHAIN)
        f.flush()
        return f

    def _group(self, split: str):
        return self._file[split]

    def committed(self, split: str, kind: str) -> int:
        """Samples of ``kind`` (recordings or images) of ``split`` already safely written."""
        return int(self._group(split).attrs[f"committed_{kind}"])

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(Exception):
                self._file.close()
            self._file = None

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- appending ---------------------------------------------------------------------------
    def add_recording(self, split: str, frames: np.ndarray, event_count: int, dropped: int,
                      sensor_size: tuple[int, int]) -> None:
        self.add_packed(split, pack_recording(frames, event_count, dropped, sensor_size))

    def add_packed(self, split: str, packed: PackedRecording) -> None:
        """Add a recording packed by :func:`pack_recording` (e.g. in a worker process)."""
        expected = (self.header.time_steps, 2, self.header.size, self.header.size)
        if packed.frames_shape != expected:
            raise ValueError(f"frames of shape {packed.frames_shape}, expected {expected}")
        self._add(split, "recordings", packed)

    def add_image(self, split: str, image: np.ndarray) -> None:
        expected = (self.header.size, self.header.size, 3)
        if image.shape != expected or image.dtype != np.uint8:
            raise ValueError(f"image {image.dtype} {image.shape}, expected uint8 {expected}")
        self._add(split, "images", image)

    def _add(self, split: str, kind: str, item: Any) -> None:
        key = (split, kind)
        total = self.plans[split].recordings if kind == "recordings" else self.plans[split].images
        if self._next[key] >= total:
            raise ValueError(f"more {kind} than planned for {split} ({total})")
        for other in [k for k in self._pending if k != key]:
            self._commit(*other)  # moving on to another array: the last block is complete
        self._pending.setdefault(key, []).append(item)
        self._next[key] += 1
        if len(self._pending[key]) >= self.flush_every:
            self._commit(split, kind)

    def flush(self) -> None:
        """Commit everything added so far."""
        for split, kind in list(self._pending):
            self._commit(split, kind)

    def _commit(self, split: str, kind: str) -> None:
        items = self._pending.pop((split, kind), [])
        if not items:
            return
        self._check_space(sum(len(it.chunk) if kind == "recordings" else it.nbytes
                              for it in items))
        with self._disk_full_is_one_line():
            self._write_block(split, kind, items)

    def _write_block(self, split: str, kind: str, items: list) -> None:
        g = self._group(split)
        start = self.committed(split, kind)
        stop = start + len(items)
        chain = self._chains[split][kind]
        if kind == "recordings":
            frames = g["frames"].id
            zeros = (0,) * (len(g["frames"].shape) - 1)
            for i, packed in enumerate(items, start):
                frames.write_direct_chunk((i, *zeros), packed.chunk)  # all filters applied
                chain = extend_chain(chain, packed.digest)
                self._sensor_sizes.add(packed.sensor_size)
            g["event_counts"][start:stop] = [it.event_count for it in items]
            g["dropped_events"][start:stop] = [it.dropped for it in items]
            g["sensor_size"][start:stop] = [it.sensor_size for it in items]
        else:
            g["images"][start:stop] = np.stack(items)
            for image in items:
                chain = extend_chain(chain, image_digest(image))
        # Data first, then the count that vouches for it: a kill between the two flushes
        # leaves the old count, and the block is simply written again.
        self._file.flush()
        g.attrs.modify(f"committed_{kind}", np.int64(stop))
        g.attrs.modify(f"chain_{kind}", np.bytes_(chain))
        self._file.flush()
        self._chains[split][kind] = chain

    # -- finishing ---------------------------------------------------------------------------
    def sensor_sizes(self) -> list[tuple[int, int]]:
        """Distinct sensor sizes of all recordings in the file (read back after a resume)."""
        sizes = set(self._sensor_sizes)
        for split in SPLITS:
            done = self.committed(split, "recordings")
            if done:
                sizes |= {tuple(int(v) for v in row)
                          for row in np.unique(self._group(split)["sensor_size"][:done], axis=0)}
        return sorted(sizes)

    def finish(self) -> str:
        """Commit the rest, check every sample is there, stamp the file complete and rename
        it to its final name. Returns the content hash."""
        self.flush()
        for split in SPLITS:
            for kind in KINDS:
                want = getattr(self.plans[split], kind)
                if self.committed(split, kind) != want:
                    raise RuntimeError(f"{split} {kind}: {self.committed(split, kind)} of "
                                       f"{want} written")  # a bug in the caller
        h = self.header
        digest = content_hash(_header_facts(h.classes, h.time_steps, h.size, h.split_by),
                              self.plans, self._chains)
        f = self._file
        self._check_space(0)
        with self._disk_full_is_one_line():
            f.attrs["sensor_sizes"] = json.dumps([list(s) for s in self.sensor_sizes()])
            f.attrs.modify("content_hash", np.bytes_(digest))
            f.attrs.modify("complete", True)
            self._file.close()  # not self.close(): an error here must reach the guard
            self._file = None
            with open(self.partial, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(self.partial, self.path)
        with contextlib.suppress(OSError):
            fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        return digest


def _copy_split(src, dst) -> None:
    """Copy one split's committed samples from ``src`` to ``dst`` (HDF5 groups of the same
    plan), recomputing each kind's hash chain on the way; raises ValueError when a chain does
    not match the one stored, zlib.error or OSError when a chunk cannot be read."""
    for kind in KINDS:
        done = int(src.attrs[f"committed_{kind}"])
        chain = EMPTY_CHAIN
        if kind == "recordings":
            frames, shape = src["frames"].id, src["frames"].shape[1:]
            zeros = (0,) * len(shape)
            counts, dropped = src["event_counts"][:done], src["dropped_events"][:done]
            sensors = src["sensor_size"][:done]
            for i in range(done):
                mask, chunk = frames.read_direct_chunk((i, *zeros))
                if mask:
                    raise ValueError(f"{src.name}/frames[{i}] was stored without its filter")
                data = np.frombuffer(zlib.decompress(chunk), "<f4").reshape(shape)
                chain = extend_chain(chain, recording_digest(
                    data, int(counts[i]), int(dropped[i]), (int(sensors[i][0]),
                                                            int(sensors[i][1]))))
                dst["frames"].id.write_direct_chunk((i, *zeros), chunk)
            dst["event_counts"][:done] = counts
            dst["dropped_events"][:done] = dropped
            dst["sensor_size"][:done] = sensors
        else:
            for start in range(0, done, COPY_BLOCK):
                block = src["images"][start:min(done, start + COPY_BLOCK)]
                for image in block:
                    chain = extend_chain(chain, image_digest(image))
                dst["images"][start:start + len(block)] = block
        if chain != src.attrs[f"chain_{kind}"].decode():
            raise ValueError(f"the committed {kind} of {src.name} do not match their hash chain")
        dst.attrs.modify(f"committed_{kind}", np.int64(done))
        dst.attrs.modify(f"chain_{kind}", np.bytes_(chain))


COPY_BLOCK = 256
"""Images copied per read when a partial file is resumed."""


def _json(data: dict) -> str:
    return json.dumps(data, sort_keys=True, default=str)


def _metadata_bytes(plan: SplitPlan) -> int:
    """About what the arrays written when a file is created take."""
    strings = sum(len(s.encode()) + 16 for s in (*plan.sources, *plan.image_sources))
    return strings + 48 * plan.recordings + 8 * plan.images


def _create_samples(group, name: str, shape: tuple[int, ...], dtype) -> None:
    """A dataset of samples, one per chunk, compressed; plain when empty (HDF5 chunks cannot
    be larger than a fixed-size dataset)."""
    if shape[0] == 0:
        group.create_dataset(name, shape=shape, dtype=dtype, **STATIC)
    else:
        group.create_dataset(name, shape=shape, dtype=dtype, chunks=(1, *shape[1:]),
                             **COMPRESSION, **STATIC)


def _read_strings(dataset) -> list[str]:
    return [s.decode("utf-8") if isinstance(s, bytes) else str(s) for s in dataset[()]]


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------

REQUIRED = ("frames", "labels", "sources", "image_index", "event_counts", "dropped_events",
            "sensor_size", "images", "image_labels", "image_sources")


class PreparedDataset:
    """An open, validated ``dataset.h5``. Use :func:`open_dataset`."""

    def __init__(self, path: Path, handle) -> None:
        self.path = path
        self.file = handle
        a = handle.attrs
        self.dataset = str(a["dataset"])
        self.time_steps = int(a["time_steps"])
        self.size = int(a["size"])
        self.split_by = str(a["split_by"])
        self.config_hash = str(a["config_hash"])
        self.prepare_config = str(a["prepare_config"])
        self.info = json.loads(a["info"])
        self.sensor_sizes = [tuple(s) for s in json.loads(a["sensor_sizes"])]
        self.content_hash = a["content_hash"].decode()
        self.classes = _read_strings(handle["classes"])

    def split(self, name: str):
        """The HDF5 group of a split (``train`` or ``test``)."""
        if name not in SPLITS:
            raise TmktError(f"{self.path}: no split {name!r} (splits: {', '.join(SPLITS)})")
        return self.file[name]

    def labels(self, split: str) -> np.ndarray:
        return self.split(split)["labels"][()]

    def image_labels(self, split: str) -> np.ndarray:
        return self.split(split)["image_labels"][()]

    def image_index(self, split: str) -> np.ndarray:
        return self.split(split)["image_index"][()]

    def sources(self, split: str) -> list[str]:
        return _read_strings(self.split(split)["sources"])

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> PreparedDataset:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_dataset(path: str | Path) -> PreparedDataset:
    """Open and validate a prepared dataset; every problem is a one-line TmktError naming the
    file (missing, not HDF5, another tool's file, another schema, unfinished, damaged)."""
    path = Path(path)
    if path.is_dir():
        path = path / FILENAME
    if not path.exists():
        partial = path.with_name(path.name + PARTIAL_SUFFIX)
        hint = ("; an unfinished prepare left " + partial.name + ": run the same "
                "`tmkt prepare` again to finish it") if partial.exists() else \
            "; run `tmkt prepare` first"
        raise TmktError(f"{path}: prepared dataset not found{hint}")
    h5py = _h5py()
    try:
        handle = h5py.File(path, "r")
    except OSError as e:
        raise TmktError(f"{path}: not a readable HDF5 file ({first_line(e)}); it may be "
                        f"truncated or damaged: prepare it again") from None
    try:
        _validate(path, handle)
        return PreparedDataset(path, handle)
    except TmktError:
        handle.close()
        raise
    except (KeyError, ValueError, TypeError, OSError, json.JSONDecodeError) as e:
        handle.close()
        raise TmktError(f"{path}: damaged prepared dataset ({first_line(e)}); prepare it "
                        f"again with --force") from None


def _validate(path: Path, f) -> None:
    a = f.attrs
    tool = a.get("tool")
    if isinstance(tool, bytes):
        tool = tool.decode(errors="replace")
    if tool != TOOL:
        by = f"written by {tool!r}" if tool else "no 'tool' attribute"
        raise TmktError(f"{path}: not a tmkt prepared dataset ({by})")
    version = int(a.get("schema_version", -1))
    if version != SCHEMA_VERSION:
        age = "an older" if version < SCHEMA_VERSION else "a newer"
        raise TmktError(f"{path}: written with {age} dataset schema (v{version}; this tmkt "
                        f"reads v{SCHEMA_VERSION}); run `tmkt prepare` again with --force")
    if not bool(a.get("complete", False)):
        raise TmktError(f"{path}: incomplete prepared dataset (not marked complete); run "
                        f"`tmkt prepare` again")
    t, s = int(a["time_steps"]), int(a["size"])
    for split in SPLITS:
        if split not in f:
            raise TmktError(f"{path}: damaged prepared dataset (no /{split} group)")
        g = f[split]
        missing = [name for name in REQUIRED if name not in g]
        if missing:
            raise TmktError(f"{path}: damaged prepared dataset (/{split} lacks "
                            f"{', '.join(missing)})")
        n, m = g["labels"].shape[0], g["image_labels"].shape[0]
        checks = {"frames": (n, t, 2, s, s), "images": (m, s, s, 3), "sources": (n,),
                  "image_index": (n,), "event_counts": (n,), "dropped_events": (n,),
                  "image_sources": (m,), "labels": (n,), "image_labels": (m,)}
        for name, shape in checks.items():
            if g[name].shape != shape:
                raise TmktError(f"{path}: damaged prepared dataset (/{split}/{name} has shape "
                                f"{g[name].shape}, expected {shape})")
        # frames of another dtype (integers cast by hand, float64, float16) are read, cast and
        # train to something else without a word: the writer's dtypes or nothing
        for name, dtype in (("frames", np.float32), ("images", np.uint8)):
            if g[name].dtype != dtype:
                raise TmktError(f"{path}: damaged prepared dataset (/{split}/{name} has dtype "
                                f"{g[name].dtype}, expected {np.dtype(dtype).name}); "
                                f"prepare it again")
        _check_indices(path, f"/{split}/labels", g["labels"], len(f["classes"]), "classes")
        _check_indices(path, f"/{split}/image_labels", g["image_labels"], len(f["classes"]),
                       "classes")
        _check_indices(path, f"/{split}/image_index", g["image_index"], m, "images",
                       allow_missing=True)


def _check_indices(path: Path, where: str, dataset, count: int, what: str,
                   allow_missing: bool = False) -> None:
    """Labels and pairing indices are integers inside their range (a hand-edited or damaged
    file must be refused, not trained on: an out-of-range label crashes, or worse, not)."""
    if not np.issubdtype(dataset.dtype, np.integer):
        raise TmktError(f"{path}: damaged prepared dataset ({where} has dtype {dataset.dtype}, "
                        f"expected integers)")
    values = dataset[()]
    low = -1 if allow_missing else 0
    bad = np.flatnonzero((values < low) | (values >= count))
    if bad.size:
        raise TmktError(f"{path}: damaged prepared dataset ({where}[{int(bad[0])}] is "
                        f"{int(values[bad[0]])}, outside 0..{count - 1} {what}; "
                        f"{bad.size} such row(s))")


def read_row(dataset, row: int, path: Path) -> np.ndarray:
    """One row of an HDF5 array; a damaged chunk is one line naming the file and the row."""
    try:
        return dataset[row]
    except (OSError, ValueError) as e:
        raise TmktError(f"{path}: cannot read {dataset.name}[{row}] ({first_line(e)}); the "
                        f"file is damaged: prepare it again") from None


def read_whole(dataset, path: Path) -> np.ndarray:
    """A whole HDF5 array; when the bulk read fails, the rows are read one by one so the
    error names the damaged row."""
    try:
        return dataset[()]
    except (OSError, ValueError):
        return np.stack([read_row(dataset, r, path) for r in range(dataset.shape[0])])


def recompute_content_hash(path: str | Path) -> str:
    """Read a whole prepared dataset and compute its content hash (what the writer computes
    while writing), to check a file."""
    with open_dataset(path) as ds:
        plans, chains = {}, {}
        for split in SPLITS:
            g = ds.split(split)
            plans[split] = SplitPlan(labels=g["labels"][()], sources=_read_strings(g["sources"]),
                                     image_index=g["image_index"][()],
                                     image_labels=g["image_labels"][()],
                                     image_sources=_read_strings(g["image_sources"]))
            chain = EMPTY_CHAIN
            counts, dropped, sensors = (g["event_counts"][()], g["dropped_events"][()],
                                        g["sensor_size"][()])
            for i in range(plans[split].recordings):
                chain = extend_chain(chain, recording_digest(
                    g["frames"][i], int(counts[i]), int(dropped[i]),
                    (int(sensors[i][0]), int(sensors[i][1]))))
            image_chain = EMPTY_CHAIN
            for i in range(plans[split].images):
                image_chain = extend_chain(image_chain, image_digest(g["images"][i]))
            chains[split] = {"recordings": chain, "images": image_chain}
        return content_hash(_header_facts(ds.classes, ds.time_steps, ds.size, ds.split_by),
                            plans, chains)


def iter_arrays(path: str | Path) -> Iterator[tuple[str, np.ndarray]]:
    """Every array of a prepared dataset as (name, array): for comparing two files."""
    with open_dataset(path) as ds:
        yield "classes", np.array(ds.classes)
        for split in SPLITS:
            g = ds.split(split)
            for name in REQUIRED:
                data = g[name][()]
                if data.dtype == object:
                    data = np.array([v.decode() if isinstance(v, bytes) else v for v in data])
                yield f"{split}/{name}", data

"""``tmkt prepare``: raw recordings (or emulated ones) and their images into ``dataset.h5``.

Reads the dataset's source (:mod:`tmkt_cli.data.sources`), integrates every recording into
``[T, 2, H, W]`` counts, resizes frames and images to ``size x size``, and writes them with the
split metadata through :class:`tmkt_cli.data.store.DatasetWriter`, which commits in blocks and
resumes after a kill. With ``workers > 1`` a process pool reads and integrates while the main
process writes, in order, so the file is the same for any worker count.
"""

from __future__ import annotations

import collections
import hashlib
import json
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from tmkt_cli.config import PrepareConfig, Recipe, dump_yaml, require_path, stage_config
from tmkt_cli.data import sources
from tmkt_cli.data.frames import integrate_events, resize_image, sensor_window
from tmkt_cli.data.sources import EVENT_DTYPE, ImageItem, Recording, SourceData
from tmkt_cli.data.store import (
    FILENAME,
    SPLITS,
    DatasetWriter,
    PackedRecording,
    SplitPlan,
    StoreHeader,
    open_dataset,
    pack_recording,
)
from tmkt_cli.errors import TmktError
from tmkt_cli.runs.artifacts import StageRun, Upstream
from tmkt_cli.train.progress import progress_bar

CHUNK = 4
"""Recordings (or images) per pool task: amortises the inter-process round trip (about 0.5 ms)
over several items while keeping the progress bar lively."""
WINDOW_PER_WORKER = 3
"""Tasks in flight per worker: enough to hide the writer's pauses, few enough that results
waiting to be written stay a few MB."""


def folder(recipe: Recipe) -> Path:
    return recipe.dataset_dir()


def inputs(recipe: Recipe) -> dict:
    """Raw data has no manifest: its listing hash (relative paths and sizes) stands in for an
    upstream output hash, so replacing raw files makes a finished prepare refuse to pass for
    up to date. An unknown ``prepare.dataset`` or a ``prepare.root`` that does not exist is
    reported here, before the folder is touched."""
    sources.get(recipe.prepare.dataset)
    root = raw_root(recipe.prepare)
    if root is None:
        return {}
    listing = raw_listing(root)
    return {"raw": Upstream(root, {"output_hash": listing["listing_hash"], "outputs": {}})}


# --------------------------------------------------------------------------------------------
# Work done in the pool (module-level so it pickles)
# --------------------------------------------------------------------------------------------

def integrate_recording(recording: Recording, time_steps: int, size: int, split_by: str,
                        align_corners: bool = False, sensor_extent: str = "declared"
                        ) -> PackedRecording:
    """Load one recording, count it into frames, resize them and compress them into the
    HDF5 chunk the writer stores as is."""
    events, sensor_size = recording.load()
    if events.dtype.names is None or not {"t", "x", "y", "p"} <= set(events.dtype.names):
        raise TypeError(f"{recording.source}: the source returned events of dtype "
                        f"{events.dtype}, expected {EVENT_DTYPE}")  # a bug in the source
    frames, dropped, sensor = integrate_events(events, sensor_size, time_steps, size,
                                               split_by, align_corners, sensor_extent)
    return pack_recording(frames, int(events.size - dropped), dropped, sensor)


def apply_sensor_extent(events: np.ndarray, sensor: tuple[int, int], mode: str
                        ) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`sensor_window` applied: the events (shifted to the origin when it is not 0)
    and the extent."""
    extent, (y0, x0) = sensor_window(events, sensor, mode)
    if y0 or x0:
        events = events.copy()
        events["x"] -= x0
        events["y"] -= y0
    return events, extent


def load_image(item: ImageItem, size: int) -> np.ndarray:
    return resize_image(item.load(), size)


def _ignore_interrupt() -> None:
    # Ctrl-C reaches the whole process group; the main process handles it and stops the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_chunk(fn: Callable, items: list, args: tuple) -> list:
    return [fn(item, *args) for item in items]


class OrderedPool:
    """``map`` in input order over a process pool, with a bounded number of tasks in flight;
    in-process when ``workers == 1``."""

    def __init__(self, workers: int, chunk: int = CHUNK) -> None:
        self.workers, self.chunk = workers, chunk
        self._pool = None
        if workers > 1:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else None)
            # multiprocessing.Pool starts every worker now, before the HDF5 file is opened,
            # so no worker is forked holding HDF5 state.
            self._pool = context.Pool(workers, initializer=_ignore_interrupt)

    def map(self, fn: Callable, items: list, *args: Any) -> Iterator:
        if self._pool is None:
            for item in items:
                yield fn(item, *args)
            return
        pending: collections.deque = collections.deque()
        window = self.workers * WINDOW_PER_WORKER
        for start in range(0, len(items), self.chunk):
            chunk = items[start:start + self.chunk]
            pending.append(self._pool.apply_async(_run_chunk, (fn, chunk, args)))
            if len(pending) >= window:
                yield from pending.popleft().get()
        while pending:
            yield from pending.popleft().get()

    def close(self, ok: bool) -> None:
        if self._pool is not None:
            if ok:
                self._pool.close()
            else:
                self._pool.terminate()
            self._pool.join()
            self._pool = None


# --------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------

def raw_root(cfg: PrepareConfig) -> Path | None:
    return require_path(cfg.root, "prepare.root") if cfg.root else None


def raw_listing(root: Path | None) -> dict:
    """The raw root's path and a hash of its file listing (relative paths and sizes): cheap,
    and it changes when files are added, removed or replaced by ones of another size."""
    if root is None:
        return {"root": None}
    h = hashlib.sha256()
    files = total = 0
    if root.is_file():
        entries = [(root.name, root.stat().st_size)]
    else:
        entries = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                p = Path(dirpath) / name
                entries.append((str(p.relative_to(root)), p.stat().st_size))
    for rel, size in entries:
        h.update(f"{rel}\0{size}\n".encode())
        files += 1
        total += size
    return {"root": str(root.resolve()), "files": files, "bytes": total,
            "listing_hash": h.hexdigest()[:16]}


def plan_split(recordings: list[Recording], images: list[ImageItem]) -> SplitPlan:
    return SplitPlan(labels=np.array([r.label for r in recordings], dtype=np.int64),
                     sources=[r.source for r in recordings],
                     image_index=np.array([r.image_index for r in recordings], dtype=np.int64),
                     image_labels=np.array([i.label for i in images], dtype=np.int64),
                     image_sources=[i.source for i in images])


def check_source(data: SourceData, name: str) -> None:
    """A source's output must be coherent; anything wrong here is a bug in the source."""
    if not data.classes:
        raise TmktError(f"prepare.dataset {name!r}: the source found no classes")
    if not data.train:
        raise TmktError(f"prepare.dataset {name!r}: the source found no training recordings")
    for split, recordings, images in (("train", data.train, data.train_images),
                                      ("test", data.test, data.test_images)):
        for r in recordings:
            if not 0 <= r.label < len(data.classes):
                raise ValueError(f"{split} recording {r.source}: label {r.label} outside "
                                 f"{len(data.classes)} classes")
            if not -1 <= r.image_index < len(images):
                raise ValueError(f"{split} recording {r.source}: image_index {r.image_index} "
                                 f"outside the {len(images)} images of the split")
        for i in images:
            if not 0 <= i.label < len(data.classes):
                raise ValueError(f"{split} image {i.source}: label {i.label} outside "
                                 f"{len(data.classes)} classes")


def run(recipe: Recipe, run: StageRun, ui: Console) -> None:
    cfg = recipe.prepare
    started = time.time()
    root = raw_root(cfg)
    data = sources.get(cfg.dataset)(root, cfg)
    check_source(data, cfg.dataset)
    plans = {"train": plan_split(data.train, data.train_images),
             "test": plan_split(data.test, data.test_images)}
    recordings = {"train": data.train, "test": data.test}
    images = {"train": data.train_images, "test": data.test_images}
    listing = raw_listing(root)
    header = StoreHeader(dataset=cfg.dataset, classes=list(data.classes),
                         time_steps=cfg.time_steps, size=cfg.size, split_by=cfg.split_by,
                         prepare_config=dump_yaml(stage_config(recipe, "prepare")),
                         config_hash=run.config_hash, info=data.info, raw=listing)
    path = run.folder / FILENAME

    digest = _already_written(path, header, plans)
    fresh = {"recordings": 0, "events": 0}
    if digest is None:
        pool = OrderedPool(cfg.workers)
        ok = False
        try:
            with DatasetWriter(path, header, plans, flush_every=cfg.flush_every,
                               log=lambda msg: ui.print(f"prepare: {msg}")) as writer:
                _write_all(writer, pool, cfg, recordings, images, run, ui, fresh)
                digest = writer.finish()
            ok = True
        finally:
            pool.close(ok)
    else:
        ui.print(f"prepare: {path} is already complete; recording it")

    metrics = _metrics(path, listing, cfg)
    seconds = time.time() - started
    metrics["seconds_this_attempt"] = round(seconds, 2)
    if fresh["recordings"]:
        metrics["recordings_per_s_this_attempt"] = round(fresh["recordings"] / seconds, 1)
    run.complete(outputs={"dataset": FILENAME}, metrics=metrics, hashes={"dataset": digest})
    ui.print(f"prepare: {metrics['recordings']} recordings ({metrics['events']:,} events, "
             f"{metrics['dropped_events']:,} dropped outside the sensor) and "
             f"{metrics['images']} images in {path}")
    for warning in plausibility_warnings(metrics):
        ui.print(f"[yellow]prepare: warning:[/yellow] {warning}")


DROPPED_WARNING = 0.05
"""A share of events outside the sensor past which prepare warns (a wrong sensor size, or
another dataset's format under the expected extension)."""


def plausibility_warnings(metrics: dict) -> list[str]:
    """What a finished prepare should say out loud: recordings that integrated to no event at
    all (a wrong time unit squeezes a recording into nothing, or a file held only
    bookkeeping), and events dropped outside the sensor past :data:`DROPPED_WARNING`."""
    out = []
    empty = {s: v.get("empty_recordings", 0) for s, v in metrics["splits"].items()}
    if sum(empty.values()):
        where = ", ".join(f"{n} of {metrics['splits'][s]['recordings']} in {s}"
                          for s, n in empty.items() if n)
        out.append(f"{sum(empty.values())} recording(s) have no event in their frames ({where})"
                   f": a wrong time unit or empty files? They train as blank samples; "
                   f"dataset.h5's /<split>/sources names them (event_counts 0)")
    kept, dropped = metrics["events"], metrics["dropped_events"]
    if kept + dropped and dropped / (kept + dropped) > DROPPED_WARNING:
        out.append(f"{dropped / (kept + dropped):.0%} of the events fell outside the sensor "
                   f"({dropped:,} of {kept + dropped:,}): a wrong sensor size, or files of "
                   f"another format under this dataset's extension?")
    return out


def _already_written(path: Path, header: StoreHeader, plans: dict[str, SplitPlan]
                     ) -> str | None:
    """The content hash of a complete ``dataset.h5`` made with this configuration (a run
    killed after the rename but before its manifest was written), or None."""
    if not path.exists():
        return None
    try:
        with open_dataset(path) as ds:
            same = (ds.config_hash == header.config_hash
                    and ds.file.attrs.get("raw") == json.dumps(header.raw, sort_keys=True,
                                                               default=str)
                    and all(np.array_equal(ds.labels(s), plans[s].labels)
                            and np.array_equal(ds.image_labels(s), plans[s].image_labels)
                            for s in SPLITS))
            return ds.content_hash if same else None
    except TmktError:
        return None


def _write_all(writer: DatasetWriter, pool: OrderedPool, cfg: PrepareConfig,
               recordings: dict[str, list[Recording]], images: dict[str, list[ImageItem]],
               run: StageRun, ui: Console, fresh: dict) -> None:
    todo_images = {s: len(images[s]) - writer.committed(s, "images") for s in SPLITS}
    todo_recordings = {s: len(recordings[s]) - writer.committed(s, "recordings")
                       for s in SPLITS}
    progress = progress_bar(ui, info=True)
    with progress:
        image_bar = progress.add_task("images", total=sum(todo_images.values()), info="")
        recording_bar = progress.add_task("recordings", total=sum(todo_recordings.values()),
                                          info="")
        for split in SPLITS:
            start = writer.committed(split, "images")
            for image in pool.map(load_image, images[split][start:], cfg.size):
                writer.add_image(split, image)
                progress.advance(image_bar)
        t0 = time.perf_counter()
        last_update = t0
        for split in SPLITS:
            start = writer.committed(split, "recordings")
            for result in pool.map(integrate_recording, recordings[split][start:],
                                   cfg.time_steps, cfg.size, cfg.split_by, cfg.align_corners,
                                   cfg.sensor_extent):
                writer.add_packed(split, result)
                fresh["recordings"] += 1
                fresh["events"] += result.event_count
                now = time.perf_counter()
                elapsed = max(now - t0, 1e-9)
                progress.update(recording_bar, advance=1, info=(
                    f"{fresh['recordings'] / elapsed:,.0f} rec/s  "
                    f"{fresh['events'] / elapsed / 1e6:,.2f} M events/s"))
                if now - last_update > 30:  # progress in the manifest, for `cat` and scripts
                    last_update = now
                    run.update(metrics={"progress": {
                        s: {"recordings": writer.committed(s, "recordings"),
                            "of": len(recordings[s])} for s in SPLITS}})


def _metrics(path: Path, listing: dict, cfg: PrepareConfig) -> dict:
    """Counts read back from the finished file (so they include samples written before a
    resume)."""
    with open_dataset(path) as ds:
        per_split = {}
        for split in SPLITS:
            g = ds.split(split)
            counts, dropped = g["event_counts"][()], g["dropped_events"][()]
            per_split[split] = {"recordings": int(counts.size),
                                "images": int(g["image_labels"].shape[0]),
                                "events": int(counts.sum()),
                                "dropped_events": int(dropped.sum()),
                                "empty_recordings": int((counts == 0).sum()),
                                "mean_events": round(float(counts.mean()), 1)
                                if counts.size else 0.0}
        return {"dataset": cfg.dataset, "classes": len(ds.classes),
                "recordings": sum(v["recordings"] for v in per_split.values()),
                "images": sum(v["images"] for v in per_split.values()),
                "events": sum(v["events"] for v in per_split.values()),
                "dropped_events": sum(v["dropped_events"] for v in per_split.values()),
                "splits": per_split, "sensor_sizes": [list(s) for s in ds.sensor_sizes],
                "raw": listing, "content_hash": ds.content_hash,
                "file_bytes": path.stat().st_size}


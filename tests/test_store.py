"""The prepared-dataset HDF5 store: layout round trip, kill-safe resume, clear errors."""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from tmkt_cli.data.store import (
    FILENAME,
    SCHEMA_VERSION,
    DatasetWriter,
    SplitPlan,
    StoreHeader,
    iter_arrays,
    open_dataset,
    pack_recording,
    recompute_content_hash,
)
from tmkt_cli.errors import TmktError

REPO = Path(__file__).resolve().parent.parent
T, S = 3, 6


def plans(n_train=11, n_test=4, m_train=5, m_test=2) -> dict[str, SplitPlan]:
    def plan(n, m, prefix):
        return SplitPlan(labels=np.arange(n) % 3, sources=[f"{prefix}/r{i}" for i in range(n)],
                         image_index=np.arange(n) % max(m, 1) if m else np.full(n, -1),
                         image_labels=np.arange(m) % 3,
                         image_sources=[f"{prefix}/img{i}.png" for i in range(m)])
    return {"train": plan(n_train, m_train, "train"), "test": plan(n_test, m_test, "test")}


def header(config_hash="abc") -> StoreHeader:
    return StoreHeader(dataset="toy", classes=["a", "b", "c"], time_steps=T, size=S,
                       split_by="time", prepare_config="prepare: {}\n", config_hash=config_hash,
                       info={"class_names": {"0": "a"}})


def sample(split: str, i: int):
    rng = np.random.default_rng([0 if split == "train" else 1, i])
    frames = rng.integers(0, 4, (T, 2, S, S)).astype(np.float32) / 2
    return frames, int(rng.integers(0, 1000)), i % 2, (30 + i, 40)


def image(split: str, i: int) -> np.ndarray:
    return np.random.default_rng([2 if split == "train" else 3, i]).integers(
        0, 256, (S, S, 3), dtype=np.uint8)


def write_all(writer: DatasetWriter, p: dict[str, SplitPlan], stop_after: int | None = None):
    """Add everything not yet committed, in order; stop (without finishing) after
    ``stop_after`` additions."""
    added = 0
    for split in ("train", "test"):
        for i in range(writer.committed(split, "images"), p[split].images):
            writer.add_image(split, image(split, i))
            added += 1
            if stop_after is not None and added >= stop_after:
                return False
        for i in range(writer.committed(split, "recordings"), p[split].recordings):
            writer.add_recording(split, *sample(split, i))
            added += 1
            if stop_after is not None and added >= stop_after:
                return False
    return True


def build(folder: Path, flush_every=3, **plan_sizes) -> tuple[Path, str]:
    p = plans(**plan_sizes)
    path = folder / FILENAME
    with DatasetWriter(path, header(), p, flush_every=flush_every) as w:
        write_all(w, p)
        digest = w.finish()
    return path, digest


def assert_same_arrays(a: Path, b: Path) -> None:
    left, right = dict(iter_arrays(a)), dict(iter_arrays(b))
    assert left.keys() == right.keys()
    for name in left:
        np.testing.assert_array_equal(left[name], right[name], err_msg=name)


def test_round_trip_layout_and_content_hash(tmp_path):
    path, digest = build(tmp_path)
    assert not (tmp_path / (FILENAME + ".partial")).exists()
    with open_dataset(path) as ds:
        assert ds.classes == ["a", "b", "c"] and ds.time_steps == T and ds.size == S
        assert ds.split_by == "time" and ds.info["class_names"] == {"0": "a"}
        assert ds.content_hash == digest and ds.config_hash == "abc"
        assert sorted(ds.sensor_sizes) == sorted({(30 + i, 40) for i in range(11)})
        g = ds.split("train")
        assert g["frames"].shape == (11, T, 2, S, S) and g["frames"].dtype == np.float32
        assert g["frames"].chunks == (1, T, 2, S, S) and g["frames"].compression == "gzip"
        for i in (0, 7, 10):
            frames, count, dropped, sensor = sample("train", i)
            np.testing.assert_array_equal(g["frames"][i], frames)
            assert g["event_counts"][i] == count and g["dropped_events"][i] == dropped
            assert tuple(g["sensor_size"][i]) == sensor
        np.testing.assert_array_equal(g["images"][4], image("train", 4))
        assert ds.sources("test") == [f"test/r{i}" for i in range(4)]
        np.testing.assert_array_equal(ds.labels("train"), np.arange(11) % 3)
        assert g["labels"].dtype == np.int64 and g["image_index"].dtype == np.int64
        assert h5py.File(path)["test"]["image_sources"].asstr()[1] == "test/img1.png"
    assert recompute_content_hash(path) == digest


def test_a_store_written_at_the_former_gzip_level_reads_the_same(tmp_path, monkeypatch):
    """The gzip level changed from 4 to 1 (docs/performance.md): files written at level 4
    decode to the same arrays and keep the same content hash."""
    import tmkt_cli.data.store as store

    level = store.GZIP_LEVEL
    path, digest = build(tmp_path / "now")
    monkeypatch.setattr(store, "GZIP_LEVEL", 4)
    monkeypatch.setattr(store, "COMPRESSION", {"compression": "gzip", "compression_opts": 4})
    old_path, old_digest = build(tmp_path / "level4")
    with h5py.File(path) as now, h5py.File(old_path) as old:
        assert now["train/frames"].compression_opts == level != 4
        assert old["train/frames"].compression_opts == 4
        # The frames chunks really differ: written by pack_recording at each level.
        assert now["train/frames"].id.read_direct_chunk((0, 0, 0, 0, 0))[1] != \
            old["train/frames"].id.read_direct_chunk((0, 0, 0, 0, 0))[1]
    assert old_digest == digest
    assert recompute_content_hash(old_path) == digest
    assert_same_arrays(old_path, path)


def test_empty_splits_and_no_images(tmp_path):
    path, digest = build(tmp_path, n_test=0, m_train=0, m_test=0)
    with open_dataset(path) as ds:
        assert ds.split("test")["frames"].shape == (0, T, 2, S, S)
        assert ds.split("train")["images"].shape == (0, S, S, 3)
        assert (ds.image_index("train") == -1).all()
    assert recompute_content_hash(path) == digest


@pytest.mark.parametrize("stop_after", [1, 4, 9, 17])
def test_resume_after_a_stop_equals_an_uninterrupted_run(tmp_path, stop_after):
    reference, reference_digest = build(tmp_path / "ref")
    p = plans()
    path = tmp_path / "run" / FILENAME
    with DatasetWriter(path, header(), p, flush_every=3) as w:
        assert write_all(w, p, stop_after=stop_after) is False
    partial = path.with_name(FILENAME + ".partial")
    assert partial.exists() and not path.exists()
    messages = []
    # a different flush cadence on resume (it is a volatile key) changes nothing
    with DatasetWriter(path, header(), p, flush_every=5, log=messages.append) as w:
        committed = sum(w.committed(s, k) for s in ("train", "test")
                        for k in ("recordings", "images"))
        assert stop_after - 3 < committed <= stop_after  # at most one block is lost
        assert any("resuming" in m for m in messages)
        write_all(w, p)
        digest = w.finish()
    assert digest == reference_digest
    assert_same_arrays(reference, path)


def test_partial_from_another_config_or_garbage_is_started_again(tmp_path):
    p = plans()
    path = tmp_path / FILENAME
    with DatasetWriter(path, header("old"), p, flush_every=2) as w:
        write_all(w, p, stop_after=6)
    messages = []
    with DatasetWriter(path, header("new"), p, log=messages.append) as w:
        assert w.committed("train", "images") == 0
    assert any("another configuration" in m for m in messages)
    with DatasetWriter(path, header("new"), p, flush_every=2) as w:
        write_all(w, p, stop_after=6)
    messages.clear()
    other_raw = dataclasses.replace(header("new"), raw={"root": "/data", "listing_hash": "x"})
    with DatasetWriter(path, other_raw, p, log=messages.append) as w:
        assert w.committed("train", "images") == 0
    assert any("made from other raw files" in m for m in messages)
    path.with_name(FILENAME + ".partial").write_bytes(b"not hdf5 at all" * 10)
    messages.clear()
    with DatasetWriter(path, header(), p, log=messages.append) as w:
        write_all(w, p)
        w.finish()
    assert any("unreadable" in m for m in messages)
    assert recompute_content_hash(path) == open_dataset(path).content_hash


KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    import test_store as t
    from tmkt_cli.data.store import DatasetWriter
    p = t.plans(n_train=int(sys.argv[2]), n_test=12, m_train=9, m_test=4)
    with DatasetWriter(sys.argv[1], t.header(), p, flush_every=2) as w:
        print("start", flush=True)
        for split in ("train", "test"):
            for i in range(w.committed(split, "images"), p[split].images):
                w.add_image(split, t.image(split, i)); time.sleep(0.002)
            for i in range(w.committed(split, "recordings"), p[split].recordings):
                w.add_recording(split, *t.sample(split, i)); time.sleep(0.002)
                print("added", flush=True)
        w.finish()
    print("done", flush=True)
""")


def kill_and_resume(tmp_path: Path, kills: int, seed: int, n_train: int) -> int:
    """Run the writer, SIGKILL it at random moments ``kills`` times (or until it finishes),
    finish it, and compare with an uninterrupted run. Returns how many kills landed."""
    script = tmp_path / "writer.py"
    script.write_text(KILL_SCRIPT.format(tests=str(Path(__file__).parent)))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    reference = tmp_path / "ref" / FILENAME
    subprocess.run([sys.executable, str(script), str(reference), str(n_train)], env=env,
                   check=True, capture_output=True)
    target = tmp_path / "killed" / FILENAME
    target.parent.mkdir()
    rng = random.Random(seed)
    landed = 0
    for _ in range(kills):
        proc = subprocess.Popen([sys.executable, str(script), str(target), str(n_train)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True)
        assert proc.stdout.readline().strip() == "start"
        time.sleep(rng.uniform(0.0, 0.05))  # somewhere in the writing, flushes included
        proc.send_signal(signal.SIGKILL)
        landed += proc.wait() == -signal.SIGKILL
        proc.stdout.close()
        if target.exists():
            break
    subprocess.run([sys.executable, str(script), str(target), str(n_train)], env=env,
                   check=True, capture_output=True)
    assert_same_arrays(reference, target)
    assert open_dataset(target).content_hash == open_dataset(reference).content_hash
    assert recompute_content_hash(target) == open_dataset(target).content_hash
    return landed


def test_sigkill_at_random_moments_then_resume_gives_the_same_arrays(tmp_path):
    assert kill_and_resume(tmp_path, kills=4, seed=1, n_train=60) >= 3


@pytest.mark.faults
def test_many_sigkills(tmp_path):
    assert kill_and_resume(tmp_path, kills=60, seed=2, n_train=1500) >= 50


def test_open_dataset_errors_name_the_file(tmp_path):
    missing = tmp_path / "nothing" / FILENAME
    with pytest.raises(TmktError, match=r"nothing/dataset.h5: prepared dataset not found.*"
                                        r"tmkt prepare"):
        open_dataset(missing)

    junk = tmp_path / "junk.h5"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(TmktError, match=r"junk.h5: not a readable HDF5 file"):
        open_dataset(junk)

    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.attrs["tool"] = "tonic"
        f.create_dataset("x", data=[1, 2])
    with pytest.raises(TmktError, match=r"other.h5: not a tmkt prepared dataset \(written by "
                                        r"'tonic'\)"):
        open_dataset(other)
    bare = tmp_path / "bare.h5"
    h5py.File(bare, "w").close()
    with pytest.raises(TmktError, match=r"bare.h5: not a tmkt prepared dataset"):
        open_dataset(bare)

    path, _ = build(tmp_path / "ok")
    for value, word in ((SCHEMA_VERSION - 1, "an older"), (SCHEMA_VERSION + 1, "a newer")):
        with h5py.File(path, "r+") as f:
            f.attrs["schema_version"] = value
        with pytest.raises(TmktError, match=rf"dataset.h5: written with {word} dataset schema"):
            open_dataset(path)
    with h5py.File(path, "r+") as f:
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["complete"] = False
    with pytest.raises(TmktError, match=r"dataset.h5: incomplete"):
        open_dataset(path)
    with h5py.File(path, "r+") as f:
        f.attrs["complete"] = True
        del f["test"]["labels"]
    with pytest.raises(TmktError, match=r"dataset.h5: damaged prepared dataset \(/test lacks "
                                        r"labels\)"):
        open_dataset(path)

    truncated, _ = build(tmp_path / "cut")
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(TmktError, match=r"cut/dataset.h5: not a readable HDF5 file"):
        open_dataset(truncated)


def test_partial_only_says_how_to_finish(tmp_path):
    p = plans()
    with DatasetWriter(tmp_path / FILENAME, header(), p) as w:
        write_all(w, p, stop_after=2)
    with pytest.raises(TmktError, match="unfinished prepare left dataset.h5.partial"):
        open_dataset(tmp_path)


def stopped_partial(tmp_path: Path, stop_after: int):
    """An uninterrupted reference file (and its digest), and a writer stopped after
    ``stop_after`` additions: (reference, digest, path, partial, committed train recordings)."""
    reference, reference_digest = build(tmp_path / "ref", flush_every=2)
    p = plans()
    path = tmp_path / "run" / FILENAME
    with DatasetWriter(path, header(), p, flush_every=2) as w:
        write_all(w, p, stop_after=stop_after)
        committed = w.committed("train", "recordings")
    return reference, reference_digest, path, path.with_name(FILENAME + ".partial"), committed


def test_a_partial_whose_superblock_lags_its_chunk_index_resumes_to_the_same_arrays(tmp_path):
    """HDF5 is not crash-consistent: a SIGKILL inside a flush can leave a chunk written and
    indexed while the superblock still holds the old end-of-allocation address. Writing that
    chunk again in place then fails ("addr overflow"; seen in CI, 1 run in 6 of 60 kills under
    load). Built here directly: commit some samples, write the next chunk past the count, then
    put back the superblock's end-of-file address from before."""
    reference, reference_digest, path, partial, nxt = stopped_partial(tmp_path, stop_after=10)
    p = plans()
    eoa_field = slice(40, 48)  # superblock version 0: the end-of-file address
    old_eoa = partial.read_bytes()[eoa_field]
    with h5py.File(partial, "r+") as f:
        for i in range(nxt, nxt + 3):
            f["train/frames"].id.write_direct_chunk(
                (i, 0, 0, 0, 0), pack_recording(*sample("train", i)).chunk)
    with open(partial, "r+b") as handle:
        assert handle.read(8) == b"\x89HDF\r\n\x1a\n"
        handle.seek(eoa_field.start)
        assert handle.read(8) != old_eoa  # the chunks did grow the file
        handle.seek(eoa_field.start)
        handle.write(old_eoa)
    messages = []
    with DatasetWriter(path, header(), p, flush_every=2, log=messages.append) as w:
        write_all(w, p)
        digest = w.finish()
    assert digest == reference_digest
    assert_same_arrays(reference, path)
    assert recompute_content_hash(path) == digest


@pytest.mark.parametrize("damage", ["garbled chunk", "other samples"])
def test_a_partial_whose_committed_samples_do_not_check_is_started_again(tmp_path, damage):
    """Resuming checks every committed sample against its split's hash chain: a chunk that
    no longer decodes, or one that decodes to other data, means the partial is not trusted."""
    reference, reference_digest, path, partial, nxt = stopped_partial(tmp_path, stop_after=12)
    assert nxt >= 4
    p = plans()
    with h5py.File(partial, "r+") as f:
        frames = f["train/frames"].id
        if damage == "other samples":
            frames.write_direct_chunk((2, 0, 0, 0, 0), pack_recording(*sample("train", 3)).chunk)
            offset = None
        else:
            info = frames.get_chunk_info_by_coord((2, 0, 0, 0, 0))
            offset, size = info.byte_offset, info.size
    if offset is not None:
        with open(partial, "r+b") as handle:
            handle.seek(offset + size // 2)
            handle.write(b"\xff" * 8)
    messages = []
    with DatasetWriter(path, header(), p, flush_every=2, log=messages.append) as w:
        assert w.committed("train", "recordings") == 0
        write_all(w, p)
        digest = w.finish()
    assert any("damaged" in m and "starting it again" in m for m in messages), messages
    assert not partial.with_name(partial.name + ".copy").exists()
    assert digest == reference_digest
    assert_same_arrays(reference, path)

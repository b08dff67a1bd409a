"""Issue 15's promises that need more than one CLI call to show: running out of GPU memory
mid-run (injected on the CPU), a read-only file system, a gzip bomb, and the pure helpers
(memory estimates, strict YAML, event-file checks, manifest verification)."""

from __future__ import annotations

import io
import os
import re
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from tmkt_cli.cli import app
from tmkt_cli.config import safe_yaml
from tmkt_cli.data import archives, validate
from tmkt_cli.errors import TmktError
from tmkt_cli.runs.artifacts import verify_outputs, write_json
from tmkt_cli.train import engine, memory

sys.path.insert(0, str(Path(__file__).parent))
import toy  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DIGITS_RECIPE = str(REPO / "recipes" / "digits" / "tmkt.yaml")


def one_error_line(result) -> str:
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == 2, (result.exit_code, result.output)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


# --------------------------------------------------------------------------------------------
# Out of memory mid-run
# --------------------------------------------------------------------------------------------

def test_out_of_memory_mid_run_is_one_line_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    original = toy.ToyTask.training_step

    def step(self, batch, ctx):
        if ctx.step == 5:
            raise engine.OUT_OF_MEMORY("CUDA out of memory. Tried to allocate 20.00 GiB")
        return original(self, batch, ctx)

    monkeypatch.setattr(toy.ToyTask, "training_step", step)
    folder = tmp_path / "run"
    with pytest.raises(TmktError) as error:
        toy.train(folder)
    text = str(error.value)
    assert "\n" not in text
    assert re.search(r"out of memory at train\.batch_size=16 \(estimate: inputs [\d.]+ \w+ a "
                     r"batch, weights\+gradients\+optimizer [\d.]+ \w+.*CUDA out of memory.*"
                     r"the last checkpoint is kept \(\S+last\.pt\)", text), text
    assert engine.load_checkpoint(folder / engine.LAST)["loop"]["step"] == 5


# --------------------------------------------------------------------------------------------
# File systems and archives
# --------------------------------------------------------------------------------------------

def test_read_only_file_system_is_one_line_naming_the_key(tmp_path, monkeypatch):
    real = os.statvfs

    class ReadOnly:
        def __init__(self, result):
            self._result = result
            self.f_flag = result.f_flag | os.ST_RDONLY

        def __getattr__(self, name):
            return getattr(self._result, name)

    monkeypatch.setattr(os, "statvfs", lambda p: ReadOnly(real(p)))
    result = CliRunner().invoke(app, ["train-tmkt", DIGITS_RECIPE, "--set",
                                      f"paths.runs={tmp_path}/runs"])
    line = one_error_line(result)
    assert re.search(rf"{re.escape(str(tmp_path))}: on a read-only file system \(EROFS\), so "
                     rf"\S+ cannot be written \(from recipe key paths\.runs\)", line), line
    assert not (tmp_path / "runs").exists()


def test_gzip_archive_expanding_past_the_limit_is_refused(tmp_path, monkeypatch):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("a/zeros.bin")
        info.size = 1 << 20
        archive.addfile(info, io.BytesIO(b"\0" * info.size))
    path = tmp_path / "bomb.tar.gz"
    path.write_bytes(buffer.getvalue())
    monkeypatch.setattr(archives, "MAX_GUNZIP_BYTES", 100_000)
    archives.clear_cache()
    with pytest.raises(TmktError, match=r"bomb\.tar\.gz: expands past 0\.0 GiB when "
                                        r"decompressed .*refused"):
        archives.list_members(path)
    archives.clear_cache()


def test_compressed_archives_are_streamed_not_held_in_memory(tmp_path):
    """Issue 27: a .tar.gz (and a compressed archive nested in a zip) was expanded whole in
    memory, so one that expands past memory was a MemoryError. Streamed into a temporary file
    a chunk at a time, 64 MiB of expanded archive costs a few MiB of Python memory."""
    import tracemalloc
    import zipfile

    expanded = 64 << 20
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as archive:
        info = tarfile.TarInfo("a/zeros.bin")
        info.size = expanded
        archive.addfile(info, io.BytesIO(b"\0" * info.size))
        small = tarfile.TarInfo("a/small.bin")
        small.size = 5
        archive.addfile(small, io.BytesIO(b"hello"))
    (tmp_path / "big.tar.gz").write_bytes(buffer.getvalue())
    with zipfile.ZipFile(tmp_path / "outer.zip", "w", zipfile.ZIP_DEFLATED) as outer:
        outer.writestr("inner.tar", (tmp_path / "big.tar.gz").read_bytes())  # stays gzip
    del buffer
    for path, inner in ((tmp_path / "big.tar.gz", ()), (tmp_path / "outer.zip",
                                                         ("inner.tar",))):
        archives.clear_cache()
        tracemalloc.start()
        try:
            assert "a/zeros.bin" in archives.list_members(path, inner)
            assert archives.read_member(path, "a/small.bin", inner) == b"hello"
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            archives.clear_cache()
        assert peak < 16 << 20, (path.name, peak)


# --------------------------------------------------------------------------------------------
# Memory estimates
# --------------------------------------------------------------------------------------------

def test_memory_estimates_are_the_array_sizes():
    assert memory.frames_bytes(10, 48) == np.zeros((10, 2, 48, 48), np.float32).nbytes
    assert memory.store_bytes(3, 2, 10, 48) == 3 * 10 * 2 * 48 * 48 * 4 + 2 * 48 * 48 * 3
    assert memory.batch_input_bytes(8, 10, 48, streams=2) == 16 * memory.frames_bytes(10, 48)
    assert memory.prepare_bytes(4, 8, flush_every=64, workers=3) == 70 * 4 * 2 * 8 * 8 * 4
    assert memory.optimizer_bytes(1000) == 16_000
    assert memory.human_bytes(3 << 30) == "3.0 GiB" and memory.human_bytes(12) == "12 B"


def test_available_memory_reads_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 100 kB\nMemAvailable:   2048 kB\n")
    assert memory.available_memory(meminfo) == 2048 * 1024
    meminfo.write_text("garbage\n")
    assert memory.available_memory(meminfo) is None
    assert memory.available_memory(tmp_path / "absent") is None


# --------------------------------------------------------------------------------------------
# Strict YAML
# --------------------------------------------------------------------------------------------

def test_strict_yaml_keeps_merge_keys_and_small_aliases():
    text = "base: &b {lr: 0.1, epochs: 3}\ntrain:\n  <<: *b\n  epochs: 5\nlist: [*b, *b]\n"
    data = safe_yaml.load(text)
    assert data["train"] == {"lr": 0.1, "epochs": 5}
    assert data == yaml.safe_load(text)


def test_strict_yaml_refuses_duplicates_and_bombs():
    with pytest.raises(yaml.YAMLError, match=r"duplicate key 'a' \(lines 1 and 3\)"):
        safe_yaml.load("a: 1\nb: 2\na: 3\n")
    bomb = "a: &a [1, 1, 1, 1]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}]\n" for i in range(9))
    with pytest.raises(safe_yaml.AliasBombError):
        safe_yaml.load(bomb)
    shared = [1, 2]
    assert safe_yaml.expanded_size({"x": shared, "y": shared}) == 7


# --------------------------------------------------------------------------------------------
# Event-file checks
# --------------------------------------------------------------------------------------------

def test_event_checks():
    validate.check_time_span(np.array([0, 5_000_000]), "ok.bin")
    validate.check_finite_times(np.array([0.0, 1.5]), "ok.npy")
    validate.check_has_events(3, 10, "ok.bin")
    with pytest.raises(TmktError, match=r"^x\.bin: the timestamps span 3,601 s"):
        validate.check_time_span(np.array([10, 10 + 3_601_000_000]), "x.bin")
    with pytest.raises(TmktError, match=r"^x\.npy: 2 timestamp\(s\) are NaN or infinite "
                                        r"\(first at event 1\)"):
        validate.check_finite_times(np.array([0.0, np.inf, np.nan]), "x.npy")
    with pytest.raises(TmktError, match=r"^x\.bin: 5 time-overflow/special record"):
        validate.check_has_events(0, 5, "x.bin")
    with pytest.raises(TmktError, match=r"^x\.aedat: a header and no event; not a recording"):
        validate.check_has_events(0, 0, "x.aedat")


# --------------------------------------------------------------------------------------------
# Manifest verification
# --------------------------------------------------------------------------------------------

def test_verify_outputs_names_each_problem(tmp_path):
    from tmkt_cli.runs.artifacts import file_hash

    (tmp_path / "a.bin").write_bytes(b"12345")
    (tmp_path / "b.bin").write_bytes(b"abcde")
    manifest = {"outputs": {
        "a": {"path": "a.bin", "size": 5, "sha256": file_hash(tmp_path / "a.bin")},
        "b": {"path": "b.bin", "size": 5, "sha256": "0" * 64},
        "c": {"path": "c.bin", "size": 1, "sha256": "0" * 64},
        "d": {"path": "a.bin", "size": 6, "sha256": "0" * 64}}}
    write_json(tmp_path / "m.json", manifest)
    problems = verify_outputs(tmp_path, manifest)
    assert set(problems) == {"b", "c", "d"}
    assert "another content" in problems["b"] and "missing" in problems["c"]
    assert "has 5 bytes, the manifest says 6" in problems["d"]
    assert set(verify_outputs(tmp_path, manifest, hash_up_to=0)) == {"c", "d"}


def test_complete_refuses_a_missing_output(tmp_path):
    from tmkt_cli.runs.artifacts import open_stage

    run = open_stage(tmp_path / "run", "train-tmkt", "x: 1\n", {"x": 1}, "h")
    with run:
        run.start()
        with pytest.raises(RuntimeError, match="output 'best' .* is not in place"):
            run.complete({"best": "best.pt"})

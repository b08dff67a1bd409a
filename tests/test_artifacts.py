"""Run folders: atomic writes, manifests, the resume decision, locks, upstream checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tmkt_cli.errors import TmktError
from tmkt_cli.runs import artifacts
from tmkt_cli.runs.artifacts import open_stage, read_upstream


def start(folder, cfg=None, inputs=None, **kw):
    cfg = cfg or {"a": 1}
    return open_stage(folder, "train-tmkt", "a: 1\n", cfg, str(sorted(cfg.items())),
                      inputs or {}, **kw)


def finish(folder, cfg=None, inputs=None):
    run = start(folder, cfg, inputs)
    with run:
        run.start()
        (folder / "out.bin").write_bytes(b"weights")
        run.complete({"checkpoint": "out.bin"}, {"acc": 0.5})
    return run


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    p = tmp_path / "f.json"
    artifacts.write_json(p, {"x": 1})
    artifacts.write_json(p, {"x": 2})
    assert json.loads(p.read_text()) == {"x": 2}
    assert [q.name for q in tmp_path.iterdir()] == ["f.json"]


def test_atomic_write_interrupted_before_rename_leaves_nothing_visible(tmp_path):
    p = tmp_path / "ckpt.pt"
    with pytest.raises(RuntimeError), artifacts.atomic_path(p) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert not p.exists() and list(tmp_path.iterdir()) == []


def test_atomic_write_interrupted_keeps_previous_version(tmp_path):
    p = tmp_path / "ckpt.pt"
    artifacts.write_bytes(p, b"v1")
    with pytest.raises(RuntimeError), artifacts.atomic_path(p) as tmp:
        tmp.write_bytes(b"v2-partial")
        raise RuntimeError
    assert p.read_bytes() == b"v1"


def test_sigkill_between_temp_and_rename_leaves_no_visible_file(tmp_path):
    """A real process killed after writing the temporary but before the rename."""
    target = tmp_path / "result.json"
    code = textwrap.dedent(f"""
        import os, signal
        from tmkt_cli.runs import artifacts
        with artifacts.atomic_path({str(target)!r}) as tmp:
            tmp.write_text("{{}}")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", code])
    assert proc.returncode == -9
    assert not target.exists()
    leftovers = list(tmp_path.iterdir())
    assert all(artifacts.TMP_MARK in p.name for p in leftovers)
    artifacts.remove_stale_temporaries(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_fresh_then_up_to_date(tmp_path):
    folder = tmp_path / "run"
    assert start(folder, dry_run=True).decision == "fresh"
    finish(folder)
    m = artifacts.read_manifest(folder)
    assert m["status"] == "complete" and m["metrics"] == {"acc": 0.5}
    assert m["outputs"]["checkpoint"]["size"] == len(b"weights")
    assert m["versions"]["python"] and m["timings"]["attempts"] == 1
    assert (folder / "config.yaml").read_text() == "a: 1\n"
    assert start(folder).decision == "up-to-date"


def test_changed_config_refused_names_keys_then_forced(tmp_path):
    folder = tmp_path / "run"
    finish(folder)
    with pytest.raises(TmktError, match=r"config changed \(a\).*--force"):
        start(folder, cfg={"a": 2})
    run = start(folder, cfg={"a": 2}, force=True)
    assert run.decision == "fresh"
    assert not (folder / "out.bin").exists()  # the old run was discarded
    run.release()


def test_changed_inputs_refused(tmp_path):
    folder = tmp_path / "run"
    finish(folder, inputs={"dataset": {"path": "d", "hash": "h1"}})
    with pytest.raises(TmktError, match=r"inputs changed \(dataset\)"):
        start(folder, inputs={"dataset": {"path": "d", "hash": "h2"}})


def test_interrupted_run_resumes_or_restarts(tmp_path):
    folder = tmp_path / "run"
    run = start(folder)
    run.start()
    (folder / "partial.bin").write_bytes(b"x")
    run.release()  # the process died: manifest still says running
    assert artifacts.read_manifest(folder)["status"] == "running"
    resumed = start(folder)
    assert resumed.decision == "resume" and (folder / "partial.bin").exists()
    resumed.release()
    again = start(folder, resume="never")
    assert again.decision == "fresh" and not (folder / "partial.bin").exists()
    again.release()


def test_failed_run_records_error_and_resumes(tmp_path):
    folder = tmp_path / "run"
    with pytest.raises(ValueError), start(folder) as run:
        run.start()
        raise ValueError("boom")
    m = artifacts.read_manifest(folder)
    assert m["status"] == "failed" and "boom" in m["error"]
    r = start(folder)
    assert r.decision == "resume"
    r.release()


def test_second_process_is_locked_out(tmp_path):
    folder = tmp_path / "run"
    run = start(folder)
    code = textwrap.dedent(f"""
        from tmkt_cli.runs.artifacts import open_stage
        from tmkt_cli.errors import TmktError
        try:
            open_stage({str(folder)!r}, "train-tmkt", "", {{"a": 1}}, "h", {{}})
        except TmktError as e:
            print(e)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    run.release()
    assert "another tmkt process is running" in out


def test_refuses_foreign_non_empty_folder(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "thesis.tex").write_text("precious")
    with pytest.raises(TmktError, match="holds no tmkt manifest"):
        start(folder)
    assert (folder / "thesis.tex").exists()


def test_read_upstream_checks(tmp_path):
    with pytest.raises(TmktError, match=r"not found \(from distill\.teacher\).*run `tmkt x`"):
        read_upstream(tmp_path / "none", "pretrain-ann", "distill.teacher", hint="tmkt x")
    folder = tmp_path / "run"
    finish(folder)
    with pytest.raises(TmktError, match="holds a 'train-tmkt' run, expected pretrain-ann"):
        read_upstream(folder, "pretrain-ann", "distill.teacher")
    up = read_upstream(folder, "train-tmkt", "k")
    assert up.output("checkpoint") == folder / "out.bin" and len(up.output_hash) == 16
    (folder / "out.bin").write_bytes(b"tampered, longer")
    with pytest.raises(TmktError, match="not what its run recorded .*has 16 bytes"):
        read_upstream(folder, "train-tmkt", "k")
    os.remove(folder / "out.bin")
    with pytest.raises(TmktError, match="is missing"):
        read_upstream(folder, "train-tmkt", "k")


def test_read_upstream_incomplete(tmp_path):
    folder = tmp_path / "run"
    run = start(folder)
    run.start()
    run.release()
    with pytest.raises(TmktError, match="is running, not complete"):
        read_upstream(folder, "train-tmkt", "distill.teacher")


def test_corrupt_manifest(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(TmktError, match="manifest is not valid JSON"):
        read_upstream(tmp_path, "prepare", "paths.dataset")


def test_timings_count_each_second_once(tmp_path, monkeypatch):
    clock = {"t": 1000.0}
    monkeypatch.setattr(artifacts.time, "time", lambda: clock["t"])
    folder = tmp_path / "run"
    run = start(folder)
    run.start()
    for _ in range(5):
        clock["t"] += 10
        run.update(metrics={})
    assert run.manifest["timings"]["seconds"] == 50
    run.release()
    resumed = start(folder)  # a second attempt adds its own time to the first's
    resumed.start()
    clock["t"] += 7
    resumed.complete({})
    assert resumed.manifest["timings"]["seconds"] == 57
    assert resumed.manifest["timings"]["attempts"] == 2
    resumed.release()


def test_a_run_made_before_a_key_existed_is_not_changed_while_the_key_keeps_its_default(
        tmp_path):
    """A later tmkt adds recipe keys whose defaults keep the earlier behaviour: a run made
    before them is still up to date; set one of them to another value and it is changed."""
    from tmkt_cli.config import schema_default

    assert schema_default("data.val_fraction") == 0.0
    folder = tmp_path / "run"
    old = {"data": {"event_fraction": 1.0}}
    finish(folder, cfg=old)
    now = {"data": {"event_fraction": 1.0, "val_fraction": 0.0}}
    run = start(folder, cfg=now)
    assert run.decision == "up-to-date"
    run.release()
    with pytest.raises(TmktError, match=r"config changed \(data.val_fraction\)"):
        start(folder, cfg={"data": {"event_fraction": 1.0, "val_fraction": 0.1}})
    with pytest.raises(TmktError, match=r"config changed \(data.event_fraction"):
        start(folder, cfg={"data": {"event_fraction": 0.5, "val_fraction": 0.0}})

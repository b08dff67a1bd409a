"""Run folders, manifests, atomic writes and the resume decision.

Every stage writes into one folder holding ``config.yaml`` (the resolved recipe),
``manifest.json`` and its outputs. The manifest is the only thing that says a stage is
complete, and it is written last; every file goes to a temporary name in the same folder and is
renamed into place, so a killed process never leaves a file that looks complete.
docs/artifacts.md describes the layout, the manifest schema and the rules below.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from tmkt_cli import __version__
from tmkt_cli.errors import TmktError, disk_full

MANIFEST = "manifest.json"
CONFIG = "config.yaml"
LOCK = ".lock"
MANIFEST_SCHEMA = 1
TMP_MARK = ".tmp-"

Decision = Literal["fresh", "resume", "up-to-date"]


# --------------------------------------------------------------------------------------------
# Atomic files
# --------------------------------------------------------------------------------------------

def tmp_name(path: Path) -> Path:
    """A temporary sibling of ``path``: same folder (so rename is atomic), unique per process."""
    return path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}")


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is fsynced and renamed to ``path``.

    On any exception the temporary file is removed and ``path`` is untouched (a previous
    version, if any, survives). A full disk is a one-line TmktError naming ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except Exception as e:
        reason = disk_full(e)
        if reason is None:
            raise
        kept = "the previous version is intact" if path.exists() else "nothing was written"
        raise TmktError(f"{path}: {reason} while writing it; {kept} (free some space and "
                        f"run the same command again)") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def remove_stale_temporaries(folder: Path) -> None:
    """Temporary files left by a killed process are never valid: remove them."""
    if folder.is_dir():
        for p in folder.rglob(f"*{TMP_MARK}*"):
            with contextlib.suppress(OSError):
                p.unlink()


def file_hash(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def combined_hash(hashes: dict[str, str]) -> str:
    h = hashlib.sha256()
    for k in sorted(hashes):
        h.update(f"{k}={hashes[k]}\n".encode())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Environment facts recorded in manifests
# --------------------------------------------------------------------------------------------

def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "tmkt": __version__}
    for name in ("torch", "spikingjelly", "tonic", "numpy", "h5py"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_revision() -> str | None:
    """The revision of the tmkt checkout, when it is one (None for an installed wheel)."""
    here = Path(__file__).resolve().parents[2]
    if not (here / ".git").exists():
        return None
    try:
        rev = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("-dirty" if dirty else "")


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------
# Manifests
# --------------------------------------------------------------------------------------------

def read_manifest(folder: Path) -> dict | None:
    path = folder / MANIFEST
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise TmktError(f"{path}: manifest is not valid JSON (not written by tmkt?)") from None
    if not isinstance(data, dict) or data.get("tool") != "tmkt":
        raise TmktError(f"{path}: not a tmkt manifest")
    check_manifest_shape(path, data)
    return data


SMALL_FILE_BYTES = 16 << 20
"""Outputs up to this size are re-hashed by every "up to date" check; larger ones only with
``--verify`` (their size is always checked)."""


def check_manifest_shape(path: Path, data: dict) -> None:
    """A hand-edited manifest is refused with one line naming the field, never misread."""
    if data.get("schema") != MANIFEST_SCHEMA:
        raise TmktError(f"{path}: manifest schema {data.get('schema')!r}, this tmkt reads "
                        f"{MANIFEST_SCHEMA} (written by another tmkt version?); rerun the "
                        f"stage with --force")
    expected = {"inputs": dict, "outputs": dict, "timings": dict, "metrics": dict,
                "stage_config": dict}
    for key, kind in expected.items():
        if key in data and not isinstance(data[key], kind):
            raise TmktError(f"{path}: field '{key}' is {type(data[key]).__name__}, expected "
                            f"a mapping (the manifest was edited or damaged; rerun the stage "
                            f"with --force)")
    for name, out in data.get("outputs", {}).items():
        if not isinstance(out, dict) or not isinstance(out.get("path"), str) or \
                not out["path"] or Path(out["path"]).is_absolute() or ".." in Path(
                    out["path"]).parts:
            raise TmktError(f"{path}: output '{name}' has no valid relative 'path' (the "
                            f"manifest was edited or damaged; rerun the stage with --force)")
    for name, inp in data.get("inputs", {}).items():
        if not isinstance(inp, dict):
            raise TmktError(f"{path}: input '{name}' is not a mapping (the manifest was "
                            f"edited or damaged; rerun the stage with --force)")
    if data.get("status") == "complete" and not data.get("outputs"):
        raise TmktError(f"{path}: says complete but lists no outputs (the manifest was "
                        f"edited or damaged; rerun the stage with --force)")


def verify_outputs(folder: Path, manifest: dict, full: bool = False,
                   hash_up_to: int | None = None) -> dict[str, str]:
    """Why the outputs a manifest lists are not what it recorded: output name -> one phrase
    (missing, another size, another hash); empty when all are intact.

    Every output's size is checked; the sha256 of files up to :data:`SMALL_FILE_BYTES`, and of
    all files when ``full`` (a content hash, like the prepared dataset's, is recomputed from
    the file's arrays). ``hash_up_to`` overrides :data:`SMALL_FILE_BYTES`.
    """
    small = SMALL_FILE_BYTES if hash_up_to is None else hash_up_to
    problems = {}
    for name, out in manifest.get("outputs", {}).items():
        p = folder / out["path"]
        if not p.is_file():
            problems[name] = f"{out['path']} is missing"
            continue
        size = p.stat().st_size
        if size != out.get("size"):
            problems[name] = f"{out['path']} has {size} bytes, the manifest says {out.get('size')}"
            continue
        if not (full or size <= small) or not out.get("sha256"):
            continue
        if out.get("hash_of") == "content":
            if not full:
                continue
            from tmkt_cli.data.store import recompute_content_hash  # the only content hash
            actual = recompute_content_hash(p)
        else:
            actual = file_hash(p)
        if actual != out["sha256"]:
            problems[name] = (f"{out['path']} has another content than recorded (sha256 "
                              f"{actual[:12]}, the manifest says {str(out['sha256'])[:12]})")
    return problems


@dataclass
class Upstream:
    """A finished artifact a stage reads."""

    folder: Path
    manifest: dict

    @property
    def output_hash(self) -> str:
        return self.manifest["output_hash"]

    def output(self, name: str) -> Path:
        return self.folder / self.manifest["outputs"][name]["path"]

    @classmethod
    def for_file(cls, path: str | Path, key: str) -> Upstream:
        """A plain file a stage reads (e.g. user-supplied weights): its content hash stands in
        for an upstream manifest's output hash."""
        path = Path(path)
        if not path.is_file():
            raise TmktError(f"{path}: not found (from {key})")
        return cls(path, {"output_hash": file_hash(path)[:16], "outputs": {}})


def read_upstream(folder: str | Path, stage: str | tuple[str, ...], key: str,
                  hint: str = "") -> Upstream:
    """Check that ``folder`` holds a complete run of ``stage`` and that its outputs are intact.

    ``key`` is the recipe key (or option) that pointed there, named in every error.
    """
    folder = Path(folder)
    stages = (stage,) if isinstance(stage, str) else stage
    run_hint = f"; run `{hint}` first" if hint else ""
    if not folder.exists():
        raise TmktError(f"{folder}: not found (from {key}){run_hint}")
    m = read_manifest(folder)
    if m is None:
        raise TmktError(f"{folder}: no {MANIFEST}, not a tmkt run folder (from {key}){run_hint}")
    if m.get("stage") not in stages:
        raise TmktError(f"{folder}: holds a '{m.get('stage')}' run, expected "
                        f"{' or '.join(stages)} (from {key})")
    if m.get("status") != "complete":
        raise TmktError(f"{folder}: the {m.get('stage')} run is {m.get('status')}, not complete "
                        f"(from {key}); finish it first")
    # Presence and size only: the reader of each file checks its content, with a more
    # precise message than a hash mismatch would give.
    for name, problem in verify_outputs(folder, m, hash_up_to=0).items():
        raise TmktError(f"{folder}: output '{name}' is not what its run recorded ({problem}; "
                        f"from {key}); run that stage again to repair it")
    return Upstream(folder, m)


def _only_new_keys_at_default(old: Any, new: dict) -> bool:
    """True when ``new`` differs from a run's recorded ``old`` stage config only by keys a
    later tmkt added, each at its default (which keeps the earlier behaviour): such a run
    computed what the current recipe computes, so it is not refused as changed."""
    from tmkt_cli.config import schema_default

    if not isinstance(old, dict):
        return False
    keys = _diff_keys(old, new)
    return bool(keys) and all(_absent(old, key) and _value_at(new, key) == schema_default(key)
                              for key in keys)


def _absent(data: dict, key: str) -> bool:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return True
        node = node[part]
    return False


def _value_at(data: dict, key: str) -> Any:
    node: Any = data
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _diff_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _diff_keys(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]


# --------------------------------------------------------------------------------------------
# Stage runs
# --------------------------------------------------------------------------------------------

@dataclass
class StageRun:
    """One stage's run folder: the resume decision, the lock, and the manifest's life.

    Use :func:`open_stage`; then ``start()``, write outputs, and ``complete()`` (or ``fail()``).
    """

    folder: Path
    stage: str
    config_text: str
    stage_config: dict
    config_hash: str
    inputs: dict[str, dict]
    decision: Decision
    previous: dict | None = None
    reason: str = ""
    """Why a run that said complete is resumed (its outputs failed verification)."""
    manifest: dict = field(default_factory=dict)
    writer: bool = True
    """False on the non-zero ranks of a distributed job: they follow rank 0, write nothing."""
    _lock_fd: int | None = None
    _t0: float = 0.0
    _earlier_seconds: float = 0.0
    """Time spent by earlier attempts of a resumed run."""

    def start(self) -> None:
        self._t0 = time.time()
        if not self.writer:
            return
        remove_stale_temporaries(self.folder)
        # A resumed run continues the timings of its earlier attempts.
        earlier = (self.previous or {}).get("timings", {}) if self.decision == "resume" else {}
        self._earlier_seconds = float(earlier.get("seconds", 0.0))
        self.manifest = {
            "tool": "tmkt",
            "schema": MANIFEST_SCHEMA,
            "stage": self.stage,
            "status": "running",
            "config_hash": self.config_hash,
            "stage_config": self.stage_config,
            "inputs": self.inputs,
            "outputs": {},
            "output_hash": None,
            "versions": package_versions(),
            "git_revision": git_revision(),
            "host": platform.node(),
            "command": " ".join(sys.argv),
            "timings": {"started": earlier.get("started") or now(), "attempt_started": now(),
                        "attempts": earlier.get("attempts", 0) + 1,
                        "seconds": self._earlier_seconds},
            "metrics": {},
            "error": None,
        }
        # The manifest first: a folder holding only config.yaml would be refused as foreign
        # after a kill between the two writes (a running manifest is resumed instead).
        write_json(self.folder / MANIFEST, self.manifest)
        write_text(self.folder / CONFIG, self.config_text)

    def _elapsed(self) -> float:
        return self._earlier_seconds + (time.time() - self._t0)

    def update(self, **fields: Any) -> None:
        """Merge fields into the running manifest (e.g. progress metrics)."""
        if not self.writer:
            return
        self.manifest.update(fields)
        self.manifest["timings"]["seconds"] = round(self._elapsed(), 3)
        write_json(self.folder / MANIFEST, self.manifest)

    def complete(self, outputs: dict[str, str | Path], metrics: dict | None = None,
                 hashes: dict[str, str] | None = None) -> None:
        """Record outputs (paths relative to the folder) and mark the run complete.

        ``hashes`` may give precomputed content hashes (e.g. of arrays) to avoid rereading
        large files; otherwise each output file is hashed with sha256.
        """
        if not self.writer:
            self.manifest["status"] = "complete"
            return
        hashes = dict(hashes or {})
        entries = {}
        for name, rel in outputs.items():
            p = self.folder / rel
            if not p.is_file():  # a stage bug: never record a run as complete without it
                raise RuntimeError(f"{self.stage}: output '{name}' ({p}) is not in place; "
                                   f"the run is not complete")
            entries[name] = {"path": str(rel), "sha256": hashes.get(name) or file_hash(p),
                             "size": p.stat().st_size}
            if name in hashes:
                entries[name]["hash_of"] = "content"
        self.manifest["outputs"] = entries
        self.manifest["output_hash"] = combined_hash(
            {k: v["sha256"] or "" for k, v in entries.items()} | {"config": self.config_hash})
        self.manifest["metrics"] = metrics or {}
        self.manifest["status"] = "complete"
        self.manifest["timings"]["finished"] = now()
        self.manifest["timings"]["seconds"] = round(self._elapsed(), 3)
        write_json(self.folder / MANIFEST, self.manifest)

    def fail(self, error: str, status: str = "failed") -> None:
        if not self.manifest or not self.writer:
            return
        self.manifest["status"] = status
        self.manifest["error"] = error
        self.manifest["timings"]["seconds"] = round(self._elapsed(), 3)
        write_json(self.folder / MANIFEST, self.manifest)

    def release(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> StageRun:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc is not None and self.manifest.get("status") == "running":
                from tmkt_cli.errors import StopRequested
                if isinstance(exc, StopRequested):
                    self.fail("stopped by signal; resumable", status="interrupted")
                elif isinstance(exc, KeyboardInterrupt):
                    self.fail("interrupted by the user; resumable", status="interrupted")
                else:
                    self.fail(f"{type(exc).__name__}: {exc}")
        finally:
            self.release()


def refuse_links(folder: Path) -> None:
    """A run folder holds no symbolic links (tmkt never makes one): a planted link (e.g.
    ``tensorboard/`` pointing elsewhere) would make a resumed run write outside the folder."""
    if not folder.is_dir():
        return
    for p in sorted(folder.rglob("*")):
        if p.is_symlink():
            raise TmktError(f"{p}: a symbolic link (to {os.readlink(p)}) inside a run folder; "
                            f"tmkt never makes one and will not write through it: remove it")


def _lock(folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise TmktError(f"{folder}: another tmkt process is running in this folder "
                        f"(it holds {folder / LOCK}); wait for it or stop it") from None
    return fd


def _clear(folder: Path) -> None:
    """Empty a tmkt run folder (only called on folders holding a tmkt manifest)."""
    for p in folder.iterdir():
        if p.name == LOCK:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def open_stage(folder: str | Path, stage: str, config_text: str, stage_config: dict,
               config_hash: str, inputs: dict[str, dict] | None = None, *, force: bool = False,
               resume: Literal["auto", "never"] = "auto", dry_run: bool = False,
               verify: bool = False) -> StageRun:
    """Decide what running ``stage`` in ``folder`` means, and take the folder's lock.

    - nothing there: fresh;
    - a complete run with the same config hash and inputs: up to date (nothing to do);
    - a run with another config or other inputs: refused unless ``force`` (then cleared);
    - an unfinished run with the same config and inputs: resumed (``resume='auto'``) or
      cleared and started again (``resume='never'``);
    - a complete run whose outputs are not what its manifest recorded (missing, another size,
      another hash; every hash with ``verify``): the damaged outputs are removed and the run
      resumed, with ``reason`` saying why.
    """
    folder = Path(folder)
    inputs = inputs or {}
    if folder.exists() and read_manifest(folder) is None and any(
            p.name != LOCK and TMP_MARK not in p.name for p in folder.iterdir()):
        raise TmktError(f"{folder}: exists, is not empty and holds no tmkt manifest; "
                        f"refusing to write into it (choose another folder or empty it)")
    refuse_links(folder)
    # Lock before deciding, so the decision cannot go stale under a concurrent run.
    lock_fd = None if dry_run else _lock(folder)
    try:
        return _decide(folder, stage, config_text, stage_config, config_hash, inputs,
                       force=force, resume=resume, lock_fd=lock_fd, verify=verify)
    except BaseException:
        if lock_fd is not None:
            os.close(lock_fd)
        raise


def _decide(folder: Path, stage: str, config_text: str, stage_config: dict, config_hash: str,
            inputs: dict[str, dict], *, force: bool, resume: str, lock_fd: int | None,
            verify: bool = False) -> StageRun:
    previous = read_manifest(folder) if folder.exists() else None
    if previous is not None and previous.get("stage") != stage:
        raise TmktError(f"{folder}: holds a '{previous.get('stage')}' run, not '{stage}'")

    decision: Decision = "fresh"
    clear = False
    reason = ""
    if previous is not None:
        same_config = previous.get("config_hash") == config_hash or \
            _only_new_keys_at_default(previous.get("stage_config"), stage_config)
        old_inputs = {k: v.get("hash") for k, v in previous.get("inputs", {}).items()}
        new_inputs = {k: v.get("hash") for k, v in inputs.items()}
        same_inputs = old_inputs == new_inputs
        if not (same_config and same_inputs):
            if not force:
                if not same_config:
                    keys = _diff_keys(previous.get("stage_config", {}), stage_config)
                    what = "config changed (" + ", ".join(keys[:6]) + \
                        (", ..." if len(keys) > 6 else "") + ")"
                else:
                    changed = sorted(k for k in set(old_inputs) | set(new_inputs)
                                     if old_inputs.get(k) != new_inputs.get(k))
                    what = "inputs changed (" + ", ".join(changed) + ")"
                raise TmktError(f"{folder}: {what} since this {previous.get('status')} run; "
                                f"pass --force to discard it and start again")
            decision, clear = "fresh", True
        elif previous.get("status") == "complete":
            decision = "up-to-date"
            problems = verify_outputs(folder, previous, full=verify)
            reason = "; ".join(problems.values())
            if problems and resume == "never":
                decision, clear = "fresh", True
            elif problems:
                decision = "resume"
                if lock_fd is not None:
                    _remove_damaged(folder, previous, problems)
        elif resume == "auto":
            decision = "resume"
        else:
            decision, clear = "fresh", True

    if clear and lock_fd is not None:
        _clear(folder)
    return StageRun(folder=folder, stage=stage, config_text=config_text,
                    stage_config=stage_config, config_hash=config_hash, inputs=inputs,
                    decision=decision, previous=previous, reason=reason, _lock_fd=lock_fd)


def _remove_damaged(folder: Path, manifest: dict, damaged: dict[str, str]) -> None:
    """Delete the outputs that failed verification (a resumed stage writes them again; a
    wrong file must not be taken for a good one)."""
    for name in damaged:
        p = folder / manifest["outputs"][name]["path"]
        if p.is_file() or p.is_symlink():
            p.unlink()

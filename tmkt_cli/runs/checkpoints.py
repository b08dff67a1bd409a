"""The trained checkpoint: its format, what it records about its network, and loading it.

A training run folder (``train-tmkt``, ``distill``, ``pretrain-ann``) holds three files:

- ``last.pt``: the resumable state (weights, optimizer, scheduler, scaler, RNG state, loop
  position), rewritten at every checkpoint;
- ``best.pt``: weights only, those of the evaluation with the highest accuracy;
- ``model.pt``: weights only, those the run finished with (written when it completes).

Every file is a dict ``{"format": "tmkt-checkpoint", "version": 1, "stage", "model_info",
"model" (the state dict), "loop" ({epoch, step, ...}), "config_hash"}``, plus the training
state in ``last.pt``. ``model_info`` says how to rebuild the network (kind, backbone, classes,
input size, T, the recipe's ``model`` section), so a file loads without its recipe::

    from tmkt_cli.runs.checkpoints import load_model
    model = load_model("runs/digits-tmkt/seed42/train-tmkt")    # or a path to a .pt file
    logits = model.predict(events)   # SNN: events [T, B, 2, H, W] -> [B, K]

Files are read with ``torch.load(weights_only=True)``: a pickle that would run code is refused.
torch is imported inside the functions, so modules that only need the names stay light.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tmkt_cli.config import ModelConfig, Recipe, to_dict
from tmkt_cli.errors import TmktError, first_line
from tmkt_cli.runs import artifacts

if TYPE_CHECKING:
    from torch import nn

CHECKPOINT_FORMAT = "tmkt-checkpoint"
CHECKPOINT_VERSION = 1
LAST, BEST, MODEL = "last.pt", "best.pt", "model.pt"
BEST_TEST = "best_test.pt"
"""Best on the test split, written beside ``best.pt`` (best on validation) when a run has a
validation split; without one ``best.pt`` is itself the best on test."""
CHECKPOINT_FILES = {"last": LAST, "best": BEST, "best_test": BEST_TEST}
"""``eval.checkpoint`` / ``cam.checkpoint`` -> file in the run folder."""
CHECKPOINT_OUTPUTS = {"last": "checkpoint", "best": "best", "best_test": "best_test"}
"""The manifest output names under which training stages list their checkpoints."""
SNN_STAGES = ("train-tmkt", "distill")
MODEL_STAGES = (*SNN_STAGES, "pretrain-ann")
TRAINING_STATE = ("optimizer", "scheduler", "scaler", "rng")
"""What ``last.pt`` holds beyond the weights, to resume."""


# --------------------------------------------------------------------------------------------
# The format
# --------------------------------------------------------------------------------------------

def save_checkpoint(path: Path, state: dict) -> None:
    import torch

    # Through a Python file: a full disk then surfaces as OSError(ENOSPC) under torch's
    # RuntimeError (torch.save to a path reports only "unexpected pos"), which atomic_path
    # turns into one line.
    with artifacts.atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)


def load_checkpoint(path: str | Path, what: str = "checkpoint") -> dict:
    """Load a tmkt checkpoint safely (``weights_only``: a pickle that would run code is
    refused) and check it is one."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise TmktError(f"{path}: {what} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for unreadable / unsafe files
        text = str(e)
        if "GLOBAL" in text or "Unsupported global" in text:  # a class/function reference
            raise TmktError(f"{path}: refused to load: the file holds Python objects that "
                            f"would run code (not a plain tmkt checkpoint)") from None
        detail = next((ln.strip() for ln in text.splitlines()
                       if "Unsupported operand" in ln or "error" in ln.lower()), type(e).__name__)
        raise TmktError(f"{path}: not a readable checkpoint ({detail[:120]})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise TmktError(f"{path}: not a tmkt checkpoint")
    if state.get("version") != CHECKPOINT_VERSION:
        raise TmktError(f"{path}: checkpoint version {state.get('version')} is not supported "
                        f"(this tmkt reads version {CHECKPOINT_VERSION})")
    return state


def training_checkpoint(stage: str, model_info: dict, model, optimizer, scheduler, scaler,
                        loop: dict, config_hash: str) -> dict:
    """What ``last.pt`` holds: the weights, the optimizer, scheduler and scaler states, every
    random generator's state and the loop counters, so a resumed run continues bitwise."""
    return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "stage": stage,
            "model_info": model_info, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "rng": rng_state(), "loop": loop,
            "config_hash": config_hash}


def rng_state() -> dict:
    """Every random generator a training step may draw from (torch, CUDA, NumPy, Python), as
    tensors and numbers that ``weights_only`` loading accepts."""
    import random

    import numpy as np
    import torch

    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)),
                      "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                      "cached": float(np_state[4])},
            "python": random.getstate()}


def restore_rng_state(state: dict) -> None:
    import random

    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


_HASHES: dict[tuple[str, int, int], str] = {}
"""sha256 of files already hashed by this process, by (path, size, mtime): a report or an
export that reads one checkpoint several times hashes it once."""


def cached_file_hash(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = artifacts.file_hash(path)
    return _HASHES[key]


def verify_checkpoint(path: Path) -> bool:
    """Refuse, in one line, a checkpoint whose content is not what its run's manifest recorded
    at completion (another size or sha256: a file copied from another run or seed, a flipped
    bit, a partial copy). True when a complete run's manifest beside it lists the file and it
    matches; False when there is nothing to check against (no manifest, a run still training,
    a file the manifest does not list)."""
    manifest = artifacts.read_manifest(path.parent)
    if not manifest or manifest.get("status") != "complete":
        return False
    entry = next((out for out in manifest.get("outputs", {}).values()
                  if isinstance(out, dict) and out.get("path") == path.name), None)
    if entry is None or not entry.get("sha256"):
        return False
    if not path.is_file():
        return False  # the caller's "not found" says it
    size = path.stat().st_size
    actual = cached_file_hash(path) if size == entry.get("size") else None
    if actual != entry["sha256"]:
        found = f"sha256 {actual[:12]}" if actual else f"{size} bytes"
        recorded = (f"sha256 {str(entry['sha256'])[:12]}" if actual
                    else f"{entry.get('size')} bytes")
        raise TmktError(f"{path}: not the file its run recorded ({found}; its manifest.json "
                        f"says {recorded}): replaced or damaged after the run completed; "
                        f"rerun the stage to write it again")
    return True


def weights_only(state: dict) -> dict:
    """A checkpoint without its training state: what ``best.pt`` and ``model.pt`` hold."""
    return {k: v for k, v in state.items() if k not in TRAINING_STATE}


def export_weights(source: Path, target: Path) -> None:
    """Write the weights-only copy of the checkpoint ``source`` to ``target``."""
    save_checkpoint(target, weights_only(load_checkpoint(source)))


def write_model_file(folder: Path) -> None:
    """``model.pt``: a finished run's weights without its training state (from ``last.pt``)."""
    export_weights(folder / LAST, folder / MODEL)


# --------------------------------------------------------------------------------------------
# What a checkpoint records about its network, and checking it
# --------------------------------------------------------------------------------------------

def snn_model_info(recipe: Recipe, classes: list[str], size: int, time_steps: int) -> dict:
    """What a checkpoint must match to be loaded by eval, cam or as a student."""
    return {"kind": "snn", "backbone": recipe.model.backbone, "num_classes": len(classes),
            "classes": list(classes), "size": size, "time_steps": time_steps,
            "model": to_dict(recipe.model)}


def ann_model_info(backbone: str, classes: list[str], size: int, in_channels: int = 2) -> dict:
    return {"kind": "ann", "backbone": backbone, "num_classes": len(classes),
            "classes": list(classes), "size": size, "in_channels": in_channels}


@dataclass(frozen=True)
class PreparedFacts:
    """What a checkpoint must agree with: the prepared dataset's classes, T and size."""

    path: Path
    classes: list[str]
    time_steps: int
    size: int


def read_dataset_facts(h5: Path) -> PreparedFacts:
    from tmkt_cli.data.store import open_dataset

    with open_dataset(h5) as ds:
        return PreparedFacts(Path(ds.path), list(ds.classes), ds.time_steps, ds.size)


def expected_model_info(recipe: Recipe, source: str, facts: PreparedFacts) -> dict:
    """What a checkpoint of ``source`` must hold to be evaluated with this recipe's data."""
    if source == "pretrain-ann":
        return {"kind": "ann", "backbone": recipe.pretrain_ann.backbone,
                "classes": facts.classes, "size": facts.size}
    return {"kind": "snn", "backbone": recipe.model.backbone, "model": to_dict(recipe.model),
            "classes": facts.classes, "size": facts.size, "time_steps": facts.time_steps}


def checkpoint_mismatches(info: dict, expected: dict, strict: bool = False) -> list[str]:
    """What differs between a checkpoint's ``model_info`` and what the recipe and dataset
    expect (same keys: kind, backbone, model, classes, size, time_steps; a key absent from
    ``expected`` is not checked). Each entry reads "<checkpoint's value> (<expected>)".

    Loading (eval, cam, a teacher, a student's init) ignores model settings one side lacks:
    they come from another tmkt version's schema. ``strict`` (resume: the very same network
    goes on training) compares them too, and every other key of ``expected``."""
    diffs = []
    if "kind" in expected and info.get("kind") != expected["kind"]:
        diffs.append(f"an {str(info.get('kind')).upper()} model (expected an "
                     f"{expected['kind'].upper()})")
        return diffs  # nothing else is comparable
    if "backbone" in expected and info.get("backbone") != expected["backbone"]:
        diffs.append(f"backbone {info.get('backbone')!r} (recipe: {expected['backbone']!r})")
    elif "model" in expected:
        diffs += _model_differences(info.get("model") or {}, expected["model"], strict)
    if "classes" in expected:
        got, want = list(info.get("classes") or []), list(expected["classes"])
        if len(got) != len(want):
            diffs.append(f"{len(got)} classes (dataset: {len(want)})")
        elif got != want:
            first = next(i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b)
            diffs.append(f"other class names (class {first}: {got[first]!r}, dataset: "
                         f"{want[first]!r})")
    if "size" in expected and info.get("size") != expected["size"]:
        diffs.append(f"{info.get('size')}px inputs (dataset: {expected['size']}px)")
    if "time_steps" in expected and info.get("time_steps") != expected["time_steps"]:
        diffs.append(f"T={info.get('time_steps')} (dataset: T={expected['time_steps']})")
    if strict:
        for key in sorted(set(expected) - _COMPARED):
            if info.get(key, _ABSENT) != expected[key]:
                diffs.append(f"{key} {_shown(info.get(key))} (this run: {_shown(expected[key])})")
    return diffs


_COMPARED = {"kind", "backbone", "model", "classes", "size", "time_steps"}
_ABSENT = object()


def _model_differences(ours: dict, theirs: dict, strict: bool) -> list[str]:
    keys = set(ours) | set(theirs) if strict else set(ours) & set(theirs)
    return [f"model.{key} {_shown(ours.get(key, 'absent'))} (recipe: "
            f"{_shown(theirs.get(key, 'absent'))})"
            for key in sorted(keys)
            if key != "backbone" and ours.get(key, _ABSENT) != theirs.get(key, _ABSENT)]


def describe_model(info: dict) -> str:
    """A checkpoint's network in a few words, for messages."""
    keys = ("kind", "backbone", "num_classes", "size", "time_steps")
    return ", ".join(f"{k} {info.get(k)}" for k in keys if k in info)


def check_teacher(path: Path, classes: list[str], size: int) -> dict:
    """The teacher checkpoint's state, if it is the file its run recorded and an ANN of these
    classes at this size."""
    verify_checkpoint(Path(path))
    state = load_checkpoint(path, "teacher checkpoint")
    info = state.get("model_info", {})
    if info.get("kind") != "ann":
        raise TmktError(f"{path}: not an ANN teacher checkpoint (it holds a "
                        f"{info.get('kind', 'unknown')} model)")
    diffs = checkpoint_mismatches(info, {"classes": classes, "size": size})
    if diffs:
        raise TmktError(f"{path}: the teacher does not fit this dataset: it has "
                        f"{'; '.join(diffs)}")
    return state


# --------------------------------------------------------------------------------------------
# Loading a trained network
# --------------------------------------------------------------------------------------------

@dataclass
class TrainedModel:
    model: nn.Module
    kind: str
    """``snn`` or ``ann``."""
    info: dict
    path: Path
    epoch: int | None
    step: int | None


def load_trained_model(path: Path, expected: dict, what: str) -> TrainedModel:
    """Load the checkpoint at ``path``, refuse it with one line when it is not the file its
    run recorded (:func:`verify_checkpoint`) or its ``model_info`` differs from ``expected``
    (see :func:`checkpoint_mismatches`), and build its network.

    The network is built from the checkpoint's own ``model_info`` (equal to the recipe's
    where ``expected`` says so).
    """
    verify_checkpoint(Path(path))
    state = load_checkpoint(path, f"{what} checkpoint")
    info = state.get("model_info") if isinstance(state.get("model_info"), dict) else {}
    if info.get("kind") not in ("snn", "ann"):
        raise TmktError(f"{path}: not the checkpoint of a tmkt network (model_info kind "
                        f"{_shown(info.get('kind'))})")
    check_model_info(info, path)
    diffs = checkpoint_mismatches(info, expected)
    if diffs:
        raise TmktError(f"{path}: the checkpoint does not match {what}: it holds "
                        + "; ".join(diffs))
    model = build_from_info(info, path)
    _load_weights(model, state, info, path)
    loop = state.get("loop") if isinstance(state.get("loop"), dict) else {}
    if loop.get("head") and hasattr(model, "head_rule"):
        if loop["head"] not in model.HEADS:
            raise TmktError(f"{path}: loop.head {_shown(loop['head'])} is not one of "
                            f"{', '.join(model.HEADS)}")
        model.test_head = loop["head"]  # model.test_head: validation's choice at this step
    return TrainedModel(model=model, kind=info["kind"], info=info, path=Path(path),
                        epoch=loop.get("epoch"), step=loop.get("step"))


def _load_weights(model: nn.Module, state: dict, info: dict, path: Path) -> None:
    if not isinstance(state.get("model"), dict):
        raise TmktError(f"{path}: the checkpoint holds no weights (no 'model' state dict)")
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        raise TmktError(f"{path}: weights do not fit the {_shown(info['backbone'])} network its "
                        f"model_info describes ({first_line(e)[:160]})") from None


def _shown(value) -> str:
    """A checkpoint's value in a message: numbers and short names as they are, anything else
    by its type (a message names what is wrong, it does not echo a file's contents)."""
    if isinstance(value, bool) or value is None or isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str) and len(value) <= 40 and value.isprintable():
        return repr(value)
    return f"a {type(value).__name__}"


INFO_INTEGERS = {"snn": ("num_classes", "size", "time_steps"),
                 "ann": ("num_classes", "size", "in_channels")}
"""The model_info entries that size a network: each a positive integer."""


def check_model_info(info: dict, path: Path) -> None:
    """Refuse, naming the file and the entry, a ``model_info`` that cannot build a network: a
    missing entry, a class count or T that is not a positive integer, a class list of
    another length (a damaged or hand-edited checkpoint)."""
    if not isinstance(info.get("backbone"), str):
        raise TmktError(f"{path}: model_info.backbone is {_shown(info.get('backbone'))}, "
                        f"expected a backbone name")
    for key in INFO_INTEGERS[info["kind"]]:
        value = info.get(key, 2 if key == "in_channels" else None)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            what = "missing" if key not in info and value is None else f"{_shown(value)}"
            raise TmktError(f"{path}: model_info.{key} is {what}, expected a positive integer")
    classes = info.get("classes")
    if classes is not None and (not isinstance(classes, list)
                                or len(classes) != info["num_classes"]):
        raise TmktError(f"{path}: model_info.classes does not list num_classes="
                        f"{info['num_classes']} class names")
    if info["kind"] == "snn" and not isinstance(info.get("model", {}), dict | None):
        raise TmktError(f"{path}: model_info.model is {_shown(info['model'])}, expected the "
                        f"recipe's model section")


def build_from_info(info: dict, path: Path) -> nn.Module:
    """The network ``model_info`` describes, its entries checked first; any refusal names
    ``path``."""
    from tmkt_cli.config import build
    from tmkt_cli.models import build_ann, build_snn

    check_model_info(info, path)  # again: a caller may build without loading
    if info["kind"] == "ann":
        return _built(path, info, build_ann, info["backbone"], info["num_classes"],
                      info["size"], info.get("in_channels", 2))
    raw = info.get("model") or {"backbone": info["backbone"]}
    try:
        cfg = build(ModelConfig, raw, "model.")
    except TmktError as e:  # a key this tmkt does not know, a value of the wrong type
        raise TmktError(f"{path}: model_info.model: {e}") from None
    return _built(path, info, build_snn, cfg, info["num_classes"], info["size"],
                  info["time_steps"])


def _built(path: Path, info: dict, builder, *args) -> nn.Module:
    try:
        return builder(*args)
    except TmktError as e:  # an unknown backbone: the builder does not know the file
        raise TmktError(f"{path}: model_info: {e}") from None
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise TmktError(f"{path}: cannot build the network its model_info describes "
                        f"(backbone {_shown(info.get('backbone'))}: {first_line(e)[:160]})") \
            from None


def load_teacher(path: Path, classes: list[str], size: int):
    from tmkt_cli.models.ann import build_ann

    state = check_teacher(path, classes, size)
    model = build_ann(state["model_info"]["backbone"], len(classes), size,
                      int(state["model_info"].get("in_channels", 2)))
    model.load_state_dict(state["model"])
    return model


def checkpoint_path(path_or_run_folder: str | Path, which: str = "model") -> Path:
    """The file :func:`load_model` reads: ``path`` itself, or in a run folder ``model.pt``
    (``which="model"``, falling back to ``last.pt`` for a run that has not finished),
    ``best.pt`` or ``last.pt``."""
    path = Path(path_or_run_folder)
    if not path.is_dir():
        return path
    files = {"model": MODEL, "best": BEST, "last": LAST}
    if which not in files:
        raise TmktError(f"which={which!r}: expected one of {', '.join(files)}")
    if which == "model" and not (path / MODEL).is_file():
        return path / LAST
    return path / files[which]


def load_model(path_or_run_folder: str | Path, which: str = "model") -> nn.Module:
    """The trained network of a tmkt checkpoint file or run folder, in eval mode on the CPU.

    No recipe is needed: the file's ``model_info`` rebuilds the network. An SNN is a
    ``TwoStreamSNN``: ``model.predict(x)`` maps events ``[T, B, 2, H, W]`` (counts, as in
    the prepared dataset) to the time-averaged logits ``[B, K]`` of the head the run reports
    (``model.test_head``: with ``validation``, the head its validation split chose, which the
    checkpoint records) and resets the neurons; an ANN teacher maps images ``[B, 2, H, W]`` to logits. The class names are in
    ``model.tmkt_info["classes"]``. ``which`` picks the file of a run folder: ``model``
    (the finished weights), ``best`` or ``last``.
    """
    path = checkpoint_path(path_or_run_folder, which)
    if path.is_file() and not verify_checkpoint(path):
        warnings.warn(f"{path}: no complete run's manifest.json beside it lists this file, so "
                      f"its content is not verified", stacklevel=2)
    trained = load_trained_model(path, {}, "a tmkt model")
    model = trained.model.eval()
    model.tmkt_info = trained.info
    return model

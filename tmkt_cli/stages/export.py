"""``tmkt export`` and ``tmkt predict``: a trained SNN out of tmkt, and raw recordings through it.

``tmkt export RUN --format torchscript|onnx`` writes the run's network in plain torch ops
(:mod:`tmkt_cli.models.plain`: no spikingjelly, no custom autograd) as TorchScript
(``model.torchscript.pt``, loaded by ``torch.jit.load``) or ONNX (``model.onnx``), and beside
it ``model-card.json``: classes, input, how recordings were integrated into frames, the head,
the run's provenance and accuracy, and a check of the exported logits against tmkt's own
``model.predict`` on the prepared test split. Both formats can share one folder (one card
lists both).

``tmkt predict RUN_OR_EXPORT FILE...`` reads raw recordings in the format of the model's
dataset, integrates them exactly as ``tmkt prepare`` did (:func:`tmkt_cli.data.frames.
integrate_events`, with the settings the card records), and prints each file's class and
probabilities. A run folder predicts through tmkt; an export folder through its TorchScript
file (or ONNX with onnxruntime, when that is all it holds).

Neither command makes a run folder: they read finished runs and write only the export
folder (each file atomically, the card last).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console

from tmkt_cli import __version__
from tmkt_cli.errors import TmktError
from tmkt_cli.runs.artifacts import atomic_path, read_upstream, write_json
from tmkt_cli.runs.checkpoints import BEST, BEST_TEST, LAST, MODEL, SNN_STAGES, load_checkpoint

CARD = "model-card.json"
CARD_FORMAT, CARD_VERSION = "tmkt-model-card", 1
FILES = {"torchscript": "model.torchscript.pt", "onnx": "model.onnx"}
CHECKPOINT_NAMES = {MODEL: "model", LAST: "last", BEST: "best", BEST_TEST: "best_test"}
CHECK_SAMPLES = 64
"""Test recordings export runs both networks on (all of them when the split is smaller)."""
TOLERANCE = 1e-5
ONNX_OPSET = 18
"""Read by onnxruntime 1.14 and later (2023)."""
BATCH = 32


# --------------------------------------------------------------------------------------------
# The run and what its card says
# --------------------------------------------------------------------------------------------

@dataclass
class RunTarget:
    folder: Path
    checkpoint: Path
    manifest: dict


def run_target(text: str, what: str) -> RunTarget:
    """A finished train-tmkt or distill run folder (its ``model.pt``) or a checkpoint file in
    one."""
    path = Path(text)
    folder, checkpoint = path, path / MODEL
    if path.suffix == ".pt":
        if path.name not in CHECKPOINT_NAMES:
            raise TmktError(f"{path}: not a checkpoint a run writes "
                            f"({', '.join(CHECKPOINT_NAMES)}); give its run folder")
        folder, checkpoint = path.parent, path
    upstream = read_upstream(folder, SNN_STAGES, what)
    if not checkpoint.is_file():
        raise TmktError(f"{checkpoint}: checkpoint not found")
    return RunTarget(folder, checkpoint, upstream.manifest)


def integration(target: RunTarget, info: dict) -> dict:
    """How the run's recordings became frames: the prepared dataset's own record (the
    ``prepare`` section it was made with), else the run's recipe when the dataset is gone."""
    import yaml

    from tmkt_cli.config import read_yaml
    from tmkt_cli.data.recording_files import reader_of
    from tmkt_cli.data.store import FILENAME, open_dataset

    dataset = ((target.manifest.get("inputs") or {}).get("dataset") or {}).get("path")
    h5 = Path(dataset) / FILENAME if dataset else None
    if h5 is not None and h5.is_file():
        with open_dataset(h5) as ds:
            prepare = (yaml.safe_load(ds.prepare_config) or {}).get("prepare") or {}
            facts = {"dataset": ds.dataset, "split_by": ds.split_by,
                     "sensor_sizes": [list(s) for s in ds.sensor_sizes],
                     "prepared_dataset": str(h5), "content_hash": ds.content_hash,
                     "settings_from": "the prepared dataset"}
    else:
        prepare = read_yaml(target.folder / "config.yaml", "run config").get("prepare") or {}
        facts = {"dataset": prepare.get("dataset"), "split_by": prepare.get("split_by"),
                 "prepared_dataset": None,
                 "settings_from": f"the run's recipe (the prepared dataset {h5} is not there)"}
    return {"time_steps": info["time_steps"], "size": info["size"], **facts,
            "sensor_extent": prepare.get("sensor_extent", "declared"),
            "align_corners": bool(prepare.get("align_corners", False)),
            "reader": reader_of(str(facts["dataset"])), "prepare": prepare}


def model_card(target: RunTarget, state: dict, model) -> dict:
    """Everything a user of the exported file needs, without tmkt."""
    info = model.tmkt_info
    loop = state.get("loop") if isinstance(state.get("loop"), dict) else {}
    last_eval = loop.get("last_eval") or {}
    settings = integration(target, info)
    T, S = info["time_steps"], info["size"]
    return {
        "format": CARD_FORMAT, "version": CARD_VERSION, "tmkt_version": __version__,
        "classes": list(info["classes"]),
        "input": {"name": "events", "shape": [T, "batch", 2, S, S], "dtype": "float32",
                  "layout": "[T, B, 2, H, W]: time step, sample, polarity, row, column",
                  "polarity": {"0": "OFF (brightness down, polarity 0)",
                               "1": "ON (brightness up, polarity 1)"},
                  "values": "event counts per pixel and time step, integrated as "
                            "'integration' says, then resized bilinearly; not normalised"},
        "output": {"name": "logits", "shape": ["batch", len(info["classes"])],
                   "meaning": "logits averaged over the T time steps (softmax: class "
                              "probabilities)"},
        "integration": settings,
        "network": {"backbone": info["backbone"], "kind": "snn",
                    "head": model.test_head, "head_rule": model.head_rule,
                    "neuron": {"model": "LIF, decay_input, hard reset to 0",
                               "tau": (info.get("model") or {}).get("tau"),
                               "threshold": (info.get("model") or {}).get("threshold"),
                               "fire": (info.get("model") or {}).get("fire", "ge")},
                    "recipe_model": info.get("model")},
        "run": {"folder": str(target.folder), "stage": target.manifest.get("stage"),
                "checkpoint": target.checkpoint.name,
                "checkpoint_sha256": sha256(target.checkpoint),
                "config_hash": target.manifest.get("config_hash"),
                "epoch": loop.get("epoch"), "step": loop.get("step")},
        "accuracy": {"split": "test", "head": model.test_head,
                     "top1": last_eval.get("acc"), "top5": last_eval.get("top5"),
                     "val_top1": last_eval.get("val_acc"),
                     "at_step": loop.get("step")},
        "files": {}, "checks": {},
    }


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_run_model(target: RunTarget):
    """(tmkt's network of the run, with its card's facts in ``tmkt_info``; the checkpoint)."""
    from tmkt_cli.runs.checkpoints import load_model

    model = load_model(target.checkpoint)
    if model.tmkt_info.get("kind") != "snn":  # a hand-moved teacher checkpoint
        raise TmktError(f"{target.checkpoint}: not a trained SNN")
    return model, load_checkpoint(target.checkpoint)


# --------------------------------------------------------------------------------------------
# tmkt export
# --------------------------------------------------------------------------------------------

def export_run(text: str, fmt: str, out: Path | None, ui: Console) -> Path:
    """``tmkt export``: write the run's network in ``fmt`` and its card into ``out``
    (default: ``export/`` beside the run, ``export-best/`` for best.pt, ...)."""
    import torch

    from tmkt_cli.models.plain import plain_network

    if fmt not in FILES:
        raise TmktError(f"--format: expected {' or '.join(FILES)}, got {fmt!r}")
    if fmt == "onnx":
        require_onnx_exporter()
    target = run_target(text, "tmkt export RUN")
    model, state = load_run_model(target)
    out = Path(out) if out is not None else default_folder(target)
    card, stale = merged_card(out, model_card(target, state, model), fmt)
    out.mkdir(parents=True, exist_ok=True)
    path = out / FILES[fmt]
    with atomic_path(path) as tmp, torch.no_grad():
        (save_torchscript if fmt == "torchscript" else save_onnx)(plain_network(model), card,
                                                                  tmp)
    card["files"][fmt] = {"file": path.name, "sha256": sha256(path)}
    card["checks"][fmt] = check_export(model, path, fmt, card, ui)
    write_json(out / CARD, card)  # last: until here the folder's card is the old one
    for old in stale:
        old.unlink(missing_ok=True)
    ui.print(f"export: {fmt} -> {path} (head {model.test_head}, T={card['input']['shape'][0]},"
             f" {len(card['classes'])} classes); card {out / CARD}")
    return path


def default_folder(target: RunTarget) -> Path:
    """``<seed folder>/export`` (train-tmkt model.pt), ``export-distill``, ``export-best``..."""
    from tmkt_cli.config import eval_folder_name

    which = CHECKPOINT_NAMES[target.checkpoint.name]
    name = eval_folder_name(target.manifest["stage"], "last" if which == "model" else which)
    return target.folder.parent / name.replace("eval", "export", 1)


def merged_card(out: Path, card: dict, fmt: str) -> tuple[dict, list[Path]]:
    """The new card (keeping the other format's entry when the folder's card is of the same
    checkpoint), and the model files of another checkpoint's card, to remove once the new
    card is written."""
    path = out / CARD
    try:
        old = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        old = None
    if not isinstance(old, dict) or not isinstance(old.get("files"), dict):
        return card, []
    others = {f: e for f, e in old["files"].items() if f != fmt and f in FILES}
    if (old.get("run") or {}).get("checkpoint_sha256") == card["run"]["checkpoint_sha256"]:
        card["files"] = dict(others)
        card["checks"] = {f: c for f, c in (old.get("checks") or {}).items() if f in others}
        return card, []
    return card, [out / FILES[f] for f in others]


@contextlib.contextmanager
def _quiet_exporters():
    # TorchScript and the ONNX exporter warn about their own deprecations and optional
    # packages (torchvision) on every call: noise for a user who asked for the file.
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def save_torchscript(network, card: dict, path: Path) -> None:
    import torch

    with _quiet_exporters():
        scripted = torch.jit.script(network)
        torch.jit.save(scripted, str(path), _extra_files={CARD: json.dumps(card)})


def require_onnx_exporter() -> None:
    """torch's ONNX exporter writes through the onnx and onnxscript packages."""
    for package in ("onnx", "onnxscript"):
        try:
            __import__(package)
        except ImportError:
            raise TmktError(f"ONNX export needs the onnx and onnxscript packages (pip "
                            f"install 'tmkt[onnx]'); {package} is not installed") from None


def save_onnx(network, card: dict, path: Path) -> None:
    import torch

    T, _, channels, size, _ = card["input"]["shape"]
    example = torch.zeros(T, 2, channels, size, size)
    with _quiet_exporters(), contextlib.redirect_stdout(io.StringIO()):  # its progress notes
        torch.onnx.export(network, (example,), str(path), input_names=["events"],
                          output_names=["logits"], external_data=False, dynamo=True,
                          opset_version=ONNX_OPSET,
                          dynamic_shapes={"x": {1: torch.export.Dim("batch")}})


def check_export(model, path: Path, fmt: str, card: dict, ui: Console) -> dict:
    """The exported network's logits against tmkt's ``model.predict`` on the first
    :data:`CHECK_SAMPLES` test recordings of the prepared dataset."""
    from tmkt_cli.data.store import open_dataset

    h5 = card["integration"]["prepared_dataset"]
    if h5 is None:
        return {"checked": False, "why": "the prepared dataset is not here"}
    try:
        runner = exported_runner(path, fmt)
    except TmktError as e:
        ui.print(f"[yellow]export: not checked:[/yellow] {e}")
        return {"checked": False, "why": str(e)}
    with open_dataset(h5) as ds:
        frames = ds.split("test")["frames"]
        frames = frames[:min(CHECK_SAMPLES, frames.shape[0])]
    if not len(frames):
        return {"checked": False, "why": "the test split is empty"}
    diff = max(float(np.abs(runner(x) - tmkt_logits(model, x)).max())
               for x in batches(frames))
    ok = diff <= TOLERANCE
    if not ok:
        ui.print(f"[yellow]warning:[/yellow] export: the {fmt} logits differ from tmkt's by "
                 f"up to {diff:.2e} (more than {TOLERANCE:g}) on the test split")
    return {"checked": True, "samples": int(len(frames)), "split": "test",
            "against": "tmkt model.predict", "max_abs_logit_diff": diff,
            "tolerance": TOLERANCE, "passed": ok}


def batches(frames: np.ndarray):
    """``[N, T, 2, S, S]`` frames as network inputs ``[T, B, 2, S, S]`` (float32)."""
    for start in range(0, len(frames), BATCH):
        yield np.ascontiguousarray(
            np.asarray(frames[start:start + BATCH], dtype=np.float32).swapaxes(0, 1))


def tmkt_logits(model, x: np.ndarray) -> np.ndarray:
    import torch

    return model.predict(torch.from_numpy(x)).numpy()


def exported_runner(path: Path, fmt: str):
    """``x [T, B, 2, S, S] -> logits [B, K]`` (numpy) through the exported file."""
    if fmt == "torchscript":
        import torch

        with _quiet_exporters():
            network = torch.jit.load(str(path), map_location="cpu").eval()

        def run(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return network(torch.from_numpy(x)).numpy()
        return run
    try:
        import onnxruntime
    except ImportError:
        raise TmktError("running an ONNX export needs onnxruntime (pip install "
                        "'tmkt[onnx]')") from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"events": x})[0]


# --------------------------------------------------------------------------------------------
# tmkt predict
# --------------------------------------------------------------------------------------------

def predict_files(text: str, files: list[Path], as_json: bool, ui: Console,
                  out: Console) -> None:
    """``tmkt predict``: each file's class and probabilities (a table on ``out``, or JSON
    lines). Every file is read and integrated before anything is printed, so a bad file
    stops the command with its one line and no partial output."""
    card, runner, through = predictor(text)
    reader = card["integration"].get("reader")
    if not reader:
        raise TmktError(f"{text}: the model's dataset {card['integration'].get('dataset')!r} "
                        f"has no recording files tmkt reads one by one (emulated from images, "
                        f"or recordings cut from longer ones); give it frames [T, B, 2, H, W]")
    frames = np.stack([integrated(Path(f), card) for f in files])
    logits = np.concatenate([runner(x) for x in batches(frames)])
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities = shifted / shifted.sum(axis=1, keepdims=True)
    ui.print(f"predict: {len(files)} recording(s) through {through} (head "
             f"{card['network']['head']})")
    rows = [(str(f), p) for f, p in zip(files, probabilities, strict=True)]
    (print_json if as_json else print_table)(rows, card["classes"], out)


def predictor(text: str):
    """(card, runner, what runs it) for a run folder or checkpoint, an export folder or its
    card."""
    path = Path(text)
    folder = path.parent if path.name == CARD else path
    if (folder / CARD).is_file():
        return export_predictor(folder)
    if path.is_dir() and not (path / "manifest.json").is_file():
        present = [n for n in FILES.values() if (path / n).is_file()]
        if present:
            raise TmktError(f"{path}: holds {present[0]} but no {CARD}: an export needs its "
                            f"card (how recordings become frames); export it again")
        raise TmktError(f"{path}: neither a training run folder nor an export folder "
                        f"(no manifest.json or {CARD})")
    target = run_target(text, "tmkt predict RUN_OR_EXPORT")
    model, state = load_run_model(target)
    return (model_card(target, state, model), lambda x: tmkt_logits(model, x),
            f"tmkt ({target.checkpoint})")


def export_predictor(folder: Path):
    """The card of an export folder and its TorchScript runner (ONNX when that is all)."""
    try:
        card = json.loads((folder / CARD).read_text())
    except (OSError, ValueError) as e:
        raise TmktError(f"{folder / CARD}: not a readable model card ({e})") from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise TmktError(f"{folder / CARD}: not a tmkt model card")
    if card.get("version") != CARD_VERSION:
        raise TmktError(f"{folder / CARD}: model card version {card.get('version')!r} "
                        f"(this tmkt reads {CARD_VERSION})")
    files = card.get("files") or {}
    fmt = next((f for f in FILES if f in files), None)
    if fmt is None:
        raise TmktError(f"{folder / CARD}: lists no exported model file")
    path = folder / Path(str(files[fmt].get("file"))).name
    if not path.is_file():
        raise TmktError(f"{path}: not found (listed in {folder / CARD})")
    if sha256(path) != files[fmt].get("sha256"):
        raise TmktError(f"{path}: not the file its card describes (sha256 differs); "
                        f"export it again")
    return card, exported_runner(path, fmt), f"{fmt} ({path})"


def integrated(path: Path, card: dict) -> np.ndarray:
    """One raw recording as ``tmkt prepare`` stored the model's data: ``float32
    [T, 2, S, S]``."""
    from tmkt_cli.data.frames import integrate_events
    from tmkt_cli.data.recording_files import read_recording

    settings = card["integration"]
    events, sensor = read_recording(path, settings["reader"])
    frames, _, _ = integrate_events(events, sensor, settings["time_steps"], settings["size"],
                                    settings["split_by"], settings["align_corners"],
                                    settings["sensor_extent"])
    return frames


def print_table(rows: list[tuple[str, np.ndarray]], classes: list[str], out: Console) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title_justify="left")
    for column in ("file", "class", "probability", "next most likely"):
        table.add_column(column, no_wrap=column != "next most likely")
    for name, p in rows:
        order = np.argsort(-p, kind="stable")  # ties: the lower class index first, as argmax
        others = ", ".join(f"{escape(classes[k])} {p[k]:.3f}" for k in order[1:3])
        table.add_row(escape(name), escape(classes[order[0]]), f"{p[order[0]]:.3f}", others)
    out.print(table)


def print_json(rows: list[tuple[str, np.ndarray]], classes: list[str], out: Console) -> None:
    for name, p in rows:
        k = int(np.argmax(p))
        record = {"file": name, "class": classes[k], "index": k, "probability": float(p[k]),
                  "probabilities": {c: float(v) for c, v in zip(classes, p, strict=True)}}
        out.out(json.dumps(record), highlight=False)

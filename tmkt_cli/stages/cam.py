"""tmkt cam: class activation maps of the event stream, the figure of the TMKT paper.

For each chosen test sample: the static image, the integrated event frames, the map of a
baseline model (``cam.baseline``, optional) and the map of the model under study, overlaid on
the events. Grad-CAM (gradients averaged over time and space, for the sample's true class) or
the gradient-free spike activation map (``cam.kind: sam``); the maths is in
:mod:`tmkt_cli.analysis.cam`, the choices in docs/evaluation.md.

Writes ``cam.png`` (every sample), ``cam-<index>.png`` (one per sample) and ``maps.npz`` (the
raw maps in [0, 1], the inputs and the predictions).
"""

from __future__ import annotations

import difflib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tmkt_cli.config import Recipe, read_yaml
from tmkt_cli.errors import TmktError
from tmkt_cli.runs.artifacts import StageRun, Upstream, read_upstream, write_bytes
from tmkt_cli.runs.checkpoints import (
    SNN_STAGES,
    PreparedFacts,
    TrainedModel,
    expected_model_info,
    load_trained_model,
    read_dataset_facts,
)
from tmkt_cli.stages.shared import checkpoint_input, dataset_input, source_input, trained_on

if TYPE_CHECKING:
    import torch
    from torch import nn

    from tmkt_cli.analysis.cam import ClassMaps
    from tmkt_cli.analysis.plotting import CamRow

STAGE = "cam"
MAPS = "maps.npz"
FIGURE = "cam.png"


def folder(recipe: Recipe) -> Path:
    return recipe.stage_dir(STAGE)


def cam_source(recipe: Recipe) -> str:
    source = recipe.cam.source or recipe.eval.source
    if source not in SNN_STAGES:
        raise TmktError(f"recipe key 'cam.source' is empty and eval.source is {source!r}: "
                        f"class activation maps explain SNNs; set cam.source to "
                        f"{' or '.join(SNN_STAGES)}")
    return source


def cam_checkpoint(recipe: Recipe) -> str:
    return recipe.cam.checkpoint or recipe.eval.checkpoint


def baseline_input(path_text: str, which: str) -> Upstream:
    """``cam.baseline``: a finished SNN run folder (its ``which`` checkpoint) or a file."""
    key = "recipe key cam.baseline"
    path = Path(path_text)
    if path.is_dir():
        return checkpoint_input(read_upstream(path, SNN_STAGES, key), which, key)
    return Upstream.for_file(path, key)


def inputs(recipe: Recipe) -> dict[str, Upstream]:
    key = "recipe key cam.source"
    dataset = dataset_input(recipe)
    # Checked here, before the run folder is made: a typo in cam.classes then costs no
    # failed run that the corrected recipe would have to --force away.
    chosen_positions(recipe, dataset.folder / "dataset.h5")
    source = source_input(recipe, cam_source(recipe), key)
    ups = {"dataset": trained_on(dataset, source),
           "model": checkpoint_input(source, cam_checkpoint(recipe), key)}
    if recipe.cam.baseline:
        ups["baseline"] = baseline_input(recipe.cam.baseline, cam_checkpoint(recipe))
    return ups


def chosen_positions(recipe: Recipe, h5: Path) -> list[int] | None:
    """The samples the recipe names, or None when it leaves the choice to
    :func:`automatic_positions` (which needs the model's predictions)."""
    from tmkt_cli.data.store import open_dataset

    if not recipe.cam.samples and not recipe.cam.classes:
        return None
    with open_dataset(h5) as ds:
        return choose_samples(ds.labels("test"), ds.classes, list(recipe.cam.samples),
                              list(recipe.cam.classes), h5)


SCANNED_PER_CLASS = 16
"""Test samples of a class looked at to find a correct and a wrong prediction."""


def spread_classes(num_classes: int, how_many: int) -> list[int]:
    """``how_many`` class indices spread evenly from the first to the last."""
    if how_many >= num_classes:
        return list(range(num_classes))
    return sorted({int(round(i)) for i in np.linspace(0, num_classes - 1, how_many)})


def pick_correct_and_wrong(rows: np.ndarray, correct: np.ndarray) -> list[int]:
    """The first correctly and the first wrongly classified of ``rows`` (in that order),
    each where one exists."""
    picked = [int(rows[np.flatnonzero(correct == want)[0]]) for want in (True, False)
              if np.any(correct == want)]
    return picked


def automatic_positions(predict, labels: np.ndarray, test, max_classes: int,
                        batch_size: int, ui: Console | None = None) -> list[int]:
    """Up to ``max_classes`` classes spread over the dataset; for each, a correctly and a
    wrongly classified test sample where both are among its first SCANNED_PER_CLASS."""
    import torch

    classes = spread_classes(int(labels.max()) + 1 if labels.size else 0, max_classes)
    candidates = {c: np.flatnonzero(labels == c)[:SCANNED_PER_CLASS] for c in classes}
    rows = np.concatenate([r for r in candidates.values()]) if candidates else np.array([])
    predicted: dict[int, int] = {}
    starts = range(0, rows.size, batch_size)
    if ui is not None:
        from tmkt_cli.train.progress import track

        starts = track(starts, len(starts), ui, f"{STAGE}: choosing samples")
    for start in starts:
        chunk = [int(r) for r in rows[start:start + batch_size]]
        x = torch.stack([test[r]["events"] for r in chunk]).transpose(0, 1)
        with torch.no_grad():
            predicted.update(zip(chunk, predict(x).argmax(-1).tolist(), strict=True))
    chosen = []
    for c, class_rows in candidates.items():
        correct = np.array([predicted[int(r)] == c for r in class_rows], dtype=bool)
        chosen += pick_correct_and_wrong(class_rows, correct)
    return chosen


# --------------------------------------------------------------------------------------------
# Choosing samples and layers
# --------------------------------------------------------------------------------------------

def choose_samples(labels: np.ndarray, classes: list[str], samples: list[int],
                   wanted_classes: list[str | int], where: Path) -> list[int]:
    """Test-split positions to draw: the first test sample of each of ``wanted_classes``
    (names; a number from YAML is a name: digits classes are "0".."9") when given, else
    ``samples``. Every problem names the recipe key."""
    labels = np.asarray(labels)
    chosen = []
    if wanted_classes:
        for name in map(str, wanted_classes):
            if name not in classes:
                close = difflib.get_close_matches(name, classes, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise TmktError(f"recipe key 'cam.classes': {where} has no class {name!r}{hint}")
            rows = np.flatnonzero(labels == classes.index(name))
            if rows.size == 0:
                raise TmktError(f"recipe key 'cam.classes': class {name!r} has no test sample "
                                f"in {where}")
            chosen.append(int(rows[0]))
        return chosen
    for index in samples:
        if not 0 <= index < len(labels):
            raise TmktError(f"recipe key 'cam.samples': index {index} is outside the test "
                            f"split of {where} (0..{len(labels) - 1})")
        chosen.append(int(index))
    return chosen


def resolve_layer(model: nn.Module, requested: str, x: torch.Tensor, kind: str,
                  what: str) -> str:
    """The layer to explain: ``requested`` (checked) or the last spiking layer with a spatial
    map, which is the feature tap of tmkt's convolutional backbones."""
    from tmkt_cli.analysis.cam import spatial_layers

    time_steps = x.shape[0]
    spiking = model.spiking_layers()
    names = ", ".join(name for name, _ in spiking)
    if requested:
        modules = dict(model.named_modules())
        if requested not in modules:
            raise TmktError(f"recipe key 'cam.layer': {what} has no layer {requested!r}; its "
                            f"spiking layers are {names}")
        if kind == "sam" and requested not in dict(spiking):
            raise TmktError(f"recipe key 'cam.layer': SAM reads spikes, and {requested!r} is not "
                            f"a spiking layer of {what} ({names})")
        if not spatial_layers(model, [(requested, modules[requested])], x, time_steps):
            raise TmktError(f"recipe key 'cam.layer': the output of {requested!r} in {what} is "
                            f"not a spatial map [T, B, C, h, w] with h, w > 1")
        return requested
    candidates = spatial_layers(model, spiking, x, time_steps)
    if not candidates:
        raise TmktError(f"{what} has no spiking layer with a spatial map to explain; set "
                        f"recipe key 'cam.layer'")
    return candidates[-1]


def run_label(checkpoint: Path) -> str:
    """A model's name in the figure: its recipe name (from the run folder's config.yaml) and
    stage, else the file name."""
    config = checkpoint.parent / "config.yaml"
    try:
        name = read_yaml(config, "run config").get("name") if config.exists() else None
    except TmktError:
        name = None
    return f"{name} ({checkpoint.parent.name})" if name else checkpoint.name


# --------------------------------------------------------------------------------------------
# Inputs of the figure
# --------------------------------------------------------------------------------------------

def choose_automatically(recipe: Recipe, h5: Path, trained: TrainedModel, device,
                         ui: Console) -> list[int]:
    from tmkt_cli.data.loaders import EventDataset

    test = EventDataset(h5, "test", recipe.data, seed=recipe.seed, augment=False,
                        with_static=False)
    model = trained.model.to(device).eval()

    def predict(x):
        return model.predict(x.to(device))
    return automatic_positions(predict, np.asarray(test.labels), test, recipe.cam.max_classes,
                               recipe.eval.batch_size, ui)


@dataclass
class Chosen:
    positions: list[int]
    events: np.ndarray
    """``[S, T, 2, H, W]``."""
    labels: np.ndarray
    static: np.ndarray
    """``[S, H, W]`` in [0, 1] (zeros where ``has_static`` is False)."""
    has_static: np.ndarray
    static_kind: list[str]
    """Per sample: ``own`` (the recording's own image), ``class`` (the first training image
    of its class: the dataset pairs by class) or ``none``."""


def load_chosen(h5: Path, recipe: Recipe, positions: list[int]) -> Chosen:
    """The chosen test recordings, unaugmented, with the image to show beside each."""
    from tmkt_cli.data.loaders import EventDataset, static_from_image
    from tmkt_cli.data.store import open_dataset

    test = EventDataset(h5, "test", recipe.data, seed=recipe.seed, augment=False,
                        with_static=False)
    items = [test[p] for p in positions]
    events = np.stack([it["events"].numpy() for it in items])
    labels = np.array([int(it["label"]) for it in items], dtype=np.int64)
    size = events.shape[-1]
    static = np.zeros((len(items), events.shape[-2], size), dtype=np.float32)
    has_static = np.zeros(len(items), dtype=bool)
    kinds = []
    with open_dataset(h5) as ds:
        train_image_labels = ds.image_labels("train")
        for i, position in enumerate(positions):
            own = int(test.partner_image_index[position])
            if own >= 0:
                image, kind = ds.split("test")["images"][own], "own"
            else:
                rows = np.flatnonzero(train_image_labels == labels[i])
                image, kind = (ds.split("train")["images"][int(rows[0])], "class") \
                    if rows.size else (None, "none")
            if image is not None:
                static[i] = static_from_image(image, recipe.data.static_input)[0]
                has_static[i] = True
            kinds.append(kind)
    return Chosen(positions, events, labels, static, has_static, kinds)


def compute_maps(trained: TrainedModel, x: torch.Tensor, targets: torch.Tensor,
                 requested_layer: str, kind: str, gamma: float, what: str,
                 layer_optional: bool = False):
    """(layer name, ClassMaps) of one model. With ``layer_optional`` a requested layer the
    model lacks falls back to its default (a baseline of another backbone)."""
    from tmkt_cli.analysis.cam import class_activation_maps

    model = trained.model
    modules = dict(model.named_modules())
    requested = requested_layer if not (layer_optional and requested_layer not in modules) \
        else ""
    layer = resolve_layer(model, requested, x, kind, what)
    return layer, class_activation_maps(model, x, targets, modules[layer], kind, gamma)


# --------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------

@dataclass
class _Explanation:
    """One model's column of the figure."""
    label: str
    layer: str
    maps: ClassMaps


def run(recipe: Recipe, run: StageRun, ui: Console) -> None:
    import torch

    from tmkt_cli.train.runtime import select_device
    from tmkt_cli.train.tasks import as_sequence

    cfg = recipe.cam
    source = cam_source(recipe)
    h5 = Path(run.inputs["dataset"]["path"]) / "dataset.h5"
    facts = read_dataset_facts(h5)
    model_path = Path(run.inputs["model"]["path"])
    device = select_device("auto")
    trained, baseline = _load_models(recipe, run, source, facts, model_path)
    positions = chosen_positions(recipe, h5)
    if positions is None:
        positions = choose_automatically(recipe, h5, trained, device, ui)
    chosen = load_chosen(h5, recipe, positions)
    x = as_sequence(torch.from_numpy(chosen.events)).to(device)
    targets = torch.from_numpy(chosen.labels).to(device)

    model = _explain(trained, model_path, x, targets, device, recipe,
                     f"the model ({model_path})")
    base = None
    if baseline is not None:
        base = _explain(baseline, baseline.path, x, targets, device, recipe,
                        f"the baseline ({baseline.path})", layer_optional=True)
    ui.print(f"{STAGE}: {cfg.kind} on {model.layer} of {model.label}"
             + (f", baseline {base.label} ({base.layer})" if base is not None else "")
             + f"; {len(positions)} test samples")

    rows = _figure_rows(positions, chosen, facts.classes, model, base)
    what = {"gradcam": "Grad-CAM", "sam": "SAM"}[cfg.kind]
    outputs = _save_figures(rows, positions, what, f"{what}, {recipe.name} seed {recipe.seed}",
                            run.folder)
    _write_maps(run.folder / MAPS, positions, chosen, facts.classes, cfg.kind, model, base)
    _print_predictions(ui, f"cam: {what} ({model.layer})", positions, chosen, facts.classes,
                       model, base)
    run.complete(outputs=outputs,
                 metrics=_metrics(len(positions), chosen.labels, cfg.kind, model, base))
    ui.print(f"{STAGE}: done -> {run.folder / FIGURE}, {run.folder / MAPS}")


def _load_models(recipe: Recipe, run: StageRun, source: str, facts: PreparedFacts,
                 model_path: Path) -> tuple[TrainedModel, TrainedModel | None]:
    """The model under study (checked against the recipe) and the baseline, if any."""
    trained = load_trained_model(model_path, expected_model_info(recipe, source, facts),
                                 f"this recipe and dataset (cam.source={source})")
    baseline = None
    if "baseline" in run.inputs:
        baseline = load_trained_model(Path(run.inputs["baseline"]["path"]),
                                      _dataset_only(facts), "this dataset (cam.baseline)")
    return trained, baseline


def _explain(trained: TrainedModel, label_path: Path, x: torch.Tensor, targets: torch.Tensor,
             device, recipe: Recipe, what: str, layer_optional: bool = False) -> _Explanation:
    """One model's maps, computed on ``device``, with its name in the figure."""
    cfg = recipe.cam
    label = run_label(label_path)
    trained.model.to(device)
    layer, maps = compute_maps(trained, x, targets, cfg.layer, cfg.kind, cfg.sam_gamma, what,
                               layer_optional=layer_optional)
    return _Explanation(label, layer, maps)


def _figure_rows(positions: list[int], chosen: Chosen, classes: list[str],
                 model: _Explanation, base: _Explanation | None) -> list[CamRow]:
    """One row of the figure per sample: image, events, then the baseline's and the model's
    map, each captioned with its prediction."""
    from tmkt_cli.analysis import plotting
    from tmkt_cli.analysis.cam import event_intensity, integrate_events

    columns = {}
    if base is not None:
        columns[f"baseline: {base.label}"] = base.maps
    columns[model.label] = model.maps
    rows = []
    for i, position in enumerate(positions):
        row = plotting.CamRow(
            title=f"{classes[chosen.labels[i]]} (test #{position})",
            static=chosen.static[i] if chosen.has_static[i] else None,
            static_caption={"own": "", "class": "an image of its class",
                            "none": ""}[chosen.static_kind[i]],
            events_rgb=integrate_events(chosen.events[i]),
            background=event_intensity(chosen.events[i]))
        for title, class_maps in columns.items():
            row.maps[title] = class_maps.maps[i]
            predicted = int(class_maps.predictions[i])
            right = predicted == int(chosen.labels[i])
            row.captions[title] = (f"{'right' if right else 'wrong'}: "
                                   f"{classes[predicted]}")
        rows.append(row)
    return rows


def _save_figures(rows: list[CamRow], positions: list[int], what: str, title: str,
                  folder: Path) -> dict[str, str]:
    """``cam.png`` (every row) and ``cam-<index>.png`` (one per sample); the outputs to
    record in the manifest."""
    from tmkt_cli.analysis import plotting

    outputs = {"maps": MAPS, "figure": FIGURE}
    plotting.save_png(plotting.cam_figure(rows, title, f"{what} relevance"), folder / FIGURE)
    for position, row in zip(positions, rows, strict=True):
        name = f"cam-{position}.png"
        plotting.save_png(plotting.cam_figure([row], map_label=f"{what} relevance"),
                          folder / name)
        outputs[f"sample_{position}"] = name
    return outputs


def _write_maps(path: Path, positions: list[int], chosen: Chosen, classes: list[str], kind: str,
                model: _Explanation, base: _Explanation | None) -> None:
    """``maps.npz``: the raw maps, the inputs and the predictions."""
    maps = model.maps
    arrays = {
        "indices": np.asarray(positions, dtype=np.int64),
        "labels": chosen.labels,
        "classes": np.asarray(classes),
        "events": chosen.events.astype(np.float32),
        "static": chosen.static,
        "has_static": chosen.has_static,
        "static_kind": np.asarray(chosen.static_kind),
        "kind": np.asarray(kind),
        "layer": np.asarray(model.layer),
        "label": np.asarray(model.label),
        "maps": maps.maps,
        "predictions": maps.predictions.astype(np.int64),
    }
    if maps.per_step is not None:
        arrays["maps_per_step"] = maps.per_step
    if base is not None:
        arrays.update(baseline_maps=base.maps.maps,
                      baseline_predictions=base.maps.predictions.astype(np.int64),
                      baseline_layer=np.asarray(base.layer),
                      baseline_label=np.asarray(base.label))
        if base.maps.per_step is not None:
            arrays["baseline_maps_per_step"] = base.maps.per_step
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    write_bytes(path, buffer.getvalue())


def _print_predictions(ui: Console, title: str, positions: list[int], chosen: Chosen,
                       classes: list[str], model: _Explanation,
                       base: _Explanation | None) -> None:
    """Each sample's class and what the baseline and the model predict."""
    table = Table(title=title, title_justify="left")
    table.add_column("sample", justify="right")
    table.add_column("class")
    if base is not None:
        table.add_column("baseline predicts")
    table.add_column("model predicts")
    for i, position in enumerate(positions):
        cells = [str(position), classes[chosen.labels[i]]]
        if base is not None:
            cells.append(classes[base.maps.predictions[i]])
        cells.append(classes[model.maps.predictions[i]])
        table.add_row(*(escape(cell) for cell in cells))
    ui.print(table)


def _metrics(samples: int, labels: np.ndarray, kind: str, model: _Explanation,
             base: _Explanation | None) -> dict:
    """The manifest's metrics: how many samples each model classifies right."""
    correct = int((model.maps.predictions == labels).sum())
    metrics = {"samples": samples, "kind": kind, "layer": model.layer,
               "model_correct": correct}
    if base is not None:
        metrics.update(baseline_layer=base.layer,
                       baseline_correct=int((base.maps.predictions == labels).sum()))
    return metrics


def _dataset_only(facts: PreparedFacts) -> dict:
    """A baseline may be any SNN trained on this dataset (its own backbone and settings)."""
    return {"kind": "snn", "classes": facts.classes, "size": facts.size,
            "time_steps": facts.time_steps}


"""tmkt eval: measure a trained run on the test split.

For an SNN (a ``train-tmkt`` or ``distill`` run): top-1, top-5, per-class accuracy and the
confusion matrix of the event head's time-averaged logits; accuracy against the number of
time steps used at inference (the cumulative means of one forward pass); the firing rate of
every spiking layer; synaptic operations, the first layer's MACs, the ANN-equivalent MACs and
the energy estimate; throughput. For the ANN teacher (``pretrain-ann``): the same accuracies
on the test images, and its MACs. The rules are in docs/evaluation.md.

Writes ``eval.json`` and PNG figures; prints the figures as tables.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tmkt_cli.config import Recipe, trains_both_heads
from tmkt_cli.errors import TmktError
from tmkt_cli.runs.artifacts import StageRun, Upstream, write_json
from tmkt_cli.runs.checkpoints import (
    CHECKPOINT_FILES,
    PreparedFacts,
    TrainedModel,
    expected_model_info,
    load_trained_model,
    read_dataset_facts,
)
from tmkt_cli.stages.shared import dataset_input, source_input, trained_on
from tmkt_cli.train.progress import track

if TYPE_CHECKING:
    import torch
    from torch import nn

STAGE = "eval"
EVAL_JSON = "eval.json"
PREDICTIONS = "predictions.csv"
"""One row per test recording: its label, its source image (``/test/image_index``: the
group a bootstrap over test recordings resamples) and each head's predicted class."""
FIGURES = {"confusion": "confusion.png", "accuracy_vs_time_steps": "accuracy_vs_time_steps.png",
           "firing_rates": "firing_rates.png"}
ENERGY_SOURCE = ("Horowitz, 'Computing's energy problem', ISSCC 2014: 45 nm, 32-bit float "
                 "add 0.9 pJ, multiply 3.7 pJ")
THROUGHPUT_BATCHES = 10
"""Batches timed for throughput (after one warm-up batch): enough for a stable figure."""


def folder(recipe: Recipe) -> Path:
    return recipe.eval_dir()


def inputs(recipe: Recipe) -> dict[str, Upstream]:
    run = source_input(recipe, recipe.eval.source, "recipe key eval.source")
    return {"dataset": trained_on(dataset_input(recipe), run), "run": run}


def load_source_model(recipe: Recipe, run: StageRun, source: str, which: str, key: str
                      ) -> tuple[TrainedModel, PreparedFacts, Path]:
    """The dataset facts and the trained model of this recipe's ``source`` run."""
    h5 = Path(run.inputs["dataset"]["path"]) / "dataset.h5"
    facts = read_dataset_facts(h5)
    path = Path(run.inputs["run"]["path"]) / CHECKPOINT_FILES[which]
    if which == "best_test" and not path.is_file():  # no validation split: best.pt is it
        path = path.with_name(CHECKPOINT_FILES["best"])
    trained = load_trained_model(path, expected_model_info(recipe, source, facts),
                                 f"this recipe and dataset ({key}={source})")
    return trained, facts, h5


def checkpoint_choice(which: str, path: Path) -> str:
    """How the evaluated checkpoint was chosen, as tables print it: the last one, the best on
    the validation split, or the best on the test split (optimistic: the published numbers'
    way). A run has a validation split exactly when it wrote ``best_test.pt``."""
    if which == "last":
        return "last"
    has_val = (path.parent / CHECKPOINT_FILES["best_test"]).is_file()
    if which == "best" and has_val:
        return "best on validation"
    return "best on test (optimistic)"


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------

def measure_throughput(predict: Callable[[dict], Any], loader, device: torch.device,
                       max_batches: int = THROUGHPUT_BATCHES) -> dict:
    """Samples per second of ``predict`` alone (data loading excluded), timed over up to
    ``max_batches`` batches after one untimed warm-up batch (the first call allocates)."""
    import torch

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) > max_batches:
            break
    timed = batches[1:] or batches  # a single batch: time it, warm-up and all
    if len(batches) > 1:
        predict(_to(batches[0], device))
    samples, seconds = 0, 0.0
    for batch in timed:
        batch = _to(batch, device)
        sync()
        t0 = time.perf_counter()
        predict(batch)
        sync()
        seconds += time.perf_counter() - t0
        samples += len(batch["label"])
    return {"samples_per_s": samples / seconds if seconds > 0 else math.inf,
            "samples_timed": samples, "seconds": seconds,
            "batch_size": len(batches[0]["label"]) if batches else 0, "device": str(device),
            "threads": torch.get_num_threads()}


def _to(batch: dict, device) -> dict:
    import torch

    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def evaluate_snn(model: nn.Module, loader, facts: PreparedFacts, device: torch.device,
                 both_heads: bool = False) -> dict:
    """One pass over the test split with counting hooks: every SNN figure but throughput.
    Every figure is the test head's; with ``both_heads`` (a run that trained both) the other
    head reads the same trunk output, uncounted, for its top-1 and predictions."""
    import numpy as np
    import torch
    from spikingjelly.activation_based import functional

    from tmkt_cli.analysis.energy import ActivityMonitor
    from tmkt_cli.analysis.metrics import ClassificationTally
    from tmkt_cli.train.tasks import as_sequence

    tally = ClassificationTally(len(facts.classes), facts.time_steps)
    heads = model.head_order() if both_heads else [model.test_head]
    predicted: dict[str, list] = {h: [] for h in heads}
    labels = []
    model.eval()
    with torch.no_grad(), ActivityMonitor(model, model.spiking_layers()) as monitor:
        for batch in loader:
            x = as_sequence(batch["events"]).to(device)
            # Not model.predict: accuracy against T needs the logits of every time step.
            hidden = model.trunk_output(x)
            logits = model.heads[model.test_head](hidden)
            with monitor.paused():  # a deployed network computes one head
                by_head = {model.test_head: logits,
                           **{h: model.heads[h](hidden) for h in heads[1:]}}
            functional.reset_net(model)
            tally.update(logits.float().cpu().numpy(), batch["label"].numpy())
            for h, step_logits in by_head.items():
                predicted[h].append(step_logits.float().mean(0).argmax(-1).cpu().numpy())
            labels.append(batch["label"].numpy())
    results = tally.summary(facts.classes)
    labels = np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)
    results["predictions"] = {h: np.concatenate(p) if p else np.zeros(0, dtype=np.int64)
                              for h, p in predicted.items()}
    results["labels"] = labels
    results["heads"] = {h: float((p == labels).mean()) if labels.size else None
                        for h, p in results["predictions"].items()}
    rates = monitor.firing_rates()
    total_spikes = sum(c.spikes for c in monitor.spikes.values())
    total_elements = sum(c.elements for c in monitor.spikes.values())
    results["firing_rates"] = rates
    results["mean_firing_rate"] = total_spikes / total_elements if total_elements else None
    results["operations"] = monitor.operations(tally.samples, facts.time_steps, spiking=True)
    return results


def evaluate_ann(model: nn.Module, loader, facts: PreparedFacts, device: torch.device) -> dict:
    import torch

    from tmkt_cli.analysis.energy import ActivityMonitor
    from tmkt_cli.analysis.metrics import ClassificationTally

    tally = ClassificationTally(len(facts.classes), 1)
    model.eval()
    with torch.no_grad(), ActivityMonitor(model) as monitor:
        for batch in loader:
            logits = model(batch["image"].to(device))
            tally.update(logits.float().cpu().numpy(), batch["label"].numpy())
    results = tally.summary(facts.classes)
    del results["accuracy_vs_time_steps"]  # one image, no time steps
    results["operations"] = monitor.operations(tally.samples, 1, spiking=False)
    return results


# --------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------

def run(recipe: Recipe, run: StageRun, ui: Console) -> None:
    from tmkt_cli.analysis import plotting
    from tmkt_cli.train.runtime import select_device

    cfg = recipe.eval
    trained, facts, h5 = load_source_model(recipe, run, cfg.source, cfg.checkpoint,
                                           "eval.source")
    device = select_device("auto")
    model = trained.model.to(device)
    test = _test_split(recipe, trained, h5)
    ui.print(f"{STAGE}: {trained.info['backbone']} {trained.kind.upper()} from {trained.path} "
             f"(step {trained.step}), {len(test)} test samples, device {device}")

    def loader(progress: bool = True):
        return _test_batches(test, cfg.batch_size, recipe.data.num_workers, device, ui, progress)

    results = _measure(model, trained.kind, recipe, loader, facts, device)
    results["energy"] = _energy(results["operations"], trained.kind == "snn",
                                cfg.energy_ac_pj, cfg.energy_mac_pj)
    # per-recording labels and predictions go to predictions.csv, not into eval.json
    per_recording = ((results.pop("labels"), results.pop("predictions"))
                     if trained.kind == "snn" else None)
    report = _report(cfg.source, cfg.checkpoint, run.inputs["run"]["path"], trained, h5, facts,
                     results)

    title = _title(recipe)
    outputs = {"eval": EVAL_JSON}
    for name, fig in _figures(results, facts.classes, recipe, trained.kind == "snn").items():
        plotting.save_png(fig, run.folder / FIGURES[name])
        outputs[name] = FIGURES[name]
    if trained.kind == "snn":
        write_predictions(run.folder / PREDICTIONS, h5, *per_recording)
        outputs["predictions"] = PREDICTIONS
        report["test_head"] = model.test_head
        report["head_rule"] = getattr(model, "head_rule", model.test_head)
    write_json(run.folder / EVAL_JSON, report)
    print_results(report, ui, title)
    run.complete(outputs=outputs, metrics=summary_metrics(report))
    ui.print(f"{STAGE}: done -> {run.folder / EVAL_JSON}")


def _test_split(recipe: Recipe, trained: TrainedModel, h5: Path):
    """The test split as the model reads it: event recordings for an SNN, images for the ANN;
    an empty one is an error."""
    if trained.kind == "snn":
        from tmkt_cli.data.loaders import EventDataset

        test = EventDataset(h5, "test", recipe.data, seed=recipe.seed, augment=False,
                            with_static=False)
    else:
        from tmkt_cli.data.loaders import ImageDataset

        test = ImageDataset(h5, "test", recipe.data, augment=False,
                            rgb=int(trained.info.get("in_channels", 2)) == 3)
    if len(test) == 0:
        what = "recordings" if trained.kind == "snn" else "images"
        raise TmktError(f"{h5}: the test split has no {what} to evaluate")
    return test


def _test_batches(test, batch_size: int, num_workers: int | str, device: torch.device,
                  ui: Console, progress: bool = True):
    """A fresh loader over the test split, with a progress bar unless ``progress`` is False."""
    from tmkt_cli.train.engine import eval_loader
    from tmkt_cli.train.runtime import resolve_workers

    batches = eval_loader(test, batch_size, resolve_workers(num_workers, device), device=device)
    return track(batches, len(batches), ui, f"{STAGE}: test split") if progress \
        else batches


def _measure(model: nn.Module, kind: str, recipe: Recipe, loader: Callable[..., Any],
             facts: PreparedFacts, device: torch.device) -> dict:
    """Every figure of the test split (``loader()`` gives a fresh pass), throughput last."""
    import torch

    if kind == "snn":
        from tmkt_cli.train.tasks import as_sequence

        both = (not model.shared_heads
                and trains_both_heads(recipe.method, distilled=recipe.eval.source == "distill"))
        results = evaluate_snn(model, loader(), facts, device, both_heads=both)

        def predict(batch: dict) -> torch.Tensor:
            return model.predict(as_sequence(batch["events"]))
    else:
        results = evaluate_ann(model, loader(), facts, device)

        def predict(batch: dict) -> torch.Tensor:
            return model(batch["image"])
    with torch.no_grad():
        results["throughput"] = measure_throughput(predict, loader(progress=False), device)
    return results


def _energy(ops: dict, snn: bool, ac_pj: float, mac_pj: float) -> dict:
    """The energy estimate of eval.json, with the per-operation energies it assumed."""
    from tmkt_cli.analysis.energy import energy_estimate

    if snn:
        energy = energy_estimate(ops["ac_ops"], ops["mac_ops"], ops["ann_macs"], ac_pj, mac_pj)
    else:
        energy = {"ann_pj": ops["ann_macs"] * mac_pj}
    return {"energy_ac_pj": ac_pj, "energy_mac_pj": mac_pj, "source": ENERGY_SOURCE, **energy}


def _report(source: str, which: str, run_path: str, trained: TrainedModel, h5: Path,
            facts: PreparedFacts, results: dict) -> dict:
    """eval.json: what was evaluated on which data, then every figure."""
    return {
        "source": {"stage": source, "run": run_path,
                   "checkpoint": str(trained.path), "which": which,
                   "chosen": checkpoint_choice(which, trained.path),
                   "epoch": trained.epoch, "step": trained.step, "kind": trained.kind,
                   "backbone": trained.info.get("backbone")},
        "dataset": {"path": str(h5), "split": "test", "samples": results["samples"],
                    "time_steps": facts.time_steps, "size": facts.size,
                    "classes": facts.classes},
        **results,
    }


def redraw(recipe: Recipe, folder: Path, ui: Console) -> None:
    """``--figure-format`` on an up-to-date eval: its figures in the vector formats asked
    for, drawn from eval.json (nothing is recomputed; the recorded PNGs stay as they are)."""
    import json

    from tmkt_cli.analysis import plotting

    report = json.loads((folder / EVAL_JSON).read_text())
    snn = (report.get("source") or {}).get("kind") == "snn"
    written = [p for name, fig in _figures(report, list(report["per_class"]), recipe,
                                           snn).items()
               for p in plotting.save_vectors(fig, folder / FIGURES[name])]
    ui.print(f"{STAGE}: redrew {len(written)} figure file(s) from {EVAL_JSON}: "
             + ", ".join(p.name for p in written))


def _title(recipe: Recipe) -> str:
    cfg = recipe.eval
    return f"{recipe.name} seed {recipe.seed}: {cfg.source} ({cfg.checkpoint}.pt)"


def _figures(results: dict, classes: list[str], recipe: Recipe, snn: bool) -> dict:
    """Figure name -> figure, from an evaluation's results (or its eval.json, which holds
    the same entries): the confusion matrix for every model; accuracy against time steps and
    the firing rates for an SNN, drawn in the method's colour (tmkt_cli/analysis/style.py)."""
    from tmkt_cli.analysis import plotting

    title = _title(recipe)
    figures = {"confusion": plotting.confusion_figure(results["confusion"], classes,
                                                      f"Confusion, {title}")}
    if snn:
        method = "ckd" if recipe.eval.source == "distill" else recipe.method.name
        figures["accuracy_vs_time_steps"] = plotting.accuracy_vs_time_figure(
            results["accuracy_vs_time_steps"], f"Accuracy vs time steps, {title}", method)
        figures["firing_rates"] = plotting.firing_rate_figure(
            [r["layer"] for r in results["firing_rates"]],
            [r["firing_rate"] for r in results["firing_rates"]], f"Firing rates, {title}",
            method)
    return figures


def write_predictions(path: Path, h5: Path, labels, predictions: dict) -> None:
    """``predictions.csv`` (:data:`PREDICTIONS`), written whole or not at all."""
    from tmkt_cli.data.store import open_dataset
    from tmkt_cli.runs.artifacts import write_text

    with open_dataset(h5) as ds:
        groups = ds.image_index("test")
    heads = list(predictions)
    lines = [",".join(["index", "label", "image_index", *(f"pred_{h}" for h in heads)])]
    lines += [",".join(map(str, (i, int(y), int(groups[i]),
                                 *(int(predictions[h][i]) for h in heads))))
              for i, y in enumerate(labels)]
    write_text(path, "\n".join(lines) + "\n")


def summary_metrics(report: dict) -> dict:
    """The manifest's metrics: the headline figures of eval.json."""
    energy = report["energy"]
    return {"top1": report["top1"], "top5": report["top5"], "loss": report["loss"],
            "test_head": report.get("test_head"), "heads": report.get("heads"),
            "samples": report["samples"],
            "mean_firing_rate": report.get("mean_firing_rate"),
            "ac_ops": report["operations"].get("ac_ops"),
            "mac_ops": report["operations"].get("mac_ops"),
            "ann_macs": report["operations"]["ann_macs"],
            "snn_energy_uj": energy["snn_pj"] / 1e6 if "snn_pj" in energy else None,
            "ann_energy_uj": energy["ann_pj"] / 1e6,
            "samples_per_s": report["throughput"]["samples_per_s"]}


# --------------------------------------------------------------------------------------------
# Terminal output
# --------------------------------------------------------------------------------------------

def human(value: float | None) -> str:
    """1234567 -> '1.23 M': operation counts at a glance."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.2f} {prefix}"
    return f"{value:.3g}"


def energy_text(picojoules: float) -> str:
    """Energy with the unit that keeps 1-3 digits before the point (pJ to mJ)."""
    for factor, unit in ((1e9, "mJ"), (1e6, "µJ"), (1e3, "nJ")):
        if picojoules >= factor:
            return f"{picojoules / factor:.3g} {unit}"
    return f"{picojoules:.3g} pJ"


def print_results(report: dict, ui: Console, title: str) -> None:
    snn = report["source"]["kind"] == "snn"
    # An SNN's counts are per sample over its T time steps; the ANN it is compared with
    # reads one frame: every row says which.
    steps = f"{len(report['accuracy_vs_time_steps'])} steps" if snn else ""
    ui.print(_figures_table(report, title, snn, steps))
    if snn:
        ui.print(_accuracy_per_step_table(report["accuracy_vs_time_steps"]))
        ui.print(_spiking_layers_table(report["firing_rates"]))
    per = f"per sample, summed over {steps}" if snn else "per sample"
    ui.print(_synapses_table(report["operations"]["layers"], per))
    _print_lowest_classes(report["per_class"], ui)


def _figures_table(report: dict, title: str, snn: bool, steps: str) -> Table:
    """The headline figures: accuracies, operations, energy, throughput."""
    ops, energy, speed = report["operations"], report["energy"], report["throughput"]
    table = Table(title=escape(f"eval: {title}"), show_header=False, title_justify="left")
    table.add_column("figure", style="bold")
    table.add_column("value", justify="right")
    table.add_row("samples", str(report["samples"]))
    heads = report.get("heads") or {}
    head = f" ({report['test_head']} head)" if len(heads) > 1 else ""
    table.add_row(f"top-1{head}", f"{100 * report['top1']:.2f} %")
    for other in [h for h in heads if h != report.get("test_head")]:
        table.add_row(f"top-1, {other} head", f"{100 * heads[other]:.2f} %")
    table.add_row("top-5", f"{100 * report['top5']:.2f} %")
    table.add_row("loss", f"{report['loss']:.4f}")
    if snn:
        table.add_row("mean firing rate", f"{report['mean_firing_rate']:.4f}")
        table.add_row(f"synaptic ops (AC) / sample, {steps}", human(ops["ac_ops"]))
        table.add_row(f"first-layer MACs / sample, {steps}", human(ops["mac_ops"]))
        table.add_row(f"SNN energy / sample, {steps}", energy_text(energy["snn_pj"]))
    table.add_row("ANN MACs / sample, one frame" if snn else "MACs / sample",
                  human(ops["ann_macs"]))
    table.add_row("ANN energy / sample, one frame" if snn else "energy / sample",
                  energy_text(energy["ann_pj"]))
    if snn:
        table.add_row("ANN / SNN energy", f"{energy['ann_over_snn']:.2f} x")
    table.add_row("throughput", f"{speed['samples_per_s']:.1f} samples/s ({speed['device']})")
    return table


def _accuracy_per_step_table(accuracy: list[float]) -> Table:
    """Accuracy after each time step (the cumulative means of one pass)."""
    per_t = Table(title="accuracy after t time steps (%)", title_justify="left")
    for t in range(1, len(accuracy) + 1):
        per_t.add_column(str(t), justify="right")
    per_t.add_row(*[f"{100 * a:.2f}" for a in accuracy])
    return per_t


def _spiking_layers_table(firing_rates: list[dict]) -> Table:
    """Each spiking layer's neurons and firing rate."""
    layers = Table(title="spiking layers", title_justify="left")
    layers.add_column("layer")
    layers.add_column("neurons", justify="right")
    layers.add_column("firing rate", justify="right")
    for r in firing_rates:
        layers.add_row(escape(r["layer"]), str(r["neurons"]), f"{r['firing_rate']:.4f}")
    return layers


def _synapses_table(layers: list[dict], per: str) -> Table:
    """Each synaptic layer's operations per sample, counted as AC or MAC."""
    synapses = Table(title=f"synaptic layers ({per})", title_justify="left")
    for col in ("layer", "counted as", "ops", "dense MACs", "non-zero inputs"):
        synapses.add_column(col, justify="left" if col == "layer" else "right")
    for r in layers:
        synapses.add_row(escape(r["layer"]), r["kind"].upper(), human(r["ops"]),
                         human(r["dense_macs"]),
                         f"{100 * r['input_density']:.1f} %")
    return synapses


def _print_lowest_classes(per_class_accuracy: dict, ui: Console) -> None:
    """The ten classes with the lowest accuracy, if any class has one."""
    per_class = [(name, acc) for name, acc in per_class_accuracy.items() if acc is not None]
    if per_class:
        worst = sorted(per_class, key=lambda item: item[1])[:10]
        low = Table(title=f"lowest per-class accuracy ({len(worst)} of {len(per_class)})",
                    title_justify="left")
        low.add_column("class")
        low.add_column("accuracy", justify="right")
        for name, acc in worst:
            low.add_row(escape(name), f"{100 * acc:.1f} %")
        ui.print(low)

"""tmkt train-tmkt: train an SNN with tmkt, kt, finetune or event_only.

Build data, build model, build the task, hand them to the engine.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from rich.console import Console

from tmkt_cli.artifacts import StageRun, Upstream, read_upstream
from tmkt_cli.config import Recipe, TrainConfig, to_dict

STAGE = "train-tmkt"


def folder(recipe: Recipe) -> Path:
    return recipe.stage_dir(STAGE)


def dataset_input(recipe: Recipe) -> Upstream:
    return read_upstream(recipe.dataset_dir(), "prepare", "recipe key paths.dataset",
                         hint="tmkt prepare RECIPE")


def inputs(recipe: Recipe) -> dict[str, Upstream]:
    return {"dataset": dataset_input(recipe)}


def snn_model_info(recipe: Recipe, classes: list[str], size: int, time_steps: int) -> dict:
    """What a checkpoint must match to be loaded by eval, cam or as a student."""
    return {"kind": "snn", "backbone": recipe.model.backbone, "num_classes": len(classes),
            "classes": list(classes), "size": size, "time_steps": time_steps,
            "model": to_dict(recipe.model)}


def build_training_data(recipe: Recipe, run: StageRun, with_static: bool):
    """The event training subset, the event test split, and the store's facts."""
    import numpy as np

    from tmkt_cli.data.loaders import EventDataset, event_subset
    from tmkt_cli.data.store import open_dataset

    h5 = Path(run.inputs["dataset"]["path"]) / "dataset.h5"
    info = open_dataset(h5)
    train = EventDataset(h5, "train", recipe.data, seed=recipe.seed, augment=True,
                         with_static=with_static)
    test = EventDataset(h5, "test", recipe.data, seed=recipe.seed, augment=False,
                        with_static=False)
    subset_seed = recipe.seed if recipe.data.subset_seed < 0 else recipe.data.subset_seed
    indices = event_subset(np.asarray(train.labels), recipe.data.event_fraction, subset_seed)
    return info, train, test, indices


def equal_compute_train_config(recipe: Recipe) -> TrainConfig:
    """event_only with ``method.equal_compute``: twice the event batch at the same learning
    rate, so the baseline sees as many samples per step as the two-stream methods (B events
    plus B static sequences)."""
    cfg = recipe.train
    if recipe.method.name != "event_only" or not recipe.method.equal_compute:
        return cfg
    from tmkt_cli.engine import lr_for

    return dataclasses.replace(cfg, batch_size=2 * cfg.batch_size, lr=lr_for(cfg),
                               lr_scaling=False)


def run(recipe: Recipe, run: StageRun, ui: Console) -> None:
    from tmkt_cli.models import build_snn
    from tmkt_cli.runtime import seed_everything
    from tmkt_cli.tasks import SNNTransferTask

    m = recipe.method
    with_static = m.name != "event_only"
    info, train, test, indices = build_training_data(recipe, run, with_static)
    ui.print(f"{STAGE}: method {m.name}, {len(indices)}/{len(train)} event training "
             f"recordings ({recipe.data.event_fraction:.0%}), {len(test)} test, "
             f"{len(info.classes)} classes, T={info.time_steps}, {info.size}x{info.size}")
    seed_everything(recipe.seed)  # the initial weights are a function of the seed
    model = build_snn(recipe.model, len(info.classes), info.size, info.time_steps)
    task = SNNTransferTask(model, m, threshold=recipe.model.threshold)
    fit_and_record(task, recipe, run, ui, info, train, test, indices,
                   equal_compute_train_config(recipe))


def fit_and_record(task, recipe: Recipe, run: StageRun, ui: Console, info, train, test,
                   indices, train_cfg: TrainConfig) -> None:
    """Train an SNN task with the engine and complete the run's manifest (train-tmkt and
    distill end the same way)."""
    from tmkt_cli import engine
    from tmkt_cli.data.sampling import class_balanced_weights

    weights = (class_balanced_weights(train.labels[indices])
               if recipe.data.sampler == "class_balanced" else None)
    result = engine.fit(task, train, test, indices, train_cfg, seed=recipe.seed, run=run,
                        ui=ui, num_workers=recipe.data.num_workers, sample_weights=weights,
                        model_info=snn_model_info(recipe, info.classes, info.size,
                                                  info.time_steps))
    run.complete(outputs={"checkpoint": engine.LAST, "best": engine.BEST,
                          "metrics": engine.METRICS},
                 metrics={"test_acc": result.metrics.get("acc"),
                          "test_top5": result.metrics.get("top5"),
                          "best_acc": result.best.get("acc"),
                          "best_epoch": result.best.get("epoch"),
                          "steps": result.steps,
                          "event_train_samples": int(len(indices))})
    ui.print(f"{run.stage}: done, test accuracy {result.metrics.get('acc', float('nan')):.4f}"
             f" (best {result.best.get('acc', float('nan')):.4f}) -> {run.folder}")

"""tmkt train-tmkt: train an SNN with a method of the registry (tmkt, kt, finetune, event_only,
static_only: tmkt_cli/methods/builtin.py).

Build data (what the method's declaration says its batches hold), build model, build the
method's task, hand them to the engine.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from rich.console import Console

from tmkt_cli.config import Recipe, TrainConfig
from tmkt_cli.errors import TmktError
from tmkt_cli.methods import registry as methods
from tmkt_cli.runs.artifacts import StageRun, Upstream
from tmkt_cli.stages.shared import (
    build_training_data,
    dataset_input,
    fit_and_record,
    training_image_rows,
)

STAGE = "train-tmkt"


def folder(recipe: Recipe) -> Path:
    return recipe.stage_dir(STAGE)


def inputs(recipe: Recipe) -> dict[str, Upstream]:
    return {"dataset": dataset_input(recipe)}


def equal_compute_train_config(recipe: Recipe) -> TrainConfig:
    """event_only with ``method.equal_compute``: twice the event batch at the same learning
    rate, so the baseline sees as many samples per step as the two-stream methods (B events
    plus B static sequences)."""
    cfg = recipe.train
    if recipe.method.name != "event_only" or not recipe.method.equal_compute:
        return cfg
    from tmkt_cli.train.engine import lr_for

    return dataclasses.replace(cfg, batch_size=2 * cfg.batch_size, lr=lr_for(cfg),
                               lr_scaling=False)


def run(recipe: Recipe, run: StageRun, ui: Console) -> None:
    from tmkt_cli.models import build_snn
    from tmkt_cli.train.runtime import seed_everything

    m = recipe.method
    method = methods.get(m.name)
    if method.test_head is not None and recipe.model.test_head != method.test_head:
        raise TmktError(f"method {m.name} trains the {method.test_head} head only: set "
                        f"model.test_head: {method.test_head} (recipe key model.test_head)")
    if method.on_images:
        return run_on_images(recipe, run, ui, method)
    info, train, test, indices = build_training_data(recipe, run, "static" in method.inputs)
    ui.print(f"{STAGE}: method {m.name}, {len(indices)}/{len(train)} event training "
             f"recordings ({recipe.data.event_fraction:.0%}), {len(test)} test, "
             f"{len(info.classes)} classes, T={info.time_steps}, {info.size}x{info.size}")
    seed_everything(recipe.seed)  # the initial weights are a function of the seed
    model = build_snn(recipe.model, len(info.classes), info.size, info.time_steps)
    task = method.task_class()(model, m, threshold=recipe.model.threshold)
    fit_and_record(task, recipe, run, ui, info, train, test, indices,
                   equal_compute_train_config(recipe))


def run_on_images(recipe: Recipe, run: StageRun, ui: Console, method: methods.Method) -> None:
    """A method on images alone (static_only): the SNN on every static training image, tested
    on the static test images."""
    import numpy as np

    from tmkt_cli.data.loaders import ImageDataset
    from tmkt_cli.data.store import open_dataset
    from tmkt_cli.models import build_snn
    from tmkt_cli.train.runtime import seed_everything

    h5 = Path(run.inputs["dataset"]["path"]) / "dataset.h5"
    info = open_dataset(h5)
    rows, val_rows = training_image_rows(recipe, info)
    train = ImageDataset(h5, "train", recipe.data, seed=recipe.seed, augment=True, indices=rows)
    train.validation = (ImageDataset(h5, "train", recipe.data, seed=recipe.seed, augment=False,
                                     indices=val_rows) if val_rows is not None else None)
    test = ImageDataset(h5, "test", recipe.data, seed=recipe.seed, augment=False)
    if len(train) == 0 or len(test) == 0:
        raise TmktError(f"{h5}: the dataset has no training or test images (method "
                        f"{method.name} needs both)")
    ui.print(f"{STAGE}: method {method.name}, {len(train)} training images, {len(test)} test "
             f"images, {len(info.classes)} classes, T={info.time_steps}, "
             f"{info.size}x{info.size}")
    seed_everything(recipe.seed)
    model = build_snn(recipe.model, len(info.classes), info.size, info.time_steps)
    task = method.task_class()(model, recipe.method, threshold=recipe.model.threshold)
    fit_and_record(task, recipe, run, ui, info, train, test, np.arange(len(train)),
                   recipe.train)

"""tmkt pretrain-ann: the ANN teacher of CKD, trained on the prepared dataset's images.

The teacher sees the same input conversion as the student's static stream (HSV V channel or
grey, repeated to 2 channels), one frame instead of T.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from tmkt_cli.config import Recipe
from tmkt_cli.errors import TmktError
from tmkt_cli.runs.artifacts import StageRun, Upstream
from tmkt_cli.runs.checkpoints import ann_model_info
from tmkt_cli.stages.shared import dataset_input, training_image_rows, training_outputs

STAGE = "pretrain-ann"


def folder(recipe: Recipe) -> Path:
    return recipe.stage_dir(STAGE)


def inputs(recipe: Recipe) -> dict[str, Upstream]:
    ups = {"dataset": dataset_input(recipe)}
    if recipe.pretrain_ann.init_weights:
        ups["init_weights"] = Upstream.for_file(recipe.pretrain_ann.init_weights,
                                                "recipe key pretrain_ann.init_weights")
    return ups


def run(recipe: Recipe, run: StageRun, ui: Console) -> None:
    import numpy as np

    from tmkt_cli.data.loaders import ImageDataset
    from tmkt_cli.data.store import open_dataset
    from tmkt_cli.models.ann import build_ann, load_init_weights
    from tmkt_cli.train import engine
    from tmkt_cli.train.runtime import seed_everything
    from tmkt_cli.train.tasks import ImageClassifierTask

    cfg = recipe.pretrain_ann
    h5 = Path(run.inputs["dataset"]["path"]) / "dataset.h5"
    info = open_dataset(h5)
    rgb = cfg.input == "rgb"
    rows, val_rows = training_image_rows(recipe, info)  # the students' validation split
    train = ImageDataset(h5, "train", recipe.data, augment=True, rgb=rgb, indices=rows)
    val = (ImageDataset(h5, "train", recipe.data, augment=False, rgb=rgb, indices=val_rows)
           if val_rows is not None else None)
    test = ImageDataset(h5, "test", recipe.data, augment=False, rgb=rgb)
    if len(train) == 0:
        raise TmktError(f"{h5}: the dataset has no training images (an event-only dataset "
                        f"cannot train an ANN teacher)")
    seed_everything(recipe.seed)  # the initial weights are a function of the seed
    model = build_ann(cfg.backbone, len(info.classes), info.size, 3 if rgb else 2)
    if cfg.init_weights:
        report = load_init_weights(model, cfg.init_weights)
        ui.print(f"{STAGE}: initial weights from {cfg.init_weights}: {report.summary()}")
    ui.print(f"{STAGE}: {cfg.backbone} teacher on {len(train)} training images, "
             f"{len(test)} test images, {len(info.classes)} classes")
    result = engine.fit(ImageClassifierTask(model), train, test, np.arange(len(train)),
                        cfg.train, seed=recipe.seed, run=run, ui=ui,
                        num_workers=recipe.data.num_workers, val_set=val,
                        model_info=ann_model_info(cfg.backbone, info.classes, info.size,
                                                  3 if rgb else 2))
    run.complete(outputs=training_outputs(run, val is not None),
                 metrics={"test_acc": result.metrics.get("acc"),
                          "best_acc": result.best.get("acc"), "steps": result.steps,
                          "best_chosen_on": "validation" if val is not None else "test",
                          "train_images": len(train),
                          "val_images": len(val) if val is not None else 0})
    ui.print(f"{STAGE}: done, image test accuracy {result.metrics.get('acc', float('nan')):.4f}"
             f" -> {run.folder}")


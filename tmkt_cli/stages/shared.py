"""What several stages share: their upstream inputs, and the SNN training data and ending.

Stage modules import from here (and from :mod:`tmkt_cli.runs.checkpoints`), never from each other,
so each stage can be read and changed on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console

from tmkt_cli.config import Recipe, TrainConfig, to_dict
from tmkt_cli.config.variants import flat_keys
from tmkt_cli.errors import TmktError
from tmkt_cli.runs.artifacts import StageRun, Upstream, read_upstream
from tmkt_cli.runs.checkpoints import (
    BEST,
    BEST_TEST,
    CHECKPOINT_OUTPUTS,
    LAST,
    MODEL,
    write_model_file,
)
from tmkt_cli.runs.runlog import METRICS

# --------------------------------------------------------------------------------------------
# Upstream inputs
# --------------------------------------------------------------------------------------------

def dataset_input(recipe: Recipe) -> Upstream:
    upstream = read_upstream(recipe.dataset_dir(), "prepare", "recipe key paths.dataset",
                             hint="tmkt prepare RECIPE")
    if not recipe.paths.dataset:
        _check_prepared_as_the_recipe_says(upstream, recipe)
    return upstream


def _check_prepared_as_the_recipe_says(upstream: Upstream, recipe: Recipe) -> None:
    """The default dataset folder is named by dataset, T and size alone, so a recipe with other
    prepare settings (``--set prepare.emulator.contrast_threshold=0.3``) would read a dataset
    prepared without them: refused, naming the settings that differ. (A ``paths.dataset``
    given by hand is the user's choice, and not checked here.) ``prepare.root`` says where
    the raw data lived, not what was computed; keys one side lacks come from another tmkt
    version's schema."""
    recorded = (upstream.manifest.get("stage_config") or {}).get("prepare")
    if not isinstance(recorded, dict):
        return  # not written by tmkt prepare's stage config (a hand-made or older folder)
    # the recipe's whole prepare section (a key left out of its hash at its default is still
    # compared with a dataset that recorded another value for it)
    ours = flat_keys(to_dict(recipe.prepare))
    theirs = flat_keys(recorded)
    diffs = [f"prepare.{k} {theirs[k]!r} (recipe: {ours[k]!r})"
             for k in sorted(set(ours) & set(theirs)) if k != "root" and ours[k] != theirs[k]]
    if diffs:
        shown = "; ".join(diffs[:3]) + (f"; and {len(diffs) - 3} more" if len(diffs) > 3 else "")
        raise TmktError(f"{upstream.folder}: prepared with other settings than this recipe's "
                        f"({shown}); prepare this recipe's dataset into a folder of its own "
                        f"and use it: --set paths.dataset=prepared/NAME on tmkt prepare and "
                        f"on this stage")


def source_input(recipe: Recipe, source: str, key: str) -> Upstream:
    return read_upstream(recipe.stage_dir(source), source, key,
                         hint=f"tmkt {source} RECIPE")


def trained_on(dataset: Upstream, run: Upstream) -> Upstream:
    """``dataset``, when it is the prepared dataset ``run`` was trained on (by content hash,
    wherever either lives now: a run moved together with its dataset keeps working); refused
    in one line when another dataset sits at the path (another folder's ``prepared/``, other
    emulator settings)."""
    recorded = (run.manifest.get("inputs") or {}).get("dataset") or {}
    if recorded.get("hash") and recorded["hash"] != dataset.output_hash:
        raise TmktError(f"{dataset.folder}: not the prepared dataset {run.folder} was trained "
                        f"on (hash {dataset.output_hash}; the run read {recorded['hash']} at "
                        f"{recorded.get('path')}); set paths.dataset to that dataset")
    return dataset


def checkpoint_input(run_input: Upstream, which: str, key: str) -> Upstream:
    """One checkpoint of a finished training run, as an input of its own: its path, and as
    its hash the checkpoint's sha256 from the run's manifest (the file is not reread). A
    stage recording it notices when another checkpoint is chosen or the run is retrained."""
    entry = run_input.manifest.get("outputs", {}).get(CHECKPOINT_OUTPUTS[which])
    if not entry or not entry.get("sha256"):
        raise TmktError(f"{run_input.folder}: its manifest lists no {which} checkpoint "
                        f"(from {key})")
    return Upstream(run_input.folder / entry["path"],
                    {"output_hash": entry["sha256"][:16], "outputs": {}})


# --------------------------------------------------------------------------------------------
# Training stages
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ValidationSplit:
    """The training split of a run with ``data.val_fraction`` > 0: which training recordings
    it trains on and which it validates on, and which training images their sources are."""

    train: np.ndarray
    """Positions of the training recordings left for training."""
    recordings: np.ndarray
    """Positions of the held-out (validation) recordings."""
    images: np.ndarray
    """Rows of ``/train/images`` that are the held-out recordings' source images: no stream
    trains on them (:func:`tmkt_cli.data.loaders.held_out_images`)."""


def validation_split_of(recipe: Recipe, info) -> ValidationSplit | None:
    """The run's validation split (None without ``data.val_fraction``): whole groups of one
    source image per class, seeded by the recipe's seed; every stage carves the same one."""
    from tmkt_cli.data.loaders import held_out_images, validation_split

    if recipe.data.val_fraction <= 0:
        return None
    image_index = info.image_index("train")
    rest, held_out = validation_split(info.labels("train"), image_index,
                                      recipe.data.val_fraction, recipe.seed)
    return ValidationSplit(rest, held_out, held_out_images(image_index, held_out))


def training_image_rows(recipe: Recipe, info) -> tuple[np.ndarray, np.ndarray | None]:
    """(rows of ``/train/images`` to train on, rows to validate on or None): without a
    validation split every training image trains; with one, the held-out recordings' source
    images validate instead (static_only and the ANN teacher)."""
    rows = np.arange(len(info.image_labels("train")))
    split = validation_split_of(recipe, info)
    if split is None:
        return rows, None
    return np.setdiff1d(rows, split.images), split.images


def build_training_data(recipe: Recipe, run: StageRun, with_static: bool,
                        teacher_rgb: bool = False):
    """The event training subset, the event test split, and the store's facts. With a
    validation split, the held-out recordings become ``train.validation`` and their source
    images are kept out of the static stream."""
    from tmkt_cli.data.loaders import EventDataset, event_subset
    from tmkt_cli.data.store import open_dataset

    h5 = Path(run.inputs["dataset"]["path"]) / "dataset.h5"
    info = open_dataset(h5)
    split = validation_split_of(recipe, info)
    train = EventDataset(h5, "train", recipe.data, seed=recipe.seed, augment=True,
                         with_static=with_static, teacher_rgb=teacher_rgb,
                         exclude_images=split.images if split else None)
    test = EventDataset(h5, "test", recipe.data, seed=recipe.seed, augment=False,
                        with_static=False)
    subset_seed = recipe.seed if recipe.data.subset_seed < 0 else recipe.data.subset_seed
    labels = np.asarray(train.labels)
    val = None
    if split is not None:  # carved out first; the event subset comes from the rest
        val = EventDataset(h5, "train", recipe.data, seed=recipe.seed, augment=False,
                           with_static=False, indices=split.recordings)
        rest = split.train
        indices = rest[event_subset(labels[rest], recipe.data.event_fraction, subset_seed,
                                    recipe.data.subset_draw)]
    else:
        indices = event_subset(labels, recipe.data.event_fraction, subset_seed,
                               recipe.data.subset_draw)
    train.validation = val
    return info, train, test, indices


def training_outputs(run: StageRun, validation: bool) -> dict[str, str]:
    """Write ``model.pt`` (the finished weights without the training state) and name the
    files a training run lists in its manifest. ``best_test`` is ``best_test.pt`` beside a
    validation split (``validation``) and ``best.pt`` without one (then best.pt is the best on
    test); a run with a split whose best_test.pt is missing is refused, never pointed at
    best.pt."""
    if validation and not (run.folder / BEST_TEST).is_file():
        raise TmktError(f"{run.folder / BEST_TEST}: missing at the end of a run with a "
                        f"validation split; run with --resume never to train it again")
    if run.writer:
        write_model_file(run.folder)
    best_test = BEST_TEST if validation else BEST
    return {"checkpoint": LAST, "best": BEST, "best_test": best_test, "model": MODEL,
            "metrics": METRICS}


def fit_and_record(task, recipe: Recipe, run: StageRun, ui: Console, info, train, test,
                   indices, train_cfg: TrainConfig) -> None:
    """Train an SNN task with the engine and complete the run's manifest (train-tmkt and
    distill end the same way)."""
    from tmkt_cli.data.sampling import class_balanced_weights
    from tmkt_cli.runs.checkpoints import snn_model_info
    from tmkt_cli.train import engine

    weights = (class_balanced_weights(train.labels[indices])
               if recipe.data.sampler == "class_balanced" else None)
    val = getattr(train, "validation", None)
    result = engine.fit(task, train, test, indices, train_cfg, seed=recipe.seed, run=run,
                        ui=ui, num_workers=recipe.data.num_workers, sample_weights=weights,
                        val_set=val,
                        model_info=snn_model_info(recipe, info.classes, info.size,
                                                  info.time_steps))
    run.complete(outputs=training_outputs(run, val is not None),
                 metrics={"test_acc": result.metrics.get("acc"),
                          "test_top5": result.metrics.get("top5"),
                          # best.pt: chosen on validation when there is a split, else on test
                          "best_acc": result.best.get("acc"),
                          "best_epoch": result.best.get("epoch"),
                          "best_chosen_on": "validation" if val is not None else "test",
                          "best_val_acc": result.best.get("val_acc"),
                          # chosen on test: optimistic, the published numbers' way
                          "best_test_acc": result.best_test.get("acc"),
                          "val_samples": int(len(val)) if val is not None else 0,
                          **head_metrics(recipe, task, result.metrics),
                          "steps": result.steps,
                          "event_train_samples": int(len(indices))})
    ui.print(f"{run.stage}: done, test accuracy {result.metrics.get('acc', float('nan')):.4f}"
             f"{head_note(task, result.metrics)}"
             f" (best {result.best.get('acc', float('nan')):.4f}) -> {run.folder}")


def head_metrics(recipe: Recipe, task, last: dict) -> dict:
    """The manifest's record of which head ``test_acc`` is (``test_head``, by the rule
    ``head_rule``) and, for a run whose two heads both train, each head's top-1 on the test
    and validation splits (``heads``)."""
    from tmkt_cli.analysis.heads import head_accuracies

    model = task.model
    out = {"head_rule": recipe.model.test_head, "test_head": getattr(model, "test_head", None)}
    if getattr(task, "two_streams", False) and not model.shared_heads and "acc" in last:
        test = head_accuracies(last, model.test_head)
        val = head_accuracies(last, model.test_head, "val_") if "val_acc" in last else {}
        out["heads"] = {h: {"test": test.get(h), "val": val.get(h)} for h in model.HEADS}
    return out


def head_note(task, last: dict) -> str:
    """`` (static head, chosen on validation; event head 0.6202)`` for a two-head run."""
    from tmkt_cli.analysis.heads import head_accuracies

    model = task.model
    if not getattr(task, "two_streams", False) or model.shared_heads or "acc" not in last:
        return ""
    how = {"validation": "chosen on validation" if last.get("val_acc") is not None
           else "no validation split: the event head"}.get(model.head_rule, "model.test_head")
    others = "; ".join(f"{h} head {a:.4f}" for h, a in
                       head_accuracies(last, model.test_head).items() if h != model.test_head)
    return f" ({model.test_head} head, {how}; {others})"

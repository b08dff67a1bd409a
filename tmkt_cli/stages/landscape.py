"""tmkt landscape: the loss around trained checkpoints (Li et al., NeurIPS 2018).

For each run folder: the loss of its ``last.pt`` along two filter-normalised random directions
(the maths is in :mod:`tmkt_cli.analysis.landscape`) on training samples of the run, drawn as
contours. Writes ``landscape-<name>-seed<seed>-<stage>.png`` and ``.npz`` into ``--out``.
``tmkt report --landscape RUN`` (deprecated) runs this and lists the figures in the report.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rich.console import Console

from tmkt_cli.errors import TmktError
from tmkt_cli.runs.artifacts import MANIFEST, write_bytes
from tmkt_cli.runs.checkpoints import LAST, MODEL_STAGES, SNN_STAGES

if TYPE_CHECKING:
    from tmkt_cli.analysis.landscape import Landscape
    from tmkt_cli.config import Recipe
    from tmkt_cli.runs.checkpoints import TrainedModel


def draw_landscape(run_folder: Path, out: Path, ui: Console, grid: int = 11,
                   samples: int = 128, batch_size: int = 64) -> tuple[Path, Path]:
    """The loss around a run's last checkpoint along two filter-normalised directions, on
    ``samples`` of the training data the run learnt from (event recordings without
    augmentation, or images for an ANN). Returns the PNG and the raw grid (npz)."""
    import torch
    from rich.progress import Progress

    from tmkt_cli.analysis.landscape import loss_landscape

    recipe, stage, h5, trained = _load_last(run_folder)
    inputs, labels = _landscape_data(recipe, h5, stage, samples)
    model = trained.model
    model.eval()

    def evaluate(m) -> tuple[float, float]:
        import torch.nn.functional as F

        loss_sum, correct = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(labels), batch_size):
                x, y = inputs[start:start + batch_size], labels[start:start + batch_size]
                if trained.kind == "snn":
                    logits = m.predict(x.transpose(0, 1).contiguous())
                else:
                    logits = m(x)
                loss_sum += float(F.cross_entropy(logits.float(), y, reduction="sum"))
                correct += int((logits.argmax(1) == y).sum())
        return loss_sum / len(labels), correct / len(labels)

    coords = np.linspace(-1.0, 1.0, grid)
    with Progress(console=ui, transient=True) as progress:
        task = progress.add_task(f"landscape {run_folder}", total=grid * grid)
        surface = loss_landscape(model, evaluate, coords, seed=recipe.seed,
                                 on_point=lambda i, j: progress.advance(task))
    stem = f"landscape-{recipe.name}-seed{recipe.seed}-{stage}"
    png, raw = out / f"{stem}.png", out / f"{stem}.npz"
    title = f"Loss landscape, {recipe.name} seed {recipe.seed} ({stage})"
    _save_landscape(surface, png, raw, title, trained.path, len(labels), recipe.seed)
    return png, raw


def _load_last(run_folder: Path) -> tuple[Recipe, str, Path, TrainedModel]:
    """A run's recipe, stage, dataset file and ``last.pt``, checked against that dataset."""
    from tmkt_cli.config import load_recipe
    from tmkt_cli.runs.artifacts import read_upstream
    from tmkt_cli.runs.checkpoints import load_trained_model, read_dataset_facts
    from tmkt_cli.runs.run_target import dataset_path_of

    up = read_upstream(run_folder, MODEL_STAGES, "tmkt landscape RUN")
    recipe = load_recipe(run_folder / "config.yaml")
    stage = up.manifest["stage"]
    dataset = up.manifest.get("inputs", {}).get("dataset", {}).get("path")
    if not dataset:
        raise TmktError(f"{run_folder / MANIFEST}: records no dataset input (tmkt landscape RUN)")
    h5 = Path(dataset_path_of(run_folder, dataset)) / "dataset.h5"
    facts = read_dataset_facts(h5)
    expected = {"classes": facts.classes, "size": facts.size}
    if stage in SNN_STAGES:
        expected.update(kind="snn", time_steps=facts.time_steps)
    else:
        expected["kind"] = "ann"
    trained = load_trained_model(run_folder / LAST, expected, "its dataset (tmkt landscape RUN)")
    return recipe, stage, h5, trained


def _save_landscape(surface: Landscape, png: Path, raw: Path, title: str, checkpoint: Path,
                    samples: int, seed: int) -> None:
    """The contour figure, then the raw grid with what it was computed from."""
    from tmkt_cli.analysis import plotting

    plotting.save_png(plotting.landscape_figure(
        surface.alphas, surface.betas, surface.loss, title), png)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, alphas=surface.alphas, betas=surface.betas, loss=surface.loss,
                        accuracy=surface.accuracy, checkpoint=np.asarray(str(checkpoint)),
                        samples=np.asarray(samples), seed=np.asarray(seed))
    write_bytes(raw, buffer.getvalue())


def _landscape_data(recipe, h5: Path, stage: str, samples: int):
    """Up to ``samples`` training examples (a fixed random choice) as two tensors."""
    import torch

    from tmkt_cli.data.loaders import EventDataset, ImageDataset, event_subset

    if stage in SNN_STAGES:
        train = EventDataset(h5, "train", recipe.data, seed=recipe.seed, augment=False,
                             with_static=False)
        subset_seed = recipe.seed if recipe.data.subset_seed < 0 else recipe.data.subset_seed
        pool = event_subset(np.asarray(train.labels), recipe.data.event_fraction, subset_seed,
                            recipe.data.subset_draw)
        key = "events"
    else:
        train = ImageDataset(h5, "train", recipe.data, augment=False,
                             rgb=recipe.pretrain_ann.input == "rgb")
        pool = np.arange(len(train))
        key = "image"
    if len(pool) == 0:
        raise TmktError(f"{h5}: no training samples for the loss landscape")
    chosen = np.sort(np.random.default_rng(recipe.seed).permutation(pool)[:samples])
    items = [train[int(i)] for i in chosen]
    return (torch.stack([it[key] for it in items]),
            torch.stack([it["label"] for it in items]))


def draw_landscapes(folders: list[Path], out: Path, ui: Console, grid: int = 11,
                    samples: int = 128) -> tuple[dict[str, Path], list[Path]]:
    """:func:`draw_landscape` for each run folder: (title -> PNG, raw grids)."""
    from tmkt_cli.runs.artifacts import read_upstream

    out = Path(out)
    for folder in map(Path, folders):  # every run checked before anything is written
        read_upstream(folder, MODEL_STAGES, "tmkt landscape RUN")
    out.mkdir(parents=True, exist_ok=True)
    figures, grids = {}, []
    for folder in map(Path, folders):
        ui.print(f"landscape: {grid}x{grid} points around {folder} on up to {samples} "
                 f"training samples")
        png, raw = draw_landscape(folder, out, ui, grid=grid, samples=samples)
        figures[f"loss landscape, {folder}"] = png
        grids.append(raw)
        ui.print(f"figure:  {png}\ngrid:    {raw}")
    return figures, grids

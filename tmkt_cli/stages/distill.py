"""tmkt distill: CKD, phased cross knowledge distillation from an ANN teacher into an SNN.

The student is KT's two-stream SNN (static stream with sliding replacement, event stream, CKA
alignment with STR weights); the frozen teacher distils into the static stream's logits with a
weight W that is 1 in phase I and switches steeply to 0 for phase II:
``L = (W L_KD + L_cls_static) + L_cls_event + L_DA``.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from tmkt_cli.config import MethodConfig, Recipe
from tmkt_cli.runs.artifacts import StageRun, Upstream, read_upstream
from tmkt_cli.runs.checkpoints import LAST, check_teacher, load_teacher, read_dataset_facts
from tmkt_cli.stages.shared import build_training_data, dataset_input, fit_and_record

STAGE = "distill"


def folder(recipe: Recipe) -> Path:
    return recipe.stage_dir(STAGE)


def teacher_dir(recipe: Recipe) -> Path:
    return Path(recipe.distill.teacher) if recipe.distill.teacher else \
        recipe.stage_dir("pretrain-ann")


def inputs(recipe: Recipe) -> dict[str, Upstream]:
    dataset = dataset_input(recipe)
    teacher = read_upstream(teacher_dir(recipe), "pretrain-ann", "recipe key distill.teacher",
                            hint="tmkt pretrain-ann RECIPE")
    # Refuse a teacher of other classes before the student's folder is touched.
    from tmkt_cli.data.store import open_dataset

    info = open_dataset(dataset.output("dataset"))
    check_teacher(teacher.folder / LAST, info.classes, info.size)
    return {"dataset": dataset, "teacher": teacher}


def ckd_method(recipe: Recipe) -> MethodConfig:
    """CKD's student components, as switches of the shared transfer task."""
    d = recipe.distill
    return MethodConfig(name="kt", tsm=False, mag=False, mrp=False,
                        sliding_replacement=d.sliding_replacement,
                        domain_alignment=d.domain_alignment, str_weights=d.str_weights,
                        da_weight=d.da_weight, tet=d.tet, tet_lambda=recipe.method.tet_lambda)


def run(recipe: Recipe, run: StageRun, ui: Console) -> None:
    from torch import nn

    from tmkt_cli.models import build_snn
    from tmkt_cli.train.runtime import seed_everything
    from tmkt_cli.train.tasks import SNNTransferTask, Teacher

    d = recipe.distill
    teacher_path = Path(run.inputs["teacher"]["path"]) / LAST
    facts = read_dataset_facts(Path(run.inputs["dataset"]["path"]) / "dataset.h5")
    teacher = load_teacher(teacher_path, facts.classes, facts.size)
    # a colour teacher (pretrain_ann.input: rgb) reads the partner image in colour
    rgb = next(m for m in teacher.modules() if isinstance(m, nn.Conv2d)).in_channels == 3
    info, train, test, indices = build_training_data(recipe, run, with_static=True,
                                                     teacher_rgb=rgb)
    seed_everything(recipe.seed)  # the initial weights are a function of the seed
    student = build_snn(recipe.model, len(info.classes), info.size, info.time_steps)
    ui.print(f"{STAGE}: {len(indices)}/{len(train)} event training recordings, teacher "
             f"{teacher_path}, W switches at {d.switch_at:.0%} of training")
    task = SNNTransferTask(student, ckd_method(recipe), threshold=recipe.model.threshold,
                           teacher=Teacher(teacher, d.temperature, d.kd_weight, d.switch_at,
                                           d.steepness, "static_rgb" if rgb else "static"))
    fit_and_record(task, recipe, run, ui, info, train, test, indices, recipe.train)

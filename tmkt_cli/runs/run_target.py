"""``tmkt eval|cam RUN_FOLDER`` and ``tmkt eval|cam CHECKPOINT``: a trained run as the target.

A training run folder holds the whole resolved recipe that made it (``config.yaml``) and, in
its manifest, the prepared dataset it read. That is all ``eval`` needs: the recipe is taken
from the folder, placed so that the run is exactly this folder (whatever the names and roots
were where it was trained: a copied or downloaded run works), and the evaluation is written
beside it (``<run>/../eval/``, ``eval-best/``..., ``<run>/../cam/``). A checkpoint file inside a
run folder picks
the checkpoint (``last.pt``, ``best.pt``, ``best_test.pt``; ``model.pt`` holds the weights of
``last.pt``).
"""

from __future__ import annotations

from pathlib import Path

from tmkt_cli.errors import TmktError

CHECKPOINT_CHOICE = {"last.pt": "last", "model.pt": "last", "best.pt": "best",
                     "best_test.pt": "best_test"}
TRAINING_STAGES = ("train-tmkt", "distill", "pretrain-ann")


def is_run_target(text: str) -> bool:
    """A run folder or a checkpoint file, rather than a recipe."""
    path = Path(text)
    return (path.is_dir() and (path / "manifest.json").is_file()) or path.suffix == ".pt"


def eval_target(text: str) -> tuple[dict, list[str]]:
    """(the recipe as raw data, overrides) that evaluate the run at ``text``."""
    raw, overrides, stage, which = _run_recipe(text, "eval")
    overrides.append(f"eval.source={stage}")
    if which is not None:
        overrides.append(f"eval.checkpoint={which}")
    return raw, overrides


CAM_SOURCES = ("train-tmkt", "distill")
CAM_CHECKPOINTS = ("last", "best")


def cam_target(text: str) -> tuple[dict, list[str]]:
    """(the recipe as raw data, overrides) that explain the run at ``text`` with ``tmkt cam``
    (an SNN: train-tmkt or distill; its last or best checkpoint)."""
    raw, overrides, stage, which = _run_recipe(text, "cam")
    if stage not in CAM_SOURCES:
        raise TmktError(f"{text}: a {stage} run; cam explains an SNN "
                        f"({', '.join(CAM_SOURCES)})")
    if which is not None and which not in CAM_CHECKPOINTS:
        raise TmktError(f"{text}: cam reads last.pt, model.pt or best.pt of a run")
    overrides.append(f"cam.source={stage}")
    if which is not None:
        overrides.append(f"cam.checkpoint={which}")
    return raw, overrides


def _run_recipe(text: str, command: str) -> tuple[dict, list[str], str, str | None]:
    """(raw recipe, overrides placing the run at exactly this folder, its stage, the
    checkpoint a file names or None) of the training run at ``text``."""
    from tmkt_cli.config import read_yaml
    from tmkt_cli.runs.artifacts import read_manifest

    path = Path(text)
    if path.suffix == ".pt":
        if not path.is_file():
            raise TmktError(f"{path}: checkpoint not found")
        if path.name not in CHECKPOINT_CHOICE:
            raise TmktError(f"{path}: not a checkpoint a run writes "
                            f"({', '.join(CHECKPOINT_CHOICE)}); give {command} its run folder")
        folder, which = path.parent, CHECKPOINT_CHOICE[path.name]
    else:
        folder, which = path, None
    if not (folder / "config.yaml").is_file() or not (folder / "manifest.json").is_file():
        raise TmktError(f"{folder}: not a tmkt run folder (no config.yaml and manifest.json); "
                        f"a checkpoint outside its run folder cannot say which dataset it "
                        f"was trained on")
    manifest = read_manifest(folder)
    stage = manifest.get("stage")
    if stage not in TRAINING_STAGES:
        raise TmktError(f"{folder}: a {stage} run; {command} reads a training run "
                        f"({', '.join(TRAINING_STAGES)})")
    raw = read_yaml(folder / "config.yaml", "run config")
    seed = raw.get("seed")
    if folder.parent.name != f"seed{seed}":
        raise TmktError(f"{folder}: expected it inside a seed{seed}/ folder, as tmkt writes "
                        f"runs; give {command} its recipe instead")
    overrides = [f"paths.runs={folder.parent.parent.parent}",
                 f"name={folder.parent.parent.name}", "variant="]
    dataset = (manifest.get("inputs") or {}).get("dataset", {}).get("path")
    if dataset:
        overrides.append(f"paths.dataset={dataset_path_of(folder, dataset)}")
    raw.pop("base", None)
    return raw, overrides, stage, which


def dataset_path_of(folder: Path, recorded: str) -> str:
    """Where the dataset a run recorded is now. A relative path was relative to the folder the
    run was started in: found from here, or else beside one of the run folder's ancestors (a
    project moved or copied whole, evaluated from elsewhere). Which one is right is then the
    content hash's to say (stages/shared.trained_on), not the path's."""
    path = Path(recorded)
    if path.is_absolute() or (path / "manifest.json").is_file():
        return recorded
    for ancestor in folder.resolve().parents:
        if (ancestor / path / "manifest.json").is_file():
            return str(ancestor / path)
    return recorded


def variant_run(recipe) -> Path | None:
    """The one finished variant run of a recipe whose own run is not there: ``tmkt eval
    digits/tmkt`` after ``tmkt train-tmkt digits/tmkt --set train.max_steps=5`` evaluates that
    run. None when the recipe's own run is there (or nothing is: the stage says what is
    missing); several variants are listed, never picked among."""
    from tmkt_cli.runs.artifacts import read_manifest

    source = recipe.eval.source
    own = recipe.stage_dir(source)
    if (own / "manifest.json").is_file() or recipe.variant:
        return None
    pattern = f"*/seed{recipe.seed}/{source}/manifest.json"
    found = []
    for manifest in sorted(Path(recipe.paths.runs, recipe.name).glob(pattern)):
        try:
            if (read_manifest(manifest.parent) or {}).get("status") == "complete":
                found.append(manifest.parent)
        except TmktError:
            continue
    if len(found) > 1:
        listed = "; ".join(str(f) for f in found)
        raise TmktError(f"{own}: not there, and the recipe has {len(found)} finished variant "
                        f"runs: {listed}; give tmkt eval one of them, or the --set flags "
                        f"that made it")
    return found[0] if found else None

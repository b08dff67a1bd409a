"""What every stage does around its own work: resolve inputs, decide, lock, record.

A stage module provides ``inputs(recipe) -> dict[str, Upstream]`` (the finished artifacts it
reads) and ``run(recipe, run: StageRun, ui: Console) -> None`` (its work, ending with
``run.complete(...)``). :func:`execute` does the rest, identically for every stage.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

from rich.console import Console

from tmkt_cli.config import Recipe, config_hash, dump_yaml, stage_config
from tmkt_cli.errors import TmktError
from tmkt_cli.methods.registry import batch_streams
from tmkt_cli.runs.artifacts import StageRun, Upstream, open_stage


def execute(stage: str, recipe: Recipe, folder: Path,
            inputs: Callable[[Recipe], dict[str, Upstream]],
            body: Callable[[Recipe, StageRun, Console], None], ui: Console, *,
            force: bool = False, resume: Literal["auto", "never"] = "auto",
            dry_run: bool = False, verify: bool = False,
            show_recipe: bool = False,
            redraw: Callable[[Recipe, Path, Console], None] | None = None) -> StageRun | None:
    """Run ``body`` in ``folder`` unless it is up to date; with ``dry_run`` only say what
    would happen (and with ``show_recipe``, print the resolved recipe after it). An up-to-date
    stage with ``redraw`` draws its figures again in the vector formats asked for
    (``--figure-format``), from its saved data. Returns the StageRun (None for a dry run)."""
    cfg = stage_config(recipe, stage)
    chash = config_hash(cfg)
    check_fits(stage, recipe)
    if dry_run:
        _print_plan(stage, recipe, folder, inputs, ui, cfg, chash, force, resume, verify)
        if show_recipe:
            ui.print(f"[bold]# resolved recipe[/bold] (config hash of {stage}: {chash})")
            ui.print(dump_yaml(recipe), markup=False, highlight=False)
        else:
            ui.print("(the resolved recipe: add --show-recipe)")
        return None

    from tmkt_cli.train.runtime import DIST

    DIST.init()
    run = _run_on_every_rank(stage, recipe, folder, inputs, body, ui, cfg, chash,
                             force=force, resume=resume, verify=verify)
    if run.decision == "up-to-date" and redraw is not None and DIST.is_main:
        from tmkt_cli.analysis.plotting import extra_formats

        if extra_formats():
            redraw(recipe, folder, ui)
    # The ranks leave the stage together: none exits (rank 0 takes the rendezvous store with
    # it) while another still finishes its part; a rank that raised skips this and fails.
    DIST.barrier()
    return run


def _print_plan(stage: str, recipe: Recipe, folder: Path,
                inputs: Callable[[Recipe], dict[str, Upstream]], ui: Console, cfg: dict,
                chash: str, force: bool, resume: Literal["auto", "never"], verify: bool) -> None:
    """What a run would do: its folder, inputs and decision, then the memory estimate."""
    try:
        ups = inputs(recipe)
        needs = ", ".join(f"{k}={u.folder}" for k, u in ups.items()) or "nothing"
    except TmktError as e:
        ups, needs = None, f"(not ready: {e})"
    ui.print(f"[bold]# plan[/bold]\nstage:   {stage}\nfolder:  {folder}\nreads:   {needs}")
    if ups is not None:
        try:
            run = open_stage(folder, stage, "", cfg, chash, _input_hashes(ups),
                             force=force, resume=resume, dry_run=True, verify=verify)
            ui.print(f"action:  {_describe(run.decision, folder, run.reason)}")
        except TmktError as e:
            ui.print(f"action:  refused: {e}")
    if stage in ("train-tmkt", "distill"):
        from tmkt_cli.train import memory

        ui.print(memory.describe_training_memory(
            memory.training_memory(recipe, stage, classes=_classes(recipe)),
            recipe.train.batch_size), markup=False, highlight=False)


def _run_on_every_rank(stage: str, recipe: Recipe, folder: Path,
                       inputs: Callable[[Recipe], dict[str, Upstream]],
                       body: Callable[[Recipe, StageRun, Console], None], ui: Console,
                       cfg: dict, chash: str, *, force: bool, resume: Literal["auto", "never"],
                       verify: bool) -> StageRun:
    """Rank 0 checks, locks and writes the folder; the other ranks follow its decision."""
    from tmkt_cli.train.runtime import DIST

    if DIST.enabled and not DIST.is_main:
        outcome = DIST.broadcast(None)
        if outcome[0] == "error":
            raise TmktError(outcome[1])
        _, decision, input_hashes = outcome
        run = StageRun(folder=folder, stage=stage, config_text="", stage_config=cfg,
                       config_hash=chash, inputs=input_hashes, decision=decision,
                       writer=False)
        if decision == "up-to-date":
            return run
        run.start()
        body(recipe, run, Console(quiet=True))
        return run
    try:
        check_writable(folder, "paths.dataset" if stage == "prepare" else "paths.runs")
        ups = inputs(recipe)
        run = open_stage(folder, stage, dump_yaml(recipe), cfg, chash, _input_hashes(ups),
                         force=force, resume=resume, verify=verify)
    except TmktError as e:
        DIST.broadcast(("error", str(e)))
        raise
    DIST.broadcast(("ok", run.decision, run.inputs))
    if run.decision == "up-to-date":
        run.release()
        ui.print(f"{stage}: up to date ({folder})")
        return run
    ui.print(f"{stage}: {_describe(run.decision, folder, run.reason)}")
    with run:
        run.start()
        body(recipe, run, ui)
        if run.manifest.get("status") != "complete":  # a bug in the stage, not user error
            raise RuntimeError(f"stage {stage} returned without completing its manifest")
    return run


def _classes(recipe: Recipe) -> int:
    """The prepared dataset's class count when it exists (the memory estimate's output layer;
    10 otherwise, which changes the estimate by a few kilobytes)."""
    try:
        from tmkt_cli.data.store import open_dataset

        with open_dataset(recipe.dataset_dir()) as ds:
            return len(ds.classes)
    except Exception:  # noqa: BLE001 - not prepared yet, or unreadable: the estimate goes on
        return 10


def check_fits(stage: str, recipe: Recipe) -> None:
    """Refuse, before anything is read or made, a setting whose data cannot fit in memory
    (``--size 200000``, ``-T 500000000``): the estimate is analytic (tmkt_cli/train/memory.py)."""
    from tmkt_cli.train import memory

    available = memory.available_memory()
    if available is None:
        return
    p = recipe.prepare
    if stage == "prepare":
        need = memory.prepare_bytes(p.time_steps, p.size, p.flush_every, p.workers)
        what = (f"prepare.time_steps={p.time_steps} and prepare.size={p.size}: one recording's "
                f"frames take {memory.human_bytes(memory.frames_bytes(p.time_steps, p.size))} "
                f"and prepare holds {p.flush_every + 2 * p.workers} at once "
                f"(prepare.flush_every + 2 x prepare.workers)")
    elif stage in ("train-tmkt", "distill", "pretrain-ann"):
        train = recipe.pretrain_ann.train if stage == "pretrain-ann" else recipe.train
        streams = batch_streams(stage, recipe.method.name)
        time_steps = 1 if stage == "pretrain-ann" else p.time_steps
        need = memory.batch_input_bytes(train.batch_size, time_steps, p.size, streams)
        what = (f"train.batch_size={train.batch_size} at T={time_steps}, {p.size}x{p.size} "
                f"px: a batch's input frames alone take {memory.human_bytes(need)}")
    else:
        return
    if need > available:
        raise TmktError(f"{what}: {memory.human_bytes(need)} needed, "
                        f"{memory.human_bytes(available)} of memory available; lower them")


def check_writable(folder: Path, key: str) -> None:
    """The run folder can be made and written: not under a file, not on a read-only file
    system (one line naming the key, before anything is written)."""
    import errno
    import os

    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise TmktError(f"{existing}: is a file, so {folder} cannot be made (from recipe key "
                        f"{key})")
    try:
        read_only = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    if read_only or not os.access(existing, os.W_OK | os.X_OK):
        why = errno.errorcode[errno.EROFS] if read_only else "no write permission"
        what = "on a read-only file system" if read_only else "not writable"
        raise TmktError(f"{existing}: {what} ({why}), so {folder} cannot be written (from "
                        f"recipe key {key})")


def _input_hashes(ups: dict[str, Upstream]) -> dict[str, dict]:
    return {k: {"path": str(u.folder), "hash": u.output_hash} for k, u in ups.items()}


def _describe(decision: str, folder: Path, reason: str = "") -> str:
    if reason:  # a run that said complete, but its outputs are not what it recorded
        again = "resuming" if decision == "resume" else "starting again"
        return f"{again} the run in {folder}: it said complete, but {reason}"
    return {"fresh": f"starting in {folder}",
            "resume": f"resuming the unfinished run in {folder}",
            "up-to-date": f"up to date, nothing to do ({folder})"}[decision]

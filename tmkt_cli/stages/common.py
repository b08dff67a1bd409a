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

from tmkt_cli.artifacts import StageRun, Upstream, open_stage
from tmkt_cli.config import Recipe, config_hash, dump_yaml, stage_config
from tmkt_cli.errors import TmktError


def execute(stage: str, recipe: Recipe, folder: Path,
            inputs: Callable[[Recipe], dict[str, Upstream]],
            body: Callable[[Recipe, StageRun, Console], None], ui: Console, *,
            force: bool = False, resume: Literal["auto", "never"] = "auto",
            dry_run: bool = False) -> StageRun | None:
    """Run ``body`` in ``folder`` unless it is up to date; with ``dry_run`` only say what
    would happen. Returns the StageRun (None for a dry run)."""
    cfg = stage_config(recipe, stage)
    chash = config_hash(cfg)
    if dry_run:
        ui.print(f"[bold]# resolved recipe[/bold] (config hash of {stage}: {chash})")
        ui.print(dump_yaml(recipe), markup=False, highlight=False)
        try:
            ups = inputs(recipe)
            needs = ", ".join(f"{k}={u.folder}" for k, u in ups.items()) or "nothing"
        except TmktError as e:
            ups, needs = None, f"(not ready: {e})"
        ui.print(f"[bold]# plan[/bold]\nstage:   {stage}\nfolder:  {folder}\nreads:   {needs}")
        if ups is not None:
            try:
                run = open_stage(folder, stage, "", cfg, chash, _input_hashes(ups),
                                 force=force, resume=resume, dry_run=True)
                ui.print(f"action:  {_describe(run.decision, folder)}")
            except TmktError as e:
                ui.print(f"action:  refused: {e}")
        return None

    from tmkt_cli.runtime import DIST

    DIST.init()
    if DIST.enabled and not DIST.is_main:
        # Follow rank 0: it alone checks, locks and writes the folder.
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
        ups = inputs(recipe)
        run = open_stage(folder, stage, dump_yaml(recipe), cfg, chash, _input_hashes(ups),
                         force=force, resume=resume)
    except TmktError as e:
        DIST.broadcast(("error", str(e)))
        raise
    DIST.broadcast(("ok", run.decision, run.inputs))
    if run.decision == "up-to-date":
        run.release()
        ui.print(f"{stage}: up to date ({folder})")
        return run
    ui.print(f"{stage}: {_describe(run.decision, folder)}")
    with run:
        run.start()
        body(recipe, run, ui)
        if run.manifest.get("status") != "complete":  # a bug in the stage, not user error
            raise RuntimeError(f"stage {stage} returned without completing its manifest")
    return run


def _input_hashes(ups: dict[str, Upstream]) -> dict[str, dict]:
    return {k: {"path": str(u.folder), "hash": u.output_hash} for k, u in ups.items()}


def _describe(decision: str, folder: Path) -> str:
    return {"fresh": f"starting in {folder}",
            "resume": f"resuming the unfinished run in {folder}",
            "up-to-date": f"up to date, nothing to do ({folder})"}[decision]

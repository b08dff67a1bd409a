"""The ``tmkt`` command line: one thin command per stage.

Nothing heavy is imported at module level (torch, spikingjelly, tonic, h5py are imported by the
stage modules, inside the commands), so ``tmkt --help`` answers at once.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console

from tmkt_cli.errors import EXIT_REQUEUE, EXIT_USER_ERROR, StopRequested, TmktError

app = typer.Typer(
    name="tmkt",
    help="Train spiking networks for event cameras with knowledge from static images "
         "(TMKT, CKD, KT). Each command is one stage; stages read and write run folders, "
         "so they resume after a kill and compose in Makefiles and SLURM jobs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

# Logs and pipes get wide lines (tables stay whole); a terminal keeps its own width.
ui = Console(stderr=True, highlight=False, soft_wrap=True,
             width=None if sys.stderr.isatty() else 160)

# -- options shared by the stage commands -------------------------------------------------------
RecipeArg = Annotated[Path, typer.Argument(help="Recipe YAML file (see recipes/).",
                                           show_default=False)]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", "-s", help="Override a recipe key, e.g. --set train.epochs=5 (repeatable).",
    show_default=False)]
ForceOpt = Annotated[bool, typer.Option(
    "--force", help="Discard an existing run made with another config or other inputs.")]
ResumeOpt = Annotated[str, typer.Option(
    "--resume", help="auto: continue an unfinished run; never: start it again.",
    metavar="auto|never")]
DryRunOpt = Annotated[bool, typer.Option(
    "--dry-run", help="Print the resolved recipe and what would run, then exit.")]
VerifyOpt = Annotated[bool, typer.Option(
    "--verify", help="Before saying 'up to date', re-hash every output, large ones too "
                     "(small ones always are).")]
DebugOpt = Annotated[bool, typer.Option(
    "--debug", help="Show the full traceback of an error.")]


def _guarded(fn, debug: bool):
    """Run a command body: user errors become one line and exit 2; bugs keep tracebacks."""
    debug = debug or os.environ.get("TMKT_DEBUG") == "1"
    try:
        return fn()
    except TmktError as e:
        if debug:
            raise
        ui.print(f"[bold red]error:[/bold red] {e}", soft_wrap=True)
        raise typer.Exit(EXIT_USER_ERROR) from None
    except StopRequested as e:
        ui.print(f"[yellow]stopped:[/yellow] {e}", soft_wrap=True)
        raise typer.Exit(EXIT_REQUEUE) from None
    except KeyboardInterrupt:
        ui.print("[yellow]interrupted[/yellow]; run the same command again to resume")
        raise typer.Exit(130) from None


def _resume_value(resume: str) -> Literal["auto", "never"]:
    if resume not in ("auto", "never"):
        raise TmktError(f"--resume: expected auto or never, got {resume!r}")
    return resume  # type: ignore[return-value]


def _run_stage(stage: str, module: str, recipe_path: Path | None, overrides: list[str] | None,
               force: bool, resume: str, dry_run: bool, base_raw: dict | None = None,
               verify: bool = False) -> None:
    from tmkt_cli.config import load_recipe
    from tmkt_cli.stages.common import execute

    recipe = load_recipe(recipe_path, overrides or [], base_raw=base_raw)
    mod = importlib.import_module(f"tmkt_cli.stages.{module}")
    execute(stage, recipe, mod.folder(recipe), mod.inputs, mod.run, ui, force=force,
            resume=_resume_value(resume), dry_run=dry_run, verify=verify)


# -- stages ---------------------------------------------------------------------------------------

@app.command()
def prepare(
    target: Annotated[str, typer.Argument(
        help="A dataset name (digits, images, ncaltech101, cepdvs, cifar10dvs, nmnist, "
             "nomniglot, dvsgesture) or a recipe YAML file.", show_default=False)],
    root: Annotated[str | None, typer.Option(
        help="Raw data: extracted folder or original archive (prepare.root).")] = None,
    out: Annotated[str | None, typer.Option(
        help="Output folder (paths.dataset).")] = None,
    time_steps: Annotated[int | None, typer.Option(
        "--time-steps", "-T", help="Frames per recording (prepare.time_steps).")] = None,
    size: Annotated[int | None, typer.Option(help="Frame side in pixels (prepare.size).")] = None,
    split_by: Annotated[str | None, typer.Option(
        "--split-by", help="time or number (prepare.split_by).")] = None,
    workers: Annotated[int | None, typer.Option(
        help="Worker processes (prepare.workers).")] = None,
    set_: SetOpt = None, force: ForceOpt = False, resume: ResumeOpt = "auto",
    dry_run: DryRunOpt = False, verify: VerifyOpt = False, debug: DebugOpt = False,
) -> None:
    """Integrate raw event recordings into T frames and store them, with the paired images,
    in one HDF5 file ([N, T, 2, H, W] per split)."""
    def body():
        recipe_path = Path(target) if target.endswith((".yaml", ".yml")) else None
        base = None if recipe_path else {"prepare": {"dataset": target}}
        overrides = list(set_ or [])
        for key, value in (("prepare.root", root), ("paths.dataset", out),
                           ("prepare.time_steps", time_steps), ("prepare.size", size),
                           ("prepare.split_by", split_by), ("prepare.workers", workers)):
            if value is not None:
                overrides.append(f"{key}={value}")
        _run_stage("prepare", "prepare", recipe_path, overrides, force, resume, dry_run,
                   base_raw=base, verify=verify)
    _guarded(body, debug)


@app.command("pretrain-ann")
def pretrain_ann(recipe: RecipeArg, set_: SetOpt = None, force: ForceOpt = False,
                 resume: ResumeOpt = "auto", dry_run: DryRunOpt = False,
                 verify: VerifyOpt = False, debug: DebugOpt = False) -> None:
    """Train the ANN teacher of CKD on the prepared dataset's static images."""
    _guarded(lambda: _run_stage("pretrain-ann", "pretrain_ann", recipe, set_, force, resume,
                                dry_run, verify=verify), debug)


@app.command()
def distill(recipe: RecipeArg, set_: SetOpt = None, force: ForceOpt = False,
            resume: ResumeOpt = "auto", dry_run: DryRunOpt = False,
            verify: VerifyOpt = False, debug: DebugOpt = False) -> None:
    """CKD: distil the ANN teacher (pretrain-ann) into a two-stream SNN student, in phases."""
    _guarded(lambda: _run_stage("distill", "distill", recipe, set_, force, resume, dry_run,
                                verify=verify),
             debug)


@app.command("train-tmkt")
def train_tmkt(recipe: RecipeArg, set_: SetOpt = None, force: ForceOpt = False,
               resume: ResumeOpt = "auto", dry_run: DryRunOpt = False,
               verify: VerifyOpt = False, debug: DebugOpt = False) -> None:
    """Train an SNN with method.name = tmkt, kt, finetune or event_only (and any ablation
    of their components)."""
    _guarded(lambda: _run_stage("train-tmkt", "train_tmkt", recipe, set_, force, resume,
                                dry_run, verify=verify), debug)


@app.command("eval")
def eval_(recipe: RecipeArg, set_: SetOpt = None, force: ForceOpt = False,
          resume: ResumeOpt = "auto", dry_run: DryRunOpt = False,
          verify: VerifyOpt = False, debug: DebugOpt = False) -> None:
    """Evaluate a trained run on the event test split: top-1/top-5, per-class accuracy,
    accuracy against time steps, firing rates, synaptic operations and energy."""
    _guarded(lambda: _run_stage("eval", "evaluate", recipe, set_, force, resume, dry_run,
                                verify=verify),
             debug)


@app.command()
def cam(recipe: RecipeArg, set_: SetOpt = None, force: ForceOpt = False,
        resume: ResumeOpt = "auto", dry_run: DryRunOpt = False,
        verify: VerifyOpt = False, debug: DebugOpt = False) -> None:
    """Class activation maps (Grad-CAM or spike activation maps) of the event stream."""
    _guarded(lambda: _run_stage("cam", "cam", recipe, set_, force, resume, dry_run,
                                verify=verify), debug)


@app.command()
def report(
    runs: Annotated[list[Path], typer.Argument(
        help="Run folders (or folders holding them, e.g. runs/) to gather.",
        show_default=False)],
    out: Annotated[Path, typer.Option(help="Folder for report.md and the figures.")] = Path(
        "runs/report"),
    landscape: Annotated[list[Path] | None, typer.Option(
        help="Also draw the loss landscape around these run folders' checkpoints.")] = None,
    debug: DebugOpt = False,
) -> None:
    """Gather finished runs into a table (mean and spread over seeds, beside the published
    numbers) and draw training curves and the data-efficiency curve."""
    def body():
        from tmkt_cli.report import make_report
        make_report(list(runs), out, ui, landscape=list(landscape or []))
    _guarded(body, debug)


@app.command()
def paths(recipe: RecipeArg, set_: SetOpt = None, debug: DebugOpt = False) -> None:
    """Print where each stage of a recipe reads and writes (KEY=PATH lines, for Makefiles and
    job scripts)."""
    def body():
        from tmkt_cli.config import load_recipe
        r = load_recipe(recipe, set_ or [])
        lines = [f"name={r.name}", f"dataset={r.dataset_dir()}"]
        lines += [f"{stage}={r.stage_dir(stage)}" for stage in
                  ("pretrain-ann", "distill", "train-tmkt", "cam")]
        lines.append(f"eval={r.eval_dir()}")
        lines.append(f"method={r.method.name}")
        lines.append(f"eval_source={r.eval.source}")
        sys.stdout.write("\n".join(lines) + "\n")
    _guarded(body, debug)


@app.command("recipe-doc")
def recipe_doc(debug: DebugOpt = False) -> None:
    """Print the reference of every recipe key (type, default, range, help) as Markdown."""
    def body():
        from tmkt_cli.recipe_doc import render
        sys.stdout.write(render())
    _guarded(body, debug)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

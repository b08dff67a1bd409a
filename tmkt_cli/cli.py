"""The ``tmkt`` command line: one thin command per stage.

Nothing heavy is imported at module level (torch, spikingjelly and h5py are imported by the
stage modules, inside the commands; each stage module is loaded with importlib when its command
runs), so ``tmkt --help`` answers at once.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from tmkt_cli import __version__
from tmkt_cli.errors import EXIT_REQUEUE, EXIT_USER_ERROR, StopRequested, TmktError


def _flags_without_type(params: list) -> list:
    # typer shows every flag with a "<bool>" type; a flag takes no value, so show none
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class _Group(TyperGroup):
    def get_params(self, ctx):
        return _flags_without_type(super().get_params(ctx))

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True,
             **extra):
        """Click's usage errors (a missing argument, an unknown option, a value out of range)
        as one ``error:`` line and exit code 2, like every other user error, instead of
        Click's framed box. ``tmkt`` alone still prints the help."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _USAGE_ERROR as e:
            if type(e).__name__ == "NoArgsIsHelpError":  # `tmkt`: the help, as before
                return super().main(args, prog_name, complete_var, True, **extra)
            where = e.ctx.command_path if e.ctx is not None else "tmkt"
            message = " ".join(e.format_message().split())
            ui.print(f"[bold red]error:[/bold red] {escape(where)}: {escape(message)} "
                     f"({escape(where)} --help)", highlight=False)
            sys.exit(EXIT_USER_ERROR)
        except typer.Abort:
            ui.print("aborted")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


# Click's UsageError: typer re-exports only BadParameter, a subclass of it, whether click is a
# package of its own (typer < 0.20) or vendored inside typer
_USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


class _Command(TyperCommand):
    def get_params(self, ctx):
        return _flags_without_type(super().get_params(ctx))


class _App(typer.Typer):
    def command(self, *args, **kwargs):
        kwargs.setdefault("cls", _Command)
        return super().command(*args, **kwargs)


app = _App(
    name="tmkt",
    cls=_Group,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # markdown: docstrings are reflowed, so a line break in the source does not split a
    # sentence in --help
    rich_markup_mode="markdown",
)

# Logs and pipes get wide lines (tables stay whole); a terminal keeps its own width.
ui = Console(stderr=True, highlight=False, soft_wrap=True,
             width=None if sys.stderr.isatty() else 160)

# -- shell completion: recipe names and files, recipe keys ----------------------------------------

def complete_recipe(incomplete: str) -> list[str]:
    """Shipped recipe names (digits/tmkt) and YAML files or folders under the typed path."""
    from tmkt_cli.config.catalog import shipped_recipes

    names = [r.name for r in shipped_recipes() if r.name.startswith(incomplete)]
    typed = Path(incomplete or ".")
    folder = typed if incomplete.endswith("/") or not incomplete else typed.parent
    try:
        files = [str(p) + ("/" if p.is_dir() else "") for p in sorted(folder.iterdir())
                 if str(p).startswith(incomplete.removeprefix("./")) and not
                 p.name.startswith(".") and (p.is_dir() or p.suffix in (".yaml", ".yml"))]
    except OSError:
        files = []
    return names + files


def complete_key(incomplete: str) -> list[str]:
    """``KEY=`` for every recipe key starting with what is typed."""
    from tmkt_cli.config import all_keys

    return [f"{key}=" for key in all_keys() if key.startswith(incomplete)]


# -- options shared by the stage commands -------------------------------------------------------
RecipeArg = Annotated[str, typer.Argument(
    help="Recipe: a YAML file, or a shipped recipe's name such as digits/tmkt ('tmkt recipes' "
         "lists them).", show_default=False, metavar="RECIPE", autocompletion=complete_recipe)]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", "-s", metavar="KEY=VALUE", help="Override a recipe key, e.g. --set train.epochs=5 (repeatable).",
    show_default=False, autocompletion=complete_key)]
ForceOpt = Annotated[bool, typer.Option(
    "--force", help="Discard an existing run made with another config or other inputs.")]
ResumeOpt = Annotated[str, typer.Option(
    "--resume", help="auto: continue an unfinished run; never: start it again.",
    metavar="auto|never")]
DryRunOpt = Annotated[bool, typer.Option(
    "--dry-run", help="Print the plan (folder, inputs, what would happen) and the memory "
                      "estimate, then exit.")]
ShowRecipeOpt = Annotated[bool, typer.Option(
    "--show-recipe", help="A dry run that also prints the resolved recipe after the plan.")]
VerifyOpt = Annotated[bool, typer.Option(
    "--verify", help="Before saying 'up to date', re-hash every output, large ones too "
                     "(small ones always are).")]
DebugOpt = Annotated[bool, typer.Option(
    "--debug", help="Show the full traceback of an error.")]
FigureFormatOpt = Annotated[list[str] | None, typer.Option(
    "--figure-format", metavar="pdf|svg",
    help="Also write every figure in this vector format, beside its PNG (repeatable).",
    show_default=False)]


def _show_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"tmkt {__version__}\n")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option(
        "--version", callback=_show_version, is_eager=True,
        help="Print tmkt's version and exit.")] = False,
        figure_format: Annotated[list[str] | None, typer.Option(
            "--figure-format", metavar="pdf|svg",
            help="Also write every figure in this vector format, beside its PNG "
                 "(repeatable), e.g. tmkt --figure-format pdf cam RECIPE.")] = None) -> None:
    """Train spiking networks for event cameras with knowledge from static images (TMKT, CKD,
    KT). Each command is one stage; stages read and write run folders, so they resume after a
    kill and compose in Makefiles and SLURM jobs. `tmkt recipes` lists the shipped recipes,
    `tmkt env` describes this machine."""
    _set_figure_formats(figure_format)


def _set_figure_formats(figure_format: list[str] | None) -> None:
    """--figure-format, given before the command or after it (eval, cam, report, landscape)."""
    if figure_format:
        from tmkt_cli.analysis.plotting import FORMATS_VARIABLE, VECTOR_FORMATS

        unknown = [f for f in figure_format if f.lower() not in VECTOR_FORMATS]
        if unknown:
            ui.print(f"[bold red]error:[/bold red] --figure-format: {unknown[0]!r} is not one "
                     f"of {', '.join(VECTOR_FORMATS)}")
            raise typer.Exit(EXIT_USER_ERROR)
        os.environ[FORMATS_VARIABLE] = ",".join(f.lower() for f in figure_format)


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


def _variant_run_of(recipe_arg: str):
    """The finished variant run ``tmkt eval RECIPE`` evaluates when the recipe's own run is
    not there (tmkt_cli/runs/run_target.variant_run)."""
    from tmkt_cli.config import load_recipe
    from tmkt_cli.config.catalog import resolve_recipe
    from tmkt_cli.runs.run_target import variant_run

    return variant_run(load_recipe(resolve_recipe(recipe_arg)))


def _resume_value(resume: str) -> Literal["auto", "never"]:
    if resume not in ("auto", "never"):
        raise TmktError(f"--resume: expected auto or never, got {resume!r}")
    return resume  # type: ignore[return-value]


def _run_stage(stage: str, module: str, recipe_arg: str | None, overrides: list[str] | None,
               force: bool, resume: str, dry_run: bool, base_raw: dict | None = None,
               verify: bool = False, show_recipe: bool = False) -> None:
    from tmkt_cli.config import load_recipe
    from tmkt_cli.config.catalog import resolve_recipe
    from tmkt_cli.stages.common import execute

    recipe_path = resolve_recipe(recipe_arg) if recipe_arg is not None else None
    recipe = load_recipe(recipe_path, overrides or [], base_raw=base_raw)
    mod = importlib.import_module(f"tmkt_cli.stages.{module}")
    execute(stage, recipe, mod.folder(recipe), mod.inputs, mod.run, ui, force=force,
            resume=_resume_value(resume), dry_run=dry_run or show_recipe, verify=verify,
            show_recipe=show_recipe, redraw=getattr(mod, "redraw", None))


# -- stages ---------------------------------------------------------------------------------------

@app.command()
def prepare(
    target: Annotated[str, typer.Argument(
        help="A dataset name (digits, glyphs, images, ncaltech101, cepdvs, cifar10dvs, nmnist, "
             "nomniglot, dvsgesture), a recipe YAML file or a shipped recipe's name "
             "(digits/tmkt). A dataset name starts from the prepare settings of its shipped "
             "recipes (recipes/DATASET/base.yaml), so the store is the one they read.",
        show_default=False, metavar="DATASET|RECIPE")],
    root: Annotated[str | None, typer.Option(
        help="Raw data: extracted folder or original archive (prepare.root).")] = None,
    out: Annotated[str | None, typer.Option(
        help="Output folder (paths.dataset).")] = None,
    time_steps: Annotated[int | None, typer.Option(
        "--time-steps", "-T", help="Frames per recording (prepare.time_steps).")] = None,
    size: Annotated[int | None, typer.Option(help="Frame side in pixels (prepare.size).")] = None,
    split_by: Annotated[str | None, typer.Option(
        "--split-by", help="time, number or time_fork (prepare.split_by).")] = None,
    workers: Annotated[int | None, typer.Option(
        help="Worker processes (prepare.workers).")] = None,
    set_: SetOpt = None, force: ForceOpt = False, resume: ResumeOpt = "auto",
    dry_run: DryRunOpt = False, show_recipe: ShowRecipeOpt = False, verify: VerifyOpt = False, debug: DebugOpt = False,
) -> None:
    """Integrate raw event recordings into T frames and store them, with the paired images,
    in one HDF5 file ([N, T, 2, H, W] per split)."""
    def body():
        recipe_arg, base = _prepare_target(target)
        overrides = list(set_ or [])
        for key, value in (("prepare.root", root), ("paths.dataset", out),
                           ("prepare.time_steps", time_steps), ("prepare.size", size),
                           ("prepare.split_by", split_by), ("prepare.workers", workers)):
            if value is not None:
                overrides.append(f"{key}={value}")
        _run_stage("prepare", "prepare", recipe_arg, overrides, force, resume, dry_run,
                   base_raw=base, verify=verify, show_recipe=show_recipe)
    _guarded(body, debug)


def _prepare_target(target: str) -> tuple[str | None, dict | None]:
    """``prepare``'s argument: a recipe (file or shipped name), or a dataset name, which starts
    from its shipped recipes' ``prepare`` section where there is one."""
    from tmkt_cli.config import load_raw_recipe
    from tmkt_cli.config.catalog import dataset_base_recipe, resolve_recipe

    if target.endswith((".yaml", ".yml")) or "/" in target or Path(target).is_file():
        return str(resolve_recipe(target)), None
    base = dataset_base_recipe(target)
    prepare = load_raw_recipe(base).get("prepare", {}) if base is not None else {}
    return None, {"prepare": {**prepare, "dataset": target}}


@app.command("pretrain-ann")
def pretrain_ann(recipe: RecipeArg, set_: SetOpt = None, force: ForceOpt = False,
                 resume: ResumeOpt = "auto", dry_run: DryRunOpt = False, show_recipe: ShowRecipeOpt = False,
                 verify: VerifyOpt = False, debug: DebugOpt = False) -> None:
    """Train the ANN teacher of CKD on the prepared dataset's static images."""
    _guarded(lambda: _run_stage("pretrain-ann", "pretrain_ann", recipe, set_, force, resume,
                                dry_run, verify=verify, show_recipe=show_recipe), debug)


@app.command()
def distill(recipe: RecipeArg, set_: SetOpt = None, force: ForceOpt = False,
            resume: ResumeOpt = "auto", dry_run: DryRunOpt = False, show_recipe: ShowRecipeOpt = False,
            verify: VerifyOpt = False, debug: DebugOpt = False) -> None:
    """CKD: distil the ANN teacher (pretrain-ann) into a two-stream SNN student, in phases."""
    _guarded(lambda: _run_stage("distill", "distill", recipe, set_, force, resume, dry_run,
                                verify=verify, show_recipe=show_recipe),
             debug)


@app.command("train-tmkt")
def train_tmkt(recipe: RecipeArg, set_: SetOpt = None, force: ForceOpt = False,
               resume: ResumeOpt = "auto", dry_run: DryRunOpt = False, show_recipe: ShowRecipeOpt = False,
               verify: VerifyOpt = False, debug: DebugOpt = False) -> None:
    """Train an SNN with method.name = tmkt, kt, finetune, event_only or static_only (and
    any ablation of their components)."""
    _guarded(lambda: _run_stage("train-tmkt", "train_tmkt", recipe, set_, force, resume,
                                dry_run, verify=verify, show_recipe=show_recipe), debug)


@app.command("eval")
def eval_(recipe: RecipeArg, set_: SetOpt = None, force: ForceOpt = False,
          resume: ResumeOpt = "auto", dry_run: DryRunOpt = False, show_recipe: ShowRecipeOpt = False,
          verify: VerifyOpt = False, debug: DebugOpt = False,
          figure_format: FigureFormatOpt = None) -> None:
    """Evaluate a trained run on the event test split: top-1/top-5, per-class accuracy,
    accuracy against time steps, firing rates, synaptic operations and energy. RECIPE may
    also be a training run folder or a checkpoint in one (`tmkt eval runs/x/seed42/train-tmkt`,
    `.../best.pt`): the evaluation is written beside the run, one folder per checkpoint."""
    _set_figure_formats(figure_format)
    def body():
        from tmkt_cli.runs.run_target import eval_target, is_run_target

        if is_run_target(recipe):
            base, overrides = eval_target(recipe)
            _run_stage("eval", "evaluate", None, [*overrides, *(set_ or [])], force, resume,
                       dry_run, base_raw=base, verify=verify)
        elif not set_ and (found := _variant_run_of(recipe)) is not None:
            ui.print(f"eval: {recipe}'s own run is not there; evaluating its variant run "
                     f"{found}")
            base, overrides = eval_target(str(found))
            _run_stage("eval", "evaluate", None, overrides, force, resume, dry_run,
                       base_raw=base, verify=verify, show_recipe=show_recipe)
        else:
            _run_stage("eval", "evaluate", recipe, set_, force, resume, dry_run,
                       verify=verify, show_recipe=show_recipe)
    _guarded(body, debug)


@app.command()
def cam(recipe: RecipeArg, set_: SetOpt = None, force: ForceOpt = False,
        resume: ResumeOpt = "auto", dry_run: DryRunOpt = False, show_recipe: ShowRecipeOpt = False,
        verify: VerifyOpt = False, debug: DebugOpt = False,
          figure_format: FigureFormatOpt = None) -> None:
    """Class activation maps (Grad-CAM or spike activation maps) of the event stream. RECIPE
    may also be a train-tmkt or distill run folder, or its last.pt, model.pt or best.pt (as
    for eval): the maps are written beside the run."""
    _set_figure_formats(figure_format)
    def body():
        from tmkt_cli.runs.run_target import cam_target, is_run_target

        if is_run_target(recipe):
            base, overrides = cam_target(recipe)
            _run_stage("cam", "cam", None, [*overrides, *(set_ or [])], force, resume,
                       dry_run, base_raw=base, verify=verify, show_recipe=show_recipe)
        else:
            _run_stage("cam", "cam", recipe, set_, force, resume, dry_run, verify=verify,
                       show_recipe=show_recipe)
    _guarded(body, debug)


@app.command()
def report(
    runs: Annotated[list[Path] | None, typer.Argument(
        help="Run folders (or folders holding them, e.g. runs/) to gather; with --docs or "
             "--check-docs, the Markdown files whose generated blocks to rewrite or check.",
        show_default=False)] = None,
    out: Annotated[Path, typer.Option(help="Folder for report.md and the figures.")] = Path(
        "runs/report"),
    table: Annotated[Path | None, typer.Option(
        help="A runs.csv written by tmkt report: render the benchmark's tables (tables.md) "
             "and figures from it (and curves.csv beside it) into --out, instead of reading "
             "run folders.", show_default=False)] = None,
    docs: Annotated[bool, typer.Option(
        "--docs", help="With --table: rewrite every `<!-- tmkt:begin NAME -->` ... "
                       "`<!-- tmkt:end NAME -->` block of the Markdown files given with "
                       "table NAME rendered from it (e.g. digits/paired).")] = False,
    check_docs: Annotated[bool, typer.Option(
        "--check-docs", help="With --table: list the generated blocks of the Markdown files "
                             "given that differ from the table, and exit 1 if any; write "
                             "nothing.")] = False,
    summary: Annotated[bool, typer.Option(
        "--summary", help="With --table: print the runs of one seed as a table of both output "
                          "layouts and a paragraph that follows from it (make demo's "
                          "ending).")] = False,
    evidence: Annotated[Path | None, typer.Option(
        help="With --summary: a multi-seed runs.csv (docs/benchmark/runs.csv) whose paired "
             "95% intervals for the same setting the paragraph quotes.",
        show_default=False)] = None,
    landscape: Annotated[list[Path] | None, typer.Option(
        help="Deprecated (use `tmkt landscape`): also draw the loss landscape around these "
             "run folders' checkpoints.")] = None,
    figure_format: FigureFormatOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Gather finished runs into a table (mean and spread over seeds, beside the published
    numbers), write runs.csv and curves.csv (one row per run), and draw training curves and
    the data-efficiency curve. With --table runs.csv: the benchmark's tables and figures, with
    95% intervals, from that CSV; with --docs, its generated blocks in Markdown files."""
    _set_figure_formats(figure_format)
    def body():
        if summary:
            return _summary(table, evidence)
        if not check_docs:
            _output_folder(out)
        if table is not None or docs or check_docs:
            return _report_from_table(table, list(runs or []), out, docs, check_docs)
        if not runs:
            raise TmktError("tmkt report: give run folders (RUNS), or --table PATH/runs.csv")
        from tmkt_cli.results.report import make_report
        figures, grids = {}, []
        if landscape:
            ui.print("[yellow]note:[/yellow] `tmkt report --landscape` is deprecated and will "
                     "be removed in the next release; use `tmkt landscape RUN --out DIR`")
            from tmkt_cli.stages.landscape import draw_landscapes
            figures, grids = draw_landscapes(list(landscape), out, ui)
        make_report(list(runs), out, ui, extra_figures=figures, grids=grids)
    _guarded(body, debug)


def _output_folder(out: Path) -> None:
    """--out names a folder (made when missing): refuse a path that is a file before any work."""
    for path in (out, *out.parents):
        if path.exists() and not path.is_dir():
            raise TmktError(f"--out {out}: {path} is a file, not a folder; name a folder for "
                            f"the output")
        if path.exists():
            return


def _summary(table: Path | None, evidence: Path | None) -> None:
    """tmkt report --table runs.csv --summary: the one-seed story of one setting."""
    from tmkt_cli.results import benchmark, summary

    if table is None:
        raise TmktError("--summary needs --table PATH/runs.csv (the runs to summarise)")
    rows = [r for r in benchmark.read_runs(table) if r["method"] != "teacher"]
    if not rows:
        raise TmktError(f"{table}: no runs to summarise")
    event = [r for r in rows if r["method"] not in ("static_only", "teacher")]
    setting, seed = event[0]["setting"] if event else rows[0]["setting"], rows[0]["seed"]
    fraction = event[0]["fraction"] if event else None
    runs = summary.pick([r for r in rows if r["setting"] == setting or
                         r["method"] == "static_only"], seed)
    multi = (summary.evidence(benchmark.read_runs(evidence), setting, fraction, str(evidence))
             if evidence is not None and evidence.is_file()
             else "The multi-seed intervals are in recipes/README.md.")
    name = "the positive control" if setting == "control" else setting
    where = f"{name} ({benchmark.fraction_text(fraction)} of the event recordings)"
    ui.print(summary.table(runs), markup=False)
    ui.print()
    ui.print(summary.paragraph(runs, where, seed, multi), markup=False)


def _report_from_table(table: Path | None, files: list[Path], out: Path, docs: bool,
                       check_docs: bool) -> None:
    """tmkt report --table: the benchmark's tables and figures, or its doc blocks."""
    from tmkt_cli.results import benchmark

    if table is None:
        raise TmktError("--docs and --check-docs need --table PATH/runs.csv (the table the "
                        "blocks are rendered from)")
    if docs or check_docs:
        stale = benchmark.update_docs(table, files, ui, check=check_docs)
        if check_docs and stale:
            raise typer.Exit(1)
        return
    if files:
        raise TmktError(f"tmkt report --table renders from {table} alone: drop the run "
                        f"folders, or add --docs to rewrite the blocks of Markdown files")
    benchmark.make_tables(table, out, ui)


@app.command()
def landscape(
    runs: Annotated[list[Path], typer.Argument(
        help="Finished training run folders (train-tmkt, distill or pretrain-ann).",
        show_default=False)],
    out: Annotated[Path, typer.Option(help="Folder for the figures and raw grids.")] = Path(
        "runs/landscape"),
    grid: Annotated[int, typer.Option(help="Points per axis over [-1, 1].", min=2)] = 11,
    samples: Annotated[int, typer.Option(help="Training samples the loss is measured on.",
                                         min=1)] = 128,
    figure_format: FigureFormatOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Draw the loss landscape around each run's last checkpoint (two filter-normalised
    random directions, Li et al. 2018)."""
    _set_figure_formats(figure_format)
    def body():
        from tmkt_cli.stages.landscape import draw_landscapes
        _output_folder(out)
        draw_landscapes(list(runs), out, ui, grid=grid, samples=samples)
    _guarded(body, debug)


@app.command()
def export(
    run: Annotated[str, typer.Argument(
        help="A finished train-tmkt or distill run folder (its model.pt), or a checkpoint in "
             "one (best.pt, last.pt, ...).", show_default=False, metavar="RUN")],
    format_: Annotated[str, typer.Option(
        "--format", metavar="torchscript|onnx",
        help="TorchScript (torch.jit.load: needs torch alone) or ONNX (opset 18).")]
        = "torchscript",
    out: Annotated[Path | None, typer.Option(
        help="Folder for the model and model-card.json [default: export/ beside the run].",
        show_default=False)] = None,
    debug: DebugOpt = False,
) -> None:
    """Write a trained SNN as a self-contained model in plain tensor ops ([T, B, 2, H, W]
    event frames -> time-averaged logits [B, K], through the head the run reports) and a JSON
    model card beside it; its logits are checked against tmkt's on the test split."""
    def body():
        from tmkt_cli.stages.export import export_run
        export_run(run, format_, out, ui)
    _guarded(body, debug)


@app.command()
def predict(
    model: Annotated[str, typer.Argument(
        help="A training run folder (or a checkpoint in one), or a `tmkt export` folder.",
        show_default=False, metavar="RUN_OR_EXPORT")],
    files: Annotated[list[Path], typer.Argument(
        help="Raw recordings in the format of the model's dataset (e.g. N-MNIST .bin).",
        show_default=False, metavar="FILE")],
    json_lines: Annotated[bool, typer.Option(
        "--json", help="One JSON object per file (class, probabilities) instead of a table.")]
        = False,
    debug: DebugOpt = False,
) -> None:
    """Classify raw recordings: each is integrated into frames exactly as `tmkt prepare` did
    for the model's data, then its class and probabilities are printed."""
    def body():
        from tmkt_cli.stages.export import predict_files
        out = Console(highlight=False, soft_wrap=True,
                      width=None if sys.stdout.isatty() else 160)
        predict_files(model, list(files), json_lines, ui, out)
    _guarded(body, debug)


class _SweepCommand(_Command):
    def parse_args(self, ctx, args):
        from tmkt_cli.stages.sweep import spread_list_options  # --methods a b c, as argparse's
        return super().parse_args(ctx, spread_list_options(args))


@app.command(cls=_SweepCommand)
def sweep(
    folder: Annotated[str, typer.Argument(
        help="A folder of recipes, one per method (event_only.yaml, kt.yaml, ckd.yaml, ...; "
             "base.yaml is prepared first), or a shipped one's name (digits, control, glyphs).",
        show_default=False, metavar="RECIPE_FOLDER")],
    methods: Annotated[list[str] | None, typer.Option(
        "--methods", metavar="METHOD...",
        help="Recipe files of the folder, each optionally with :key=value,... overrides that "
             "make a variant of it: --methods event_only kt kt:model.heads=shared ckd "
             "[default: event_only kt tmkt].", show_default=False)] = None,
    fractions: Annotated[list[str] | None, typer.Option(
        "--fractions", metavar="F...",
        help="Fractions of the event training recordings (data.event_fraction) "
             "[default: 0.05 0.2 1.0].", show_default=False)] = None,
    seeds: Annotated[list[str] | None, typer.Option(
        "--seeds", metavar="SEED...", help="Seeds [default: 42 1024 90210].",
        show_default=False)] = None,
    set_: SetOpt = None,
    runs: Annotated[str, typer.Option(
        help="Root of the run folders (paths.runs); logs/ and report/ go there too.")]
        = "runs/sweep",
    jobs: Annotated[int, typer.Option(help="Runs at a time, one math thread each.")] = 1,
    evaluate: Annotated[bool, typer.Option(
        "--eval/--no-eval", help="Follow each training with `tmkt eval` of the same run.")]
        = True,
    slurm: Annotated[bool, typer.Option(
        "--slurm", help="Submit the sweep as SLURM job arrays (slurm/sweep.sh) instead of "
                        "running it here.")] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="List the commands it would run, one per line; run nothing.")]
        = False,
    debug: DebugOpt = False,
) -> None:
    """Run a grid: every method x fraction of the event recordings x seed, as ordinary run
    folders (`<runs>/<name>/event_fraction-F/seedS/`), each training followed by its eval,
    then `tmkt report` into `<runs>/report`. Everything is checked before anything runs; a
    second call resumes or says up to date; a failed run is reported and the others go on
    (exit code 1 at the end)."""
    def body():
        from tmkt_cli.stages import sweep as grid

        if jobs < 1:
            raise TmktError(f"--jobs: expected at least 1, got {jobs}")
        plan = grid.plan_sweep(folder, methods or list(grid.DEFAULT_METHODS),
                               fractions or list(grid.DEFAULT_FRACTIONS),
                               seeds or list(grid.DEFAULT_SEEDS), set_ or [], runs, evaluate)
        if slurm:
            code = grid.submit_slurm(plan, _echo, dry_run=dry_run)
        elif dry_run:
            code = 0
            for line in grid.dry_run_lines(plan):
                _echo(line)
        else:
            code = grid.run_local(plan, jobs, _echo)
        if code:
            raise typer.Exit(code)
    _guarded(body, debug)


def _echo(line: str) -> None:
    sys.stdout.write(f"{line}\n")
    sys.stdout.flush()


@app.command()
def paths(recipe: RecipeArg, set_: SetOpt = None, debug: DebugOpt = False) -> None:
    """Print where each stage of a recipe reads and writes (KEY=PATH lines, for Makefiles and
    job scripts)."""
    def body():
        from tmkt_cli.config import load_recipe
        from tmkt_cli.config.catalog import resolve_recipe
        r = load_recipe(resolve_recipe(recipe), set_ or [])
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
        from tmkt_cli.config.recipe_doc import render
        sys.stdout.write(render())
    _guarded(body, debug)


@app.command()
def recipes(debug: DebugOpt = False) -> None:
    """List the shipped recipes (run any of them by name: `tmkt train-tmkt digits/tmkt`)."""
    def body():
        from rich.table import Table

        from tmkt_cli.config.catalog import shipped_recipes, shipped_recipes_dir
        found = shipped_recipes()
        if not found:
            raise TmktError("no shipped recipes found beside this installation of tmkt")
        table = Table(title=f"recipes in {shipped_recipes_dir()}", title_justify="left")
        table.add_column("name", no_wrap=True)
        table.add_column("what it runs")
        for r in found:
            table.add_row(r.name, r.summary)
        Console(highlight=False).print(table)
    _guarded(body, debug)


@app.command()
def datasets(
    root: Annotated[Path | None, typer.Option(
        help="Where raw data lives: each dataset is looked for in ROOT/<name>, then ROOT.")]
        = None,
    debug: DebugOpt = False,
) -> None:
    """List the datasets `tmkt prepare` reads: what each raw folder must hold, and with
    --root whether it is there."""
    def body():
        from tmkt_cli.stages.datasets import overview, render

        console = Console(highlight=False)
        # a table where it fits; piped or under 120 columns, one block per dataset (wrapped,
        # nothing cut: a cell cut at 80 columns hid the layout it exists to show)
        width = console.width if console.is_terminal else 0
        console.print(render(overview(root), width), markup=False)
    _guarded(body, debug)


@app.command()
def env(debug: DebugOpt = False) -> None:
    """Describe this machine for a bug report: tmkt, Python, torch and its devices, the
    libraries tmkt stands on, threads."""
    def body():
        from tmkt_cli.stages.environment import describe
        sys.stdout.write(describe())
    _guarded(body, debug)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

"""tmkt sweep: a grid of runs (methods x fractions of the event recordings x seeds) as ordinary
run folders.

A method is a recipe file's name in a folder (``kt`` is ``<folder>/kt.yaml``), optionally with
``:`` and comma-separated overrides that make a variant of it (``kt:model.heads=shared``; its
own run folder, tmkt_cli/config/variants.py). Each fraction is an override too
(``data.event_fraction``), so every run lands in its recipe's variant folder without a path
built here: ``<runs>/<name>/event_fraction-0.05/seed42/train-tmkt``. The plan is built and
every recipe and override validated before anything runs. Then, locally: ``prepare`` once per
dataset, the CKD teachers (one ``pretrain-ann`` per seed, ``<runs>/teacher/seed<S>``) when ckd
is among the methods, every training (seed outermost, then fraction, then method), each
followed by ``tmkt eval`` of the same run, ``--jobs`` at a time, each a ``python -m tmkt_cli``
subprocess with one math thread and its own log in ``<runs>/logs/``; last ``tmkt report``.
Every run is a normal run folder, so a second call resumes or says "up to date". With
``--slurm`` the same jobs go to task files that ``slurm/sweep.sh`` submits as job arrays.

No torch here: ``tmkt sweep`` starts at once and its subprocesses do the work.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from tmkt_cli.errors import TmktError

DEFAULT_METHODS = ("event_only", "kt", "tmkt")
DEFAULT_FRACTIONS = ("0.05", "0.2", "1.0")
DEFAULT_SEEDS = ("42", "1024", "90210")
TEACHER = "teacher"
NOT_RUNS = ("logs", "report", TEACHER)
"""Folders under the root that ``tmkt report`` leaves out: the CKD teachers are inputs, not
results (slurm/sweep.sh's report job leaves out the same)."""
SET_BY_SWEEP = {"seed": "--seeds", "data.event_fraction": "--fractions",
                "paths.runs": "--runs"}
LIST_OPTIONS = ("--methods", "--fractions", "--seeds")


# --------------------------------------------------------------------------------------------
# The command line: --methods a b c
# --------------------------------------------------------------------------------------------

def spread_list_options(args: list[str]) -> list[str]:
    """``--methods a b --seeds 1`` -> ``--methods a --methods b --seeds 1``: each list option
    takes the words up to the next option (as argparse's ``nargs="+"``; a word with spaces is
    several, so ``--methods "kt tmkt"`` works too), and a repeated one replaces the earlier."""
    rest: list[str] = []
    lists: dict[str, list[str]] = {}
    current = None
    for i, arg in enumerate(args):
        if arg == "--":
            rest += args[i:]
            break
        option, eq, value = arg.partition("=")
        if option in LIST_OPTIONS:
            current = option
            lists[option] = value.split() if eq else []
        elif current is not None and not (arg.startswith("-") and not _is_number(arg)):
            lists[current] += arg.split()
        else:
            current = None
            rest.append(arg)
    spread = [word for option, values in lists.items()
              for value in values or [""] for word in (option, value)]
    return spread + rest


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Method:
    spec: str
    """As written: ``kt:model.heads=shared``."""
    name: str
    """The recipe file's name: ``kt``."""
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class Job:
    label: str
    """What the progress line names: ``kt:model.heads=shared 0.05 seed 42``."""
    stage: str
    recipe: Path
    sets: tuple[str, ...]
    log: Path
    folder: Path
    """The run folder the stage writes."""
    evaluate: bool = False
    """Follow a successful training with ``tmkt eval`` of the same run."""
    teacher: int | None = None
    """The seed of the CKD teacher this job trains (pretrain-ann) or distils (distill: skipped
    when that teacher failed)."""

    def argv(self) -> list[str]:
        return [self.stage, str(self.recipe), *_set_args(self.sets)]

    def eval_argv(self) -> list[str]:
        """``tmkt eval`` of this run: the same recipe and overrides, ``eval.source`` its stage
        (an ``eval.*`` override names no variant, so the folder is the same run's)."""
        return ["eval", str(self.recipe), *_set_args((*self.sets, f"eval.source={self.stage}"))]

    def commands(self) -> list[list[str]]:
        return [self.argv(), *([self.eval_argv()] if self.evaluate else [])]


@dataclass(frozen=True)
class Plan:
    root: Path
    prepare: list[Job]
    teachers: list[Job]
    runs: list[Job]

    def phases(self) -> list[list[Job]]:
        return [self.prepare, self.teachers, self.runs]


def _set_args(sets: Iterable[str]) -> list[str]:
    return [word for s in sets for word in ("--set", s)]


def resolve_folder(text: str) -> Path:
    """A recipe folder as given, else a shipped one by name (``digits``, ``recipes/digits``)."""
    from tmkt_cli.config.catalog import shipped_recipes_dir

    path = Path(text)
    if path.is_dir():
        return path
    shipped = shipped_recipes_dir()
    name = text.rstrip("/").removeprefix("recipes/")
    if shipped is not None and name and ".." not in Path(name).parts \
            and (shipped / name).is_dir():
        return shipped / name
    known = sorted(p.name for p in shipped.iterdir() if p.is_dir()) if shipped else []
    raise TmktError(f"recipe folder not found: {text} (no such folder, nor a shipped one: "
                    f"{', '.join(known) or 'none here'})")


def parse_method(spec: str) -> Method:
    """``kt`` -> kt's recipe, no overrides; ``kt:model.heads=shared,model.test_head=static``
    -> kt's recipe and the overrides that make this variant of it."""
    name, _, rest = spec.partition(":")
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
        raise TmktError(f"--methods {spec}: expected a recipe file's name in the folder, such "
                        f"as event_only, kt, ckd or kt-paper (optionally :key=value,... for a "
                        f"variant)")
    overrides = tuple(o for o in rest.split(",") if o.strip())
    if rest and not overrides:
        raise TmktError(f"--methods {spec}: no override after ':' (expected key=value,...)")
    for override in overrides:
        _check_override(override, f"--methods {spec}")
    return Method(spec, name, overrides)


def _check_override(text: str, where: str) -> None:
    from tmkt_cli.config import parse_override

    try:
        key = ".".join(parse_override(text)[0])
    except TmktError as e:
        raise TmktError(f"{where}: {e}") from None
    if key in SET_BY_SWEEP:
        raise TmktError(f"{where}: {key} is set by the sweep (use {SET_BY_SWEEP[key]})")


def parse_fraction(text: str) -> str:
    """A fraction as the override writes it: a plain decimal (YAML reads ``1e-3`` as text)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 1:
        raise TmktError(f"--fractions {text}: expected a fraction of the event recordings in "
                        f"(0, 1]")
    written = repr(value)
    return f"{value:.15f}".rstrip("0") if "e" in written else written


def parse_seed(text: str) -> int:
    if not re.fullmatch(r"\d+", text.strip()):
        raise TmktError(f"--seeds {text}: expected a non-negative integer")
    return int(text)


def _tag(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text)


def plan_sweep(folder: str, methods: list[str], fractions: list[str], seeds: list[str],
               sets: list[str], runs: str, evaluate: bool = True) -> Plan:
    """Every job of the sweep, each recipe loaded with its overrides (so a bad key, value or
    file is an error now, not half way through the grid). Creates nothing."""
    from tmkt_cli.config import load_recipe

    recipes = resolve_folder(folder)
    parsed = [parse_method(m) for m in methods]
    grid_fractions = [parse_fraction(f) for f in fractions]
    grid_seeds = [parse_seed(s) for s in seeds]
    for s in sets:
        _check_override(s, f"--set {s}")
    _check_recipes_exist(recipes, parsed)
    # a CKD student is distilled (its recipe evaluates the distill stage), the rest trained
    distilled = {m.name for m in parsed
                 if load_recipe(recipes / f"{m.name}.yaml").eval.source == "distill"}
    root, logs = Path(runs), Path(runs) / "logs"
    common = (f"paths.runs={root}", *sets)
    folders: dict[Path, str] = {}
    datasets: dict[str, tuple[Path, tuple[str, ...]]] = {}

    def job(label: str, stage: str, recipe: Path, job_sets: tuple[str, ...], log: str,
            **kw) -> Job:
        try:
            loaded = load_recipe(recipe, list(job_sets))
        except TmktError as e:
            raise TmktError(f"{label}: {e}") from None
        out = loaded.stage_dir(stage)
        if out in folders:
            raise TmktError(f"{folders[out]} and {label} are the same run ({out}): "
                            f"drop one of them")
        folders[out] = label
        datasets.setdefault(os.path.abspath(loaded.dataset_dir()), (recipe, job_sets))
        return Job(label, stage, recipe, job_sets, logs / log, out, **kw)

    base = recipes / "base.yaml"
    if base.is_file():  # the dataset the folder's recipes share, prepared first
        datasets[os.path.abspath(load_recipe(base, list(sets)).dataset_dir())] = (base,
                                                                                  tuple(sets))
    teachers = []
    if distilled:  # one teacher per seed, from the first CKD recipe (they share pretrain_ann)
        teacher_recipe = recipes / f"{next(m.name for m in parsed if m.name in distilled)}.yaml"
        teachers = [job(f"teacher seed {seed}", "pretrain-ann", teacher_recipe,
                        (f"seed={seed}", *common, f"name={TEACHER}"), f"teacher-s{seed}.log",
                        teacher=seed)
                    for seed in grid_seeds]
    grid = _grid_jobs(job, recipes, parsed, grid_fractions, grid_seeds, common, distilled, root,
                      evaluate)
    prepare = [Job(f"prepare {recipe}", "prepare", recipe, prepare_sets,
                   logs / ("prepare.log" if i == 0 else f"prepare-{i + 1}.log"), Path(path))
               for i, (path, (recipe, prepare_sets)) in enumerate(datasets.items())]
    return Plan(root, prepare, teachers, grid)


def _check_recipes_exist(recipes: Path, parsed: list[Method]) -> None:
    """Every method names a recipe file of the folder."""
    for name in dict.fromkeys(m.name for m in parsed):
        if not (recipes / f"{name}.yaml").is_file():
            known = sorted(p.stem for p in recipes.glob("*.yaml") if p.stem != "base")
            raise TmktError(f"--methods {name}: no recipe {recipes / f'{name}.yaml'} (the "
                            f"folder has {', '.join(known) or 'none'})")


def _grid_jobs(job: Callable[..., Job], recipes: Path, parsed: list[Method],
               grid_fractions: list[str], grid_seeds: list[int], common: tuple[str, ...],
               distilled: set[str], root: Path, evaluate: bool) -> list[Job]:
    """The training (or distillation) of every method, fraction and seed, made by ``job``."""
    grid = []
    # seeds outermost: a grid stopped half way has every setting at the first seeds
    for seed in grid_seeds:
        for written in grid_fractions:
            for m in parsed:
                job_sets = (f"seed={seed}", f"data.event_fraction={written}", *common,
                            *m.overrides)
                stage, teacher = "train-tmkt", None
                if m.name in distilled:
                    stage, teacher = "distill", seed
                    job_sets += (f"distill.teacher={root / TEACHER / f'seed{seed}'}"
                                 f"/pretrain-ann",)
                grid.append(job(f"{m.spec} {written} seed {seed}", stage,
                                recipes / f"{m.name}.yaml", job_sets,
                                f"{_tag(m.spec)}-f{written}-s{seed}.log", evaluate=evaluate,
                                teacher=teacher))
    return grid


def dry_run_lines(plan: Plan) -> list[str]:
    """Every command the sweep would run, in order, one per line (the report's folders are
    this plan's; the report at the end gathers every folder under the root)."""
    lines = [shlex.join(["tmkt", *argv]) for phase in plan.phases() for job in phase
             for argv in job.commands()]
    roots = sorted({str(plan.root / j.folder.relative_to(plan.root).parts[0])
                    for j in plan.runs})
    return [*lines, shlex.join(["tmkt", "report", *roots, "--out", str(plan.root / "report")])]


# --------------------------------------------------------------------------------------------
# Running it here
# --------------------------------------------------------------------------------------------

def tmkt(*args: str, log: Path) -> tuple[int, float]:
    """``python -m tmkt_cli ARGS`` with one math thread, its output appended to ``log``: the
    exit code and the seconds it took."""
    rc, seconds, _ = _call(list(args), log)
    return rc, seconds


def _call(args: list[str], log: Path) -> tuple[int, float, str]:
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    start = time.monotonic()
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"$ tmkt {shlex.join(args)}\n")
        f.flush()
        offset = f.tell()
        rc = subprocess.run([sys.executable, "-m", "tmkt_cli", *args], stdout=f, stderr=f,
                            env=env).returncode
    with open(log, encoding="utf-8", errors="replace") as f:
        f.seek(offset)
        said = f.read()
    return rc, time.monotonic() - start, said


@dataclass(frozen=True)
class Result:
    job: Job
    status: str
    """done, up to date, FAILED or SKIPPED."""
    seconds: float
    note: str = ""

    def line(self, width: int = 0) -> str:
        note = f"  ({self.note})" if self.note else ""
        return f"{self.status:10s}  {self.job.label:{width}s}  {self.seconds:5.0f} s{note}"


def _run(job: Job, stop: threading.Event, skip: bool) -> Result:
    if skip:
        return Result(job, "SKIPPED", 0.0, f"its teacher failed: {job.log}")
    start, up_to_date = time.monotonic(), True
    for argv in job.commands():
        if stop.is_set():
            return Result(job, "STOPPED", time.monotonic() - start)
        rc, _, said = _call(argv, job.log)
        if rc != 0:
            return Result(job, "FAILED", time.monotonic() - start,
                          f"{argv[0]} exit {rc}: {job.log}")
        up_to_date &= f"{argv[0]}: up to date (" in said
    return Result(job, "up to date" if up_to_date else "done", time.monotonic() - start)


def report_roots(root: Path) -> list[Path]:
    """The folders ``tmkt report`` gathers: every one under the root but the sweep's own."""
    if not root.is_dir():
        return []
    return [p for p in sorted(root.iterdir()) if p.is_dir() and p.name not in NOT_RUNS]


def run_local(plan: Plan, jobs: int, echo: Callable[[str], None]) -> int:
    """Run the plan here, ``jobs`` subprocesses at a time: 0 when every job succeeded, else 1
    (a failed run is reported and the others go on)."""
    start, tally = time.monotonic(), Counter()
    width = max(len(job.label) for phase in plan.phases() for job in phase)
    failed_teachers: set[int] = set()
    stop = threading.Event()
    pool = ThreadPoolExecutor(max(1, jobs))
    try:
        for phase in plan.phases():
            futures = [pool.submit(_run, job, stop, job.teacher in failed_teachers)
                       for job in phase]
            for future in as_completed(futures):
                result = future.result()
                echo(result.line(width))
                tally[result.status] += 1
                if result.status == "FAILED" and result.job.stage == "pretrain-ann":
                    failed_teachers.add(result.job.teacher)
            if phase is plan.prepare and tally["FAILED"]:
                echo(f"sweep: prepare failed, nothing trained (see {plan.root / 'logs'})")
                return 1
    except KeyboardInterrupt:
        stop.set()  # no new subprocess starts; the running ones got the signal too
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    rc, report = 0, "no run folder to report"
    if roots := report_roots(plan.root):
        out, log = plan.root / "report", plan.root / "logs" / "report.log"
        rc = tmkt("report", *map(str, roots), "--out", str(out), log=log)[0]
        report = f"report: {out / 'report.md'}" if rc == 0 else f"the report FAILED: {log}"
    failed = tally["FAILED"] + tally["SKIPPED"]
    echo(f"sweep: {sum(tally.values())} jobs in {time.monotonic() - start:.0f} s: "
         f"{tally['done']} done, {tally['up to date']} up to date, {failed} failed; {report}")
    return 1 if failed or rc else 0


# --------------------------------------------------------------------------------------------
# SLURM: the same jobs as task files, submitted by slurm/sweep.sh
# --------------------------------------------------------------------------------------------

def slurm_script() -> Path:
    script = Path(__file__).resolve().parents[2] / "slurm" / "sweep.sh"
    if not script.is_file():
        raise TmktError(f"tmkt sweep --slurm needs the slurm/ scripts of a tmkt checkout "
                        f"(not found: {script})")
    return script


def task_files(plan: Plan, stamp: str) -> dict[str, tuple[Path, list[str]]]:
    """The task files slurm/sweep.sh submits, each an array (one ``tmkt`` command a line,
    split on spaces by slurm/stage.sbatch): prepare, teachers, training, eval."""
    stem = plan.root / f"sweep-{stamp}"
    phases = {"prepare": [j.argv() for j in plan.prepare],
              "teachers": [j.argv() for j in plan.teachers],
              "tasks": [j.argv() for j in plan.runs],
              "eval": [j.eval_argv() for j in plan.runs if j.evaluate]}
    files = {}
    for phase, commands in phases.items():
        for word in (w for argv in commands for w in argv):
            if any(c.isspace() for c in word):
                raise TmktError(f"--slurm: {word!r} holds a space, and a task file's line is "
                                f"split on spaces (slurm/stage.sbatch)")
        if commands:
            path = Path(f"{stem}.tasks") if phase == "tasks" else Path(f"{stem}-{phase}.tasks")
            files[phase] = (path, [" ".join(argv) for argv in commands])
    return files


def submit_slurm(plan: Plan, echo: Callable[[str], None], dry_run: bool = False) -> int:
    """Write the task files and submit them with slurm/sweep.sh (prepare -> teachers ->
    training array -> eval array, each task after its own training -> report)."""
    script = slurm_script()
    files = task_files(plan, time.strftime("%Y%m%dT%H%M%S", time.gmtime()))
    command = ["bash", str(script), str(plan.root),
               *(str(files[p][0]) if p in files else "-"
                 for p in ("prepare", "teachers", "tasks", "eval"))]
    if dry_run:
        for path, lines in files.values():
            echo(f"{path}:")
            for line in lines:
                echo(f"  {line}")
        echo(shlex.join(command))
        return 0
    plan.root.mkdir(parents=True, exist_ok=True)
    for path, lines in files.values():
        path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    env = dict(os.environ)
    if "TMKT_VENV" not in env and (Path(sys.prefix) / "bin" / "activate").is_file():
        env["TMKT_VENV"] = sys.prefix  # the jobs use the tmkt that planned them
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    for line in (proc.stdout + proc.stderr).splitlines():
        echo(line)
    return proc.returncode

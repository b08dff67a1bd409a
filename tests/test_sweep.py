"""tmkt sweep: the grid's plan and its checks, the order of its jobs, a tiny real grid end to
end (prepare, training, eval, report; a second call does nothing; a failed run does not stop
the others), and the SLURM submission through slurm/sweep.sh with a fake ``sbatch``."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from tmkt_cli.cli import app
from tmkt_cli.runs.artifacts import read_manifest
from tmkt_cli.stages import sweep

runner = CliRunner()
CLASSES, IMAGES = 3, 10
BASE = """\
seed: 42
paths:
  dataset: {tmp}/prepared
prepare:
  dataset: images
  root: {tmp}/raw
  time_steps: 4
  size: 8
  workers: 1
  emulator: {{recordings_per_image: 1, canvas: 10, image_size: 8, duration_ms: 20,
             sample_rate_hz: 500}}
data: {{crop_padding: 1, in_memory: true}}
model: {{backbone: digitsnet}}
train: {{epochs: 0, max_steps: 4, batch_size: 4, warmup_steps: 1, device: cpu,
        eval_every_steps: 100}}
pretrain_ann: {{backbone: digitsnet, train: {{epochs: 0, max_steps: 4, batch_size: 4,
               warmup_steps: 1, device: cpu}}}}
eval: {{batch_size: 8}}
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A folder of class subfolders of 8x8 images (the ``images`` dataset: prepare emulates
    30 recordings in a second) and a recipe folder ``grid/`` for it."""
    tmp = tmp_path_factory.mktemp("sweep")
    rng = np.random.default_rng(0)
    for k in range(CLASSES):
        folder = tmp / "raw" / f"c{k}"
        folder.mkdir(parents=True)
        for i in range(IMAGES):
            image = rng.integers(0, 60, (8, 8), np.uint8)
            image[:, 2 * k:2 * k + 3] = 250  # a class stripe
            Image.fromarray(image).save(folder / f"{i}.png")
    grid = tmp / "grid"
    grid.mkdir()
    (grid / "base.yaml").write_text(BASE.format(tmp=tmp))
    for method in ("event_only", "kt"):
        (grid / f"{method}.yaml").write_text(f"base: base.yaml\nmethod: {{name: {method}}}\n")
    (grid / "ckd.yaml").write_text("base: base.yaml\neval: {source: distill}\n")
    return tmp


def invoke(*args: str, env: dict | None = None):
    return runner.invoke(app, ["sweep", *args], env=env)


def lines_of(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


def statuses(lines: list[str]) -> dict[str, str]:
    """Each job's status from the sweep's lines: ``STATUS  LABEL  SECONDS s``."""
    found = (re.match(r"(done|up to date|FAILED|SKIPPED) +(.+?) +\d+ s", line) for line in lines)
    return {m[2]: m[1] for m in found if m}


# --------------------------------------------------------------------------------------------
# The command line and the checks before anything runs
# --------------------------------------------------------------------------------------------

def test_list_options_take_the_words_up_to_the_next_option():
    assert sweep.spread_list_options(
        ["grid", "--methods", "kt", "kt:model.heads=shared", "--jobs", "2", "--seeds=1", "2",
         "--fractions", "0.1 0.2", "--set", "train.lr=0.1"]) == [
        "--methods", "kt", "--methods", "kt:model.heads=shared", "--seeds", "1", "--seeds", "2",
        "--fractions", "0.1", "--fractions", "0.2", "grid", "--jobs", "2", "--set",
        "train.lr=0.1"]
    # a repeated list option replaces the earlier one, as with argparse
    assert sweep.spread_list_options(["--seeds", "1", "2", "--seeds", "3"]) == ["--seeds", "3"]


@pytest.mark.parametrize("args,message", [
    (["--methods", "event_only", "ktt"], "--methods ktt: no recipe"),
    (["--methods", "kt;rm"], "--methods kt;rm: expected a recipe file's name"),
    (["--methods", "finetune"], "--methods finetune: no recipe"),
    (["--methods", "kt:model.headz=shared"], "unknown recipe key 'model.headz'"),
    (["--methods", "kt:model.heads"], "expected KEY=VALUE"),
    (["--methods", "kt", "kt:method.name=kt"], "are the same run"),
    (["--fractions", "0.5", "1.5"], "--fractions 1.5: expected a fraction"),
    (["--fractions", "half"], "--fractions half: expected a fraction"),
    (["--seeds", "x"], "--seeds x: expected a non-negative integer"),
    (["--set", "seed=3"], "seed is set by the sweep (use --seeds)"),
    (["--set", "train.lr=-1"], "'train.lr': expected a value > 0, got -1"),
    (["--jobs", "0"], "--jobs: expected at least 1"),
])
def test_a_bad_spec_is_one_line_exit_2_and_nothing_runs(world, args, message):
    runs = world / "bad-runs"
    res = invoke(str(world / "grid"), "--runs", str(runs), "--methods", "event_only", *args)
    assert res.exit_code == 2, res.output
    (line,) = lines_of(res.output)
    assert line.startswith("error: ") and message in line, line
    assert not runs.exists()


def test_an_unknown_folder_names_the_shipped_ones(world):
    res = invoke(str(world / "nope"), "--runs", str(world / "bad-runs"))
    (line,) = lines_of(res.output)
    assert res.exit_code == 2 and "recipe folder not found" in line and "digits" in line


def test_a_shipped_folder_by_name(tmp_path):
    res = invoke("digits", "--methods", "kt", "--fractions", "0.05", "--seeds", "1",
                 "--runs", str(tmp_path / "runs"), "--dry-run")
    assert res.exit_code == 0, res.output
    assert lines_of(res.output)[0].endswith(str(Path("recipes", "digits", "base.yaml")))


def test_any_recipe_of_the_folder_is_a_method_and_a_ckd_recipe_is_distilled(tmp_path):
    """The papers' layouts (kt-paper, ckd-paper) are recipes like any other; a recipe that
    evaluates the distill stage is a CKD student, and its teachers come first."""
    res = invoke("control", "--methods", "kt-paper", "ckd-paper", "--fractions", "0.001",
                 "--seeds", "1", "--runs", str(tmp_path / "runs"), "--dry-run")
    assert res.exit_code == 0, res.output
    jobs = [describe(line) for line in lines_of(res.output)[1:-1]]
    assert jobs == [("pretrain-ann", "ckd-paper", "1", None),
                    ("train-tmkt", "kt-paper", "1", "0.001"), ("eval", "kt-paper", "1", "0.001"),
                    ("distill", "ckd-paper", "1", "0.001"), ("eval", "ckd-paper", "1", "0.001")]


# --------------------------------------------------------------------------------------------
# The order of the jobs
# --------------------------------------------------------------------------------------------

def describe(line: str) -> tuple:
    """(stage, recipe, seed, fraction) of a ``tmkt STAGE RECIPE --set ...`` line."""
    words = line.split()
    sets = dict(w.split("=", 1) for w in words[4::2])
    return words[1], Path(words[2]).stem, sets.get("seed"), sets.get("data.event_fraction")


def test_dry_run_lists_every_job_in_order_and_runs_nothing(world):
    runs = world / "dry-runs"
    args = [str(world / "grid"), "--methods", "event_only", "kt:model.heads=shared", "ckd",
            "--fractions", "0.1", "0.5", "--seeds", "7", "8", "--runs", str(runs), "--dry-run"]
    res = invoke(*args)
    assert res.exit_code == 0, res.output
    lines = lines_of(res.output)
    expected = [("prepare", "base", None, None),
                ("pretrain-ann", "ckd", "7", None), ("pretrain-ann", "ckd", "8", None)]
    for seed in ("7", "8"):  # seeds outermost, then fractions, then methods
        for fraction in ("0.1", "0.5"):
            for stage, recipe in (("train-tmkt", "event_only"), ("train-tmkt", "kt"),
                                  ("distill", "ckd")):
                expected += [(stage, recipe, seed, fraction), ("eval", recipe, seed, fraction)]
    assert [describe(line) for line in lines[:-1]] == expected
    assert "--set name=teacher" in lines[1]
    kt = next(line for line in lines if describe(line)[:2] == ("train-tmkt", "kt"))
    assert kt.endswith("--set model.heads=shared")
    distill = next(line for line in lines if describe(line)[0] == "distill")
    assert f"distill.teacher={runs}/teacher/seed7/pretrain-ann" in distill
    assert "eval.source=distill" in lines[lines.index(distill) + 1]
    assert lines[-1] == (f"tmkt report {runs}/grid-ckd {runs}/grid-event_only {runs}/grid-kt "
                         f"--out {runs}/report")
    assert not runs.exists()
    without_eval = lines_of(invoke(*args, "--no-eval").output)
    assert [describe(line) for line in without_eval[:-1]] == [
        e for e in expected if e[0] != "eval"]


def test_the_runner_keeps_the_order_and_skips_what_a_failed_teacher_needs(world, monkeypatch):
    """One job at a time (the grid's order); teacher seed 2 fails: its ckd run is skipped,
    every other run goes on, and the sweep ends with exit code 1."""
    calls = []

    def fake_call(args, log):
        calls.append(describe(sweep.shlex.join(["tmkt", *args])))
        failed = args[0] == "pretrain-ann" and "seed=2" in args
        return int(failed), 0.0, ""

    monkeypatch.setattr(sweep, "_call", fake_call)
    plan = sweep.plan_sweep(str(world / "grid"), ["event_only", "ckd"], ["0.5"], ["1", "2"],
                            [], str(world / "fake-runs"))
    printed: list[str] = []
    assert sweep.run_local(plan, 1, printed.append) == 1
    assert calls == [("prepare", "base", None, None),
                     ("pretrain-ann", "ckd", "1", None), ("pretrain-ann", "ckd", "2", None),
                     ("train-tmkt", "event_only", "1", "0.5"), ("eval", "event_only", "1", "0.5"),
                     ("distill", "ckd", "1", "0.5"), ("eval", "ckd", "1", "0.5"),
                     ("train-tmkt", "event_only", "2", "0.5"), ("eval", "event_only", "2", "0.5")]
    status = statuses(printed)
    assert status["teacher seed 2"] == "FAILED" and status["ckd 0.5 seed 2"] == "SKIPPED"
    assert status["ckd 0.5 seed 1"] == "done" and status["event_only 0.5 seed 2"] == "done"
    assert printed[-1].startswith("sweep: 7 jobs") and "5 done, 0 up to date, 2 failed" in \
        printed[-1]


# --------------------------------------------------------------------------------------------
# A tiny real grid
# --------------------------------------------------------------------------------------------

GRID = ["--methods", "event_only", "kt:model.heads=shared", "--fractions", "0.5", "1.0",
        "--seeds", "42", "--jobs", "2"]


@pytest.fixture(scope="module")
def trained(world):
    runs = world / "runs"
    res = invoke(str(world / "grid"), *GRID, "--runs", str(runs))
    assert res.exit_code == 0, res.output
    return runs, lines_of(res.output)


def test_a_tiny_grid_end_to_end(world, trained):
    runs, printed = trained
    plan = sweep.plan_sweep(str(world / "grid"), GRID[1:3], GRID[4:6], ["42"], [], str(runs))
    assert len(printed) == 6 and statuses(printed) == {
        f"prepare {world / 'grid' / 'base.yaml'}": "done", "event_only 0.5 seed 42": "done",
        "kt:model.heads=shared 0.5 seed 42": "done", "event_only 1.0 seed 42": "done",
        "kt:model.heads=shared 1.0 seed 42": "done"}
    assert re.fullmatch(r"sweep: 5 jobs in \d+ s: 5 done, 0 up to date, 0 failed; "
                        rf"report: {runs}/report/report\.md", printed[-1])
    for job in plan.runs:
        assert read_manifest(job.folder)["status"] == "complete", job.folder
        assert (job.folder.parent / "eval" / "eval.json").is_file(), job.folder
        log = job.log.read_text()
        assert "$ tmkt train-tmkt" in log and "$ tmkt eval" in log
    kt = [job.folder for job in plan.runs if job.label.startswith("kt")]
    assert all("heads-shared" in str(folder) for folder in kt)  # the spec's variant folder
    report = (runs / "report" / "report.md").read_text()
    assert "from 4 finished run(s)" in report and "grid-event_only" in report

    again = invoke(str(world / "grid"), *GRID, "--runs", str(runs))
    assert again.exit_code == 0, again.output
    lines = lines_of(again.output)
    assert len(lines) == 6 and set(statuses(lines).values()) == {"up to date"}
    assert "0 done, 5 up to date, 0 failed" in lines[-1]


def test_a_failed_run_does_not_stop_the_others(world, trained):
    runs, _ = trained
    args = ["--methods", "event_only", "--fractions", "0.25", "0.5", "--seeds", "42",
            "--runs", str(runs)]
    blocked = sweep.plan_sweep(str(world / "grid"), ["event_only"], ["0.25"], ["42"], [],
                               str(runs)).runs[0].folder
    blocked.mkdir(parents=True)
    (blocked / "notes.txt").write_text("not a tmkt run: train-tmkt refuses to write here\n")
    res = invoke(str(world / "grid"), *args)
    assert res.exit_code == 1, res.output
    lines = lines_of(res.output)
    status = statuses(lines)
    assert status["event_only 0.25 seed 42"] == "FAILED"
    assert status["event_only 0.5 seed 42"] == "up to date"  # after the failure or not
    failed = next(line for line in lines if line.startswith("FAILED"))
    assert f"train-tmkt exit 2: {runs}/logs/event_only-f0.25-s42.log" in failed
    assert "1 failed; report:" in lines[-1]


# --------------------------------------------------------------------------------------------
# SLURM: task files and one chain of arrays, through slurm/sweep.sh and a fake sbatch
# --------------------------------------------------------------------------------------------

def fake_sbatch(folder: Path) -> tuple[dict, Path]:
    """An ``sbatch`` first on PATH that records its arguments and answers job ids 100, 101..."""
    log = folder / "sbatch.log"
    script = folder / "bin" / "sbatch"
    script.parent.mkdir(parents=True)
    script.write_text('#!/bin/bash\nprintf "%s\\n" "$*" >>"$FAKE_SBATCH_LOG"\n'
                      'echo $(( $(wc -l <"$FAKE_SBATCH_LOG") + 99 ))\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    env = {"PATH": f"{script.parent}:{os.environ['PATH']}",
           "FAKE_SBATCH_LOG": str(log), "GPUS": "0", "MAX_PARALLEL": "2"}
    return env, log


def test_slurm_submits_one_chain_of_arrays(world, tmp_path):
    env, log = fake_sbatch(tmp_path)
    runs = tmp_path / "runs"
    res = invoke(str(world / "grid"), "--methods", "event_only", "ckd", "--fractions", "0.5",
                 "--seeds", "1", "2", "--runs", str(runs), "--slurm", env=env)
    assert res.exit_code == 0, res.output
    jobs = dict(re.findall(r"^(\w+)\s+job (\d+)", res.output, flags=re.M))
    assert jobs == {"prepare": "100", "teachers": "101", "array": "102", "eval": "103",
                    "report": "104"}
    calls = log.read_text().splitlines()
    option = [dict(re.findall(r"--([\w-]+)=(\S+)", call)) for call in calls]
    assert [o["job-name"] for o in option] == [
        "tmkt-sweep-prepare", "tmkt-sweep-teachers", "tmkt-sweep", "tmkt-sweep-eval",
        "tmkt-sweep-report"]
    assert [o.get("dependency") for o in option] == [
        None, "afterok:100", "afterok:100:101", "aftercorr:102", "afterany:102:103"]
    assert [o.get("array") for o in option] == ["0-0%2", "0-1%2", "0-3%2", "0-3%2", None]
    assert option[2]["gpus-per-node"] == "0" and option[2]["cpus-per-task"] == "8"
    (tasks,) = runs.glob("sweep-*[0-9].tasks")
    assert calls[2].endswith(f"--tasks {tasks}")
    lines = tasks.read_text().splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["train-tmkt", str(world / "grid" / "event_only.yaml")],
        ["distill", str(world / "grid" / "ckd.yaml")]] * 2
    evals = Path(calls[3].split()[-1]).read_text().splitlines()
    assert evals == [line.replace("train-tmkt", "eval", 1).replace("distill", "eval", 1)
                     + f" --set eval.source={line.split()[0]}" for line in lines]
    assert "report" in calls[4] and "! -name teacher" in calls[4]


def test_slurm_refuses_a_word_with_a_space(world, tmp_path):
    env, log = fake_sbatch(tmp_path)
    res = invoke(str(world / "grid"), "--methods", "kt", "--runs", str(tmp_path / "runs"),
                 "--set", "cam.samples=[1, 2]", "--slurm", env=env)
    (line,) = lines_of(res.output)
    assert res.exit_code == 2 and "holds a space" in line and not log.exists()

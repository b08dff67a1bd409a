"""The SLURM scripts on a real single-node SLURM (``make test-slurm``; CI runs it).

Every job goes through ``slurm/stage.sbatch``, ``slurm/pipeline.sh`` or ``tmkt sweep --slurm``
as a user would submit it, on the embedded digits data at tiny settings (T=4, 8x8 frames, one
emulated recording per image, a few hundred optimizer steps of a digitsnet), with the resources
overridden for a 2-CPU node without GPUs. Preemption is ``scancel --signal=USR1 --batch`` (what
SLURM sends before a time limit with ``--signal=B:USR1@N``); a job stopped that way must be
requeued, resume, and end bitwise equal to an uninterrupted run made by calling tmkt directly.
The cluster is brought up by :mod:`slurm_cluster` and the tests are skipped, with the reason,
where it cannot start; those tests are marked ``slurm``.

The scripts' own checks need no SLURM and are not marked (``make test`` runs them): every script
run with hostile values in its environment and arguments (command substitutions, ``abc``,
empty), with fake ``sbatch``, ``srun``, ``scontrol`` and ``tmkt`` first on PATH that record
any call, must exit with code 2 and one line before it calls any of them, and run nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tmkt_cli.data.store import FILENAME, PARTIAL_SUFFIX, open_dataset
from tmkt_cli.runs.artifacts import read_manifest
from tmkt_cli.runs.checkpoints import LAST, load_checkpoint
from tmkt_cli.runs.runlog import read_metrics

sys.path.insert(0, str(Path(__file__).parent))
from slurm_cluster import ClusterUnavailable, SlurmCluster, free_port  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
STAGE_SBATCH = REPO / "slurm" / "stage.sbatch"
PIPELINE = REPO / "slurm" / "pipeline.sh"
TMKT_RECIPE = REPO / "recipes" / "digits" / "tmkt.yaml"
CKD_RECIPE = REPO / "recipes" / "digits" / "ckd.yaml"
TOY = Path(__file__).parent / "toy.py"

PREPARE_SETS = {
    "prepare.time_steps": 4, "prepare.size": 8, "prepare.workers": 1,
    "prepare.emulator.recordings_per_image": 1, "prepare.emulator.canvas": 10,
    "prepare.emulator.image_size": 8, "prepare.emulator.duration_ms": 20,
    "prepare.emulator.sample_rate_hz": 500, "prepare.emulator.amplitude_px": 1.0,
    "prepare.flush_every": 16,
}
TRAIN_STEPS = 600
"""About 30 s of training on one core: long enough that a time-limit signal (which arrives
0-30 s into a one-minute job) lands mid-training."""
TRAIN_SETS = {
    "train.max_steps": TRAIN_STEPS, "train.batch_size": 16, "train.device": "cpu",
    "train.eval_every_steps": 10_000,   # evaluate once, at the end
    "train.log_every_steps": 5,
    "pretrain_ann.train.max_steps": 20, "pretrain_ann.train.eval_every_steps": 10_000,
}
# One process per job on one core, one math thread: CPU runs are bitwise repeatable.
NODE_OPTIONS = ["--gpus-per-node=0", "--cpus-per-task=1", "--mem=1G", "--time=15",
                "--signal=B:USR1@30"]
PIPELINE_ENV = {"GPUS": "0", "CPUS": "1", "PREP_CPUS": "1", "MEM": "1G", "TIME": "15",
                "PREP_TIME": "15", "EVAL_TIME": "15", "CAM_TIME": "15", "SIGNAL_LEAD": "30"}
JOB_TIMEOUT_S = 900


def set_args(values: dict) -> list[str]:
    return [a for k, v in values.items() for a in ("--set", f"{k}={v}")]


# --------------------------------------------------------------------------------------------
# The cluster and a shared, directly computed reference
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    try:
        c = SlurmCluster(tmp_path_factory.mktemp("slurm")).start()
    except ClusterUnavailable as e:
        if os.environ.get("TMKT_REQUIRE_SLURM") == "1":  # CI: a skip would hide a broken set-up
            pytest.fail(f"TMKT_REQUIRE_SLURM=1 but no SLURM cluster: {e}")
        pytest.skip(f"no SLURM cluster here: {e}")
    # A CI timeout or `kill` stops pytest with SIGTERM: turn it into KeyboardInterrupt so
    # this fixture's teardown still stops the daemons.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield c
    finally:
        signal.signal(signal.SIGTERM, previous)
        c.stop()


def _interrupt(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt(f"signal {signum}")


@dataclass
class World:
    cluster: SlurmCluster
    work: Path

    @property
    def env(self) -> dict[str, str]:
        return {**self.cluster.env, "TMKT_VENV": sys.prefix, "OMP_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}

    def sets(self, dataset: Path | None = None, runs: Path | None = None, **extra) -> list[str]:
        return set_args({**PREPARE_SETS, **TRAIN_SETS,
                         "paths.dataset": dataset or self.work / "prepared",
                         "paths.runs": runs or self.work / "runs", **extra})

    def folder(self, recipe: Path, sets: list[str], stage: str) -> Path:
        """Where ``stage`` of ``recipe`` with ``sets`` writes, as ``tmkt paths`` says (the
        scripts ask the same question)."""
        out = subprocess.run([sys.executable, "-m", "tmkt_cli", "paths", str(recipe), *sets],
                             env=self.env, cwd=self.work, capture_output=True, text=True,
                             check=True).stdout
        paths = dict(line.split("=", 1) for line in out.splitlines())
        return self.work / paths["dataset" if stage == "prepare" else stage]

    def tmkt(self, *args: str) -> None:
        """Run tmkt directly (the uninterrupted reference)."""
        proc = subprocess.run([sys.executable, "-m", "tmkt_cli", *args], env=self.env,
                              cwd=self.work, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]

    def sbatch(self, stage: str, recipe: Path, sets: list[str], *options: str) -> str:
        out = self.cluster.run("sbatch", "--parsable", *NODE_OPTIONS, *options,
                               str(STAGE_SBATCH), stage, str(recipe), *sets,
                               cwd=self.work, env=self.env).stdout
        return out.strip().split(";")[0]

    def log(self, job_id: str) -> str:
        (path,) = self.work.glob(f"slurm-*-{job_id}.out")
        return path.read_text()

    def finish(self, job_id: str) -> dict[str, str]:
        """Wait for the job to end; it must have completed."""
        info = self.cluster.wait_for(job_id, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT",
                                              "NODE_FAIL", "OUT_OF_MEMORY"}, JOB_TIMEOUT_S)
        assert info["JobState"] == "COMPLETED", f"{info}\n{self.log(job_id)[-3000:]}"
        return info

    def wait_until(self, job_id: str, ready: Callable[[], bool]) -> None:
        """Poll ``ready()`` while the job is pending or running."""
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while not ready():
            state = self.cluster.job(job_id).get("JobState")
            assert state in {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED"}, \
                f"job {job_id} is {state} before it got ready:\n{self.log(job_id)}"
            assert time.monotonic() < deadline, f"job {job_id} never got ready"
            time.sleep(0.1)

    def preempt_when(self, job_id: str, ready: Callable[[], bool]) -> None:
        """Send the preemption warning (SIGUSR1 to the batch shell) once ``ready()``."""
        self.wait_until(job_id, ready)
        self.cluster.run("scancel", "--signal=USR1", "--batch", job_id)

    def log_says(self, job_id: str, text: str) -> Callable[[], bool]:
        def check() -> bool:
            with contextlib.suppress(ValueError):  # no log file yet
                return text in self.log(job_id)
            return False
        return check


@pytest.fixture(scope="module")
def world(cluster, tmp_path_factory) -> World:
    w = World(cluster, tmp_path_factory.mktemp("world"))
    w.tmkt("prepare", str(TMKT_RECIPE), *w.sets())
    return w


@pytest.fixture(scope="module")
def reference_training(world) -> Path:
    sets = world.sets(runs=world.work / "reference")
    world.tmkt("train-tmkt", str(TMKT_RECIPE), *sets)
    return world.folder(TMKT_RECIPE, sets, "train-tmkt")


def logged_steps(folder: Path) -> list[int]:
    with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
        return [r["step"] for r in read_metrics(folder) if r["kind"] == "train"]
    return []


def assert_same_weights(folder: Path, reference: Path, steps: int) -> None:
    ours = load_checkpoint(folder / LAST)
    theirs = load_checkpoint(reference / LAST)
    assert ours["model"].keys() == theirs["model"].keys()
    for name in ours["model"]:
        assert torch.equal(ours["model"][name], theirs["model"][name]), name
    assert ours["loop"] == theirs["loop"]
    assert read_manifest(folder)["status"] == "complete"
    assert logged_steps(folder) == list(range(5, steps + 1, 5))


def assert_requeued_and_resumed(world: World, job_id: str, info: dict[str, str]) -> str:
    """The job ran at least twice, the log kept every run, and the second run resumed."""
    assert int(info["Restarts"]) >= 1, info
    log = world.log(job_id)
    runs = re.findall(r"^tmkt job \d+: .*: run (\d+) ", log, flags=re.M)
    assert runs[:2] == ["1", "2"], log  # --open-mode=append: the first run's output is there
    assert "requeueing" in log, log
    return log


# --------------------------------------------------------------------------------------------
# Preemption: requeue, resume, same result
# --------------------------------------------------------------------------------------------

@pytest.mark.slurm
def test_train_preempted_mid_run_is_requeued_and_matches(world, reference_training):
    sets = world.sets(runs=world.work / "preempted-train")
    folder = world.folder(TMKT_RECIPE, sets, "train-tmkt")
    job = world.sbatch("train-tmkt", TMKT_RECIPE, sets)
    # the first logged step: the stage is inside its training loop, its handler installed
    world.preempt_when(job, lambda: logged_steps(folder)[:1] == [5])
    info = world.finish(job)
    log = assert_requeued_and_resumed(world, job, info)
    assert re.search(r"stopped: signal 10: checkpoint saved at step \d+", log), log
    assert "resuming the unfinished run" in log, log
    assert_same_weights(folder, reference_training, TRAIN_STEPS)


TIME_LIMIT_STEPS = 3000
"""Long enough that every one-minute run is still training when its early signal comes
(600 steps can now finish in well under a minute, before any signal)."""


@pytest.fixture(scope="module")
def long_reference(world) -> Path:
    sets = world.sets(runs=world.work / "long-reference",
                      **{"train.max_steps": TIME_LIMIT_STEPS})
    world.tmkt("train-tmkt", str(TMKT_RECIPE), *sets)
    return world.folder(TMKT_RECIPE, sets, "train-tmkt")


@pytest.mark.slurm
def test_time_limit_checkpoints_on_the_early_signal_and_continues(world, long_reference):
    """A one-minute job (the shortest SLURM has) cannot hold the training: SLURM's warning
    (``--signal=B:USR1@30``) arrives before the limit, the stage checkpoints, the script
    requeues, and the next run goes on from there. Once a requeued run has resumed, the test
    raises the limit to 15 minutes so the job finishes (on a loaded machine a one-minute run
    does a few dozen steps: the whole budget would take a dozen requeues)."""
    sets = world.sets(runs=world.work / "time-limited",
                      **{"train.max_steps": TIME_LIMIT_STEPS})
    folder = world.folder(TMKT_RECIPE, sets, "train-tmkt")
    job = world.sbatch("train-tmkt", TMKT_RECIPE, sets, "--time=1")
    world.wait_until(job, world.log_says(job, "resuming at step"))
    world.cluster.run("scontrol", "update", f"JobId={job}", "TimeLimit=15")
    info = world.finish(job)
    log = assert_requeued_and_resumed(world, job, info)
    assert "TIMEOUT" not in info["JobState"] and "DUE TO TIME LIMIT" not in log, log
    assert re.search(r"checkpoint saved at step \d+", log), log
    assert_same_weights(folder, long_reference, TIME_LIMIT_STEPS)


@pytest.mark.slurm
def test_prepare_preempted_is_requeued_and_writes_the_same_file(world):
    """``prepare`` has no checkpoint handler: the signal ends it, and the requeued run resumes
    from the last block its writer committed."""
    out = world.work / "preempted-prepare"
    job = world.sbatch("prepare", TMKT_RECIPE, world.sets(dataset=out))
    world.preempt_when(job, (out / (FILENAME + PARTIAL_SUFFIX)).exists)
    info = world.finish(job)
    log = assert_requeued_and_resumed(world, job, info)
    assert "resuming the unfinished run" in log, log
    reference = world.work / "prepared"
    ours, theirs = read_manifest(out), read_manifest(reference)
    assert ours["status"] == "complete"
    assert ours["outputs"]["dataset"]["sha256"] == theirs["outputs"]["dataset"]["sha256"]
    with open_dataset(out) as a, open_dataset(reference) as b:
        assert a.content_hash == b.content_hash


@pytest.mark.slurm
def test_distill_preempted_mid_run_is_requeued_and_matches(world):
    steps = 150
    sets = world.sets(runs=world.work / "ckd", **{"train.max_steps": steps})
    world.tmkt("pretrain-ann", str(CKD_RECIPE), *sets)
    teacher = world.folder(CKD_RECIPE, sets, "pretrain-ann")
    reference_sets = world.sets(runs=world.work / "ckd-reference",
                                **{"train.max_steps": steps, "distill.teacher": teacher})
    world.tmkt("distill", str(CKD_RECIPE), *reference_sets)

    folder = world.folder(CKD_RECIPE, sets, "distill")
    job = world.sbatch("distill", CKD_RECIPE, sets)
    world.preempt_when(job, lambda: logged_steps(folder)[:1] == [5])
    info = world.finish(job)
    log = assert_requeued_and_resumed(world, job, info)
    assert re.search(r"stopped: signal 10: checkpoint saved at step \d+", log), log
    assert_same_weights(folder, world.folder(CKD_RECIPE, reference_sets, "distill"), steps)


# --------------------------------------------------------------------------------------------
# Pipelines
# --------------------------------------------------------------------------------------------

PIPELINE_STAGES = ("prepare", "train-tmkt", "eval", "cam")


def submit_pipeline(world: World, sets: list[str]) -> dict[str, str]:
    proc = world.cluster.run("bash", str(PIPELINE), str(TMKT_RECIPE), *sets, cwd=world.work,
                             env={**world.env, **PIPELINE_ENV})
    jobs = dict(re.findall(r"^(\S+)\s+job (\d+)$", proc.stdout, flags=re.M))
    assert tuple(jobs) == PIPELINE_STAGES, proc.stdout
    return jobs


@pytest.mark.slurm
def test_two_pipelines_on_one_recipe_chain_the_stages_and_run_each_once(world):
    """Two submissions of the same pipeline at once: every job completes, each stage starts
    after the one it depends on ended, and each stage's work is done once (the second
    pipeline's jobs wait on the first's, then find their stage up to date)."""
    dataset, runs = world.work / "pipeline-data", world.work / "pipeline-runs"
    sets = world.sets(dataset=dataset, runs=runs, **{"train.max_steps": 150})
    first = submit_pipeline(world, sets)
    second = submit_pipeline(world, sets)
    infos = {}
    for jobs in (first, second):
        for job in jobs.values():
            infos[job] = world.finish(job)
    for jobs in (first, second):
        for before, after in zip(PIPELINE_STAGES, PIPELINE_STAGES[1:], strict=False):
            ended, started = infos[jobs[before]]["EndTime"], infos[jobs[after]]["StartTime"]
            assert started >= ended, (before, after, infos[jobs[before]], infos[jobs[after]])
    for stage in PIPELINE_STAGES:
        a, b = infos[first[stage]], infos[second[stage]]
        assert b["StartTime"] >= a["EndTime"], (stage, a, b)  # singleton: never at once
        assert f"{stage}: up to date" in world.log(second[stage])
        assert "up to date" not in world.log(first[stage])
    folders = [world.folder(TMKT_RECIPE, sets, stage) for stage in PIPELINE_STAGES]
    assert logged_steps(folders[1]) == list(range(5, 151, 5))
    for folder in folders:
        assert read_manifest(folder)["status"] == "complete", folder
        assert read_manifest(folder)["timings"]["attempts"] == 1, folder


@pytest.mark.slurm
def test_a_failing_stage_cancels_the_stages_waiting_on_it(world):
    sets = world.sets(runs=world.work / "failing-runs")
    blocker = world.folder(TMKT_RECIPE, sets, "train-tmkt")
    blocker.mkdir(parents=True)
    (blocker / "notes.txt").write_text("not a tmkt run: train-tmkt refuses to write here\n")
    jobs = submit_pipeline(world, sets)
    assert world.finish(jobs["prepare"])["JobState"] == "COMPLETED"
    failed = world.cluster.wait_for(jobs["train-tmkt"], {"FAILED", "COMPLETED"}, JOB_TIMEOUT_S)
    assert failed["JobState"] == "FAILED" and failed["ExitCode"] == "2:0", failed
    log = world.log(jobs["train-tmkt"])
    assert "holds no tmkt manifest" in log and "train-tmkt failed (exit 2" in log, log
    for stage in ("eval", "cam"):
        info = world.cluster.wait_for(jobs[stage], {"CANCELLED", "COMPLETED", "FAILED"}, 60)
        assert (info["JobState"], info["Reason"]) == ("CANCELLED", "DependencyNeverSatisfied")


@pytest.mark.slurm
def test_a_sweep_is_one_chain_of_job_arrays_of_variant_runs(world):
    """tmkt sweep --slurm (through slurm/sweep.sh): prepare, then one job array (a task per
    method x fraction x seed), an eval array (task N after training task N), then the report;
    every run lands in its recipe's variant folder, with no path built by hand, and has its
    eval."""
    runs = world.work / "sweep-runs"
    jobs = submit_sweep(world, runs)
    report = world.cluster.wait_for(jobs["report"], {"COMPLETED", "FAILED", "CANCELLED"},
                                    JOB_TIMEOUT_S)
    assert report["JobState"] == "COMPLETED", report
    (tasks,) = runs.glob("sweep-*[0-9].tasks")
    lines = tasks.read_text().splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["train-tmkt", str(REPO / "recipes/digits/event_only.yaml")],
        ["train-tmkt", str(REPO / "recipes/digits/kt.yaml")]]
    for method in ("event_only", "kt"):
        folder = sweep_run(world, runs, method)
        assert folder.parent.parent.name.startswith("event_fraction-0.5+")  # a variant
        assert folder.is_relative_to(runs / f"digits-{method}")
        assert read_manifest(folder)["status"] == "complete", folder
        assert read_manifest(folder.parent / "eval")["status"] == "complete", folder
    assert (runs / "report" / "report.md").is_file()


@pytest.mark.slurm
def test_a_failed_sweep_task_cancels_only_its_own_eval(world):
    """Training task 0 refuses its folder: its eval task is cancelled (aftercorr), task 1 and
    its eval complete, and the report still runs (afterany)."""
    runs = world.work / "failing-sweep-runs"
    blocker = sweep_run(world, runs, "event_only")
    blocker.mkdir(parents=True)
    (blocker / "notes.txt").write_text("not a tmkt run: train-tmkt refuses to write here\n")
    jobs = submit_sweep(world, runs)
    report = world.cluster.wait_for(jobs["report"], {"COMPLETED", "FAILED", "CANCELLED"},
                                    JOB_TIMEOUT_S)
    assert report["JobState"] == "COMPLETED", report
    state = {f"{name} {task}": world.cluster.job(f"{jobs[name]}_{task}")
             for name in ("array", "eval") for task in ("0", "1")}
    assert state["array 0"]["JobState"] == "FAILED", state["array 0"]
    assert (state["eval 0"]["JobState"], state["eval 0"]["Reason"]) == (
        "CANCELLED", "DependencyNeverSatisfied"), state["eval 0"]
    assert state["array 1"]["JobState"] == state["eval 1"]["JobState"] == "COMPLETED", state
    assert read_manifest(sweep_run(world, runs, "kt").parent / "eval")["status"] == "complete"
    assert (runs / "report" / "report.md").is_file()


SWEEP_SETS = set_args({**PREPARE_SETS, **TRAIN_SETS, "train.max_steps": 20})


def submit_sweep(world: World, runs: Path) -> dict[str, str]:
    """``tmkt sweep --slurm`` of event_only and kt on digits, at half the recordings, seed 7:
    the job ids it printed, by name."""
    proc = world.cluster.run(
        sys.executable, "-m", "tmkt_cli", "sweep", str(REPO / "recipes" / "digits"),
        "--methods", "event_only", "kt", "--fractions", "0.5", "--seeds", "7", "--runs",
        str(runs), "--slurm", *SWEEP_SETS, "--set", f"paths.dataset={world.work / 'prepared'}",
        cwd=world.work, env={**world.env, **PIPELINE_ENV})
    jobs = dict(re.findall(r"^(\w+)\s+job (\d+)", proc.stdout, flags=re.M))
    assert set(jobs) == {"prepare", "array", "eval", "report"}, proc.stdout
    return jobs


def sweep_run(world: World, runs: Path, method: str) -> Path:
    """The training folder of ``method`` in :func:`submit_sweep`'s grid, as ``tmkt paths``
    says."""
    task = ["--set", "seed=7", "--set", "data.event_fraction=0.5", "--set", f"paths.runs={runs}",
            *SWEEP_SETS, "--set", f"paths.dataset={world.work / 'prepared'}"]
    return world.folder(REPO / "recipes" / "digits" / f"{method}.yaml", task, "train-tmkt")


# --------------------------------------------------------------------------------------------
# Several processes per job
# --------------------------------------------------------------------------------------------

@pytest.mark.slurm
def test_srun_two_tasks_train_like_one_process(world):
    """Two srun tasks become two torch.distributed ranks (gloo) from SLURM's variables alone
    (tmkt_cli/train/runtime.py). The toy network has no BatchNorm: the averaged gradient of two
    halves is the global batch's, so the weights agree with one process up to float32
    summation order (1e-6; BatchNorm would normalise each half with its own statistics)."""
    env = {**world.env, "PYTHONPATH": f"{REPO}{os.pathsep}{TOY.parent}"}
    single, multi = world.work / "toy-single", world.work / "toy-multi"
    subprocess.run([sys.executable, str(TOY), "stage", str(single)], env=env, check=True,
                   capture_output=True, timeout=300)
    out = world.cluster.run(
        "sbatch", "--parsable", "--ntasks=2", "--cpus-per-task=1", "--mem=1G", "--time=10",
        f"--output={world.work}/slurm-toy-%j.out",
        f"--wrap=srun {sys.executable} {TOY} stage {multi}", cwd=world.work, env=env).stdout
    world.finish(out.strip())
    a = load_checkpoint(single / LAST)["model"]
    b = load_checkpoint(multi / LAST)["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-6)
    assert logged_steps(multi) == list(range(1, 7))  # rank 0 alone wrote the metrics
    assert [r["samples"] for r in read_metrics(multi) if r["kind"] == "eval"][-1] == 30


@pytest.mark.slurm
def test_two_task_job_preempted_resumes_like_an_uninterrupted_two_process_run(world):
    """``stage.sbatch`` with two tasks: both ranks get the stop signal, stop at the same step,
    the job is requeued and resumes. The digitsnet has BatchNorm, so the reference is two
    processes as well (started directly, torchrun-style variables), not one: then the result
    must be bitwise the same."""
    steps = 60
    extra = {"train.max_steps": steps}
    reference = world.sets(runs=world.work / "two-rank-reference", **extra)
    port = str(free_port())
    procs = [subprocess.Popen(
        [sys.executable, "-m", "tmkt_cli", "train-tmkt", str(TMKT_RECIPE), *reference],
        env={**world.env, "WORLD_SIZE": "2", "RANK": str(r), "LOCAL_RANK": str(r),
             "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port},
        cwd=world.work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for r in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]

    sets = world.sets(runs=world.work / "two-rank-preempted", **extra)
    folder = world.folder(TMKT_RECIPE, sets, "train-tmkt")
    job = world.sbatch("train-tmkt", TMKT_RECIPE, sets, "--ntasks-per-node=2")
    world.preempt_when(job, lambda: logged_steps(folder)[:1] == [5])
    info = world.finish(job)
    log = assert_requeued_and_resumed(world, job, info)
    assert "2 task(s)" in log, log
    # both ranks checkpointed at the same step (rank 1 writes nothing, but says so) and exited 3
    assert len(set(re.findall(r"checkpoint saved at step (\d+)", log))) == 1, log
    # srun reports the two ranks one by one or as a range ("tasks 0-1: Exited ...")
    assert "tasks 0-1: Exited with exit code 3" in log or \
        all(f"task {r}: Exited with exit code 3" in log for r in (0, 1)), log
    assert_same_weights(folder, world.folder(TMKT_RECIPE, reference, "train-tmkt"), steps)


# --------------------------------------------------------------------------------------------
# Hostile values: every script refuses them before it runs anything (no SLURM needed)
# --------------------------------------------------------------------------------------------

SWEEP = REPO / "slurm" / "sweep.sh"
DEMO = REPO / "tools" / "demo.sh"
FIDELITY = REPO / "tools" / "fidelity_digits.sh"
HOSTILE = ("a[$(touch {marker})]", "$(touch {marker})", "`touch {marker}`", "abc", "")
"""An arithmetic subscript that runs a command, command substitutions, text, nothing."""
RESOURCES = ("GPUS", "TASKS", "CPUS", "MEM", "TIME", "SIGNAL_LEAD", "PREP_CPUS", "PREP_TIME",
             "EVAL_TIME")
FAKE_PATHS = ("dataset=prepared/x\ntrain-tmkt=runs/x/seed42/train-tmkt\n"
              "eval=runs/x/seed42/eval\ncam=runs/x/seed42/cam\neval_source=train-tmkt")


@dataclass
class Fakes:
    """sbatch, srun, scontrol and tmkt first on PATH, each logging its calls (sbatch answers
    a job id, `tmkt paths` a run's folders), in a virtual environment (TMKT_VENV) of its own."""

    folder: Path

    def __post_init__(self) -> None:
        bin_ = self.folder / "bin"
        bin_.mkdir(parents=True)
        (bin_ / "activate").write_text("")
        answers = {"sbatch": "echo 100", "tmkt": f'[ "$1" != paths ] || printf "{FAKE_PATHS}\\n"'}
        for tool in ("sbatch", "srun", "scontrol", "tmkt"):
            (bin_ / tool).write_text(f'#!/bin/bash\nprintf "{tool} %s\\n" "$*" >>"$FAKE_LOG"\n'
                                     f'{answers.get(tool, "")}\n')
            (bin_ / tool).chmod(0o755)

    @property
    def log(self) -> Path:
        return self.folder / "calls.log"

    @property
    def marker(self) -> Path:
        return self.folder / "PWNED"

    def run(self, script: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
        clean = {k: v for k, v in os.environ.items()
                 if not k.startswith(("SLURM_", "TMKT_")) and k not in (
                     *RESOURCES, "NODES", "CAM_TIME", "MAX_PARALLEL", "MASTER_PORT", "TMKT")}
        return subprocess.run(
            ["bash", str(script), *args], cwd=self.folder, capture_output=True, text=True,
            timeout=60, env={**clean, "PATH": f"{self.folder / 'bin'}:{os.environ['PATH']}",
                             "FAKE_LOG": str(self.log), "TMKT_VENV": str(self.folder),
                             "TMKT": str(self.folder / "bin" / "tmkt"), **env})

    def assert_refused(self, proc: subprocess.CompletedProcess, pattern: str) -> None:
        """Exit code 2 with one line matching ``pattern``; nothing called, nothing run."""
        lines = (proc.stdout + proc.stderr).strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, (proc.returncode, lines)
        assert re.search(pattern, lines[0]), lines[0]
        assert not self.log.exists(), self.log.read_text()
        assert not self.marker.exists(), "a value was run as a command"


def hostile(fakes: Fakes) -> list[str]:
    return [v.format(marker=fakes.marker) for v in HOSTILE]


@pytest.mark.parametrize("name", [*RESOURCES, "NODES", "CAM_TIME"])
def test_pipeline_refuses_a_resource_that_is_not_one(name, tmp_path):
    fakes = Fakes(tmp_path)
    for value in hostile(fakes):
        proc = fakes.run(PIPELINE, "recipe.yaml", **{name: value})
        fakes.assert_refused(proc, rf"^pipeline\.sh: {name}=.*: expected ")


def test_pipeline_submits_with_values_that_are_resources(tmp_path):
    fakes = Fakes(tmp_path)
    proc = fakes.run(PIPELINE, "recipe.yaml", GPUS="0", MEM="4000M", TIME="1-12:00:00",
                     NODES="2", CAM_TIME="UNLIMITED")
    assert proc.returncode == 0, proc.stderr
    calls = [c for c in fakes.log.read_text().splitlines() if c.startswith("sbatch ")]
    assert len(calls) == 4  # prepare, train-tmkt, eval, cam
    assert "--gpus-per-node=0" in calls[1] and "--time=1-12:00:00" in calls[1]
    assert "--nodes=2" in calls[1] and "--mem=4000M" in calls[0]
    assert "--time=UNLIMITED" in calls[3]
    assert fakes.run(PIPELINE).returncode == 2  # no recipe: the usage line


def sweep_files(folder: Path, line: str = "train-tmkt r.yaml --set seed=1 --set "
                                          "data.event_fraction=0.05") -> list[str]:
    (folder / "runs").mkdir(exist_ok=True)
    for name in ("prepare", "tasks"):
        (folder / f"{name}.tasks").write_text(
            f"{'prepare r.yaml' if name == 'prepare' else line}\n")
    return [str(folder / "runs"), str(folder / "prepare.tasks"), "-",
            str(folder / "tasks.tasks"), "-"]


@pytest.mark.parametrize("name", [*RESOURCES, "MAX_PARALLEL"])
def test_sweep_refuses_a_resource_that_is_not_one(name, tmp_path):
    fakes = Fakes(tmp_path)
    args = sweep_files(tmp_path)
    for value in hostile(fakes):
        if name == "MAX_PARALLEL" and value == "":
            continue  # empty: no cap on the tasks running at once
        proc = fakes.run(SWEEP, *args, **{name: value})
        fakes.assert_refused(proc, rf"^sweep\.sh: {name}=.*: expected ")


@pytest.mark.parametrize("line,pattern", [
    ("train-tmkt r.yaml --set seed=abc", r"line 1: seed: expected a non-negative integer"),
    ("train-tmkt r.yaml --set seed=$(touch {marker})", r"seed: expected a non-negative integer"),
    ("train-tmkt r.yaml --set data.event_fraction=1.5", r"expected a fraction in \(0, 1\]"),
    ("train-tmkt r.yaml --set data.event_fraction=0", r"expected a fraction in \(0, 1\]"),
    ("train-tmkt r.yaml --set data.event_fraction=", r"expected a fraction in \(0, 1\]"),
    ("$(touch {marker}) r.yaml", r"line 1: expected a tmkt stage first"),
    ("", r"line 1: expected a tmkt stage first"),
])
def test_sweep_refuses_a_task_file_that_is_not_one(line, pattern, tmp_path):
    fakes = Fakes(tmp_path)
    proc = fakes.run(SWEEP, *sweep_files(tmp_path, line.format(marker=fakes.marker)))
    fakes.assert_refused(proc, pattern)


def test_sweep_refuses_arguments_that_are_not_a_sweep(tmp_path):
    fakes = Fakes(tmp_path)
    args = sweep_files(tmp_path)
    fakes.assert_refused(fakes.run(SWEEP, *args[:4]), r"called by 'tmkt sweep")
    fakes.assert_refused(fakes.run(SWEEP, str(tmp_path / "absent"), *args[1:]),
                         r"absent: not a folder")
    fakes.assert_refused(fakes.run(SWEEP, args[0], str(fakes.marker), *args[2:]),
                         r"PWNED: no such task file")


def test_sweep_quotes_the_runs_folder_for_the_report_job(tmp_path):
    """The report job's command (sbatch --wrap) is run by sh: the runs folder is one quoted
    word there, whatever it holds."""
    fakes = Fakes(tmp_path)
    args = sweep_files(tmp_path)
    odd = tmp_path / "it's $(touch PWNED)"
    Path(args[0]).rename(odd)
    proc = fakes.run(SWEEP, str(odd), *args[1:])
    assert proc.returncode == 0, proc.stderr
    wrap = fakes.log.read_text().splitlines()[-1].split("--wrap=", 1)[1]
    fakes.log.unlink()
    subprocess.run(["sh", "-c", wrap], cwd=tmp_path, check=True, env={
        **os.environ, "FAKE_LOG": str(fakes.log)})  # as the job runs it: the fake tmkt
    assert not fakes.marker.exists()
    assert fakes.log.read_text() == f"tmkt report --out {odd}/report\n"


STAGE_VARIABLES = ("SLURM_JOB_ID", "SLURM_RESTART_COUNT", "SLURM_CPUS_PER_TASK", "SLURM_NTASKS",
                   "MASTER_PORT")


@pytest.mark.parametrize("name", STAGE_VARIABLES)
def test_stage_job_refuses_a_slurm_variable_that_is_not_a_number(name, tmp_path):
    fakes = Fakes(tmp_path)
    for value in hostile(fakes):
        proc = fakes.run(STAGE_SBATCH, "train-tmkt", "recipe.yaml", **{name: value})
        fakes.assert_refused(proc, rf"^tmkt job: {name}=.*: expected a non-negative integer")


def test_stage_job_refuses_a_task_line_or_stage_that_is_not_one(tmp_path):
    fakes = Fakes(tmp_path)
    tasks = tmp_path / "x.tasks"
    tasks.write_text("train-tmkt r.yaml\n")
    for value in hostile(fakes):
        proc = fakes.run(STAGE_SBATCH, "--tasks", str(tasks), SLURM_ARRAY_TASK_ID=value)
        fakes.assert_refused(proc, r"SLURM_ARRAY_TASK_ID|--tasks needs a job array")
        proc = fakes.run(STAGE_SBATCH, value, "recipe.yaml")
        fakes.assert_refused(proc, r"^tmkt job: STAGE .*: expected prepare, pretrain-ann")
    fakes.assert_refused(fakes.run(STAGE_SBATCH), r"^tmkt job: usage: sbatch slurm/stage")
    fakes.assert_refused(fakes.run(STAGE_SBATCH, "--tasks"), r"usage: sbatch --array=0-N")


def test_stage_job_runs_with_numbers(tmp_path):
    fakes = Fakes(tmp_path)
    proc = fakes.run(STAGE_SBATCH, "train-tmkt", "recipe.yaml", SLURM_JOB_ID="20007",
                     SLURM_RESTART_COUNT="08")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "tmkt job 20007: train-tmkt recipe.yaml: run 9 on" in proc.stdout
    assert "srun --kill-on-bad-exit=0 python -m tmkt_cli train-tmkt recipe.yaml" in \
        fakes.log.read_text()


def test_demo_refuses_a_job_count_that_is_not_one(tmp_path):
    fakes = Fakes(tmp_path)
    for value in hostile(fakes):
        fakes.assert_refused(fakes.run(DEMO, TMKT_DEMO_JOBS=value),
                             r"^demo: TMKT_DEMO_JOBS=.*: expected 1")


def test_fidelity_script_refuses_seeds_and_programs_that_are_not_ones(tmp_path):
    fakes = Fakes(tmp_path)
    for value in hostile(fakes):
        fakes.assert_refused(fakes.run(FIDELITY, "default", "42", value),
                             r"^fidelity_digits: seed .*: expected a non-negative integer")
        fakes.assert_refused(fakes.run(FIDELITY, value, "42"), r"unknown variant")
        fakes.assert_refused(fakes.run(FIDELITY, "default", "42", TMKT=value),
                             r"^fidelity_digits: TMKT=.*: not an executable file")
    fakes.assert_refused(fakes.run(FIDELITY, "default"), r"usage: tools/fidelity_digits\.sh")

"""The SLURM scripts on a real single-node SLURM (``make test-slurm``; CI runs it).

Every job goes through ``slurm/stage.sbatch``, ``slurm/pipeline.sh`` or ``tmkt sweep --slurm``
as a user would submit it, on the embedded digits data at tiny settings (T=4, 8x8 frames, one
emulated recording per image, a few hundred optimizer steps of a digitsnet), with the resources
overridden for a 2-CPU node without GPUs. Preemption is ``scancel --signal=USR1 --batch`` (what
SLURM sends before a time limit with ``--signal=B:USR1@N``); a job stopped that way must be
requeued, resume, and end bitwise equal to an uninterrupted run made by calling tmkt directly.
The cluster is brought up by :mod:`slurm_cluster` and the tests are skipped, with the reason,
where it cannot start.
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

from tmkt_cli.artifacts import read_manifest
from tmkt_cli.checkpoints import LAST, load_checkpoint
from tmkt_cli.data.store import FILENAME, PARTIAL_SUFFIX, open_dataset
from tmkt_cli.runlog import read_metrics

sys.path.insert(0, str(Path(__file__).parent))
from slurm_cluster import ClusterUnavailable, SlurmCluster, free_port  # noqa: E402

pytestmark = pytest.mark.slurm

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

def test_srun_two_tasks_train_like_one_process(world):
    """Two srun tasks become two torch.distributed ranks (gloo) from SLURM's variables alone
    (tmkt_cli/runtime.py). The toy network has no BatchNorm: the averaged gradient of two
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

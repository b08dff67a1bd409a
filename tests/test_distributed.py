"""Distributed training: 2 CPU processes (gloo) against one process with the same global
batch. Without BatchNorm the two compute the same averaged gradient, so the weights agree
up to the order of floating-point summation (tolerance 1e-6)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tmkt_cli.runs.artifacts import read_manifest
from tmkt_cli.train import engine

TOY = Path(__file__).parent / "toy.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ENV = {**os.environ, "PYTHONPATH": str(TOY.parent), "OMP_NUM_THREADS": "1"}


def two_ranks(args: list[str]) -> list[str]:
    """Run ``python ARGS`` as ranks 0 and 1 of a gloo group; each rank's stdout."""
    port = free_port()
    procs = [subprocess.Popen(
        [sys.executable, *args],
        env={**ENV, "WORLD_SIZE": "2", "RANK": str(r), "LOCAL_RANK": str(r),
             "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE) for r in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-2000:]
        outs.append(out.decode())
    return outs


def test_two_ranks_match_one_process(tmp_path):
    single = tmp_path / "single"
    subprocess.run([sys.executable, str(TOY), "stage", str(single)], env=ENV, check=True)

    multi = tmp_path / "multi"
    two_ranks([str(TOY), "stage", str(multi)])

    assert read_manifest(multi)["status"] == "complete"
    a = engine.load_checkpoint(single / engine.LAST)["model"]
    b = engine.load_checkpoint(multi / engine.LAST)["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-6)
    # rank 0 alone wrote the folder: one metrics record per step, no duplicates
    steps = [r["step"] for r in engine.read_metrics(multi) if r["kind"] == "train"]
    assert steps == list(range(1, 7))
    # evaluation was sharded and reduced over all 30 test samples
    evals = [r for r in engine.read_metrics(multi) if r["kind"] == "eval"]
    assert evals[-1]["samples"] == 30


def test_ranks_leave_the_process_group_before_the_interpreter_finalises(tmp_path):
    # A gloo group still alive at interpreter exit can abort a rank whose run completed
    # (SIGABRT, "terminate called without an active exception"). atexit handlers run last
    # registered first, so this probe, registered before the stage joins the group, sees
    # the state the interpreter finalises with.
    probe = (
        "import atexit, sys\n"
        "import torch.distributed as dist\n"
        "atexit.register(lambda: print('group alive at exit:', dist.is_initialized()))\n"
        "from pathlib import Path\n"
        "import toy\n"
        "toy.train_via_stage(Path(sys.argv[1]))\n")
    for out in two_ranks(["-c", probe, str(tmp_path / "run")]):
        assert "group alive at exit: False" in out, out[-2000:]


def test_srun_tasks_become_ranks_but_a_batch_script_does_not():
    from tmkt_cli.train.runtime import _adopt_slurm_tasks

    task = {"SLURM_STEP_ID": "0", "SLURM_NTASKS": "4", "SLURM_PROCID": "3",
            "SLURM_LOCALID": "1", "SLURM_JOB_ID": "20007", "SLURM_LAUNCH_NODE_IPADDR": "10.0.0.5"}
    _adopt_slurm_tasks(task)
    assert (task["WORLD_SIZE"], task["RANK"], task["LOCAL_RANK"]) == ("4", "3", "1")
    assert (task["MASTER_ADDR"], task["MASTER_PORT"]) == ("10.0.0.5", "20007")
    # the batch shell of a 4-task job (no step id), one-task steps and torchrun are left alone
    for env in ({"SLURM_NTASKS": "4", "SLURM_PROCID": "0"},
                {"SLURM_STEP_ID": "0", "SLURM_NTASKS": "1", "SLURM_PROCID": "0"},
                {"SLURM_STEP_ID": "0", "SLURM_NTASKS": "4", "SLURM_PROCID": "2",
                 "WORLD_SIZE": "8", "RANK": "5"}):
        before = dict(env)
        _adopt_slurm_tasks(env)
        assert env == before


def test_a_stage_returns_only_when_every_rank_has_finished_it(tmp_path, monkeypatch):
    # The ranks leave a completed stage together (a barrier), so no rank exits, taking the
    # rendezvous store with it, while another still finishes; a stage that failed skips the
    # barrier (its peers may never reach it) and raises.
    import toy
    from rich.console import Console

    from tmkt_cli.config import load_recipe
    from tmkt_cli.errors import TmktError
    from tmkt_cli.stages.common import execute
    from tmkt_cli.train.runtime import DIST

    calls = []
    monkeypatch.setattr(DIST, "barrier", lambda: calls.append("barrier"))
    toy.train_via_stage(tmp_path / "done")
    assert calls == ["barrier"]

    def broken(recipe, run, ui):
        raise TmktError("broken input")

    calls.clear()
    with pytest.raises(TmktError, match="broken input"):
        execute("train-tmkt", load_recipe(None, ["name=toy"]), tmp_path / "failed",
                lambda r: {}, broken, Console(quiet=True))
    assert calls == []


# --------------------------------------------------------------------------------------------
# The distributed environment, checked: one line and exit code 2, never a traceback or a hang
# --------------------------------------------------------------------------------------------

DIGITS = str(Path(__file__).resolve().parent.parent / "recipes" / "digits" / "tmkt.yaml")
HOSTILE = "a[$(touch PWNED)]"


@pytest.mark.parametrize("env,pattern", [
    ({"WORLD_SIZE": "abc"}, r"\$WORLD_SIZE='abc': expected an integer >= 1"),
    ({"WORLD_SIZE": ""}, r"\$WORLD_SIZE='': expected an integer >= 1"),
    ({"WORLD_SIZE": "0"}, r"\$WORLD_SIZE='0': expected an integer >= 1"),
    ({"WORLD_SIZE": "2", "RANK": "-1"}, r"\$RANK='-1': expected an integer >= 0"),
    ({"LOCAL_RANK": "x"}, r"\$LOCAL_RANK='x': expected an integer"),
    ({"LOCAL_WORLD_SIZE": "1", "LOCAL_RANK": "1"}, r"\$LOCAL_RANK=1 is not below "
                                                   r"\$LOCAL_WORLD_SIZE=1"),
    ({"SLURM_STEP_ID": "0", "SLURM_NTASKS": "abc"}, r"\$SLURM_NTASKS='abc': expected an integer"),
    ({"SLURM_STEP_ID": "0", "SLURM_NTASKS": "2", "SLURM_PROCID": "0", "SLURM_JOB_ID": HOSTILE},
     r"\$SLURM_JOB_ID='a\[\$\(touch PWNED\)\]': expected an integer"),
    ({"SLURM_STEP_ID": "0", "SLURM_NTASKS": "2"},
     r"\$SLURM_NTASKS=2 in a SLURM step \(SLURM_STEP_ID is set\) but \$SLURM_PROCID is not set"),
    ({"SLURM_STEP_ID": "0", "SLURM_NTASKS": "2", "SLURM_PROCID": "2"},
     r"but \$SLURM_PROCID is 2: expected a task number below 2"),
    ({"RANK": "1"}, r"\$RANK=1 is set but \$WORLD_SIZE is not \(one process is rank 0\): a "
                    r"distributed run sets RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT"),
    ({"WORLD_SIZE": "2", "RANK": "2"}, r"\$RANK=2 is not below \$WORLD_SIZE=2"),
    ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "99999"},
     r"\$WORLD_SIZE=2 needs the rendezvous in \$MASTER_ADDR and \$MASTER_PORT \(a port "
     r"1-65535\)"),
    ({"WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500",
      "TMKT_RENDEZVOUS_TIMEOUT": "soon"}, r"\$TMKT_RENDEZVOUS_TIMEOUT='soon'"),
], ids=["world-abc", "world-empty", "world-zero", "rank-negative", "local-rank-abc",
        "local-rank-outside", "slurm-ntasks-abc", "slurm-job-id-hostile", "slurm-no-procid",
        "slurm-procid-outside", "rank-alone", "rank-outside", "port-out-of-range",
        "timeout-abc"])
def test_a_distributed_variable_that_is_not_one_is_one_line_and_exit_2(env, pattern, tmp_path,
                                                                        monkeypatch):
    """Before anything is read or written: no traceback, no run folder, no failed manifest,
    and nothing in a value is ever run."""
    from typer.testing import CliRunner

    from tmkt_cli.cli import app

    monkeypatch.chdir(tmp_path)
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "SLURM_STEP_ID",
                 "SLURM_NTASKS", "SLURM_PROCID", "SLURM_JOB_ID", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(app, ["train-tmkt", DIGITS, "--set", f"paths.runs={tmp_path}/runs"],
                                env=env)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1, (result.output, result.exception)
    assert re.search(pattern, errors[0]), errors[0]
    assert not (tmp_path / "runs").exists() and not list(tmp_path.rglob("PWNED"))
    assert "WORLD_SIZE" not in os.environ or "WORLD_SIZE" in env  # nothing adopted half way


def test_a_rank_started_alone_fails_at_the_rendezvous_within_its_timeout(tmp_path):
    """``SLURM_STEP_ID=0 SLURM_NTASKS=2`` with one process started: it used to wait 30 minutes
    in silence for a peer that never comes; it now says what to check within the rendezvous
    timeout (TMKT_RENDEZVOUS_TIMEOUT, 3 s here; 45 s by default, under a minute)."""
    from tmkt_cli.train.runtime import RENDEZVOUS_TIMEOUT_S

    assert RENDEZVOUS_TIMEOUT_S <= 50  # with start-up, a lone rank fails within a minute
    env = {k: v for k, v in ENV.items() if k not in ("WORLD_SIZE", "RANK", "MASTER_ADDR")}
    env.update(SLURM_STEP_ID="0", SLURM_NTASKS="2", SLURM_PROCID="0", SLURM_JOB_ID="7",
               MASTER_PORT=str(free_port()), TMKT_RENDEZVOUS_TIMEOUT="3")
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "tmkt_cli", "train-tmkt", DIGITS, "--set",
                           f"paths.runs={tmp_path}/runs"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-2000:]
    assert re.search(r"rank 0 of 2 \(from \$SLURM_NTASKS\): the rendezvous at 127\.0\.0\.1:\d+ "
                     r"failed within 3 s .*check that every rank was started", errors[0])
    assert time.monotonic() - start < 60 and not (tmp_path / "runs").exists()

"""The training engine: checkpoints, bitwise resume after SIGKILL, logs, guards, signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tmkt_cli.errors import TmktError
from tmkt_cli.runs.artifacts import read_manifest
from tmkt_cli.train import engine

sys.path.insert(0, str(Path(__file__).parent))
import toy  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}


def weights(folder: Path) -> dict:
    return engine.load_checkpoint(folder / engine.LAST)["model"]


def assert_bitwise_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ref") / "run"
    toy.train(folder)
    return folder


def test_uninterrupted_run_writes_everything(reference):
    m = read_manifest(reference)
    assert m["status"] == "complete"
    assert (reference / engine.LAST).exists() and (reference / engine.BEST).exists()
    recs = engine.read_metrics(reference)
    kinds = {r["kind"] for r in recs}
    assert {"train", "eval", "grad_noise"} <= kinds
    evals = [r for r in recs if r["kind"] == "eval"]
    assert [r["epoch"] for r in evals] == [1, 2, 3]
    assert evals[-1]["acc"] > 0.6  # the blobs are separable
    steps = [r["step"] for r in recs if r["kind"] == "train"]
    assert steps == sorted(steps) and steps[-1] == 18  # 96 / 16 = 6 steps x 3 epochs
    noise = [r for r in recs if r["kind"] == "grad_noise"]
    assert all(r["grad_noise_trace"] >= 0 for r in noise)
    state = engine.load_checkpoint(reference / engine.LAST)
    assert state["loop"]["step"] == 18 and state["model_info"] == {"kind": "toy"}


@pytest.mark.parametrize("kill_at", [1, 5, 6, 7, 13, 18])
def test_sigkill_then_resume_is_bitwise_equal(reference, tmp_path, kill_at):
    folder = tmp_path / "run"
    proc = subprocess.run([sys.executable, str(Path(toy.__file__)), str(folder), str(kill_at)],
                          env=ENV)
    assert proc.returncode == -signal.SIGKILL
    assert read_manifest(folder)["status"] == "running"
    proc = subprocess.run([sys.executable, str(Path(toy.__file__)), str(folder), "-1"], env=ENV)
    assert proc.returncode == 0
    assert read_manifest(folder)["status"] == "complete"
    assert_bitwise_equal(weights(folder), weights(reference))
    # the metrics log has no duplicated steps after the resume
    train_steps = [r["step"] for r in engine.read_metrics(folder) if r["kind"] == "train"]
    assert train_steps == list(range(1, 19))


def test_non_finite_loss_stops_with_step_and_keeps_checkpoint(tmp_path):
    folder = tmp_path / "run"
    with pytest.raises(TmktError, match=r"non-finite loss .* at step 8 \(epoch 2\).*last\.pt"):
        toy.train(folder, nan_at=8)
    m = read_manifest(folder)
    assert m["status"] == "failed" and "non-finite" in m["error"]
    state = engine.load_checkpoint(folder / engine.LAST)
    assert state["loop"]["step"] == 8  # the last good step
    assert all(torch.isfinite(v).all() for v in state["model"].values()
               if v.is_floating_point())


def test_non_finite_loss_between_log_points_is_caught_without_a_checkpoint(tmp_path):
    """The guard reads the device flag at the next log point (step 10 here): the bad step's
    update is skipped, no checkpoint is written after it, and the error names its step."""
    folder = tmp_path / "run"
    with pytest.raises(TmktError, match=r"non-finite loss or gradient \(loss nan\) at step 8 "
                                        r"\(epoch 2\).*stopped at step 10.*last\.pt"):
        toy.train(folder, nan_at=8, log_every=5, checkpoint_every=0)
    state = engine.load_checkpoint(folder / engine.LAST)
    assert state["loop"]["step"] == 6  # the end of epoch 1, before the bad step
    train_steps = [r["step"] for r in engine.read_metrics(folder) if r["kind"] == "train"]
    assert train_steps == [5]  # nothing logged from the bad step on


def test_guard_skips_the_update_on_the_device():
    """A non-finite gradient leaves weights, AdamW's moments and its step count as they were
    (the fused optimizer reads ``found_inf``); a finite one updates them."""
    from tmkt_cli.config import TrainConfig

    model = torch.nn.Linear(3, 2)
    cfg = TrainConfig(lr=0.1, lr_scaling=False, warmup_epochs=0)
    opt = engine.build_optimization(model, cfg, 10, 0, torch.device("cpu"))
    guard = engine.NonFiniteGuard(torch.device("cpu"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for bad, step in ((True, 0), (False, 1)):
        loss = model(torch.ones(1, 3)).sum() * (float("nan") if bad else 1.0)
        opt.optimizer.zero_grad()
        loss.backward()
        guard.check(loss, opt.params, step)
        opt.optimizer.found_inf = guard.found_inf
        opt.optimizer.step()
        if bad:
            assert float(guard.found_inf) == 1.0
            assert_bitwise_equal(model.state_dict(), before)
            assert all(float(s["step"]) == 0 for s in opt.optimizer.state.values())
    assert float(guard.found_inf) == 0.0 and int(guard.first_step) == 0
    assert not torch.equal(model.weight, before["weight"])
    assert all(float(s["step"]) == 1 for s in opt.optimizer.state.values())


def test_num_workers_auto():
    from tmkt_cli.train.runtime import resolve_workers

    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert resolve_workers("auto", cpu, cpus=16) == 0
    assert resolve_workers("auto", cuda, cpus=16, processes=1) == 8
    assert resolve_workers("auto", cuda, cpus=16, processes=4) == 3
    assert resolve_workers("auto", cuda, cpus=1, processes=1) == 0
    assert resolve_workers(3, cpu) == 3


def test_one_loader_per_fit_reseeded_per_epoch_matches_fresh_samplers():
    """The sampler reseeded in place yields what a sampler built for that epoch yields."""
    from tmkt_cli.data.sampling import KeyedBatchSampler

    idx = np.arange(40)
    kept = KeyedBatchSampler(idx, 8, seed=3, epoch=0, start_batch=2)
    first = list(kept)
    assert first == list(KeyedBatchSampler(idx, 8, seed=3, epoch=0, start_batch=2))
    for epoch, start in ((1, 0), (2, 3)):
        kept.set_epoch(epoch, start_batch=start)
        assert list(kept) == list(KeyedBatchSampler(idx, 8, seed=3, epoch=epoch,
                                                    start_batch=start))
        assert len(kept) == 5 - start


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_stop_signal_checkpoints_and_rerun_matches(reference, tmp_path, sig):
    """SLURM preemption: the signal makes the stage checkpoint and exit; the rerun (the
    requeued job) ends with the weights of an uninterrupted run."""
    folder = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(Path(toy.__file__)), str(folder), "-1", "0.15"],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and not (folder / engine.LAST).exists():
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and b"StopRequested" in err
    assert read_manifest(folder)["status"] == "interrupted"
    stopped_at = engine.load_checkpoint(folder / engine.LAST)["loop"]["step"]
    assert 0 < stopped_at < 18
    proc = subprocess.run([sys.executable, str(Path(toy.__file__)), str(folder), "-1"], env=ENV)
    assert proc.returncode == 0 and read_manifest(folder)["status"] == "complete"
    assert_bitwise_equal(weights(folder), weights(reference))


def test_max_steps_and_resume_never(tmp_path):
    folder = tmp_path / "run"
    _, result = toy.train(folder, max_steps=4)
    assert result.steps == 4
    assert engine.load_checkpoint(folder / engine.LAST)["loop"]["step"] == 4


def test_load_checkpoint_refuses_code_and_foreign_files(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": engine.CHECKPOINT_FORMAT, "x": Evil()}, evil)
    with pytest.raises(TmktError, match="refused to load"):
        engine.load_checkpoint(evil)
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, plain)
    with pytest.raises(TmktError, match="not a tmkt checkpoint"):
        engine.load_checkpoint(plain)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(TmktError, match="not a readable checkpoint"):
        engine.load_checkpoint(junk)
    with pytest.raises(TmktError, match="not found"):
        engine.load_checkpoint(tmp_path / "missing.pt")


def test_warmup_cosine_schedule():
    from tmkt_cli.methods.schedules import warmup_cosine

    f = [warmup_cosine(s, 10, 2, 0.1) for s in range(10)]
    assert f[0] == 0.5 and f[1] == 1.0
    decay = f[2:]
    assert f[2] == pytest.approx(1.0) and f[-1] > 0.1
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False))
    assert warmup_cosine(10, 10, 2, 0.1) == pytest.approx(0.1)


def test_lr_scaling_rule():
    from tmkt_cli.config import TrainConfig
    assert engine.lr_for(TrainConfig(lr=5e-3, batch_size=120)) == pytest.approx(5e-3 * 120 / 1024)
    assert engine.lr_for(TrainConfig(lr=1e-3, batch_size=64, lr_scaling=False)) == 1e-3


def test_metrics_log_drops_records_after_resume_point(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(
        "\n".join(json.dumps({"kind": "train", "step": s}) for s in range(1, 6)) + "\n{cut")
    log = engine.MetricsLog(tmp_path, resume_step=3, tensorboard=False)
    log.close()
    assert [r["step"] for r in engine.read_metrics(tmp_path)] == [1, 2, 3]


@pytest.mark.parametrize("switch", ["train.amp=bf16", "train.channels_last=true",
                                    "train.compile=true"])
def test_speed_switches_train_on_cpu(tmp_path, switch):
    """Each speed switch runs a few real steps on the CPU and gives finite weights."""
    from rich.console import Console

    from tmkt_cli.config import load_recipe
    from tmkt_cli.runs.artifacts import open_stage

    recipe = load_recipe(None, [switch, "train.max_steps=3", "train.batch_size=16",
                                "train.device=cpu", "train.warmup_epochs=0"])
    task = toy.ToyTask()
    run = open_stage(tmp_path / "run", "train-tmkt", "", {}, "h", {})
    with run:
        run.start()
        result = engine.fit(task, toy.KeyedBlobs(), toy.KeyedBlobs(n=30, seed=1),
                            list(range(96)), recipe.train, seed=1, run=run,
                            ui=Console(quiet=True), model_info={}, tensorboard=False)
    assert result.steps == 3
    state = engine.load_checkpoint(tmp_path / "run" / engine.LAST)["model"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    assert set(state) == set(toy.ToyTask().model.state_dict())


def test_an_epoch_budget_with_a_floor_of_steps_grows_with_the_data():
    """train.min_steps: a budget in epochs never below the floor (issue 25): a split of one
    batch trains the floor's steps, a large split its epochs; max_steps still caps."""
    from tmkt_cli.config import TrainConfig

    cfg = TrainConfig(epochs=100, min_steps=600, batch_size=64, warmup_steps=30)
    assert engine.step_budget(cfg, 40) == (1, 600, 30)  # 1% of digits: one batch
    assert engine.step_budget(cfg, 194) == (3, 600, 30)  # 5%: 300 steps of epochs < floor
    assert engine.step_budget(cfg, 776) == (12, 1200, 30)  # 20%: the epochs exceed it
    capped = TrainConfig(epochs=100, min_steps=600, max_steps=900, batch_size=64)
    assert engine.step_budget(capped, 776)[1] == 900
    assert engine.step_budget(TrainConfig(epochs=0, max_steps=600), 776)[1] == 600


def test_fixed_step_budget_and_eval_every_steps(tmp_path):
    """epochs: 0 trains for exactly max_steps (crossing epoch boundaries); evaluations come
    every eval_every_steps and at the end."""
    from rich.console import Console

    from tmkt_cli.config import TrainConfig
    from tmkt_cli.runs.artifacts import open_stage

    cfg = TrainConfig(epochs=0, max_steps=10, eval_every_steps=4, batch_size=16, lr=0.05,
                      lr_scaling=False, warmup_epochs=0, device="cpu", log_every_steps=1)
    run = open_stage(tmp_path / "run", "train-tmkt", "", {}, "h", {})
    with run:
        run.start()
        result = engine.fit(toy.ToyTask(), toy.KeyedBlobs(), toy.KeyedBlobs(n=30, seed=1),
                            list(range(96)), cfg, seed=3, run=run, ui=Console(quiet=True),
                            model_info={}, tensorboard=False)
    assert result.steps == 10
    evals = [(r["step"], r["epoch"]) for r in engine.read_metrics(tmp_path / "run")
             if r["kind"] == "eval"]
    assert evals == [(4, 1), (8, 2), (10, 2)]  # 6 steps per epoch
    with pytest.raises(TmktError, match="both 0"):
        engine.fit(toy.ToyTask(), toy.KeyedBlobs(), toy.KeyedBlobs(n=30, seed=1),
                   list(range(96)), TrainConfig(epochs=0, max_steps=0), seed=3, run=run,
                   ui=Console(quiet=True), model_info={}, tensorboard=False)


# --------------------------------------------------------------------------------------------
# Plain progress lines (train.progress_every_s): what a piped run or a SLURM log shows
# --------------------------------------------------------------------------------------------

PROGRESS_LINE = (r"train-tmkt: step \d+/6 \(\d+%\)  epoch [12]/2  loss (\d+\.\d{4}|-)  "
                 r"[\d,]+ samples/s  ETA \d+:\d\d:\d\d")


def test_piped_training_prints_progress_lines_between_evaluations(tmp_path):
    """Piped (the CLI's output is not a terminal): a line per 1% of the run between the
    evaluation lines, and progress records in metrics.jsonl; the weights are bitwise those of
    the same run without any line."""
    import re

    from test_eval import make_prepared_dataset, toy_recipe_file
    from typer.testing import CliRunner

    from tmkt_cli.cli import app

    make_prepared_dataset(tmp_path / "prepared", n_train=12, n_test=4)
    recipe = toy_recipe_file(tmp_path, "toy-progress")
    outputs, folders = {}, {}
    for name, every in (("lines", 0), ("silent", 1e9)):
        res = CliRunner().invoke(app, [
            "train-tmkt", str(recipe), "--set", "method.name=kt", "--set", "train.epochs=0",
            "--set", "train.max_steps=6", "--set", "train.batch_size=4", "--set",
            "train.device=cpu", "--set", "train.eval_every_steps=3", "--set",
            "train.log_every_steps=2", "--set", f"train.progress_every_s={every}",
            "--set", f"paths.runs={tmp_path / name}"])
        assert res.exit_code == 0, res.output
        outputs[name] = res.output.splitlines()
        folders[name] = tmp_path / name / "toy-progress" / "seed42" / "train-tmkt"
    lines = outputs["lines"]
    evals = [i for i, line in enumerate(lines) if re.fullmatch(r"epoch \d step \d/6: .*", line)]
    progress = [i for i, line in enumerate(lines) if re.fullmatch(PROGRESS_LINE, line)]
    assert len(evals) == 2 and len(progress) == 6, "\n".join(lines)  # 1% of 6 steps: each
    assert progress[0] < evals[0] and any(evals[0] < i < evals[1] for i in progress)
    assert "loss 1." in lines[progress[2]]  # the loss logged at step 2
    records = [r for r in engine.read_metrics(folders["lines"]) if r["kind"] == "progress"]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert {"total_steps", "epoch", "epochs", "loss", "samples_per_s", "eta_s",
            "elapsed_s"} <= set(records[-1]) and records[-1]["eta_s"] == 0
    assert not any(re.fullmatch(PROGRESS_LINE, line) for line in outputs["silent"])
    assert_bitwise_equal(weights(folders["lines"]), weights(folders["silent"]))


def test_no_plain_progress_lines_on_a_terminal(tmp_path):
    """A terminal has the bar; the records are written all the same."""
    from rich.console import Console

    from tmkt_cli.config import TrainConfig
    from tmkt_cli.runs.artifacts import open_stage

    console = Console(force_terminal=True, record=True, width=120)
    cfg = TrainConfig(epochs=1, batch_size=16, lr=0.05, lr_scaling=False, device="cpu",
                      progress_every_s=0)
    run = open_stage(tmp_path / "run", "train-tmkt", "toy: 1\n", {"toy": 1}, "toyhash", {})
    with run:
        run.start()
        engine.fit(toy.ToyTask(), toy.KeyedBlobs(), toy.KeyedBlobs(n=30, seed=1),
                   np.arange(96), cfg, seed=7, run=run, ui=console,
                   model_info={"kind": "toy"}, tensorboard=False)
    assert "samples/s  ETA" not in console.export_text()
    records = engine.read_metrics(tmp_path / "run")
    assert [r["step"] for r in records if r["kind"] == "progress"] == [1, 2, 3, 4, 5, 6]


def test_heartbeat_every_percent_or_every_s_whichever_comes_later():
    from tmkt_cli.train.progress import Heartbeat, clock_time

    now = [0.0]
    beat = Heartbeat(1000, 0, 30.0, clock=lambda: now[0])
    records, lines = {}, []
    for step in range(1, 131):
        now[0] += 1.0 if step <= 100 else 10.0  # 1 s a step, then 10 s a step
        due = beat.beat(step, 8)
        if due:
            records[step] = due[0]
            lines += [step] if due[1] else []
    assert list(records) == list(range(10, 131, 10))  # every 1% of the run
    # 1 s a step: 30 s is later than 1% (10 steps); 10 s a step: 1% is later than 30 s
    assert lines == [30, 60, 90, 110, 120, 130]
    assert records[30]["samples_per_s"] == pytest.approx(8.0)
    assert records[30]["eta_s"] == pytest.approx(970.0)  # 1 s a step so far, 970 steps left
    assert records[110]["samples_per_s"] == pytest.approx(10 * 8 / 100)
    # a resumed run: records at the same steps as an uninterrupted one, the last one too
    resumed = Heartbeat(995, 503, 0.0, clock=lambda: now[0])
    steps = [s for s in range(504, 996) if resumed.beat(s, 8)]
    assert steps[:2] == [510, 520] and steps[-2:] == [990, 995]
    assert clock_time(3723.4) == "1:02:03" and clock_time(-1) == "0:00:00"

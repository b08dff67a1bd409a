"""The one training loop, shared by train-tmkt, pretrain-ann and distill.

A stage hands the engine a :class:`Task` (what one step computes, how to evaluate) plus its
datasets; the engine owns everything else: optimizer and schedule, device and mixed precision,
the keyed sampler, logging (rich progress, metrics.jsonl, TensorBoard), checkpoints (``last``,
``best``, written atomically), resume, the non-finite guard and stop signals.

Resuming is bitwise on the CPU because every random draw is a pure function of
``(seed, epoch, step, index)`` (see data/sampling.py and :class:`StepContext`), and the
checkpoint holds the model, optimizer, scheduler, scaler and loop position.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tmkt_cli import artifacts, recovery
from tmkt_cli.artifacts import StageRun
from tmkt_cli.config import TrainConfig
from tmkt_cli.data.sampling import KeyedBatchSampler, batches_per_epoch
from tmkt_cli.errors import StopRequested, TmktError
from tmkt_cli.methods.schedules import warmup_cosine
from tmkt_cli.runtime import DIST, StopSignal, autocast, seed_everything, seed_worker, select_device

CHECKPOINT_FORMAT = "tmkt-checkpoint"
CHECKPOINT_VERSION = 1
LAST, BEST = "last.pt", "best.pt"
OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
METRICS = "metrics.jsonl"


@dataclass
class StepContext:
    """What a task's training step may depend on besides the batch."""

    step: int
    """Global optimizer step, 0-based."""
    total_steps: int
    epoch: int
    device: torch.device
    seed: int

    @property
    def progress(self) -> float:
        """Fraction of training done before this step, in [0, 1)."""
        return self.step / max(1, self.total_steps)

    def step_seed(self, purpose: int = 0) -> int:
        ss = np.random.SeedSequence([self.seed, 0x7E57, self.step, purpose])
        return int(ss.generate_state(1, dtype=np.uint64)[0] & ((1 << 63) - 1))

    def generator(self, purpose: int = 1) -> torch.Generator:
        """A CPU generator for the method's random draws at this step (a pure function of
        seed, step and purpose, so resumed runs draw the same numbers)."""
        g = torch.Generator()
        g.manual_seed(self.step_seed(purpose))
        return g


class Task(Protocol):
    """What a stage gives the engine."""

    model: nn.Module

    def training_step(self, batch: dict[str, torch.Tensor], ctx: StepContext
                      ) -> dict[str, torch.Tensor]:
        """Return named losses/metrics for one batch; ``loss`` is optimised, every other entry
        is logged (as a float)."""

    def evaluate(self, loader, device: torch.device) -> dict[str, float]:
        """Metrics on the evaluation split; ``acc`` selects the best checkpoint."""


class _StepModule(nn.Module):
    """The whole training step as one module call, so DistributedDataParallel sees a single
    forward per backward even when a method runs two streams through the trunk."""

    def __init__(self, task: Task):
        super().__init__()
        self.model = task.model
        self._task = [task]  # a list keeps the task out of the module tree

    def forward(self, batch: dict, ctx: StepContext) -> dict[str, torch.Tensor]:
        return self._task[0].training_step(batch, ctx)


@dataclass
class FitResult:
    metrics: dict[str, float]
    best: dict[str, float]
    steps: int
    checkpoint: Path
    best_checkpoint: Path


@dataclass
class _Loop:
    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    best_acc: float = -1.0
    best: dict = field(default_factory=dict)
    last_eval: dict = field(default_factory=dict)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
            for k, v in batch.items()}


def lr_for(cfg: TrainConfig) -> float:
    """The peak learning rate: KT's linear scaling rule lr x batch / 1024 when enabled."""
    return cfg.lr * cfg.batch_size / 1024 if cfg.lr_scaling else cfg.lr


def topk_correct(logits: torch.Tensor, y: torch.Tensor, k: int) -> int:
    k = min(k, logits.shape[-1])
    return int((logits.topk(k, dim=-1).indices == y[:, None]).any(-1).sum())


def evaluate_classifier(predict: Callable[[dict], torch.Tensor], loader,
                        device: torch.device) -> dict[str, float]:
    correct = correct5 = n = 0
    loss_sum = 0.0
    for batch in loader:
        batch = {k: (v.to(device) if isinstance(v, torch.Tensor) else v)
                 for k, v in batch.items()}
        logits = predict(batch).float()
        y = batch["label"]
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += topk_correct(logits, y, 1)
        correct5 += topk_correct(logits, y, 5)
        n += len(y)
    return {"acc": correct / max(1, n), "top5": correct5 / max(1, n),
            "loss": loss_sum / max(1, n), "samples": float(n)}


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------

def save_checkpoint(path: Path, state: dict) -> None:
    # Through a Python file: a full disk then surfaces as OSError(ENOSPC) under torch's
    # RuntimeError (torch.save to a path reports only "unexpected pos"), which atomic_path
    # turns into one line.
    with artifacts.atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)


def load_checkpoint(path: str | Path, what: str = "checkpoint") -> dict:
    """Load a tmkt checkpoint safely (``weights_only``: a pickle that would run code is
    refused) and check it is one."""
    path = Path(path)
    if not path.is_file():
        raise TmktError(f"{path}: {what} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for unreadable / unsafe files
        text = str(e)
        if "GLOBAL" in text or "Unsupported global" in text:  # a class/function reference
            raise TmktError(f"{path}: refused to load: the file holds Python objects that "
                            f"would run code (not a plain tmkt checkpoint)") from None
        detail = next((ln.strip() for ln in text.splitlines()
                       if "Unsupported operand" in ln or "error" in ln.lower()), type(e).__name__)
        raise TmktError(f"{path}: not a readable checkpoint ({detail[:120]})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise TmktError(f"{path}: not a tmkt checkpoint")
    if state.get("version") != CHECKPOINT_VERSION:
        raise TmktError(f"{path}: checkpoint version {state.get('version')} is not supported "
                        f"(this tmkt reads version {CHECKPOINT_VERSION})")
    return state


def _rng_state() -> dict:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)),
                      "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                      "cached": float(np_state[4])},
            "python": random.getstate()}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


# --------------------------------------------------------------------------------------------
# Logging
# --------------------------------------------------------------------------------------------

class MetricsLog:
    """``metrics.jsonl`` (one JSON record a line) plus TensorBoard scalars.

    On resume, records written after the checkpoint being resumed are dropped (they will be
    written again), as is a last line cut short by a kill.
    """

    def __init__(self, folder: Path, resume_step: int | None, tensorboard: bool = True):
        self.path = folder / METRICS
        kept = []
        if resume_step is not None and self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if rec.get("step", 0) <= resume_step and not (
                        rec.get("kind") == "eval" and rec.get("step", 0) == resume_step
                        and rec.get("partial")):
                    kept.append(line)
        artifacts.write_text(self.path, "".join(k + "\n" for k in kept))
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(folder / "tensorboard"),
                                        purge_step=resume_step)
            except ImportError:  # tensorboard is optional at run time
                self.tb = None

    def write(self, kind: str, step: int, values: dict[str, Any]) -> None:
        rec = {"kind": kind, "step": step, **values}
        self._file.write(json.dumps(rec) + "\n")
        self._file.flush()
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, int | float) and not isinstance(v, bool):
                    self.tb.add_scalar(f"{kind}/{k}", v, step)

    def close(self) -> None:
        self._file.close()
        if self.tb is not None:
            self.tb.close()


def read_metrics(folder: Path) -> list[dict]:
    path = Path(folder) / METRICS
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


class GradientNoise:
    """Variance of mini-batch gradients over windows of ``window`` steps.

    Reported as the trace of the gradient covariance divided by the squared norm of the mean
    gradient (a scale-free noise-to-signal ratio) and the raw trace. Windows are aligned to
    multiples of ``window`` steps; a window cut by a resume is not reported.
    """

    def __init__(self, window: int):
        self.window = window
        self.count = 0
        self.sum = self.sumsq = None

    def observe(self, model: nn.Module, step: int) -> dict[str, float] | None:
        if not self.window:
            return None
        g = torch.cat([p.grad.detach().float().flatten() for p in model.parameters()
                       if p.grad is not None])
        if step % self.window == 0:
            self.count, self.sum, self.sumsq = 0, torch.zeros_like(g), torch.zeros_like(g)
        if self.sum is None:  # resumed mid-window
            return None
        self.count += 1
        self.sum += g
        self.sumsq += g * g
        if self.count < self.window:
            return None
        mean = self.sum / self.count
        trace = float((self.sumsq / self.count - mean * mean).clamp_min(0).sum())
        signal = float((mean * mean).sum())
        self.sum = None
        return {"grad_noise_trace": trace,
                "grad_noise_ratio": trace / signal if signal > 0 else float("inf")}


class _NullLog:
    """What the non-zero ranks log to: nothing (rank 0 writes the files)."""

    def write(self, kind: str, step: int, values: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def reduce_means(metrics: dict[str, float]) -> dict[str, float]:
    """Combine per-rank evaluation means, weighted by each rank's ``samples``."""
    if not DIST.enabled:
        return metrics
    keys = sorted(k for k in metrics if k != "samples")
    n = metrics.get("samples", 0.0)
    sums = DIST.sum([metrics[k] * n for k in keys] + [n])
    total = sums[-1]
    return {**{k: v / max(total, 1.0) for k, v in zip(keys, sums[:-1], strict=True)},
            "samples": total}


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------

def make_loader(dataset, sampler, num_workers: int, seed: int = 0):
    # A private generator: creating an iterator must not consume the global RNG (which would
    # make a run resumed mid-epoch draw other dropout masks than an uninterrupted one).
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=num_workers,
        worker_init_fn=seed_worker if num_workers else None,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=False, pin_memory=torch.cuda.is_available())


def eval_loader(dataset, batch_size: int, num_workers: int = 0, rank: int = 0,
                world_size: int = 1):
    """Every sample once, in order, including a last batch of one (BN is in eval mode).
    Distributed: rank r takes samples r, r + world_size, ..."""
    mine = list(range(rank, len(dataset), world_size))
    batches = [[(i, i) for i in mine[start:start + batch_size]]
               for start in range(0, len(mine), batch_size)]
    return make_loader(dataset, batches, num_workers)


def fit(task: Task, train_set, eval_set, train_indices: np.ndarray, cfg: TrainConfig, *,
        seed: int, run: StageRun, ui, model_info: dict, num_workers: int = 0,
        on_stop_poll: Callable[[], bool] | None = None, tensorboard: bool = True) -> FitResult:
    """Train ``task.model`` on ``train_set[train_indices]``, evaluating on ``eval_set`` every
    epoch; checkpoints and logs go to ``run.folder``. Resumes from ``last.pt`` when the run's
    decision is ``resume``."""
    folder = run.folder
    seed_everything(seed, cfg.deterministic)
    device = select_device(cfg.device)
    if cfg.sync_bn:
        if device.type != "cuda":
            raise TmktError("train.sync_bn: SyncBatchNorm needs GPUs (torch supports it on "
                            "CUDA only); turn it off on the CPU")
        task.model = nn.SyncBatchNorm.convert_sync_batchnorm(task.model)
    model = task.model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    if cfg.compile:
        model.compile()  # in place: state_dict keys stay those of the plain model
    step_module: nn.Module = _StepModule(task)
    if DIST.enabled:
        step_module = nn.parallel.DistributedDataParallel(
            step_module, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True)  # heads of switched-off components get no grads
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr_for(cfg), weight_decay=cfg.weight_decay)
    steps_per_epoch = batches_per_epoch(len(train_indices), cfg.batch_size)
    if steps_per_epoch == 0:
        raise TmktError(f"the training split has {len(train_indices)} sample(s): too few for "
                        f"a batch (train.batch_size={cfg.batch_size})")
    if cfg.epochs == 0 and cfg.max_steps == 0:
        raise TmktError("train.epochs and train.max_steps are both 0: set one of them")
    total = cfg.epochs * steps_per_epoch if cfg.epochs else cfg.max_steps
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    warmup = cfg.warmup_steps or int(round(cfg.warmup_epochs * steps_per_epoch))
    warmup = min(warmup, max(0, total - 1))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, total, warmup, cfg.min_lr_ratio))
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")

    loop = _Loop()
    last_path, best_path = folder / LAST, folder / BEST
    resume_step = None
    # Rank 0 checks (and repairs) the checkpoints; every rank resumes from its answer.
    state = DIST.broadcast(recovery.resumable_state(
        last_path, best_path, folder / METRICS, model_info, run.config_hash, ui.print)
        if run.decision == "resume" and DIST.is_main else None)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        loop = _Loop(**state["loop"])
        resume_step = loop.step
        ui.print(f"resuming at step {loop.step}/{total} (epoch {loop.epoch + 1})")
    elif run.decision == "resume":
        resume_step = 0  # killed before the first checkpoint: start over, keep nothing
    log = MetricsLog(folder, resume_step, tensorboard=tensorboard) if DIST.is_main \
        else _NullLog()
    noise = GradientNoise(cfg.grad_noise_window)

    def checkpoint(path: Path) -> None:
        if not DIST.is_main:
            return
        save_checkpoint(path, {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "stage": run.stage,
            "model_info": model_info, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "rng": _rng_state(),
            "loop": loop.__dict__, "config_hash": run.config_hash})

    def evaluate_now() -> dict[str, float]:
        model.eval()
        with torch.no_grad(), autocast(device, cfg.amp):
            metrics = task.evaluate(eval_loader(eval_set, cfg.batch_size, num_workers,
                                                DIST.rank, DIST.world_size), device)
        model.train()
        return reduce_means(metrics)

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                        MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=ui,
                        transient=False, disable=not ui.is_terminal and not ui.is_jupyter)
    bar = progress.add_task(run.stage, total=total, completed=loop.step, info="")
    model.train()
    window_t, window_n = time.perf_counter(), 0
    running: dict[str, float] = {}
    batch = None
    try:
        with StopSignal() as stop, progress:
            while loop.step < total:
                sampler = KeyedBatchSampler(train_indices, cfg.batch_size, seed, loop.epoch,
                                            start_batch=loop.batch_in_epoch, rank=DIST.rank,
                                            world_size=DIST.world_size)
                loader = make_loader(train_set, sampler, num_workers, seed + loop.epoch)
                for batch in loader:
                    ctx = StepContext(loop.step, total, loop.epoch, device, seed)
                    # Global RNG users inside the model (dropout) draw from a per-step seed.
                    torch.manual_seed(ctx.step_seed())
                    batch = to_device(batch, device)
                    recovery.check_finite_batch(batch, loop.step, loop.epoch, last_path)
                    with autocast(device, cfg.amp):
                        out = step_module(batch, ctx)
                    loss = out["loss"]
                    if DIST.any(not bool(torch.isfinite(loss.detach()).all())):
                        raise TmktError(
                            f"non-finite loss ({float(loss.detach())}) at step {loop.step} "
                            f"(epoch {loop.epoch + 1}); stopped before the update, the last "
                            f"good checkpoint is {last_path if last_path.exists() else 'none'}"
                            f"; lower train.lr or enable train.grad_clip")
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    if cfg.grad_clip:
                        scaler.unscale_(optimizer)
                        nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                    gn = noise.observe(model, loop.step)
                    scaler.step(optimizer)
                    scaler.update()
                    scheduler.step()
                    loop.step += 1
                    loop.batch_in_epoch += 1
                    n = len(batch["label"])
                    window_n += n
                    running = {k: float(v.detach()) if isinstance(v, torch.Tensor) else v
                               for k, v in out.items()}  # this step's values only
                    if gn:
                        log.write("grad_noise", loop.step, gn)
                    if loop.step % cfg.log_every_steps == 0 or loop.step == total:
                        dt = time.perf_counter() - window_t
                        rate = window_n / dt if dt > 0 else 0.0
                        log.write("train", loop.step, {**running, "epoch": loop.epoch + 1,
                                                       "lr": scheduler.get_last_lr()[0],
                                                       "samples_per_s": rate})
                        window_t, window_n = time.perf_counter(), 0
                        info = f"loss {running['loss']:.3f}"
                        if "acc" in running:
                            info += f" acc {running['acc']:.3f}"
                        progress.update(bar, info=info + f" {rate:.0f} samples/s")
                    progress.update(bar, completed=loop.step)
                    epoch_done = loop.batch_in_epoch >= steps_per_epoch
                    finished = loop.step >= total
                    eval_due = finished or (loop.step % cfg.eval_every_steps == 0
                                            if cfg.eval_every_steps else epoch_done)
                    epoch_label = loop.epoch + 1
                    if epoch_done:
                        loop.epoch += 1
                        loop.batch_in_epoch = 0
                    improved = False
                    if eval_due:
                        metrics = evaluate_now()
                        loop.last_eval = metrics
                        log.write("eval", loop.step, {"epoch": epoch_label, **metrics})
                        ui.print(f"epoch {epoch_label} step {loop.step}/{total}: " + "  ".join(
                            f"{k} {v:.4f}" for k, v in metrics.items()
                            if isinstance(v, float) and k != "samples"))
                        improved = metrics.get("acc", -1.0) > loop.best_acc
                        if improved:
                            loop.best_acc = metrics.get("acc", -1.0)
                            loop.best = {"epoch": epoch_label, "step": loop.step, **metrics}
                    if eval_due or epoch_done or (cfg.checkpoint_every_steps and
                                                  loop.step % cfg.checkpoint_every_steps == 0):
                        checkpoint(last_path)
                        if improved:
                            checkpoint(best_path)
                        run.update(metrics={"step": loop.step, "epoch": loop.epoch,
                                            "last": loop.last_eval, "best": loop.best})
                    if DIST.any(bool(stop.requested) or bool(on_stop_poll and on_stop_poll())):
                        checkpoint(last_path)
                        raise StopRequested(f"signal {stop.requested}: checkpoint saved at step "
                                            f"{loop.step}; run the same command to resume")
                    if finished or epoch_done:
                        break
    except OUT_OF_MEMORY as e:
        raise recovery.out_of_memory(e, cfg.batch_size, batch,
                                     sum(p.numel() for p in params), last_path) from None
    finally:
        log.close()
    return FitResult(metrics=loop.last_eval, best=loop.best, steps=loop.step,
                     checkpoint=last_path, best_checkpoint=best_path)

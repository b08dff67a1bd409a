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

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tmkt_cli.analysis.heads import head_accuracies
from tmkt_cli.config import TrainConfig
from tmkt_cli.data.sampling import KeyedBatchSampler, batches_per_epoch
from tmkt_cli.errors import StopRequested, TmktError
from tmkt_cli.methods.optim import lr_factor, param_groups
from tmkt_cli.runs import recovery
from tmkt_cli.runs.artifacts import StageRun
from tmkt_cli.runs.checkpoints import (  # noqa: F401  (engine.LAST etc. stay importable)
    BEST,
    BEST_TEST,
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    LAST,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    training_checkpoint,
    weights_only,
)
from tmkt_cli.runs.runlog import METRICS, MetricsLog, read_metrics  # noqa: F401
from tmkt_cli.train.runtime import (
    DIST,
    StopSignal,
    autocast,
    resolve_workers,
    seed_everything,
    seed_worker,
    select_device,
    set_threads,
)

OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


@dataclass
class StepContext:
    """What a task's training step may depend on besides the batch."""

    step: int
    """Global optimizer step, 0-based."""
    total_steps: int
    epoch: int
    device: torch.device
    seed: int
    grad_shares: bool = False
    """Record each loss term's gradient norm on the trunk at this step
    (``train.grad_share_every``)."""

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
    best_test: dict[str, float] = field(default_factory=dict)
    """The evaluation with the best test accuracy (the same as ``best`` without a
    validation split)."""


@dataclass
class _Loop:
    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    best_acc: float = -1.0
    best: dict = field(default_factory=dict)
    last_eval: dict = field(default_factory=dict)
    best_test: dict = field(default_factory=dict)
    head: str = ""
    """The test head ``model.test_head: validation`` chose at the last evaluation ("": no
    choice); checkpoints carry it, so a loaded model predicts with the head it was scored on."""


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
            for k, v in batch.items()}


def lr_for(cfg: TrainConfig) -> float:
    """The peak learning rate: KT's linear scaling rule lr x batch / 1024 when enabled."""
    return cfg.lr * cfg.batch_size / 1024 if cfg.lr_scaling else cfg.lr


def evaluate_classifier(predict: Callable[[dict], torch.Tensor | dict[str, torch.Tensor]],
                        loader, device: torch.device) -> dict[str, float]:
    """Top-1, top-5 and loss of ``predict``'s logits [B, K] over ``loader``. ``predict`` may
    return a dict of logits by head instead, the head that counts first: its figures are
    ``acc``, ``top5``, ``loss``, each other head's top-1 is ``acc_<head>_head``."""
    # Sums stay on the device and are read once at the end (no host sync per batch).
    sums: torch.Tensor | None = None  # per head: loss, top-1, top-5
    names: list[str] = []
    n = 0
    for batch in loader:
        batch = to_device(batch, device)
        out = predict(batch)
        by_head = out if isinstance(out, dict) else {"": out}
        names = list(by_head)
        y = batch["label"]
        rows = []
        for logits in by_head.values():
            logits = logits.float()
            k = min(5, logits.shape[-1])
            hits = logits.topk(k, dim=-1).indices == y[:, None]
            rows.append(torch.stack([F.cross_entropy(logits, y, reduction="sum"),
                                     hits[:, 0].sum(), hits.any(-1).sum()]).double())
        batch_sums = torch.stack(rows)
        sums = batch_sums if sums is None else sums + batch_sums
        n += len(y)
    values = sums.tolist() if sums is not None else [[0.0, 0.0, 0.0]]
    loss_sum, correct, correct5 = values[0]
    metrics = {"acc": correct / max(1, n), "top5": correct5 / max(1, n),
               "loss": loss_sum / max(1, n), "samples": float(n)}
    for name, (_, other_correct, _) in zip(names[1:], values[1:], strict=True):
        metrics[f"acc_{name}_head"] = other_correct / max(1, n)
    return metrics


# --------------------------------------------------------------------------------------------
# Logging
# --------------------------------------------------------------------------------------------

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

PREFETCH_BATCHES = 4
"""Batches each worker loads ahead (torch's default is 2; a GPU step can outrun one)."""


def make_loader(dataset, sampler, num_workers: int, seed: int = 0,
                device: torch.device | None = None):
    """A DataLoader over keyed batches. Built once per fit: with workers they persist across
    epochs (the sampler is reseeded in place, see :meth:`KeyedBatchSampler.set_epoch`), load
    ``PREFETCH_BATCHES`` ahead, and pin memory when the batches go to a GPU."""
    # A private generator: creating an iterator must not consume the global RNG (which would
    # make a run resumed mid-epoch draw other dropout masks than an uninterrupted one).
    cuda = device.type == "cuda" if device is not None else torch.cuda.is_available()
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=num_workers,
        worker_init_fn=seed_worker if num_workers else None,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=num_workers > 0,
        prefetch_factor=PREFETCH_BATCHES if num_workers else None, pin_memory=cuda)


def eval_loader(dataset, batch_size: int, num_workers: int = 0, rank: int = 0,
                world_size: int = 1, device: torch.device | None = None):
    """Every sample once, in order, including a last batch of one (BN is in eval mode).
    Distributed: rank r takes samples r, r + world_size, ..."""
    mine = list(range(rank, len(dataset), world_size))
    batches = [[(i, i) for i in mine[start:start + batch_size]]
               for start in range(0, len(mine), batch_size)]
    return make_loader(dataset, batches, num_workers, device=device)


@dataclass
class Optimization:
    """What the optimizer step needs besides the model."""

    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler


@dataclass
class Fit:
    """One call of :func:`fit`: everything its helpers share, built once."""

    task: Task
    model: nn.Module
    step_module: nn.Module
    opt: Optimization
    cfg: TrainConfig
    device: torch.device
    seed: int
    total: int
    steps_per_epoch: int
    run: StageRun
    ui: Any
    model_info: dict
    eval_set: Any
    num_workers: int
    loop: _Loop = field(default_factory=_Loop)
    log: Any = None
    noise: GradientNoise | None = None
    window_t: float = 0.0
    window_n: int = 0
    """Samples since the last train log (for samples/s)."""
    sample_weights: np.ndarray | None = None
    val_set: Any = None
    loader: Any = None
    """The training DataLoader, built once (its sampler reseeded every epoch)."""
    eval_loaders: dict = field(default_factory=dict)
    guard: NonFiniteGuard | None = None
    heartbeat: Any = None
    """When the next progress record and plain line are due (progress.Heartbeat)."""
    plain_progress: bool = False
    """No bar is drawn (a pipe, a log file): progress goes out as plain lines."""
    last_loss: float | None = None
    """The loss of the last logged step, which progress lines report (no extra sync)."""

    @property
    def last_path(self) -> Path:
        return self.run.folder / LAST

    @property
    def best_path(self) -> Path:
        return self.run.folder / BEST


def fit(task: Task, train_set, eval_set, train_indices: np.ndarray, cfg: TrainConfig, *,
        seed: int, run: StageRun, ui, model_info: dict, num_workers: int = 0,
        on_stop_poll: Callable[[], bool] | None = None, tensorboard: bool = True,
        sample_weights: np.ndarray | None = None, val_set=None) -> FitResult:
    """Train ``task.model`` on ``train_set[train_indices]``, evaluating on ``eval_set`` every
    epoch; checkpoints and logs go to ``run.folder``. Resumes from ``last.pt`` when the run's
    decision is ``resume``. ``sample_weights`` (one per training index): draw each epoch with
    replacement with these probabilities instead of permuting (``data.sampler``).
    ``val_set``: a validation split, evaluated beside ``eval_set``; ``best.pt`` is then the
    best on it and ``best_test.pt`` the best on ``eval_set`` (otherwise ``best.pt`` is the
    best on ``eval_set``)."""
    seed_everything(seed, cfg.deterministic)
    set_threads(cfg.threads)
    device = select_device(cfg.device)
    num_workers = resolve_workers(num_workers, device)
    model, step_module = prepare_model(task, cfg, device)
    steps_per_epoch, total, warmup = step_budget(cfg, len(train_indices))
    f = Fit(task, model, step_module,
            build_optimization(model, cfg, total, warmup, device, steps_per_epoch),
            cfg, device, seed, total, steps_per_epoch, run, ui, model_info, eval_set,
            num_workers, sample_weights=sample_weights, val_set=val_set)
    resume_step = start_or_resume(f)
    f.log = MetricsLog(run.folder, resume_step, tensorboard=tensorboard) if DIST.is_main \
        else _NullLog()
    f.noise = GradientNoise(cfg.grad_noise_window)
    f.guard = NonFiniteGuard(device)
    f.loader = make_loader(
        train_set, KeyedBatchSampler(train_indices, cfg.batch_size, seed, f.loop.epoch,
                                     start_batch=f.loop.batch_in_epoch, rank=DIST.rank,
                                     world_size=DIST.world_size, weights=sample_weights,
                                     drop_last=cfg.drop_last),
        num_workers, seed, device)
    progress, bar = progress_bar(f)
    model.train()
    f.window_t = time.perf_counter()
    try:
        with StopSignal() as stop, progress:
            while f.loop.step < total:
                train_steps(f, progress, bar,
                            lambda: bool(stop.requested) or bool(on_stop_poll and on_stop_poll()),
                            lambda: stop.requested)
    except OUT_OF_MEMORY as e:
        raise recovery.out_of_memory(e, cfg.batch_size, train_set, train_indices,
                                     sum(p.numel() for p in f.opt.params), f.last_path) from None
    finally:
        f.log.close()
    return FitResult(metrics=f.loop.last_eval, best=f.loop.best, steps=f.loop.step,
                     checkpoint=f.last_path, best_checkpoint=f.best_path,
                     best_test=f.loop.best_test or f.loop.best)


def timing_fit(task: Task, cfg: TrainConfig, device: torch.device, total: int) -> Fit:
    """What :func:`train_one_step` needs, without a run folder, logs or loader: for benches
    that time the engine's own step (bench/gpu_check.py). The batches they pass stay on the
    host, as a loader's do; the step moves them."""
    from types import SimpleNamespace

    model, step_module = prepare_model(task, cfg, device)
    f = Fit(task, model, step_module, build_optimization(model, cfg, total, 0, device), cfg,
            device, 0, total, total, SimpleNamespace(folder=Path("(no run folder)")), None,
            {}, None, 0)
    f.noise, f.guard = GradientNoise(0), NonFiniteGuard(device)
    model.train()
    return f


# -- setting up ------------------------------------------------------------------------------

def prepare_model(task: Task, cfg: TrainConfig, device: torch.device
                  ) -> tuple[nn.Module, nn.Module]:
    """The model on its device (SyncBN, channels-last, compiled as the config says) and the
    module one training step calls (wrapped for DistributedDataParallel when distributed)."""
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
    return model, step_module


def step_budget(cfg: TrainConfig, train_samples: int) -> tuple[int, int, int]:
    """(steps per epoch, total steps, warm-up steps) of a run on ``train_samples``."""
    steps_per_epoch = batches_per_epoch(train_samples, cfg.batch_size, cfg.drop_last)
    if steps_per_epoch == 0:
        raise TmktError(f"the training split has {train_samples} sample(s): too few for "
                        f"a batch (train.batch_size={cfg.batch_size})")
    if cfg.epochs == 0 and cfg.max_steps == 0:
        raise TmktError("train.epochs and train.max_steps are both 0: set one of them")
    total = cfg.epochs * steps_per_epoch if cfg.epochs else cfg.max_steps
    total = max(total, cfg.min_steps)
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    warmup = cfg.warmup_steps or int(round(cfg.warmup_epochs * steps_per_epoch))
    warmup = min(warmup, max(0, total - 1))
    return steps_per_epoch, total, warmup


def build_optimization(model: nn.Module, cfg: TrainConfig, total: int, warmup: int,
                       device: torch.device, steps_per_epoch: int = 1) -> Optimization:
    """AdamW at :func:`lr_for` over ``methods.optim.param_groups``, the schedule
    ``train.schedule`` (``methods.optim.lr_factor``), and the AMP grad scaler."""
    params = [p for p in model.parameters() if p.requires_grad]
    # Fused: one kernel per step, and it skips an update on the device when told the
    # gradients are not finite (``found_inf``), which the non-finite guard relies on.
    optimizer = torch.optim.AdamW(
        param_groups(model, cfg.weight_decay, cfg.weight_decay_exclude_1d), lr=lr_for(cfg),
        fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(cfg, lr_for(cfg), s, total, warmup, steps_per_epoch))
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
    return Optimization(params, optimizer, scheduler, scaler)


def progress_bar(f: Fit):
    """The rich bar (drawn on a terminal only) and, for where it is not drawn, the clock of
    plain progress lines (:func:`log_progress`)."""
    from tmkt_cli.train.progress import Heartbeat
    from tmkt_cli.train.progress import progress_bar as rich_bar

    progress = rich_bar(f.ui, info=True)
    f.plain_progress = bool(progress.disable)
    f.heartbeat = Heartbeat(f.total, f.loop.step, f.cfg.progress_every_s)
    return progress, progress.add_task(f.run.stage, total=f.total, completed=f.loop.step,
                                       info="")


# -- resume and stop: the only places that read or cut the run short -------------------------

def start_or_resume(f: Fit) -> int | None:
    """Load ``last.pt`` into the model, optimizer, scheduler, scaler, RNGs and loop position
    when the run resumes. Returns the step the metrics log keeps records up to (None for a
    fresh run: the log starts empty)."""
    if f.run.decision != "resume":
        return None
    # Rank 0 checks last.pt (model, config) and makes best.pt agree with it; every rank
    # resumes from its answer.
    state = DIST.broadcast(recovery.resumable_state(
        f.last_path, f.best_path, f.run.folder / METRICS, f.model_info, f.run.config_hash,
        f.ui.print) if DIST.is_main else None)
    if state is None:
        return 0  # killed before the first checkpoint (or it is unusable): start over
    f.model.load_state_dict(state["model"])
    f.opt.optimizer.load_state_dict(state["optimizer"])
    for group in f.opt.optimizer.param_groups:  # checkpoints of unfused runs say fused=None
        group.update(fused=True, foreach=None)
    f.opt.scheduler.load_state_dict(state["scheduler"])
    f.opt.scaler.load_state_dict(state["scaler"])
    restore_rng_state(state["rng"])
    f.loop = _Loop(**state["loop"])
    if f.loop.head:
        f.model.test_head = f.loop.head
    f.ui.print(f"resuming at step {f.loop.step}/{f.total} (epoch {f.loop.epoch + 1})")
    return f.loop.step


def stop_if_requested(f: Fit, requested: bool, signal_number) -> None:
    """A stop signal (SIGTERM/SIGUSR1, or the caller's poll) checkpoints and ends the run
    with :class:`StopRequested`; the same command resumes it."""
    if DIST.any(requested):
        f.guard.raise_if_seen(f)  # a state after a non-finite step is never saved
        save_state(f, f.last_path)
        raise StopRequested(f"signal {signal_number}: checkpoint saved at step "
                            f"{f.loop.step}; run the same command to resume")


def save_state(f: Fit, path: Path) -> None:
    """``last.pt`` (the resumable state) or ``best.pt`` (weights only); rank 0 writes."""
    if not DIST.is_main:
        return
    keep = dict if path == f.last_path else weights_only
    save_checkpoint(path, keep(training_checkpoint(
        f.run.stage, f.model_info, f.model, f.opt.optimizer, f.opt.scheduler, f.opt.scaler,
        f.loop.__dict__, f.run.config_hash)))


# -- training --------------------------------------------------------------------------------

def train_steps(f: Fit, progress, bar, stop_requested: Callable[[], bool],
                signal_number: Callable[[], Any]) -> None:
    """The rest of the current epoch (or of the step budget, whichever ends first): one
    optimizer step per batch, then logging, evaluation, checkpoints and the stop check."""
    loop = f.loop
    f.loader.batch_sampler.set_epoch(loop.epoch, start_batch=loop.batch_in_epoch)
    for batch in f.loader:
        out, grad_noise = train_one_step(f, batch)
        log_train_step(f, out, grad_noise, len(batch["label"]), progress, bar)
        epoch_done = loop.batch_in_epoch >= f.steps_per_epoch
        finished = loop.step >= f.total
        after_step(f, epoch_done, finished)
        stop_if_requested(f, stop_requested(), signal_number())
        if finished or epoch_done:
            break


class NonFiniteGuard:
    """Non-finite losses and gradients, caught on the device without a host sync per step.

    Every step sets ``found_inf`` (a device scalar) when its loss or any gradient is NaN or
    inf; the fused optimizer then skips that update on the device (weights, moments and its
    step count stay as they were). The first such step and its loss are remembered on the
    device; :meth:`raise_if_seen` reads them (one sync) at the next log point and before any
    evaluation or checkpoint, and stops the run there. Steps between the bad one and that
    point train normally (their finite updates are applied); no checkpoint is written after
    a bad step, so ``last.pt`` is the last good state.
    """

    def __init__(self, device: torch.device):
        self.found_inf = torch.zeros((), device=device)
        self.first_step = torch.full((), -1, dtype=torch.int64, device=device)
        self.first_loss = torch.zeros((), device=device)
        self._one = torch.ones((), device=device)

    def check(self, loss: torch.Tensor, params: list[nn.Parameter], step: int) -> None:
        """Set ``found_inf`` for this step's loss and gradients (call after backward)."""
        loss = loss.detach().float().mean()
        self.found_inf.copy_((~torch.isfinite(loss)).float())
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for p in params:
            if p.grad is not None:
                by_dtype.setdefault(p.grad.dtype, []).append(p.grad)
        for grads in by_dtype.values():  # torch's own AMP check: ORs into found_inf, no sync
            torch._amp_foreach_non_finite_check_and_unscale_(grads, self.found_inf, self._one)
        first = (self.first_step < 0) & (self.found_inf > 0)
        self.first_step.copy_(torch.where(first, step, self.first_step))
        self.first_loss.copy_(torch.where(first, loss, self.first_loss))

    def raise_if_seen(self, f: Fit) -> None:
        first_step = int(self.first_step)  # the one sync
        if not DIST.any(first_step >= 0):
            return
        where = (f"at step {first_step} (epoch {first_step // f.steps_per_epoch + 1})"
                 if first_step >= 0 else "on another process")
        raise TmktError(
            f"non-finite loss or gradient (loss {float(self.first_loss)}) {where}; its update "
            f"was skipped and the run stopped at step {f.loop.step}, the last good checkpoint "
            f"is {f.last_path if f.last_path.exists() else 'none'}; lower train.lr or "
            f"enable train.grad_clip")


def train_one_step(f: Fit, batch: dict) -> tuple[dict, dict[str, float] | None]:
    """Forward, backward, clipping, the non-finite check and the update of one batch, with
    no host sync (the check is read at the next log point, see :class:`NonFiniteGuard`).
    Returns the task's outputs (device tensors) and the gradient-noise figures when a
    window closes."""
    loop, opt, cfg = f.loop, f.opt, f.cfg
    ctx = StepContext(loop.step, f.total, loop.epoch, f.device, f.seed,
                      grad_shares=bool(cfg.grad_share_every)
                      and loop.step % cfg.grad_share_every == 0)
    # Global RNG users inside the model (dropout) draw from a per-step seed.
    torch.manual_seed(ctx.step_seed())
    recovery.check_finite_batch(batch, loop.step, loop.epoch, f.last_path)  # host tensors
    batch = to_device(batch, f.device)
    with autocast(f.device, cfg.amp):
        out = f.step_module(batch, ctx)
    loss = out["loss"]
    opt.optimizer.zero_grad(set_to_none=True)
    opt.scaler.scale(loss).backward()
    if cfg.grad_clip:
        opt.scaler.unscale_(opt.optimizer)
        nn.utils.clip_grad_norm_(opt.params, cfg.grad_clip)
    f.guard.check(loss, opt.params, loop.step)
    grad_noise = f.noise.observe(f.model, loop.step)
    if opt.scaler.is_enabled():  # fp16: the scaler skips steps with inf gradients itself
        opt.scaler.step(opt.optimizer)
        opt.scaler.update()
    else:
        opt.optimizer.found_inf = f.guard.found_inf
        opt.optimizer.step()
        del opt.optimizer.found_inf
    opt.scheduler.step()
    loop.step += 1
    loop.batch_in_epoch += 1
    return out, grad_noise


def log_train_step(f: Fit, out: dict, grad_noise: dict | None, samples: int, progress,
                   bar) -> None:
    """This step's values to metrics.jsonl every ``log_every_steps`` and at the end, with
    the learning rate and samples/s; the progress bar. The only place a training step's
    device values are read (one sync per log point), after the non-finite check."""
    loop = f.loop
    f.window_n += samples
    if grad_noise:
        f.log.write("grad_noise", loop.step, grad_noise)
    if any(k.startswith("share_") for k in out):  # a grad-share step (one sync)
        shares = read_values({k: v for k, v in out.items()
                              if k.startswith(("share_", "gradnorm_"))})
        f.log.write("grad_share", loop.step, shares)
    if loop.step % f.cfg.log_every_steps == 0 or loop.step == f.total:
        f.guard.raise_if_seen(f)
        running = read_values(out)  # this step's values only
        dt = time.perf_counter() - f.window_t
        rate = f.window_n / dt if dt > 0 else 0.0
        f.log.write("train", loop.step, {**running, "epoch": loop.epoch + 1,
                                         "lr": f.opt.scheduler.get_last_lr()[0],
                                         "samples_per_s": rate})
        f.window_t, f.window_n = time.perf_counter(), 0
        f.last_loss = running["loss"]
        info = f"loss {running['loss']:.3f}"
        if "acc" in running:
            info += f" acc {running['acc']:.3f}"
        progress.update(bar, info=info + f" {rate:.0f} samples/s")
    progress.update(bar, completed=loop.step)
    log_progress(f, samples)


def log_progress(f: Fit, samples: int) -> None:
    """Every 1% of the run a ``progress`` record in metrics.jsonl and, where no bar is drawn
    and ``train.progress_every_s`` has passed since the last one, the same figures as one
    plain line (progress.Heartbeat). Reads nothing from the device: it computes nothing and
    waits for nothing."""
    from tmkt_cli.train.progress import progress_line

    due = f.heartbeat.beat(f.loop.step, samples)
    if due is None:
        return
    figures, line = due
    values = {**figures, "epoch": f.loop.epoch + 1,
              "epochs": -(-f.total // f.steps_per_epoch), "loss": f.last_loss}
    f.log.write("progress", f.loop.step, values)
    if line and f.plain_progress and DIST.is_main:
        f.ui.print(progress_line(f.run.stage, f.loop.step, values), markup=False,
                   highlight=False)


def read_values(out: dict) -> dict[str, float]:
    """A step's named scalars as floats: one transfer per device they live on."""
    by_device: dict[torch.device, list[str]] = {}
    values = {}
    for k, v in out.items():
        if isinstance(v, torch.Tensor):
            by_device.setdefault(v.device, []).append(k)
        else:
            values[k] = v
    for keys in by_device.values():
        floats = torch.stack([out[k].detach().float().reshape(()) for k in keys]).tolist()
        values.update(zip(keys, floats, strict=True))
    return {k: values[k] for k in out}


def after_step(f: Fit, epoch_done: bool, finished: bool) -> None:
    """Advance the epoch, evaluate when due (keeping the best), and checkpoint."""
    loop, cfg = f.loop, f.cfg
    eval_due = finished or (loop.step % cfg.eval_every_steps == 0
                            if cfg.eval_every_steps else epoch_done)
    epoch_label = loop.epoch + 1
    if epoch_done:
        loop.epoch += 1
        loop.batch_in_epoch = 0
    improved = improved_test = False
    if eval_due or epoch_done or (cfg.checkpoint_every_steps and
                                  loop.step % cfg.checkpoint_every_steps == 0):
        f.guard.raise_if_seen(f)  # never evaluate or checkpoint after a non-finite step
    if eval_due:
        metrics = evaluate_and_choose_head(f)
        if f.val_set is not None:
            improved_test = metrics.get("acc", -1.0) > loop.best_test.get("acc", -1.0)
            if improved_test:
                loop.best_test = {"epoch": epoch_label, "step": loop.step, **metrics}
        loop.last_eval = metrics
        f.log.write("eval", loop.step, {"epoch": epoch_label, **metrics})
        f.ui.print(f"epoch {epoch_label} step {loop.step}/{f.total}: " + "  ".join(
            f"{k} {v:.4f}" for k, v in metrics.items()
            if isinstance(v, float) and k != "samples")
            + (f"  head {loop.head}" if loop.head else ""))
        chosen = metrics.get("val_acc" if f.val_set is not None else "acc", -1.0)
        improved = chosen > loop.best_acc
        if improved:
            loop.best_acc = chosen
            loop.best = {"epoch": epoch_label, "step": loop.step, **metrics}
    if eval_due or epoch_done or (cfg.checkpoint_every_steps and
                                  loop.step % cfg.checkpoint_every_steps == 0):
        save_state(f, f.last_path)
        if improved:
            save_state(f, f.best_path)
        if improved_test:
            save_state(f, f.run.folder / BEST_TEST)
        f.run.update(metrics={"step": loop.step, "epoch": loop.epoch,
                              "last": loop.last_eval, "best": loop.best})


def evaluate_and_choose_head(f: Fit) -> dict[str, float]:
    """The evaluation's metrics: the test split's, and the validation split's as ``val_*``.
    The validation split is measured first, so a head chosen on it
    (``model.test_head: validation``, the task's ``select_head``) is the one the test
    figures (``acc``, ``top5``, ``loss``) belong to; the other head's are ``*_<head>_head``."""
    if f.val_set is None:
        return evaluate(f)
    tested = getattr(f.model, "test_head", "")
    val = evaluate(f, f.val_set)
    select = getattr(f.task, "select_head", None)
    head = select(val) if select else None
    metrics = evaluate(f)
    if head is None:
        metrics["val_acc"] = val.get("acc", -1.0)
        metrics.update({f"val_{k}": v for k, v in val.items() if k.endswith("_head")})
        return metrics
    f.loop.head = metrics["head"] = head
    accs = head_accuracies(val, tested)
    metrics["val_acc"] = accs[head]
    metrics.update({f"val_acc_{h}_head": a for h, a in accs.items() if h != head})
    return metrics


def evaluate(f: Fit, dataset=None) -> dict[str, float]:
    """The task's metrics on the evaluation split (or ``dataset``), in eval mode, combined
    over ranks."""
    f.model.eval()
    dataset = f.eval_set if dataset is None else dataset
    if id(dataset) not in f.eval_loaders:  # built once per fit (its workers persist)
        f.eval_loaders[id(dataset)] = eval_loader(dataset, f.cfg.batch_size, f.num_workers,
                                                  DIST.rank, DIST.world_size, f.device)
    with torch.no_grad(), autocast(f.device, f.cfg.amp):
        metrics = f.task.evaluate(f.eval_loaders[id(dataset)], f.device)
    f.model.train()
    return reduce_means(metrics)

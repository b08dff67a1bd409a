"""Process-level concerns: seeding, determinism, device choice, mixed precision, signals.

Imports torch lazily inside functions so the CLI's ``--help`` stays fast.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import signal
from typing import TYPE_CHECKING

import numpy as np

from tmkt_cli.errors import TmktError

if TYPE_CHECKING:
    import torch


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (all devices); optionally force deterministic kernels.

    tmkt's data order, augmentations and the methods' random draws do not depend on these
    global generators (they are derived from ``(seed, epoch, step, index)``, which is what makes
    resumed runs bitwise equal); seeding them still covers any library that uses them.
    """
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS needs this to be deterministic; must be set before the first cuBLAS call.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    else:
        torch.use_deterministic_algorithms(False)
        # cuDNN times the algorithms of each new convolution shape once and keeps the fastest
        # (the shapes of a training run repeat every step); ignored on the CPU.
        torch.backends.cudnn.benchmark = True


def set_threads(threads: int) -> None:
    """``train.threads``: torch's intra-op threads for this process (0 leaves torch's
    default, one per core). On a loaded machine fewer threads than cores avoid threads
    waiting on each other (see docs/performance.md)."""
    import torch

    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


AUTO_WORKERS_CUDA = 8
"""``num_workers: auto`` on a GPU: at most this many loader processes per GPU process."""


def resolve_workers(spec: int | str, device: torch.device, cpus: int | None = None,
                    processes: int | None = None) -> int:
    """``data.num_workers`` as a count. ``auto``: on CUDA, the cores left to each of this
    node's training processes (one kept for the process itself), at most
    ``AUTO_WORKERS_CUDA``; on the CPU 0, since the step itself uses the cores and a worker
    only competes with it (measured in docs/performance.md)."""
    if spec != "auto":
        return int(spec)
    if device.type != "cuda":
        return 0
    cpus = cpus if cpus is not None else len(os.sched_getaffinity(0)) \
        if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    processes = processes if processes is not None else \
        int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(0, min(AUTO_WORKERS_CUDA, cpus // max(1, processes) - 1))


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: derive Python/NumPy seeds from torch's per-worker seed."""
    import torch

    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def select_device(spec: str = "auto") -> torch.device:
    import torch

    if spec == "auto":
        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", 0))
            return torch.device("cuda", local)
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise TmktError(f"train.device: unknown device {spec!r} (auto, cpu, cuda, cuda:N)") \
            from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TmktError(f"train.device: {spec!r} asked for, but CUDA is not available here")
    return device


def autocast(device: torch.device, amp: str):
    """The autocast context for ``train.amp`` (a no-op when off)."""
    import torch

    if amp == "off":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    if device.type == "cpu" and amp == "fp16":
        raise TmktError("train.amp: fp16 autocast needs a GPU; use bf16 on the CPU")
    return torch.autocast(device_type=device.type, dtype=dtype)


class StopSignal:
    """Turns SIGTERM / SIGUSR1 (SLURM preemption) into a flag the engine polls between steps.

    The engine then writes a checkpoint and raises :class:`StopRequested`; a second signal
    while saving is ignored so the checkpoint is never cut short.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        self.requested = signum

    def __enter__(self) -> StopSignal:
        with contextlib.suppress(ValueError):  # not the main thread: leave handlers alone
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)


# --------------------------------------------------------------------------------------------
# Distributed training (torchrun)
# --------------------------------------------------------------------------------------------

def _adopt_slurm_tasks(env) -> None:
    """Under ``srun`` with several tasks (and no torchrun), SLURM's task numbers are the ranks:
    SLURM_PROCID -> RANK, SLURM_NTASKS -> WORLD_SIZE, SLURM_LOCALID -> LOCAL_RANK; rank 0's
    node and a port derived from the job id are the rendezvous unless MASTER_ADDR/PORT are set.
    SLURM_STEP_ID is set in srun's tasks only, not in a batch script, whose SLURM_NTASKS
    describes the allocation rather than this process."""
    if "WORLD_SIZE" in env or "SLURM_STEP_ID" not in env or int(env.get("SLURM_NTASKS", 1)) < 2:
        return
    env["WORLD_SIZE"] = env["SLURM_NTASKS"]
    env["RANK"] = env["SLURM_PROCID"]
    env["LOCAL_RANK"] = env.get("SLURM_LOCALID", "0")
    env.setdefault("MASTER_ADDR", env.get("SLURM_LAUNCH_NODE_IPADDR", "127.0.0.1"))
    env.setdefault("MASTER_PORT", str(20000 + int(env.get("SLURM_JOB_ID", 0)) % 20000))


class Distributed:
    """This process's place in a torchrun or multi-task srun job (rank 0 of 1 when not
    distributed).

    Rank 0 owns the run folder: it alone locks it, writes files and decides whether the stage
    is fresh, resumed or up to date; the other ranks follow that decision.
    """

    def __init__(self) -> None:
        _adopt_slurm_tasks(os.environ)
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def init(self) -> None:
        """Join the process group (NCCL on GPUs, gloo on the CPU) once."""
        if not self.enabled:
            return
        import torch
        import torch.distributed as dist

        if dist.is_initialized():
            return
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(self.local_rank)
        dist.init_process_group(backend=backend)
        # Leave the group while the interpreter is whole: a gloo group still alive at
        # finalisation can abort the process (SIGABRT, "terminate called without an active
        # exception") after a run that completed, failing the job (pytorch/pytorch#190489).
        atexit.register(_leave_process_group)

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any rank."""
        if not self.enabled:
            return flag
        import torch
        import torch.distributed as dist

        t = torch.tensor([1.0 if flag else 0.0])
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def sum(self, values: list[float]) -> list[float]:
        if not self.enabled:
            return values
        import torch
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64)
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t)
        return t.cpu().tolist()

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist
            dist.barrier()


def _leave_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


DIST = Distributed()

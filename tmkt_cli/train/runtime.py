"""Process-level concerns: seeding, determinism, device choice, mixed precision, signals.

Imports torch lazily inside functions so the CLI's ``--help`` stays fast.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import re
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tmkt_cli.errors import TmktError, first_line

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
        env_int(os.environ, "LOCAL_WORLD_SIZE", 1, minimum=1)
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
            return torch.device("cuda", DIST.local_rank)
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

RENDEZVOUS_TIMEOUT_S = 45
"""How long a rank waits at the rendezvous for its peers (``TMKT_RENDEZVOUS_TIMEOUT``
overrides it). srun and torchrun start every rank within seconds of the others, so a rank
still alone after this was started alone or cannot reach its peers: it fails within a
minute of its start, instead of waiting torch's 30 minutes in silence."""

SLURM_INTEGERS = ("SLURM_STEP_ID", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID",
                  "SLURM_JOB_ID")
"""SLURM's variables tmkt reads as integers (checked whenever they are set)."""


def env_int(env, name: str, default: int | None = None, minimum: int = 0) -> int | None:
    """``env[name]`` as an integer >= ``minimum`` (``default`` when unset). The text is
    matched, never evaluated; anything else (``abc``, empty, a sign) is one line naming it."""
    text = env.get(name)
    if text is None:
        return default
    if not re.fullmatch(r"[0-9]{1,10}", text.strip()) or int(text) < minimum:
        shown = text if len(text) <= 40 else f"{text[:40]}..."
        raise TmktError(f"${name}={shown!r}: expected an integer >= {minimum} (set by "
                        f"torchrun, SLURM or by hand: correct it or unset it)")
    return int(text)


def _adopt_slurm_tasks(env) -> bool:
    """Under ``srun`` with several tasks (and no torchrun), SLURM's task numbers are the ranks:
    SLURM_PROCID -> RANK, SLURM_NTASKS -> WORLD_SIZE, SLURM_LOCALID -> LOCAL_RANK; rank 0's
    node and a port derived from the job id are the rendezvous unless MASTER_ADDR/PORT are set.
    SLURM_STEP_ID is set in srun's tasks only, not in a batch script, whose SLURM_NTASKS
    describes the allocation rather than this process. Every value is checked before any is
    written. True when the SLURM task numbers were adopted."""
    numbers = {name: env_int(env, name) for name in SLURM_INTEGERS}
    if "WORLD_SIZE" in env or numbers["SLURM_STEP_ID"] is None or \
            (numbers["SLURM_NTASKS"] or 1) < 2:
        return False
    tasks, task = numbers["SLURM_NTASKS"], numbers["SLURM_PROCID"]
    if task is None or task >= tasks:
        raise TmktError(f"$SLURM_NTASKS={tasks} in a SLURM step (SLURM_STEP_ID is set) but "
                        f"$SLURM_PROCID is {'not set' if task is None else task}: expected a "
                        f"task number below {tasks} (start the tasks with srun)")
    env["WORLD_SIZE"], env["RANK"] = str(tasks), str(task)
    env["LOCAL_RANK"] = str(numbers["SLURM_LOCALID"] or 0)
    env.setdefault("MASTER_ADDR", env.get("SLURM_LAUNCH_NODE_IPADDR", "127.0.0.1"))
    env.setdefault("MASTER_PORT", str(20000 + (numbers["SLURM_JOB_ID"] or 0) % 20000))
    return True


@dataclass(frozen=True)
class Place:
    """This process's place in the job: rank ``rank`` of ``world_size``."""

    world_size: int
    rank: int
    local_rank: int
    source: str
    """What set the world size, for messages: ``$WORLD_SIZE`` or ``$SLURM_NTASKS``."""


def read_place(env) -> Place:
    """The distributed variables of ``env`` (torchrun's, or SLURM's adopted), checked: one line
    and exit code 2 for a value that is not an integer or a rank outside its world."""
    slurm = _adopt_slurm_tasks(env)
    source = "$SLURM_NTASKS" if slurm else "$WORLD_SIZE"
    world = env_int(env, "WORLD_SIZE", 1, minimum=1)
    rank, local = env_int(env, "RANK", 0), env_int(env, "LOCAL_RANK", 0)
    if rank >= world:
        what = f"is not below {source}={world}" if "WORLD_SIZE" in env else \
            "is set but $WORLD_SIZE is not (one process is rank 0)"
        raise TmktError(f"$RANK={rank} {what}: a distributed run sets RANK, WORLD_SIZE, "
                        f"MASTER_ADDR and MASTER_PORT in every process (torchrun and srun do); "
                        f"unset RANK to run one process")
    local_world = env_int(env, "LOCAL_WORLD_SIZE", None, minimum=1)
    if local_world is not None and local >= local_world:
        raise TmktError(f"$LOCAL_RANK={local} is not below $LOCAL_WORLD_SIZE={local_world}")
    return Place(world, rank, local, source)


def _rendezvous(place: Place, env):
    """The store every rank meets at, MASTER_ADDR:MASTER_PORT (served by rank 0, or by
    torchrun's agent), reached within the rendezvous timeout or one line saying what to check.
    Later store operations get torch's usual timeout back."""
    from datetime import timedelta

    from torch.distributed import TCPStore
    from torch.distributed.constants import default_pg_timeout

    addr = env.get("MASTER_ADDR", "").strip()
    port = env_int(env, "MASTER_PORT", None, minimum=1)
    if not addr or port is None or port > 65535:
        raise TmktError(f"{place.source}={place.world_size} needs the rendezvous in "
                        f"$MASTER_ADDR and $MASTER_PORT (a port 1-65535) on every rank")
    wait = env_int(env, "TMKT_RENDEZVOUS_TIMEOUT", RENDEZVOUS_TIMEOUT_S, minimum=1)
    serve = place.rank == 0 and env.get("TORCHELASTIC_USE_AGENT_STORE") != "True"
    try:
        store = TCPStore(addr, port, place.world_size, is_master=serve,
                         timeout=timedelta(seconds=wait), multi_tenant=serve)
    except RuntimeError as e:  # DistStoreError (peers missing), DistNetworkError (no route)
        raise TmktError(
            f"rank {place.rank} of {place.world_size} (from {place.source}): the rendezvous at "
            f"{addr}:{port} failed within {wait} s ({first_line(e)[:160]}); check that every "
            f"rank was started (a process started alone in a multi-task job waits for peers "
            f"that never come), that MASTER_ADDR and MASTER_PORT are the same on every rank "
            f"and reachable from it ($TMKT_RENDEZVOUS_TIMEOUT sets the wait)") from None
    store.set_timeout(default_pg_timeout)
    return store


class Distributed:
    """This process's place in a torchrun or multi-task srun job (rank 0 of 1 when not
    distributed), read from the environment when first needed and again by :meth:`init`
    (so a command checks the environment it runs in).

    Rank 0 owns the run folder: it alone locks it, writes files and decides whether the stage
    is fresh, resumed or up to date; the other ranks follow that decision.
    """

    def __init__(self) -> None:
        self._place: Place | None = None

    @property
    def place(self) -> Place:
        if self._place is None:
            self._place = read_place(os.environ)
        return self._place

    @property
    def world_size(self) -> int:
        return self.place.world_size

    @property
    def rank(self) -> int:
        return self.place.rank

    @property
    def local_rank(self) -> int:
        return self.place.local_rank

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def init(self) -> None:
        """Check the environment, then join the process group (NCCL on GPUs, gloo on the CPU)
        once."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return
        place = read_place(os.environ)
        if place.world_size > 1:
            import torch

            backend = "nccl" if torch.cuda.is_available() else "gloo"
            if backend == "nccl":
                torch.cuda.set_device(place.local_rank)
            store = _rendezvous(place, os.environ)
            dist.init_process_group(backend=backend, store=store, rank=place.rank,
                                    world_size=place.world_size)
            # Leave the group while the interpreter is whole: a gloo group still alive at
            # finalisation can abort the process (SIGABRT, "terminate called without an
            # active exception") after a run that completed, failing the job
            # (pytorch/pytorch#190489).
            atexit.register(_leave_process_group)
        # kept once joined: an environment refused above changes nothing
        self._place = place

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

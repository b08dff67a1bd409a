"""How much memory and disk a setting needs, computed from the numbers alone, before anything is
allocated: pure functions (the available memory is an argument), shared by the checks that
refuse a setting that cannot fit and by ``--dry-run``'s plan.

Frames are float32 ``[T, 2, S, S]`` per recording (two polarities); images uint8 ``[S, S, 3]``.
"""

from __future__ import annotations

from pathlib import Path

FLOAT32 = 4
POLARITIES = 2


def frames_bytes(time_steps: int, size: int) -> int:
    """One recording's integrated frames, ``[T, 2, S, S]`` float32."""
    return time_steps * POLARITIES * size * size * FLOAT32


def image_bytes(size: int) -> int:
    return size * size * 3


def store_bytes(recordings: int, images: int, time_steps: int, size: int) -> int:
    """An upper bound on ``dataset.h5`` (gzip usually shrinks event frames several times)."""
    return recordings * frames_bytes(time_steps, size) + images * image_bytes(size)


def prepare_bytes(time_steps: int, size: int, flush_every: int, workers: int) -> int:
    """What ``tmkt prepare`` holds in memory at once: the writer's block of ``flush_every``
    recordings plus two in flight per worker (the one being integrated, the one returned)."""
    return frames_bytes(time_steps, size) * (flush_every + 2 * max(1, workers))


def batch_input_bytes(batch_size: int, time_steps: int, size: int, streams: int = 1) -> int:
    """One training batch's input frames (``streams`` = 2 for the two-stream methods, whose
    static sequences are as large as the event ones)."""
    return batch_size * streams * frames_bytes(time_steps, size)


def optimizer_bytes(parameters: int) -> int:
    """Weights, gradients and AdamW's two moments, float32."""
    return 4 * parameters * FLOAT32


def human_bytes(n: float) -> str:
    for factor, unit in ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= factor:
            return f"{n / factor:,.1f} {unit}"
    return f"{int(n)} B"


def available_memory(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """The kernel's estimate of memory available without swapping (bytes), None when unknown."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None

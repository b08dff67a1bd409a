"""Progress bars: the one rich bar the engine draws during training and prepare draws over
its images and recordings, and :func:`track` for the long loops outside training (eval's pass
over the test split, cam's choice of samples). Shown only on a terminal, so logs and pipes
stay clean (prepare also records its progress in the manifest). Where no bar is drawn,
training prints plain lines at a steady pace instead (:class:`Heartbeat`,
:func:`progress_line`), which a SLURM log or ``tail -f`` can follow."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")


def progress_bar(ui: Console, *, info: bool = False, transient: bool = False) -> Progress:
    """description, bar, done/total, (the task's ``info`` field), elapsed, remaining."""
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn()]
    if info:
        columns.append(TextColumn("{task.fields[info]}"))
    columns += [TimeElapsedColumn(), TimeRemainingColumn()]
    return Progress(*columns, console=ui, transient=transient,
                    disable=not ui.is_terminal and not ui.is_jupyter)


def track(items: Iterable[T], total: int | None, ui: Console, description: str) -> Iterator[T]:
    """Yield ``items`` while a bar of ``total`` steps advances (transient: it disappears when
    the loop ends, the stage's own summary line stays)."""
    progress = progress_bar(ui, transient=True)
    with progress:
        task = progress.add_task(description, total=total)
        for item in items:
            yield item
            progress.advance(task)


# -- plain progress lines, for logs --------------------------------------------------------------

class Heartbeat:
    """When a training run's next progress record and plain line are due, and their figures.

    A record is due every 1% of the run's steps (at multiples of ``ceil(total / 100)``, so a
    resumed run writes its records at the steps an uninterrupted one does) and at the last
    step; a line at such a step when ``every_s`` seconds have passed since the previous line
    (whichever comes later), so a short run is not flooded and a long one speaks at a steady
    pace. The ETA is this attempt's pace so far, evaluations included."""

    def __init__(self, total: int, start_step: int, every_s: float, clock=time.perf_counter):
        self.total, self.start_step, self.every_s, self.clock = total, start_step, every_s, clock
        self.stride = max(1, math.ceil(total / 100))
        self.start_t = self.last_t = self.line_t = clock()
        self.samples = 0

    def beat(self, step: int, samples: int) -> tuple[dict[str, float], bool] | None:
        """Count a step's samples; at a record's step, its figures and whether a line is due
        too (samples/s over the steps since the previous record)."""
        self.samples += samples
        if step % self.stride and step != self.total:
            return None
        now = self.clock()
        per_step = (now - self.start_t) / max(1, step - self.start_step)
        figures = {"total_steps": self.total,
                   "samples_per_s": self.samples / max(now - self.last_t, 1e-9),
                   "elapsed_s": now - self.start_t, "eta_s": per_step * (self.total - step)}
        self.last_t, self.samples = now, 0
        line = now - self.line_t >= self.every_s
        if line:
            self.line_t = now
        return figures, line


def progress_line(stage: str, step: int, values: dict) -> str:
    """``train-tmkt: step 1950/19500 (10%)  epoch 3/30  loss 1.2345  812 samples/s  ETA
    1:02:03`` (a loss of None, before the first logged step, reads "loss -")."""
    total = values["total_steps"]
    loss = values.get("loss")
    return (f"{stage}: step {step}/{total} ({100 * step / max(total, 1):.0f}%)  "
            f"epoch {values['epoch']}/{values['epochs']}  "
            f"loss {'-' if loss is None else f'{loss:.4f}'}  "
            f"{values['samples_per_s']:,.0f} samples/s  ETA {clock_time(values['eta_s'])}")


def clock_time(seconds: float) -> str:
    """``H:MM:SS``."""
    whole = int(round(max(seconds, 0.0)))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"

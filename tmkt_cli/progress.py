"""Progress bars: the one rich bar the engine draws during training and prepare draws over
its images and recordings, and :func:`track` for the long loops outside training (eval's pass
over the test split, cam's choice of samples). Shown only on a terminal, so logs and pipes
stay clean (prepare also records its progress in the manifest)."""

from __future__ import annotations

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

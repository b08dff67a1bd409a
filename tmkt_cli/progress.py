"""Progress bars for the long loops outside training (eval's passes over the test split,
cam's choice of samples): the same rich bar the engine draws, shown only on a terminal so
logs and pipes stay clean."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console

T = TypeVar("T")


def track(items: Iterable[T], total: int | None, ui: Console, description: str) -> Iterator[T]:
    """Yield ``items`` while a bar of ``total`` steps advances (transient: it disappears when
    the loop ends, the stage's own summary line stays)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                        MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                        console=ui, transient=True,
                        disable=not ui.is_terminal and not ui.is_jupyter)
    with progress:
        task = progress.add_task(description, total=total)
        for item in items:
            yield item
            progress.advance(task)

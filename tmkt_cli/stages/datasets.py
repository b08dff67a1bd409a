"""``tmkt datasets``: every dataset ``tmkt prepare`` reads, what its raw folder must hold, and
whether it is found under a root.

A recorded dataset is looked for in ``ROOT/<name>`` and then in ``ROOT`` itself; "found" means
its source function lists the recordings without an error (it reads file names, not events),
so the check costs seconds even for N-Caltech101.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tmkt_cli.errors import TmktError


@dataclass
class DatasetStatus:
    name: str
    title: str
    needs: str
    """What prepare.root must hold (or that nothing is needed)."""
    status: str
    root: Path | None = None


def _first_line(text: str | None) -> str:
    """A docstring's first sentence, without its asides in brackets."""
    line = (text or "").strip().split("\n\n")[0].replace("\n", " ").strip()
    return line.split(" (")[0].rstrip(".") if " (" in line else line.rstrip(".")


def _try(fn, name: str, root: Path | None, what: str = "recordings") -> str:
    from tmkt_cli.config import PrepareConfig

    try:
        data = fn(root, PrepareConfig(dataset=name))
    except TmktError as e:
        return f"not found: {str(e).split(' (expected')[0]}"
    if what == "images":
        train, test = len(data.train_images), len(data.test_images)
    else:
        train, test = len(data.train), len(data.test)
    return f"found: {train} train and {test} test {what}, {len(data.classes)} classes"


def overview(root: Path | None) -> list[DatasetStatus]:
    from tmkt_cli.data import sources
    from tmkt_cli.data.datasets.recorded import KNOWN

    out = []
    for name in sources.names():
        fn = sources.get(name)
        facts = KNOWN.get(name)
        if name == "images":
            out.append(DatasetStatus(name, _first_line(fn.__doc__),
                                     "one subfolder of images per class",
                                     _try(fn, name, root, "images") if root else
                                     "give --root FOLDER to check"))
        elif facts is None:  # emulated from images that ship with a Python package
            out.append(DatasetStatus(name, _first_line(fn.__doc__), "nothing (built in)",
                                     _try(fn, name, None, "images").replace(
                                         "found", "built in", 1)))
        elif root is None:
            out.append(DatasetStatus(name, facts.title, facts.layout,
                                     "give --root FOLDER to check"))
        else:
            tried = [(c, _try(fn, name, c)) for c in (root / name, root) if c.is_dir()]
            found = [(c, s) for c, s in tried if s.startswith("found")]
            at, status = (found or tried or [(None, f"not found: no folder {root / name}")])[0]
            out.append(DatasetStatus(name, facts.title, facts.layout, status, at))
    return out


TITLE = "datasets (docs/datasets.md: sources, citations, layouts)"


def render(statuses: list[DatasetStatus], width: int):
    """A rich table on a terminal at least 120 columns wide, else plain text: one block per
    dataset, its lines wrapped at 80 columns (or the terminal's width) and nothing cut."""
    if width >= 120:
        from rich.markup import escape
        from rich.table import Table

        table = Table(title=TITLE, title_justify="left", show_lines=True)
        for column in ("name", "dataset", "raw folder must hold", "status"):
            table.add_column(column, no_wrap=column == "name", overflow="fold")
        for d in statuses:
            table.add_row(d.name, escape(d.title), escape(d.needs), escape(_status(d)))
        return table
    import textwrap

    wrap = max(40, min(width or 80, 80))
    lines = [TITLE, ""]
    for d in statuses:
        lines += textwrap.wrap(f"{d.name}: {d.title}", wrap, subsequent_indent="    ")
        for label, text in (("raw folder must hold", d.needs), ("status", _status(d))):
            lines += textwrap.wrap(f"{label}: {text}", wrap, initial_indent="  ",
                                   subsequent_indent="    ", break_on_hyphens=False)
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _status(d: DatasetStatus) -> str:
    where = f" in {d.root}" if d.root and d.status.startswith("found") else ""
    return d.status + where

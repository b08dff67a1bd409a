"""The log of a training run: ``metrics.jsonl`` (one JSON record a line) and TensorBoard.

Written by the engine, read by ``tmkt report``; it needs no torch (TensorBoard's writer is
imported only when a log is opened for writing).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tmkt_cli.runs import artifacts

METRICS = "metrics.jsonl"


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

"""Every training method, declared once: what its batches hold, which components it switches
on, and which task computes its step. The rest of tmkt reads these declarations (the recipe
schema's allowed names and defaults, the memory estimate, the train-tmkt stage, the report).

A declaration is plain data and imports no torch, so the recipe loader and ``tmkt report`` read
it cheaply; the task that computes the step is named by import path and imported when training
starts. Adding a method is one module that declares a :class:`Method` (and, when no existing
task computes its step, a task class beside it) and registers it with :func:`register`.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SWITCHES = ("tsm", "sliding_replacement", "mag", "mrp", "domain_alignment", "str_weights")
"""The component switches of ``method.*`` a method gives defaults for (null in a recipe: the
method's default)."""

ALL_OFF: Mapping[str, bool] = {name: False for name in SWITCHES}


@dataclass(frozen=True)
class Method:
    name: str
    """``method.name`` in a recipe."""
    summary: str
    """One line for listings and the recipe reference."""
    inputs: tuple[str, ...]
    """The batch entries a training step reads: ``events``, ``static`` (the paired image as an
    event-like frame) or ``image`` (images alone). Their number is the batch's memory factor."""
    task: str
    """``module:Class`` of the task whose ``training_step`` computes the method."""
    switches: Mapping[str, bool] = field(default_factory=lambda: dict(ALL_OFF))
    """Defaults of the component switches (docs/methods.md says why each is on or off)."""
    test_head: str | None = None
    """The one head a run of the method can be scored with, where only one trains."""

    @property
    def streams(self) -> int:
        """Inputs per training sample, for the memory estimate: 2 where a static stream
        rides beside the events."""
        return len(self.inputs)

    @property
    def trains_both_heads(self) -> bool:
        """Whether its default switches put a static stream through the trunk (kt, tmkt)."""
        return _static_stream(self.switches)

    @property
    def on_images(self) -> bool:
        """Trained and tested on the static images alone (no event recordings)."""
        return self.inputs == ("image",)

    def task_class(self) -> type:
        module, _, name = self.task.partition(":")
        return getattr(importlib.import_module(module), name)


METHODS: dict[str, Method] = {}
"""Every registered method by name, in the order they were registered (the built-in ones in
the order of the tables)."""


def register(method: Method) -> Method:
    """Make ``method`` a value of ``method.name``. Registering a name twice is a bug."""
    if method.name in METHODS and METHODS[method.name] != method:
        raise ValueError(f"method {method.name!r} is registered already")
    unknown = set(method.switches) - set(SWITCHES)
    if unknown or set(method.switches) != set(SWITCHES):
        raise ValueError(f"method {method.name!r}: switches must give every one of "
                         f"{SWITCHES} (unknown: {sorted(unknown)})")
    METHODS[method.name] = method
    return method


def method_names() -> tuple[str, ...]:
    return tuple(METHODS)


def get(name: str) -> Method:
    return METHODS[name]


def resolve(config: Any) -> Any:
    """A method config (``recipe.method``) with the switches it leaves at null filled in from
    its method's declaration."""
    defaults = METHODS[config.name].switches
    values = {k: (defaults[k] if getattr(config, k) is None else getattr(config, k))
              for k in SWITCHES}
    return dataclasses.replace(config, **values)


def trains_both_heads(config: Any, distilled: bool = False) -> bool:
    """Whether a run trains the static head too (a static stream through the trunk: KT,
    TMKT, or a CKD student): only then is that head's accuracy on events worth reading, or
    choosing. event_only and finetune train the event head alone. ``config`` as a loaded
    recipe's ``method`` holds it (its switches resolved), so an ablation that turns every
    static-stream component off trains one head."""
    return _static_stream(vars(config)) or distilled


def _static_stream(switches: Mapping[str, Any]) -> bool:
    """The one rule: a static (or mixed) stream goes through the trunk, and its head trains,
    when any component that builds or aligns that stream is on."""
    return bool(switches["tsm"] or switches["sliding_replacement"]
                or switches["domain_alignment"])


def batch_streams(stage: str, method_name: str) -> int:
    """Inputs per training sample of a stage (the memory estimate's factor): the ANN teacher
    reads images alone, distill reads events and images, train-tmkt what its method reads."""
    if stage == "pretrain-ann":
        return 1
    if stage == "train-tmkt":
        return METHODS[method_name].streams
    return 2

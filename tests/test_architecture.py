"""The shape of the code that docs/architecture.md promises, checked so it stays that way."""

from __future__ import annotations

import ast
from pathlib import Path

import tmkt_cli

PACKAGE = Path(tmkt_cli.__file__).parent
STAGES = PACKAGE / "stages"
SHARED = {"__init__", "common", "shared"}
"""Modules under stages/ that are not stages: what stages share."""


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_no_stage_imports_another_stage():
    stages = {p.stem for p in STAGES.glob("*.py")} - SHARED
    assert {"prepare", "train_tmkt", "pretrain_ann", "distill", "evaluate", "cam"} <= stages
    for stage in stages:
        others = {f"tmkt_cli.stages.{s}" for s in stages - {stage}}
        found = imported_modules(STAGES / f"{stage}.py") & others
        assert not found, f"stages/{stage}.py imports {sorted(found)}"
    for shared in SHARED - {"__init__"}:
        found = imported_modules(STAGES / f"{shared}.py") & {f"tmkt_cli.stages.{s}"
                                                           for s in stages}
        assert not found, f"stages/{shared}.py imports a stage: {sorted(found)}"


def test_engine_functions_are_short():
    """engine.py reads like the torchvision references: short functions, no 180-line fit."""
    tree = ast.parse((PACKAGE / "train" / "engine.py").read_text())
    long = [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.end_lineno - node.lineno + 1 > 60]
    assert not long, f"functions over 60 lines in engine.py: {long}"
    names = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert {"fit", "train_steps", "train_one_step", "evaluate", "start_or_resume",
            "stop_if_requested", "save_state"} <= names

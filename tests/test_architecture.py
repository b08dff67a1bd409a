"""The shape of the code that docs/architecture.md promises, checked so it stays that way."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import tmkt_cli

PACKAGE = Path(tmkt_cli.__file__).parent
ROOT = PACKAGE.parent
STAGES = PACKAGE / "stages"
SHARED = {"__init__", "common", "shared"}
"""Modules under stages/ that are not stages: what stages share."""
LONGEST_FUNCTION = 60


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(path: Path) -> set[str]:
    """What a module imports: ``from pkg import sub`` names the submodule pkg.sub alone (it
    needs nothing else of pkg), ``from pkg import name`` names pkg."""
    modules = package_modules()
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            subs = {f"{node.module}.{a.name}" for a in node.names}
            names.update(subs)
            if not subs <= modules.keys():
                names.add(node.module)
    return names


def import_graph() -> dict[str, set[str]]:
    """Each tmkt_cli module -> the tmkt_cli modules it imports, anywhere in its body (a lazy
    import inside a function closes a cycle as surely as one at the top)."""
    modules = package_modules()
    return {name: {m for m in imported_modules(path) if m in modules and m != name}
            for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


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


def test_at_most_six_modules_at_the_package_root():
    root = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert len(set(root) - {"__init__", "__main__"}) <= 6, root


def test_no_import_cycle():
    assert find_cycle(import_graph()) is None, " -> ".join(find_cycle(import_graph()))


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_function_over_sixty_lines():
    """Counted from the first decorator (or ``def``) to the last line, in every module."""
    long = []
    for name, path in package_modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                if node.end_lineno - first + 1 > LONGEST_FUNCTION:
                    long.append(f"{name}.{node.name} ({node.end_lineno - first + 1})")
    assert not long, f"functions over {LONGEST_FUNCTION} lines: {long}"


def test_engine_keeps_its_named_steps():
    tree = ast.parse((PACKAGE / "train" / "engine.py").read_text())
    names = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert {"fit", "train_steps", "train_one_step", "evaluate", "start_or_resume",
            "stop_if_requested", "save_state"} <= names


def test_architecture_doc_names_every_module():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    mentioned = set(re.findall(r"[\w/]+\.py", doc))
    missing = [str(path.relative_to(PACKAGE)) for path in package_modules().values()
               if path.name != "__init__.py" and str(path.relative_to(PACKAGE)) not in mentioned]
    assert not missing, f"docs/architecture.md does not mention: {missing}"


def test_old_import_paths_still_work_with_a_warning():
    import importlib
    import sys
    import warnings

    sys.modules.pop("tmkt_cli.checkpoints", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = importlib.import_module("tmkt_cli.checkpoints")
    from tmkt_cli.runs import checkpoints

    assert old is checkpoints and old.load_model is checkpoints.load_model
    assert checkpoints.__spec__.name == "tmkt_cli.runs.checkpoints"
    assert any(issubclass(w.category, DeprecationWarning) and "tmkt_cli.runs.checkpoints"
               in str(w.message) for w in caught)
    from tmkt_cli.data.store import open_dataset  # noqa: F401  (never moved)

"""Load a file of ``tools/`` as a module, so tests call its functions (the scripts are
command-line drivers, not a package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SCRIPTS = Path(__file__).resolve().parents[2] / "tools"


def load_script(name: str) -> ModuleType:
    """``tools/<name>.py`` as module ``name`` (registered in ``sys.modules``: dataclasses
    and the scripts' imports of each other need it)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module

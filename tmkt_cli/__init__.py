"""tmkt: spiking networks for event cameras, trained with knowledge from static images.

The package's map is docs/architecture.md. Modules that moved into subpackages in 0.1 keep
their old import paths for one release (``tmkt_cli.checkpoints`` is ``tmkt_cli.runs.checkpoints``),
with a DeprecationWarning naming the new one.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

__version__ = "0.1.0"

MOVED_MODULES = {
    "artifacts": "runs.artifacts", "checkpoints": "runs.checkpoints",
    "recovery": "runs.recovery", "run_target": "runs.run_target", "runlog": "runs.runlog",
    "safe_yaml": "config.safe_yaml", "variants": "config.variants",
    "recipe_doc": "config.recipe_doc", "catalog": "config.catalog",
    "engine": "train.engine", "tasks": "train.tasks", "memory": "train.memory",
    "runtime": "train.runtime", "progress": "train.progress",
    "report": "results.report", "benchmark": "results.benchmark",
    "summary": "results.summary", "predictions": "results.predictions",
    "landscape": "stages.landscape", "sweep": "stages.sweep",
    "environment": "stages.environment", "datasets_overview": "stages.datasets",
}
"""Old module name -> its home now (remove in the release after 0.1)."""


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves ``tmkt_cli.<old>`` to the module that now lives under a subpackage: the same
    module object, so ``tmkt_cli.checkpoints.load_model is tmkt_cli.runs.checkpoints.load_model``."""

    def __init__(self):
        self._specs = {}

    def find_spec(self, fullname, path=None, target=None):
        old = fullname.removeprefix(f"{__name__}.")
        if old != fullname and old in MOVED_MODULES:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        new = f"{__name__}.{MOVED_MODULES[spec.name.removeprefix(f'{__name__}.')]}"
        warnings.warn(f"{spec.name} moved to {new}; the old path goes in the next release",
                      DeprecationWarning, stacklevel=2)
        module = importlib.import_module(new)
        self._specs[spec.name] = module.__spec__
        return module

    def exec_module(self, module):
        # the import system stamped the alias's spec on the real module: give its own back
        module.__spec__ = self._specs.pop(module.__spec__.name)


sys.meta_path.append(_MovedModuleFinder())

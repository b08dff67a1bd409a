"""What tmkt ships: the recipes, found by name or by path.

The recipes live at the top of the repository (``recipes/<dataset>/<method>.yaml``); a wheel
carries a copy inside the package (``tmkt_cli/recipes/``), so ``tmkt train-tmkt digits/tmkt``
works from any folder, in a checkout or after ``pip install``. A path that exists always wins
over a name, so a user's own ``digits/tmkt.yaml`` is never shadowed by the shipped one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tmkt_cli.errors import TmktError

_PACKAGE = Path(__file__).resolve().parent.parent


def shipped_recipes_dir() -> Path | None:
    """The shipped recipes: the wheel's copy, else the checkout's ``recipes/`` (editable
    installs and running from the source tree)."""
    for candidate in (_PACKAGE / "recipes", _PACKAGE.parent / "recipes"):
        if (candidate / "README.md").is_file():
            return candidate
    return None


@dataclass(frozen=True)
class ShippedRecipe:
    name: str
    """``<folder>/<stem>``, what ``tmkt train-tmkt NAME`` accepts."""
    path: Path
    summary: str
    """The comment block at the top of the recipe."""


def _first_comment(path: Path) -> str:
    """The comment block at the top of a recipe, as one line."""
    words = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.startswith("#"):
            break
        words.append(line.lstrip("#").strip())
    return " ".join(w for w in words if w)


def shipped_recipes() -> list[ShippedRecipe]:
    """Every runnable shipped recipe (the ``base.yaml`` files only hold shared settings)."""
    root = shipped_recipes_dir()
    if root is None:
        return []
    out = []
    for path in sorted(root.glob("*/*.yaml")):
        if path.stem == "base":
            continue
        name = f"{path.parent.name}/{path.stem}"
        out.append(ShippedRecipe(name, path, _first_comment(path)))
    return out


def resolve_recipe(text: str | Path) -> Path:
    """A recipe argument to a file: an existing path as given, or with ``.yaml`` (``.yml``)
    added, so a local ``./digits/tmkt.yaml`` answers ``digits/tmkt`` before the shipped recipe
    of that name does; else a shipped recipe's name (``digits/tmkt``, ``digits/tmkt.yaml`` or
    ``recipes/digits/tmkt.yaml``)."""
    path = Path(text)
    for local in (path, *(path.with_name(path.name + ext) for ext in (".yaml", ".yml")
                          if path.name and path.suffix not in (".yaml", ".yml"))):
        if local.exists():
            return local
    name = str(text).removesuffix(".yaml").removesuffix(".yml").removeprefix("recipes/")
    root = shipped_recipes_dir()
    if root is not None and name and ".." not in Path(name).parts:
        shipped = root / f"{name}.yaml"
        if shipped.is_file():
            return shipped
    known = [r.name for r in shipped_recipes()]
    import difflib

    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else "; 'tmkt recipes' lists them"
    raise TmktError(f"recipe not found: {text} (no such file, nor a shipped recipe of that "
                    f"name{hint})")


def dataset_base_recipe(dataset: str) -> Path | None:
    """The shipped ``<dataset>/base.yaml``, whose ``prepare`` section is what the dataset's
    recipes prepare (so ``tmkt prepare digits`` makes the store ``digits/tmkt`` reads)."""
    root = shipped_recipes_dir()
    if root is None or not dataset or "/" in dataset or dataset.startswith("."):
        return None
    base = root / dataset / "base.yaml"
    return base if base.is_file() else None

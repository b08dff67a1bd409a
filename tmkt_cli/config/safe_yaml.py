"""YAML for recipes and ``--set`` values: safe, strict about duplicate keys, bounded in size.

``yaml.safe_load`` already refuses tags that would run code, but it silently keeps the last of
two equal keys in a mapping (two ``train:`` sections, two ``seed:`` lines), and it builds
aliases as shared references, so a small "billion laughs" document only explodes later, when
the recipe is copied (``apply_overrides``) or dumped. :func:`load` refuses both up front, as
``yaml.YAMLError`` with a problem mark, so the recipe reader reports the line.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError

MAX_VALUES = 100_000
"""Most values (scalars, lists, mappings, counting every alias expansion) a recipe may hold;
real recipes hold a few hundred."""


class _StrictLoader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    seen = first.get(key)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                if seen is not None:
                    # a key is named when it looks like one, never echoed from another
                    # kind of file
                    name = f" {key!r}" if isinstance(key, str) and key.isidentifier() \
                        and len(key) <= 64 else ""
                    raise ConstructorError(
                        "while reading a mapping", node.start_mark,
                        f"duplicate key{name} (lines {seen.line + 1} and "
                        f"{key_node.start_mark.line + 1})", key_node.start_mark)
                first[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def expanded_size(data: Any, limit: int = MAX_VALUES) -> int:
    """How many values ``data`` holds once every shared reference (YAML alias) is counted
    each time it is used; stops counting past ``limit``. Linear in the distinct objects."""
    memo: dict[int, int] = {}

    def size(obj: Any) -> int:
        if not isinstance(obj, dict | list):
            return 1
        key = id(obj)
        if key not in memo:
            memo[key] = limit + 1  # a cycle counts as too big
            children = obj.items() if isinstance(obj, dict) else ((None, v) for v in obj)
            total = 1
            for _, value in children:
                total += size(value)
                if total > limit:
                    break
            memo[key] = min(total, limit + 1)
        return memo[key]

    return size(data)


class AliasBombError(yaml.YAMLError):
    """A document whose aliases expand past :data:`MAX_VALUES` values."""

    def __init__(self, limit: int):
        self.problem = (f"its aliases expand to more than {limit:,} values (an alias bomb?); "
                        f"refused before expanding them")
        self.problem_mark = None
        super().__init__(self.problem)


def load(text: str, limit: int = MAX_VALUES) -> Any:
    """``yaml.safe_load`` that refuses duplicate keys and alias expansion past ``limit``."""
    data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    if expanded_size(data, limit) > limit:
        raise AliasBombError(limit)
    return data

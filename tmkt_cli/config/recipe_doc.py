"""Render the recipe reference (docs/recipes.md) from the schema in config/schema.py."""

from __future__ import annotations

import dataclasses
import typing

from tmkt_cli.config import Recipe, describe_type, field_docs, iter_fields


def _range(meta) -> str:
    parts = [f"{sym} {meta[k]}" for k, sym in (("ge", ">="), ("gt", ">"), ("le", "<="),
                                               ("lt", "<")) if meta.get(k) is not None]
    if meta.get("choices") is not None:
        parts.append("one of " + ", ".join(f"`{c}`" for c in meta["choices"]()))
    return ", ".join(parts)


def render() -> str:
    lines = ["# Recipe reference", "",
             "Generated from `tmkt_cli/config/schema.py` by `tmkt recipe-doc`; do not edit by hand.",
             "Every key below may appear in a recipe YAML file or be set with",
             "`--set key=value`. Keys marked *volatile* change how a run executes but not what",
             "it computes: they are left out of the config hash.", ""]
    docs = field_docs(Recipe)
    hints = typing.get_type_hints(Recipe)
    top = [f for f in dataclasses.fields(Recipe) if not dataclasses.is_dataclass(hints[f.name])]
    sections = [f for f in dataclasses.fields(Recipe) if dataclasses.is_dataclass(hints[f.name])]
    lines += ["## Shared keys", "", "| key | type | default | help |", "|---|---|---|---|"]
    for f in top:
        default = getattr(Recipe(), f.name)
        lines.append(f"| `{f.name}` | {describe_type(hints[f.name])} | `{default!r}` | "
                     f"{docs.get(f.name, '')} |")
    for f in sections:
        cls = hints[f.name]
        lines += ["", f"## `{f.name}`", "", docs.get(f.name, ""), ""]
        if cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "("):
            lines += [" ".join(cls.__doc__.split()), ""]
        lines += ["| key | type | default | range | help |", "|---|---|---|---|---|"]
        for key, tp, default, doc, meta in iter_fields(cls, f"{f.name}."):
            vol = " *volatile*" if meta.get("volatile") else ""
            lines.append(f"| `{key}` | {describe_type(tp).replace('|', '&#124;')} | "
                         f"`{default!r}` | {_range(meta)} | {doc}{vol} |")
    return "\n".join(lines) + "\n"


__all__ = ["render", "typing"]

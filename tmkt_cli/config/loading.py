"""Recipes from YAML: strict loading into the schema (config/schema.py), ``--set a.b=c``
overrides, did-you-mean for unknown keys, the per-stage config and its hash.

The schema's dataclasses stay plain; everything that reads, checks, converts or prints them is
here: attribute docstrings (the help text), type conversion with ranges, nearest-key
suggestions, recipe inheritance (``base:``), overrides, and the hash that names a stage's
computation.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import hashlib
import inspect
import json
import math
import re
import textwrap
import types
import typing
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml

from tmkt_cli.config import safe_yaml
from tmkt_cli.config.schema import STAGE_IGNORED_KEYS, STAGE_SECTIONS, Recipe
from tmkt_cli.errors import TmktError
from tmkt_cli.methods.registry import resolve as resolve_method

# --------------------------------------------------------------------------------------------
# Field documentation (attribute docstrings)
# --------------------------------------------------------------------------------------------

@cache
def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass: the string literal right after each field."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def describe_type(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(describe_type(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {describe_type(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "section"
    return getattr(tp, "__name__", str(tp))


def iter_fields(cls: type = Recipe, prefix: str = ""):
    """Yield (dotted key, type, default, doc, metadata) for every leaf key of the schema."""
    docs = field_docs(cls)
    instance = cls()
    for f in dataclasses.fields(cls):
        tp = _hints(cls)[f.name]
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            yield from iter_fields(tp, key + ".")
        else:
            yield key, tp, getattr(instance, f.name), docs.get(f.name, ""), f.metadata


_NO_DEFAULT = object()


def schema_default(key: str) -> Any:
    """The schema's default of a dotted recipe key (a sentinel no value equals if the key is
    unknown)."""
    defaults = _schema_defaults()
    return defaults.get(key, _NO_DEFAULT)


@cache
def _schema_defaults() -> dict[str, Any]:
    return {key: to_dict(default) if dataclasses.is_dataclass(default) else default
            for key, _, default, *_ in iter_fields()}


def all_keys() -> list[str]:
    keys = []
    for key, *_ in iter_fields():
        keys.append(key)
    return keys


# --------------------------------------------------------------------------------------------
# Validation: dict -> dataclasses
# --------------------------------------------------------------------------------------------

def _closest(key: str, candidates: list[str]) -> str:
    match = difflib.get_close_matches(key, candidates, n=1, cutoff=0.5)
    if not match:  # try the last path component alone (a right key in the wrong section)
        leaf = key.rsplit(".", 1)[-1]
        match = [c for c in candidates if c.rsplit(".", 1)[-1] == leaf][:1]
    return f"; did you mean '{match[0]}'?" if match else ""


def _closest_field(prefix: str, name: str, hints: dict[str, Any]) -> str:
    """A misspelt key next to the one meant (``trian`` for ``train``): suggest the sibling; a
    section is suggested with a trailing dot."""
    match = difflib.get_close_matches(name, list(hints), n=1, cutoff=0.75)
    if not match:
        return ""
    dot = "." if dataclasses.is_dataclass(hints[match[0]]) else ""
    return f"; did you mean '{prefix}{match[0]}{dot}'?"


def _check_range(key: str, value: Any, meta: typing.Mapping[str, Any]) -> None:
    if meta.get("choices") is not None:
        allowed = meta["choices"]()
        if value not in allowed:
            raise TmktError(f"recipe key '{key}': expected one of "
                            f"{', '.join(map(repr, allowed))}, got {value!r}"
                            + _closest_value(value, allowed))
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise TmktError(f"recipe key '{key}': expected a finite number, got {value}")
    for bound, ok, word in (("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
                            ("le", lambda v, b: v <= b, "<="), ("lt", lambda v, b: v < b, "<")):
        b = meta.get(bound)
        if b is not None and not ok(value, b):
            raise TmktError(f"recipe key '{key}': expected a value {word} {b}, got {value!r}")


def _convert(key: str, value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(key, value, a)
            except TmktError as e:
                errors.append(e)
        raise TmktError(f"recipe key '{key}': expected {describe_type(tp)}, got {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise TmktError(f"recipe key '{key}': expected one of "
                            f"{', '.join(map(repr, allowed))}, got {value!r}"
                            + _closest_value(value, allowed))
        return value
    if origin is list:
        if not isinstance(value, list):
            raise TmktError(f"recipe key '{key}': expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_convert(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise TmktError(f"recipe key '{key}': expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TmktError(f"recipe key '{key}': expected an integer, got {value!r}")
        if not -2**63 <= value < 2**63:  # numpy, torch and HDF5 hold 64-bit integers
            raise TmktError(f"recipe key '{key}': {value} does not fit in a 64-bit integer")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TmktError(f"recipe key '{key}': expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise TmktError(f"recipe key '{key}': expected a string, got {value!r}")
        if "\0" in value:  # no file name or path may hold one; the OS would refuse later
            raise TmktError(f"recipe key '{key}': contains a NUL byte: {value!r}")
        return value
    raise TypeError(f"unsupported schema type {tp!r} for {key}")  # a bug in the schema


def _closest_value(value: Any, allowed: tuple) -> str:
    if not isinstance(value, str):
        return ""
    match = difflib.get_close_matches(value, [a for a in allowed if isinstance(a, str)], n=1)
    return f"; did you mean {match[0]!r}?" if match else ""


def build(cls: type, raw: Any, prefix: str = "") -> Any:
    """Validate a raw mapping against dataclass ``cls``; every error names the full key."""
    where = prefix.rstrip(".") or "recipe"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise TmktError(f"recipe key '{where}': expected a mapping of keys, got {raw!r}")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in raw.items():
        key = f"{prefix}{k}"
        if k not in fields:
            if not is_key_name(k):  # text of a file that is no recipe: named, not echoed
                at = f"recipe section '{where}'" if prefix else "the recipe"
                raise TmktError(f"{at}: a key that is not a key name ({describe_text(k)}); "
                                f"is this a tmkt recipe?")
            hint = _closest_field(prefix, str(k), hints) or _closest(key, all_keys())
            raise TmktError(f"unknown recipe key '{key}'{hint}")
        tp = hints[k]
        if dataclasses.is_dataclass(tp):
            kwargs[k] = build(tp, v, key + ".")
        else:
            value = _convert(key, v, tp)
            _check_range(key, value, fields[k].metadata)
            kwargs[k] = value
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    return dataclasses.asdict(obj)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

def read_yaml(path: Path, what: str = "recipe") -> dict:
    if not path.exists():
        raise TmktError(f"{what} not found: {path}")
    if path.is_dir():
        raise TmktError(f"{what} is a folder, expected a YAML file: {path}")
    try:
        data = safe_yaml.load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        # PyYAML's problem quotes at most one token (a character, a tag, an alias); a long
        # one is the file's text, which the message locates instead of echoing
        if len(problem) > 120:
            problem = problem.split("'")[0].rstrip() + " (a token too long to show)"
        raise TmktError(f"{what} {path}{at}: not valid YAML: {problem}") from None
    except UnicodeDecodeError:
        raise TmktError(f"{what} {path}: not a text file") from None
    if data is None:
        raise TmktError(f"{what} {path} is empty")
    if not isinstance(data, dict):
        raise TmktError(f"{what} {path}: expected a mapping of keys at the top, "
                        f"got {type(data).__name__}")
    strange = _strange_key(data)
    if strange:  # another kind of file that YAML happens to read (a password database, say)
        section, key = strange
        place = f"in section '{section}'" if section else "at the top"
        raise TmktError(f"{what} {path}: not a tmkt recipe (a key {place} is not a key name "
                        f"but {describe_text(key)})")
    return data


def _strange_key(data: dict, prefix: str = "") -> tuple[str, Any] | None:
    """The first key, at any depth, that is not a key name: (its section, the key)."""
    for key, value in data.items():
        if not is_key_name(key):
            return prefix.rstrip("."), key
        found = _strange_key(value, f"{prefix}{key}.") if isinstance(value, dict) else None
        if found:
            return found
    return None


KEY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
"""What a recipe key looks like; anything else is shown by its length, never echoed."""


def is_key_name(key: Any) -> bool:
    return isinstance(key, str) and KEY_NAME.fullmatch(key) is not None


def describe_text(value: Any) -> str:
    """A value from a file, described without echoing it."""
    if isinstance(value, str):
        return f"a text of {len(value)} characters"
    return f"a {type(value).__name__}"


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _load_raw(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    resolved = path.resolve()
    if resolved in seen:
        raise TmktError(f"recipe {path}: 'base' chain loops back to itself")
    raw = read_yaml(path)
    base = raw.get("base")
    if base:
        if not isinstance(base, str):
            raise TmktError(f"recipe key 'base': expected a string, got {base!r}")
        base_path = path.parent / base
        if not base_path.exists():
            raise TmktError(f"recipe key 'base' in {path}: file not found: {base_path}")
        raw = deep_merge(_load_raw(base_path, (*seen, resolved)), raw)
    raw.pop("base", None)
    return raw


def load_raw_recipe(path: str | Path) -> dict:
    """A recipe file with its ``base`` chain merged, before validation."""
    return _load_raw(Path(path))


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise TmktError(f"--set {text!r}: expected KEY=VALUE, e.g. --set train.epochs=5")
    key, value = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise TmktError(f"--set {text!r}: the key is empty or malformed")
    try:
        parsed = safe_yaml.load(value) if value.strip() else ""
    except safe_yaml.AliasBombError as e:
        raise TmktError(f"--set {key}: the value {e.problem}") from None
    except yaml.YAMLError:
        parsed = value
    return key.split("."), parsed


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    raw = json.loads(json.dumps(raw))  # deep copy of plain data
    for text in overrides:
        parts, value = parse_override(text)
        node = raw
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                section = ".".join(parts[:i + 1])
                raise TmktError(f"--set {text!r}: '{section}' is not a section")
            node = nxt
        leaf = parts[-1]
        node[leaf] = _merged_section(text, node.get(leaf), value) if _is_section(parts) \
            else value
    return raw


def _is_section(parts: list[str]) -> bool:
    """Whether the key ``parts`` names a section of the schema (``train``,
    ``prepare.emulator``), not a value."""
    cls: Any = Recipe
    for part in parts:
        cls = _hints(cls).get(part) if dataclasses.is_dataclass(cls) else None
    return dataclasses.is_dataclass(cls)


def _merged_section(text: str, current: Any, value: Any) -> dict:
    """``--set 'train={max_steps: 5}'``: the mapping merges into the recipe's section, key by
    key, as the same keys set one at a time would (and as ``base:`` merges a recipe). Anything
    else for a section is refused: it would reset every key of the section to its default."""
    key = text.split("=", 1)[0].strip()
    if not isinstance(value, dict):
        raise TmktError(f"--set {text!r}: '{key}' is a section; set its keys (--set "
                        f"{key}.KEY=VALUE) or merge a mapping into it (--set "
                        f"'{key}={{KEY: VALUE}}')")
    return deep_merge(current if isinstance(current, dict) else {}, value)


def default_name(path: Path | None) -> str:
    if path is None:
        return "default"
    stem = path.stem
    parent = path.resolve().parent.name
    return f"{parent}-{stem}" if parent and parent != "recipes" else stem


def load_recipe(path: str | Path | None, overrides: list[str] = (), base_raw: dict | None = None
                ) -> Recipe:
    """Load a recipe file (or only defaults with ``path=None``), apply ``--set`` overrides,
    validate, and fill derived values (name, method switches)."""
    p = Path(path) if path is not None else None
    raw = _load_raw(p) if p is not None else {}
    if base_raw:
        raw = deep_merge(base_raw, raw)
    raw_file = raw
    raw = apply_overrides(raw, list(overrides))
    recipe = build(Recipe, raw)
    if not recipe.name:
        recipe.name = default_name(p)
    if "/" in recipe.name or recipe.name in (".", ".."):
        raise TmktError(f"recipe key 'name': must be a plain folder name, got {recipe.name!r}")
    if "/" in recipe.variant or recipe.variant in (".", ".."):
        raise TmktError(f"recipe key 'variant': must be a plain folder name, got "
                        f"{recipe.variant!r}")
    check_path_lengths(recipe)
    recipe.method = resolve_method(recipe.method)
    if recipe.variant == "auto":
        recipe.variant = _auto_variant(raw_file, recipe, overrides)
    return recipe


NAME_MAX, PATH_MAX = 255, 4096
"""Linux's limits on one file name and a whole path, in bytes."""


def check_path_lengths(recipe: Recipe) -> None:
    """Names and paths the file system would refuse, refused before any folder is made."""
    for key, value in (("name", recipe.name), ("paths.runs", recipe.paths.runs),
                       ("paths.dataset", recipe.paths.dataset)):
        encoded = value.encode("utf-8", "surrogateescape")
        longest = max((len(part.encode("utf-8", "surrogateescape"))
                       for part in Path(value).parts), default=0)
        if longest > NAME_MAX:
            raise TmktError(f"recipe key '{key}': a folder name of {longest} bytes (the file "
                            f"system allows {NAME_MAX}): {value[:40]}...")
        if len(encoded) > PATH_MAX - 512:  # room for the run folders and file names below
            raise TmktError(f"recipe key '{key}': a path of {len(encoded)} bytes (at most "
                            f"{PATH_MAX - 512}): {value[:40]}...")


def _auto_variant(raw_file: dict, recipe: Recipe, overrides: list[str]) -> str:
    """The folder of a ``--set`` variant (tmkt_cli/config/variants.py)."""
    from tmkt_cli.config.variants import PLACED_BY_HAND, variant_name

    if not overrides or any(parse_override(o)[0][0] in PLACED_BY_HAND for o in overrides):
        return ""
    plain = build(Recipe, raw_file)
    plain.method = resolve_method(plain.method)
    volatile = {key for key, *_, meta in iter_fields() if meta.get("volatile")}
    return variant_name(to_dict(plain), to_dict(recipe), volatile, all_keys())


def dump_yaml(obj: Any) -> str:
    data = to_dict(obj) if dataclasses.is_dataclass(obj) else obj
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def _strip_volatile(cls: type, data: dict) -> dict:
    out = {}
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("volatile"):
            continue
        v = data[f.name]
        if f.metadata.get("hash_at_default") is False and v == f.default:
            continue  # a key added later, at the value runs made before it computed
        out[f.name] = _strip_volatile(hints[f.name], v) if dataclasses.is_dataclass(
            hints[f.name]) else v
    return out


def stage_config(recipe: Recipe, stage: str) -> dict:
    """The part of the recipe a stage reads, without volatile keys: what its hash covers."""
    full = _strip_volatile(Recipe, to_dict(recipe))
    out = {k: full[k] for k in STAGE_SECTIONS[stage]}
    for key in STAGE_IGNORED_KEYS.get(stage, ()):
        section, leaf = key.split(".")
        out[section] = {k: v for k, v in out[section].items() if k != leaf}
    return out


def config_hash(data: Any) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def require_path(path: str | Path, key: str, kind: Literal["file", "dir", "any"] = "any") -> Path:
    """A path the recipe points to must exist: the error names the path and the key."""
    p = Path(path)
    if not str(path):
        raise TmktError(f"recipe key '{key}' is empty: it must name a {kind}")
    if not p.exists():
        raise TmktError(f"{p}: not found (from recipe key '{key}')")
    if kind == "file" and not p.is_file():
        raise TmktError(f"{p}: expected a file, found a folder (from recipe key '{key}')")
    if kind == "dir" and not p.is_dir():
        raise TmktError(f"{p}: expected a folder, found a file (from recipe key '{key}')")
    return p

"""Variant runs: a recipe run with ``--set`` overrides gets its own folder.

``tmkt train-tmkt digits/tmkt --set data.event_fraction=0.05`` must not land in (and be
refused by) the folder of the recipe's own run, and a sweep should need no hand-built paths.
With ``variant: auto`` (the default) the run lives at ``<runs>/<name>/<variant>/seed<seed>/``,
the variant named after the overridden keys whose values differ from the recipe's, e.g.
``event_fraction-0.05`` or ``event_fraction-0.05+mix_ratio-0.8``. The same overrides always
give the same folder, whatever order or spelling (``.05``) they were given in, and an override
that repeats the recipe's own value is no variant.

Only what the training stages compute names a variant (the prepare, data, model, train,
method, pretrain_ann and distill sections): ``eval.*`` and ``cam.*`` overrides change how a
trained run is looked at, not which run, and keys that only say where something lives
(``distill.teacher``), volatile keys (workers, logging) and ``seed`` (its own folder level) are
left out. Overriding ``name`` or ``variant`` places the run by hand: no automatic variant then.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

SECTIONS = ("prepare", "data", "model", "train", "method", "pretrain_ann", "distill")
NOT_IDENTITY = ("distill.teacher", "pretrain_ann.init_weights")
PLACED_BY_HAND = ("name", "variant")
MAX_LENGTH = 96


def flat_keys(data: Any, prefix: str = "") -> dict[str, Any]:
    """A nested recipe mapping as dotted keys: ``{"data": {"seed": 1}}`` -> ``{"data.seed": 1}``."""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flat_keys(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: data}


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "_".join(_format(v) for v in value) or "none"
    return str(value) if value != "" else "none"


def _short_keys(keys: list[str], every_key: list[str]) -> dict[str, str]:
    """A key's leaf name where no other schema key ends the same way, else the dotted key."""
    leaves: dict[str, int] = {}
    for key in every_key:
        leaf = key.rsplit(".", 1)[-1]
        leaves[leaf] = leaves.get(leaf, 0) + 1
    return {k: (k.rsplit(".", 1)[-1] if leaves[k.rsplit(".", 1)[-1]] == 1 else k) for k in keys}


def variant_name(plain: dict, overridden: dict, volatile: set[str], every_key: list[str]
                 ) -> str:
    """The variant folder for a recipe whose values are ``overridden`` (its values as the file
    says them: ``plain``), or "" when the two compute the same thing."""
    before, after = flat_keys(plain), flat_keys(overridden)
    changed = sorted(k for k in after
                     if k.split(".", 1)[0] in SECTIONS and k not in NOT_IDENTITY
                     and k not in volatile and after[k] != before.get(k))
    if not changed:
        return ""
    short = _short_keys(changed, every_key)
    text = "+".join(f"{short[k]}-{_format(after[k])}" for k in changed)
    readable = re.sub(r"[^A-Za-z0-9._+=-]", "_", text)
    exact = "\n".join(f"{k}={after[k]!r}" for k in changed)
    digest = hashlib.sha256(exact.encode()).hexdigest()[:10]
    if readable != text or not all(_shown_exactly(after[k]) for k in changed):
        # the readable name drops something (0.1234567 and 0.1234568 both read 0.123457;
        # prepare.root a/b and a_b both read a_b): the exact values' hash keeps them apart
        return f"{readable[:MAX_LENGTH - 11].rstrip('+-')}-{digest}"
    if len(readable) > MAX_LENGTH:  # still readable, still unique
        return f"{readable[:MAX_LENGTH - 11].rstrip('+-')}-{digest}"
    return readable


def _shown_exactly(value: Any) -> bool:
    """Whether :func:`_format` gives back ``value`` without loss."""
    if isinstance(value, float):
        return float(_format(value)) == value
    if isinstance(value, list | tuple):
        return bool(value) and all(_shown_exactly(v) and "_" not in str(v) for v in value)
    if isinstance(value, str):  # "+" joins keys; "none" is how an empty value reads
        return "+" not in value and value != "none"
    return True

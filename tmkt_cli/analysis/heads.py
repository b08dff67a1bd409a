"""Which head of a two-head SNN predicts: the rule of ``model.test_head``, as a pure function.

A two-stream model (``model.heads: separate`` or ``residual``) has an event head and a static
head, and both read the events at test time. ``model.test_head`` names the head that gives a
run's headline accuracy (its log line, the manifest's ``test_acc``, ``tmkt eval``, the report):

* ``event`` / ``static``: that head, always (``event`` is the KT reference's).
* ``validation``: the head with the higher top-1 on the run's own validation split, the
  event head on a tie (the reference's head, so a tie changes nothing); without a validation
  split (``data.val_fraction: 0``, the published-setting recipes) the event head, since
  choosing on the test split would be choosing on what is reported.

The rule was stated before the five-seed benchmark it is measured on (issue 25;
docs/methods.md, "Which head predicts").
"""

from __future__ import annotations

HEADS = ("event", "static")
RULES = (*HEADS, "validation")


def head_accuracies(metrics: dict, test_head: str, prefix: str = "") -> dict[str, float]:
    """Each head's top-1 from one evaluation's metrics, in which ``acc`` is the test head's
    and ``acc_<head>_head`` every other head's (``prefix``: ``val_`` for the validation
    split's keys)."""
    accs = {test_head: metrics[f"{prefix}acc"]}
    accs.update({h: metrics[f"{prefix}acc_{h}_head"] for h in HEADS
                 if f"{prefix}acc_{h}_head" in metrics})
    return accs


def choose_head(rule: str, val_event: float | None = None,
                val_static: float | None = None) -> str:
    """The head ``rule`` picks, given each head's validation top-1 (None: not measured)."""
    if rule in HEADS:
        return rule
    if rule != "validation":
        raise ValueError(f"unknown head rule {rule!r}; expected one of {', '.join(RULES)}")
    if val_event is None or val_static is None:
        return "event"
    return "static" if val_static > val_event else "event"

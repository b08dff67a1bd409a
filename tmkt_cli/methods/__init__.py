"""The methods: each declared once (registry.py, builtin.py), and their maths as pure
functions: time-step mixup (tsm), losses, schedules, the optimizer (optim).

Equations, sources and tmkt's choices where the papers leave them open: docs/methods.md.
"""

from tmkt_cli.methods import builtin  # noqa: F401  (registers the shipped methods)

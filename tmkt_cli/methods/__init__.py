"""The maths of the methods as pure functions: time-step mixup (tsm), losses, schedules.

Equations, sources and tmkt's choices where the papers leave them open: docs/methods.md.
"""

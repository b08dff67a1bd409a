"""Helpers that tests and benchmarks share (outside the tmkt package)."""

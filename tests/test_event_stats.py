"""tools/event_stats.py: the figures docs/datasets.md quotes, on hand-made recordings."""

from __future__ import annotations

import numpy as np
import pytest
from support.scripts import load_script

from tmkt_cli.data.sources import EVENT_DTYPE


@pytest.fixture(scope="module")
def stats():
    return load_script("event_stats")


def events(rows: list[tuple[int, int, int, int]]) -> np.ndarray:
    return np.array(rows, dtype=EVENT_DTYPE)


def test_one_recording(stats):
    ev = events([(0, 0, 0, 1), (1000, 1, 0, 1), (5000, 1, 0, 0), (300000, 3, 3, 1)])
    s = stats.recording_stats(ev, (4, 4))
    assert s["events"] == 4 and s["on_fraction"] == 0.75
    assert s["events_per_pixel"] == 4 / 16 and s["active_pixel_fraction"] == 3 / 16
    assert s["duration_ms"] == 300.0 and s["sensor"] == "4x4"


def test_summary_row(stats):
    rows = [stats.recording_stats(events([(0, 0, 0, 1)] * n), (2, 2)) for n in (2, 4, 6)]
    s = stats.summarise(rows)
    assert s["recordings"] == 3 and s["events_mean"] == 4.0 and s["events_median"] == 4.0
    assert s["on_fraction"] == 1.0 and s["events_per_pixel"] == 1.0
    row = stats.markdown_row("toy", s)
    assert row.startswith("| toy | 3 | 2x2 | 4 (sd 2, median 4) | 100.0% | 1.00 | 25% |")
    assert row.count("|") == stats.HEADER.splitlines()[0].count("|")

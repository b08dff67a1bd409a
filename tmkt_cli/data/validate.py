"""Checks that an event file does not lie: pure functions the readers call on what they
decoded, each raising one TmktError line naming the file (``label``).

A file that passes its format's own checks (right size, right magic) can still be something
else under the expected extension, hold only bookkeeping records, or carry timestamps in
another unit. Such a file must be refused, never integrated into a plausible-looking sample.
"""

from __future__ import annotations

import numpy as np

from tmkt_cli.errors import TmktError

MAX_SPAN_US = 3_600 * 10**6
"""The longest recording any supported dataset holds is a few seconds (DVS-Gesture: ~6 s); a
span past an hour means timestamps in another unit (ns, or µs read as ms) or garbage."""


def check_finite_times(t: np.ndarray, label: str) -> None:
    """Timestamps read as floats (DVS-Gesture's .npy) must all be finite."""
    t = np.asarray(t)
    if np.issubdtype(t.dtype, np.floating) and t.size and not np.isfinite(t).all():
        bad = int((~np.isfinite(t)).sum())
        first = int(np.flatnonzero(~np.isfinite(t))[0])
        raise TmktError(f"{label}: {bad} timestamp(s) are NaN or infinite (first at event "
                        f"{first}); not a valid recording")


def check_time_span(t_us: np.ndarray, label: str, max_span_us: int = MAX_SPAN_US) -> None:
    """The timestamps (µs) span no more than ``max_span_us`` and are not negative."""
    if t_us.size == 0:
        return
    low, high = int(t_us.min()), int(t_us.max())
    if low < 0:
        raise TmktError(f"{label}: negative timestamp {low} µs; not a valid recording")
    if high - low > max_span_us:
        raise TmktError(f"{label}: the timestamps span {(high - low) / 1e6:,.0f} s, more "
                        f"than the {max_span_us / 1e6:,.0f} s any recording of these datasets "
                        f"lasts: a wrong time unit or another format under this extension")


def check_has_events(events: int, markers: int, label: str) -> None:
    """A recording holds at least one event: one made only of a header, or of bookkeeping
    records (time-overflow markers, special events), is refused rather than integrated into
    empty frames that would pass for a sample."""
    if events == 0:
        what = (f"{markers} time-overflow/special record(s) and no event" if markers
                else "a header and no event")
        raise TmktError(f"{label}: {what}; not a recording")

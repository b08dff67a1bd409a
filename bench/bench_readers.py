"""Event-file reading speed: tmkt's readers against tonic's on the same files.

ATIS ``.bin`` (N-MNIST, N-Caltech101) with ``tonic.io.read_mnist_file``, and AEDAT 2.0
(CIFAR10-DVS) with ``tonic.io.get_aer_events_from_file`` (tonic returns the raw address and
timestamp words, timed alone and followed by the decoding tmkt does). 300,000 events per file, written by
``tests/support/event_writers.py``. Medians over alternating calls, in one process.

    .venv/bin/python bench/bench_readers.py [--events 300000] [--repeats 15]
        [--atis-baseline CHECKOUT]

``--atis-baseline`` also times another checkout's ``read_atis_bin`` (its
``tmkt_cli/data/formats/atis.py``, e.g. main's: ``git worktree add /tmp/tmkt-main main``) on
the same file, alternating with this one's, and checks both decode the same events.

tonic is GPL-3.0: it is only called here, as a reference.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tmkt_cli.data.formats import make_events, read_aedat2, read_atis_bin

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.event_writers import write_aedat2, write_atis_bin  # noqa: E402


def random_events(n: int, side: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return make_events(np.sort(rng.integers(0, 300_000, n)), rng.integers(0, side, n),
                       rng.integers(0, side, n), rng.integers(0, 2, n))


def tonic_then_decode(path: str, version: float, start: int) -> np.ndarray:
    """tonic's raw words, decoded as tmkt decodes them (DVS128 layout, special events
    dropped): the same result as read_aedat2."""
    from tonic.io import get_aer_events_from_file

    raw = get_aer_events_from_file(path, version, start)
    address = raw["address"].astype(np.int64)
    pixel = (address & (1 << 15)) == 0
    address = address[pixel]
    return make_events(raw["timeStamp"][pixel].astype(np.int64), 127 - ((address >> 1) & 0x7F),
                       127 - ((address >> 8) & 0x7F), 1 - (address & 1))


def load_function(path: Path, name: str):
    """``name`` from the module file ``path`` (its own imports resolve in this checkout)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"baseline_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def median_ms(calls: dict, repeats: int) -> dict[str, float]:
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():  # alternate, so machine noise hits all alike
            t0 = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - t0)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--atis-baseline", type=Path, default=None, metavar="CHECKOUT")
    args = ap.parse_args()
    from tonic.io import get_aer_events_from_file, read_aedat_header_from_file, read_mnist_file

    tonic_atis = np.dtype([("x", int), ("y", int), ("t", int), ("p", int)])
    with tempfile.TemporaryDirectory() as tmp:
        atis, aedat = Path(tmp) / "rec.bin", Path(tmp) / "rec.aedat"
        write_atis_bin(atis, random_events(args.events, 34))
        write_aedat2(aedat, random_events(args.events, 128, seed=1))
        version, start, _ = read_aedat_header_from_file(str(aedat))
        rows = {}
        if args.atis_baseline is not None:
            baseline = load_function(args.atis_baseline / "tmkt_cli/data/formats/atis.py",
                                     "read_atis_bin")
            if baseline(atis)[0].tobytes() != read_atis_bin(atis)[0].tobytes():
                raise SystemExit("the baseline's ATIS reader decodes other events")
            rows["ATIS .bin, against the baseline"] = median_ms({
                "tmkt read_atis_bin": lambda: read_atis_bin(atis),
                f"read_atis_bin of {args.atis_baseline}": lambda: baseline(atis),
            }, args.repeats)
        rows |= {
            "ATIS .bin": median_ms({
                "tmkt read_atis_bin": lambda: read_atis_bin(atis),
                "tonic read_mnist_file": lambda: read_mnist_file(str(atis), dtype=tonic_atis),
            }, args.repeats),
            "AEDAT 2.0": median_ms({
                "tmkt read_aedat2": lambda: read_aedat2(aedat),
                "tonic get_aer_events_from_file + the same decoding":
                    lambda: tonic_then_decode(str(aedat), version, start),
            }, args.repeats),
            "AEDAT 2.0, raw words only": median_ms({
                "tmkt read_aedat2": lambda: read_aedat2(aedat),
                "tonic get_aer_events_from_file (undecoded)": lambda: get_aer_events_from_file(
                    str(aedat), version, start),
            }, args.repeats),
        }
    print(f"{args.events:,} events per file, median of {args.repeats} calls")
    print("| format | reader | ms | other / tmkt |")
    print("|---|---|---|---|")
    for fmt, result in rows.items():
        ours, theirs = result.values()
        for name, ms in result.items():
            print(f"| {fmt} | {name} | {ms:.2f} | {theirs / ours:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

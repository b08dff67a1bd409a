"""Frame integration speed: tmkt's ``events_to_frames`` against tonic, spikingjelly and the floor.

For each recording size (10k to 3M events by default) on an N-Caltech101-sized sensor
(180 x 240), T = 10 frames, both splits (by time, by number), it times:

* the floor: ``np.bincount`` of a ready flat index (frame * 2HW + position, int64) with
  ``minlength`` T * 2HW, i.e. counting alone, with every index already computed;
* tmkt's ``events_to_frames`` (uint32 counts, every check included);
* tonic's ``ToFrame`` (``n_time_bins`` / ``n_event_bins``) on tonic's own event layout;
* spikingjelly's ``integrate_events_by_fixed_frames_number`` (``"time"`` / ``"number"``) on
  its dict of contiguous arrays.

Each contender is timed in bursts of consecutive calls (its steady state, as in prepare's loop
over recordings), and the bursts alternate between contenders over several passes, so machine
noise hits all alike; the figures are medians of single calls and every ratio comes from this
one run. The load average is printed at the start and the end.

    .venv/bin/python bench/bench_frames.py [--events 10000 30000 ...] [--passes 5]
        [--baseline CHECKOUT]

``--baseline`` adds another checkout's ``events_to_frames`` (its tmkt_cli/data/frames.py, e.g.
main's: ``git worktree add /tmp/tmkt-main main``) as one more contender.

tonic is GPL-3.0: it is only called here, as a reference.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
import types
from pathlib import Path

import numpy as np

from tmkt_cli.data.frames import events_to_frames
from tmkt_cli.data.sources import EVENT_DTYPE

HEIGHT, WIDTH, T = 180, 240, 10


def make_events(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ev = np.empty(n, dtype=EVENT_DTYPE)
    ev["t"] = np.sort(rng.integers(0, 300_000, n))
    ev["x"] = rng.integers(0, WIDTH, n)
    ev["y"] = rng.integers(0, HEIGHT, n)
    ev["p"] = rng.integers(0, 2, n)
    return ev


def load_spikingjelly_integration():
    """spikingjelly's ``integrate_events_by_fixed_frames_number``, or None.

    Its module (spikingjelly/datasets/utils.py) imports torchvision at the top for helpers the
    integration does not use, and the torchvision wheel does not fit the CPU torch here
    (docs/ECOSYSTEM). So the file is loaded on its own with a stub standing in for torchvision.
    """
    spec = importlib.util.find_spec("spikingjelly")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "datasets" / "utils.py"
    if "torchvision" not in sys.modules:
        stub = types.ModuleType("torchvision")
        stub.transforms = types.ModuleType("torchvision.transforms")
        sys.modules["torchvision"] = stub
        sys.modules["torchvision.transforms"] = stub.transforms
    module = types.ModuleType("spikingjelly.datasets.utils")
    module.__package__ = "spikingjelly.datasets"
    module.__file__ = str(path)
    try:
        exec(compile(path.read_text(), str(path), "exec"), module.__dict__)
    except Exception as e:  # report and go on without it
        print(f"spikingjelly: could not load its integration function ({e})")
        return None
    return module.integrate_events_by_fixed_frames_number


SIZES = (10_000, 30_000, 100_000, 300_000, 1_000_000, 3_000_000)
SPLITS = ("time", "number")


def load_baseline(checkout: Path):
    """``events_to_frames`` of another checkout's frames.py."""
    path = checkout / "tmkt_cli" / "data" / "frames.py"
    spec = importlib.util.spec_from_file_location("baseline_frames", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.events_to_frames


def contenders(ev: np.ndarray, split: str, integrate, baseline=None) -> dict:
    """name -> zero-argument call, for one recording and one split."""
    frames = events_to_frames(ev, (HEIGHT, WIDTH), T, split)
    per_frame = frames.reshape(T, -1).sum(axis=1).astype(np.int64)
    if int(per_frame.sum()) != ev.size:
        raise SystemExit(f"tmkt lost events ({split})")
    plane = 2 * HEIGHT * WIDTH
    # The recording is sorted, so each frame holds a contiguous run of events.
    index = np.repeat(np.arange(T, dtype=np.int64) * plane, per_frame)
    index += (ev["p"].astype(np.int64) * HEIGHT + ev["y"]) * WIDTH + ev["x"]
    calls = {"floor": lambda: np.bincount(index, minlength=T * plane),
             "tmkt": lambda: events_to_frames(ev, (HEIGHT, WIDTH), T, split)}
    if baseline is not None:
        if not np.array_equal(baseline(ev, (HEIGHT, WIDTH), T, split), frames):
            raise SystemExit(f"the baseline counts other frames ({split})")
        calls["baseline"] = lambda: baseline(ev, (HEIGHT, WIDTH), T, split)
    try:
        import tonic.transforms

        tonic_ev = np.empty(ev.size, dtype=[("x", np.int16), ("y", np.int16), ("t", np.int64),
                                            ("p", bool)])  # tonic.io.events_struct
        for k in ("x", "y", "t", "p"):
            tonic_ev[k] = ev[k]
        bins = {"n_time_bins": T} if split == "time" else {"n_event_bins": T}
        to_frame = tonic.transforms.ToFrame(sensor_size=(WIDTH, HEIGHT, 2), **bins)
        calls["tonic"] = lambda: to_frame(tonic_ev)
    except ImportError:
        pass
    if integrate is not None:
        sj_ev = {k: np.ascontiguousarray(ev[k]) for k in ("t", "x", "y", "p")}
        calls["spikingjelly"] = lambda: integrate(sj_ev, split, T, HEIGHT, WIDTH)
    return calls


def time_interleaved(calls: dict, passes: int, burst: int) -> dict[str, float]:
    """Median ms of one call for each contender, bursts alternating over the passes."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(passes):
        for name, fn in calls.items():
            fn()  # the first call of a burst re-warms caches after the other contenders
            for _ in range(burst):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) * 1e3 for name, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--calls", type=int, default=600_000,
                        help="events per burst: a burst is max(1, calls // events) calls")
    parser.add_argument("--baseline", type=Path, default=None, metavar="CHECKOUT")
    args = parser.parse_args()

    integrate = load_spikingjelly_integration()
    baseline = load_baseline(args.baseline) if args.baseline else None
    start, load = time.perf_counter(), os.getloadavg()[0]
    print(f"sensor {HEIGHT} x {WIDTH}, T = {T}; median ms of one call; ratios from this run; "
          f"load average {load:.1f} at the start on {os.cpu_count()} cores")
    others = ["tonic", "spikingjelly"] + (["baseline"] if baseline else [])
    print("| events | split | floor ms | tmkt ms | tmkt / floor | "
          + " | ".join(f"{o} ms | {o} / tmkt" for o in others) + " |")
    print("|---" * (5 + 2 * len(others)) + "|")
    for n in args.events:
        ev = make_events(n)
        for split in SPLITS:
            ms = time_interleaved(contenders(ev, split, integrate, baseline), args.passes,
                                  max(1, args.calls // n))
            cells = [f"{n:,}", split, f"{ms['floor']:.3f}", f"{ms['tmkt']:.3f}",
                     f"{ms['tmkt'] / ms['floor']:.2f}"]
            for other in others:
                cells += ([f"{ms[other]:.3f}", f"{ms[other] / ms['tmkt']:.2f}"]
                          if other in ms else ["-", "-"])
            print("| " + " | ".join(cells) + " |", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end; "
          f"{time.perf_counter() - start:.0f} s in all")


if __name__ == "__main__":
    main()

"""Frame integration speed: tmkt's ``events_to_frames`` against tonic and spikingjelly.

300,000 events on an N-Caltech101-sized sensor (180 x 240), T = 10 frames, each library given
events in its own native layout. Every contender runs in the same process. Each is timed in
bursts of consecutive calls (its steady state, as in prepare's loop over recordings), and the
bursts alternate between contenders over several passes so machine noise hits all alike. The
figures are medians of single calls; the ratios are measured in this one run. Also reports
whether each keeps every event (tonic drops the ones after its last whole time bin).

    .venv/bin/python bench/bench_frames.py [--events 300000] [--passes 8] [--burst 10]

tonic is GPL-3.0: it is only called here, as a reference.
"""

from __future__ import annotations

import argparse
import importlib.util
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--passes", type=int, default=8)
    parser.add_argument("--burst", type=int, default=10)
    args = parser.parse_args()

    ev = make_events(args.events)
    contenders = {
        "tmkt events_to_frames (time)": lambda: events_to_frames(ev, (HEIGHT, WIDTH), T, "time"),
        "tmkt events_to_frames (number)": lambda: events_to_frames(ev, (HEIGHT, WIDTH), T,
                                                                   "number"),
    }
    kept = {"tmkt events_to_frames (time)": None, "tmkt events_to_frames (number)": None}
    try:
        import tonic.transforms

        tonic_ev = np.empty(ev.size, dtype=[("x", np.int16), ("y", np.int16), ("t", np.int64),
                                            ("p", bool)])  # tonic.io.events_struct
        for k in ("x", "y", "t", "p"):
            tonic_ev[k] = ev[k]
        by_time = tonic.transforms.ToFrame(sensor_size=(WIDTH, HEIGHT, 2), n_time_bins=T)
        by_count = tonic.transforms.ToFrame(sensor_size=(WIDTH, HEIGHT, 2), n_event_bins=T)
        contenders["tonic ToFrame(n_time_bins)"] = lambda: by_time(tonic_ev)
        contenders["tonic ToFrame(n_event_bins)"] = lambda: by_count(tonic_ev)
    except ImportError as e:
        print(f"tonic not available ({e})")
    integrate = load_spikingjelly_integration()
    if integrate is not None:
        sj_ev = {k: np.ascontiguousarray(ev[k]) for k in ("t", "x", "y", "p")}
        contenders["spikingjelly fixed_frames_number (time)"] = \
            lambda: integrate(sj_ev, "time", T, HEIGHT, WIDTH)
        contenders["spikingjelly fixed_frames_number (number)"] = \
            lambda: integrate(sj_ev, "number", T, HEIGHT, WIDTH)

    times: dict[str, list[float]] = {name: [] for name in contenders}
    for name, fn in contenders.items():
        out = fn()  # warm-up, and the event count each keeps
        kept[name] = int(np.asarray(out, dtype=np.int64).sum())
    for _ in range(args.passes):
        for name, fn in contenders.items():
            fn()  # the first call of a burst re-warms caches after the other contenders
            for _ in range(args.burst):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)

    median = {name: statistics.median(ts) * 1e3 for name, ts in times.items()}
    ours = {"time": median["tmkt events_to_frames (time)"],
            "number": median["tmkt events_to_frames (number)"]}
    print(f"{args.events:,} events, sensor {HEIGHT} x {WIDTH}, T = {T}, median of "
          f"{args.passes} x {args.burst} calls each")
    print(f"{'contender':44s} {'ms':>8s} {'x tmkt':>8s} {'events kept':>14s}")
    for name in contenders:
        mode = "number" if ("number" in name or "event_bins" in name) else "time"
        ratio = median[name] / ours[mode]
        print(f"{name:44s} {median[name]:8.2f} {ratio:8.1f} {kept[name]:>14,}")


if __name__ == "__main__":
    main()

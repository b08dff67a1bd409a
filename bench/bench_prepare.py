"""``tmkt prepare ncaltech101`` speed on a synthetic N-Caltech101-sized tree, 1 and 2 workers.

Builds the tree with bench/make_ncaltech_tree.py (or reuses one), then runs the real command
line once per worker count, each in a fresh process and a fresh output folder, and reports
wall time, recordings/s and events/s, and whether every worker count wrote the same arrays
(the content hash in the manifest). Ratios are measured in this one run.

    .venv/bin/python bench/bench_prepare.py [--scale 1.0] [--workers 1 2]
        [--tree /tmp/tmkt-bench/ncaltech101] [--keep] [--compression 500]
        [--baseline /tmp/tmkt-main --rounds 3]

``--scale`` makes (or expects) a tree with that fraction of each class's recordings. The tree
is kept for reruns (delete it yourself: about 4.4 GB at full size); the prepared outputs are
deleted unless ``--keep``. The tree was just written or read, so it is in the page cache: the
figures are for warm files.

``--baseline CHECKOUT`` runs another checkout of tmkt (say main: ``git worktree add
/tmp/tmkt-main main``) alternately with this one, ``--rounds`` times each, and reports this
one's CPU per recording as a share of the baseline's (lowest of the rounds: the least
disturbed by other load; and each run against the baseline run just before it), measured in
the same run.

``--compression N`` also rewrites the first N prepared training samples with each candidate
HDF5 filter (none, lzf, gzip 1/4/6) and reports the size ratio and the time to write and to
read a sample, and the CPU of `zlib.compress` at each gzip level: the measurement behind the
store's choice of gzip level 1 (docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_ncaltech_tree import class_counts, make_tree  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def prepare(root: Path, out: Path, workers: int, time_steps: int, size: int,
            repo: Path = REPO) -> dict:
    cmd = [sys.executable, "-m", "tmkt_cli", "prepare", "ncaltech101", "--root", str(root),
           "--out", str(out), "--workers", str(workers), "-T", str(time_steps),
           "--size", str(size)]
    load = os.getloadavg()[0]
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=repo,
                          env={**os.environ, "PYTHONPATH": str(repo)})
    wall = time.perf_counter() - start
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"prepare failed ({' '.join(cmd)}):\n{proc.stderr}")
    manifest = json.loads((out / "manifest.json").read_text())
    metrics = manifest["metrics"]
    return {"code": "baseline" if repo != REPO else "this", "workers": workers, "wall": wall, "cpu": cpu, "load": load,
            "recordings": metrics["recordings"],
            "events": metrics["events"], "bytes": metrics["file_bytes"],
            "hash": manifest["outputs"]["dataset"]["sha256"]}


COMPRESSION_CANDIDATES = {
    "none": {},
    "lzf": {"compression": "lzf"},
    "gzip 1": {"compression": "gzip", "compression_opts": 1},
    "gzip 4": {"compression": "gzip", "compression_opts": 4},
    "gzip 6": {"compression": "gzip", "compression_opts": 6},
}


def compare_compression(dataset: Path, samples: int, scratch: Path) -> None:
    """Each candidate filter on the first ``samples`` prepared training samples: size ratio,
    h5py write and read time per sample, and for gzip the ``zlib.compress`` time per sample
    (what prepare's workers run, :func:`tmkt_cli.data.store.pack_recording`), measured in
    rounds that alternate between levels so machine load hits them alike."""
    import statistics
    import zlib

    import h5py
    import numpy as np

    with h5py.File(dataset, "r") as f:
        frames = f["train/frames"][:samples]
    raw = [np.ascontiguousarray(x, "<f4").tobytes() for x in frames]
    levels = [o["compression_opts"] for o in COMPRESSION_CANDIDATES.values()
              if o.get("compression") == "gzip"]
    zlib_ms: dict[int, list[float]] = {level: [] for level in levels}
    for _ in range(5):
        for level in levels:
            start = time.process_time()
            for data in raw:
                zlib.compress(data, level)
            zlib_ms[level].append((time.process_time() - start) / len(raw) * 1e3)
    print(f"compression of {len(frames)} prepared samples {frames.shape[1:]} float32 "
          f"(load {os.getloadavg()[0]:.1f})")
    print(f"{'filter':>8s} {'ratio':>7s} {'write ms':>9s} {'read ms':>8s} {'zlib CPU ms':>12s}")
    path = scratch / "compression.h5"
    for name, options in COMPRESSION_CANDIDATES.items():
        start = time.perf_counter()
        with h5py.File(path, "w") as f:
            d = f.create_dataset("x", shape=frames.shape, dtype=np.float32,
                                 chunks=(1, *frames.shape[1:]), **options)
            for i in range(len(frames)):
                d[i] = frames[i]
        write = (time.perf_counter() - start) / len(frames)
        start = time.perf_counter()
        with h5py.File(path, "r") as f:
            d = f["x"]
            for i in range(len(frames)):
                d[i]
        read = (time.perf_counter() - start) / len(frames)
        ratio = frames.nbytes / path.stat().st_size
        level = options.get("compression_opts")
        compress = f"{statistics.median(zlib_ms[level]):12.2f}" if level in zlib_ms else ""
        print(f"{name:>8s} {ratio:7.2f} {write * 1e3:9.2f} {read * 1e3:8.2f} {compress}")
    path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--tree", type=Path, default=Path("/tmp/tmkt-bench/ncaltech101"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/tmkt-bench/prepared"))
    parser.add_argument("--time-steps", type=int, default=10)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--keep", action="store_true", help="keep the prepared outputs")
    parser.add_argument("--baseline", type=Path, default=None, metavar="CHECKOUT",
                        help="another tmkt checkout (e.g. `git worktree add /tmp/tmkt-main "
                             "main`) run alternately with this one, same interpreter")
    parser.add_argument("--rounds", type=int, default=1,
                        help="runs of each worker count (alternating with --baseline)")
    parser.add_argument("--compression", type=int, default=0, metavar="N",
                        help="also compare HDF5 filters on the first N prepared samples")
    args = parser.parse_args()

    expected = sum(class_counts(args.scale).values())
    present = len(list((args.tree / "Caltech101").glob("*/*.bin"))) \
        if (args.tree / "Caltech101").is_dir() else 0
    if present != expected:
        if present:
            raise SystemExit(f"{args.tree} holds {present} recordings, --scale {args.scale} "
                             f"needs {expected}: use another --tree or delete it")
        facts = make_tree(args.tree, args.scale)
        print(f"tree: {facts['recordings']} recordings, "
              f"{facts['bytes_written'] / 1e9:.2f} GB in {facts['seconds']:.0f} s "
              f"({args.tree})")
    else:
        print(f"tree: reusing {present} recordings in {args.tree}")

    results = []
    repos = [REPO] if args.baseline is None else [args.baseline.resolve(), REPO]
    for _ in range(args.rounds):
        for workers in args.workers:
            for repo in repos:
                out = args.out / f"workers{workers}"
                shutil.rmtree(out, ignore_errors=True)
                results.append(prepare(args.tree, out, workers, args.time_steps, args.size,
                                       repo))

    base = results[0]["wall"]
    print(f"tmkt prepare ncaltech101, T={args.time_steps}, {args.size}x{args.size}, "
          f"scale {args.scale} ({results[0]['recordings']} recordings, "
          f"{results[0]['events'] / results[0]['recordings']:,.0f} events each on average)")
    print(f"{'code':>8s} {'workers':>7s} {'wall s':>8s} {'rec/s':>8s} {'M ev/s':>8s} {'speed-up':>9s} "
          f"{'CPU s':>7s} {'CPU ms/rec':>10s} {'load':>5s} {'file MB':>8s}")
    for r in results:
        print(f"{r['code']:>8s} {r['workers']:>7d} {r['wall']:8.1f} {r['recordings'] / r['wall']:8.1f} "
              f"{r['events'] / r['wall'] / 1e6:8.2f} {base / r['wall']:8.2f}x "
              f"{r['cpu']:7.1f} {r['cpu'] / r['recordings'] * 1e3:10.2f} {r['load']:5.1f} "
              f"{r['bytes'] / 1e6:8.1f}")
    print(f"(CPU s: user + system time of the prepare process and its workers; load: the "
          f"1-minute load average when the run started, on {os.cpu_count()} cores)")
    if args.baseline is not None:
        for workers in args.workers:
            cpu = {code: sorted(r["cpu"] / r["recordings"] for r in results
                                if r["code"] == code and r["workers"] == workers)
                   for code in ("baseline", "this")}
            low = {code: v[0] for code, v in cpu.items()}
            pairs = [r["cpu"] / b["cpu"] for b, r in zip(results[::2], results[1::2],
                                                          strict=True)
                     if r["workers"] == workers]
            print(f"{workers} worker(s): CPU ms/rec, lowest of {args.rounds}: baseline "
                  f"{low['baseline'] * 1e3:.2f}, this {low['this'] * 1e3:.2f} "
                  f"({low['this'] / low['baseline']:.0%} of the baseline); run by run: "
                  + ", ".join(f"{p:.0%}" for p in pairs))
    same = len({r["hash"] for r in results}) == 1
    print("same content hash for every run:", "yes" if same else "NO")
    if args.compression:
        compare_compression(args.out / f"workers{args.workers[0]}" / "dataset.h5",
                            args.compression, args.out)
    if not args.keep:
        shutil.rmtree(args.out, ignore_errors=True)
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

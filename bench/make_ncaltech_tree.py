"""Make a synthetic N-Caltech101-sized tree for benchmarking ``tmkt prepare ncaltech101``.

The layout and formats are the real ones (docs/datasets.md): ``Caltech101/<class>/image_NNNN.bin``
recordings in the ATIS format, written with ``write_atis_bin`` of ``tests/support/event_writers.py``, and
``101_ObjectCategories/<class>/image_NNNN.jpg`` images. 101 classes with Caltech101's class
sizes (BACKGROUND_Google kept, Faces_easy, no Faces): 8,709 recordings in all.

The contents are synthetic: each recording has about ``--events`` events (normal, sd 15%)
clustered on a few random blobs (an object's edges), sorted in time over 300 ms, on a sensor of
up to 240 x 180 like the real recordings; each image is a smooth random JPEG of the same size.
What prepare's speed depends on (file sizes, event counts, sensor sizes, image decoding) is
realistic; nothing here is meant to be learnt. About 4.4 GB at full size.

    .venv/bin/python bench/make_ncaltech_tree.py OUT [--scale 1.0] [--events 100000]
        [--workers 2] [--seed 0]

Files are written under a temporary name and renamed, and existing ones are kept, so an
interrupted run can simply be started again.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np

from tmkt_cli.data.sources import EVENT_DTYPE

# The writers tests and benchmarks share live outside the package, in tests/support/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.event_writers import write_atis_bin  # noqa: E402

# Caltech101's class sizes (Faces, which N-Caltech101 lacks, left out): 8,709 in all.
CLASS_SIZES = dict(zip(*[iter("""
accordion 55 airplanes 800 anchor 42 ant 42 BACKGROUND_Google 467 barrel 47 bass 54 beaver 46
binocular 33 bonsai 128 brain 98 brontosaurus 43 buddha 85 butterfly 91 camera 50 cannon 43
car_side 123 ceiling_fan 47 cellphone 59 chair 62 chandelier 107 cougar_body 47 cougar_face 69
crab 73 crayfish 70 crocodile 50 crocodile_head 51 cup 57 dalmatian 67 dollar_bill 52 dolphin 65
dragonfly 68 electric_guitar 75 elephant 64 emu 53 euphonium 64 ewer 85 Faces_easy 435 ferry 67
flamingo 67 flamingo_head 45 garfield 34 gerenuk 34 gramophone 51 grand_piano 99 hawksbill 100
headphone 42 hedgehog 54 helicopter 88 ibis 80 inline_skate 31 joshua_tree 64 kangaroo 86
ketch 114 lamp 61 laptop 81 Leopards 200 llama 78 lobster 41 lotus 66 mandolin 43 mayfly 40
menorah 87 metronome 32 minaret 76 Motorbikes 798 nautilus 55 octopus 35 okapi 39 pagoda 47
panda 38 pigeon 45 pizza 53 platypus 34 pyramid 57 revolver 82 rhino 59 rooster 49 saxophone 40
schooner 63 scissors 39 scorpion 84 sea_horse 57 snoopy 35 soccer_ball 64 stapler 45
starfish 86 stegosaurus 59 stop_sign 64 strawberry 35 sunflower 85 tick 49 trilobite 86
umbrella 75 watch 239 water_lilly 37 wheelchair 59 wild_cat 34 windsor_chair 56 wrench 39
yin_yang 60""".split())] * 2, strict=True))
CLASS_SIZES = {name: int(n) for name, n in CLASS_SIZES.items()}
DURATION_US = 300_000


def synthetic_recording(rng: np.random.Generator, mean_events: int
                        ) -> tuple[np.ndarray, tuple[int, int]]:
    height, width = int(rng.integers(100, 181)), int(rng.integers(140, 241))
    n = int(np.clip(rng.normal(mean_events, 0.15 * mean_events), mean_events // 4,
                    mean_events * 2))
    blobs = int(rng.integers(4, 12))
    centres = rng.uniform((0.15 * width, 0.15 * height), (0.85 * width, 0.85 * height),
                          (blobs, 2))
    spread = rng.uniform(3, 0.12 * min(width, height), blobs)
    which = rng.integers(0, blobs, n)
    x = np.clip(np.round(rng.normal(centres[which, 0], spread[which])), 0, width - 1)
    y = np.clip(np.round(rng.normal(centres[which, 1], spread[which])), 0, height - 1)
    events = np.empty(n, dtype=EVENT_DTYPE)
    events["t"] = np.sort(rng.integers(0, DURATION_US, n))
    events["x"], events["y"] = x, y
    events["p"] = rng.integers(0, 2, n)
    return events, (height, width)


def synthetic_image(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    height, width = size
    coarse = rng.integers(0, 256, (max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR))


def make_one(task: tuple[str, int, int, int, int, str]) -> int:
    """Write recording and image ``index`` of a class; returns the bytes written (0 if both
    were already there)."""
    from PIL import Image

    out, class_id, index, seed, mean_events, name = task
    stem = f"image_{index + 1:04d}"
    bin_path = Path(out) / "Caltech101" / name / f"{stem}.bin"
    jpg_path = Path(out) / "101_ObjectCategories" / name / f"{stem}.jpg"
    if bin_path.exists() and jpg_path.exists():
        return 0
    rng = np.random.default_rng([seed, class_id, index])
    events, size = synthetic_recording(rng, mean_events)
    image = synthetic_image(rng, size)
    written = 0
    for path, write in ((bin_path, lambda p: write_atis_bin(p, events)),
                        (jpg_path, lambda p: Image.fromarray(image).save(p, "JPEG",
                                                                         quality=90))):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
        write(tmp)
        os.replace(tmp, path)
        written += path.stat().st_size
    return written


def class_counts(scale: float) -> dict[str, int]:
    return {name: max(1, round(n * scale)) for name, n in CLASS_SIZES.items()}


def make_tree(out: Path, scale: float = 1.0, mean_events: int = 100_000, workers: int = 2,
              seed: int = 0) -> dict:
    counts = class_counts(scale)
    tasks = [(str(out), class_id, i, seed, mean_events, name)
             for class_id, (name, n) in enumerate(sorted(counts.items())) for i in range(n)]
    start = time.perf_counter()
    if workers > 1:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            written = sum(pool.imap_unordered(make_one, tasks, chunksize=8))
    else:
        written = sum(make_one(t) for t in tasks)
    return {"recordings": len(tasks), "classes": len(counts), "bytes_written": written,
            "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="fraction of each class's recordings to make (at least one)")
    parser.add_argument("--events", type=int, default=100_000, help="mean events per recording")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    facts = make_tree(args.out, args.scale, args.events, args.workers, args.seed)
    print(f"{args.out}: {facts['recordings']} recordings in {facts['classes']} classes, "
          f"{facts['bytes_written'] / 1e9:.2f} GB written in {facts['seconds']:.0f} s")


if __name__ == "__main__":
    main()

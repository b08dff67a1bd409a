"""The GPU check (`make gpu-check`): one script, at most about 5 minutes on one GPU.

    python bench/gpu_check.py               # on a GPU machine
    python bench/gpu_check.py --dry         # on the CPU, tiny sizes (the test suite runs this)

It needs torch, numpy, h5py, typer, rich, pyyaml, spikingjelly and tmkt (the last two may be
installed with --no-deps from wheels), and prints one Markdown report on stdout:

1. the CUDA-only tests (`pytest -m cuda tests/test_cuda.py`: AMP bf16/fp16, channels_last,
   torch.compile, tmkt's fused LIF against spikingjelly's on CUDA, DDP over NCCL in one process);
2. the published N-Caltech101 training step (recipes/ncaltech101/*.yaml: VGG-SNN, T=10, 48x48,
   batch 120) on synthetic data for event_only, kt, tmkt and ckd, in fp32 and bf16: time per
   optimizer step, event samples per second, peak GPU memory;
3. the data path: `tmkt prepare` of a small synthetic N-Caltech101 tree (real file formats),
   then the training loader reading batches of 120 from the HDF5 store, in samples per second,
   beside the step's own rate: a loader slower than the step starves the GPU.

The step is the task code the engine runs (tmkt_cli.train.tasks.SNNTransferTask) plus the optimizer
step, timed with the device synchronised, after warm-up steps. `--dry` swaps in the digits
recipes at batch 4 and a tree of about a hundred tiny recordings, so the whole script runs on
the CPU in seconds; its figures mean nothing there.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

METHODS = ("event_only", "kt", "tmkt", "ckd")


def build_task(recipe, classes: int, size: int, time_steps: int, device: torch.device,
               ckd: bool):
    """The training task of a recipe, as train-tmkt (or, with ``ckd``, distill) builds it;
    the CKD teacher is an untrained ANN of the recipe's teacher backbone."""
    from tmkt_cli.models import build_snn
    from tmkt_cli.models.ann import build_ann
    from tmkt_cli.stages.distill import ckd_method
    from tmkt_cli.train.tasks import SNNTransferTask, Teacher

    model = build_snn(recipe.model, classes, size, time_steps).to(device)
    if ckd:
        d = recipe.distill
        teacher = build_ann(recipe.pretrain_ann.backbone, classes, size).to(device)
        return SNNTransferTask(model, ckd_method(recipe), recipe.model.threshold,
                               teacher=Teacher(teacher, d.temperature, d.kd_weight,
                                               d.switch_at, d.steepness))
    return SNNTransferTask(model, recipe.method, recipe.model.threshold)


def synthetic_batch(batch: int, time_steps: int, size: int, classes: int,
                    device: torch.device) -> dict[str, torch.Tensor]:
    """Event counts as sparse as real frames (about 5% of pixels active) and a static image."""
    g = torch.Generator().manual_seed(0)
    events = torch.poisson(torch.full((batch, time_steps, 2, size, size), 0.05), generator=g)
    out = {"events": events, "static": torch.rand(batch, 2, size, size, generator=g),
           "label": torch.randint(0, classes, (batch,), generator=g)}
    # On the host (pinned on a GPU), as the loader hands batches over: the step copies them.
    return {k: v.pin_memory() for k, v in out.items()} if device.type == "cuda" else out


def time_steps_of(task, batch, amp: str, device: torch.device, steps: int, warmup: int
                  ) -> dict[str, float]:
    """The engine's own step (train_one_step: host-to-device copy, forward, backward, the
    on-device non-finite check, fused AdamW), as a training run takes it."""
    import dataclasses

    from tmkt_cli.config import TrainConfig
    from tmkt_cli.train.engine import timing_fit, train_one_step

    total = warmup + steps
    cfg = dataclasses.replace(TrainConfig(), amp=amp, device=str(device), lr=1e-4,
                              lr_scaling=False)
    f = timing_fit(task, cfg, device, total)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = 0.0
    for step in range(total):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        train_one_step(f, batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    if int(f.guard.first_step) >= 0:
        raise SystemExit(f"non-finite loss at step {int(f.guard.first_step)}")
    seconds = (time.perf_counter() - start) / steps
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return {"ms": 1000 * seconds, "samples_per_s": len(batch["label"]) / seconds,
            "peak_gib": peak}


def step_table(dry: bool, device: torch.device, steps: int, warmup: int) -> tuple[str, float]:
    from tmkt_cli.config import load_recipe

    folder = "digits" if dry else "ncaltech101"
    overrides = ["train.batch_size=4"] if dry else []
    rows, fastest_rate = [], 0.0
    amps = ["off", "bf16"]
    for method in METHODS:
        recipe = load_recipe(REPO / "recipes" / folder / f"{method}.yaml", overrides)
        classes = 10 if dry else 101
        p = recipe.prepare
        batch = synthetic_batch(recipe.train.batch_size, p.time_steps, p.size, classes, device)
        for amp in amps:
            torch.manual_seed(0)
            task = build_task(recipe, classes, p.size, p.time_steps, device, method == "ckd")
            r = time_steps_of(task, batch, amp, device, steps, warmup)
            fastest_rate = max(fastest_rate, r["samples_per_s"])
            peak = "-" if np.isnan(r["peak_gib"]) else f"{r['peak_gib']:.2f}"
            rows.append(f"| {method} | {'fp32' if amp == 'off' else amp} | "
                        f"{recipe.train.batch_size} | {r['ms']:.1f} | {r['samples_per_s']:.0f} | "
                        f"{peak} |")
            del task
            if device.type == "cuda":
                torch.cuda.empty_cache()
    head = (f"### Training step: recipes/{folder}, {recipe.model.backbone}, "
            f"T={recipe.prepare.time_steps}, {recipe.prepare.size}x{recipe.prepare.size}, "
            f"synthetic data, {steps} timed steps after {warmup}\n\n"
            "| method | precision | batch | ms / step | event samples / s | peak GiB |\n"
            "|---|---|---|---|---|---|")
    return head + "\n" + "\n".join(rows), fastest_rate


def loader_section(dry: bool, workers: int, step_rate: float) -> str:
    """prepare a small synthetic N-Caltech101 tree, then read training batches from it."""
    from make_ncaltech_tree import make_tree

    from tmkt_cli.config import load_recipe
    from tmkt_cli.data.loaders import EventDataset
    from tmkt_cli.data.sampling import KeyedBatchSampler
    from tmkt_cli.train.engine import make_loader

    scale, events = (0.002, 2_000) if dry else (0.06, 100_000)
    with tempfile.TemporaryDirectory() as tmp:
        tree, prepared = Path(tmp) / "raw", Path(tmp) / "prepared"
        made = make_tree(tree, scale=scale, mean_events=events, workers=workers)
        start = time.perf_counter()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        subprocess.run([sys.executable, "-m", "tmkt_cli", "prepare", "ncaltech101/base",
                        "--root", str(tree), "--out", str(prepared), "--workers", str(workers)],
                       check=True, env=env, capture_output=True, text=True)
        prepare_s = time.perf_counter() - start
        recipe = load_recipe(REPO / "recipes" / "ncaltech101" / "tmkt.yaml")
        batch = 8 if dry else recipe.train.batch_size
        dataset = EventDataset(prepared / "dataset.h5", "train", recipe.data, seed=0,
                               augment=True, with_static=True)
        indices = np.arange(len(dataset))
        sampler = KeyedBatchSampler(indices, min(batch, len(indices)), 0, 0)
        loader = make_loader(dataset, sampler, workers, 0)
        start, samples = time.perf_counter(), 0
        for item in loader:
            samples += len(item["label"])
        rate = samples / (time.perf_counter() - start)
    verdict = ("keeps up with" if rate >= step_rate else "is slower than")
    return (f"### Data path: {made['recordings']} synthetic N-Caltech101 recordings of about "
            f"{events:,} events\n\n"
            f"- `tmkt prepare ncaltech101` with {workers} workers: {prepare_s:.1f} s "
            f"({made['recordings'] / prepare_s:.0f} recordings/s)\n"
            f"- training loader ({workers} workers, batch {batch}, augmentation and static "
            f"partners): {rate:.0f} samples/s, which {verdict} the fastest step above "
            f"({step_rate:.0f} samples/s)")


def cuda_tests(dry: bool) -> str:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda",
                           "-p", "no:cacheprovider", str(REPO / "tests" / "test_cuda.py")],
                          capture_output=True, text=True, cwd=REPO)
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-300:]
    ok = proc.returncode in (0, 5) or (dry and "skipped" in last)
    return f"### CUDA tests (tests/test_cuda.py)\n\n{'PASS' if ok else 'FAIL'}: {last}", ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry", action="store_true",
                        help="tiny CPU settings: checks the script, measures nothing")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per row")
    parser.add_argument("--workers", type=int, default=None,
                        help="prepare and loader workers (default: CPUs, at most 16)")
    parser.add_argument("--skip-tests", action="store_true", help="skip the CUDA tests")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry else "cpu")
    if not args.dry and device.type != "cuda":
        print("gpu-check: no CUDA device here; run with --dry to check the script on the CPU",
              file=sys.stderr)
        return 2
    torch.backends.cudnn.benchmark = True
    steps = args.steps or (2 if args.dry else 10)
    workers = args.workers or (1 if args.dry else min(16, os.cpu_count() or 1))
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU (dry run)"
    out = [f"## tmkt GPU check on {name}, torch {torch.__version__}"]
    ok = True
    if not args.skip_tests:
        text, ok = cuda_tests(args.dry)
        out.append(text)
    table, fastest = step_table(args.dry, device, steps, warmup=1 if args.dry else 3)
    out.append(table)
    out.append(loader_section(args.dry, workers, fastest))
    print("\n\n".join(out))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

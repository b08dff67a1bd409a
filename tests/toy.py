"""A tiny task for engine tests: a keyed synthetic dataset and an MLP classifier.

Importable from subprocesses (tests put this folder on PYTHONPATH) so a run can be killed.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn

from tmkt_cli.config import TrainConfig
from tmkt_cli.runs.artifacts import open_stage
from tmkt_cli.train import engine
from tmkt_cli.train.engine import evaluate_classifier


class KeyedBlobs(torch.utils.data.Dataset):
    """Gaussian blobs; each draw adds noise derived from the key's sample seed (like the
    real loaders' augmentation)."""

    def __init__(self, n: int = 96, classes: int = 3, dim: int = 8, seed: int = 0):
        self.centers = np.random.default_rng(99).normal(size=(classes, dim)).astype(
            np.float32) * 2
        rng = np.random.default_rng(seed)
        self.labels = np.arange(n) % classes
        self.points = (self.centers[self.labels]
                       + rng.normal(size=(n, dim)).astype(np.float32))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key):
        index, sample_seed = key if isinstance(key, tuple) else (key, key)
        noise = np.random.default_rng(sample_seed).normal(size=self.points.shape[1]) * 0.1
        return {"x": torch.from_numpy(self.points[index] + noise.astype(np.float32)),
                "label": torch.tensor(int(self.labels[index]))}


class ToyTask:
    def __init__(self, nan_at_step: int | None = None, batch_norm: bool = True):
        torch.manual_seed(0)
        # BatchNorm and dropout make the resume tests meaningful; the distributed test leaves
        # them out (per-rank batch statistics differ from one process's by design).
        self.model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(),
                                   nn.Dropout(0.1), nn.Linear(16, 3)) if batch_norm else \
            nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))
        self.nan_at_step = nan_at_step

    def training_step(self, batch, ctx):
        logits = self.model(batch["x"])
        # a method-style random draw at every step, from the step's generator
        jitter = torch.rand(1, generator=ctx.generator(1))
        loss = F.cross_entropy(logits, batch["label"]) * (1 + 0.01 * jitter)
        if self.nan_at_step is not None and ctx.step == self.nan_at_step:
            loss = loss * float("nan")
        return {"loss": loss, "acc": (logits.argmax(-1) == batch["label"]).float().mean()}

    def evaluate(self, loader, device):
        return evaluate_classifier(lambda b: self.model(b["x"]), loader, device)


def train(folder: Path, epochs: int = 3, kill_at: int | None = None, nan_at: int | None = None,
          checkpoint_every: int = 1, max_steps: int = 0, resume: str = "auto",
          sleep: float = 0.0, log_every: int = 1):
    torch.set_num_threads(1)
    cfg = TrainConfig(epochs=epochs, batch_size=16, lr=0.05, lr_scaling=False,
                      warmup_epochs=1, checkpoint_every_steps=checkpoint_every,
                      log_every_steps=log_every, device="cpu", max_steps=max_steps,
                      grad_noise_window=3)
    data = KeyedBlobs()
    test = KeyedBlobs(n=30, seed=1)
    task = ToyTask(nan_at_step=nan_at)
    run = open_stage(folder, "train-tmkt", "toy: 1\n", {"toy": 1}, "toyhash", {},
                     resume=resume)
    calls = {"n": 0}

    def poll():
        time.sleep(sleep)  # lets a test signal a run that is still training
        calls["n"] += 1
        if kill_at is not None and calls["n"] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return False

    with run:
        run.start()
        result = engine.fit(task, data, test, np.arange(len(data)), cfg, seed=7, run=run,
                            ui=Console(quiet=True), model_info={"kind": "toy"},
                            on_stop_poll=poll, tensorboard=False)
        run.complete({"checkpoint": engine.LAST}, {"acc": result.metrics["acc"]})
    return task.model, result


def train_via_stage(folder: Path, steps: int = 6) -> None:
    """Toy training through the stage driver (as `tmkt train-tmkt` runs it), so torchrun-style
    processes exercise rank 0 owning the folder and the others following it."""
    from tmkt_cli.config import load_recipe
    from tmkt_cli.stages.common import execute

    torch.set_num_threads(1)
    recipe = load_recipe(None, ["name=toy"])
    cfg = TrainConfig(epochs=2, batch_size=16, lr=0.05, lr_scaling=False, warmup_epochs=0,
                      log_every_steps=1, device="cpu", max_steps=steps)

    def body(recipe, run, ui):
        task = ToyTask(batch_norm=False)
        result = engine.fit(task, KeyedBlobs(), KeyedBlobs(n=30, seed=1), np.arange(96), cfg,
                            seed=7, run=run, ui=ui, model_info={"kind": "toy"},
                            tensorboard=False)
        run.complete({"checkpoint": engine.LAST}, {"acc": result.metrics["acc"]})

    execute("train-tmkt", recipe, folder, lambda r: {}, body, Console(quiet=True))


if __name__ == "__main__":
    if sys.argv[1] == "stage":
        train_via_stage(Path(sys.argv[2]))
        sys.exit(0)
    folder, kill = Path(sys.argv[1]), int(sys.argv[2])
    sleep = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    train(folder, kill_at=kill if kill >= 0 else None, sleep=sleep)

"""Classification metrics as pure numpy functions, and a tally that sums them over batches.

Layouts: per-step logits are ``[T, B, K]`` (T time steps, B samples, K classes), a single
prediction's logits ``[B, K]``, labels ``[B]`` integers. An SNN's prediction after t frames is
the mean of its first t per-step logits; the network is causal (step t sees frames 1..t only),
so the cumulative means of one forward pass over all T frames are exactly the predictions of
networks shown 1, 2, ..., T frames.

Ties between logits are broken towards the lower class index everywhere (as ``np.argmax``
does), so top-1 hits, the confusion matrix and top-k hits always agree.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np


def cumulative_mean_logits(step_logits: np.ndarray) -> np.ndarray:
    """``[T, B, K]`` -> ``[T, B, K]``: entry t is the mean of the logits of steps 1..t+1."""
    step_logits = np.asarray(step_logits, dtype=np.float64)
    counts = np.arange(1, step_logits.shape[0] + 1, dtype=np.float64)
    return np.cumsum(step_logits, axis=0) / counts[:, None, None]


def class_ranks(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Rank of the true class in each row of ``[B, K]`` logits (0: the top prediction).

    A class ranks above the true one when its logit is larger, or equal with a lower index.
    """
    logits = np.asarray(logits)
    labels = np.asarray(labels, dtype=np.int64)
    true = logits[np.arange(len(labels)), labels][:, None]
    lower_index = np.arange(logits.shape[1])[None, :] < labels[:, None]
    return ((logits > true) | ((logits == true) & lower_index)).sum(axis=1)


def topk_hits(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Boolean ``[B]``: the true class is among the k highest logits."""
    return class_ranks(logits, labels) < k


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int
                     ) -> np.ndarray:
    """``[K, K]`` counts: row = true class, column = predicted class."""
    labels = np.asarray(labels, dtype=np.int64)
    predictions = np.asarray(predictions, dtype=np.int64)
    flat = np.bincount(labels * num_classes + predictions, minlength=num_classes ** 2)
    return flat.reshape(num_classes, num_classes)


def per_class_accuracy(confusion: np.ndarray) -> np.ndarray:
    """Recall of each class from a confusion matrix; NaN for a class with no test sample."""
    confusion = np.asarray(confusion, dtype=np.float64)
    totals = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(confusion) / totals, np.nan)


def accuracy_vs_time_steps(step_logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``[T]``: top-1 accuracy of the prediction made from the first t frames, t = 1..T."""
    return time_step_hits(step_logits, labels) / max(1, len(labels))


def time_step_hits(step_logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``[T]`` integer counts of correct predictions after 1..T frames (summable over
    batches, unlike accuracies)."""
    predictions = cumulative_mean_logits(step_logits).argmax(axis=-1)  # [T, B]
    return (predictions == np.asarray(labels)[None, :]).sum(axis=1)


def cross_entropy_sum(logits: np.ndarray, labels: np.ndarray) -> float:
    """Summed cross-entropy of ``[B, K]`` logits (log-sum-exp, stable in float64)."""
    logits = np.asarray(logits, dtype=np.float64)
    top = logits.max(axis=1, keepdims=True)
    log_z = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return float((log_z - logits[np.arange(len(labels)), labels]).sum())


@dataclass
class ClassificationTally:
    """Sums of every classification metric over the batches of one evaluation pass."""

    num_classes: int
    time_steps: int = 1
    samples: int = 0
    top1: int = 0
    top5: int = 0
    loss_sum: float = 0.0
    confusion: np.ndarray = field(init=False)
    hits_per_step: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        self.hits_per_step = np.zeros(self.time_steps, dtype=np.int64)

    def update(self, logits: np.ndarray, labels: np.ndarray) -> None:
        """Add a batch: per-step logits ``[T, B, K]`` (an SNN) or ``[B, K]`` (an ANN)."""
        logits = np.asarray(logits, dtype=np.float64)
        labels = np.asarray(labels, dtype=np.int64)
        if logits.ndim == 2:
            logits = logits[None]
        if logits.shape[0] != self.time_steps or logits.shape[2] != self.num_classes:
            raise ValueError(f"logits of shape {logits.shape} do not match T={self.time_steps}"
                             f", K={self.num_classes}")
        self.hits_per_step += time_step_hits(logits, labels)
        final = logits.mean(axis=0)
        predictions = final.argmax(axis=1)
        self.confusion += confusion_matrix(labels, predictions, self.num_classes)
        ranks = class_ranks(final, labels)
        self.top1 += int((ranks < 1).sum())
        self.top5 += int((ranks < 5).sum())
        self.loss_sum += cross_entropy_sum(final, labels)
        self.samples += len(labels)

    def summary(self, class_names: list[str]) -> dict:
        """Plain-JSON results (accuracies as fractions in [0, 1])."""
        n = max(1, self.samples)
        per_class = per_class_accuracy(self.confusion)
        return {
            "samples": self.samples,
            "top1": self.top1 / n,
            "top5": self.top5 / n,
            "loss": self.loss_sum / n,
            "per_class": {name: (None if math.isnan(a) else float(a))
                          for name, a in zip(class_names, per_class, strict=True)},
            "confusion": self.confusion.tolist(),
            "accuracy_vs_time_steps": (self.hits_per_step / n).tolist(),
        }


@dataclass(frozen=True)
class SeedStats:
    """Mean and spread of one figure over runs that differ only in their seed."""

    mean: float
    std: float
    """Sample standard deviation (ddof=1); NaN with fewer than two runs."""
    n: int

    def format(self, scale: float = 100.0, digits: int = 2) -> str:
        if self.n == 0 or math.isnan(self.mean):
            return "–"
        text = f"{self.mean * scale:.{digits}f}"
        if self.n > 1:
            text += f" ± {self.std * scale:.{digits}f}"
        return text


def seed_stats(values: Iterable[float | None]) -> SeedStats:
    """Mean and sample standard deviation of the values that are present (None, NaN skipped)."""
    kept = np.array([v for v in values if v is not None and not math.isnan(v)],
                    dtype=np.float64)
    if len(kept) == 0:
        return SeedStats(math.nan, math.nan, 0)
    std = float(kept.std(ddof=1)) if len(kept) > 1 else math.nan
    return SeedStats(float(kept.mean()), std, len(kept))

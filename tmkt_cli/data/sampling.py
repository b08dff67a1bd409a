"""Sample order as a pure function of (seed, epoch): what makes resumed runs bitwise equal.

The sampler yields keys ``(index, sample_seed)``; the dataset derives every random draw of a
sample (augmentation, static partner) from ``sample_seed``. Nothing depends on a generator's
hidden state, so a run killed at step k and restarted from its checkpoint sees exactly the
batches an uninterrupted run would have seen.

For distributed training each global batch is cut into ``world_size`` contiguous slices, one
per rank, so N processes with batch B/N see the same samples per step as one process with B.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

# Keeps the streams of different purposes apart (a sample's seed never equals a permutation's).
_ORDER, _SAMPLE = 0x5EED0, 0x5EED1


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, _ORDER, epoch]).permutation(n)


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """Seed of the sample drawn at ``position`` of ``epoch`` (63-bit, stable across runs)."""
    ss = np.random.SeedSequence([seed, _SAMPLE, epoch, position])
    return int(ss.generate_state(2, dtype=np.uint32).astype(np.uint64) @ [1, 1 << 31]) \
        & ((1 << 63) - 1)


def batches_per_epoch(n: int, batch_size: int, drop_last: bool = False) -> int:
    """Full batches, plus the last partial one when ``drop_last`` is false; with ``drop_last``
    (KT's training loaders) a split smaller than one batch is still one batch, since dropping
    it would leave nothing to train on. A partial batch of one sample is always dropped
    (BatchNorm in training mode cannot normalise a batch of one)."""
    full, rest = divmod(n, batch_size)
    return full + (1 if rest > 1 and (not drop_last or full == 0) else 0)


def class_balanced_weights(labels: np.ndarray) -> np.ndarray:
    """Sampling weight of each sample, inversely proportional to its class's size: KT's
    ``WeightedRandomSampler`` weights ``dataset_length / count`` (datasets.py 1236, 1257),
    normalised to sum to 1."""
    labels = np.asarray(labels)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    weights = 1.0 / counts[inverse]
    return weights / weights.sum()


def epoch_draw(n: int, seed: int, epoch: int, weights: np.ndarray | None) -> np.ndarray:
    """The epoch's order of positions: a permutation (``weights`` None), or n draws with
    replacement with probabilities ``weights`` (KT's class-balanced sampler draws as many
    samples per epoch as the training split holds, with replacement)."""
    if weights is None:
        return epoch_permutation(n, seed, epoch)
    return np.random.default_rng([seed, _ORDER, epoch]).choice(n, size=n, replace=True,
                                                               p=weights)


class KeyedBatchSampler:
    """Batches of ``(index, sample_seed)`` keys for one epoch, starting at ``start_batch``.

    ``weights`` (one per index, summing to 1): draw the epoch with replacement instead of
    permuting it (``data.sampler: class_balanced``). ``drop_last``: no last partial batch
    after a full one (``train.drop_last``). Use as a DataLoader ``batch_sampler``.
    """

    def __init__(self, indices: np.ndarray, batch_size: int, seed: int, epoch: int,
                 start_batch: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, weights: np.ndarray | None = None,
                 drop_last: bool = False) -> None:
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} is not divisible by {world_size} ranks")
        self.indices = np.asarray(indices)
        self.batch_size = batch_size
        self.seed, self.epoch, self.start_batch = seed, epoch, start_batch
        self.rank, self.world_size, self.shuffle = rank, world_size, shuffle
        self.weights, self.drop_last = weights, drop_last

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Reseed for another epoch (the engine keeps one DataLoader, and so one sampler,
        for a whole run: its worker processes persist)."""
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return (batches_per_epoch(len(self.indices), self.batch_size, self.drop_last)
                - self.start_batch)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        n = len(self.indices)
        order = (epoch_draw(n, self.seed, self.epoch, self.weights) if self.shuffle
                 else np.arange(n))
        for b in range(self.start_batch, batches_per_epoch(n, self.batch_size, self.drop_last)):
            positions = range(b * self.batch_size, min((b + 1) * self.batch_size, n))
            per_rank = -(-len(positions) // self.world_size)
            mine = positions[self.rank * per_rank:(self.rank + 1) * per_rank]
            yield [(int(self.indices[order[p]]), sample_seed(self.seed, self.epoch, p))
                   for p in mine]

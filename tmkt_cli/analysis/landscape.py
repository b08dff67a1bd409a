"""Loss landscapes along two random filter-normalised directions (Li et al., NeurIPS 2018).

A direction d has the shape of the weights; each filter of d (a slice along the first axis of
a weight tensor: one output channel of a convolution, one row of a linear layer) is drawn from
N(0, 1) and rescaled to the norm of the same filter of the trained weights theta, so that
moving by alpha d changes every filter by the same fraction of its size whatever its scale
(which BN makes arbitrary). One-dimensional parameters (biases, BN affine parameters, KT's
eta) get d = 0, as in the paper. The surface is L(theta + alpha d1 + beta d2) on a grid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


def filter_normalized_direction(params: dict[str, torch.Tensor], generator: torch.Generator
                                ) -> dict[str, torch.Tensor]:
    """A random direction for ``params`` (name -> weights), filter-normalised."""
    direction = {}
    for name, theta in params.items():
        if theta.dim() <= 1:
            direction[name] = torch.zeros_like(theta)
            continue
        d = torch.randn(theta.shape, generator=generator, dtype=torch.float32).to(theta)
        d_norm = d.flatten(1).norm(dim=1)
        theta_norm = theta.detach().flatten(1).norm(dim=1)
        scale = theta_norm / d_norm.clamp_min(1e-12)
        direction[name] = d * scale.view(-1, *([1] * (theta.dim() - 1)))
    return direction


@dataclass
class Landscape:
    alphas: np.ndarray
    """Coordinates along the first direction, ``[n]``."""
    betas: np.ndarray
    """Coordinates along the second direction, ``[m]``."""
    loss: np.ndarray
    """``[n, m]``: loss at theta + alphas[i] d1 + betas[j] d2."""
    accuracy: np.ndarray
    """``[n, m]``: accuracy at the same points."""


def loss_landscape(model: nn.Module, evaluate: Callable[[nn.Module], tuple[float, float]],
                   coordinates: np.ndarray, seed: int = 0,
                   on_point: Callable[[int, int], None] | None = None) -> Landscape:
    """Evaluate ``evaluate(model) -> (loss, accuracy)`` on the grid ``coordinates`` x
    ``coordinates`` around the model's weights; the weights are restored afterwards.

    The two directions come from a generator seeded with ``seed``, so the surface of a
    checkpoint is repeatable.
    """
    params = {name: p for name, p in model.named_parameters()}
    origin = {name: p.detach().clone() for name, p in params.items()}
    generator = torch.Generator().manual_seed(seed)
    d1 = filter_normalized_direction(origin, generator)
    d2 = filter_normalized_direction(origin, generator)
    n = len(coordinates)
    loss = np.zeros((n, n))
    accuracy = np.zeros((n, n))
    try:
        for i, a in enumerate(coordinates):
            for j, b in enumerate(coordinates):
                with torch.no_grad():
                    for name, p in params.items():
                        p.copy_(origin[name] + float(a) * d1[name] + float(b) * d2[name])
                loss[i, j], accuracy[i, j] = evaluate(model)
                if on_point is not None:
                    on_point(i, j)
    finally:
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(origin[name])
    coords = np.asarray(coordinates, dtype=np.float64)
    return Landscape(alphas=coords, betas=coords.copy(), loss=loss, accuracy=accuracy)

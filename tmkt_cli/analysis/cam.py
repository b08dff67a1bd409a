"""Class activation maps of spiking networks over event sequences.

- **Grad-CAM** for SNNs: on a layer's spike maps A[t] ``[T, B, C, h, w]``, the weight of
  channel c is the gradient of the class score averaged over time *and* space,
  alpha_c = mean_{t,i,j} dy/dA_c[t, i, j]; the map is ReLU(sum_c alpha_c mean_t A_c[t]).
  The class score y is the time-averaged logit of the target class (the SNN's prediction).
- **SAM** (spike activation map, Kim & Panda 2021) needs no gradient: a neuron's contribution
  score at step t sums exp(-gamma (t - t')) over its *earlier* spike times t' < t (short
  inter-spike intervals weigh most); the map at t is sum_c NCS_c[t] S_c[t] (only neurons
  firing at t contribute). tmkt sums the per-step maps over time for one map per sample.

Maps are upsampled (bilinear) to the input size and normalised to [0, 1] per sample.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# --------------------------------------------------------------------------------------------
# Pure maps
# --------------------------------------------------------------------------------------------


def gradcam(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """``[T, B, C, h, w]`` activations and score gradients -> ``[B, h, w]`` (not normalised)."""
    if activations.dim() != 5 or activations.shape != gradients.shape:
        raise ValueError(f"expected matching [T, B, C, h, w] tensors, got "
                         f"{tuple(activations.shape)} and {tuple(gradients.shape)}")
    weights = gradients.float().mean(dim=(0, 3, 4))             # [B, C]
    integrated = activations.float().mean(dim=0)                 # [B, C, h, w]
    return F.relu(torch.einsum("bc,bchw->bhw", weights, integrated))


def neuronal_contribution_scores(spikes: torch.Tensor, gamma: float) -> torch.Tensor:
    """NCS ``[T, ...]``: at step t, sum over earlier spikes t' < t of exp(-gamma (t - t')).

    Computed by the recursion NCS[t] = exp(-gamma) (NCS[t-1] + S[t-1]), NCS[0] = 0.
    """
    decay = math.exp(-gamma)
    scores = torch.zeros_like(spikes, dtype=torch.float32)
    for t in range(1, spikes.shape[0]):
        scores[t] = decay * (scores[t - 1] + spikes[t - 1].float())
    return scores


def spike_activation_maps(spikes: torch.Tensor, gamma: float) -> torch.Tensor:
    """``[T, B, C, h, w]`` spikes -> per-step SAM ``[T, B, h, w]`` (not normalised)."""
    if spikes.dim() != 5:
        raise ValueError(f"expected [T, B, C, h, w] spikes, got {tuple(spikes.shape)}")
    return (neuronal_contribution_scores(spikes, gamma) * spikes.float()).sum(dim=2)


def resize_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[B, h, w]`` -> ``[B, H, W]`` by bilinear interpolation."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps.float()
    return F.interpolate(maps.float()[:, None], size=size, mode="bilinear",
                         align_corners=False)[:, 0]


def normalise_maps(maps: torch.Tensor) -> torch.Tensor:
    """Each map scaled to [0, 1] (min to 0, max to 1); a constant map becomes all zeros."""
    flat = maps.float().flatten(1)
    low = flat.min(dim=1, keepdim=True).values
    span = flat.max(dim=1, keepdim=True).values - low
    scaled = torch.where(span > 0, (flat - low) / span.clamp_min(1e-12),
                         torch.zeros_like(flat))
    return scaled.view_as(maps)


def integrate_events(events: np.ndarray) -> np.ndarray:
    """Event frames ``[T, 2, H, W]`` -> an RGB image ``[H, W, 3]`` in [0, 1]: ON events (channel
    1) in red, OFF (channel 0) in blue, on white, scaled by the 99th percentile of the counts
    so a few hot pixels do not wash the picture out."""
    counts = np.asarray(events, dtype=np.float64).sum(axis=0)    # [2, H, W]
    positive = counts[counts > 0]
    scale = np.percentile(positive, 99) if positive.size else 1.0
    off, on = np.clip(counts / max(scale, 1e-12), 0.0, 1.0)
    rgb = np.ones((*on.shape, 3))
    rgb[..., 0] -= off          # OFF removes red and green: blue
    rgb[..., 1] -= np.maximum(on, off)
    rgb[..., 2] -= on           # ON removes green and blue: red
    return np.clip(rgb, 0.0, 1.0)


def event_intensity(events: np.ndarray) -> np.ndarray:
    """``[T, 2, H, W]`` -> ``[H, W]`` total counts in [0, 1] (99th percentile scaling): the grey
    background the maps are overlaid on."""
    counts = np.asarray(events, dtype=np.float64).sum(axis=(0, 1))
    positive = counts[counts > 0]
    scale = np.percentile(positive, 99) if positive.size else 1.0
    return np.clip(counts / max(scale, 1e-12), 0.0, 1.0)


# --------------------------------------------------------------------------------------------
# Maps of a model
# --------------------------------------------------------------------------------------------

@dataclass
class LayerOutput:
    """What a forward hook kept of one layer's output, as ``[T, B, ...]``."""

    tensor: torch.Tensor | None = None


@contextlib.contextmanager
def capture_output(module: nn.Module, time_steps: int) -> Iterator[LayerOutput]:
    """Keep ``module``'s output (with its graph) during the block. Layers that run on T x B
    folded into one batch (``[T*B, C, h, w]``) are unfolded to ``[T, B, C, h, w]``."""
    kept = LayerOutput()

    def hook(mod, inputs, output):
        if isinstance(output, torch.Tensor):
            kept.tensor = output
            if output.dim() == 4 and output.shape[0] % time_steps == 0:
                kept.tensor = output.view(time_steps, -1, *output.shape[1:])

    handle = module.register_forward_hook(hook)
    try:
        yield kept
    finally:
        handle.remove()


def spatial_layers(model: nn.Module, layers: list[tuple[str, nn.Module]], x: torch.Tensor,
                   time_steps: int) -> list[str]:
    """Names of the ``layers`` whose output is a spatial map ``[T, B, C, h, w]`` with h, w > 1
    (Grad-CAM and SAM need one), found by running ``x`` once."""
    from spikingjelly.activation_based import functional

    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for name, module in layers:
        def hook(mod, inputs, output, name=name):
            shape = tuple(output.shape)
            if len(shape) == 4 and shape[0] % time_steps == 0:
                shape = (time_steps, shape[0] // time_steps, *shape[1:])
            shapes[name] = shape
        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(x, head="event")
    finally:
        for h in handles:
            h.remove()
        functional.reset_net(model)
    return [name for name, _ in layers
            if len(shapes.get(name, ())) == 5 and min(shapes[name][-2:]) > 1]


@dataclass
class ClassMaps:
    maps: np.ndarray
    """``[B, H, W]`` float32 in [0, 1], at the input resolution."""
    predictions: np.ndarray
    """``[B]`` the model's predicted classes (time-averaged event logits)."""
    per_step: np.ndarray | None = None
    """SAM only: ``[B, T, H, W]`` per-step maps in [0, 1] (each step normalised)."""


def class_activation_maps(model: nn.Module, x: torch.Tensor, targets: torch.Tensor,
                          layer: nn.Module, kind: str, gamma: float = 0.5) -> ClassMaps:
    """Maps of ``model`` (a two-head SNN, event head) for inputs ``x [T, B, 2, H, W]``.

    ``kind``: ``gradcam`` (for the ``targets`` classes) or ``sam`` (targets unused).
    """
    from spikingjelly.activation_based import functional

    T, _, _, H, W = x.shape
    model.eval()
    try:
        with capture_output(layer, T) as kept, torch.set_grad_enabled(kind == "gradcam"):
            out = model(x, head=getattr(model, "test_head", "event"))
            activations = kept.tensor
            if activations is None or activations.dim() != 5:
                shape = None if activations is None else tuple(activations.shape)
                raise ValueError(f"the chosen layer's output is not a [T, B, C, h, w] map "
                                 f"(got {shape})")
            mean_logits = out.logits.float().mean(dim=0)
            per_step = None
            if kind == "gradcam":
                score = mean_logits.gather(1, targets.view(-1, 1).to(x.device)).sum()
                (gradients,) = torch.autograd.grad(score, activations)
                raw = gradcam(activations.detach(), gradients)
            elif kind == "sam":
                steps = spike_activation_maps(activations.detach(), gamma)   # [T, B, h, w]
                raw = steps.sum(dim=0)
                per_step = normalise_maps(resize_maps(steps.flatten(0, 1), (H, W)))
                per_step = per_step.view(T, -1, H, W).transpose(0, 1)
            else:
                raise ValueError(f"unknown CAM kind {kind!r}")
    finally:
        functional.reset_net(model)
    maps = normalise_maps(resize_maps(raw, (H, W)))
    return ClassMaps(maps=maps.cpu().numpy().astype(np.float32),
                     predictions=mean_logits.argmax(dim=1).detach().cpu().numpy(),
                     per_step=None if per_step is None
                     else per_step.cpu().numpy().astype(np.float32))

#!/usr/bin/env python
"""Where do a model's class activation maps put their mass: on the object, or on the border?

For a trained SNN run and its prepared dataset, over the first N test recordings, prints for
each spiking layer with a spatial map (and each CAM kind) the share of the map's mass that
falls in the frame's outer ``--border`` pixels, beside the share of the events there and the
share of the pixels there (what a uniform map would give). A map that explains the object puts
less of its mass on the border than the events do; one near the pixel share says nothing.

    python tools/cam_border.py runs/digits-tmkt/seed42/train-tmkt prepared/digits-T8-32px
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from spikingjelly.activation_based import functional

from tmkt_cli.analysis.cam import capture_output, class_activation_maps, spatial_layers
from tmkt_cli.config import DataConfig
from tmkt_cli.data.loaders import EventDataset
from tmkt_cli.runs.checkpoints import load_model


def border_mask(size: int, border: int) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[:border], mask[-border:], mask[:, :border], mask[:, -border:] = True, True, True, True
    return mask


def border_share(maps: np.ndarray, mask: np.ndarray) -> float:
    """Mean over samples of (map mass on the border) / (map mass)."""
    totals = maps.sum(axis=(1, 2))
    shares = (maps * mask).sum(axis=(1, 2)) / np.where(totals > 0, totals, 1.0)
    return float(shares[totals > 0].mean()) if np.any(totals > 0) else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a train-tmkt or distill run folder, or a checkpoint")
    ap.add_argument("dataset", help="the prepared dataset folder")
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--border", type=int, default=3, help="border width in pixels")
    args = ap.parse_args()

    torch.manual_seed(0)
    model = load_model(args.run)
    test = EventDataset(Path(args.dataset) / "dataset.h5", "test", DataConfig(), seed=0,
                        augment=False, with_static=False)
    rows = range(min(args.samples, len(test)))
    x = torch.stack([test[i]["events"] for i in rows]).transpose(0, 1)
    labels = torch.tensor([int(test[i]["label"]) for i in rows])
    size = x.shape[-1]
    mask = border_mask(size, args.border)
    events = x.sum(dim=(0, 2)).numpy()  # [B, H, W]
    print(f"{len(rows)} test recordings, {size}x{size}, border {args.border} px")
    print(f"  pixels on the border: {mask.mean():.1%}   events on the border: "
          f"{border_share(events, mask):.1%}")
    spiking = [(n, m) for n, m in model.named_modules() if n and hasattr(m, "v_threshold")]
    layers = spatial_layers(model, spiking, x, x.shape[0])
    modules = dict(model.named_modules())
    print(f"  {'layer':<22} {'map':>7}  {'Grad-CAM':>9}  {'SAM':>6}")
    for name in layers:
        shares = []
        for kind in ("gradcam", "sam"):
            maps = class_activation_maps(model, x, labels, modules[name], kind).maps
            shares.append(border_share(maps, mask))
        with torch.no_grad(), capture_output(modules[name], x.shape[0]) as kept:
            model(x[:, :1], head="event")  # the layer's own resolution
        functional.reset_net(model)
        h, w = kept.tensor.shape[-2:]
        print(f"  {name:<22} {h:>3}x{w:<3}  {shares[0]:>9.1%}  {shares[1]:>6.1%}")


if __name__ == "__main__":
    main()

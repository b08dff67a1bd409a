"""ANN teachers for CKD (stage ``pretrain-ann``): ``forward(x [B, C, H, W]) -> logits [B, K]``.

* ``vgg``: the student's VGG-SNN layout (``snn.VGG_LAYOUT``, 3x3 conv-BN, average pooling)
  with ReLU, built by the same code as the student so the two cannot drift apart;
  ``digitsnet`` and ``scnn`` likewise mirror those students.
* ``resnet18``: the standard (post-activation) ResNet-18 of He et al. (CVPR 2016) with a
  CIFAR-style stem (3x3, stride 1, no max-pool) for inputs under 96 pixels, ImageNet's stem
  (7x7, stride 2, max-pool) otherwise. Module names follow torchvision's, so an ImageNet
  checkpoint on disk loads into every layer whose shape agrees (all residual stages; not the
  2-channel stem nor the classifier), through :func:`load_init_weights`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from tmkt_cli.errors import TmktError
from tmkt_cli.models.snn import build_trunk, init_weights, relu_factory

# ANN name -> the spiking backbone whose layout it mirrors with ReLU.
MIRRORED_LAYOUTS = {"vgg": "vggsnn", "digitsnet": "digitsnet", "scnn": "scnn"}
ANN_BACKBONES = ("vgg", "resnet18", "digitsnet", "scnn")


class TrunkClassifier(nn.Module):
    """A student's trunk with ReLU instead of LIF, run on one time step, and a linear
    classifier."""

    def __init__(self, layout: str, num_classes: int, size: int, in_channels: int = 2):
        super().__init__()
        self.trunk = build_trunk(layout, relu_factory, size, in_channels)
        self.fc = nn.Linear(self.trunk.out_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The trunk reads [T, B, ...]: an image is a sequence of one step.
        return self.fc(self.trunk(x.unsqueeze(0)).squeeze(0))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                         nn.BatchNorm2d(c_out))
                           if stride != 1 or c_in != c_out else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """ResNet-18 with torchvision's module names (conv1, bn1, layer1-4, fc)."""

    SMALL_INPUT = 96  # below this side the stem keeps the resolution (CIFAR-style)

    def __init__(self, num_classes: int, size: int, in_channels: int = 2):
        super().__init__()
        small = size < self.SMALL_INPUT
        self.conv1 = (nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False) if small
                      else nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False))
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity() if small else nn.MaxPool2d(3, 2, 1)
        c_in, stages = 64, []
        for i, c_out in enumerate((64, 128, 256, 512)):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(c_in, c_out, stride),
                                        BasicBlock(c_out, c_out)))
            c_in = c_out
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def build_ann(name: str, num_classes: int, size: int, in_channels: int = 2) -> nn.Module:
    """The teacher ``name`` (see ANN_BACKBONES) for ``size`` x ``size`` inputs."""
    if name in MIRRORED_LAYOUTS:
        return TrunkClassifier(MIRRORED_LAYOUTS[name], num_classes, size, in_channels)
    if name == "resnet18":
        return ResNet18(num_classes, size, in_channels)
    raise TmktError(f"recipe key 'pretrain_ann.backbone': unknown ANN {name!r}; expected one "
                    f"of {', '.join(ANN_BACKBONES)}")


# --------------------------------------------------------------------------------------------
# Initial weights from a user's file
# --------------------------------------------------------------------------------------------

# Where checkpoints of common trainers keep the state dict, and prefixes their wrappers add.
_STATE_KEYS = ("state_dict", "model", "model_state_dict", "net", "weights")
_PREFIXES = ("module.", "_orig_mod.", "model.")


@dataclass
class LoadReport:
    """What :func:`load_init_weights` did."""

    path: str
    loaded: list[str] = field(default_factory=list)
    """Model tensors taken from the file."""
    skipped: list[str] = field(default_factory=list)
    """Tensors of the file left out, each with the reason."""
    missing: list[str] = field(default_factory=list)
    """Model tensors the file did not provide (they keep their initialisation)."""

    def summary(self) -> str:
        return (f"{self.path}: loaded {len(self.loaded)} tensors, skipped {len(self.skipped)} "
                f"from the file, {len(self.missing)} of the model's left at initialisation")


def _find_state_dict(obj: object) -> Mapping[str, torch.Tensor] | None:
    """The mapping of names to tensors inside a loaded checkpoint, if any."""
    if isinstance(obj, Mapping):
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors and all(isinstance(k, str) for k in tensors):
            return tensors
        for key in _STATE_KEYS:
            found = _find_state_dict(obj.get(key)) if key in obj else None
            if found:
                return found
    return None


def _strip_prefixes(name: str, known: Mapping[str, torch.Tensor]) -> str:
    """Drop wrapper prefixes (DataParallel, torch.compile, ...) a name does not match with."""
    while name not in known:
        for prefix in _PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix):]
                break
        else:
            return name
    return name


def load_init_weights(model: nn.Module, path: str | Path) -> LoadReport:
    """Copy into ``model`` every tensor of the checkpoint at ``path`` whose name and shape match.

    The file is read with ``torch.load(weights_only=True)`` (no code runs). A raw state dict
    and the usual wrappers (``{"state_dict": ...}``, ``{"model": ...}``, ``module.``
    prefixes) are accepted. Raises :class:`TmktError` when the file is missing, is not a
    checkpoint, or when no tensor matches.
    """
    p = Path(path)
    if not p.is_file():
        raise TmktError(f"{p}: init weights file not found (recipe key pretrain_ann.init_weights)")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # any failure to read the user's file is about the file
        if "GLOBAL" in str(e) or "Unsupported global" in str(e):  # as engine.load_checkpoint
            raise TmktError(f"{p}: refused to load: the file holds Python objects that would "
                            f"run code (recipe key pretrain_ann.init_weights)") from None
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise TmktError(f"{p}: not a PyTorch checkpoint ({reason[:160]})") from None
    state = _find_state_dict(obj)
    if state is None:
        raise TmktError(f"{p}: not a PyTorch checkpoint (no named tensors in it)")

    own = model.state_dict()
    report = LoadReport(path=str(p))
    updates: dict[str, torch.Tensor] = {}
    for raw_name, tensor in state.items():
        name = _strip_prefixes(raw_name, own)
        if name not in own:
            report.skipped.append(f"{raw_name} (no such tensor in the model)")
        elif own[name].shape != tensor.shape:
            report.skipped.append(f"{raw_name} (shape {tuple(tensor.shape)} in the file, "
                                  f"{tuple(own[name].shape)} in the model)")
        else:
            updates[name] = tensor
    if not updates:
        raise TmktError(f"{p}: none of its {len(state)} tensors matches the model by name and "
                        f"shape (e.g. {next(iter(state))!r})")
    with torch.no_grad():
        for name, tensor in updates.items():
            own[name].copy_(tensor.to(own[name].dtype))
    report.loaded = sorted(updates)
    report.missing = sorted(set(own) - set(updates))
    return report

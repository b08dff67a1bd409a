"""Spiking backbones and the two-stream network every training method uses.

Layout: sequences are ``[T, B, C, H, W]``; stateless layers (conv, BN, pooling, linear) run
on T x B folded into one batch through ``layer.SeqToANNContainer``; neurons run the whole
sequence at once (multi-step mode, :class:`~tmkt_cli.models.neurons.FusedLIFNode`).

A backbone is a :class:`Trunk`: ``x [T, B, C_in, H, W] -> [T, B, F]`` plus the name of the
*tap*, the last spiking layer before the output, whose charged membrane potential H[t] (before
firing and reset) is the feature map the methods align (docs/methods.md, "feature tap").
:class:`TwoStreamSNN` puts two linear heads on one trunk (``static`` for the static/mixed
stream, ``event`` for events) and the small auxiliary parts TMKT and KT train with.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

import torch
from spikingjelly.activation_based import functional, layer, neuron
from torch import nn

from tmkt_cli.config import ModelConfig
from tmkt_cli.errors import TmktError
from tmkt_cli.models.neurons import FusedLIFNode, spike_packing

# make_neuron(record_charge) -> a multi-step module; record_charge is True for the tap only.
NeuronFactory = Callable[[bool], nn.Module]


def lif_factory(cfg: ModelConfig) -> NeuronFactory:
    """LIF neurons with the recipe's tau, threshold (hard reset to 0), firing rule, surrogate,
    and tap feature (``model.feature``: charge before firing, or potential after reset)."""
    def make(record_charge: bool = False) -> nn.Module:
        return FusedLIFNode(tau=float(cfg.tau), v_threshold=float(cfg.threshold),
                            surrogate_name=cfg.surrogate, surrogate_alpha=cfg.surrogate_alpha,
                            detach_reset=cfg.detach_reset, record_charge=record_charge,
                            fire=cfg.fire, record_after_reset=cfg.feature == "membrane")
    return make


def relu_factory(record_charge: bool = False) -> nn.Module:
    """The same networks as ANNs (teachers, and the benchmark's reference)."""
    return nn.ReLU(inplace=True)


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------

NormMode = str  # "pooled" | "per_step" (recipe key model.norm)
ConvInit = str  # "kaiming_fan_out" | "torch_default" (recipe key model.conv_init)


class SeqNorm(nn.Sequential):
    """Stateless layers then a BatchNorm, over a sequence [T, B, ...].

    The stateless layers run on T x B folded into one batch. The BatchNorm (the last module)
    either does too (``pooled``: statistics over T x B samples, running statistics updated
    once per call), or runs on each time step's [B, ...] slice in turn (``per_step``:
    statistics over B samples, running statistics updated T times per call). ``per_step`` is
    what KT's code computes: its networks call the whole feature stack once per time step
    (vgg_snn.py Transfer_VGG_SNN.forward, resnet.py Transfer_ResNet.forward). The module
    indices (``0``, ``1``, ...) are those of spikingjelly's SeqToANNContainer, so checkpoints
    load either way.
    """

    def __init__(self, *modules: nn.Module, per_step_norm: bool = False):
        super().__init__(*modules)
        self.per_step_norm = per_step_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, B = x.shape[:2]
        y = x.flatten(0, 1)
        for m in list(self)[:-1]:
            y = m(y)
        norm = self[-1]
        if not self.per_step_norm:
            y = norm(y)
            return y.view(T, B, *y.shape[1:])
        y = y.view(T, B, *y.shape[1:])
        return torch.stack([norm(y[t]) for t in range(T)])

    def extra_repr(self) -> str:
        return f"norm={'per_step' if self.per_step_norm else 'pooled'}"


def conv_bn(c_in: int, c_out: int, kernel: int = 3, stride: int = 1, padding: int = 1,
            norm: NormMode = "pooled") -> SeqNorm:
    """Conv (no bias: BN follows) + BN (``norm``: pooled over T x B or per step)."""
    return SeqNorm(nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
                   nn.BatchNorm2d(c_out), per_step_norm=norm == "per_step")


def bn2d(channels: int, norm: NormMode) -> SeqNorm:
    """A BatchNorm2d over a sequence, pooled over T x B or per step."""
    return SeqNorm(nn.BatchNorm2d(channels), per_step_norm=norm == "per_step")


def per_step(*modules: nn.Module) -> layer.SeqToANNContainer:
    """Stateless modules applied to every time step (T folded into the batch)."""
    return layer.SeqToANNContainer(*modules)


class FlattenSteps(nn.Module):
    """[T, B, C, H, W] -> [T, B, C*H*W] (a view when the input is contiguous)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2)


def init_weights(module: nn.Module, conv_init: ConvInit = "kaiming_fan_out") -> None:
    """Unit-scale BN, and the convolutions per ``conv_init`` (recipe key ``model.conv_init``):
    ``kaiming_fan_out`` draws them He-normal with fan-out (TET's VGGSNN, models/VGG_models.py
    29-31; KT's Transfer_ResNet, resnet.py 600-604); ``torch_default`` keeps what PyTorch's
    constructor drew, uniform in +-1/sqrt(fan_in) (KT's Transfer_VGG_SNN, which sets no
    initialisation: vgg_snn.py 199-241, base_module.py 86-94). Linear layers keep PyTorch's
    default either way."""
    if conv_init not in ("kaiming_fan_out", "torch_default"):
        raise ValueError(f"unknown conv_init {conv_init!r}; expected kaiming_fan_out or "
                         f"torch_default")
    for m in module.modules():
        if isinstance(m, nn.Conv2d) and conv_init == "kaiming_fan_out":
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class Trunk(nn.Module):
    """A backbone without its output layer: ``x [T, B, C_in, H, W] -> [T, B, out_features]``.

    ``tap_name`` names (inside the trunk) the neuron whose charged potential is the feature
    map, of shape ``feature_shape`` = (C, H, W) per sample and time step.
    """

    out_features: int
    feature_shape: tuple[int, int, int]
    tap_name: str

    @property
    def tap(self) -> nn.Module:
        return self.get_submodule(self.tap_name)

    def init_head(self, head: nn.Linear) -> None:
        """Initialise an output layer put on this trunk (default: PyTorch's)."""


class FeatureTap(nn.Module):
    """Identity that keeps its input [T, B, ...] in ``charge_seq`` when ``record_charge``:
    the tap of trunks whose aligned feature is not a neuron's potential (KT's ResNet-18 aligns
    its pooled output)."""

    def __init__(self, record_charge: bool = True):
        super().__init__()
        self.record_charge = record_charge
        self.charge_seq: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.charge_seq = x if self.record_charge else None
        return x


class SequentialTrunk(Trunk):
    """A trunk that is a plain chain of named layers (VGG-SNN, SCNN, digitsnet)."""

    def __init__(self, layers: OrderedDict[str, nn.Module], tap_name: str, out_features: int,
                 feature_shape: tuple[int, int, int], conv_init: ConvInit = "kaiming_fan_out"):
        super().__init__()
        self.layers = nn.Sequential(layers)
        self.tap_name = f"layers.{tap_name}"
        self.out_features = out_features
        self.feature_shape = feature_shape
        init_weights(self, conv_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _require_size(name: str, size: int, smallest: int) -> None:
    if size < smallest:
        raise TmktError(f"backbone {name!r} needs inputs of at least {smallest}x{smallest} "
                        f"pixels, got {size}x{size} (recipe key prepare.size)")


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

# builder(make_neuron, size, in_channels, norm, conv_init) -> Trunk
TrunkBuilder = Callable[..., Trunk]
BACKBONES: dict[str, TrunkBuilder] = {}


def register_backbone(name: str) -> Callable[[TrunkBuilder], TrunkBuilder]:
    """Make ``builder(make_neuron, size, in_channels, norm, conv_init) -> Trunk`` available to
    recipes (``norm``: ``pooled`` or ``per_step`` BatchNorm, recipe key ``model.norm``;
    ``conv_init``: the convolutions' initialisation, recipe key ``model.conv_init``)."""
    def add(builder: TrunkBuilder) -> TrunkBuilder:
        BACKBONES[name] = builder
        return builder
    return add


def build_trunk(name: str, make_neuron: NeuronFactory, size: int, in_channels: int = 2,
                norm: NormMode = "pooled", conv_init: ConvInit = "kaiming_fan_out") -> Trunk:
    """The backbone ``name`` for square inputs of side ``size``."""
    try:
        builder = BACKBONES[name]
    except KeyError:
        raise TmktError(f"recipe key 'model.backbone': unknown backbone {name!r}; expected "
                        f"one of {', '.join(sorted(BACKBONES))}") from None
    return builder(make_neuron, size, in_channels, norm=norm, conv_init=conv_init)


# --------------------------------------------------------------------------------------------
# Backbones
# --------------------------------------------------------------------------------------------

# VGG-SNN of TET (Deng et al., ICLR 2022) as used by KT, TMKT and CKD on N-Caltech101.
VGG_LAYOUT: tuple[int | str, ...] = (64, 128, "pool", 256, 256, "pool", 512, 512, "pool",
                                     512, 512, "pool")

# A layout entry: "pool" (2x2 average pooling), C (3x3 conv-BN-LIF to C channels) or
# (C, stride) for a strided one.
LayoutEntry = int | str | tuple[int, int]


def sequential_convnet(layout: tuple[LayoutEntry, ...], make_neuron: NeuronFactory,
                       size: int, in_channels: int, norm: NormMode = "pooled",
                       conv_init: ConvInit = "kaiming_fan_out") -> SequentialTrunk:
    """3x3 conv-BN-LIF blocks and 2x2 average pools; the tap is the last LIF."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    last_conv = max(i for i, v in enumerate(layout) if v != "pool")
    channels, side, n_conv, n_pool = in_channels, size, 0, 0
    tap_name, feature_shape = "", (0, 0, 0)
    for i, entry in enumerate(layout):
        if entry == "pool":
            n_pool += 1
            layers[f"pool{n_pool}"] = per_step(nn.AvgPool2d(2))
            side //= 2
            continue
        c_out, stride = entry if isinstance(entry, tuple) else (int(entry), 1)
        n_conv += 1
        layers[f"conv{n_conv}"] = conv_bn(channels, c_out, stride=stride, norm=norm)
        layers[f"lif{n_conv}"] = make_neuron(i == last_conv)
        channels, side = c_out, (side - 1) // stride + 1
        if i == last_conv:
            tap_name, feature_shape = f"lif{n_conv}", (channels, side, side)
    layers["flatten"] = FlattenSteps()
    return SequentialTrunk(layers, tap_name, channels * side * side, feature_shape, conv_init)


@register_backbone("vggsnn")
def vggsnn(make_neuron: NeuronFactory, size: int, in_channels: int = 2,
           norm: NormMode = "pooled", conv_init: ConvInit = "kaiming_fan_out"
           ) -> SequentialTrunk:
    """VGG-SNN: 2-64, 64-128, pool, 128-256, 256-256, pool, 256-512, 512-512, pool, 512-512,
    512-512, pool (3x3 conv-BN-LIF, average pooling), then the linear heads.
    At 48x48: features 512x6x6, heads on 512x3x3."""
    _require_size("vggsnn", size, 16)
    return sequential_convnet(VGG_LAYOUT, make_neuron, size, in_channels, norm, conv_init)


@register_backbone("digitsnet")
def digitsnet(make_neuron: NeuronFactory, size: int, in_channels: int = 2,
              norm: NormMode = "pooled", conv_init: ConvInit = "kaiming_fan_out"
              ) -> SequentialTrunk:
    """A small, fast convnet for the embedded ``digits`` dataset (32x32): 3x3 conv-BN-LIF 2-16
    with stride 2, 16-32 with stride 2, 32-64, pool. At 32x32: features 64x8x8, heads on
    64x4x4 = 1,024.

    Strided convolutions rather than full-resolution layers followed by pools, for speed: a
    training step (T=8, B=64, AdamW) takes about 45 ms on a 2-core CPU, against 90 to 150 ms
    for 2-16, pool, 16-32, pool, 32-64, pool with the same parameters. Digits are 8x8 images
    upsampled, so little is lost."""
    _require_size("digitsnet", size, 8)
    return sequential_convnet(((16, 2), (32, 2), 64, "pool"), make_neuron, size, in_channels,
                              norm, conv_init)


@register_backbone("scnn")
def scnn(make_neuron: NeuronFactory, size: int, in_channels: int = 2,
         norm: NormMode = "pooled", conv_init: ConvInit = "kaiming_fan_out") -> SequentialTrunk:
    """SCNN of N-Omniglot (Li et al., Scientific Data 2022): conv5x5 2-15, pool, conv5x5
    15-40, pool, fc 640-300 LIF, then the heads (300 -> classes). Unpadded convolutions, so
    28x28 gives 40x4x4 = 640. BN after each convolution and after fc1 is tmkt's addition:
    without it the fc LIF does not fire at all at initialisation (threshold 0.5). The tap is
    the fc LIF (300 features)."""
    _require_size("scnn", size, 16)
    side = ((size - 4) // 2 - 4) // 2
    flat = 40 * side * side
    layers: OrderedDict[str, nn.Module] = OrderedDict([
        ("conv1", conv_bn(in_channels, 15, kernel=5, padding=0, norm=norm)),
        ("lif1", make_neuron(False)),
        ("pool1", per_step(nn.AvgPool2d(2))),
        ("conv2", conv_bn(15, 40, kernel=5, padding=0, norm=norm)),
        ("lif2", make_neuron(False)),
        ("pool2", per_step(nn.AvgPool2d(2))),
        ("flatten", FlattenSteps()),
        ("fc1", SeqNorm(nn.Linear(flat, 300, bias=False), nn.BatchNorm1d(300),
                        per_step_norm=norm == "per_step")),
        ("lif3", make_neuron(True)),
    ])
    return SequentialTrunk(layers, "lif3", 300, (300, 1, 1), conv_init)


class PreActBlock(nn.Module):
    """Pre-activation basic block (He et al., ECCV 2016) with spiking activations:
    BN-LIF-conv-BN-LIF-conv plus a shortcut when the shape changes. The residual path carries
    real values; convolutions read spikes.

    The shortcut is a 1x1 conv on the block's activated input (``shortcut_bn_lif`` False,
    tmkt's ``resnet18``), or BN-LIF-1x1 conv with its own BN and LIF on the block's input
    (True: KT's ``Transfer_ResNet18``, resnet.py ``_make_layer``'s ``downsample``)."""

    def __init__(self, c_in: int, c_out: int, stride: int, make_neuron: NeuronFactory,
                 norm: NormMode = "pooled", shortcut_bn_lif: bool = False):
        super().__init__()
        self.bn1 = bn2d(c_in, norm)
        self.lif1 = make_neuron(False)
        self.conv1 = per_step(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False))
        self.bn2 = bn2d(c_out, norm)
        self.lif2 = make_neuron(False)
        self.conv2 = per_step(nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False))
        self.shortcut_bn_lif = shortcut_bn_lif
        self.shortcut: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            conv = per_step(nn.Conv2d(c_in, c_out, 1, stride, bias=False))
            self.shortcut = (nn.Sequential(bn2d(c_in, norm), make_neuron(False), conv)
                             if shortcut_bn_lif else conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.lif1(self.bn1(x))
        if self.shortcut is None:
            residual = x
        else:
            residual = self.shortcut(x if self.shortcut_bn_lif else out)
        out = self.conv2(self.lif2(self.bn2(self.conv1(out))))
        return out + residual


class PreActResNetTrunk(Trunk):
    """Pre-activation ResNet-18 SNN (CEP-DVS): 3x3 stem (CIFAR-style, no down-sampling), four
    stages of two blocks (64, 128, 256, 512 channels; strides 1, 2, 2, 2), a final BN, global
    average pooling.

    ``kt_layout`` False (``resnet18``): final BN-LIF, the LIF is the tap (features 512x6x6 at
    48x48), heads on the pooled spikes. True (``resnet18_kt``, KT's ``Transfer_ResNet18``,
    resnet.py ``Transfer_ResNet``): final BN without a LIF, heads and the aligned feature on the
    pooled 512-d BN output, BN-LIF-conv shortcuts."""

    def __init__(self, make_neuron: NeuronFactory, size: int, in_channels: int = 2,
                 blocks: tuple[int, ...] = (2, 2, 2, 2), norm: NormMode = "pooled",
                 kt_layout: bool = False, conv_init: ConvInit = "kaiming_fan_out"):
        super().__init__()
        self.stem = per_step(nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False))
        stages, c_in, side = [], 64, size
        for i, (c_out, n) in enumerate(zip((64, 128, 256, 512), blocks, strict=True)):
            stride = 1 if i == 0 else 2
            side = math.ceil(side / stride)
            stage = [PreActBlock(c_in, c_out, stride, make_neuron, norm, kt_layout)]
            stage += [PreActBlock(c_out, c_out, 1, make_neuron, norm, kt_layout)
                      for _ in range(n - 1)]
            stages.append(nn.Sequential(*stage))
            c_in = c_out
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.final_bn = bn2d(512, norm)
        self.pool = per_step(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_features = 512
        if kt_layout:
            self.final_lif = nn.Identity()
            self.feature_tap = FeatureTap()
            self.tap_name = "feature_tap"
            self.feature_shape = (512, 1, 1)
        else:
            self.final_lif = make_neuron(True)
            self.feature_tap = nn.Identity()
            self.tap_name = "final_lif"
            self.feature_shape = (512, side, side)
        init_weights(self, conv_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.feature_tap(self.pool(self.final_lif(self.final_bn(x))))


@register_backbone("resnet18")
def resnet18(make_neuron: NeuronFactory, size: int, in_channels: int = 2,
             norm: NormMode = "pooled", conv_init: ConvInit = "kaiming_fan_out"
             ) -> PreActResNetTrunk:
    _require_size("resnet18", size, 8)
    return PreActResNetTrunk(make_neuron, size, in_channels, norm=norm, conv_init=conv_init)


@register_backbone("resnet18_kt")
def resnet18_kt(make_neuron: NeuronFactory, size: int, in_channels: int = 2,
                norm: NormMode = "pooled", conv_init: ConvInit = "kaiming_fan_out"
                ) -> PreActResNetTrunk:
    """KT's Transfer_ResNet18 layout (CEP-DVS): no final LIF, CKA on the pooled 512-d output,
    BN-LIF-conv shortcuts."""
    _require_size("resnet18_kt", size, 8)
    return PreActResNetTrunk(make_neuron, size, in_channels, norm=norm, kt_layout=True,
                             conv_init=conv_init)


class KtScnnTrunk(SequentialTrunk):
    """KT's Transfer_SCNN (scnn.py): no BN, fc1 with a bias, BrainCog's initialisation
    (Kaiming-normal convolutions with fan-in, linear weights uniform in [-0.1, 0.1]), and the
    same initialisation for the output layer put on it."""

    def init_head(self, head: nn.Linear) -> None:
        nn.init.uniform_(head.weight, -0.1, 0.1)


@register_backbone("scnn_kt")
def scnn_kt(make_neuron: NeuronFactory, size: int, in_channels: int = 2,
            norm: NormMode = "pooled", conv_init: ConvInit = "kaiming_fan_out"
            ) -> SequentialTrunk:
    """SCNN as KT's N-Omniglot run builds it (scnn.py Transfer_SCNN): conv5x5 2-15 (no bias),
    LIF, pool, conv5x5 15-40, LIF, pool, fc 640-300 (bias), LIF (the tap), no BatchNorm
    anywhere (so ``norm`` has nothing to act on), and KT's SCNN initialisation (so
    ``conv_init`` must stay at its default)."""
    _require_size("scnn_kt", size, 16)
    if conv_init != "kaiming_fan_out":
        raise TmktError("recipe key 'model.conv_init': backbone 'scnn_kt' has KT's own SCNN "
                        "initialisation (scnn.py 112-119); leave model.conv_init at "
                        "kaiming_fan_out")
    side = ((size - 4) // 2 - 4) // 2
    flat = 40 * side * side
    layers: OrderedDict[str, nn.Module] = OrderedDict([
        ("conv1", per_step(nn.Conv2d(in_channels, 15, 5, bias=False))),
        ("lif1", make_neuron(False)),
        ("pool1", per_step(nn.AvgPool2d(2))),
        ("conv2", per_step(nn.Conv2d(15, 40, 5, bias=False))),
        ("lif2", make_neuron(False)),
        ("pool2", per_step(nn.AvgPool2d(2))),
        ("flatten", FlattenSteps()),
        ("fc1", per_step(nn.Linear(flat, 300))),
        ("lif3", make_neuron(True)),
    ])
    trunk = KtScnnTrunk(layers, "lif3", 300, (300, 1, 1))
    for m in trunk.modules():  # replaces init_weights' fan-out initialisation
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, nn.Linear):
            nn.init.uniform_(m.weight, -0.1, 0.1)
    return trunk


# --------------------------------------------------------------------------------------------
# The two-stream network
# --------------------------------------------------------------------------------------------

class SNNOutput(NamedTuple):
    logits: torch.Tensor
    """[T, B, K] per-step logits of the requested head."""
    features: torch.Tensor
    """[T, B, D] charged membrane potential H[t] of the tap layer, flattened (float32)."""


def _channel_means(features: torch.Tensor, feature_shape: tuple[int, int, int]) -> torch.Tensor:
    """[T, B, C*H*W] -> [T, B, C]: spatial mean of each channel's potential."""
    T, B, _ = features.shape
    return features.view(T, B, feature_shape[0], -1).mean(-1)


class ModalityHead(nn.Module):
    """MAG: one logit per frame (> 0: event frame), from the spatial channel means of the
    per-step features. Light: C + 1 parameters (docs/methods.md, "MAG")."""

    def __init__(self, feature_shape: tuple[int, int, int]):
        super().__init__()
        self.feature_shape = tuple(feature_shape)
        self.linear = nn.Linear(feature_shape[0], 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features [T, B, D] -> frame logits [T, B]."""
        return self.linear(_channel_means(features, self.feature_shape)).squeeze(-1)


class MixRatioHead(nn.Module):
    """MRP: the fraction of event frames in a sequence, in [0, 1], from the time- and
    space-pooled features. C + 1 parameters (docs/methods.md, "MRP")."""

    def __init__(self, feature_shape: tuple[int, int, int]):
        super().__init__()
        self.feature_shape = tuple(feature_shape)
        self.linear = nn.Linear(feature_shape[0], 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features [T, B, D] -> predicted ratio [B]."""
        pooled = _channel_means(features, self.feature_shape).mean(0)
        return torch.sigmoid(self.linear(pooled).squeeze(-1))


class ResidualHead(nn.Module):
    """The event head as the static head plus a correction that starts at zero
    (``model.heads: residual``): it begins as the static head and shares its weights, so
    what the images teach the static head reaches the event head throughout training."""

    def __init__(self, base: nn.Linear):
        super().__init__()
        self.base = base
        self.delta = nn.Linear(base.in_features, base.out_features)
        nn.init.zeros_(self.delta.weight)
        nn.init.zeros_(self.delta.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.delta(x)


class TwoStreamSNN(nn.Module):
    """A spiking trunk shared by two linear heads, plus TMKT's and KT's auxiliary parts.

    * ``forward(x [T, B, 2, H, W], head)`` -> :class:`SNNOutput` (the output layer does not
      spike: logits are the head applied to every time step). It does not reset the
      neurons: call ``functional.reset_net(model)`` after each stream, as spikingjelly asks.
    * ``predict(x)`` -> time-averaged logits [B, K] of the test head (``model.test_head``,
      the event head by default; resets afterwards); ``predict_heads(x)`` -> both heads'.
    * ``heads``: ``separate`` (two output layers), ``shared`` (one), ``residual`` (the event
      head is the static head plus a zero-initialised correction, :class:`ResidualHead`).
    * ``mag_head`` (features -> [T, B] frame logits), ``mrp_head`` (features -> [B] ratio),
      ``eta`` ([T], sigma(eta_t) are the spatio-temporal regularisation weights of KT).
    * ``spiking_layers()`` -> (name, module) of every neuron layer, for firing-rate and CAM
      hooks; ``feature_layer`` is the name of the tap.
    """

    HEADS = ("static", "event")

    def __init__(self, trunk: Trunk, num_classes: int, time_steps: int,
                 heads: str = "separate", test_head: str = "event"):
        super().__init__()
        self.trunk = trunk
        if heads == "shared":  # one output layer for both streams (KT's Transfer_SCNN, scnn.py)
            head = nn.Linear(trunk.out_features, num_classes)
            trunk.init_head(head)
            self.heads = nn.ModuleDict({h: head for h in self.HEADS})
        elif heads == "separate":
            self.heads = nn.ModuleDict({h: nn.Linear(trunk.out_features, num_classes)
                                        for h in self.HEADS})
            for head in self.heads.values():
                trunk.init_head(head)
        elif heads == "residual":
            static = nn.Linear(trunk.out_features, num_classes)
            trunk.init_head(static)
            self.heads = nn.ModuleDict({"static": static, "event": ResidualHead(static)})
        else:
            raise ValueError(f"unknown heads {heads!r}; expected separate, shared or residual")
        if test_head not in (*self.HEADS, "validation"):
            raise ValueError(f"unknown test head {test_head!r}; expected one of "
                             f"{', '.join(self.HEADS)} or validation")
        self.shared_heads = heads == "shared"
        self.head_rule = test_head
        """``model.test_head``; with ``validation`` the engine sets ``test_head`` at every
        evaluation (tmkt_cli/analysis/heads.py), and checkpoints record the choice."""
        self.test_head = "event" if test_head == "validation" else test_head
        self.mag_head = ModalityHead(trunk.feature_shape)
        self.mrp_head = MixRatioHead(trunk.feature_shape)
        self.eta = nn.Parameter(torch.ones(time_steps))
        self.num_classes = num_classes
        self.time_steps = time_steps

    @property
    def feature_layer(self) -> str:
        return f"trunk.{self.trunk.tap_name}"

    @property
    def feature_shape(self) -> tuple[int, int, int]:
        return self.trunk.feature_shape

    def forward(self, x: torch.Tensor, head: str = "event") -> SNNOutput:
        if x.dim() != 5:
            raise ValueError(f"expected x as [T, B, C, H, W], got shape {tuple(x.shape)}")
        if head not in self.heads:
            raise ValueError(f"unknown head {head!r}; expected one of {', '.join(self.HEADS)}")
        hidden, features = self._trunk(x)
        return SNNOutput(self.heads[head](hidden), features)

    def _trunk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the trunk's output [T, B, F], the tap's features [T, B, D])."""
        with spike_packing():  # spikes saved for backward as bytes (models/neurons.py)
            hidden = self.trunk(x)
        tap = self.trunk.tap
        charge = tap.charge_seq
        tap.charge_seq = None  # handed over: the tap keeps no sequence between calls
        return hidden, charge.flatten(2)

    def head_order(self) -> list[str]:
        """The distinct heads, the test head first (one name when the heads are shared)."""
        return [self.test_head] + ([] if self.shared_heads else
                                   [h for h in self.HEADS if h != self.test_head])

    def trunk_output(self, x: torch.Tensor) -> torch.Tensor:
        """What every head reads: the trunk's output [T, B, F] (``self.heads[h]`` of it are
        head h's per-step logits). Does not reset the neurons (as ``forward``)."""
        return self._trunk(x)[0]

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Test-time prediction: the test head's logits averaged over time, [B, K]."""
        return self.predict_heads(x)[self.test_head]

    @torch.no_grad()
    def predict_heads(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Time-averaged logits [B, K] of each distinct head (one trunk pass), the test head
        first; resets the neurons afterwards."""
        hidden, _ = self._trunk(x)
        logits = {h: self.heads[h](hidden).mean(0) for h in self.head_order()}
        functional.reset_net(self)
        return logits

    def spiking_layers(self) -> list[tuple[str, nn.Module]]:
        return [(name, m) for name, m in self.named_modules() if isinstance(m, neuron.BaseNode)]

    def parameter_counts(self) -> dict[str, int]:
        """Parameters of the trunk, the two classification heads (once when shared), and the
        auxiliary parts."""
        def count(module_or_params) -> int:
            params = (module_or_params.parameters() if isinstance(module_or_params, nn.Module)
                      else module_or_params)
            return sum(p.numel() for p in params)
        return {"trunk": count(self.trunk), "heads": count(self.heads),
                "auxiliary": count(self.mag_head) + count(self.mrp_head) + self.eta.numel()}


def build_snn(cfg: ModelConfig, num_classes: int, size: int, time_steps: int) -> TwoStreamSNN:
    """The recipe's backbone with its two heads (``model.heads``, ``model.test_head``), for
    ``size`` x ``size`` inputs of 2 channels."""
    trunk = build_trunk(cfg.backbone, lif_factory(cfg), size, norm=cfg.norm,
                        conv_init=cfg.conv_init)
    return TwoStreamSNN(trunk, num_classes, time_steps, heads=cfg.heads,
                        test_head=cfg.test_head)

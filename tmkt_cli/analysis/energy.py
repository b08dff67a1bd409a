"""Firing rates, synaptic operations, MACs and the energy estimate of SNNs.

Counting rules (docs/evaluation.md):

- **Firing rate** of a spiking layer: spikes / (neurons x time steps x samples).
- **Synaptic operations** are counted where they happen, at the synaptic layers (convolutions
  and linear layers): every non-zero input element triggers one accumulate (AC) per connection
  it has to an output, its fan-out (out_channels x the kernel positions it reaches, exact at
  borders and with strides). For a layer that reads spikes this is spikes x fan-out; a layer
  reading average-pooled spikes counts each non-zero pooled value once.
- The **first** synaptic layer reads the analog input (event counts, or pixels), so it does
  multiply-accumulates: it is counted as its dense MACs, as SNN papers do.
- The **ANN equivalent** is the dense MACs of the same network run once (one frame).
- Batch normalisation folds into the preceding weights at inference, pooling and the neurons'
  membrane updates are not counted (the convention of the SNN energy literature).
- **Energy**: ACs x E_AC + MACs x E_MAC, with 32-bit floating-point figures at 45 nm
  (Horowitz, ISSCC 2014: add 0.9 pJ, multiply 3.7 pJ, so a MAC is 4.6 pJ).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

SYNAPTIC_LAYERS = (nn.Conv2d, nn.Linear)
"""Module types whose inputs are counted as synaptic operations."""


# --------------------------------------------------------------------------------------------
# Pure counting functions
# --------------------------------------------------------------------------------------------

def conv2d_synaptic_ops(inputs: torch.Tensor, conv: nn.Conv2d) -> float:
    """Accumulates a convolution does when only its non-zero inputs are propagated.

    Each output element sums over its receptive field; counting the non-zero inputs in every
    receptive field (a convolution of the non-zero mask with a kernel of ones, per channel
    group) and multiplying by the output channels of the group gives, summed, the number of
    (non-zero input, output) connections: spikes x fan-out, borders included.
    """
    c_in = conv.in_channels
    x = (inputs.detach() != 0).to(torch.float32).reshape(-1, c_in, *inputs.shape[-2:])
    groups = conv.groups
    n = x.shape[0]
    active_per_group = x.view(n, groups, c_in // groups, *x.shape[-2:]).sum(dim=2)
    padding = conv.padding
    if conv.padding_mode != "zeros":  # reflected/circular padding repeats real inputs
        active_per_group = F.pad(active_per_group, conv._reversed_padding_repeated_twice,
                                 mode=conv.padding_mode)
        padding = 0
    ones = active_per_group.new_ones(groups, 1, *conv.kernel_size)
    reach = F.conv2d(active_per_group, ones, stride=conv.stride, padding=padding,
                     dilation=conv.dilation, groups=groups)
    return float(reach.sum(dtype=torch.float64)) * (conv.out_channels // groups)


def conv2d_dense_macs(output_numel: int, conv: nn.Conv2d) -> float:
    """MACs of a dense convolution producing ``output_numel`` elements."""
    kernel = math.prod(conv.kernel_size)
    return float(output_numel) * (conv.in_channels // conv.groups) * kernel


def linear_synaptic_ops(inputs: torch.Tensor, linear: nn.Linear) -> float:
    """Non-zero inputs x out_features (every input reaches every output)."""
    return float(torch.count_nonzero(inputs.detach())) * linear.out_features


def linear_dense_macs(inputs_numel: int, linear: nn.Linear) -> float:
    return float(inputs_numel) * linear.out_features


def synaptic_ops(module: nn.Module, inputs: torch.Tensor) -> float:
    if isinstance(module, nn.Conv2d):
        return conv2d_synaptic_ops(inputs, module)
    if isinstance(module, nn.Linear):
        return linear_synaptic_ops(inputs, module)
    raise TypeError(f"not a synaptic layer: {type(module).__name__}")


def dense_macs(module: nn.Module, inputs: torch.Tensor, output: torch.Tensor) -> float:
    if isinstance(module, nn.Conv2d):
        return conv2d_dense_macs(output.numel(), module)
    if isinstance(module, nn.Linear):
        return linear_dense_macs(inputs.numel(), module)
    raise TypeError(f"not a synaptic layer: {type(module).__name__}")


def energy_estimate(ac_ops: float, mac_ops: float, ann_macs: float, energy_ac_pj: float,
                    energy_mac_pj: float) -> dict[str, float]:
    """Energy per sample in picojoules: the SNN (ACs and the first layer's MACs) and its ANN
    equivalent (dense MACs of one frame)."""
    snn = ac_ops * energy_ac_pj + mac_ops * energy_mac_pj
    ann = ann_macs * energy_mac_pj
    return {"snn_pj": snn, "ann_pj": ann,
            "ann_over_snn": ann / snn if snn > 0 else math.inf}


# --------------------------------------------------------------------------------------------
# Hooks
# --------------------------------------------------------------------------------------------

@dataclass
class SpikeCount:
    neurons: int = 0
    """Neurons of the layer per sample (C x H x W), from the last output seen."""
    spikes: float = 0.0
    elements: int = 0
    """Neuron-steps observed: neurons x T x samples."""

    @property
    def firing_rate(self) -> float:
        return self.spikes / self.elements if self.elements else math.nan


@dataclass
class SynapseCount:
    ops: float = 0.0
    """Accumulates driven by non-zero inputs."""
    dense_macs: float = 0.0
    """Multiply-accumulates of the same layer run densely."""
    inputs: int = 0
    active_inputs: int = 0


@dataclass
class ActivityMonitor:
    """Forward hooks that count spikes and synaptic operations while a model runs.

    ``spiking_layers`` are ``(name, module)`` pairs whose outputs are spike tensors
    ``[T, B, ...]``; every ``nn.Conv2d`` / ``nn.Linear`` of ``model`` is a synaptic layer
    (whatever its input layout: ``[T*B, C, H, W]``, ``[T, B, F]``, ...). The first synaptic
    layer to run reads the analog input and is counted as MACs.
    """

    model: nn.Module
    spiking_layers: list[tuple[str, nn.Module]] = field(default_factory=list)
    spikes: dict[str, SpikeCount] = field(default_factory=dict)
    synapses: dict[str, SynapseCount] = field(default_factory=dict)
    call_order: list[str] = field(default_factory=list)
    _handles: list = field(default_factory=list)
    _paused: bool = False

    def __enter__(self) -> ActivityMonitor:
        for name, module in self.spiking_layers:
            self.spikes[name] = SpikeCount()
            self._handles.append(module.register_forward_hook(self._spike_hook(name)))
        for name, module in self.model.named_modules():
            if isinstance(module, SYNAPTIC_LAYERS):
                self._handles.append(module.register_forward_hook(self._synapse_hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    @contextmanager
    def paused(self):
        """Count nothing inside: work a deployed network would not do (eval reads the other
        head of a two-head SNN beside its test head)."""
        self._paused = True
        try:
            yield
        finally:
            self._paused = False

    def _spike_hook(self, name: str):
        def hook(module, inputs, output):
            if self._paused:
                return
            out = output.detach()
            count = self.spikes[name]
            count.neurons = math.prod(out.shape[2:])
            count.spikes += float(out.sum(dtype=torch.float64))
            count.elements += out.numel()
        return hook

    def _synapse_hook(self, name: str):
        def hook(module, inputs, output):
            if self._paused:
                return
            x = inputs[0]
            if name not in self.synapses:
                self.synapses[name] = SynapseCount()
                self.call_order.append(name)
            count = self.synapses[name]
            count.ops += synaptic_ops(module, x)
            count.dense_macs += dense_macs(module, x, output)
            count.inputs += x.numel()
            count.active_inputs += int(torch.count_nonzero(x.detach()))
        return hook

    # -- results -------------------------------------------------------------------------------
    def firing_rates(self) -> list[dict]:
        """Per spiking layer, in network order: name, neurons, firing rate."""
        return [{"layer": name, "neurons": c.neurons, "firing_rate": c.firing_rate}
                for name, c in self.spikes.items() if c.elements]

    def operations(self, samples: int, time_steps: int, spiking: bool = True) -> dict:
        """Per-sample operation counts. ``spiking``: the SNN rule (first layer MACs, the rest
        ACs of non-zero inputs); otherwise every layer is dense MACs (an ANN)."""
        samples = max(1, samples)
        layers, ac, mac, dense = [], 0.0, 0.0, 0.0
        for i, name in enumerate(self.call_order):
            c = self.synapses[name]
            kind = "mac" if (i == 0 or not spiking) else "ac"
            ops = (c.dense_macs if kind == "mac" else c.ops) / samples
            if kind == "mac":
                mac += ops
            else:
                ac += ops
            dense += c.dense_macs / samples
            layers.append({"layer": name, "kind": kind, "ops": ops,
                           "dense_macs": c.dense_macs / samples,
                           "input_density": c.active_inputs / c.inputs if c.inputs else 0.0})
        return {"layers": layers, "ac_ops": ac, "mac_ops": mac,
                # One frame of the same network run densely: the ANN it is compared with.
                "ann_macs": dense / max(1, time_steps)}

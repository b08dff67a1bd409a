"""A trained SNN in plain torch modules, for export: what ``tmkt export`` writes out.

:func:`plain_network` turns a trained :class:`~tmkt_cli.models.snn.TwoStreamSNN` into a
:class:`PlainSNN` with the same weights that computes ``model.predict``: events
``[T, B, 2, H, W]`` to the time-averaged logits ``[B, K]`` of the head the run reports
(``model.test_head``). Nothing in it is spikingjelly's or a custom autograd function, so
TorchScript saves it whole and the ONNX exporter traces it:

* the LIF neuron (:class:`PlainLIF`) is unrolled over T in tensor ops, in the order the fused
  pass of models/neurons.py computes it (charge ``H[t] = X[t]/tau + (1 - 1/tau) V[t-1]``, fire
  at ``H >= V_th``, or ``H > V_th`` for ``model.fire: gt``, hard reset to 0), so TorchScript
  gives the same floats;
* stateless layers run on T x B folded into one batch (:class:`Stepwise`), as spikingjelly's
  ``SeqToANNContainer`` does;
* BatchNorm is in evaluation mode: it scales each element by running statistics, so
  ``model.norm: pooled`` and ``per_step`` compute the same values and both fold T into the
  batch;
* only the reported head is kept (the other head, MAG, MRP and eta do not predict).

The networks start at rest for every call (``model.predict`` resets after each batch).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from tmkt_cli.errors import TmktError


class PlainLIF(nn.Module):
    """LIF over a sequence ``[T, ...]`` (decay_input, hard reset to 0), from rest."""

    def __init__(self, tau: float, threshold: float, strict: bool):
        super().__init__()
        self.scale = 1.0 / float(tau)
        self.keep = 1.0 - 1.0 / float(tau)
        self.threshold = float(threshold)
        self.strict = bool(strict)

    def extra_repr(self) -> str:
        rule = ">" if self.strict else ">="
        return f"scale={self.scale}, keep={self.keep}, fire: H {rule} {self.threshold}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        charge = x * self.scale  # the input's share of every step at once, as the fused pass
        v = torch.zeros_like(charge[0])
        spikes = []
        for t in range(charge.shape[0]):
            h = torch.add(charge[t], v, alpha=self.keep)
            fired = h > self.threshold if self.strict else h >= self.threshold
            spikes.append(fired.to(x.dtype))
            v = h.masked_fill(fired, 0.0)
        return torch.stack(spikes)


class Stepwise(nn.Module):
    """Stateless layers (convolution, pooling, linear, BatchNorm in evaluation mode) on every
    time step: ``[T, B, ...]`` folded to ``[T * B, ...]`` and back."""

    def __init__(self, layers: nn.Sequential):
        super().__init__()
        self.layers = layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layers(x.flatten(0, 1))
        return y.unflatten(0, (x.shape[0], x.shape[1]))


class FlattenSteps(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2)


class PlainPreActBlock(nn.Module):
    """models/snn.py's PreActBlock: BN-LIF-conv-BN-LIF-conv plus the shortcut."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.bn1, self.lif1, self.conv1 = (plain(block.bn1), plain(block.lif1),
                                           plain(block.conv1))
        self.bn2, self.lif2, self.conv2 = (plain(block.bn2), plain(block.lif2),
                                           plain(block.conv2))
        self.has_shortcut = block.shortcut is not None
        self.shortcut_on_input = bool(block.shortcut_bn_lif)
        self.shortcut = plain(block.shortcut) if self.has_shortcut else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.lif1(self.bn1(x))
        residual = x
        if self.has_shortcut:
            residual = self.shortcut(x if self.shortcut_on_input else out)
        return self.conv2(self.lif2(self.bn2(self.conv1(out)))) + residual


class SumHead(nn.Module):
    """models/snn.py's ResidualHead: the static head plus its correction."""

    def __init__(self, base: nn.Linear, delta: nn.Linear):
        super().__init__()
        self.base, self.delta = base, delta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.delta(x)


class PlainSNN(nn.Module):
    """``x [T, B, 2, H, W]`` (event counts) -> time-averaged logits ``[B, K]``."""

    def __init__(self, trunk: nn.Module, head: nn.Module):
        super().__init__()
        self.trunk, self.head = trunk, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x)).mean(0)


def plain_network(model: nn.Module) -> PlainSNN:
    """The inference form of a trained ``TwoStreamSNN``, through its test head, in
    evaluation mode (a copy: ``model`` is left as it is)."""
    return PlainSNN(plain(model.trunk), plain(model.heads[model.test_head])).eval()


def plain(module: nn.Module) -> nn.Module:
    """The plain-torch form of one of the SNN's modules (its weights copied)."""
    from spikingjelly.activation_based import layer

    from tmkt_cli.models import snn
    from tmkt_cli.models.neurons import FusedLIFNode

    if isinstance(module, FusedLIFNode):
        return PlainLIF(module.tau, module.v_threshold, module.fire == "gt")
    if isinstance(module, snn.SeqNorm | layer.SeqToANNContainer):
        return Stepwise(nn.Sequential(*(copy.deepcopy(m) for m in module)))
    if isinstance(module, snn.FlattenSteps):
        return FlattenSteps()
    if isinstance(module, snn.FeatureTap | nn.Identity):
        return nn.Identity()
    if isinstance(module, snn.SequentialTrunk):
        return plain(module.layers)
    if isinstance(module, snn.PreActResNetTrunk):
        return nn.Sequential(*(plain(m) for m in (
            module.stem, module.layer1, module.layer2, module.layer3, module.layer4,
            module.final_bn, module.final_lif, module.pool, module.feature_tap)))
    if isinstance(module, snn.PreActBlock):
        return PlainPreActBlock(module)
    if isinstance(module, snn.ResidualHead):
        return SumHead(copy.deepcopy(module.base), copy.deepcopy(module.delta))
    if type(module) is nn.Sequential:
        return nn.Sequential(*(plain(m) for m in module))
    if type(module) is nn.Linear:
        return copy.deepcopy(module)
    raise TmktError(f"export: tmkt has no plain form of {type(module).__name__} (a layer "
                    f"this export does not know; its backbone cannot be exported yet)")

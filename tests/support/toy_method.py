"""A method that is not tmkt's, in one module: what a user writes to add one. It declares
itself (inputs, default switches, its task) and registers; its task's step is cross-entropy on
the time-averaged event logits (no TET), so the test can tell it from event_only."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional

from tmkt_cli.methods.registry import ALL_OFF, Method, register
from tmkt_cli.train.tasks import SNNTransferTask, as_sequence

TOY = register(Method(name="toy", summary="cross-entropy on the mean event logits",
                      inputs=("events",), task=f"{__name__}:ToyTask", switches=dict(ALL_OFF)))


class ToyTask(SNNTransferTask):
    steps = 0

    def training_step(self, batch: dict, ctx) -> dict[str, torch.Tensor]:
        type(self).steps += 1
        logits = self.model(as_sequence(batch["events"]), head="event").logits.mean(0)
        functional.reset_net(self.model)
        loss = F.cross_entropy(logits, batch["label"])
        return {"loss": loss, "toy_loss": loss.detach()}

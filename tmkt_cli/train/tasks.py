"""What one training step computes, for every method: the engine's :class:`Task` objects.

``SNNTransferTask`` computes event_only, finetune, kt, tmkt and (with a teacher) CKD: each
component (sliding replacement, time-step mixup, MAG, MRP, domain alignment, STR weights,
TET, KD) is a switch in the method config, so an ablation is a recipe, not a code change.
The equations are in docs/methods.md; the maths lives in tmkt_cli/methods/.
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional
from torch import nn

from tmkt_cli.analysis.heads import choose_head, head_accuracies
from tmkt_cli.config import MethodConfig
from tmkt_cli.methods.losses import (
    domain_alignment_loss,
    kd_loss,
    linear_cka,
    mag_loss,
    mean_logits_ce,
    mrp_loss,
    tet_loss,
)
from tmkt_cli.methods.registry import trains_both_heads
from tmkt_cli.methods.schedules import kd_weight, mix_ratio_at, sliding_replacement_probability
from tmkt_cli.methods.tsm import (
    event_frame_mask,
    sample_truncation,
    solve_trigger_probability,
    time_step_mixup,
)
from tmkt_cli.train.engine import StepContext, evaluate_classifier


def as_sequence(events: torch.Tensor) -> torch.Tensor:
    """Loader batches are [B, T, 2, H, W]; the networks read [T, B, 2, H, W]."""
    return events.transpose(0, 1).contiguous()


def repeated(image: torch.Tensor, time_steps: int) -> torch.Tensor:
    """A static image batch [B, 2, H, W] as a sequence [T, B, 2, H, W] (a view, no copy)."""
    return image.unsqueeze(0).expand(time_steps, *image.shape)


@dataclass
class Teacher:
    """CKD's frozen ANN teacher and the phase schedule of its weight W."""

    model: nn.Module
    temperature: float
    weight: float
    switch_at: float
    steepness: float
    input_key: str = "static"
    """The batch entry the teacher reads: ``static`` or ``static_rgb`` (a colour teacher)."""


class SNNTransferTask:
    """Two streams through one spiking trunk (or one stream for event_only / finetune)."""

    # Purposes of the per-step random streams (so each draw has its own generator).
    _REPLACE, _MIX = 1, 2

    def __init__(self, model: nn.Module, method: MethodConfig, threshold: float,
                 teacher: Teacher | None = None):
        self.model = model
        self.m = method
        self.threshold = threshold
        self.teacher = teacher
        # Whether the static head trains (the two-stream methods): only then is its accuracy
        # on events worth logging beside the test head's.
        self.two_streams = trains_both_heads(method, distilled=teacher is not None)
        if teacher is not None:
            teacher.model.eval()
            for p in teacher.model.parameters():
                p.requires_grad_(False)

    # -- pieces ----------------------------------------------------------------------------
    def _forward(self, x: torch.Tensor, head: str):
        out = self.model(x, head=head)
        functional.reset_net(self.model)  # the next stream / batch starts from rest
        return out

    def _cls_loss(self, logits: torch.Tensor, y: torch.Tensor,
                  step_weights: torch.Tensor | None = None) -> torch.Tensor:
        if self.m.tet:
            return tet_loss(logits, y, lam=self.m.tet_lambda, theta=self.threshold,
                            step_weights=step_weights)
        return mean_logits_ce(logits, y)

    def _is_static_phase(self, ctx: StepContext) -> bool:
        return self.m.name == "finetune" and ctx.progress < self.m.finetune_static_epochs

    # -- the step ----------------------------------------------------------------------------
    def training_step(self, batch: dict, ctx: StepContext) -> dict[str, torch.Tensor]:
        events = as_sequence(batch["events"])
        y = batch["label"]
        if self._is_static_phase(ctx):  # finetune, phase 1: static sequences only
            return self._one_stream_step(repeated(batch["static"], events.shape[0]), y, ctx,
                                         "static")
        if not self.two_streams:  # event_only, finetune phase 2
            return self._one_stream_step(events, y, ctx, "event")
        return self._two_stream_step(batch, events, y, ctx)

    def _one_stream_step(self, x: torch.Tensor, y: torch.Tensor, ctx: StepContext,
                         term: str) -> dict[str, torch.Tensor]:
        """L = L_cls of one stream through the event head (``term`` names it in the shares)."""
        out = self._forward(x, "event")
        loss = self._cls_loss(out.logits, y)
        return {"loss": loss, "acc": _acc(out.logits, y), **self._grad_shares(ctx, {term: loss})}

    def _two_stream_step(self, batch: dict, events: torch.Tensor, y: torch.Tensor,
                         ctx: StepContext) -> dict[str, torch.Tensor]:
        """L = L_s + L_e + da·L_DA + mag·L_MAG + mrp·L_MRP + W·L_KD, each term where its
        switch is on, summed in this order (the gradient shares measure each on the trunk)."""
        logs: dict[str, torch.Tensor] = {}
        source, event_mask = self._static_stream(batch["static"], events, ctx, logs)
        out_s = self._forward(source, "static")
        out_e = self._forward(events, "event")
        eta = self.model.eta if self.m.str_weights else None
        terms = self._classification(out_s, out_e, y, eta, logs)
        terms.update(self._alignment(out_s, out_e, eta, logs))
        terms.update(self._modality_guidance(out_s, event_mask, logs))
        terms.update(self._mix_ratio_perception(out_s, event_mask, logs))
        terms.update(self._distillation(batch, out_s, events.device, ctx, logs))
        loss = functools.reduce(operator.add, terms.values())
        return {"loss": loss, **logs, **self._grad_shares(ctx, terms)}

    def _static_stream(self, static: torch.Tensor, events: torch.Tensor, ctx: StepContext,
                       logs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The static/mixed stream and which of its frames are events [T, B]: the partner
        image repeated over T; KT replaces whole sequences by their events with probability
        P; TSM replaces a suffix of frames from a random truncation point."""
        T, B = events.shape[:2]
        source = repeated(static, T)
        event_mask = torch.zeros(T, B, dtype=torch.bool, device=events.device)
        if self.m.sliding_replacement:
            P = sliding_replacement_probability(ctx.step, ctx.total_steps)
            replace = (torch.rand(B, generator=ctx.generator(self._REPLACE)) < P)
            replace = replace.to(events.device)
            source = torch.where(replace.view(1, B, *([1] * (events.dim() - 2))), events,
                                 source)
            event_mask |= replace.view(1, B)
            logs["replace_p"] = torch.tensor(P)
        if self.m.tsm:
            r_m = mix_ratio_at(ctx.progress, self.m)
            p = solve_trigger_probability(r_m, T)
            t_star = sample_truncation(B, T, p, ctx.generator(self._MIX)).to(events.device)
            mask = event_frame_mask(t_star, T)
            source = time_step_mixup(source, events, mask)
            event_mask |= mask
            logs["mix_ratio"] = torch.tensor(r_m)
        return source, event_mask

    def _classification(self, out_s, out_e, y: torch.Tensor, eta: torch.Tensor | None,
                        logs: dict) -> dict[str, torch.Tensor]:
        """L_s on the static/mixed stream, L_e on the events (STR-weighted per step when
        ``str_weights``: 1 - sigma(eta_t))."""
        event_weights = 1 - torch.sigmoid(eta) if eta is not None else None
        loss_s = self._cls_loss(out_s.logits, y)
        loss_e = self._cls_loss(out_e.logits, y, event_weights)
        logs.update(loss_static=loss_s.detach(), loss_event=loss_e.detach(),
                    acc=_acc(out_e.logits, y), acc_static=_acc(out_s.logits, y))
        return {"static": loss_s, "event": loss_e}

    def _alignment(self, out_s, out_e, eta: torch.Tensor | None,
                   logs: dict) -> dict[str, torch.Tensor]:
        """da·L_DA from the per-step CKA of the two streams' membrane potentials. The CKA is
        computed once and logged for every method (is alignment happening at all?)."""
        terms = {}
        if self.m.domain_alignment:
            cka = linear_cka(out_s.features, out_e.features)
            loss_da = domain_alignment_loss(cka=cka, eta=eta)
            terms["da"] = self.m.da_weight * loss_da
            logs["loss_da"] = loss_da.detach()
        else:
            with torch.no_grad():
                cka = linear_cka(out_s.features.detach(), out_e.features.detach())
        logs["cka"] = cka.detach().mean()
        return terms

    def _modality_guidance(self, out_s, event_mask: torch.Tensor,
                           logs: dict) -> dict[str, torch.Tensor]:
        """mag·L_MAG: classify each frame of the mixed stream as static or event (TMKT)."""
        if not (self.m.tsm and self.m.mag):
            return {}
        loss_mag = mag_loss(self.model.mag_head(out_s.features), event_mask)
        logs["loss_mag"] = loss_mag.detach()
        return {"mag": self.m.mag_weight * loss_mag}

    def _mix_ratio_perception(self, out_s, event_mask: torch.Tensor,
                              logs: dict) -> dict[str, torch.Tensor]:
        """mrp·L_MRP: regress the realised fraction of event frames (TMKT)."""
        if not (self.m.tsm and self.m.mrp):
            return {}
        ratio = event_mask.float().mean(0)
        loss_mrp = mrp_loss(self.model.mrp_head(out_s.features), ratio)
        logs["loss_mrp"] = loss_mrp.detach()
        return {"mrp": self.m.mrp_weight * loss_mrp}

    def _distillation(self, batch: dict, out_s, device: torch.device, ctx: StepContext,
                      logs: dict) -> dict[str, torch.Tensor]:
        """weight·W·L_KD: the static stream's mean logits against the frozen teacher's, with
        CKD's phase weight W (phase II, W exactly 0, skips the teacher's forward pass)."""
        if self.teacher is None:
            return {}
        t = self.teacher
        w = kd_weight(ctx.progress, t.switch_at, t.steepness)
        logs["kd_w"] = torch.tensor(w)
        if w <= 0:
            return {}
        if next(t.model.parameters()).device != device:  # outside the student's state:
            t.model.to(device)                           # moved here
        with torch.no_grad():
            teacher_logits = t.model(batch[t.input_key])
        loss_kd = kd_loss(out_s.logits.mean(0), teacher_logits, t.temperature)
        logs["loss_kd"] = loss_kd.detach()
        return {"kd": t.weight * w * loss_kd}

    def _grad_shares(self, ctx: StepContext, terms: dict[str, torch.Tensor]
                     ) -> dict[str, torch.Tensor]:
        """At a grad-share step (``train.grad_share_every``): the norm of each weighted loss
        term's gradient on the trunk (``gradnorm_<term>``) and its share of their sum
        (``share_<term>``), from one extra backward pass per term; the step's own gradients
        are untouched (``autograd.grad`` does not accumulate into ``.grad``)."""
        if not ctx.grad_shares:
            return {}
        params = [p for p in self.model.trunk.parameters() if p.requires_grad]
        norms = {}
        for name, term in terms.items():
            grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
            squares = [g.detach().float().pow(2).sum() for g in grads if g is not None]
            norms[name] = torch.stack(squares).sum().sqrt() if squares else \
                torch.zeros((), device=term.device)
        total = torch.stack(list(norms.values())).sum().clamp_min(1e-30)
        return {**{f"gradnorm_{k}": v for k, v in norms.items()},
                **{f"share_{k}": v / total for k, v in norms.items()}}

    # -- evaluation ----------------------------------------------------------------------------
    def select_head(self, val: dict[str, float]) -> str | None:
        """``model.test_head: validation``: make the head with the higher top-1 on the
        validation split (``val``, this task's metrics there) the test head, the event head
        on a tie. None where nothing is chosen: a fixed head, or one head that trains."""
        model = self.model
        if model.head_rule != "validation" or not self.two_streams or model.shared_heads:
            return None
        accs = head_accuracies(val, model.test_head)
        model.test_head = choose_head("validation", accs["event"], accs["static"])
        return model.test_head

    def evaluate(self, loader, device: torch.device) -> dict[str, float]:
        """Event test split, time-averaged logits: the test head's figures, and for the
        two-stream methods the other head's top-1 on the same events (``acc_static_head``:
        how much of what the images taught the trunk the static head reads off events)."""
        predict = self.model.predict_heads if self.two_streams else self.model.predict
        return evaluate_classifier(lambda b: predict(as_sequence(b["events"])), loader, device)


class SNNImageTask(SNNTransferTask):
    """static_only: the SNN trained on static images alone, each repeated over the T steps,
    through the static head; evaluated the same way on the static test images. What the
    images can teach this network (the headroom measure's (b))."""

    def training_step(self, batch: dict, ctx: StepContext) -> dict[str, torch.Tensor]:
        y = batch["label"]
        out = self._forward(repeated(batch["image"], self.model.time_steps), "static")
        loss = self._cls_loss(out.logits, y)
        return {"loss": loss, "acc": _acc(out.logits, y),
                **self._grad_shares(ctx, {"static": loss})}

    def evaluate(self, loader, device: torch.device) -> dict[str, float]:
        """Static test images, static head, time-averaged logits."""
        return evaluate_classifier(
            lambda b: self.model.predict(repeated(b["image"], self.model.time_steps)), loader,
            device)


class ImageClassifierTask:
    """The ANN teacher: cross-entropy on static images (pretrain-ann)."""

    def __init__(self, model: nn.Module):
        self.model = model

    def training_step(self, batch: dict, ctx: StepContext) -> dict[str, torch.Tensor]:
        logits = self.model(batch["image"])
        loss = F.cross_entropy(logits, batch["label"])
        return {"loss": loss, "acc": _acc(logits, batch["label"])}

    def evaluate(self, loader, device: torch.device) -> dict[str, float]:
        return evaluate_classifier(lambda b: self.model(b["image"]), loader, device)


def _acc(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Accuracy of [B, K] logits or of [T, B, K] logits averaged over time."""
    if logits.dim() == 3:
        logits = logits.mean(0)
    return (logits.detach().argmax(-1) == y).float().mean()

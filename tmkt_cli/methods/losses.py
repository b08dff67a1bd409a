"""The losses of KT, TMKT and CKD, as pure functions of tensors.

Sources (equations in docs/methods.md):
* KT: He, Zhao, Li et al., "An Efficient Knowledge Transfer Strategy for Spiking Neural
  Networks from Static to Event Domain", AAAI 2024, arXiv 2303.13077: domain alignment with
  linear CKA and spatio-temporal regularisation (L_DA), TET-form event and static losses.
* TET: Deng et al., "Temporal Efficient Training of Spiking Neural Network via Gradient
  Re-weighting", ICLR 2022: per-step CE plus an MSE pull towards a constant.
* CKA: Kornblith et al., "Similarity of Neural Network Representations Revisited", ICML 2019.
* TMKT: Xie, Ye et al., arXiv 2511.12150: MAG and MRP (their exact forms are open there;
  tmkt's choices are documented in docs/methods.md).
* KD: Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network", 2015; used by
  CKD (Ye, Qian et al., ICME 2025, arXiv 2507.09269) on the static/mixed stream.

Every loss computes in float32 (under bf16/fp16 autocast too) and returns a scalar tensor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _float32(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.to(torch.float32) for t in tensors]


def _no_autocast(device: torch.device):
    """Disable autocast so matmuls stay in float32 (a bf16 Gram matrix loses CKA's digits)."""
    return torch.autocast(device_type=device.type, enabled=False)


def _centred_and_scaled(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Column-centred x [N, B, D] in float32, divided by max |x| of each batch (a detached
    scale: CKA does not depend on it, and it keeps Gram entries within 4 D, so nothing
    over- or underflows). Returns (scaled, scale [N])."""
    x = x.to(torch.float32)
    # (abs + amax: a tenth of the time of vector_norm(ord=inf) over two dims on the CPU)
    scale = x.detach().abs().amax(dim=(-2, -1)).clamp_min(eps)
    centred = x - x.mean(dim=-2, keepdim=True)
    return centred.div_(scale[:, None, None]), scale


class _LinearCKA(torch.autograd.Function):
    """Linear CKA of [N, B, D] pairs -> [N], with its gradient written out: autograd through
    centring, scaling, two Gram matrices and their norms costs four matrix products and about
    twenty passes over the features; this backward needs one matrix product per input.

    With Xs the centred, scaled features, K = Xs Xs^T, L = Ys Ys^T (both already centred),
    CKA = <K, L> / (|K| |L|) and dCKA/dXs = 2 (L / (|K| |L|) - CKA K / |K|^2) Xs. That is
    already column-centred (K and L have zero row sums), so it is also the gradient with
    respect to the centred features; the scale contributes 1/s and nothing else (CKA is scale
    invariant).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        with _no_autocast(x.device):
            xs, sx = _centred_and_scaled(x, eps)
            ys, sy = _centred_and_scaled(y, eps)
            gram_x = torch.bmm(xs, xs.transpose(1, 2))
            gram_y = torch.bmm(ys, ys.transpose(1, 2))
            norm_x = torch.linalg.matrix_norm(gram_x)
            norm_y = torch.linalg.matrix_norm(gram_y)
            denominator = (norm_x * norm_y).clamp_min(eps)
            cka = (gram_x * gram_y).sum(dim=(1, 2)) / denominator
        ctx.save_for_backward(xs, ys, gram_x, gram_y, norm_x, norm_y, denominator, cka, sx, sy)
        ctx.eps = eps
        ctx.dtypes = (x.dtype, y.dtype)
        return cka

    @staticmethod
    def backward(ctx, grad_cka: torch.Tensor):
        xs, ys, gram_x, gram_y, norm_x, norm_y, denominator, cka, sx, sy = ctx.saved_tensors
        eps = ctx.eps
        grad_x = grad_y = None
        with _no_autocast(xs.device):
            g = grad_cka.to(torch.float32)[:, None, None]
            c = cka[:, None, None]
            d = denominator[:, None, None]
            if ctx.needs_input_grad[0]:
                outer = gram_y / d - c * gram_x / norm_x.square().clamp_min(eps)[:, None, None]
                outer = outer * (2.0 * g / sx[:, None, None])
                grad_x = torch.bmm(outer, xs).to(ctx.dtypes[0])
            if ctx.needs_input_grad[1]:
                outer = gram_x / d - c * gram_y / norm_y.square().clamp_min(eps)[:, None, None]
                outer = outer * (2.0 * g / sy[:, None, None])
                grad_y = torch.bmm(outer, ys).to(ctx.dtypes[1])
        return grad_x, grad_y, None


def linear_cka(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Linear CKA between two feature sets over the batch (Kornblith et al. 2019, linear
    kernel): ``<K, L>_F / (||K||_F ||L||_F)`` with K, L the Gram matrices of the
    column-centred features; in [0, 1], 1 for features equal up to scaling and rotation.

    ``x``, ``y``: [..., B, D] (leading dimensions, e.g. time, are batched) -> [...].
    Computed through B x B Gram matrices (B is small, D can be 18,432), in float32 also under
    autocast, with a hand-written backward (see :class:`_LinearCKA`). A feature set that is
    constant over the batch gives CKA 0 (and zero gradient) rather than NaN.
    """
    if x.shape[:-1] != y.shape[:-1] or x.dim() < 2:
        raise ValueError(f"CKA needs [..., B, D] features over the same batch: "
                         f"x {tuple(x.shape)}, y {tuple(y.shape)}")
    lead = x.shape[:-2]
    cka = _LinearCKA.apply(x.reshape(-1, *x.shape[-2:]), y.reshape(-1, *y.shape[-2:]), eps)
    return cka.reshape(lead)


def _shape(t: torch.Tensor | None):
    return None if t is None else tuple(t.shape)


def domain_alignment_loss(static_features: torch.Tensor | None = None,
                          event_features: torch.Tensor | None = None,
                          eta: torch.Tensor | None = None, *,
                          cka: torch.Tensor | None = None) -> torch.Tensor:
    """KT's L_DA: ``1/T sum_t sigma(eta_t) (1 - |CKA(F_s^t, F_e^t)|)``.

    ``static_features``, ``event_features``: [T, B, D] (the static/mixed and the event
    stream); or ``cka``: their per-step [T] :func:`linear_cka`, when the caller has it
    already. ``eta``: [T] learnable step weights (spatio-temporal regularisation); None
    weighs every step 1 (the plain mean).
    """
    if cka is None:
        if static_features is None or event_features is None or \
                static_features.shape != event_features.shape or static_features.dim() != 3:
            raise ValueError(f"expected two [T, B, D] feature tensors, got "
                             f"{_shape(static_features)} and {_shape(event_features)}")
        cka = linear_cka(static_features, event_features)
    per_step = 1.0 - cka.abs()
    if eta is not None:
        per_step = torch.sigmoid(eta.to(torch.float32)) * per_step
    return per_step.mean()


def tet_loss(logits: torch.Tensor, target: torch.Tensor, lam: float = 1e-3, theta: float = 0.5,
             step_weights: torch.Tensor | None = None) -> torch.Tensor:
    """TET (Deng et al. 2022), in KT's form:
    ``1/T sum_t w_t [(1 - lam) CE(o^t, y) + lam MSE(o^t, theta)]``.

    ``logits`` [T, B, K], ``target`` [B] class indices. MSE is the mean over B and K of
    (o^t - theta)^2, theta the firing threshold. ``step_weights`` [T]: KT's event loss uses
    1 - sigma(eta_t); None weighs every step 1.
    """
    if logits.dim() != 3:
        raise ValueError(f"expected logits [T, B, K], got {tuple(logits.shape)}")
    T, B, K = logits.shape
    with _no_autocast(logits.device):
        (o,) = _float32(logits)
        ce = F.cross_entropy(o.reshape(T * B, K), target.repeat(T), reduction="none")
        ce = ce.view(T, B).mean(dim=1)
        mse = (o - theta).square().mean(dim=(1, 2))
        per_step = (1.0 - lam) * ce + lam * mse
        if step_weights is not None:
            per_step = step_weights.to(torch.float32) * per_step
        return per_step.mean()


def mean_logits_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the time-averaged logits [T, B, K] (the loss when TET is off)."""
    with _no_autocast(logits.device):
        return F.cross_entropy(logits.to(torch.float32).mean(dim=0), target)


def mag_loss(frame_logits: torch.Tensor, event_mask: torch.Tensor) -> torch.Tensor:
    """MAG (TMKT): binary cross-entropy of per-frame modality logits [T, B] against the
    source of each frame (``event_mask`` [T, B], True = event frame), mean over frames."""
    if frame_logits.shape != event_mask.shape:
        raise ValueError(f"frame logits {tuple(frame_logits.shape)} and mask "
                         f"{tuple(event_mask.shape)} must both be [T, B]")
    with _no_autocast(frame_logits.device):
        return F.binary_cross_entropy_with_logits(frame_logits.to(torch.float32),
                                                  event_mask.to(torch.float32))


def mrp_loss(predicted_ratio: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """MRP (TMKT): mean squared error between the predicted [B] and the realised [B] fraction
    of event frames, both in [0, 1]. (On [0, 1] smooth-L1 with beta 1 is exactly half this
    MSE, so MSE loses nothing; see docs/methods.md.)"""
    if predicted_ratio.shape != ratio.shape:
        raise ValueError(f"prediction {tuple(predicted_ratio.shape)} and target "
                         f"{tuple(ratio.shape)} must both be [B]")
    with _no_autocast(predicted_ratio.device):
        return F.mse_loss(predicted_ratio.to(torch.float32), ratio.to(torch.float32))


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            temperature: float) -> torch.Tensor:
    """Hinton's distillation loss: ``tau^2 KL(softmax(t/tau) || softmax(s/tau))``, averaged
    over the batch; the tau^2 keeps its gradients on the scale of a CE loss.

    ``student_logits``, ``teacher_logits``: [B, K] (CKD uses the time-averaged logits of the
    student's static/mixed stream). The teacher side is not detached here: pass it computed
    under ``torch.no_grad()``.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student {tuple(student_logits.shape)} and teacher "
                         f"{tuple(teacher_logits.shape)} logits must have the same shape")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    with _no_autocast(student_logits.device):
        s, t = _float32(student_logits, teacher_logits)
        log_p_student = F.log_softmax(s / temperature, dim=-1)
        log_p_teacher = F.log_softmax(t / temperature, dim=-1)
        kl = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean")
        return kl * temperature ** 2

"""Time-step mixup (TSM) by truncation replacement.

Xie, Ye et al., "Breaking the Modality Wall: Time-step Mixup for Efficient Spiking Knowledge
Transfer from Static to Event Domain", arXiv 2511.12150 (TMKT), section on TSM.

A mixed sequence is the static sequence up to a truncation point t* and the event sequence
from t* on (same time indices), never a pixel blend. Each step triggers the truncation with
probability p, so t* is the first step whose uniform draw falls below p (truncated geometric
law) and no trigger keeps the sequence static. p is chosen so that the expected fraction of
event frames is the target mix ratio r_m.

Time indices here are 0-based: t* in {0, ..., T-1} is the first event frame, t* = T means
no trigger. Layout: sequences [T, B, ...], masks [T, B].
"""

from __future__ import annotations

import math

import torch


def expected_event_fraction(p: float, time_steps: int) -> float:
    """E[X]/T for trigger probability p: the expected fraction of event frames.

    TMKT's equation for the expected number of replaced frames,
    ``E[X] = sum_{t=1..T} (T+1-t) p (1-p)^(t-1) = T - (1-p)(1-(1-p)^T)/p``.
    Increasing in p, from 0 (p = 0) to 1 (p = 1).
    """
    _check_time_steps(time_steps)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"trigger probability must be in [0, 1], got {p}")
    if p == 0.0:
        return 0.0
    if p == 1.0:
        return 1.0
    # (1 - (1-p)^T) / p without cancellation for small p: -expm1(T log1p(-p)) / p
    survive_all = -math.expm1(time_steps * math.log1p(-p)) / p
    return (time_steps - (1.0 - p) * survive_all) / time_steps


def solve_trigger_probability(r_m: float, time_steps: int, tol: float = 1e-12) -> float:
    """The per-step trigger probability p with E[X]/T = r_m (TMKT, TSM).

    Closed form at the ends (r_m = 0 -> 0, r_m = 1 -> 1, T = 1 -> r_m); otherwise bisection,
    which cannot fail because E[X]/T is continuous and increasing in p; ``tol`` bounds the
    error on p (the default is far below the 1e-10 the method needs).
    Examples: T = 10: r_m 0.2 -> 0.0410, 0.5 -> 0.1312, 0.8 -> 0.3292; T = 6: 0.5 -> 0.1954.
    """
    _check_time_steps(time_steps)
    if not 0.0 <= r_m <= 1.0:
        raise ValueError(f"mix ratio r_m must be in [0, 1], got {r_m}")
    if r_m == 0.0 or r_m == 1.0 or time_steps == 1:
        return float(r_m)
    lo, hi = 0.0, 1.0
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if expected_event_fraction(mid, time_steps) < r_m:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def truncation_distribution(p: float, time_steps: int) -> torch.Tensor:
    """P(t* = t) for t = 0..T (float64, [T+1]); the last entry is "no trigger".

    P(t* = t) = p (1-p)^t for t < T and (1-p)^T for t = T: a geometric law truncated at T.
    """
    _check_time_steps(time_steps)
    t = torch.arange(time_steps + 1, dtype=torch.float64)
    probs = p * (1.0 - p) ** t
    probs[-1] = (1.0 - p) ** time_steps
    return probs


def sample_truncation(batch: int, time_steps: int, p: float,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw t* for each of ``batch`` sequences: int64 [B] in {0, ..., T}.

    As TMKT describes it: u_t ~ U(0, 1) for every step, t* = the first t with u_t < p,
    T when no step triggers. Drawn on the generator's device (CPU without one).
    """
    _check_time_steps(time_steps)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"trigger probability must be in [0, 1], got {p}")
    device = generator.device if generator is not None else torch.device("cpu")
    triggers = torch.rand(batch, time_steps, generator=generator, device=device) < p
    first = triggers.to(torch.uint8).argmax(dim=1)  # first True (argmax returns the first max)
    return torch.where(triggers.any(dim=1), first, torch.full_like(first, time_steps))


def event_frame_mask(t_star: torch.Tensor, time_steps: int) -> torch.Tensor:
    """bool [T, B]: True where frame t of sequence b comes from the events (t >= t*)."""
    steps = torch.arange(time_steps, device=t_star.device)
    return steps[:, None] >= t_star[None, :]


def time_step_mixup(static: torch.Tensor, events: torch.Tensor, mask: torch.Tensor
                    ) -> torch.Tensor:
    """The TSM sequence [T, B, ...]: ``events`` where ``mask`` [T, B] is True, else ``static``.

    Whole frames are taken from one source or the other, so with a mask from
    :func:`event_frame_mask` each sequence is a static prefix and an event suffix.
    ``static`` may be an expanded view (the same image repeated over T).
    """
    if static.shape != events.shape:
        raise ValueError(f"static {tuple(static.shape)} and events {tuple(events.shape)} "
                         "must have the same [T, B, ...] shape")
    if tuple(mask.shape) != tuple(events.shape[:2]):
        raise ValueError(f"mask {tuple(mask.shape)} must be [T, B] = {tuple(events.shape[:2])}")
    mask = mask.to(device=events.device, dtype=torch.bool)
    return torch.where(mask.view(*mask.shape, *([1] * (events.dim() - 2))), events, static)


def realised_event_ratio(mask: torch.Tensor) -> torch.Tensor:
    """Per-sequence fraction of event frames, float [B], from a [T, B] mask (MRP's target)."""
    return mask.to(torch.float32).mean(dim=0)


def _check_time_steps(time_steps: int) -> None:
    if time_steps < 1:
        raise ValueError(f"the number of time steps must be >= 1, got {time_steps}")

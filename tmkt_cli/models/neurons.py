"""The LIF neuron tmkt trains with: spikingjelly's LIFNode with a fused multi-step pass.

The dynamics are spikingjelly's ``LIFNode(decay_input=True, v_reset=0.0)``, per time step t:

    H[t] = V[t-1] + (X[t] - V[t-1]) / tau        charge (V[-1] = 0 after a reset)
    S[t] = Heaviside(H[t] - V_th)                  fire (surrogate gradient in backward)
    V[t] = H[t] (1 - S[t])                         hard reset to 0

spikingjelly 2.0 runs this on the CPU as a Python loop of about ten small ops per step in
forward and more in backward. :class:`FusedLIFNode` computes the same values with one
``torch.autograd.Function``:

* forward: two ops per step (the leak of the previous step's reset potential, added in place
  into the pre-scaled input). It works on the negated potential ``N = -H`` because then
  ``-V[t] = threshold(N[t], -V_th, 0)`` is one fused op (``F.threshold`` keeps x where
  x > th, else writes the value), and everything vectorisable over T (input scaling, spikes)
  runs once over the whole sequence;
* backward: the surrogate derivative, the reset derivative and the spike-gradient term are
  vectorised over T; the recurrence through the membrane is linear, so it is one in-place
  ``addcmul`` per step.

Only the charged potential (float32, [T, ...]) is saved for backward, as in spikingjelly.
On other devices (CUDA) the node hands the sequence to spikingjelly's own fused GPU kernels
(``functional.lif_multi_step``) instead; that path is tested for equality on the CPU, not
timed on a GPU here.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from typing import Literal

import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional, neuron, surrogate

SurrogateName = Literal["atan", "sigmoid", "piecewise_quadratic", "rectangular"]
Implementation = Literal["auto", "tmkt", "spikingjelly"]
FireRule = Literal["ge", "gt"]

# spikingjelly surrogate classes, by the names recipes use.
_SURROGATES = {
    "atan": surrogate.ATan,
    "sigmoid": surrogate.Sigmoid,
    "piecewise_quadratic": surrogate.PiecewiseQuadratic,
}


class _RectangularSpike(torch.autograd.Function):
    """Heaviside forward; backward alpha where |x| < 1/(2 alpha), else 0."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float):
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * surrogate_derivative(x, "rectangular", ctx.alpha), None


class RectangularSurrogate(torch.nn.Module):
    """The rectangular (gate) surrogate, which spikingjelly does not ship: g'(x) = alpha on
    |x| < 1/(2 alpha). With alpha 1 it is BrainCog's BackEIGateGrad (gradient 1 on |x| < 0.5),
    the surrogate KT's N-Omniglot run uses (run_omni.sh, --act-fun BackEIGateGrad)."""

    def __init__(self, alpha: float = 1.0):
        super().__init__()
        self.alpha = float(alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _RectangularSpike.apply(x, self.alpha)


def make_surrogate(name: str, alpha: float) -> torch.nn.Module:
    """spikingjelly's surrogate module of that name (used in single-step mode and on CUDA);
    tmkt's own for ``rectangular``."""
    if name == "rectangular":
        return RectangularSurrogate(alpha)
    try:
        return _SURROGATES[name](alpha=float(alpha))
    except KeyError:
        raise ValueError(f"unknown surrogate {name!r}; expected one of "
                         f"{', '.join(_SURROGATES)}, rectangular") from None


def surrogate_derivative(x: torch.Tensor, name: str, alpha: float) -> torch.Tensor:
    """The surrogate derivative g'(x) of the spike function at x = H - V_th (spikingjelly's
    formulas, for reference and tests):

    * atan: alpha / 2 / (1 + (pi/2 alpha x)^2)
    * sigmoid: alpha s (1 - s), s = sigmoid(alpha x)
    * piecewise_quadratic: max(0, alpha - alpha^2 |x|)
    * rectangular: alpha where |x| < 1 / (2 alpha), else 0
    """
    u, scale = _surrogate_factor(x.neg(), 0.0, name, alpha)
    return u.mul_(scale)


def _surrogate_factor(n: torch.Tensor, v_th: float, name: str, alpha: float
                      ) -> tuple[torch.Tensor, float]:
    """g'(H - V_th) = scale * u, from n = -H; u is a new float32 tensor.

    The constant is returned apart so the fused backward folds it into ops it runs anyway
    (fewer passes over memory). All three derivatives are even, so g'(H - V_th) = g'(n + V_th).
    """
    z = n.add(v_th)
    if name == "atan":
        # alpha/2 / (1 + c^2 z^2) = (alpha / (2 c^2)) / (1/c^2 + z^2), c = pi/2 alpha
        c2 = (math.pi / 2 * alpha) ** 2
        torch.addcmul(z.new_tensor(1.0 / c2), z, z, out=z)
        return z.reciprocal_(), alpha / (2.0 * c2)
    if name == "sigmoid":
        s = z.mul_(alpha).sigmoid_()
        return s.addcmul_(s, s, value=-1.0), alpha  # s - s^2 = s (1 - s)
    if name == "piecewise_quadratic":
        # alpha - alpha^2 |z| = alpha^2 (1/alpha - |z|)
        return z.abs_().neg_().add_(1.0 / alpha).clamp_min_(0.0), alpha * alpha
    if name == "rectangular":
        return z.abs_().lt_(0.5 / alpha), alpha
    raise ValueError(f"unknown surrogate {name!r}")


def _negated_after_reset(n: torch.Tensor, v_th: float, strict: bool) -> torch.Tensor:
    """-V from n = -H: n where the neuron stayed silent, 0 where it fired (hard reset)."""
    if strict:  # silent where H <= V_th
        return torch.where(n >= -v_th, n, n.new_zeros(()))
    return F.threshold(n, -v_th, 0.0)  # silent where H < V_th: one fused op


class _FusedLIFSequence(torch.autograd.Function):
    """Multi-step LIF (decay_input, hard reset to 0) over x [T, ...].

    Returns (spikes [T, ...] in x's dtype, charged potential H [T, ...] float32 or an empty
    tensor when not requested, final potential V[T-1] float32).

    ``strict``: fire where H > V_th (BrainCog's ``mem - threshold > 0``, node.py LIFNode) instead
    of spikingjelly's H >= V_th. The two differ only where H equals the threshold exactly.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, v0: torch.Tensor | None, tau: float, v_th: float,
                surrogate_name: str, alpha: float, detach_reset: bool, want_charge: bool,
                strict: bool = False):
        keep = 1.0 - 1.0 / tau
        # n holds -H: starts as -X/tau, then each step adds keep * (-V[t-1]).
        if x.dtype == torch.float32:
            n = torch.mul(x.detach(), -1.0 / tau)
        else:
            n = x.detach().to(torch.float32).mul_(-1.0 / tau)
        if v0 is not None:
            n[0].add_(v0.detach().to(torch.float32), alpha=-keep)
        for t in range(1, n.shape[0]):
            # -V[t-1] = -H[t-1] where H[t-1] < V_th, else 0 (hard reset): one fused op.
            n[t].add_(_negated_after_reset(n[t - 1], v_th, strict), alpha=keep)
        fired = torch.lt if strict else torch.le
        spikes = fired(n, -v_th, out=torch.empty_like(x, memory_format=torch.contiguous_format))
        v_last = _negated_after_reset(n[-1], v_th, strict).neg_()
        charge = n.neg() if want_charge else n.new_empty(0)
        ctx.save_for_backward(n)
        ctx.settings = (tau, v_th, surrogate_name, alpha, detach_reset, x.dtype,
                        v0 is not None, strict)
        ctx.set_materialize_grads(False)
        return spikes, charge, v_last

    @staticmethod
    def backward(ctx, grad_spikes, grad_charge, grad_v_last):
        (n,) = ctx.saved_tensors
        tau, v_th, surrogate_name, alpha, detach_reset, x_dtype, has_v0, strict = ctx.settings
        keep = 1.0 - 1.0 / tau
        # g'(H[t] - V_th) = scale * u[t]
        u, scale = _surrogate_factor(n, v_th, surrogate_name, alpha)
        # dV[t]/dH[t] = (1 - S[t]) - H[t] g'[t]  (the second term only without detach_reset)
        silent = torch.ge if strict else torch.gt
        reset_grad = silent(n, -v_th, out=torch.empty_like(n))
        if not detach_reset:
            reset_grad.addcmul_(n, u, value=scale)
        # Work with g[t] = dL/dH[t] / tau, which is dL/dX[t] (dH[t]/dX[t] = 1/tau), so the
        # division by tau folds into ops below. Direct terms first, vectorised over T:
        #   dL/dH[t] = dL/dS[t] g'[t] + dL/dH[t] (feature tap) + dL/dV[t] dV[t]/dH[t]
        if grad_spikes is None:
            grad_spikes = torch.zeros((), dtype=torch.float32, device=n.device)
        if grad_charge is not None and grad_charge.numel():
            g = torch.addcmul(grad_charge.to(torch.float32), grad_spikes, u, value=scale)
            g.div_(tau)
        else:  # a 0-dim zero as the addend: one pass instead of a multiply and a scale
            g = torch.addcmul(n.new_zeros(()), grad_spikes, u, value=scale / tau)
        if grad_v_last is not None:
            g[-1].addcmul_(reset_grad[-1], grad_v_last, value=1.0 / tau)
        # Then the membrane recurrence dL/dV[t] = keep dL/dH[t+1], backwards in time: it is
        # linear, so one in-place op per step.
        for t in range(g.shape[0] - 2, -1, -1):
            g[t].addcmul_(reset_grad[t], g[t + 1], value=keep)
        grad_v0 = g[0] * (keep * tau) if has_v0 and ctx.needs_input_grad[1] else None
        grad_x = g.to(x_dtype) if ctx.needs_input_grad[0] else None
        return grad_x, grad_v0, None, None, None, None, None, None, None


# -- spikes kept for backward as bytes ------------------------------------------------------
# A layer after a spiking one (convolution, pooling) saves its input, the spikes, for its
# backward pass, in the spikes' dtype: 4 bytes per 0/1 value in fp32. Inside spike_packing()
# every FusedLIFNode registers its output; autograd's saved-tensor hooks then keep any saved
# tensor on such a spike tensor's storage (the tensor or a view of it) as uint8 and turn it
# back into its dtype when backward needs it. The values are exactly 0 and 1, so gradients are
# bitwise the same; the spikes' share of the saved memory shrinks 4x (2x under bf16).

_SPIKE_STORAGES: dict[int, weakref.ref] = {}
_PACKING = [0]
_OBSERVER: list = [None]


def _register_spikes(spikes: torch.Tensor) -> None:
    if _PACKING[0] and spikes.requires_grad:
        _SPIKE_STORAGES[spikes.untyped_storage().data_ptr()] = weakref.ref(spikes)


def _pack(t: torch.Tensor):
    ref = _SPIKE_STORAGES.get(t.untyped_storage().data_ptr())
    # A live registered tensor owns that storage, so the address is not a reused one.
    packed = (t.to(torch.uint8), t.dtype) if ref is not None and ref() is not None \
        and t.is_floating_point() else t
    if _OBSERVER[0] is not None:
        _OBSERVER[0](packed[0] if isinstance(packed, tuple) else packed)
    return packed


def _unpack(packed):
    return packed[0].to(packed[1]) if isinstance(packed, tuple) else packed


@contextlib.contextmanager
def spike_packing():
    """Keep the spikes of the FusedLIFNodes run inside as 1-byte tensors for backward (see
    above). Not under torch.compile, which traces the plain forward."""
    if torch.compiler.is_compiling():
        yield
        return
    _PACKING[0] += 1
    try:
        with torch.autograd.graph.saved_tensors_hooks(_pack, _unpack):
            yield
    finally:
        _PACKING[0] -= 1
        if not _PACKING[0]:
            _SPIKE_STORAGES.clear()


@contextlib.contextmanager
def observe_saved(observer):
    """Call ``observer(tensor)`` for every tensor saved for backward inside spike_packing(),
    as it is kept (packed): what the memory estimate counts."""
    _OBSERVER[0] = observer
    try:
        yield
    finally:
        _OBSERVER[0] = None


class FusedLIFNode(neuron.LIFNode):
    """spikingjelly's ``LIFNode`` (decay_input, hard reset to 0) with a fused multi-step pass.

    A drop-in ``LIFNode``: same memory (``v``), same ``reset()`` (so ``functional.reset_net``
    resets it), same single-step path. In multi-step mode on the CPU it runs
    :class:`_FusedLIFSequence`; on other devices spikingjelly's fused kernels.

    ``record_charge``: keep the charged potential H (before firing and reset) of the last
    multi-step call in ``charge_seq`` ([T, ...], float32). The network sets it on the one layer
    whose potential is the feature map it aligns, so no other layer keeps a sequence.
    ``record_after_reset``: record instead the potential after firing and reset,
    V[t] = H[t] (1 - S[t]) with the spike detached: BrainCog's ``node.mem``, the feature KT's
    code aligns (vgg_snn.py Transfer_VGG_SNN.forward, ``self.feature[-2].node.mem``).
    ``fire``: ``ge`` fires at H >= V_th (spikingjelly), ``gt`` at H > V_th (BrainCog).
    ``implementation``: ``auto`` (tmkt's pass on CPU, spikingjelly's elsewhere), or force one;
    the ``gt`` rule and the ``rectangular`` surrogate always use tmkt's pass (plain torch ops,
    any device), as spikingjelly's kernels implement neither.
    ``store_v_seq`` works as in spikingjelly (the post-reset potentials in ``v_seq``).
    """

    def __init__(self, tau: float = 2.0, v_threshold: float = 0.5,
                 surrogate_name: SurrogateName = "atan", surrogate_alpha: float = 2.0,
                 detach_reset: bool = False, record_charge: bool = False,
                 implementation: Implementation = "auto", fire: FireRule = "ge",
                 record_after_reset: bool = False):
        super().__init__(tau=float(tau), decay_input=True, v_threshold=float(v_threshold),
                         v_reset=0.0,
                         surrogate_function=make_surrogate(surrogate_name, surrogate_alpha),
                         detach_reset=bool(detach_reset), step_mode="m")
        if implementation not in ("auto", "tmkt", "spikingjelly"):
            raise ValueError(f"unknown implementation {implementation!r}")
        if fire not in ("ge", "gt"):
            raise ValueError(f"unknown firing rule {fire!r}; expected ge or gt")
        self.fire = fire
        self.record_after_reset = record_after_reset
        self.surrogate_name = surrogate_name
        self.surrogate_alpha = float(surrogate_alpha)
        self.record_charge = record_charge
        self.implementation = implementation
        self.charge_seq: torch.Tensor | None = None

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", surrogate={self.surrogate_name}"
                f"(alpha={self.surrogate_alpha}), fire={self.fire}, "
                f"record_charge={self.record_charge}")

    def reset(self):
        super().reset()
        self.charge_seq = None

    def _initial_potential(self, x_seq: torch.Tensor) -> torch.Tensor | None:
        """The potential carried over from an earlier call (None: at rest)."""
        v = self.v
        if isinstance(v, torch.Tensor) and v.shape == x_seq.shape[1:]:
            return v
        return None

    def multi_step_forward(self, x_seq: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if args or kwargs:
            raise TypeError("FusedLIFNode takes one input sequence")
        v0 = self._initial_potential(x_seq)
        want_charge = self.record_charge or self.store_v_seq
        only_tmkt = self.fire == "gt" or self.surrogate_name not in _SURROGATES
        use_tmkt = self.implementation == "tmkt" or only_tmkt or (
            self.implementation == "auto" and x_seq.device.type == "cpu")
        if use_tmkt:
            spikes, charge, v_last = _FusedLIFSequence.apply(
                x_seq, v0, self.tau, self.v_threshold, self.surrogate_name,
                self.surrogate_alpha, self.detach_reset, want_charge, self.fire == "gt")
        else:
            spikes, charge, v_last = self._spikingjelly_forward(x_seq, v0, want_charge)
        _register_spikes(spikes)
        self.v = v_last
        self.charge_seq = None
        if self.record_charge:
            self.charge_seq = (charge * (1.0 - spikes.detach().to(charge.dtype))
                               if self.record_after_reset else charge)
        if self.store_v_seq:  # spikingjelly's post-reset sequence, for code that asks for it
            fired = spikes.detach() if self.detach_reset else spikes
            self.v_seq = charge * (1.0 - fired.to(charge.dtype))
        return spikes

    def _spikingjelly_forward(self, x_seq: torch.Tensor, v0: torch.Tensor | None,
                              want_charge: bool):
        """spikingjelly's fused kernels; H is rebuilt from the stored post-reset potentials
        as H[t] = V[t-1] + (X[t] - V[t-1]) / tau, which keeps its gradient."""
        v_init = (v0.to(torch.float32) if v0 is not None
                  else torch.zeros(x_seq.shape[1:], dtype=torch.float32, device=x_seq.device))
        spikes, v_last, v_seq = functional.lif_multi_step(
            x_seq, v_init, self.tau, True, self.v_threshold, 0.0, self.surrogate_function,
            self.detach_reset, want_charge)
        charge = None
        if want_charge:
            v_prev = torch.cat([v_init.unsqueeze(0), v_seq[:-1].to(torch.float32)])
            charge = v_prev + (x_seq.to(torch.float32) - v_prev) / self.tau
        return spikes, charge, v_last

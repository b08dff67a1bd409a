"""Losses against their definitions, computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from tmkt_cli.methods.losses import (
    domain_alignment_loss,
    kd_loss,
    linear_cka,
    mag_loss,
    mean_logits_ce,
    mrp_loss,
    tet_loss,
)


def _features(b=16, d=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, generator=g)


def test_cka_of_identical_features_is_one():
    x = _features()
    assert float(linear_cka(x, x)) == pytest.approx(1.0, abs=1e-6)


def test_cka_is_invariant_to_isotropic_scaling_and_orthogonal_transforms():
    x, y = _features(seed=0), _features(seed=1)
    base = float(linear_cka(x, y))
    q, _ = torch.linalg.qr(torch.randn(40, 40, generator=torch.Generator().manual_seed(2)))
    assert float(linear_cka(x * 37.0, y * 1e-3)) == pytest.approx(base, abs=1e-6)
    assert float(linear_cka(x @ q, y)) == pytest.approx(base, abs=1e-6)
    assert float(linear_cka(x, y @ q.T)) == pytest.approx(base, abs=1e-6)
    assert float(linear_cka(x + 5.0, y - 2.0)) == pytest.approx(base, abs=1e-5)  # centring


def test_cka_matches_the_feature_space_formula():
    x, y = _features(seed=3).double(), _features(b=16, d=25, seed=4).double()
    xc, yc = x - x.mean(0), y - y.mean(0)
    expected = (yc.T @ xc).norm() ** 2 / ((xc.T @ xc).norm() * (yc.T @ yc).norm())
    assert float(linear_cka(x, y)) == pytest.approx(float(expected), abs=1e-6)


def test_cka_is_between_zero_and_one_and_batched_over_time():
    g = torch.Generator().manual_seed(5)
    xs, ys = torch.randn(6, 8, 30, generator=g), torch.randn(6, 8, 30, generator=g)
    ys[2] = xs[2] * 3  # one step fully aligned
    batched = linear_cka(xs, ys)
    assert batched.shape == (6,)
    for t in range(6):
        assert float(batched[t]) == pytest.approx(float(linear_cka(xs[t], ys[t])), abs=1e-6)
    assert torch.all(batched >= 0) and torch.all(batched <= 1 + 1e-6)
    assert float(batched[2]) == pytest.approx(1.0, abs=1e-6)


def test_cka_is_safe_on_constant_features_and_huge_values():
    x = _features()
    constant = torch.ones_like(x)
    assert float(linear_cka(x, constant)) == 0.0
    big = x * 1e30  # squares overflow float32 without the normalisation
    assert float(linear_cka(big, x)) == pytest.approx(1.0, abs=1e-5)
    x.requires_grad_(True)
    linear_cka(x, constant).backward()
    assert torch.isfinite(x.grad).all()


def test_cka_under_bf16_autocast_is_computed_in_float32():
    x, y = _features(seed=6), _features(seed=7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = linear_cka(x, y)
    assert value.dtype == torch.float32
    assert float(value) == pytest.approx(float(linear_cka(x, y)), abs=1e-6)


def test_domain_alignment_loss_with_and_without_step_weights():
    g = torch.Generator().manual_seed(8)
    fs, fe = torch.randn(4, 8, 20, generator=g), torch.randn(4, 8, 20, generator=g)
    cka = torch.stack([linear_cka(fs[t], fe[t]) for t in range(4)])
    plain = domain_alignment_loss(fs, fe)
    assert float(plain) == pytest.approx(float((1 - cka).mean()), abs=1e-6)
    eta = torch.tensor([1.0, -2.0, 0.0, 3.0], requires_grad=True)
    weighted = domain_alignment_loss(fs, fe, eta)
    expected = (torch.sigmoid(eta) * (1 - cka)).mean()
    assert float(weighted.detach()) == pytest.approx(float(expected.detach()), abs=1e-6)
    weighted.backward()
    assert eta.grad is not None and torch.all(eta.grad > 0)  # lowering eta lowers L_DA
    assert float(domain_alignment_loss(fs, fs.clone())) == pytest.approx(0.0, abs=1e-6)


def test_tet_loss_against_a_hand_computation():
    g = torch.Generator().manual_seed(9)
    T, B, K = 3, 4, 5
    logits = torch.randn(T, B, K, generator=g)
    y = torch.tensor([0, 4, 2, 2])
    lam, theta = 0.2, 0.5
    weights = torch.tensor([0.3, 0.6, 0.9])
    total, total_w = 0.0, 0.0
    for t in range(T):
        ce = 0.0
        for b in range(B):
            row = logits[t, b].tolist()
            lse = math.log(sum(math.exp(v) for v in row))
            ce += (lse - row[int(y[b])]) / B
        mse = sum((v - theta) ** 2 for v in logits[t].flatten().tolist()) / (B * K)
        term = (1 - lam) * ce + lam * mse
        total += term / T
        total_w += float(weights[t]) * term / T
    assert float(tet_loss(logits, y, lam, theta)) == pytest.approx(total, abs=1e-5)
    assert float(tet_loss(logits, y, lam, theta, weights)) == pytest.approx(total_w, abs=1e-5)


def test_tet_step_weights_carry_gradients_to_eta():
    logits = torch.randn(4, 3, 6, generator=torch.Generator().manual_seed(10))
    eta = torch.ones(4, requires_grad=True)
    tet_loss(logits, torch.tensor([1, 2, 3]), step_weights=1 - torch.sigmoid(eta)).backward()
    assert eta.grad is not None and torch.all(eta.grad < 0)  # raising eta lowers L_e


def test_mean_logits_ce():
    logits = torch.randn(5, 3, 4, generator=torch.Generator().manual_seed(11))
    y = torch.tensor([0, 1, 3])
    expected = torch.nn.functional.cross_entropy(logits.mean(0), y)
    assert float(mean_logits_ce(logits, y)) == pytest.approx(float(expected), abs=1e-6)


def test_mag_loss_is_binary_cross_entropy_per_frame():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.0], [-3.0, 4.0]])
    mask = torch.tensor([[False, False], [True, False], [True, True]])
    expected = 0.0
    for z, m in zip(logits.flatten().tolist(), mask.flatten().tolist(), strict=True):
        prob = 1 / (1 + math.exp(-z))
        expected -= (math.log(prob) if m else math.log(1 - prob)) / 6
    assert float(mag_loss(logits, mask)) == pytest.approx(expected, abs=1e-6)


def test_mrp_loss_is_mean_squared_error():
    pred, ratio = torch.tensor([0.2, 0.9, 0.5]), torch.tensor([0.0, 1.0, 0.5])
    assert float(mrp_loss(pred, ratio)) == pytest.approx((0.04 + 0.01 + 0.0) / 3, abs=1e-7)


def test_kd_loss_against_a_hand_computation():
    student = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    teacher = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    tau = 4.0

    def softmax(row):
        e = [math.exp(v / tau) for v in row]
        return [v / sum(e) for v in e]

    expected = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist(), strict=True):
        ps, pt = softmax(s_row), softmax(t_row)
        expected += sum(a * math.log(a / b) for a, b in zip(pt, ps, strict=True)) / 2
    expected *= tau ** 2
    assert float(kd_loss(student, teacher, tau)) == pytest.approx(expected, abs=1e-6)
    assert float(kd_loss(teacher, teacher, tau)) == pytest.approx(0.0, abs=1e-7)


def test_losses_return_float32_under_bf16_autocast():
    logits = torch.randn(3, 4, 5).bfloat16()
    y = torch.tensor([0, 1, 2, 3])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for value in (tet_loss(logits, y), mean_logits_ce(logits, y),
                      kd_loss(logits[0], logits[1], 2.0),
                      mag_loss(logits[..., 0], torch.zeros(3, 4, dtype=torch.bool))):
            assert value.dtype == torch.float32 and torch.isfinite(value)


def test_cka_gradient_matches_autograd_of_the_definition():
    def reference(x, y):  # the textbook formula, differentiated by autograd
        xc, yc = x - x.mean(-2, keepdim=True), y - y.mean(-2, keepdim=True)
        kx, ky = xc @ xc.transpose(-1, -2), yc @ yc.transpose(-1, -2)
        return (kx * ky).sum((-2, -1)) / (kx.norm(dim=(-2, -1)) * ky.norm(dim=(-2, -1)))

    g = torch.Generator().manual_seed(12)
    x = (torch.randn(3, 6, 10, generator=g, dtype=torch.float64) * 4 + 2).requires_grad_()
    y = torch.randn(3, 6, 7, generator=g, dtype=torch.float64).requires_grad_()
    w = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    (reference(x, y) * w).sum().backward()
    gx, gy = x.grad.clone(), y.grad.clone()
    x.grad = y.grad = None
    (linear_cka(x, y) * w).sum().backward()
    assert x.grad.dtype == torch.float64
    torch.testing.assert_close(x.grad, gx, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(y.grad, gy, rtol=1e-4, atol=1e-6)

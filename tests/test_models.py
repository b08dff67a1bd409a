"""The fused LIF neuron against spikingjelly, the backbones, the two-stream network, the ANN
teachers and loading a user's initial weights."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from spikingjelly.activation_based import functional, neuron

from tmkt_cli.config import ModelConfig
from tmkt_cli.errors import TmktError
from tmkt_cli.methods.losses import domain_alignment_loss, tet_loss
from tmkt_cli.models import BACKBONES, FusedLIFNode, build_ann, build_snn, load_init_weights
from tmkt_cli.models.neurons import make_surrogate, surrogate_derivative
from tmkt_cli.models.snn import build_trunk, relu_factory

# --------------------------------------------------------------------------------------------
# The neuron
# --------------------------------------------------------------------------------------------


def _reference(surrogate: str, detach_reset: bool) -> neuron.LIFNode:
    return neuron.LIFNode(tau=2.0, decay_input=True, v_threshold=0.5, v_reset=0.0,
                          surrogate_function=make_surrogate(surrogate, 2.0),
                          detach_reset=detach_reset, step_mode="m", store_v_seq=True)


def _drive(seed: int = 0, shape=(7, 3, 4, 5, 5)) -> torch.Tensor:
    """Inputs around the threshold, so that neurons fire and reset often."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * 0.8 + 0.3


@pytest.mark.parametrize("implementation", ["tmkt", "spikingjelly"])
@pytest.mark.parametrize("detach_reset", [False, True])
@pytest.mark.parametrize("surrogate", ["atan", "sigmoid", "piecewise_quadratic"])
def test_fused_neuron_equals_spikingjelly_lif(surrogate, detach_reset, implementation):
    x = _drive()
    x_ref, x_new = x.clone().requires_grad_(), x.clone().requires_grad_()
    ref = _reference(surrogate, detach_reset)
    new = FusedLIFNode(2.0, 0.5, surrogate, 2.0, detach_reset, record_charge=True,
                       implementation=implementation)
    s_ref, s_new = ref(x_ref), new(x_new)
    assert torch.equal(s_ref, s_new)
    assert 0.05 < float(s_new.detach().mean()) < 0.95  # the test exercises firing and resetting
    # Charged potential H[t] = V[t-1] + (X[t] - V[t-1]) / tau from the reference's V sequence.
    v_prev = torch.cat([torch.zeros_like(ref.v_seq[:1]), ref.v_seq[:-1]])
    h_ref = v_prev + (x_ref - v_prev) / 2.0
    torch.testing.assert_close(new.charge_seq, h_ref.detach(), rtol=0, atol=1e-6)
    torch.testing.assert_close(new.v, ref.v.detach(), rtol=0, atol=1e-6)
    # Gradients through spikes, the charged potential and the final potential together.
    g = torch.Generator().manual_seed(1)
    w_s, w_h = torch.randn(x.shape, generator=g), torch.randn(x.shape, generator=g)
    ((s_ref * w_s).sum() + (h_ref * w_h).sum() + 0.7 * ref.v.sum()).backward()
    ((s_new * w_s).sum() + (new.charge_seq * w_h).sum() + 0.7 * new.v.sum()).backward()
    torch.testing.assert_close(x_new.grad, x_ref.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("surrogate", ["atan", "sigmoid", "piecewise_quadratic"])
def test_surrogate_derivatives_match_spikingjelly(surrogate):
    x = torch.linspace(-2, 2, 101, requires_grad=True)
    make_surrogate(surrogate, 2.0)(x).sum().backward()
    torch.testing.assert_close(surrogate_derivative(x.detach(), surrogate, 2.0), x.grad,
                               rtol=1e-5, atol=1e-7)


def test_state_carries_over_between_calls_like_spikingjelly():
    x = _drive(2, (8, 2, 3, 4, 4))
    x_ref, x_new = x.clone().requires_grad_(), x.clone().requires_grad_()
    ref, new = _reference("atan", False), FusedLIFNode()
    s_ref = torch.cat([ref(x_ref[:3]), ref(x_ref[3:])])  # no reset between the two halves
    s_new = torch.cat([new(x_new[:3]), new(x_new[3:])])
    assert torch.equal(s_ref, s_new)
    w = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    (s_ref * w).sum().backward()
    (s_new * w).sum().backward()
    torch.testing.assert_close(x_new.grad, x_ref.grad, rtol=1e-5, atol=1e-6)


def test_store_v_seq_works_as_in_spikingjelly():
    x = _drive(7)
    ref, new = _reference("sigmoid", False), FusedLIFNode(surrogate_name="sigmoid")
    new.store_v_seq = True
    ref(x), new(x)
    torch.testing.assert_close(new.v_seq, ref.v_seq, rtol=0, atol=1e-6)
    functional.reset_net(new)
    assert new.v_seq is None


def test_single_step_mode_equals_multi_step():
    x = _drive(4, (5, 2, 6))
    multi = FusedLIFNode()(x)
    single = FusedLIFNode()
    single.step_mode = "s"
    assert torch.equal(torch.stack([single(x_t) for x_t in x]), multi)


def test_reset_net_clears_the_neuron_state():
    node = FusedLIFNode(record_charge=True)
    x = _drive(5, (4, 2, 8))
    first = node(x)
    assert isinstance(node.v, torch.Tensor) and node.charge_seq is not None
    carried = node(x)  # the state of the first call changes the second
    assert not torch.equal(first, carried)
    functional.reset_net(node)
    assert node.v == 0.0 and node.charge_seq is None
    assert torch.equal(node(x), first)


def test_fused_neuron_under_bf16_autocast():
    x = _drive(6).bfloat16().requires_grad_()
    node = FusedLIFNode(record_charge=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        spikes = node(x)
    assert spikes.dtype == torch.bfloat16 and node.charge_seq.dtype == torch.float32
    ref = FusedLIFNode()(x.detach().float())  # the same values computed in float32
    assert torch.equal(spikes.float(), ref)
    spikes.float().sum().backward()
    assert x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad.float()).all()


# --------------------------------------------------------------------------------------------
# Backbones and the two-stream network
# --------------------------------------------------------------------------------------------

SETTINGS = {  # backbone: (size, classes, time steps, features per step)
    "vggsnn": (48, 101, 2, 512 * 6 * 6),
    "resnet18": (48, 20, 2, 512 * 6 * 6),
    "resnet18_kt": (48, 20, 2, 512),  # KT aligns the pooled output
    "scnn": (28, 30, 3, 300),
    "scnn_kt": (28, 30, 3, 300),
    "digitsnet": (32, 10, 4, 64 * 8 * 8),
}


def test_every_registered_backbone_is_tested():
    assert set(BACKBONES) == set(SETTINGS)


def test_vggsnn_has_the_published_parameter_count():
    model = build_snn(ModelConfig(backbone="vggsnn"), 101, 48, 10)
    counts = model.parameter_counts()
    assert counts["trunk"] + counts["heads"] == 10_153_674  # "10.15 M" with two heads
    assert counts["auxiliary"] < 2_000  # MAG, MRP heads and eta stay light
    assert model.feature_shape == (512, 6, 6)


@pytest.mark.parametrize("backbone", sorted(SETTINGS))
def test_forward_shapes(backbone):
    size, classes, T, features = SETTINGS[backbone]
    torch.manual_seed(0)
    model = build_snn(ModelConfig(backbone=backbone), classes, size, T)
    x = torch.rand(T, 2, 2, size, size)
    for head in ("static", "event"):
        out = model(x, head=head)
        functional.reset_net(model)
        assert out.logits.shape == (T, 2, classes)
        assert out.features.shape == (T, 2, features)
        assert out.features.dtype == torch.float32
    assert model.mag_head(out.features).shape == (T, 2)
    ratio = model.mrp_head(out.features)
    assert ratio.shape == (2,) and torch.all((ratio >= 0) & (ratio <= 1))
    assert model.predict(x).shape == (2, classes)
    names = [name for name, _ in model.spiking_layers()]
    assert model.feature_layer in names or backbone == "resnet18_kt"  # a FeatureTap there


def _digits_model(**model_keys) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_snn(dataclasses.replace(ModelConfig(backbone="digitsnet"), **model_keys),
                     10, 32, 4)


def test_features_are_the_charged_potential_of_the_tap_before_reset():
    model = _digits_model()
    captured = {}
    tap = model.trunk.tap
    tap.register_forward_hook(lambda m, inputs, out: captured.update(x=inputs[0].detach()))
    x = torch.rand(4, 3, 2, 32, 32) * 2
    features = model(x).features
    ref = _reference("atan", False)
    ref(captured["x"])
    v_prev = torch.cat([torch.zeros_like(ref.v_seq[:1]), ref.v_seq[:-1]])
    charge = v_prev + (captured["x"] - v_prev) / 2.0
    torch.testing.assert_close(features, charge.flatten(2), rtol=0, atol=1e-5)
    assert float((charge >= 0.5).float().mean()) > 0  # some neurons fired: H differs from V
    assert tap.charge_seq is None  # handed over, not kept between calls


def test_heads_differ_and_share_the_trunk():
    model = _digits_model()
    x = torch.rand(4, 2, 2, 32, 32)
    static = model(x, "static")
    functional.reset_net(model)
    event = model(x, "event")
    functional.reset_net(model)
    assert torch.equal(static.features, event.features)
    assert not torch.allclose(static.logits, event.logits)
    with pytest.raises(ValueError):
        model(x, "rgb")
    with pytest.raises(ValueError):
        model(x[0], "event")


def test_reset_net_leaves_no_state_between_batches():
    # Training mode: BN uses the batch's statistics, so the same batch gives the same output
    # (at initialisation the running statistics would silence every layer in eval mode).
    model = _digits_model()
    x = torch.rand(4, 2, 2, 32, 32) * 2
    first = model(x).logits
    second = model(x).logits  # without a reset the neurons start charged
    assert not torch.allclose(first, second)
    functional.reset_net(model)
    assert torch.equal(model(x).logits, first)
    functional.reset_net(model)
    assert torch.equal(model.predict(x), first.mean(0))
    assert torch.equal(model.predict(x), first.mean(0))  # predict resets after itself


def test_gradients_reach_eta_and_every_part():
    model = _digits_model(surrogate="sigmoid")
    x = torch.rand(4, 6, 2, 32, 32) * 2
    y = torch.randint(0, 10, (6,))
    out_s = model(x, "static")
    functional.reset_net(model)
    out_e = model(torch.rand_like(x), "event")
    functional.reset_net(model)
    loss = (tet_loss(out_s.logits, y)
            + tet_loss(out_e.logits, y, step_weights=1 - torch.sigmoid(model.eta))
            + domain_alignment_loss(out_s.features, out_e.features, model.eta)
            + model.mag_head(out_s.features).mean() + model.mrp_head(out_s.features).mean())
    loss.backward()
    assert model.eta.grad is not None and torch.all(model.eta.grad != 0)
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.trunk.layers.conv1[0].weight.grad.abs().sum() > 0


def test_training_step_under_bf16_autocast():
    model = _digits_model()
    x = torch.rand(4, 2, 2, 32, 32) * 2
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, "event")
        loss = tet_loss(out.logits, torch.tensor([1, 2]))
    functional.reset_net(model)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_unknown_backbone_is_a_user_error():
    with pytest.raises(TmktError, match="vggsnn"):
        build_snn(ModelConfig(backbone="alexnet"), 10, 32, 4)
    with pytest.raises(TmktError, match="at least"):
        build_trunk("vggsnn", relu_factory, 8)


def test_model_state_dict_holds_heads_and_eta():
    keys = set(_digits_model().state_dict())
    assert {"eta", "heads.static.weight", "heads.event.weight", "mag_head.linear.weight",
            "mrp_head.linear.weight"} <= keys


# --------------------------------------------------------------------------------------------
# ANN teachers and initial weights
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, size", [("vgg", 48), ("resnet18", 32), ("resnet18", 112)])
def test_ann_teachers(name, size):
    torch.manual_seed(0)
    model = build_ann(name, 7, size)
    assert model(torch.rand(2, 2, size, size)).shape == (2, 7)
    with pytest.raises(TmktError):
        build_ann("vit", 7, size)


def test_vgg_teacher_has_the_students_layout():
    teacher = build_ann("vgg", 101, 48)
    student = build_snn(ModelConfig(backbone="vggsnn"), 101, 48, 10)
    shapes = [p.shape for p in teacher.trunk.parameters()]
    assert shapes == [p.shape for p in student.trunk.parameters()]


def test_init_weights_partial_match(tmp_path):
    source = build_ann("resnet18", 10, 32)  # another number of classes: fc does not fit
    path = tmp_path / "weights.pt"
    wrapped = {"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()},
               "epoch": 3}
    torch.save(wrapped, path)
    target = build_ann("resnet18", 5, 32)
    report = load_init_weights(target, path)
    assert "layer4.1.conv2.weight" in report.loaded and "conv1.weight" in report.loaded
    assert any(s.startswith("module.fc.weight") for s in report.skipped)
    assert "fc.weight" in report.missing
    torch.testing.assert_close(target.layer2[0].conv1.weight, source.layer2[0].conv1.weight)
    assert "loaded" in report.summary()


def test_init_weights_errors(tmp_path):
    model = build_ann("resnet18", 5, 32)
    unrelated = tmp_path / "unrelated.pt"
    torch.save({"encoder.weight": torch.zeros(3, 3)}, unrelated)
    with pytest.raises(TmktError, match="none of its 1 tensors"):
        load_init_weights(model, unrelated)
    text = tmp_path / "notes.txt"
    text.write_text("these are not weights\n")
    with pytest.raises(TmktError, match="not a PyTorch checkpoint") as err:
        load_init_weights(model, text)
    assert "\n" not in str(err.value)
    with pytest.raises(TmktError, match="not found"):
        load_init_weights(model, tmp_path / "missing.pt")
    empty = tmp_path / "empty.pt"
    torch.save({"epoch": 3}, empty)
    with pytest.raises(TmktError, match="no named tensors"):
        load_init_weights(model, empty)


def test_digitsnet_learns_a_toy_task():
    """Events on the left half (class 0) or the right half (class 1): a few steps of AdamW
    must separate them, through TET on the event head."""
    torch.manual_seed(0)
    model = build_snn(ModelConfig(backbone="digitsnet"), 2, 32, 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)

    def batch(n=32):
        y = torch.randint(0, 2, (n,), generator=g)
        x = (torch.rand(4, n, 2, 32, 32, generator=g) < 0.2).float()
        left = torch.zeros(n, 32, 32)
        left[:, :, :16] = 1
        region = torch.where(y[:, None, None] == 0, left, 1 - left)
        return x * region[None, :, None], y

    for _ in range(25):
        x, y = batch()
        out = model(x, "event")
        functional.reset_net(model)
        optimizer.zero_grad()
        tet_loss(out.logits, y).backward()
        optimizer.step()
    model.eval()
    x, y = batch(64)
    assert (model.predict(x).argmax(-1) == y).float().mean() > 0.9

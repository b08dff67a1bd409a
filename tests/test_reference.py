"""tmkt under the published recipes' settings computes what the KT reference code computes.

Each test re-derives one quantity of the reference (GitHub Brain-Cog-Lab/Transfer-for-DVS, read
at its newest commit; its event reader is the BrainCog fork of tonic, FloyedShen/tonic) from
that code's source, cited by file and line, and compares it with tmkt's computation on small
seeded tensors. The re-derivations are written here from the equations the source computes,
not copied from it. docs/methods.md lists every difference and the recipe switch for it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from spikingjelly.activation_based import functional
from torch import nn

from tmkt_cli.config import DataConfig, ModelConfig, load_recipe
from tmkt_cli.errors import TmktError
from tmkt_cli.models import build_snn
from tmkt_cli.models.neurons import FusedLIFNode
from tmkt_cli.models.snn import SeqNorm

# --------------------------------------------------------------------------------------------
# The neuron: braincog/base/node/node.py LIFNode (lines 488-503) with the surrogates of
# braincog/base/strategy/surrogate.py (quadratic_gate, lines 207-221; backeigate, 335-346)
# --------------------------------------------------------------------------------------------


class _ReferenceSpike(torch.autograd.Function):
    """Forward: x > 0 (surrogate.py 214 ``x.gt(0.)``, 339). Backward, by ``kind``:
    ``qgate``: alpha - alpha^2 |x| on |x| <= 1/alpha, 0 outside (surrogate.py 210-212);
    ``backei``: 1 on |x| < 0.5, 0 outside (surrogate.py 345-346, alpha unused)."""

    @staticmethod
    def forward(ctx, x, kind, alpha):
        ctx.save_for_backward(x)
        ctx.kind, ctx.alpha = kind, alpha
        return (x > 0).float()

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        if ctx.kind == "qgate":
            g = ctx.alpha - ctx.alpha ** 2 * x.abs()
            g = torch.where(x.abs() > 1 / ctx.alpha, torch.zeros_like(g), g)
        else:
            g = (x.abs() < 0.5).float()
        return grad * g, None, None


def reference_lif(x_seq: torch.Tensor, kind: str, tau: float = 2.0, threshold: float = 0.5,
                  alpha: float = 2.0):
    """BrainCog's LIFNode stepped over x [T, ...]: ``mem += (x - mem) / tau`` (node.py 498-499),
    ``spike = act(mem - threshold)``, ``mem = mem * (1 - spike.detach())`` (node.py 501-503),
    mem starting at v_reset = 0 (node.py 182). Returns the spikes and ``node.mem`` after each
    step (the post-reset potential KT aligns)."""
    mem = torch.zeros_like(x_seq[0])
    spikes, mems = [], []
    for x in x_seq:
        mem = mem + (x - mem) / tau
        spike = _ReferenceSpike.apply(mem - threshold, kind, alpha)
        mem = mem * (1 - spike.detach())
        spikes.append(spike)
        mems.append(mem)
    return torch.stack(spikes), torch.stack(mems)


def _published_model(recipe_path: str) -> ModelConfig:
    return load_recipe(recipe_path).model


def _drive(T=8, seed=0, shape=(3, 5)):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((T, *shape), generator=g) * 1.6 - 0.2


@pytest.mark.parametrize("recipe, kind", [("recipes/ncaltech101/kt.yaml", "qgate"),
                                          ("recipes/cepdvs/kt.yaml", "qgate"),
                                          ("recipes/nomniglot/kt.yaml", "backei")])
def test_neuron_spikes_surrogate_gradients_and_membrane_match(recipe, kind):
    cfg = _published_model(recipe)
    x = _drive().requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    node = FusedLIFNode(tau=cfg.tau, v_threshold=cfg.threshold, surrogate_name=cfg.surrogate,
                        surrogate_alpha=cfg.surrogate_alpha, detach_reset=cfg.detach_reset,
                        record_charge=True, fire=cfg.fire,
                        record_after_reset=cfg.feature == "membrane")
    spikes = node(x)
    ref_spikes, ref_mem = reference_lif(x_ref, kind, tau=2.0, threshold=0.5, alpha=2.0)
    assert torch.equal(spikes, ref_spikes)
    torch.testing.assert_close(node.charge_seq, ref_mem, rtol=0, atol=1e-6)
    assert float(spikes.detach().mean()) > 0.1  # the drive makes neurons fire and reset
    w_s, w_m = torch.randn_like(spikes), torch.randn_like(spikes)
    ((spikes * w_s).sum() + (node.charge_seq * w_m).sum()).backward()
    ((ref_spikes * w_s).sum() + (ref_mem * w_m).sum()).backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-6)


def test_firing_rule_gt_differs_from_ge_only_at_the_threshold():
    # H = 0.5 exactly at t=0 (x = 1, tau 2): BrainCog does not fire (mem - th > 0 is false)
    x = torch.tensor([[1.0], [1.0]])
    gt = FusedLIFNode(fire="gt")(x)
    ge = FusedLIFNode(fire="ge")(x)
    ref, _ = reference_lif(x, "qgate")
    assert torch.equal(gt, ref)
    assert gt[0, 0] == 0 and ge[0, 0] == 1


# --------------------------------------------------------------------------------------------
# Per-step BatchNorm: vgg_snn.py Transfer_VGG_SNN.forward (lines 257-275) and resnet.py
# Transfer_ResNet.forward (688-738) call the whole feature stack once per time step, so each
# nn.BatchNorm2d normalises over the B samples of one step and updates its running statistics
# once per step: T times per stream (torch BatchNorm: momentum 0.1, unbiased running var).
# --------------------------------------------------------------------------------------------


def reference_bn_steps(x: torch.Tensor, weight, bias, eps=1e-5, momentum=0.1):
    """x [T, B, C, H, W] normalised step by step; returns outputs and running mean/var."""
    mean_run = torch.zeros(x.shape[2])
    var_run = torch.ones(x.shape[2])
    outs = []
    for xt in x:
        mean = xt.mean(dim=(0, 2, 3))
        var = xt.var(dim=(0, 2, 3), unbiased=False)
        n = xt.numel() / xt.shape[1]
        y = (xt - mean[:, None, None]) / torch.sqrt(var[:, None, None] + eps)
        outs.append(y * weight[:, None, None] + bias[:, None, None])
        mean_run = (1 - momentum) * mean_run + momentum * mean
        var_run = (1 - momentum) * var_run + momentum * var * n / (n - 1)
    return torch.stack(outs), mean_run, var_run


def test_per_step_batchnorm_outputs_and_running_statistics():
    torch.manual_seed(0)
    T, B, C = 4, 5, 3
    x = torch.randn(T, B, C, 6, 6) * torch.arange(1, T + 1).view(T, 1, 1, 1, 1)  # steps differ
    norm = SeqNorm(nn.BatchNorm2d(C), per_step_norm=True)
    nn.init.uniform_(norm[0].weight)
    nn.init.uniform_(norm[0].bias)
    y = norm(x)
    ref_y, ref_mean, ref_var = reference_bn_steps(x, norm[0].weight.detach(),
                                                  norm[0].bias.detach())
    torch.testing.assert_close(y.detach(), ref_y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(norm[0].running_mean, ref_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(norm[0].running_var, ref_var, rtol=1e-5, atol=1e-6)
    assert int(norm[0].num_batches_tracked) == T
    pooled = SeqNorm(nn.BatchNorm2d(C), per_step_norm=False)
    pooled.load_state_dict({k: v for k, v in norm.state_dict().items()
                            if k != "0.num_batches_tracked"}, strict=False)
    assert not torch.allclose(pooled(x), y)  # the switch changes the computation


def test_drop_last_keeps_a_split_smaller_than_one_batch():
    # torch would yield no batch at all; tmkt trains on the one partial batch, so a scarce
    # split (digits at 1%: 40 recordings, batch 64) trains exactly as with drop_last false
    from tmkt_cli.data.sampling import KeyedBatchSampler, batches_per_epoch

    indices = np.arange(10)
    kept = list(KeyedBatchSampler(indices, 16, seed=1, epoch=0, drop_last=True))
    assert kept == list(KeyedBatchSampler(indices, 16, seed=1, epoch=0, drop_last=False))
    assert [len(b) for b in kept] == [10]
    assert batches_per_epoch(1, 16, drop_last=True) == 0  # BatchNorm cannot take one sample
    assert batches_per_epoch(17, 16, drop_last=True) == 1  # a full batch: the tail goes


def test_tmkt_drops_the_last_partial_batch_by_default():
    # KT's value; a last batch of 3 recordings cost event_only 3.7 points on digits at 10%
    # (docs/methods.md, "The last partial batch")
    from tmkt_cli.config import TrainConfig

    assert TrainConfig().drop_last is True
    for recipe in ["recipes/digits/kt.yaml", "recipes/glyphs/tmkt.yaml",
                   "recipes/control/event_only.yaml"]:
        cfg = load_recipe(recipe)
        assert cfg.train.drop_last is True and cfg.pretrain_ann.train.drop_last is True


@pytest.mark.parametrize("recipe", ["recipes/ncaltech101/kt.yaml", "recipes/cepdvs/kt.yaml",
                                    "recipes/cifar10dvs/kt.yaml"])
def test_published_recipes_normalise_per_step(recipe):
    assert _published_model(recipe).norm == "per_step"


def test_vggsnn_per_step_equals_the_network_called_once_per_step():
    """With per-step BN and no neuron state carried, [T, B] through tmkt's trunk equals the
    trunk applied to each [1, B] step alone: the per-step call of the reference."""
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="digitsnet", norm="per_step")
    model = build_snn(cfg, 10, 32, 3).train()
    x = torch.rand(3, 4, 2, 32, 32)
    whole = model.trunk(x)
    functional.reset_net(model)
    # step by step, neuron state carried by the nodes between calls
    model2 = build_snn(cfg, 10, 32, 3).train()
    model2.load_state_dict(model.state_dict())
    for m in model2.modules():  # running stats back to the start
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
    steps = torch.cat([model2.trunk(x[t:t + 1]) for t in range(3)])
    torch.testing.assert_close(whole, steps, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------
# Network layouts: resnet.py Transfer_ResNet (449-740) with BasicBlock (50-113), and scnn.py
# Transfer_SCNN (78-154)
# --------------------------------------------------------------------------------------------


def reference_resnet18_parameters(in_channels: int, classes: int) -> int:
    """Trainable weights of Transfer_ResNet18 without its per-step ``coefficient``: 3x3 stem
    (resnet.py 522-526), BasicBlocks bn1-conv1-bn2-conv2 (86-92), downsample BN-LIF-conv1x1
    where the shape changes (628-632), final BN (581), two heads (590-595)."""
    total = in_channels * 64 * 9
    c_in = 64
    for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for block in range(2):
            s = stride if block == 0 else 1
            total += 2 * c_in + c_in * c_out * 9 + 2 * c_out + c_out * c_out * 9
            if s != 1 or c_in != c_out:
                total += 2 * c_in + c_in * c_out
            c_in = c_out
    return total + 2 * 512 + 2 * (512 * classes + classes)


def test_resnet18_kt_layout_matches_transfer_resnet18():
    cfg = _published_model("recipes/cepdvs/kt.yaml")
    assert cfg.backbone == "resnet18_kt"
    model = build_snn(cfg, 20, 48, 6)
    counts = model.parameter_counts()
    assert counts["trunk"] + counts["heads"] == reference_resnet18_parameters(2, 20)
    x = torch.rand(6, 2, 2, 48, 48)
    out = model(x, "static")
    # the aligned feature is the pooled 512-d output of the final BN (resnet.py 698-704),
    # which is also what the heads read (706)
    assert out.features.shape == (6, 2, 512)
    torch.testing.assert_close(model.heads["static"](out.features), out.logits)
    assert not torch.equal(out.features, out.features.round())  # real-valued: no final LIF


def test_scnn_kt_layout_matches_transfer_scnn():
    cfg = _published_model("recipes/nomniglot/kt.yaml")
    assert cfg.backbone == "scnn_kt" and cfg.heads == "shared"
    model = build_snn(cfg, 1623, 28, 12)
    # conv 2-15 5x5 and 15-40 5x5 without bias (scnn.py 100-104), fc1 640-300 with bias (108),
    # one head 300-1623 (110), no BatchNorm
    expected = 2 * 15 * 25 + 15 * 40 * 25 + (640 * 300 + 300) + (300 * 1623 + 1623)
    counts = model.parameter_counts()
    assert counts["trunk"] + counts["heads"] == expected
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert model.heads["static"] is model.heads["event"]
    head = model.heads["event"].weight.detach()
    assert float(head.abs().max()) <= 0.1  # uniform(-0.1, 0.1) init (scnn.py 118-119)
    out = model(torch.rand(12, 2, 2, 28, 28))
    assert out.features.shape == (12, 2, 300)  # node1.mem (scnn.py 139, 150)


# --------------------------------------------------------------------------------------------
# Initialisation: KT's Transfer_VGG_SNN (vgg_snn.py 199-241) and its BaseModule
# (base_module.py 113-150) set none, so each BaseConvModule's nn.Conv2d (base_module.py 86-91,
# no bias) keeps what PyTorch's constructor drew: kaiming_uniform_ with a = sqrt(5), a gain of
# sqrt(2 / (1 + 5)) = 1/sqrt(3) and so a bound of gain * sqrt(3 / fan_in) = 1/sqrt(fan_in):
# uniform in +-1/sqrt(fan_in), std 1/sqrt(3 fan_in). tmkt's default draws He-normal with
# fan-out, std sqrt(2 / fan_out) (TET's VGGSNN; KT's Transfer_ResNet, resnet.py 600-604).
# --------------------------------------------------------------------------------------------

# (in, out) channels of Transfer_VGG_SNN's 3x3 convolutions (vgg_snn.py 219-229)
KT_VGG_CONVS = [(2, 64), (64, 128), (128, 256), (256, 256), (256, 512), (512, 512),
                (512, 512), (512, 512)]


def _trunk_convs(model) -> list[nn.Conv2d]:
    return [m for m in model.trunk.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("recipe", ["recipes/ncaltech101/kt.yaml", "recipes/cifar10dvs/kt.yaml"])
def test_published_vggsnn_keeps_pytorchs_default_conv_init(recipe):
    cfg = _published_model(recipe)
    assert cfg.backbone == "vggsnn"
    torch.manual_seed(0)
    convs = _trunk_convs(build_snn(cfg, 101, 48, 2))
    assert [(c.in_channels, c.out_channels) for c in convs] == KT_VGG_CONVS
    # the reference's convolutions built in its order from the same seed: the same draws
    # (BatchNorm and the neurons draw nothing), so nothing re-initialised them
    torch.manual_seed(0)
    for conv, (c_in, c_out) in zip(convs, KT_VGG_CONVS, strict=True):
        reference = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        assert torch.equal(conv.weight, reference.weight)
    for conv in convs:  # the distribution, from the formula above
        w = conv.weight.detach()
        bound = 1 / math.sqrt(conv.in_channels * 9)
        assert float(w.abs().max()) <= bound
        assert float(w.std()) == pytest.approx(bound / math.sqrt(3), rel=0.05)


def test_vggsnn_default_conv_init_is_kaiming_fan_out():
    """tmkt's default, which the published VGG-SNN recipes switch off: a different scale in
    every layer (at 2-64 the default init's std is 2.3 times He fan-out's, at 512-512 0.41)."""
    assert ModelConfig().conv_init == "kaiming_fan_out"
    cfg = _published_model("recipes/ncaltech101/kt.yaml")
    torch.manual_seed(0)
    model = build_snn(ModelConfig(**{**cfg.__dict__, "conv_init": "kaiming_fan_out"}),
                      101, 48, 2)
    for conv in _trunk_convs(model):
        fan_out = conv.out_channels * 9
        he = math.sqrt(2 / fan_out)
        default = 1 / math.sqrt(3 * conv.in_channels * 9)
        assert float(conv.weight.detach().std()) == pytest.approx(he, rel=0.05)
        assert abs(he / default - 1) > 0.5  # the two inits differ at every layer
    # KT's ResNet-18 draws He fan-out (resnet.py 600-604): the CEP-DVS recipes keep the default
    assert _published_model("recipes/cepdvs/kt.yaml").conv_init == "kaiming_fan_out"
    # KT's SCNN has its own initialisation (scnn.py 112-119), which scnn_kt builds
    with pytest.raises(TmktError, match=r"model\.conv_init"):
        build_snn(ModelConfig(backbone="scnn_kt", conv_init="torch_default"), 5, 28, 2)


def test_published_neuron_settings():
    for recipe in ("recipes/ncaltech101/kt.yaml", "recipes/cepdvs/kt.yaml",
                   "recipes/cifar10dvs/kt.yaml"):
        cfg = _published_model(recipe)
        # main_transfer.py 281-282 (threshold 0.5, tau 2), run_aba.sh --act-fun QGateGrad
        # (node.py 492: alpha 2), node.py 503 (reset with the spike detached)
        assert (cfg.surrogate, cfg.surrogate_alpha, cfg.tau, cfg.threshold) == \
            ("piecewise_quadratic", 2.0, 2.0, 0.5)
        assert cfg.detach_reset and cfg.fire == "gt" and cfg.feature == "membrane"
    omni = _published_model("recipes/nomniglot/kt.yaml")
    assert (omni.surrogate, omni.surrogate_alpha) == ("rectangular", 1.0)
    assert omni.detach_reset and omni.fire == "gt" and omni.feature == "membrane"


def test_rectangular_surrogate_derivative():
    x = torch.linspace(-1, 1, 41)
    from tmkt_cli.models.neurons import surrogate_derivative
    assert torch.equal(surrogate_derivative(x, "rectangular", 1.0), (x.abs() < 0.5).float())
    assert math.isclose(float(surrogate_derivative(torch.tensor(0.1), "rectangular", 2.0)), 2.0)
    assert np.isclose(float(surrogate_derivative(torch.tensor(0.3), "rectangular", 2.0)), 0.0)


# --------------------------------------------------------------------------------------------
# Sampling: datasets.py get_NCALTECH101_data (1230-1257): WeightedRandomSampler with weight
# dataset_length / count for each training sample of a class, as many draws as training
# samples, with replacement (torch's default for that sampler)
# --------------------------------------------------------------------------------------------


def test_class_balanced_sampler_draws_classes_equally():
    from tmkt_cli.data.sampling import KeyedBatchSampler, class_balanced_weights

    counts = [5, 20, 75]
    labels = np.repeat(np.arange(3), counts)
    weights = class_balanced_weights(labels)
    ref = np.array([len(labels) / counts[c] for c in labels])  # datasets.py 1236
    np.testing.assert_allclose(weights, ref / ref.sum())
    indices = np.arange(100, 200)  # dataset positions of the training samples
    drawn = []
    for epoch in range(200):
        sampler = KeyedBatchSampler(indices, 16, seed=3, epoch=epoch, weights=weights)
        epoch_keys = [k for batch in sampler for k, _ in batch]
        assert len(epoch_keys) == len(indices)  # as many draws as samples
        drawn += epoch_keys
    freq = np.bincount(labels[np.asarray(drawn) - 100], minlength=3) / len(drawn)
    np.testing.assert_allclose(freq, [1 / 3] * 3, atol=0.02)  # 20,000 draws: sd about 0.003
    again = [k for b in KeyedBatchSampler(indices, 16, 3, 7, weights=weights) for k, _ in b]
    first = [k for b in KeyedBatchSampler(indices, 16, 3, 7, weights=weights) for k, _ in b]
    assert again == first  # a pure function of (seed, epoch): resume stays bitwise
    resumed = [k for b in KeyedBatchSampler(indices, 16, 3, 7, start_batch=2, weights=weights)
               for k, _ in b]
    assert resumed == first[32:]


# --------------------------------------------------------------------------------------------
# Last partial batch: datasets.py 1335-1339 (N-Caltech101), 1457 (CEP-DVS), 1755 (N-Omniglot)
# build the training DataLoader with drop_last=True: an epoch is len // batch_size batches.
# CIFAR10-DVS's (get_dvsc10_data, 1072-1076) has drop_last=False: it keeps the last one.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [100, 97, 96, 33])
def test_drop_last_yields_only_full_batches(n):
    from tmkt_cli.data.sampling import KeyedBatchSampler

    indices = np.arange(n)
    kept = list(KeyedBatchSampler(indices, 16, seed=1, epoch=0, drop_last=True))
    assert len(kept) == n // 16 and all(len(b) == 16 for b in kept)  # torch: n // batch_size
    dropped = {k for b in kept for k, _ in b}
    full = list(KeyedBatchSampler(indices, 16, seed=1, epoch=0))
    assert full[:len(kept)] == kept  # the same order, only the tail is cut
    assert len(dropped) == len(kept) * 16


@pytest.mark.parametrize("recipe", ["recipes/ncaltech101/kt.yaml", "recipes/cepdvs/kt.yaml",
                                    "recipes/nomniglot/kt.yaml"])
def test_published_recipes_drop_the_last_partial_batch(recipe):
    assert load_recipe(recipe).train.drop_last is True


def _torch_epoch(indices: np.ndarray, batch_size: int, drop_last: bool) -> list[int]:
    """Batch sizes of one epoch of torch's DataLoader over a SubsetRandomSampler (what the
    reference's loaders iterate: DataLoader wraps the sampler in a BatchSampler)."""
    sampler = torch.utils.data.SubsetRandomSampler(indices.tolist())
    return [len(b) for b in torch.utils.data.BatchSampler(sampler, batch_size, drop_last)]


@pytest.mark.parametrize("recipe", ["recipes/cifar10dvs/kt.yaml", "recipes/cifar10dvs/tmkt.yaml",
                                    "recipes/cifar10dvs/event_only.yaml"])
def test_cifar10dvs_keeps_the_last_partial_batch_like_the_reference(recipe):
    from tmkt_cli.data.sampling import KeyedBatchSampler, batches_per_epoch

    train = load_recipe(recipe).train
    # get_dvsc10_data (1030-1038): 10,000 recordings, 1,000 per class, the first 900 of each
    # class (int(1000 * 0.9), train_data_ratio 1) train
    num_per_cls = 10_000 // 10
    n_train = 10 * int(num_per_cls * 0.9)
    assert n_train == 9_000
    # (a last batch of one sample would differ: tmkt always drops it, as BatchNorm cannot
    # normalise one)
    for n, batch_size in [(n_train, train.batch_size), (n_train, 128), (100, 16)]:
        indices = np.arange(n)
        reference = _torch_epoch(indices, batch_size, drop_last=False)  # datasets.py 1075
        tmkt = list(KeyedBatchSampler(indices, batch_size, seed=1, epoch=0,
                                      drop_last=train.drop_last))
        assert [len(b) for b in tmkt] == reference
        assert batches_per_epoch(n, batch_size, train.drop_last) == len(reference)
        assert sorted(k for b in tmkt for k, _ in b) == indices.tolist()  # every one, once
    # at the published batch of 120 the 9,000 recordings make 75 full batches: no partial
    # batch to keep, so the switch changes the published run only at other batch sizes or
    # event fractions (at KT's default batch of 128, main_transfer.py 95: a last batch of 40)
    assert _torch_epoch(np.arange(n_train), 120, False) == [120] * 75
    assert _torch_epoch(np.arange(n_train), 128, False)[-1] == 40


def test_published_sampling_and_augmentation():
    nc = load_recipe("recipes/ncaltech101/kt.yaml").data
    # datasets.py 1288-1292: crop with padding 48 // 12 = 4, no flip; static images: resize
    # and convert only (build_dataset(False, ...) at 214, build_transform 191-197)
    assert (nc.sampler, nc.crop_padding, nc.hflip, nc.rotation, nc.augment_static) == \
        ("class_balanced", 4, False, 0.0, False)
    cep = load_recipe("recipes/cepdvs/kt.yaml").data
    # run_aba.sh --DVS-DA: crop 4, flip, rotation 15 (datasets.py 1420-1428); uniform order
    # (SubsetRandomSampler, 1411)
    assert (cep.sampler, cep.crop_padding, cep.hflip, cep.rotation, cep.augment_static) == \
        ("uniform", 4, True, 15.0, False)
    c10 = load_recipe("recipes/cifar10dvs/kt.yaml").data
    # get_dvsc10_data without --DVS-DA: resize only (1012-1016), SubsetRandomSampler (1074)
    assert (c10.sampler, c10.crop_padding, c10.hflip, c10.rotation) == \
        ("uniform", 0, False, 0.0)


# --------------------------------------------------------------------------------------------
# CEP-DVS rotation: run_aba.sh --DVS-DA, datasets.py 1420-1428: RandomCrop(48, padding 4),
# RandomHorizontalFlip, RandomRotation(15) on the [T, 2, H, W] frame tensor. torchvision's
# RandomRotation defaults to nearest-neighbour interpolation, fill 0, the image centre; its
# tensor path builds the inverse matrix for -angle (_get_inverse_affine_matrix), maps each
# output pixel centre through it and samples with grid_sample(mode="nearest",
# padding_mode="zeros", align_corners=False).
# --------------------------------------------------------------------------------------------


def reference_rotate_nearest(planes: np.ndarray, degrees: float):
    """torchvision's rotate of ``[..., H, W]`` by ``degrees`` (counter-clockwise), nearest
    neighbour, zeros outside: the output pixel at (row i, column j), taken relative to the
    centre ((H - 1) / 2, (W - 1) / 2), reads the input at x = cos a x' - sin a y',
    y = sin a x' + cos a y', rounded to the nearest pixel. Also returns where that rounding is
    within 1e-4 of a tie (float32 arithmetic may go either way there)."""
    h, w = planes.shape[-2:]
    a = math.radians(degrees)
    yo, xo = np.meshgrid(np.arange(h) - (h - 1) / 2, np.arange(w) - (w - 1) / 2, indexing="ij")
    x = math.cos(a) * xo - math.sin(a) * yo + (w - 1) / 2
    y = math.sin(a) * xo + math.cos(a) * yo + (h - 1) / 2
    near_tie = (np.abs(x - np.floor(x) - 0.5) < 1e-4) | (np.abs(y - np.floor(y) - 0.5) < 1e-4)
    col, row = np.rint(x).astype(int), np.rint(y).astype(int)
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    out = np.zeros_like(planes)
    out[..., inside] = planes[..., row[inside], col[inside]]
    return out, near_tie


def reference_crop(planes: np.ndarray, padding: int, top: int, left: int) -> np.ndarray:
    """RandomCrop(size, padding): zero-pad every side, cut the original size at (top, left)."""
    h, w = planes.shape[-2:]
    pad = [(0, 0)] * (planes.ndim - 2) + [(padding, padding)] * 2
    return np.pad(planes, pad)[..., top:top + h, left:left + w]


@pytest.mark.parametrize("shape", [(2, 2, 48, 48), (3, 9, 14), (1, 14, 9)])
def test_nearest_rotation_matches_torchvisions(shape):
    from tmkt_cli.data.loaders import _rotate

    planes = np.random.default_rng(0).random(shape).astype(np.float32)
    for degrees in (-15.0, -7.3, 4.1, 11.0, 15.0):
        reference, near_tie = reference_rotate_nearest(planes, degrees)
        assert near_tie.mean() < 0.01
        got = _rotate(planes, degrees, "nearest")
        np.testing.assert_array_equal(got[..., ~near_tie], reference[..., ~near_tie])
        bilinear = _rotate(planes, degrees)  # tmkt's default: values between pixels
        assert np.abs(bilinear - reference).max() > 0.1


def test_published_cepdvs_augmentation_is_the_reference_chain():
    """The published CEP-DVS recipe's event augmentation equals crop, flip, nearest rotation
    on the same random parameters (tmkt draws shift, flip, angle in that order)."""
    from tmkt_cli.data.loaders import augment_planes

    assert DataConfig().rotation_interpolation == "bilinear"  # tmkt's default
    cfg = load_recipe("recipes/cepdvs/kt.yaml").data
    assert cfg.rotation_interpolation == "nearest"
    planes = np.random.default_rng(1).random((6, 2, 48, 48)).astype(np.float32)
    rotated = 0
    for seed in range(8):
        got = augment_planes(planes, np.random.default_rng(seed), crop_padding=cfg.crop_padding,
                             hflip=cfg.hflip, rotation=cfg.rotation,
                             rotation_interpolation=cfg.rotation_interpolation)
        draws = np.random.default_rng(seed)
        shift_y, shift_x = draws.integers(-cfg.crop_padding, cfg.crop_padding + 1, size=2)
        flip = bool(draws.integers(0, 2))
        degrees = float(draws.uniform(-cfg.rotation, cfg.rotation))
        # a shift (dy, dx) is RandomCrop's window at (padding - dy, padding - dx)
        reference = reference_crop(planes, cfg.crop_padding, cfg.crop_padding - shift_y,
                                   cfg.crop_padding - shift_x)
        if flip:
            reference = reference[..., ::-1]
        reference, near_tie = reference_rotate_nearest(np.ascontiguousarray(reference), degrees)
        np.testing.assert_array_equal(got[..., ~near_tie], reference[..., ~near_tie])
        rotated += abs(degrees) > 1
    assert rotated >= 4


# --------------------------------------------------------------------------------------------
# Static partners. tmkt's prepared store holds each split's images in class order; the KT code
# indexes one list of every image in dataset order. The tests below build a tiny raw tree,
# run tmkt's own source over it (its split and class order), store flat images whose value
# names the file, and compare the partners tmkt draws under the published recipe with the
# ones the reference's index arithmetic allows.
# --------------------------------------------------------------------------------------------


def _store_from_source(data, folder, value_of) -> str:
    """A prepared dataset of ``data`` (a source's output) with blank frames and a flat image
    of value ``value_of(image_item)`` for every image, as tmkt prepare plans it."""
    from tmkt_cli.data.store import FILENAME, DatasetWriter, StoreHeader
    from tmkt_cli.stages.prepare import plan_split

    plans = {"train": plan_split(data.train, data.train_images),
             "test": plan_split(data.test, data.test_images)}
    header = StoreHeader(dataset="reference", classes=data.classes, time_steps=2, size=4,
                         split_by="time", prepare_config="", config_hash="h")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / FILENAME
    images = {"train": data.train_images, "test": data.test_images}
    with DatasetWriter(path, header, plans) as w:
        for split in ("train", "test"):
            for item in images[split]:
                w.add_image(split, np.full((4, 4, 3), value_of(item), dtype=np.uint8))
            for _ in range(plans[split].recordings):
                w.add_recording(split, np.zeros((2, 2, 4, 4), np.float32), 1, 0, (4, 4))
        w.finish()
    return path


def _partners(path, cfg: DataConfig, draws: int = 40) -> dict[int, set[int]]:
    """The image values tmkt draws for each class of the training recordings."""
    from tmkt_cli.data.loaders import EventDataset

    ds = EventDataset(path, "train", cfg, seed=1, augment=False, with_static=True)
    seen: dict[int, set[int]] = {}
    for position in range(len(ds)):
        for k in range(draws):  # a sample seed of its own per draw, as the sampler gives
            item = ds[(position, position * draws + k)]
            value = int(round(float(item["static"][0, 0, 0]) * 255))
            seen.setdefault(int(item["label"]), set()).add(value)
    return seen


# CEP-DVS: get_transfer_RGBCEPDVS_data (datasets.py 1489-1541) and main_transfer.py 936-947.


def reference_cepdvs_partner_indices(targets, cls_count, portion) -> dict[int, set[int]]:
    """The dataset indices KT's CEP-DVS code can pair with an event sample of each class.
    datasets.py 1527-1534: the training list holds, for each block of ``count`` dataset
    indices, its first round(portion x count) (no shuffle here); 1539-1540: CEPDVS_list[i]
    holds the positions p in that list whose target is i. main_transfer.py 939 draws one
    (np.random.choice) and 947 reads source_input_list[p]: image p of every image in
    dataset-index order (MyImageDataset sorts data/img by number, 1473; one batch of all
    10,000 in order, 1521-1525; main_transfer.py 704). So the partner is dataset index p."""
    train_sample_index, begin = [], 0
    for count in cls_count:
        train_sample_index += list(range(begin, begin + round(portion * count)))
        begin += count
    listed = np.asarray(targets)[train_sample_index]
    return {i: set(np.flatnonzero(listed == i).tolist()) for i in range(len(cls_count))}


def _write_cepdvs_tree(root, block_classes, block) -> list[str]:
    """pathFile.csv, data/MAT/img/<i>.mat and data/img/<i>.png (empty files: the source only
    lists them) for classes in blocks of ``block`` dataset indices, the layout KT's split
    assumes (datasets.py 1390, 1399-1409: cls_count [500] * 20). Returns each index's class."""
    labels = [name for name in block_classes for _ in range(block)]
    root.mkdir(parents=True)
    rows = ["path,label"] + [f"data/img/{i}.png 0 0 0 {c}" for i, c in enumerate(labels)]
    (root / "pathFile.csv").write_text("\n".join(rows) + "\n")
    for folder in ("data/MAT/img", "data/img"):
        (root / folder).mkdir(parents=True)
    for i in range(len(labels)):
        (root / "data" / "MAT" / "img" / f"{i}.mat").touch()
        (root / "data" / "img" / f"{i}.png").touch()
    return labels


@pytest.mark.parametrize("block_classes", [
    ("aquatic_mammals", "fish", "flowers", "food_containers"),  # blocks in label order
    ("flowers", "aquatic_mammals", "food_containers", "fish"),  # blocks in another order
])
def test_published_cepdvs_pairing_is_the_references_position_as_index(tmp_path,
                                                                      block_classes):
    from tmkt_cli.data.datasets.cepdvs import cepdvs_source
    from tmkt_cli.data.loaders import dataset_index_of

    # 10 recordings a class, 5 train and 2 test: KT's 500, 250 (portion 0.5, run_aba.sh
    # --train-portion 0.5) and 500 - round(0.8 x 500) = 100 (datasets.py 1400-1401), scaled
    block, train, test = 10, 5, 2
    labels = _write_cepdvs_tree(tmp_path / "raw", block_classes, block)
    data = cepdvs_source(tmp_path / "raw", train_per_class=train, test_per_class=test)
    path = _store_from_source(data, tmp_path / "prepared",
                              lambda item: dataset_index_of(item.source) + 1)
    targets = [data.classes.index(c) for c in labels]  # KT's labels: the coarse order
    reference = reference_cepdvs_partner_indices(targets, [block] * len(block_classes), 0.5)
    stored = {dataset_index_of(i.source) for i in data.train_images + data.test_images}

    cfg = load_recipe("recipes/cepdvs/kt.yaml").data
    assert cfg.pairing == "position_as_index"
    for in_memory in (False, True):
        drawn = _partners(path, DataConfig(**{**cfg.__dict__, "in_memory": in_memory}))
        drawn = {c: {v - 1 for v in values} for c, values in drawn.items()}
        # everything the reference can draw that the store holds, and nothing else
        assert drawn == {c: reference[c] & stored for c in reference}
    for c, indices in drawn.items():
        partner_classes = {targets[d] for d in indices}
        if block_classes == tuple(sorted(block_classes, key=data.classes.index)):
            # classes in blocks of 500 in label order: class i draws images of class i // 2,
            # training images for even i, held-out ones (test sources) for odd i
            assert partner_classes == {c // 2}
            split = data.train_images if c % 2 == 0 else data.test_images
            assert indices == {dataset_index_of(i.source) for i in split
                               if i.label == c // 2}
        assert len(partner_classes) == 1
    # the positions that name an image past the split (KT's unused 150 of 500) are the only
    # ones tmkt cannot draw: 3 of every odd class's 5 here
    assert sum(len(reference[c] - stored) for c in reference) == 2 * (block - train - test)
    # tmkt's default pairs every class with its own training images
    own = _partners(path, DataConfig(**{**cfg.__dict__, "pairing": "class"}))
    assert {c: {v - 1 for v in values} for c, values in own.items()} == \
        {c: {dataset_index_of(i.source) for i in data.train_images if i.label == c}
         for c in range(len(block_classes))}


def test_position_as_index_needs_numbered_images(tmp_path):
    from tmkt_cli.data.datasets.ncaltech101 import ncaltech101
    from tmkt_cli.data.loaders import EventDataset

    _write_ncaltech101_tree(tmp_path / "raw", {"accordion": 4, "anchor": 4})
    path = _store_from_source(ncaltech101(tmp_path / "raw"), tmp_path / "prepared",
                              lambda item: 1)
    with pytest.raises(TmktError, match=r"position_as_index reads each image's dataset index"):
        EventDataset(path, "train", DataConfig(pairing="position_as_index"), seed=0,
                     augment=False, with_static=True)
    with pytest.raises(TmktError, match=r"data.pairing_one_past' applies to pairing: class"):
        EventDataset(path, "train", DataConfig(pairing="instance", pairing_one_past=True),
                     seed=0, augment=False, with_static=True)


# N-Caltech101: get_transfer_CALTECH101_data (datasets.py 487-516) and main_transfer.py 924-928.


def reference_ncaltech101_partner_positions(cls_count, portion=0.9, rgbdata_ratio=1.0
                                            ) -> dict[int, list[int]]:
    """The positions in KT's Caltech101 image list (the classes' images one after another,
    each class's in file-number order) its N-Caltech101 code can pair with a sample of each
    class. datasets.py 512-515: CALTECH101_list[c] = [begin, begin + round(portion x count)];
    main_transfer.py 927-928: torch.randint(begin, begin + 1 + int((end - begin) x
    rgbdata_ratio)), whose upper bound is exclusive (rgbdata_ratio 1.0: its default, 350, and
    run_aba.sh passes none)."""
    positions, begin = {}, 0
    for c, count in enumerate(cls_count):
        end = begin + round(portion * count)
        positions[c] = list(range(begin, begin + 1 + int((end - begin) * rgbdata_ratio)))
        begin += count
    return positions


def _write_ncaltech101_tree(root, counts: dict[str, int]) -> None:
    """Caltech101/<class>/image_NNNN.bin and 101_ObjectCategories/<class>/image_NNNN.jpg
    (empty files: the source only lists them)."""
    for name, count in counts.items():
        for folder, suffix in (("Caltech101", "bin"), ("101_ObjectCategories", "jpg")):
            (root / folder / name).mkdir(parents=True)
            for number in range(1, count + 1):
                (root / folder / name / f"image_{number:04d}.{suffix}").touch()


def test_published_ncaltech101_pairing_reaches_one_past_like_the_reference(tmp_path):
    from tmkt_cli.data.datasets.ncaltech101 import ncaltech101

    # class sizes giving round(0.9 n) = 6 of 7, 11 of 12 (halves to even does not arise) and
    # 28 of 31 (N-Caltech101's smallest class); names in KT's order (tonic's class dict,
    # ncaltech101.py 57-159, and its sorted walk, 166-167: uppercase first, as tmkt sorts)
    counts = {"BACKGROUND_Google": 7, "Faces_easy": 12, "accordion": 31}
    _write_ncaltech101_tree(tmp_path / "raw", counts)
    data = ncaltech101(tmp_path / "raw")
    assert data.classes == list(counts)
    names = list(counts)

    def value_of(item) -> int:  # 1 + 32 x class + (file number - 1)
        folder, file = item.source.split("/")[-2:]
        return 1 + 32 * names.index(folder) + int(file[len("image_"):-len(".jpg")]) - 1

    path = _store_from_source(data, tmp_path / "prepared", value_of)
    reference = reference_ncaltech101_partner_positions(list(counts.values()))
    begins = np.cumsum([0, *counts.values()])
    expected = {c: {1 + 32 * c + (p - begins[c]) for p in positions}  # position -> file
                for c, positions in reference.items()}

    cfg = load_recipe("recipes/ncaltech101/kt.yaml").data
    assert cfg.pairing == "class" and cfg.pairing_one_past
    assert _partners(path, cfg, draws=60) == expected
    # the one image past each class's training images is its first test image: the own
    # image of the class's first test recording
    for c in range(len(counts)):
        first_test = next(r for r in data.test if r.label == c)
        extra = max(expected[c])
        assert value_of(data.test_images[first_test.image_index]) == extra
        assert extra not in {value_of(i) for i in data.train_images}
    # tmkt's default: the training images alone
    plain = _partners(path, DataConfig(**{**cfg.__dict__, "pairing_one_past": False}),
                      draws=60)
    assert plain == {c: values - {max(values)} for c, values in expected.items()}
    assert DataConfig().pairing_one_past is False


def test_pairing_one_past_leaves_earlier_runs_and_the_teacher_alone():
    """A key added after runs were made: at its default it is not in the config hash, so those
    runs stay up to date; set, it changes the training stages' hash, but not the ANN teacher's,
    which draws no partners (nor does a change of data.pairing)."""
    from tmkt_cli.config import config_hash, stage_config

    plain = load_recipe("recipes/digits/tmkt.yaml")
    assert "pairing_one_past" not in stage_config(plain, "train-tmkt")["data"]
    for override in ("data.pairing_one_past=true", "data.pairing=position_as_index"):
        changed = load_recipe("recipes/digits/tmkt.yaml", [override])
        for stage, differs in (("train-tmkt", True), ("distill", True),
                               ("pretrain-ann", False)):
            a, b = (config_hash(stage_config(r, stage)) for r in (plain, changed))
            assert (a != b) is differs, (override, stage)


# --------------------------------------------------------------------------------------------
# Optimizer and schedule: main_transfer.py 555 create_optimizer(args, model) and 630
# create_scheduler(args, optimizer) with KT's arguments (101-148): AdamW, weight decay 0.01,
# lr 5e-3 x batch / 1024 (510-511), warm-up lr 1e-6 over 5 epochs, cosine to min lr 1e-5
# over args.epochs, or --sched step --decay-epochs 40 (run_omni.sh); decay rate 0.1
# --------------------------------------------------------------------------------------------


def test_weight_decay_groups_leave_out_1d_parameters_and_biases():
    from tmkt_cli.methods.optim import param_groups

    model = build_snn(_published_model("recipes/ncaltech101/kt.yaml"), 101, 48, 10)
    groups = param_groups(model, 0.01, exclude_1d=True)
    # timm's filter: len(shape) == 1 or name ending in ".bias" -> no decay
    ref_no_decay = {n for n, p in model.named_parameters()
                    if p.requires_grad and (len(p.shape) == 1 or n.endswith(".bias"))}
    by_id = {id(p): n for n, p in model.named_parameters()}
    assert {by_id[id(p)] for p in groups[0]["params"]} == ref_no_decay
    assert groups[0]["weight_decay"] == 0.0 and groups[1]["weight_decay"] == 0.01
    assert "eta" in ref_no_decay and "heads.static.bias" in ref_no_decay
    assert "trunk.layers.conv1.1.weight" in ref_no_decay  # a BN weight
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == \
        sum(1 for p in model.parameters() if p.requires_grad)
    assert load_recipe("recipes/ncaltech101/kt.yaml").train.weight_decay_exclude_1d


def reference_timm_lr(epoch, base, kind, epochs, warmup=5, warmup_lr=1e-6, min_lr=1e-5,
                      decay_epochs=40, decay_rate=0.1):
    """timm's Cosine/StepLRScheduler at epoch t (t_in_epochs, cycle_limit 1, no warm-up
    prefix): warm-up warmup_lr + t (base - warmup_lr) / warmup_t, then the cosine of t (not of
    t - warmup_t) over t_initial = epochs, or base decay_rate^(t // decay_t)."""
    if epoch < warmup:
        return warmup_lr + epoch * (base - warmup_lr) / warmup
    if kind == "cosine":
        return min_lr + 0.5 * (base - min_lr) * (1 + math.cos(math.pi * epoch / epochs))
    return base * decay_rate ** (epoch // decay_epochs)


@pytest.mark.parametrize("recipe, kind", [("recipes/ncaltech101/kt.yaml", "cosine"),
                                          ("recipes/cepdvs/kt.yaml", "cosine"),
                                          ("recipes/nomniglot/kt.yaml", "step")])
def test_learning_rate_schedule_matches_timm_with_kts_arguments(recipe, kind):
    from tmkt_cli.methods.optim import lr_factor
    from tmkt_cli.train.engine import lr_for

    cfg = load_recipe(recipe).train
    base = lr_for(cfg)
    published_lr = 1.2 if kind == "step" else 5e-3
    assert math.isclose(base, published_lr * cfg.batch_size / 1024)
    steps_per_epoch = 3
    total = cfg.epochs * steps_per_epoch
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    for step in range(total):
        epoch = step // steps_per_epoch
        got = base * lr_factor(cfg, base, step, total, warmup, steps_per_epoch)
        want = reference_timm_lr(epoch, base, kind, cfg.epochs)
        assert math.isclose(got, want, rel_tol=1e-9), (step, got, want)


# --------------------------------------------------------------------------------------------
# Event frames: the tonic fork's ToFrame (FloyedShen/tonic functional/to_frame.py 51-89) with
# n_time_bins (functional/slicing.py slice_by_time_bins 71-79), the N-Caltech101 reader's
# origin shift (datasets/ncaltech101.py 186-187), then KT's F.interpolate(size, bilinear,
# align_corners=True) (datasets.py 1275, 1290, 1295)
# --------------------------------------------------------------------------------------------


def _events(n=400, seed=0, t0=1_000, span=50_000, x0=7, y0=3, w=30, h=20):
    from tmkt_cli.data.sources import EVENT_DTYPE

    rng = np.random.default_rng(seed)
    ev = np.zeros(n, dtype=EVENT_DTYPE)
    ev["t"] = np.sort(rng.integers(t0, t0 + span, n))
    ev["x"] = rng.integers(x0, x0 + w, n)
    ev["y"] = rng.integers(y0, y0 + h, n)
    ev["p"] = rng.integers(0, 2, n)
    return ev


def reference_fork_frames(ev, T, sensor=None, shift=False):
    """The fork's pipeline, re-derived: optional origin shift; sensor (H, W) from max + 1 when
    none is given; windows of t[-1] // T from t[0], events counted with searchsorted bounds."""
    ev = ev.copy()
    if shift:
        ev["x"] -= ev["x"].min()
        ev["y"] -= ev["y"].min()
    if sensor is None:
        sensor = (int(ev["y"].max()) + 1, int(ev["x"].max()) + 1)
    t = ev["t"]
    window = t[-1] // T
    starts = np.arange(T) * window + t[0]
    lo, hi = np.searchsorted(t, starts), np.searchsorted(t, starts + window)
    frames = np.zeros((T, 2, *sensor), dtype=np.int64)
    for k in range(T):
        s = ev[lo[k]:hi[k]]
        np.add.at(frames, (k, s["p"].astype(int), s["y"].astype(int), s["x"].astype(int)), 1)
    return frames


@pytest.mark.parametrize("t0", [0, 1_000, 30_000])
def test_fork_time_slicer_bins(t0):
    from tmkt_cli.data.frames import events_to_frames

    ev = _events(t0=t0)
    ref = reference_fork_frames(ev, 10, sensor=(40, 40))
    got = events_to_frames(ev, (40, 40), 10, "time_fork")
    np.testing.assert_array_equal(got, ref)
    assert not np.array_equal(events_to_frames(ev, (40, 40), 10, "time"), got)
    if t0 == 30_000:  # windows of t_last // T from t0 reach past the end: late frames empty
        assert got[-1].sum() == 0 and got.sum() == ev.size
    shuffled = ev[np.random.default_rng(1).permutation(ev.size)]
    # the fork's window uses the file's last timestamp; for sorted files that is the maximum
    np.testing.assert_array_equal(events_to_frames(shuffled, (40, 40), 10, "time_fork"), got)


@pytest.mark.parametrize("extent, shift", [("observed_shifted", True), ("observed", False)])
def test_resized_frames_match_the_reference_pipeline(extent, shift):
    import torch.nn.functional as F

    from tmkt_cli.data.frames import events_to_frames, resize_frames
    from tmkt_cli.stages.prepare import apply_sensor_extent

    ev = _events()
    ref = F.interpolate(torch.tensor(reference_fork_frames(ev, 10, shift=shift),
                                     dtype=torch.float), size=[48, 48], mode="bilinear",
                        align_corners=True)
    moved, sensor = apply_sensor_extent(ev, (180, 240), extent)
    got = resize_frames(events_to_frames(moved, sensor, 10, "time_fork"), 48, align_corners=True)
    torch.testing.assert_close(torch.from_numpy(got), ref, rtol=1e-5, atol=1e-5)


def test_published_event_pipeline_settings():
    nc = load_recipe("recipes/ncaltech101/kt.yaml").prepare
    assert (nc.split_by, nc.align_corners, nc.sensor_extent) == \
        ("time_fork", True, "observed_shifted")
    cep = load_recipe("recipes/cepdvs/kt.yaml").prepare
    assert (cep.split_by, cep.align_corners, cep.sensor_extent) == \
        ("time_fork", True, "observed")
    c10 = load_recipe("recipes/cifar10dvs/kt.yaml").prepare
    assert (c10.split_by, c10.align_corners, c10.sensor_extent) == \
        ("time_fork", True, "declared")


# --------------------------------------------------------------------------------------------
# The KT loss of one step: main_transfer.py 997-1063 with --TET-loss --domain-loss
# --domain-loss-coefficient 0.5 --regularization (README.md's training command), and the
# linear CKA of CKA.py 97-117
# --------------------------------------------------------------------------------------------


def reference_linear_cka(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CKA.py linear_CKA: Gram matrices x x^T, y y^T (gram_linear), each centred by
    subtracting its column means minus half the grand mean from rows and columns
    (center_gram, unbiased False), then <Kc, Lc> / (|Kc| |Lc| + 1e-7)."""
    def centred(g):
        means = g.mean(0)
        means = means - means.mean() / 2
        return g - means[:, None] - means[None, :]
    kx, ky = centred(x @ x.T), centred(y @ y.T)
    return (kx * ky).sum() / (kx.norm() * ky.norm() + 1e-7)


def reference_kt_loss(logits_rgb, logits_dvs, feat_rgb, feat_dvs, y, coefficient,
                      threshold=0.5, lamb=1e-3, weight=0.5):
    """main_transfer.py: domain loss sum_t sigmoid(c_t) (1 - |CKA_t|) / T (1000-1009); TET
    first terms CE per step averaged over T, the event one weighted by 1 - sigmoid(c_t)
    (1021-1032); second terms MSE against the threshold, the event one weighted too
    (1035-1046); (1 - lamb) first + lamb second per stream (1048-1049); total
    rgb + dvs + coefficient x domain (1058-1063)."""
    T = logits_rgb.shape[0]
    B = y.shape[0]
    w = torch.sigmoid(coefficient)
    domain = sum(w[t] * (1 - reference_linear_cka(feat_rgb[t].reshape(B, -1),
                                                  feat_dvs[t].reshape(B, -1)).abs())
                 for t in range(T)) / T
    ce, mse = nn.functional.cross_entropy, nn.functional.mse_loss
    rgb_first = sum(ce(logits_rgb[t], y) for t in range(T)) / T
    dvs_first = sum((1 - w[t]) * ce(logits_dvs[t], y) for t in range(T)) / T
    rgb_second = sum(mse(logits_rgb[t], torch.full_like(logits_rgb[t], threshold))
                     for t in range(T)) / T
    dvs_second = sum((1 - w[t]) * mse(logits_dvs[t], torch.full_like(logits_dvs[t], threshold))
                     for t in range(T)) / T
    loss_rgb = (1 - lamb) * rgb_first + lamb * rgb_second
    loss_dvs = (1 - lamb) * dvs_first + lamb * dvs_second
    return loss_rgb + loss_dvs + weight * domain


def test_kt_total_loss_and_gradients_of_one_step():
    from tmkt_cli.train.engine import StepContext
    from tmkt_cli.train.tasks import SNNTransferTask

    recipe = load_recipe("recipes/ncaltech101/kt.yaml")
    assert recipe.method.str_weights and recipe.method.tet and recipe.method.da_weight == 0.5
    # the published neuron, norm and feature settings on a small backbone (fast)
    cfg = ModelConfig(**{**recipe.model.__dict__, "backbone": "digitsnet"})
    torch.manual_seed(0)
    model = build_snn(cfg, 5, 32, 4).train()
    with torch.no_grad():
        model.eta.copy_(torch.tensor([0.3, -0.2, 1.0, 0.5]))
    g = torch.Generator().manual_seed(1)
    batch = {"events": torch.rand(6, 4, 2, 32, 32, generator=g) * 3,
             "static": torch.rand(6, 2, 32, 32, generator=g) * 3,
             "label": torch.tensor([0, 1, 2, 3, 4, 0])}
    task = SNNTransferTask(model, recipe.method, threshold=cfg.threshold)
    ctx = StepContext(0, 100, 0, torch.device("cpu"), 0)  # step 0: replacement P = 0
    loss = task.training_step(batch, ctx)["loss"]
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True)

    # the same network outputs, the reference's loss on them
    static = batch["static"].unsqueeze(1).expand(6, 4, 2, 32, 32).transpose(0, 1)
    out_s = model(static, "static")
    functional.reset_net(model)
    out_e = model(batch["events"].transpose(0, 1), "event")
    functional.reset_net(model)
    ref = reference_kt_loss(out_s.logits, out_e.logits, out_s.features, out_e.features,
                            batch["label"], model.eta)
    ref_grads = torch.autograd.grad(ref, params, allow_unused=True)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads, ref_grads, strict=True):
        if a is None or b is None:
            assert a is None or not a.any()
            continue
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------------------------
# The N-Omniglot KT loss: run_omni.sh passes --domain-loss --domain-loss-coefficient 0.5 but no
# --regularization (store_true, main_transfer.py 364-365: off) and no --TET-loss
# --------------------------------------------------------------------------------------------


def reference_kt_loss_plain(logits_rgb, logits_dvs, feat_rgb, feat_dvs, y, weight=0.5):
    """main_transfer.py without --regularization: domain loss sum_t (1 - |CKA_t|) / T
    (1000-1009, the unweighted branch at 1008); without --TET-loss: CE on each stream's
    time-averaged output (1050-1054); total rgb + dvs + coefficient x domain (1058-1063)."""
    T, B = logits_rgb.shape[0], y.shape[0]
    domain = sum(1 - reference_linear_cka(feat_rgb[t].reshape(B, -1),
                                          feat_dvs[t].reshape(B, -1)).abs()
                 for t in range(T)) / T
    ce = nn.functional.cross_entropy
    return ce(logits_rgb.mean(0), y) + ce(logits_dvs.mean(0), y) + weight * domain


def test_nomniglot_kt_loss_has_no_str_weights():
    from dataclasses import replace

    from tmkt_cli.train.engine import StepContext
    from tmkt_cli.train.tasks import SNNTransferTask

    recipe = load_recipe("recipes/nomniglot/kt.yaml")
    m = recipe.method
    assert not m.str_weights and not m.tet and m.domain_alignment and m.da_weight == 0.5
    cfg = recipe.model
    torch.manual_seed(0)
    model = build_snn(cfg, 5, 28, 4).train()
    g = torch.Generator().manual_seed(2)
    batch = {"events": torch.rand(6, 4, 2, 28, 28, generator=g) * 3,
             "static": torch.rand(6, 2, 28, 28, generator=g) * 3,
             "label": torch.tensor([0, 1, 2, 3, 4, 0])}
    ctx = StepContext(0, 100, 0, torch.device("cpu"), 0)  # step 0: replacement P = 0
    loss = SNNTransferTask(model, m, threshold=cfg.threshold).training_step(batch, ctx)["loss"]
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True)

    static = batch["static"].unsqueeze(1).expand(6, 4, 2, 28, 28).transpose(0, 1)
    out_s = model(static, "static")
    functional.reset_net(model)
    out_e = model(batch["events"].transpose(0, 1), "event")
    functional.reset_net(model)
    assert float(out_e.features.detach().abs().sum()) > 0  # something to align
    ref = reference_kt_loss_plain(out_s.logits, out_e.logits, out_s.features, out_e.features,
                                  batch["label"])
    ref_grads = torch.autograd.grad(ref, params, allow_unused=True)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    for p, a, b in zip(params, grads, ref_grads, strict=True):
        if p is model.eta:  # no sigma(eta_t) anywhere: eta gets no gradient
            assert a is None or not a.any()
        if a is None or b is None:
            assert (a is None or not a.any()) and (b is None or not b.any())
            continue
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # with the STR weights (tmkt's kt default) the same step is another loss
    functional.reset_net(model)
    weighted = SNNTransferTask(model, replace(m, str_weights=True), threshold=cfg.threshold)
    assert not torch.isclose(weighted.training_step(batch, ctx)["loss"], loss)


# --------------------------------------------------------------------------------------------
# CKD's teacher reads the colour image (CKD's method figure); tmkt's default feeds it the
# student's 2-plane static input. pretrain_ann.input: rgb trains and distils a colour teacher.
# --------------------------------------------------------------------------------------------


def test_colour_teacher_trains_and_distils_on_rgb(tmp_path):
    from test_eval import make_prepared_dataset, toy_recipe_file
    from typer.testing import CliRunner

    from tmkt_cli.cli import app
    from tmkt_cli.data.loaders import EventDataset, ImageDataset
    from tmkt_cli.runs.artifacts import read_manifest
    from tmkt_cli.runs.checkpoints import load_checkpoint

    make_prepared_dataset(tmp_path / "prepared", n_train=8, n_test=4)
    recipe = toy_recipe_file(tmp_path, "toy-rgb")
    steps = ["--set", "train.epochs=0", "--set", "train.max_steps=2", "--set",
             "train.batch_size=4", "--set", "train.warmup_steps=1", "--set",
             "train.device=cpu"]
    teacher = ["--set", "pretrain_ann.input=rgb", "--set", "pretrain_ann.backbone=digitsnet",
               "--set", "pretrain_ann.train.epochs=0", "--set",
               "pretrain_ann.train.max_steps=2", "--set", "pretrain_ann.train.batch_size=4",
               "--set", "pretrain_ann.train.device=cpu"]
    runner = CliRunner()
    res = runner.invoke(app, ["pretrain-ann", str(recipe), *teacher])
    assert res.exit_code == 0, res.output
    folder = tmp_path / "runs" / "toy-rgb" / "seed42"
    state = load_checkpoint(folder / "pretrain-ann" / "last.pt")
    assert state["model_info"]["in_channels"] == 3
    assert state["model"]["trunk.layers.conv1.0.weight"].shape[1] == 3  # reads RGB
    res = runner.invoke(app, ["distill", str(recipe), *steps, *teacher])
    assert res.exit_code == 0, res.output
    assert read_manifest(folder / "distill")["status"] == "complete"
    # the colour partner is the stored RGB image, in [0, 1], with the V plane its maximum
    h5 = tmp_path / "prepared" / "dataset.h5"
    cfg = load_recipe(recipe).data
    item = EventDataset(h5, "train", cfg, seed=0, augment=False, with_static=True,
                        teacher_rgb=True)[(0, 1)]
    assert item["static_rgb"].shape == (3, *item["static"].shape[1:])
    torch.testing.assert_close(item["static_rgb"].max(0).values, item["static"][0])
    image = ImageDataset(h5, "train", cfg, rgb=True)[(0, 1)]["image"]
    assert image.shape[0] == 3

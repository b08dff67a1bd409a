"""What only a GPU can check (run by `make gpu-check`; skipped where CUDA is absent): mixed
precision, channels_last and torch.compile on a real training step, tmkt's LIF on CUDA against
spikingjelly's own kernels, and DDP over NCCL."""

from __future__ import annotations

import os
import socket
import time

import pytest
import torch
from spikingjelly.activation_based import functional, neuron

from tmkt_cli.config import MethodConfig, ModelConfig, resolve_method
from tmkt_cli.models import build_snn
from tmkt_cli.models.neurons import FusedLIFNode, make_surrogate
from tmkt_cli.train.engine import StepContext
from tmkt_cli.train.runtime import autocast
from tmkt_cli.train.tasks import SNNTransferTask

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
DEVICE = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
T, B, SIZE, CLASSES = 6, 8, 32, 10


def batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"events": torch.poisson(torch.full((B, T, 2, SIZE, SIZE), 0.1), generator=g),
            "static": torch.rand(B, 2, SIZE, SIZE, generator=g),
            "label": torch.randint(0, CLASSES, (B,), generator=g)}


def kt_task(**model_keys) -> SNNTransferTask:
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="digitsnet", **model_keys)
    model = build_snn(cfg, CLASSES, SIZE, T).to(DEVICE)
    return SNNTransferTask(model, resolve_method(MethodConfig(name="kt")), cfg.threshold)


def loss_and_grad(task: SNNTransferTask, amp: str) -> tuple[float, torch.Tensor]:
    data = {k: v.to(DEVICE) for k, v in batch().items()}
    task.model.zero_grad(set_to_none=True)
    with autocast(DEVICE, amp):
        loss = task.training_step(data, StepContext(5, 10, 0, DEVICE, 0))["loss"]
    scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")
    scaler.scale(loss).backward()
    grads = torch.cat([p.grad.flatten() / scaler.get_scale() for p in task.model.parameters()
                       if p.grad is not None])
    return float(loss), grads.float()


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_step_is_close_to_fp32(amp):
    loss32, grad32 = loss_and_grad(kt_task(), "off")
    loss, grad = loss_and_grad(kt_task(), amp)
    assert torch.isfinite(grad).all()
    assert abs(loss - loss32) < 0.05 * abs(loss32)
    assert torch.nn.functional.cosine_similarity(grad, grad32, dim=0) > 0.95


def test_channels_last_and_compile_keep_the_step():
    reference, grad_ref = loss_and_grad(kt_task(), "off")
    task = kt_task()
    task.model.to(memory_format=torch.channels_last)
    loss, grad = loss_and_grad(task, "off")
    assert abs(loss - reference) < 1e-4 and torch.allclose(grad, grad_ref, atol=1e-4)
    task = kt_task()
    task.model.compile()
    loss, grad = loss_and_grad(task, "off")
    assert abs(loss - reference) < 1e-3 and torch.allclose(grad, grad_ref, atol=1e-3)


@pytest.mark.parametrize("surrogate", ["atan", "piecewise_quadratic"])
def test_lif_on_cuda_matches_spikingjelly_and_reports_its_speed(surrogate, capsys):
    x = torch.randn(10, 64, 128, 24, 24, device=DEVICE)
    outputs, times = {}, {}
    for name in ("tmkt", "spikingjelly-kernel", "spikingjelly-torch"):
        if name == "tmkt":
            node = FusedLIFNode(2.0, 0.5, surrogate, 2.0, detach_reset=True,
                                implementation="tmkt")
        else:
            node = neuron.LIFNode(tau=2.0, v_threshold=0.5, v_reset=0.0, detach_reset=True,
                                  surrogate_function=make_surrogate(surrogate, 2.0),
                                  step_mode="m")
            if name == "spikingjelly-torch":
                node.backend = "torch"  # spikingjelly's plain loop, if it still honours it
        xi = x.clone().requires_grad_(True)
        for _ in range(3):  # warm-up, then one timed pass
            torch.cuda.synchronize()
            start = time.perf_counter()
            spikes = node(xi)
            spikes.sum().backward()
            torch.cuda.synchronize()
            times[name] = time.perf_counter() - start
            functional.reset_net(node)
            grad = xi.grad.clone()
            xi.grad = None
        outputs[name] = (spikes.detach(), grad)
    ref_spikes, ref_grad = outputs["spikingjelly-kernel"]
    for name, (spikes, grad) in outputs.items():
        assert torch.equal(spikes, ref_spikes), name
        assert torch.allclose(grad, ref_grad, atol=1e-5), name
    with capsys.disabled():
        print("\nLIF fwd+bwd on CUDA, T=10, 64x128x24x24: " + ", ".join(
            f"{k} {1000 * v:.1f} ms" for k, v in times.items()))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_over_nccl_in_one_process():
    """The engine's DDP wrapping (the whole two-stream step as one module call) over NCCL
    gives the gradients of the plain step."""
    import torch.distributed as dist

    from tmkt_cli.train.engine import _StepModule

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        loss_ref, grad_ref = loss_and_grad(kt_task(), "off")
        task = kt_task()
        step = torch.nn.parallel.DistributedDataParallel(
            _StepModule(task), device_ids=[0], find_unused_parameters=True)
        data = {k: v.to(DEVICE) for k, v in batch().items()}
        loss = step(data, StepContext(5, 10, 0, DEVICE, 0))["loss"]
        loss.backward()
        grad = torch.cat([p.grad.flatten() for p in task.model.parameters()
                          if p.grad is not None])
        assert abs(float(loss) - loss_ref) < 1e-5
        assert torch.allclose(grad, grad_ref, atol=1e-6)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("method", ["event_only", "kt", "tmkt"])
def test_training_steps_between_log_points_never_sync_with_the_host(method):
    """The engine's step (host batch copied in, forward, backward, the on-device non-finite
    check, fused AdamW) raises under sync debug mode "error" if anything in it waits for the
    GPU; reading the metrics at a log point is then the one sync."""
    import dataclasses

    from tmkt_cli.config import TrainConfig
    from tmkt_cli.train.engine import read_values, timing_fit, train_one_step

    torch.manual_seed(0)
    cfg = ModelConfig(backbone="digitsnet")
    task = SNNTransferTask(build_snn(cfg, CLASSES, SIZE, T).to(DEVICE),
                           resolve_method(MethodConfig(name=method)), cfg.threshold)
    f = timing_fit(task, dataclasses.replace(TrainConfig(), device="cuda"), DEVICE, 6)
    host = {k: v.pin_memory() for k, v in batch().items()}
    train_one_step(f, host)  # first step: allocations, cuDNN autotuning
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(4):
            out, _ = train_one_step(f, host)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    values = read_values(out)
    assert all(v == v for v in values.values()) and int(f.guard.first_step) == -1


def test_non_finite_step_is_skipped_on_the_gpu():
    """A NaN loss on CUDA: the fused optimizer leaves the weights as they were."""
    from tmkt_cli.config import TrainConfig
    from tmkt_cli.train.engine import NonFiniteGuard, build_optimization

    model = torch.nn.Linear(3, 2).to(DEVICE)
    opt = build_optimization(model, TrainConfig(), 4, 0, DEVICE)
    guard = NonFiniteGuard(DEVICE)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss = model(torch.ones(1, 3, device=DEVICE)).sum() * float("nan")
    loss.backward()
    guard.check(loss, opt.params, 0)
    opt.optimizer.found_inf = guard.found_inf
    opt.optimizer.step()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert int(guard.first_step) == 0

"""What a training run checks before it resumes from ``last.pt``.

The engine writes ``last.pt`` and then, when the evaluation improved, ``best.pt`` with the
same state. A SIGKILL between the two leaves a ``last.pt`` whose loop says "the best is me"
beside an older (or no) ``best.pt``. Resuming must repair that, or the finished run's
``best.pt`` holds other weights than its manifest says. A hand-copied ``last.pt`` of another
model or another config must not be resumed either (``load_state_dict`` would fail half-way or,
worse, succeed).

:func:`resumable_state` answers both: the state to resume from (with ``best.pt`` made to agree
with it), or None when the run must start again from step 0.
"""

from __future__ import annotations

from pathlib import Path

from tmkt_cli.errors import TmktError


def _step_of(path: Path) -> int | None:
    """The loop step a checkpoint was saved at, or None when it is missing or unreadable."""
    from tmkt_cli.runs.checkpoints import load_checkpoint

    if not path.is_file():
        return None
    try:
        return int(load_checkpoint(path)["loop"]["step"])
    except (TmktError, KeyError, TypeError, ValueError):
        return None


def resumable_state(last_path: Path, best_path: Path, metrics_path: Path, model_info: dict,
                    config_hash: str, say) -> dict | None:
    """The checkpoint state to resume from, or None to train again from step 0.

    Refuses (one line naming ``--resume never``) a ``last.pt`` of another model or config.
    Restores ``best.pt`` from ``last.pt`` when the run was killed between the two writes; when
    ``best.pt`` disagrees with the loop state and cannot be restored, or the metrics log is
    gone, removes the checkpoints and returns None (the run starts over, which on the CPU
    gives bitwise the same result). ``say`` prints one line of explanation.
    """
    from tmkt_cli.runs.checkpoints import checkpoint_mismatches, describe_model, load_checkpoint

    if not last_path.is_file():
        return None
    state = load_checkpoint(last_path)
    theirs = state.get("model_info", {})
    if diffs := checkpoint_mismatches(theirs, model_info, strict=True):
        raise TmktError(f"{last_path}: the checkpoint to resume from holds another model "
                        f"({describe_model(theirs)}: {'; '.join(diffs)}; this run trains "
                        f"{describe_model(model_info)}); run with --resume never to start "
                        f"this run again")
    if state.get("config_hash") != config_hash:
        raise TmktError(f"{last_path}: the checkpoint to resume from was made with another "
                        f"config (hash {state.get('config_hash')}, this run {config_hash}); "
                        f"run with --resume never to start this run again")
    loop = state.get("loop", {})
    if not metrics_path.is_file():
        say(f"resume: {metrics_path.name} is missing beside {last_path.name}; training again "
            f"from the start")
        return _start_over(last_path, best_path)
    best_step = (loop.get("best") or {}).get("step")
    if best_step is None:  # no evaluation yet: a best.pt here belongs to steps to be redone
        if best_path.exists():
            best_path.unlink()
        return state
    if _step_of(best_path) == best_step:
        return state
    if best_step == loop.get("step"):
        # Killed between writing last.pt and best.pt: best.pt is last.pt's weights.
        from tmkt_cli.runs.checkpoints import export_weights

        export_weights(last_path, best_path)
        say(f"resume: {best_path.name} restored from {last_path.name} (step {best_step}; the "
            f"run was stopped between writing the two)")
        return state
    say(f"resume: {best_path.name} does not hold the best step ({best_step}) that "
        f"{last_path.name} records and cannot be restored; training again from the start")
    return _start_over(last_path, best_path)


def _start_over(last_path: Path, best_path: Path) -> None:
    for p in (last_path, best_path):
        if p.exists():
            p.unlink()
    return None


def check_finite_batch(batch: dict, step: int, epoch: int, last_path: Path) -> None:
    """Refuse a batch whose input frames hold NaN or inf (a damaged or hand-made dataset):
    a spiking layer would turn them into silence and the run would finish, wrongly."""
    import torch

    for name, value in batch.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and \
                not bool(torch.isfinite(value).all()):
            rows = (~torch.isfinite(value.flatten(1))).any(1).nonzero().flatten().tolist()
            ids = batch.get("index")
            which = [int(ids[r]) for r in rows] if isinstance(ids, torch.Tensor) else rows
            raise TmktError(
                f"non-finite input ('{name}' holds NaN or inf, sample(s) {which[:5]}) at step "
                f"{step} (epoch {epoch + 1}); stopped before the update, the last good "
                f"checkpoint is {last_path if last_path.exists() else 'none'}; the prepared "
                f"dataset is damaged: prepare it again")


def out_of_memory(error: BaseException, batch_size: int, train_set, train_indices,
                  parameters: int, last_path: Path) -> TmktError:
    """The one line for running out of (GPU) memory mid-run: the batch size, what a batch's
    inputs and the optimizer state take, and the checkpoint that was kept."""
    from tmkt_cli.train.memory import human_bytes, optimizer_bytes

    inputs = batch_size * sample_bytes(train_set, train_indices)
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:100]
    return TmktError(
        f"out of memory at train.batch_size={batch_size} (estimate: inputs "
        f"{human_bytes(inputs)} a batch, weights+gradients+optimizer "
        f"{human_bytes(optimizer_bytes(parameters))}, plus the activations of T time steps; "
        f"{first}); the last checkpoint is kept "
        f"({last_path if last_path.exists() else 'none yet'}): lower train.batch_size and run "
        f"again with --resume never, or on a larger device")


def sample_bytes(dataset, indices) -> int:
    """The bytes of one training sample's tensors (read once, for the estimate above)."""
    import torch

    if len(indices) == 0:
        return 0
    index = int(indices[0])
    try:
        sample = dataset[(index, index)]
    except Exception:  # an estimate in an error path must not raise another error
        return 0
    return sum(v.nelement() * v.element_size() for v in sample.values()
               if isinstance(v, torch.Tensor))

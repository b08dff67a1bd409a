"""What a training run checks before it resumes from ``last.pt``.

The engine writes ``last.pt`` and then, when the evaluation improved, ``best.pt`` (and, beside
a validation split, ``best_test.pt`` when the test figure improved) with the same state. A
SIGKILL between them leaves a ``last.pt`` whose loop says "the best is me" beside an older (or
no) ``best.pt`` or ``best_test.pt``. Resuming must repair that, or the finished run's
``best.pt`` holds other weights than its manifest says. A hand-copied ``last.pt`` of another
model or another config must not be resumed either (``load_state_dict`` would fail half-way or,
worse, succeed).

:func:`resumable_state` answers both: the state to resume from (with ``best.pt`` made to agree
with it), or None when the run must start again from step 0.
"""

from __future__ import annotations

from pathlib import Path

from tmkt_cli.errors import TmktError
from tmkt_cli.runs.checkpoints import BEST_TEST


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
    best_test_path = last_path.parent / BEST_TEST
    if not metrics_path.is_file():
        say(f"resume: {metrics_path.name} is missing beside {last_path.name}; training again "
            f"from the start")
        return _start_over(last_path, best_path, best_test_path)
    # best.pt (chosen on validation, or on test without a split) and best_test.pt (the best on
    # test beside a validation split) must hold the steps last.pt's loop records
    for path, best in ((best_path, loop.get("best")), (best_test_path, loop.get("best_test"))):
        if not _agrees(path, (best or {}).get("step"), loop.get("step"), last_path, say):
            return _start_over(last_path, best_path, best_test_path)
    return state


def _agrees(path: Path, best_step: int | None, step: int | None, last_path: Path,
            say) -> bool:
    """Make the best checkpoint ``path`` hold ``best_step``, or say it cannot (False)."""
    if best_step is None:  # no evaluation yet: a file here belongs to steps to be redone
        if path.exists():
            path.unlink()
        return True
    if _step_of(path) == best_step:
        return True
    if best_step == step:
        # Killed between writing last.pt and this file: it is last.pt's weights.
        from tmkt_cli.runs.checkpoints import export_weights

        export_weights(last_path, path)
        say(f"resume: {path.name} restored from {last_path.name} (step {best_step}; the "
            f"run was stopped between writing the two)")
        return True
    say(f"resume: {path.name} does not hold the best step ({best_step}) that "
        f"{last_path.name} records and cannot be restored; training again from the start")
    return False


def _start_over(*paths: Path) -> None:
    for p in paths:
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

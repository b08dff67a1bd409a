"""`make gpu-check` is one prepared script for the few minutes a GPU is lent: its dry mode runs
here on the CPU, so the script is known to work before a GPU is ever spent on it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_gpu_check_dry_run_prints_every_section():
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--dry"],
                          capture_output=True, text=True, cwd=REPO, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "### CUDA tests" in out and "PASS" in out
    for method in ("event_only", "kt", "tmkt", "ckd"):
        for precision in ("fp32", "bf16"):
            assert f"| {method} | {precision} |" in out
    assert "`tmkt prepare ncaltech101`" in out and "samples/s" in out


def test_gpu_check_refuses_to_run_without_a_gpu_unless_dry():
    import torch

    if torch.cuda.is_available():
        return
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"),
                           "--skip-tests"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr

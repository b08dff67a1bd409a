"""``tmkt env``: what a bug report needs to know about the machine and the installation.

Library versions are read from the installed distributions' metadata (nothing heavy is
imported for them); torch is imported once for the devices and thread counts.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from tmkt_cli import __version__

LIBRARIES = ("torch", "spikingjelly", "tonic", "numpy", "scipy", "h5py", "typer", "rich",
             "pyyaml", "scikit-learn", "matplotlib", "tensorboard", "lz4", "zstandard")
ENVIRONMENT_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES",
                         "SLURM_JOB_ID", "SLURM_PROCID", "WORLD_SIZE", "RANK", "LOCAL_RANK",
                         "TMKT_DEBUG", "TMKT_RENDEZVOUS_TIMEOUT")


def installed_version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def git_revision() -> str | None:
    """The checkout's revision when tmkt runs from a git working tree (editable install)."""
    source = Path(__file__).resolve().parents[2]
    if not (source / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(source), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def torch_facts() -> list[tuple[str, str]]:
    try:
        import torch
    except ImportError as e:  # the CLI still answers, so the report can say why
        return [("torch", f"cannot be imported: {e}")]
    facts = [("torch threads", f"{torch.get_num_threads()} intra-op, "
                               f"{torch.get_num_interop_threads()} inter-op"),
             ("torch CUDA build", str(torch.version.cuda or "none (CPU build)"))]
    if torch.cuda.is_available():
        facts.append(("cuDNN", str(torch.backends.cudnn.version())))
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            facts.append((f"cuda:{i}", f"{props.name}, {props.total_memory / 2**30:.1f} GiB, "
                                       f"compute capability {props.major}.{props.minor}"))
    else:
        facts.append(("CUDA devices", "none visible"))
    return facts


def describe() -> str:
    """The report as ``key: value`` lines."""
    rows = [("tmkt", __version__), ("tmkt source", str(Path(__file__).resolve().parents[1]))]
    revision = git_revision()
    if revision:
        rows.append(("git revision", revision))
    rows += [("python", f"{platform.python_version()} ({sys.executable})"),
             ("platform", platform.platform()),
             ("CPUs", f"{os.cpu_count()} ({len(os.sched_getaffinity(0))} usable)"
              if hasattr(os, "sched_getaffinity") else str(os.cpu_count()))]
    rows += [(name, installed_version(name)) for name in LIBRARIES]
    rows += torch_facts()
    rows += [(f"${name}", os.environ[name]) for name in ENVIRONMENT_VARIABLES
             if name in os.environ]
    width = max(len(key) for key, _ in rows)
    return "".join(f"{key:<{width}}  {value}\n" for key, value in rows)

"""A real single-node SLURM in a temporary folder, for the tests marked ``slurm``.

:class:`SlurmCluster` writes a minimal ``slurm.conf`` (one node named after this host, its CPUs,
no GPUs, no accounting, requeue allowed), starts ``munged`` as the munge user when no munge
daemon answers yet, then ``slurmctld -D`` and ``slurmd -D`` as root, and stops every daemon it
started, by PID. Clients (``sbatch``, ``squeue``, ``scontrol``, ``scancel``) reach this cluster
through ``SLURM_CONF`` in :attr:`SlurmCluster.env`.

``AuthInfo=cred_expire=10``: without it a requeued job waits about 120 s before it runs again
(slurmctld holds it until the job credential of its previous run has expired).

Run by hand (``python tests/slurm_cluster.py``) it starts the cluster, prints the ``SLURM_CONF``
to export, and stops it on Enter.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

MUNGE_SOCKET = Path("/run/munge/munge.socket.2")
DAEMONS = ("munged", "slurmctld", "slurmd")


class ClusterUnavailable(Exception):
    """SLURM or munge is not installed here, or its daemons would not start (a skip reason)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 1024


SLURM_CONF = """\
ClusterName=tmkt-test
SlurmctldHost={host}
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# A requeued job waits until its last run's credential expired: 120 s by default.
AuthInfo=cred_expire=10
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SchedulerType=sched/backfill
# Look at pending jobs every 2 s (default 60 s and 30 s): a requeued job starts as soon as its
# begin time passes, not a minute later.
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
JobRequeue=1
# Keep finished jobs visible to scontrol for the whole test session.
MinJobAge=3600
KillWait=10
NodeName={host} CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class SlurmCluster:
    root: Path
    cpus: int = field(default_factory=lambda: os.cpu_count() or 1)
    started: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    # -- life cycle ------------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> SlurmCluster:
        for exe in ("slurmctld", "slurmd", "munged", "sbatch", "scontrol"):
            if shutil.which(exe) is None:
                raise ClusterUnavailable(f"{exe} is not installed "
                                         f"(apt-get install -y slurm-wlm munge)")
        if os.geteuid() != 0:
            raise ClusterUnavailable("starting slurmd needs root")
        (self.root / "state").mkdir(parents=True, exist_ok=True)
        (self.root / "spool").mkdir(parents=True, exist_ok=True)
        host = socket.gethostname().split(".")[0]
        self.conf.write_text(SLURM_CONF.format(
            host=host, root=self.root, ctld_port=free_port(), slurmd_port=free_port(),
            cpus=self.cpus, memory=max(512, node_memory_mb() - 1024)))
        try:
            self._start_munge(timeout)
            self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
            self._spawn("slurmd", ["slurmd", "-D", "-f", str(self.conf)])
            self._wait(self._node_idle, timeout, "the node to come up idle")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the daemons this object started (slurmd, slurmctld, munged), by PID."""
        if "slurmctld" in self.started:
            with contextlib.suppress(OSError, subprocess.SubprocessError, ClusterUnavailable):
                subprocess.run(["scancel", "--user=root"], env=self.env, timeout=10,
                               capture_output=True)
                self._wait(self._no_jobs_running, 20, "cancelled jobs to end")
        for name in reversed(DAEMONS):
            proc = self.started.pop(name, None)
            if proc is None:
                continue
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            log = getattr(proc, "log_file", None)
            if log is not None:
                log.close()

    def __enter__(self) -> SlurmCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _spawn(self, name: str, cmd: list[str], user: str | None = None) -> None:
        log = open(self.root / f"{name}.stderr", "ab")  # noqa: SIM115 (closed in stop)
        prefix = ["runuser", "-u", user, "--"] if user else []
        proc = subprocess.Popen([*prefix, *cmd], stdout=log, stderr=subprocess.STDOUT,
                                env=self.env, start_new_session=True)
        proc.log_file = log  # type: ignore[attr-defined]
        self.started[name] = proc
        time.sleep(0.2)
        if proc.poll() is not None:
            raise ClusterUnavailable(f"{name} exited at once (code {proc.returncode}); see "
                                     f"{self.root / (name + '.stderr')}: "
                                     f"{self._tail(self.root / (name + '.stderr'))}")

    def _start_munge(self, timeout: float) -> None:
        if self._munge_answers():
            return  # a munge daemon already runs here: use it, it is not ours to stop
        try:
            pwd.getpwnam("munge")
        except KeyError:
            raise ClusterUnavailable("no munge user (apt-get install -y munge)") from None
        for d in (MUNGE_SOCKET.parent, Path("/var/log/munge"), Path("/var/lib/munge")):
            d.mkdir(parents=True, exist_ok=True)
            shutil.chown(d, "munge", "munge")
        self._spawn("munged", ["munged", "--foreground"], user="munge")
        self._wait(self._munge_answers, timeout, "munged to answer")

    # -- queries -----------------------------------------------------------------------------------

    def _munge_answers(self) -> bool:
        if shutil.which("munge") is None:
            return MUNGE_SOCKET.exists()
        try:
            proc = subprocess.run(["munge", "-n"], capture_output=True, timeout=5)
        except (OSError, subprocess.SubprocessError):
            return False
        return proc.returncode == 0

    def _node_idle(self) -> bool:
        for name in ("slurmctld", "slurmd"):
            proc = self.started[name]
            if proc.poll() is not None:
                raise ClusterUnavailable(
                    f"{name} stopped (code {proc.returncode}): "
                    f"{self._tail(self.root / (name + '.log'))}")
        proc = subprocess.run(["sinfo", "--noheader", "--format=%t"], env=self.env,
                              capture_output=True, text=True, timeout=10)
        return proc.returncode == 0 and proc.stdout.strip() == "idle"

    def _no_jobs_running(self) -> bool:
        proc = subprocess.run(["squeue", "--noheader", "--states=RUNNING,COMPLETING"],
                              env=self.env, capture_output=True, text=True, timeout=10)
        return proc.returncode != 0 or not proc.stdout.strip()

    def _wait(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise ClusterUnavailable(f"timed out after {timeout:.0f} s waiting for {what}; "
                                         f"logs in {self.root}")
            time.sleep(0.25)

    @staticmethod
    def _tail(path: Path, lines: int = 5) -> str:
        with contextlib.suppress(OSError):
            return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    # -- helpers for tests -------------------------------------------------------------------------

    def run(self, *cmd: str, cwd: Path | None = None, env: dict | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(list(cmd), cwd=cwd, env={**self.env, **(env or {})},
                              capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (JobState, Reason, Restarts, ExitCode, ...)."""
        out = self.run("scontrol", "show", "job", "--oneliner", job_id).stdout
        fields: dict[str, str] = {}
        for token in out.split():
            key, sep, value = token.partition("=")
            if sep:
                fields[key] = value
        return fields

    def wait_for(self, job_id: str, states: set[str], timeout: float = 300.0) -> dict[str, str]:
        """Poll until the job's state is one of ``states``; fail with its record on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.job(job_id)
            if info.get("JobState") in states:
                return info
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} not in {sorted(states)} after {timeout:.0f} "
                                     f"s: {info}")
            time.sleep(0.5)


if __name__ == "__main__":
    import tempfile

    with SlurmCluster(Path(tempfile.mkdtemp(prefix="tmkt-slurm-"))) as cluster:
        print(f"export SLURM_CONF={cluster.conf}\n(Enter stops the cluster)")
        input()

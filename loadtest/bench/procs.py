"""Processes under measurement: started pinned to given cores, measured from /proc, stopped by process group.

CPU time is the sum of utime+stime over every thread of every process in the
service's session (a gateway's supervisor, control process and workers; nginx's
master and worker), so "requests per core" divides by the cores the service
really used, not by the wall clock.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stat_fields(path: Path) -> list[str] | None:
    try:
        raw = path.read_text()
    except OSError:
        return None
    return raw.rpartition(")")[2].split()


def session_pids(sid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(entry / "stat")
            if fields is not None and int(fields[3]) == sid:
                pids.append(int(entry.name))
    return pids


def process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _status_mb(pid: int, key: str) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the process's peak resident set, in MiB."""
    return _status_mb(pid, "VmHWM:")


def rss_mb(pid: int) -> float:
    return _status_mb(pid, "VmRSS:")


class Service:
    """A server process (and its children) pinned to `cores`, in its own session."""

    def __init__(self, name: str, argv: Sequence[str], cores: Sequence[int], log: Path,
                 env: dict[str, str] | None = None, cwd: str | None = None):
        self.name = name
        self.argv = list(argv)
        self.log = log
        pinned = set(cores)
        self.proc = subprocess.Popen(
            self.argv, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, **(env or {})}, cwd=cwd,
            preexec_fn=lambda: os.sched_setaffinity(0, pinned),
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def pids(self) -> list[int]:
        return session_pids(self.proc.pid)

    def cpu_seconds(self) -> float:
        total = 0
        for pid in self.pids():
            try:
                tasks = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for tid in tasks:
                fields = _stat_fields(Path(f"/proc/{pid}/task/{tid}/stat"))
                if fields is not None:
                    total += int(fields[11]) + int(fields[12])
        return total / CLOCK_TICKS

    def wait_port(self, port: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}); see {self.log}:\n"
                                   + self.log.read_text(errors="replace")[-2000:])
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not listen on port {port} within {timeout:g}s; see {self.log}")

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        except ProcessLookupError:
            pass

"""The supervisor's view of a worker process at shutdown (gateway/process/supervisor.py)."""

from __future__ import annotations

import os
import time

from modelyard.gateway.process.supervisor import _running


def test_a_worker_is_running_until_it_exits_zombie_or_reaped() -> None:
    assert _running(os.getpid())
    assert not _running(None)
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    # Exited but not reaped yet (a zombie): already stopped, as when another thread reaps it.
    deadline = time.monotonic() + 10
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _running(pid)
    os.waitpid(pid, 0)
    assert not _running(pid)  # reaped: no such process


def test_without_proc_the_pid_is_asked_with_signal_zero(monkeypatch) -> None:
    from modelyard.gateway.process import supervisor

    def no_proc(*args, **kwargs):
        raise FileNotFoundError("no /proc here")

    monkeypatch.setattr(supervisor, "open", no_proc, raising=False)
    monkeypatch.setattr(supervisor.os.path, "isdir", lambda path: False)
    assert _running(os.getpid())
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    assert not _running(pid)
